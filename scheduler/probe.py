"""``dfarm doctor``'s requests: a short-lived FTP grant to an empty probe directory,
so that a worker or client host can check the data channel both ways with the real
server and credentials. Open to users and to holders of the worker secret.

A probe holds one small file (see :data:`scheduler.staging.PROBE_BUDGET`), counts
against its user's spool quota (a user over it gets none) and is removed when the
connection that asked for it closes or its grant expires, when that connection asks
for more than :data:`PROBES_PER_CONNECTION`, and at a restart."""

from __future__ import annotations

import logging

from scheduler import protocol as p
from scheduler.callers import Caller
from scheduler.connection import RequestError
from scheduler.protocol import Role
from scheduler.quota import QuotaError
from scheduler.state import SchedulerState

log = logging.getLogger("scheduler.server")

#: Probes one connection holds at once; a new one ends the oldest beyond these.
PROBES_PER_CONNECTION = 2


def on_probe_ftp(state: SchedulerState, conn: Caller, msg: p.ProbeFtp) -> p.Message:
    owner, budget = "", 0
    if conn.role is Role.CONTROL:
        owner = conn.name
        try:
            budget = state.quota.upload_budget(owner) or 0
        except QuotaError as exc:
            raise RequestError(str(exc), "quota") from None
    held = state.probes.setdefault(conn, [])
    while len(held) >= PROBES_PER_CONNECTION:
        state.spool.end_probe(held.pop(0))
    grant, directory = state.spool.grant_probe(conn.local_host, owner, budget)
    held.append(directory)
    ports = state.config.ftp_passive_ports
    role = conn.role.value if conn.role else "?"
    log.info("FTP probe for %s %s from %s", role, conn.name, conn.peer)
    return p.ProbeGranted(
        ftp=grant,
        directory=directory,
        passive_ports=f"{ports.start}-{ports.stop - 1}" if ports else "",
    )


def end_probes(state: SchedulerState, conn: Caller) -> None:
    """``conn`` closed: its probes are over."""
    for directory in state.probes.pop(conn, []):
        state.spool.end_probe(directory)
