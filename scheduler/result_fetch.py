"""``fetch_results``: the results of many finished jobs in few, large replies.

Every table is read once per reply (a query per cluster and 500 jobs), the spool is
looked at once per cluster, and a job's events travel only when its submit file
names a ``log``: a reply for thousands of jobs costs a few queries, not a few per job.
"""

from __future__ import annotations

import ipaddress
import os

from scheduler import protocol as p
from scheduler.authz import not_found
from scheduler.callers import Caller
from scheduler.connection import RequestError
from scheduler.job_records import Job
from scheduler.selection import parse_ids
from scheduler.state import SchedulerState

#: Most jobs in one reply: their records and specs stay well under a frame.
REPLY_JOBS = 2000
FINAL = {state.value for state in p.FINAL_STATES} | {p.JobState.HELD.value}


def on_fetch_results(state: SchedulerState, conn: Caller, msg: p.FetchResults) -> p.Message:
    clusters, pairs = parse_ids(msg.ids)
    if not clusters and not pairs:
        raise RequestError("name at least one job or cluster")
    owner = None if conn.admin else conn.name
    # Jobs named one by one (the parts left of an earlier reply) are read a reply's
    # worth at a time: the others are handed back unread in ``remaining``.
    pairs = sorted({pair for pair in pairs if pair[0] not in set(clusters)})
    later: list[tuple[int, int]] = []
    while True:
        later, pairs = pairs[REPLY_JOBS:], pairs[:REPLY_JOBS]
        jobs = state.store.jobs(owner=owner, clusters=clusters, job_ids=pairs)
        if jobs or not later:
            break
        clusters, pairs = [], later
    if not jobs:
        raise RequestError(not_found(conn, " ".join(msg.ids)), "not_found")
    expired = state.store.results.expired_jobs({j.cluster for j in jobs})
    gone = [j.id for j in jobs if (j.cluster, j.proc) in expired]
    if gone:
        days = state.config.result_retention / 86400
        raise RequestError(
            f"the results of {' '.join(gone[:10])}{' ...' if len(gone) > 10 else ''} "
            f"were cleaned {days:g} day(s) after the job ended",
            "not_found",
        )
    candidates = jobs[:REPLY_JOBS]
    finished = [(j.cluster, j.proc) for j in candidates if j.state.value in FINAL]
    small = state.store.results.files_of(finished)
    budget, sent = p.INLINE_BUDGET, list[Job]()
    for job in candidates:
        size = sum(len(data) for data in small.get((job.cluster, job.proc), {}).values())
        if sent and size > budget:
            break  # the rest in another request, so a reply never outgrows a frame
        budget -= size
        sent.append(job)
    keys = [(j.cluster, j.proc) for j in sent]
    hashes = state.store.results.hashes_of(keys)
    in_spool = _spool_folders(state, {j.cluster for j in sent})
    large = [k for k in keys if k in hashes or k in in_spool]
    results = state.store.results.of_jobs(keys)
    logged = [(j.cluster, j.proc) for j in sent if j.spec.log]
    events = state.store.events_of(logged) if logged else {}
    in_large = set(large)
    owners = tuple(sorted({j.owner for j in sent if (j.cluster, j.proc) in in_large}))
    local = state.spool.local_reads.name if large and _loopback(conn.local_host) else None
    if local is not None:
        # Files still of the version hashed are read in place without hashing them
        # again: the versions come from the database, so this survives a restart.
        state.spool.local_reads.vouch(state.store.results.versions_of(large))
    return p.JobResults(
        download=state.spool.grant_fetch(large, conn.local_host, owners=owners) if large else None,
        local=local,
        files={
            j.id: {name: p.pack_bytes(data) for name, data in small[(j.cluster, j.proc)].items()}
            for j in sent
            if (j.cluster, j.proc) in small
        },
        jobs=state.mailer.annotate(
            [j.info(results.get((j.cluster, j.proc))) for j in sent], conn.name
        ),
        specs={
            j.id: j.spec
            for j in sent
            if not msg.brief or j.spec.output or j.spec.error or j.spec.log
        },
        events={j.id: events[(j.cluster, j.proc)] for j in sent if (j.cluster, j.proc) in events},
        remaining=[j.id for j in jobs[len(sent) :]] + [f"{c}.{proc}" for c, proc in later],
        hashes={
            f"{c}.{proc}": {name: sha for name, (sha, _) in found.items()}
            for (c, proc), found in hashes.items()
        },
        large=[f"{c}.{proc}" for c, proc in large],
    )


def _loopback(host: str) -> bool:
    """Whether the caller reached the scheduler on a loopback address (so runs on
    this machine, where it may read the spool's files in place)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _spool_folders(state: SchedulerState, clusters: set[int]) -> set[tuple[int, int]]:
    """The jobs of these clusters that have a folder of large results in the spool:
    one listing per cluster (most jobs' results came inline and have none)."""
    found: set[tuple[int, int]] = set()
    for cluster in clusters:
        try:
            names = os.listdir(os.path.dirname(state.spool.job_dir(cluster, 0)))
        except OSError:
            continue
        found.update((cluster, int(name)) for name in names if name.isdigit())
    return found
