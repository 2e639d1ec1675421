"""Who a handler serves: the shapes of caller that the scheduler's core relies on.

A :class:`~scheduler.connection.Connection` is each of them; the dashboard's
:class:`~scheduler.web.session.WebUser` is a :class:`Caller`, and its stand-in for
``dtail`` (which answers later) a :class:`Replier`. The core's tests use fakes that
record what they were sent.
"""

from __future__ import annotations

from typing import Protocol

from scheduler import protocol as p
from scheduler.protocol import Role


class Caller(Protocol):
    """Who made a request: what authorization, grants and logs read of it."""

    @property
    def name(self) -> str: ...

    @property
    def admin(self) -> bool: ...

    @property
    def role(self) -> Role | None: ...

    @property
    def peer(self) -> str: ...

    @property
    def local_host(self) -> str:
        """The scheduler's address as the caller reached it: what FTP grants name."""
        ...


class Replier(Caller, Protocol):
    """A caller that may be sent messages later (updates, a worker's answer)."""

    def send(self, message: p.Message, urgent: bool = True) -> None: ...


class Link(Replier, Protocol):
    """A worker's connection, as the scheduling state holds it."""

    @property
    def auth(self) -> str: ...

    @property
    def revoked(self) -> bool: ...

    def close(self) -> None: ...
