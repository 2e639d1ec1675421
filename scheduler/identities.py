"""Live connections follow the database: ``dfarm user remove``, ``dfarm user token``
and ``dfarm worker revoke`` write it from another process, and within a second the
scheduler closes the connections of the identity they changed (its verifier is
gone or no longer the one the connection proved). A removed user's queued jobs
(idle or held) are removed with that reason; a revoked worker's running jobs are
requeued at once.
"""

from __future__ import annotations

import hmac
import logging
from functools import partial

from scheduler.connection import Connection
from scheduler.handshake import BY_POOL_SECRET
from scheduler.protocol import JobState, Role
from scheduler.state import SchedulerState
from scheduler.transitions import remove

log = logging.getLogger("scheduler.server")


def check_identities(state: SchedulerState) -> None:
    """Close connections whose identity was removed or given a new secret, and
    remove the queued jobs of users who no longer exist."""
    keys = state.store.accounts.stored_keys()
    users = frozenset(name for role, name in keys if role == Role.CONTROL.value)
    # A user added and removed between two checks is seen by their connections.
    changed = users != state.known_users
    for conn in list(state.peers.values()):
        if conn.role is None or conn.auth == BY_POOL_SECRET or conn.writer.is_closing():
            continue
        current = keys.get((conn.role.value, conn.name))
        if current is not None and hmac.compare_digest(current, conn.stored_key):
            continue
        if conn.role is Role.WORKER:
            change = "'s credential was " + ("revoked" if current is None else "replaced")
        else:
            change = " was removed" if current is None else " has a new token"
        what = "worker" if conn.role is Role.WORKER else "user"
        log.warning("%s %s%s: closing its connection from %s", what, conn.name, change,
                    conn.peer)  # fmt: skip
        state.effects.defer(
            "close a connection", partial(_close, conn, revoked=conn.role is Role.WORKER)
        )
        changed = changed or current is None
    if changed:
        # Undone with the unit, so that the next check removes the jobs again (as it
        # closes the connections again: their closing is undone with the unit too).
        known = state.known_users
        state.store.remember(lambda: setattr(state, "known_users", known))
        state.known_users = users
        _remove_queued_of_gone(state, users)


def _close(conn: Connection, revoked: bool) -> None:
    """Close ``conn``, whose identity changed (an effect of the check's unit);
    ``revoked``: a worker's credential, whose jobs are requeued at once."""
    conn.revoked = revoked
    conn.writer.close()


def _remove_queued_of_gone(state: SchedulerState, users: frozenset[str]) -> None:
    gone = [
        job
        for job in state.jobs.active.values()
        if job.owner not in users and job.state in (JobState.IDLE, JobState.HELD)
    ]
    if not gone:
        return
    with state.store.transaction():
        for job in gone:
            remove(state, job, f"user {job.owner} was removed")
    for owner in sorted({job.owner for job in gone}):
        count = sum(job.owner == owner for job in gone)
        log.info("user %s was removed: %d queued job(s) removed", owner, count)
