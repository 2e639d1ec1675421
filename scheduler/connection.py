"""One peer's connection to the scheduler, and the error a request is refused with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler import protocol as p
from scheduler.protocol import Role
from scheduler.undo import UndoHook, no_undo


class RequestError(Exception):
    """A request that is refused with a readable reason (sent back as ``error``)."""

    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code


def plain_host(address: str) -> str:
    """An IPv4 peer of a dual-stack socket without its ``::ffff:`` prefix: the address
    FTP grants name and failed logins are counted under."""
    return address[7:] if address.startswith("::ffff:") else address


@dataclass(eq=False)
class Connection:
    id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: str
    #: The scheduler's own address as this peer reached it: what FTP grants name.
    local_host: str
    role: Role | None = None
    name: str = ""
    #: A user with the admin role may act on every job (see :mod:`scheduler.authz`).
    admin: bool = False
    #: How the peer authenticated ("token", "credential", "pool secret"), and the
    #: StoredKey it proved: a changed or removed one closes the connection.
    auth: str = ""
    stored_key: bytes = b""
    #: Closed because its credential was revoked: its jobs are requeued at once.
    revoked: bool = False
    connected_since: float = field(default_factory=time.time)

    #: Frames waiting for the end of this turn of the event loop.
    outbox: list[bytes] = field(default_factory=list)
    #: Whether the outbox holds a reply (which leaves at once) or only job updates.
    urgent: bool = False
    #: A flush of job updates is already scheduled for later.
    deferred: bool = False
    #: The outbox holds job updates; when the last frames with updates left.
    updates: bool = False
    last_flush: float = 0.0
    #: Called with this connection when it has frames to send.
    on_output: Callable[[Connection], None] = lambda conn: None
    #: Where each frame queued registers its undo: a unit of work that fails sends
    #: nothing (see :mod:`scheduler.undo`).
    undo: UndoHook = no_undo

    @property
    def address(self) -> str:
        """The peer's host, without its port."""
        return self.peer.rpartition(":")[0]

    def close(self) -> None:
        """Close the connection; its task then ends and the peer is forgotten."""
        self.writer.close()

    def send(self, message: p.Message, urgent: bool = True) -> None:
        """Queue a frame; it leaves at the end of the loop's turn, after the commit.
        Frames that are not ``urgent`` (job updates) may wait: see :meth:`flush_delay`."""
        queued = len(self.outbox)
        self.outbox.append(p.encode(message))
        self.undo(lambda: self.outbox.__delitem__(slice(queued, None)))
        self.urgent = self.urgent or urgent
        self.updates = self.updates or not urgent
        self.on_output(self)

    def flush_delay(self, now: float) -> float:
        """Seconds to hold the outbox back. Job updates to a user leave at most every
        ``UPDATE_INTERVAL``, so a client watching a busy cluster is woken a few hundred
        times a second, not once per job; the first update after a quiet spell, replies,
        and anything for a worker never wait. ``now`` is the shell's monotonic clock: it
        paces writes to a socket, as the event loop's timers do, and decides nothing
        of the scheduler's state."""
        if self.urgent or self.role is not Role.CONTROL:
            return 0.0
        return self.last_flush + UPDATE_INTERVAL - now

    def flush(self, now: float) -> None:
        if self.outbox and not self.writer.is_closing():
            self.writer.write(b"".join(self.outbox))
        self.outbox.clear()
        self.urgent = False
        if self.updates:
            self.updates = False
            self.last_flush = now


UPDATE_INTERVAL = 0.005
