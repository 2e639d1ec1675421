"""What the scheduler does with the requests of users (control nodes): submit, query,
watch and fetch."""

from __future__ import annotations

import bisect
import itertools
import logging
import sqlite3

from scheduler import protocol as p
from scheduler.authz import may_act_for, may_control
from scheduler.callers import Caller, Replier
from scheduler.cluster_done import cluster_may_be_done
from scheduler.clusters import abandon_cluster
from scheduler.connection import RequestError
from scheduler.dag_batches import with_dags
from scheduler.disk_space import is_disk_full
from scheduler.dispatch import Slots
from scheduler.job_records import Job
from scheduler.matching.attributes import capacities, impossible_warnings
from scheduler.protocol import JobState
from scheduler.quota import QuotaError
from scheduler.selection import parse_ids, visible
from scheduler.staging import StagingError, upload_sizes
from scheduler.starting import revoke_grant
from scheduler.state import SchedulerState, disk_full_error, refuse_if_disk_full
from scheduler.submission import SubmissionError, check_submission
from scheduler.transitions import hold
from scheduler.workers import WorkerState

log = logging.getLogger("scheduler.server")

FINAL = {state.value for state in p.FINAL_STATES}
#: The most jobs a paged ``dq`` request (``limit`` > 0) is answered with: a record
#: costs about 10 to 25 µs, so that a page holds the loop a few milliseconds; the
#: client asks for the next one (``more``, ``after``).
QUERY_PAGE = 200


def on_new_cluster(state: SchedulerState, conn: Caller, msg: p.NewCluster) -> p.Message:
    refuse_if_disk_full(state)
    try:
        budget = state.quota.upload_budget(conn.name)
    except QuotaError as exc:
        raise RequestError(str(exc), "quota") from None
    now = state.reservations.clock()
    cluster = state.store.clusters.reserve_cluster(conn.name, now)
    state.reservations.add(cluster, now)
    ttl = state.config.reservation_ttl
    upload = state.spool.grant_upload(cluster, conn.local_host, ttl=ttl, max_bytes=budget)
    state.store.remember(lambda: revoke_grant(state, upload))
    return p.ClusterCreated(cluster=cluster, upload=upload)


#: The hold reason of a job submitted with ``hold = true`` (HTCondor's words).
HELD_AT_SUBMIT = "submitted on hold at user's request"


def on_submit_jobs(state: SchedulerState, conn: Caller, msg: p.SubmitJobs) -> p.Message:
    owner = state.store.clusters.cluster_owner(msg.cluster)
    if owner is None or owner[0] != conn.name:
        raise RequestError(f"cluster {msg.cluster} was not reserved by you", "not_found")
    if owner[1]:
        raise RequestError(f"cluster {msg.cluster} was already submitted", "conflict")
    expected, submitter = state.partial_clusters.get(msg.cluster, (0, conn))
    if submitter is not conn:
        raise RequestError(f"cluster {msg.cluster} is being submitted elsewhere", "conflict")
    if msg.first_proc != expected:
        raise RequestError(
            f"cluster {msg.cluster}: the next part starts at proc {expected}, not {msg.first_proc}",
            "invalid",
        )
    # The part is a unit of its own: when it fails, the earlier parts are removed
    # and the error answered by this unit, which keeps that removal.
    try:
        refuse_if_disk_full(state)
        with state.store.transaction():
            return _queue_part(state, conn, msg)
    except (sqlite3.Error, OSError) as exc:
        if not is_disk_full(exc):
            raise
        error = disk_full_error(state, exc)
        if not expected:
            raise RequestError(error.message, "disk_full") from None
        abandon_cluster(state, msg.cluster, f"the submission failed: {error.message}")
        return p.Error(message=error.message, code="disk_full")
    except RequestError as exc:
        if not expected:
            raise
        # Earlier parts are queued: the cluster is not submitted whole.
        abandon_cluster(state, msg.cluster, f"the submission failed: {exc}")
        message = (
            f"{exc}; the {expected} job(s) of cluster {msg.cluster} already queued were removed"
        )
        return p.Error(message=message, code=exc.code)


def _queue_part(state: SchedulerState, conn: Caller, msg: p.SubmitJobs) -> p.Message:
    if not msg.jobs and msg.first_proc:
        return _end_cluster(state, conn, msg)
    specs = state.mailer.addressed(msg.jobs, conn.name)
    try:
        state.spool.store_inputs(msg.cluster, msg.files)
        sizes = upload_sizes(msg.uploads, specs)
        # The quota counts each upload at its declared size, not what has arrived.
        declared = {msg.uploads[sha]: size for sha, size in sizes.items()}
        state.quota.check_submission(conn.name, msg.cluster, declared)
        state.spool.name_uploads(msg.cluster, msg.uploads, sizes)
        warnings = check_submission(
            specs, state.spool.input_dir(msg.cluster), mail=state.mailer.configured
        )
    except (SubmissionError, StagingError, p.ProtocolError) as exc:
        raise RequestError(str(exc), "invalid") from None
    except QuotaError as exc:
        raise RequestError(str(exc), "quota") from None
    warnings += impossible_warnings(specs, capacities(state.workers.slots()), msg.first_proc)
    jobs = state.jobs.submit(
        msg.cluster, conn.name, msg.submit_file, specs, msg.first_proc, msg.last
    )
    for job in jobs:
        if job.spec.hold:
            hold(state, job, HELD_AT_SUBMIT)
    state.reservations.submitted(msg.cluster)
    if msg.last:
        state.partial_clusters.pop(msg.cluster, None)
        # The client sends it once its uploads end.
        state.store.remember(state.spool.end_upload(msg.cluster))
    else:
        state.partial_clusters[msg.cluster] = (msg.first_proc + len(jobs), conn)
    state.mailer.submitted(jobs, more=not msg.last)
    log.info("user %s submitted cluster %d: %d job(s)", conn.name, msg.cluster, len(jobs))
    state.wake()
    return p.Submitted(cluster=msg.cluster, job_ids=[j.id for j in jobs], warnings=warnings)


def _end_cluster(state: SchedulerState, conn: Caller, msg: p.SubmitJobs) -> p.Message:
    """An empty last part: the cluster's uploads have ended, it is whole."""
    if not msg.last or msg.files or msg.uploads:
        raise RequestError("an empty part only ends a cluster", "invalid")
    state.jobs.submit(msg.cluster, conn.name, msg.submit_file, [], msg.first_proc)
    state.partial_clusters.pop(msg.cluster, None)
    state.store.remember(state.spool.end_upload(msg.cluster))
    state.mailer.submit_ended(msg.cluster)
    cluster_may_be_done(state, msg.cluster)
    return p.Submitted(cluster=msg.cluster, job_ids=[])


def on_query_jobs(state: SchedulerState, conn: Caller, msg: p.QueryJobs) -> p.Message:
    clusters, pairs = parse_ids(msg.ids)
    owner = None if msg.all_users else conn.name
    states = set(msg.states) or {s.value for s in JobState}
    limit = min(msg.limit, QUERY_PAGE) if msg.limit > 0 else 0
    if states & FINAL and not pairs and limit > 0:
        jobs, more = _finished_page(state, owner, clusters, states, msg.after, limit)
    elif pairs or states & FINAL:
        # Jobs in the queue are in memory; only finished ones are read from SQLite.
        jobs = state.jobs.select(owner, clusters, pairs, states - FINAL)
        if states & FINAL:
            jobs += state.store.jobs(
                owner=owner, clusters=clusters, job_ids=pairs, states=sorted(states & FINAL)
            )
        jobs.sort(key=lambda job: (job.cluster, job.proc))
        jobs, more = _page(jobs, msg.after, limit)
    else:
        jobs, more = _queue_page(state, owner, clusters, states, msg.after, limit)
    finished = {
        job.cluster for job in jobs if job.state is JobState.COMPLETED and may_control(conn, job)
    }
    results = state.store.results.of_clusters(finished)
    infos = [visible(conn, job, results.get((job.cluster, job.proc))) for job in jobs]
    return p.JobList(jobs=state.mailer.annotate(infos, conn.name), more=more)


def _queue_page(
    state: SchedulerState,
    owner: str | None,
    clusters: list[int],
    states: set[str],
    after: str,
    limit: int,
) -> tuple[list[Job], bool]:
    """A page of jobs in the queue in id order, walked from ``after`` (not sorted out
    of the whole queue)."""
    walk = state.jobs.in_order(_after_key(after), owner, states, set(clusters))
    jobs = list(itertools.islice(walk, limit + 1 if limit > 0 else None))
    if limit > 0 and len(jobs) > limit:
        return jobs[:limit], True
    return jobs, False


def _finished_page(
    state: SchedulerState,
    owner: str | None,
    clusters: list[int],
    states: set[str],
    after: str,
    limit: int,
) -> tuple[list[Job], bool]:
    """A page of jobs in id order, finished ones among them: those in the queue walked
    from ``after``, the finished ones read from SQLite from ``after`` on, a page of
    each merged (the cost of the page, however many jobs have finished)."""
    key = _after_key(after)
    queued = states - FINAL
    jobs: list[Job] = []
    if queued:
        walk = state.jobs.in_order(key, owner, queued, set(clusters))
        jobs = list(itertools.islice(walk, limit + 1))
    jobs += state.store.jobs_page(
        owner=owner, clusters=clusters, states=sorted(states & FINAL), after=key, limit=limit + 1
    )
    jobs.sort(key=lambda job: (job.cluster, job.proc))
    return jobs[:limit], len(jobs) > limit


def _after_key(after: str) -> tuple[int, int]:
    """The id ``after`` as (cluster, proc); a cluster alone comes before its procs."""
    if not after:
        return -1, -1
    try:
        cluster, proc = p.parse_job_id(after)
    except ValueError as exc:
        raise RequestError(str(exc), "invalid") from None
    return cluster, -1 if proc is None else proc


def on_query_batches(state: SchedulerState, conn: Caller, msg: p.QueryBatches) -> p.Message:
    """The batch view, from the queue's summary: nothing per job."""
    owner = None if msg.all_users else conn.name
    summary = state.summary
    if msg.clusters:
        found = (summary.cluster(c) for c in sorted(set(msg.clusters)))
        lines = [b for b in found if b is not None and owner in (None, b.owner)]
    else:
        lines = summary.batches(owner)
    totals = {"idle": 0, "running": 0, "held": 0}
    for line in lines:
        totals["idle"] += line.idle
        totals["running"] += line.running
        totals["held"] += line.held
    if not msg.clusters:
        lines = with_dags(state, lines, owner)
    return p.BatchList(
        batches=lines,
        totals=totals,
        all_totals=summary.by_state(),
    )


def worker_infos(state: SchedulerState) -> list[p.WorkerInfo]:
    """The registered workers as ``dstat`` lists them."""
    return [_worker_info(w) for w in state.workers]


def on_query_workers(state: SchedulerState, conn: Caller, msg: p.QueryWorkers) -> p.Message:
    state.disk.check()
    return p.WorkerList(
        workers=worker_infos(state),
        scheduler_disk_full=state.disk.problem or "",
        spool_bytes=state.retention.spool_bytes(),
        result_retention=state.config.result_retention,
    )


def on_subscribe(state: SchedulerState, conn: Replier, msg: p.Subscribe) -> p.Message:
    state.subscribers.keep_all(msg.clusters)
    for cluster in msg.clusters:
        state.subscribers.setdefault(cluster, {})[conn] = frozenset(msg.states)
    return p.Ok()


def on_await_clusters(state: SchedulerState, conn: Replier, msg: p.AwaitClusters) -> p.Message:
    state.awaiting.keep_all(msg.clusters)
    for cluster in msg.clusters:
        owner = state.store.clusters.cluster_owner(cluster)
        if owner is None or not may_act_for(conn, owner[0]):
            # Nothing of it to wait for: a query of it finds no job of the caller's.
            conn.send(p.ClusterDone(cluster=cluster))
            continue
        state.awaiting.setdefault(cluster, set()).add(conn)
        cluster_may_be_done(state, cluster)
    return p.Ok()


def _page(jobs: list[Job], after: str, limit: int) -> tuple[list[Job], bool]:
    """The jobs (sorted by id) after the id ``after``, at most ``limit`` (0: all)."""
    if after:
        try:
            cluster, proc = p.parse_job_id(after)
        except ValueError as exc:
            raise RequestError(str(exc), "invalid") from None
        key = (cluster, -1 if proc is None else proc)
        jobs = jobs[bisect.bisect_right(jobs, key, key=lambda j: (j.cluster, j.proc)) :]
    if limit > 0 and len(jobs) > limit:
        return jobs[:limit], True
    return jobs, False


def _worker_state(s: Slots) -> str:
    """What ``dstat`` says a worker is doing: draining (taking no new job) comes first."""
    if s.draining:
        return "draining"
    return "disk full" if s.disk_full else "busy" if s.used_slots else "idle"


def _worker_info(worker: WorkerState) -> p.WorkerInfo:
    s = worker.slots
    return p.WorkerInfo(
        id=s.worker_id,
        name=s.name,
        state=_worker_state(s),
        address=worker.link.peer,
        slots_total=s.slots,
        slots_used=s.used_slots,
        cpus_total=s.cpus,
        cpus_used=s.used_cpus,
        memory_total_mb=s.memory_mb,
        memory_used_mb=s.used_memory_mb,
        gpus_total=s.gpus,
        gpus_used=s.used_gpus,
        metrics=worker.metrics,
        last_heartbeat=worker.last_heartbeat,
        connected_since=worker.connected_since,
        auth=worker.link.auth,
    )
