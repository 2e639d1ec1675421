"""Workflows run by the scheduler: nodes released when their parents succeed, retried,
aborted, held and removed, each decision written before it is acted on.

A node goes ``waiting`` (on parents and on clusters outside the DAG) -> ``ready``
(in the DAG's queue, best PRIORITY first, as MAXJOBS allows) -> ``pre`` (its PRE
script) -> ``queued`` (its jobs, the node's own cluster) -> ``post`` (its POST
script) -> ``done`` or ``failed`` (or ``ready`` again for a RETRY, its jobs queued
again as the cluster's next procs). A failed node's descendants become ``futile``
and never run; the DAG ends once no node has anything left to do.

Every function here runs inside a unit: a job's change reaches
:func:`job_changed` in the unit of that change, so a node's result is written with
the job's end, and a restart finds them together.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

from scheduler import dag_scripts
from scheduler import protocol as p
from scheduler.cluster_done import cluster_may_be_done
from scheduler.dag_book import LIVE, OPEN, PRE_QUEUE, DagRun
from scheduler.dag_store import NodeRow
from scheduler.job_records import Job
from scheduler.protocol import JobState
from scheduler.state import SchedulerState
from scheduler.transitions import hold, release, remove

log = logging.getLogger("scheduler.server")

#: $RETURN of a node whose jobs were removed (as DAGMan's "job aborted").
REMOVED_RETURN = -1
#: Failed nodes named in a DAG's reason, at most.
REASONS_SHOWN = 20


def dag_folder(state: SchedulerState, dag: int) -> Path:
    """Where a DAG's scripts are kept and run, and its log written."""
    return state.config.home / "dags" / str(dag)


def dag_log(state: SchedulerState, dag: int, text: str) -> None:
    """A line in the DAG's log (an effect: the lines of a turn are written together
    once their units commit)."""
    pending = state.dags.log_lines
    if not any(pending.values()):
        state.effects.defer("DAG logs", partial(_write_logs, state))
    lines = pending.setdefault(dag, [])
    lines.append(f"{state.clock():.3f} {text}\n")

    def drop() -> None:
        lines.pop()

    state.dags.remember(drop)


def _write_logs(state: SchedulerState) -> None:
    pending, state.dags.log_lines = state.dags.log_lines, {}
    for dag, lines in pending.items():
        try:
            with open(dag_folder(state, dag) / "dag.log", "a", encoding="utf-8") as f:
                f.writelines(lines)
        except OSError as exc:
            log.warning("DAG %d: its log could not be written: %s", dag, exc)


# ------------------------------------------------------------------ moving forward


def advance(state: SchedulerState, run: DagRun) -> None:
    """Start the DAG's ready nodes, best first, as far as MAXJOBS allows."""
    if run.row.state != "running":
        return
    if run.stale:
        run.rebuild()
    limits: dict[str, int] = run.row.settings.get("max_jobs", {})
    total = int(run.row.settings.get("max_nodes", 0) or 0)
    pre_limit = int(run.row.settings.get("max_pre", 0) or 0)
    batch: Batch = []
    while run.ready:
        _, seq = run.ready[0]
        node = run.nodes[seq]
        heapq.heappop(run.ready)
        if node.state != "ready":
            continue
        if pre_limit and node.rules.get("pre") and run.scripts_running("pre") >= pre_limit:
            run.blocked.setdefault(PRE_QUEUE, []).append(seq)
            continue
        category = run.category(node)
        limit = limits.get(category) if category else None
        if (limit is not None and run.active[category] >= limit) or (
            total and sum(run.active.values()) >= total
        ):
            run.blocked.setdefault(category if limit is not None else "", []).append(seq)
            if total and sum(run.active.values()) >= total:
                run.blocked.setdefault("", []).extend(s for _, s in run.ready)
                run.ready.clear()
            continue
        _start(state, run, node, batch)
    _submit(state, run, batch)


#: Nodes whose jobs are to be queued together: each with its cluster and jobs.
Batch: TypeAlias = list[tuple[NodeRow, int, list[p.JobSpec]]]


def _start(state: SchedulerState, run: DagRun, node: NodeRow, batch: Batch) -> None:
    now = state.clock()
    if node.rules.get("pre"):
        state.dags.set(run, node, state="pre", started=node.started or now)
        dag_scripts.launch(state, run, node, "pre", script_ended)
    else:
        _prepare(state, run, node, batch)


def queue_jobs(state: SchedulerState, run: DagRun, node: NodeRow) -> None:
    """Queue the node's jobs (this attempt's) as its cluster's next procs."""
    batch: Batch = []
    _prepare(state, run, node, batch)
    _submit(state, run, batch)


def _prepare(state: SchedulerState, run: DagRun, node: NodeRow, batch: Batch) -> None:
    """The node queued, its jobs added to ``batch`` (a node without jobs is judged at
    once)."""
    now = state.clock()
    specs = state.dags.tables.specs(run.id, node.seq)
    if node.cluster is None or not specs:
        state.dags.set(run, node, state="queued", started=node.started or now)
        jobs_ended(state, run, node)
        return
    priority = int(node.rules.get("priority") or 0)
    if priority:  # a node's PRIORITY is its jobs' too, as in DAGMan
        specs = [replace(spec, priority=spec.priority + priority) for spec in specs]
    state.dags.set(run, node, state="queued", started=node.started or now)
    state.dags.watch(node)
    node.jobs = len(specs)  # trusted only while it is watched
    batch.append((node, node.cluster, specs))


def _submit(state: SchedulerState, run: DagRun, batch: Batch) -> None:
    """Queue the jobs of ``batch``'s nodes, each node's as its cluster's next procs, in
    one transaction (the rows of many small clusters cost less written together)."""
    if not batch:
        return
    owner = run.row.owner
    made = state.jobs.submit_clusters(
        [
            (cluster, owner, node.submit_file, specs, node.first_proc)
            for node, cluster, specs in batch
        ],
        named=True,
    )
    for (node, cluster, _), jobs in zip(batch, made, strict=True):
        for job in jobs:
            if run.row.state == "held":  # its PRE script ended while the DAG was held
                hold(state, job, f"DAG {run.id} held while the node's PRE script ran")
            elif job.spec.hold:
                hold(state, job, "submitted on hold at user's request")
        state.mailer.submitted(jobs)
        dag_log(state, run.id, f"node {node.name}: {len(jobs)} job(s) queued as cluster {cluster}")
    state.wake()


def job_changed(state: SchedulerState, job: Job) -> None:
    """``job`` changed: when it ended the last job of a node's attempt, the node's jobs
    are judged; when it ended a cluster that nodes wait for, they look again."""
    if job.state not in p.FINAL_STATES:
        return
    book = state.dags
    found = book.node_of(job.cluster)
    if found is None:
        if job.cluster in book.external and _cluster_ended(state, job.cluster):
            _recheck(state, job.cluster)
        return
    run, node = found
    if run.row.state not in OPEN or node.state != "queued":
        return
    if node.failed_job is None and job.proc >= node.first_proc and not _succeeded(job):
        failed = (job.id, _return_value(job), f"job {job.id} {_failure(job)}")
        state.dags.set_failed(node, failed)
    if state.summary.cluster(job.cluster) is not None:
        return
    jobs_ended(state, run, node)


def _cluster_ended(state: SchedulerState, cluster: int) -> bool:
    return state.summary.cluster(cluster) is None and cluster not in state.partial_clusters


def jobs_ended(state: SchedulerState, run: DagRun, node: NodeRow) -> None:
    """Every job of the node's attempt ended: its POST script, or its result."""
    failed = node.failed_job
    if node.cluster is not None and not node.watched:
        for job in state.store.jobs(clusters=[node.cluster]):
            if job.proc >= node.first_proc and not _succeeded(job):
                failed = (job.id, _return_value(job), f"job {job.id} {_failure(job)}")
                break
    code = 0 if failed is None else failed[1]
    reason = "" if failed is None else failed[2]
    if node.rules.get("post"):
        state.dags.set(run, node, state="post", return_code=code, reason=reason)
        start_post(state, run, node)
    else:
        node_result(state, run, node, failed is None, code, reason)


def start_post(state: SchedulerState, run: DagRun, node: NodeRow) -> None:
    """Run the node's POST script, or queue it while DAGMAN_MAX_POST_SCRIPTS run."""
    limit = int(run.row.settings.get("max_post", 0) or 0)
    if limit and len(run.posts) >= limit:
        run.post_queue.append(node.seq)
        return
    run.posts.add(node.seq)
    dag_scripts.launch(state, run, node, "post", script_ended)


def post_ended(state: SchedulerState, run: DagRun, node: NodeRow) -> None:
    """A POST script ended: the next one waiting for room starts."""
    run.posts.discard(node.seq)
    while run.post_queue:
        waiting = run.nodes[run.post_queue.pop(0)]
        if waiting.state == "post" and waiting.seq not in run.posts:
            start_post(state, run, waiting)
            return


def _succeeded(job: Job) -> bool:
    return job.state is JobState.COMPLETED and job.exit_code == 0 and job.exit_signal is None


def _return_value(job: Job) -> int:
    if job.state is JobState.COMPLETED and job.exit_signal is not None:
        return -job.exit_signal
    if job.state is JobState.COMPLETED and job.exit_code is not None:
        return job.exit_code
    return REMOVED_RETURN


def _failure(job: Job) -> str:
    if job.state is JobState.REMOVED:
        return "was removed"
    if job.exit_signal is not None:
        return f"was killed by signal {job.exit_signal}"
    return f"exited with {job.exit_code}"


def node_result(
    state: SchedulerState, run: DagRun, node: NodeRow, ok: bool, code: int, reason: str
) -> None:
    """The node succeeded or failed (``code``: its return value): retry it, end it,
    release its children or mark its descendants futile, abort or end the DAG."""
    rules = node.rules
    abort = rules.get("abort_on") is not None and code == rules["abort_on"]
    unless = rules.get("retry_unless_exit")
    if (
        not ok
        and not abort
        and node.attempt < int(rules.get("retry", 0))
        and not (unless is not None and code == unless)
        and run.row.state in OPEN
    ):
        first = 0
        if node.cluster is not None:
            first = state.store.cluster_sizes([node.cluster]).get(node.cluster, 0)
        dag_log(state, run.id, f"node {node.name}: {reason or 'failed'}; retry {node.attempt + 1}")
        state.dags.set(
            run, node, state="ready", attempt=node.attempt + 1, first_proc=first,
            return_code=code, reason=f"retrying after: {reason}" if reason else "retrying",
        )  # fmt: skip
        advance(state, run)
        return
    now = state.clock()
    state.dags.set(
        run, node, state="done" if ok else "failed", ended=now, return_code=code,
        reason="" if ok else reason or f"returned {code}",
    )  # fmt: skip
    dag_log(state, run.id, f"node {node.name}: {'done' if ok else 'failed: ' + node.reason}")
    node_ended(state, node)
    if abort:
        back = rules.get("abort_return")
        abort_dag(
            state, run, f"aborted: node {node.name} returned {code} (ABORT-DAG-ON)",
            code if back is None else int(back),
        )  # fmt: skip
        return
    if ok:
        for seq in node.children:
            child = run.nodes[seq]
            if child.state == "waiting":
                may_be_ready(state, run, child)
    else:
        _futile(state, run, node)
    maybe_end(state, run)
    advance(state, run)


def node_ended(state: SchedulerState, node: NodeRow) -> None:
    """Those awaiting the node's cluster, and the nodes waiting for it, hear of it."""
    if node.cluster is not None:
        cluster_may_be_done(state, node.cluster)
        _recheck(state, node.cluster)


def _futile(state: SchedulerState, run: DagRun, failed: NodeRow) -> None:
    """The descendants of ``failed`` never run."""
    todo = list(failed.children)
    while todo:
        node = run.nodes[todo.pop()]
        if node.state in ("waiting", "ready"):
            state.dags.set(run, node, state="futile", reason=f"parent {failed.name} failed")
            node_ended(state, node)
            todo.extend(node.children)


def may_be_ready(state: SchedulerState, run: DagRun, node: NodeRow) -> None:
    """A waiting node whose parents all succeeded and whose clusters outside the DAG
    ended as it asked becomes ready (or fails, if one of those did not succeed)."""
    if any(run.nodes[seq].state != "done" for seq in node.parents):
        return
    pending = False
    for kind in ("after", "after_any"):
        for cluster in node.rules.get(kind, ()):
            status = cluster_status(state, int(cluster))
            if status == "pending":
                state.dags.wait_for(int(cluster), run.id, node.seq)
                pending = True
            elif status != "ok" and (kind == "after" or status == "unknown"):
                why = "did not succeed" if status == "failed" else "has no jobs"
                state.dags.set(run, node, state="failed", ended=state.clock(),
                               reason=f"cluster {cluster} {why}")  # fmt: skip
                node_ended(state, node)
                _futile(state, run, node)
                return
    if not pending:
        # Not written: a restart finds it waiting, with its parents done, and makes
        # it ready again (most ready nodes start at once and are written then).
        state.dags.set(run, node, write=False, state="ready")


def cluster_status(state: SchedulerState, cluster: int) -> str:
    """``pending``, ``ok``, ``failed`` (ended, not every job exited 0) or ``unknown``
    (no such cluster, or one without jobs) of a cluster or DAG waited for."""
    book = state.dags
    if cluster in book.runs:
        return "pending"
    found = book.node_of(cluster)
    if found is not None:
        node = found[1]
        return "pending" if node.state in LIVE else "ok" if node.state == "done" else "failed"
    rows = book.tables.dags([cluster])
    if rows:
        return "ok" if rows[0].state == "done" else "failed"
    owner = book.tables.dag_of_cluster(cluster)
    if owner is not None:  # a node of an ended DAG
        node = book.tables.nodes(owner[0])[owner[1]]
        return "ok" if node.state == "done" else "failed"
    if not _cluster_ended(state, cluster):
        return "pending"
    jobs = state.store.jobs(clusters=[cluster])
    if not jobs:
        return "unknown"
    return "ok" if all(_succeeded(job) for job in jobs) else "failed"


def _recheck(state: SchedulerState, cluster: int) -> None:
    for dag, seq in state.dags.waiting_on(cluster):
        run = state.dags.runs.get(dag)
        if run is None:
            continue
        node = run.nodes[seq]
        if node.state == "waiting":
            may_be_ready(state, run, node)
            maybe_end(state, run)
            advance(state, run)


# ------------------------------------------------------------------ the end of a DAG


def maybe_end(state: SchedulerState, run: DagRun) -> None:
    """End the DAG once no node has anything left to do."""
    if run.live or run.row.state not in OPEN:
        return
    failed = [n for n in run.nodes if n.state == "failed"]
    end_dag(state, run, "failed" if failed else "done", _reasons(failed))


def _reasons(failed: list[NodeRow]) -> str:
    if not failed:
        return ""
    shown = "; ".join(f"{n.name}: {n.reason}" for n in failed[:REASONS_SHOWN])
    more = f"; and {len(failed) - REASONS_SHOWN} more" if len(failed) > REASONS_SHOWN else ""
    return f"{len(failed)} node(s) failed: {shown}{more}"


def end_dag(state: SchedulerState, run: DagRun, final: str, reason: str) -> None:
    from scheduler.dag_mail import dag_ended

    row = run.row
    old = (row.state, row.ended, row.reason)
    row.state, row.ended, row.reason = final, state.clock(), reason
    state.dags.remember(lambda: _restore_row(run, old))
    state.dags.tables.save_dag(row)
    state.dags.end(run)
    dag_log(state, run.id, f"DAG {final}" + (f": {reason}" if reason else ""))
    if final == "done":
        # Nothing of it runs again: its inputs, which its nodes' jobs read, can go. A
        # failed or removed DAG keeps them for --rerun-failed.
        state.effects.defer("remove DAG inputs", partial(state.spool.remove_cluster, run.id))
    log.info("DAG %d of %s %s", run.id, row.owner, final)
    dag_ended(state, run)
    cluster_may_be_done(state, run.id)
    _recheck(state, run.id)


def _restore_row(run: DagRun, old: tuple[str, float | None, str]) -> None:
    run.row.state, run.row.ended, run.row.reason = old


def abort_dag(state: SchedulerState, run: DagRun, reason: str, code: int | None = None) -> None:
    """End the DAG now, failed: its queued jobs removed, its other nodes never run."""
    _stop(state, run, "removed", reason)
    if code is not None:
        reason = f"{reason}; DAG return value {code}"
    end_dag(state, run, "failed", reason)


def _stop(state: SchedulerState, run: DagRun, final: str, reason: str) -> None:
    """Every live node ``final`` (its queued jobs removed): nothing of the DAG runs on."""
    row = run.row
    old = (row.state, row.ended, row.reason)
    row.state = "stopping"  # job changes below are not the nodes' results
    state.dags.remember(lambda: _restore_row(run, old))
    now = state.clock()
    for job in _queued_jobs(state, run):
        remove(state, job, reason, kill=reason)
    for node in run.nodes:
        if node.state not in LIVE:
            continue
        state.dags.set(run, node, state=final, ended=now, reason=reason)
        node_ended(state, node)
    row.state = old[0]


# ------------------------------------------------------------------ users' requests


def remove_dag(state: SchedulerState, run: DagRun, by: str) -> None:
    reason = f"DAG removed {by}"
    _stop(state, run, "removed", reason)
    end_dag(state, run, "removed", reason)


def hold_dag(state: SchedulerState, run: DagRun, by: str) -> None:
    """No node starts, and the jobs of queued nodes are held, until released."""
    _set_dag_state(state, run, "held")
    for job in _queued_jobs(state, run):
        if job.state in (JobState.IDLE, JobState.RUNNING):
            hold(state, job, f"DAG {run.id} held {by}")


def release_dag(state: SchedulerState, run: DagRun, by: str) -> None:
    _set_dag_state(state, run, "running")
    prefix = f"DAG {run.id} held "
    for job in _queued_jobs(state, run):
        if job.state is JobState.HELD and (job.hold_reason or "").startswith(prefix):
            release(state, job, by)
    advance(state, run)
    state.wake()


def _queued_jobs(state: SchedulerState, run: DagRun) -> list[Job]:
    """The active jobs of the DAG's queued nodes."""
    clusters = {n.cluster for n in run.nodes if n.state == "queued" and n.cluster is not None}
    if not clusters:
        return []
    return [job for job in state.jobs.active.values() if job.cluster in clusters]


def _set_dag_state(state: SchedulerState, run: DagRun, new: str) -> None:
    old = (run.row.state, run.row.ended, run.row.reason)
    run.row.state = new
    state.dags.remember(lambda: _restore_row(run, old))
    state.dags.tables.save_dag(run.row)


def resume(state: SchedulerState) -> None:
    """After a restart: scripts that were running run again; nodes whose jobs all
    ended are judged; the DAGs go on."""
    for run in list(state.dags.runs.values()):
        for node in run.nodes:
            if node.state in ("pre", "post"):
                dag_log(state, run.id, f"node {node.name}: {node.state.upper()} script run again")
                if node.state == "post":
                    start_post(state, run, node)
                else:
                    dag_scripts.launch(state, run, node, "pre", script_ended)
            elif node.state == "queued" and (
                node.cluster is None or state.summary.cluster(node.cluster) is None
            ):
                jobs_ended(state, run, node)
            elif node.state == "waiting":
                may_be_ready(state, run, node)
        maybe_end(state, run)
        advance(state, run)


def script_ended(
    state: SchedulerState, key: tuple[int, int, str, int], code: int | None, note: str
) -> None:
    """A script ended with ``code`` (None: it did not run or was killed: ``note``)."""
    dag, seq, which, attempt = key
    run = state.dags.runs.get(dag)
    if run is None:
        return
    node = run.nodes[seq]
    if node.state != which or node.attempt != attempt or run.row.state not in ("running", "held"):
        return  # the DAG moved on (removed, aborted): this result is of no use
    script: dict[str, Any] = node.rules[which]
    value = -1 if code is None else code if code >= 0 else 128 - code
    said = note or f"exited with {value}"
    dag_log(state, dag, f"node {node.name}: {which.upper()} script {said}")
    defer = script.get("defer_status")
    if code is not None and defer is not None and code == defer:
        loop = dag_scripts.running_loop()
        delay = float(script.get("defer_time") or 0)
        if loop is not None:
            loop.call_later(delay, lambda: run_deferred(state, key))
        return
    if which == "pre":
        skip = node.rules.get("pre_skip")
        if skip is not None and value == skip:
            node_result(state, run, node, True, 0, "")
        elif value == 0:
            queue_jobs(state, run, node)
            advance(state, run)  # its PRE script's room is free
        elif node.rules.get("post") and run.row.settings.get("always_run_post"):
            state.dags.set(
                run, node, state="post", return_code=value, reason=dag_scripts.PRE_FAILED + said
            )
            start_post(state, run, node)
        else:
            node_result(state, run, node, False, value, f"PRE script {said}")
        return
    post_ended(state, run, node)
    reason = "" if value == 0 else f"POST script {said}"
    if value and node.reason:
        reason += f" (after: {node.reason})"
    node_result(state, run, node, value == 0, value, reason)


def run_deferred(state: SchedulerState, key: tuple[int, int, str, int]) -> None:
    """Run a script again that asked to be deferred (``SCRIPT DEFER``)."""
    from scheduler.units import run_unit

    def again() -> None:
        run = state.dags.runs.get(key[0])
        if run is None:
            return
        node = run.nodes[key[1]]
        if node.state == key[2] and node.attempt == key[3]:
            dag_scripts.launch(state, run, node, key[2], script_ended)

    run_unit(state, "DAG script deferred", again)
