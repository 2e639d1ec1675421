"""The scheduler's core put together: its state, with job changes told to their
watchers, and what a restart recovers from the database."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from scheduler.config import SchedulerConfig
from scheduler.disk_space import DiskSpace
from scheduler.handshake import pool_verifier
from scheduler.staging import Spool
from scheduler.state import SchedulerState
from scheduler.store import Store
from scheduler.watchers import notify


def build_state(
    config: SchedulerConfig,
    store: Store,
    spool: Spool,
    secret: bytes,
    clock: Callable[[], float],
    wake: Callable[[], None] | None = None,
    end_turn: Callable[[], None] | None = None,
    disk: DiskSpace | None = None,
) -> SchedulerState:
    """The state of a scheduler on ``store`` (opened), as a restart finds it: the
    jobs that were running wait for their workers until the worker timeout."""
    state = SchedulerState(config, store, spool, secret, pool_verifier(secret), clock, disk=disk)
    if wake is not None:
        state.wake = wake
    if end_turn is not None:
        state.end_turn = end_turn
    state.jobs.on_change = partial(notify, state)
    deadline = clock() + config.worker_timeout
    for job in state.jobs.running():
        state.workers.orphan(job.id, job.worker or "", deadline)
    return state
