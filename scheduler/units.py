"""Running a unit of work: one message handled, or one periodic task, all or nothing.

A unit runs inside one :meth:`scheduler.database.Database.transaction`. It writes its rows
and events, changes memory, queues frames and defers its effects (files removed,
connections closed: :mod:`scheduler.effects`); each change registers its undo (see
:mod:`scheduler.undo`). If it raises, its writes are rolled back, its changes to
memory undone, its frames and effects dropped, and only then is the error answered:
the caller's ``error`` is the one frame the unit leaves behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from scheduler import protocol as p
from scheduler.connection import RequestError
from scheduler.disk_space import is_disk_full
from scheduler.state import SchedulerState, disk_full_error

log = logging.getLogger("scheduler.server")


def run_unit(state: SchedulerState, name: str, body: Callable[[], object]) -> object:
    """Run ``body`` as the unit ``name``: its result, or the error to answer the
    caller with once the unit is undone (a refusal keeps its code, a full disk is
    ``disk_full``, anything else a logged ``internal`` error)."""
    try:
        with state.store.transaction():
            result = body()
        if state.store.on_batch_open is None:
            # No shell batches the units (the core's tests): this one committed as
            # it closed, and its effects follow at once, as the shell's would.
            state.effects.run()
        return result
    except RequestError as exc:
        return p.Error(message=str(exc), code=exc.code)
    except Exception as exc:
        if is_disk_full(exc):
            log.warning("unit %s failed: %s", name, exc)
            return disk_full_error(state, exc)
        # A bug must cost one unit, never the connection or the loop.
        log.exception("unit %s failed", name)
        return p.Error(message=f"internal error handling {name!r}", code="internal")


def run_request(state: SchedulerState, name: str, body: Callable[[], object]) -> object:
    """As :func:`run_unit`, for a caller that is no connection (the dashboard): the
    error is raised, as a :class:`RequestError`, once the unit is undone."""
    reply = run_unit(state, name, body)
    if isinstance(reply, p.Error):
        raise RequestError(reply.message, reply.code)
    return reply
