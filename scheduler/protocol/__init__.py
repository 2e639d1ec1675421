"""The dfarm wire protocol: frames, message types, records and the handshake.

This package is the one part of the scheduler that the worker and control nodes
import. A frame is a 4-byte big-endian length followed by one UTF-8
JSON object; every object has a ``type``; requests carry an ``id`` that their
reply echoes. Every message is a frozen dataclass registered by its ``type``::

    >>> frame = encode(QueryJobs(id=7, ids=["42.0"]))
    >>> decode(frame[4:])
    QueryJobs(id=7, ids=['42.0'], all_users=False, states=[])

Decoding checks every field against its type hint and rejects unknown types and
missing or mistyped fields with a :class:`ProtocolError` that names the field.

The first exchange on a connection is the handshake::

    peer -> Hello(role, version, name, nonce)
    scheduler -> Challenge(nonce, salt, iterations)              or Error, then close
    peer -> Auth(digest = ClientProof)
    scheduler -> Welcome(digest = ServerSignature, ...)          or Error, then close

This is SCRAM-SHA-256 (see :mod:`scheduler.protocol.scram`): the peer's secret is
the user's token, or the worker's credential (or, where a scheduler allows it,
the pool secret); the scheduler keeps only a verifier of it. Both sides prove
what they hold, and the role, the name and both nonces enter every proof, so a
recorded handshake cannot be replayed.
"""

from scheduler.protocol.access import *  # noqa: F403
from scheduler.protocol.auth import *  # noqa: F403
from scheduler.protocol.capacity import *  # noqa: F403
from scheduler.protocol.explain import *  # noqa: F403
from scheduler.protocol.ftp import *  # noqa: F403
from scheduler.protocol.hashing import *  # noqa: F403
from scheduler.protocol.jobcontrol import *  # noqa: F403
from scheduler.protocol.messages import *  # noqa: F403
from scheduler.protocol.records import *  # noqa: F403
from scheduler.protocol.requirements import *  # noqa: F403
from scheduler.protocol.scram import *  # noqa: F403
from scheduler.protocol.wire import *  # noqa: F403
