"""Undoing changes to memory with the unit of work that made them.

What the scheduler holds in memory is changed inside a unit of work
(:meth:`scheduler.database.Database.transaction`); if the unit fails, its writes are
rolled back and so must be its changes in memory. Each owner of scheduling state
(the job table and its queue, slots, the worker registry, connections' outboxes,
the dictionaries of :class:`UndoDict`) is given an :data:`UndoHook`
(:meth:`scheduler.database.Database.remember`) and registers, where it makes a change,
how to take it back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

#: Registers a callable that undoes a change if the open unit fails.
UndoHook = Callable[[Callable[[], None]], None]

K = TypeVar("K")
V = TypeVar("V")
_MISSING: Any = object()


def no_undo(callback: Callable[[], None]) -> None:
    """The hook of state outside any store (a test's): nothing is undone."""


class UndoDict(dict[K, V]):
    """A dict whose changes of keys are undone with a failed unit (a value changed in
    place is the changer's to undo)."""

    def __init__(self, undo: UndoHook = no_undo) -> None:
        super().__init__()
        self.undo = undo

    def _keep(self, key: K) -> None:
        old = dict.get(self, key, _MISSING)

        def restore() -> None:
            if old is _MISSING:
                dict.pop(self, key, None)
            else:
                dict.__setitem__(self, key, old)

        self.undo(restore)

    def __setitem__(self, key: K, value: V) -> None:
        self._keep(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: K) -> None:
        self._keep(key)
        super().__delitem__(key)

    def pop(self, key: K, *default: Any) -> Any:
        if key in self:
            self._keep(key)
        return super().pop(key, *default)

    def setdefault(self, key: K, default: V = None) -> V:  # type: ignore[assignment]
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def popitem(self) -> tuple[K, V]:
        raise TypeError("popitem cannot be undone: pop a key")

    def clear(self) -> None:
        for key in list(self):
            del self[key]

    def keep_all(self, keys: Iterable[K]) -> None:
        """Register the undo of changes in place to the values of ``keys``: each is
        restored to a shallow copy of what it holds now."""
        for key in keys:
            value = dict.get(self, key, _MISSING)
            if value is _MISSING:
                self._keep(key)
                continue
            saved = value.copy()

            def restore(key: K = key, saved: V = saved) -> None:
                dict.__setitem__(self, key, saved)

            self.undo(restore)
