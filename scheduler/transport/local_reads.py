"""What both ends of a local read of results share (see :mod:`scheduler.result_fds`)."""

from __future__ import annotations

import hashlib
import hmac

#: Paths (and so descriptors) in one request: under the kernel's limit of 253 a message.
MOST_PATHS = 64


def proof(password: str, nonce: str) -> str:
    """What a client sends to show it holds a grant's ``password`` without sending it
    (so that nothing it sends is of use to whoever answers in the scheduler's place)."""
    return hmac.new(password.encode(), bytes.fromhex(nonce), hashlib.sha256).hexdigest()
