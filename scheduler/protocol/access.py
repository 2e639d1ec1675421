"""How peers find a scheduler: the access record in the state directory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from scheduler.protocol.records import PROTOCOL_VERSION, ProtocolError
from scheduler.protocol.wire import from_wire, to_wire

__all__ = [
    "ACCESS_FILE",
    "LOCAL_TOKEN_FILE",
    "AccessRecord",
    "default_home",
]

ACCESS_FILE = "access.json"
#: The token of the user who ran ``dfarm up`` in a state directory (mode 0600).
LOCAL_TOKEN_FILE = "local-user.token"


def default_home() -> Path:
    """The state directory: ``$DFARM_HOME``, else ``~/.dfarm``."""
    return Path(os.environ.get("DFARM_HOME", "~/.dfarm")).expanduser()


@dataclass(frozen=True, kw_only=True)
class AccessRecord:
    """Where a scheduler listens, written to ``<home>/access.json``; ``token`` is set
    only in the copy that ``dfarm up`` writes for the local user."""

    host: str
    port: int
    version: int = PROTOCOL_VERSION
    token: str | None = None
    #: With ``dfarm scheduler --tls``: the SHA-256 of its certificate, which peers pin.
    tls_fingerprint: str | None = None

    def save(self, path: Path) -> None:
        """Write atomically; the file is created owner-only when it holds a token."""
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if self.token else 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(to_wire(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> AccessRecord:
        try:
            return from_wire(cls, json.loads(path.read_text()), str(path))
        except (OSError, ValueError, ProtocolError) as exc:
            raise ProtocolError(f"cannot read access record {path}: {exc}") from None
