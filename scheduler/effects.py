"""Effects: what a unit of work decides to do outside memory and the database.

Removing spool files and closing connections cannot be undone, so a unit does not
do them: it defers them here (:meth:`Effects.defer`), and the I/O shell carries
them out once the batch holding the unit has committed (:meth:`Effects.run`),
before it sends the turn's frames. A unit that fails takes its effects back with
its other changes (each defer registers its undo through the store's hook, see
:mod:`scheduler.undo`), so it leaves the disk and the wire as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from scheduler.undo import UndoHook, no_undo

log = logging.getLogger("scheduler.server")


def _nothing() -> None:
    return None


class Effects:
    """The effects of committed (or still open) units, in the order they were
    deferred."""

    def __init__(self, undo: UndoHook = no_undo) -> None:
        self.undo = undo
        #: Called when an effect is queued: the shell ends the turn soon, so that a
        #: unit that writes nothing still has its effects carried out.
        self.on_queued: Callable[[], None] = _nothing
        self._queue: list[tuple[str, Callable[[], object]]] = []

    def __len__(self) -> int:
        return len(self._queue)

    def defer(self, name: str, action: Callable[[], object]) -> None:
        """Carry out ``action`` (``name`` says what it is, in the log) after the
        commit of the unit that defers it; never if that unit fails."""
        at = len(self._queue)
        self._queue.append((name, action))
        self.undo(lambda: self._queue.__delitem__(slice(at, None)))
        self.on_queued()

    def run(self) -> int:
        """Carry out the queued effects, in order; one that fails is logged and does
        not stop the others. Called only between units, once their batch has
        committed. Returns how many ran."""
        queue, self._queue = self._queue, []
        for name, action in queue:
            try:
                action()
            except Exception:
                log.exception("effect %r of a committed unit failed", name)
        return len(queue)
