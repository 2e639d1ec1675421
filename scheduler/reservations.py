"""Clusters reserved with ``new_cluster`` whose first part has not come.

A reservation holds a cluster number, a folder in the spool and an upload grant
that counts against its owner's quota (see :mod:`scheduler.quota`). One not
submitted within the TTL (``--reservation-ttl``, by default the upload grant's
hour) expires: its grant is revoked, its folder and its row removed. The grants
die with the scheduler, as does the connection of the client that reserved: a
restart removes every reservation at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from scheduler.undo import UndoDict, UndoHook, no_undo

log = logging.getLogger(__name__)


class Reservations:
    """When each open reservation expires."""

    def __init__(self, ttl: float, clock: Callable[[], float], undo: UndoHook = no_undo):
        self.ttl, self.clock = ttl, clock
        self._expires: UndoDict[int, float] = UndoDict(undo)

    def add(self, cluster: int, created: float) -> None:
        """``cluster`` was reserved at ``created``."""
        self._expires[cluster] = created + self.ttl

    def submitted(self, cluster: int) -> None:
        """A part of ``cluster`` was queued: it is no longer a mere reservation."""
        self._expires.pop(cluster, None)

    def due(self, now: float) -> list[int]:
        """The reservations expired at ``now``, forgotten here."""
        gone = [cluster for cluster, expires in self._expires.items() if expires <= now]
        for cluster in gone:
            del self._expires[cluster]
        return gone

    def __contains__(self, cluster: object) -> bool:
        return cluster in self._expires
