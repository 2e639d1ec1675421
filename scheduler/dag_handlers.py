"""What the scheduler does with users' requests about workflows: submit a DAG, show
DAGs, run again what of one failed, and remove, hold or release a whole DAG."""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from scheduler import dag_scripts, dags
from scheduler import protocol as p
from scheduler.authz import may_act_for
from scheduler.callers import Caller
from scheduler.connection import RequestError
from scheduler.dag_book import DagRun
from scheduler.dag_parts import MAX_NODES, gather
from scheduler.dag_store import DagRow, NodeRow, same_as, specs_text
from scheduler.quota import QuotaError
from scheduler.staging import StagingError, upload_sizes
from scheduler.state import SchedulerState, refuse_if_disk_full
from scheduler.submission import SubmissionError, check_submission

log = logging.getLogger("scheduler.server")

#: Bytes of one PRE/POST script, at most.
MAX_SCRIPT = 1 << 20
#: ``CONFIG`` settings a DAG may make, and the setting each becomes.
SETTINGS = {
    "DAGMAN_MAX_JOBS_SUBMITTED": "max_nodes",
    "DAGMAN_MAX_PRE_SCRIPTS": "max_pre",
    "DAGMAN_MAX_POST_SCRIPTS": "max_post",
    "DAGMAN_ALWAYS_RUN_POST": "always_run_post",
}
#: Settings that are booleans.
FLAGS = {"always_run_post"}


def on_submit_dag(state: SchedulerState, conn: Caller, msg: p.SubmitDag) -> p.Message:
    refuse_if_disk_full(state)
    owner = state.store.clusters.cluster_owner(msg.dag)
    if owner is None or owner[0] != conn.name:
        raise RequestError(f"cluster {msg.dag} was not reserved by you", "not_found")
    if owner[1] or msg.dag in state.partial_clusters:
        raise RequestError(f"cluster {msg.dag} was already submitted", "conflict")
    whole = gather(state, conn, msg)
    if whole is None:
        return p.DagSubmitted(dag=msg.dag)
    msg = whole
    parents = _check_graph(msg.nodes)
    settings = _settings(msg)
    scripts = _scripts(conn.name, msg)
    now = state.clock()
    #: The nodes that run jobs.
    running: list[str] = []
    #: Each node's jobs as stored; nodes of one submit file are checked once.
    texts: dict[str, str] = {}
    checked: dict[str, list[str]] = {}
    try:
        all_specs = [spec for node in msg.nodes for spec in node.jobs]
        state.spool.store_inputs(msg.dag, msg.files)
        sizes = upload_sizes(msg.uploads, all_specs)
        declared = {msg.uploads[sha]: size for sha, size in sizes.items()}
        state.quota.check_submission(conn.name, msg.dag, declared)
        state.spool.name_uploads(msg.dag, msg.uploads, sizes)
        warnings: list[str] = []
        inputs = state.spool.input_dir(msg.dag)
        #: Per submit file, the latest node whose jobs were stored in full: its jobs,
        #: their fields as given, and its seq.
        stored: dict[str, tuple[list[p.JobSpec], list[dict[str, Any]], int]] = {}
        for seq, given in enumerate(msg.nodes):
            _check_after(state, conn, given)
            if given.done or not given.jobs:
                continue
            running.append(given.name)
            earlier = stored.get(given.submit_file)
            if earlier is not None and _alike(earlier[0], earlier[1], given.jobs):
                # Jobs written alike (a submit file without VARS): stored once, and
                # checked once.
                texts[given.name] = same_as(earlier[2])
                continue
            fields = [dict(vars(spec)) for spec in given.jobs]
            stored[given.submit_file] = (given.jobs, fields, seq)
            node_specs = state.mailer.addressed(given.jobs, conn.name)
            text = texts[given.name] = specs_text(node_specs)
            if text not in checked:
                checked[text] = check_submission(node_specs, inputs, mail=state.mailer.configured)
                warnings.extend(w for w in dict.fromkeys(checked[text]) if w not in warnings)
    except (SubmissionError, StagingError, p.ProtocolError) as exc:
        raise RequestError(str(exc), "invalid") from None
    except QuotaError as exc:
        raise RequestError(str(exc), "quota") from None
    book = state.dags
    cluster_of = _node_clusters(state, conn, msg, running)
    nodes = [
        NodeRow(
            seq=seq,
            name=given.name,
            cluster=cluster_of.get(given.name),
            state="done" if given.done else "waiting",
            rules=_rules(given),
            submit_file=given.submit_file,
            parents=parents[seq],
        )
        for seq, given in enumerate(msg.nodes)
    ]
    for node in nodes:
        for parent in node.parents:
            nodes[parent].children.append(node.seq)
    row = DagRow(id=msg.dag, owner=conn.name, name=msg.name, state="running", created=now)
    row.settings = settings
    book.tables.insert_dag(row, nodes, {n.seq: texts[n.name] for n in nodes if n.name in texts})
    book.tables.close_cluster(msg.dag, now)
    state.reservations.submitted(msg.dag)
    state.store.remember(state.spool.end_upload(msg.dag))
    folder = dags.dag_folder(state, msg.dag)
    state.effects.defer(
        "DAG folder", partial(dag_scripts.prepare_folder, folder, conn.name, scripts)
    )
    run = book.add(row, nodes)
    dags.dag_log(state, msg.dag, f"DAG {msg.dag} ({msg.name}) of {conn.name}: {len(nodes)} nodes")
    for node in nodes:
        if node.state == "waiting":
            dags.may_be_ready(state, run, node)
    dags.maybe_end(state, run)
    dags.advance(state, run)
    log.info("user %s submitted DAG %d: %d node(s)", conn.name, msg.dag, len(nodes))
    return p.DagSubmitted(dag=msg.dag, clusters=cluster_of, warnings=warnings)


def _alike(jobs: list[p.JobSpec], fields: list[dict[str, Any]], specs: list[p.JobSpec]) -> bool:
    """Whether ``specs`` are equal to ``jobs``, whose ``fields`` (their dicts, copied
    before anything was kept on them) were taken: a spec's dict holds every field,
    so equal dicts are equal specs (a value kept on one only makes them differ)."""
    return len(jobs) == len(specs) and all(
        spec is job or vars(spec) == kept
        for job, kept, spec in zip(jobs, fields, specs, strict=True)
    )


def _node_clusters(
    state: SchedulerState, conn: Caller, msg: p.SubmitDag, running: list[str]
) -> dict[str, int]:
    """The cluster of each node that runs jobs: the one its client reserved, or a new one."""
    now = state.clock()
    given = {node.name: node.cluster for node in msg.nodes if node.cluster is not None}
    submit_files = {node.name: node.submit_file for node in msg.nodes}
    cluster_of: dict[str, int] = {}
    runs = set(running)
    for name, cluster in given.items():
        owner = state.store.clusters.cluster_owner(cluster)
        if owner is None or owner[0] != conn.name or owner[1] or cluster == msg.dag:
            raise RequestError(f"node {name}: cluster {cluster} was not reserved by you", "invalid")
        if name in runs:
            cluster_of[name] = cluster
        state.dags.tables.close_cluster(cluster, now, submit_files[name])
        state.reservations.submitted(cluster)
        state.store.remember(state.spool.end_upload(cluster))
    new = [name for name in running if name not in cluster_of]
    fresh = state.dags.tables.reserve_clusters(conn.name, now, [submit_files[n] for n in new])
    cluster_of.update(zip(new, fresh, strict=True))
    return {name: cluster_of[name] for name in running}


def _check_graph(nodes: list[p.DagNodeSubmit]) -> list[list[int]]:
    """Each node's parents (by position); refuses duplicates, unknown parents, cycles."""
    if not nodes:
        raise RequestError("the DAG has no nodes", "invalid")
    seq: dict[str, int] = {}
    if len(nodes) > MAX_NODES:
        raise RequestError(f"at most {MAX_NODES} nodes in one DAG", "invalid")
    for i, node in enumerate(nodes):
        if not node.name or len(node.name) > 1024 or not node.name.isprintable():
            what = f"node name {node.name[:100]!r}"
            raise RequestError(f"{what} is empty, too long or not printable", "invalid")
        if node.name in seq:
            raise RequestError(f"node {node.name!r} is named twice", "invalid")
        seq[node.name] = i
    parents: list[list[int]] = []
    for node in nodes:
        unknown = [name for name in node.parents if name not in seq]
        if unknown:
            raise RequestError(f"node {node.name}: no node {unknown[0]!r}", "invalid")
        parents.append(sorted({seq[name] for name in node.parents}))
    waiting = [len(ps) for ps in parents]
    children: list[list[int]] = [[] for _ in nodes]
    for child, ps in enumerate(parents):
        for parent in ps:
            children[parent].append(child)
    todo = deque(i for i, n in enumerate(waiting) if n == 0)
    seen = 0
    while todo:
        i = todo.popleft()
        seen += 1
        for child in children[i]:
            waiting[child] -= 1
            if waiting[child] == 0:
                todo.append(child)
    if seen < len(nodes):
        cyclic = sorted(nodes[i].name for i, n in enumerate(waiting) if n)
        raise RequestError(f"the DAG has a cycle through {', '.join(cyclic[:10])}", "invalid")
    return parents


def _settings(msg: p.SubmitDag) -> dict[str, Any]:
    settings: dict[str, Any] = {"max_jobs": dict(msg.max_jobs)}
    for key, value in msg.config.items():
        name = SETTINGS.get(key.upper())
        if name is None:
            raise RequestError(f"CONFIG: {key} is not a setting dfarm applies", "invalid")
        if name in FLAGS:
            settings[name] = value.strip().lower() in ("true", "1", "yes")
            continue
        try:
            settings[name] = int(value)
        except ValueError:
            raise RequestError(f"CONFIG: {key} = {value!r} is not a number", "invalid") from None
    if any(n < 0 for n in msg.max_jobs.values()):
        raise RequestError("MAXJOBS must be at least 0", "invalid")
    if msg.notify_user:
        settings["notify_user"] = msg.notify_user
        settings["notification"] = msg.notification
    return settings


def _scripts(owner: str, msg: p.SubmitDag) -> dict[str, bytes]:
    """The script files, checked; refused where this scheduler may not run them."""
    wanted = {s.executable for n in msg.nodes for s in (n.pre, n.post) if s is not None}
    if wanted:
        why = dag_scripts.may_run_scripts(owner)
        if why is not None:
            raise RequestError(why, "invalid")
    files: dict[str, bytes] = {}
    for sha in wanted:
        text = msg.scripts.get(sha)
        data = p.unpack_bytes(text) if text is not None else None
        if data is None or len(data) > MAX_SCRIPT or hashlib.sha256(data).hexdigest() != sha:
            raise RequestError(f"script {sha[:12]} was not sent whole", "invalid")
        files[sha] = data
    return files


def _check_after(state: SchedulerState, conn: Caller, node: p.DagNodeSubmit) -> None:
    for cluster in [*node.after, *node.after_any]:
        owner = state.store.clusters.cluster_owner(cluster)
        if owner is None or not may_act_for(conn, owner[0]):
            raise RequestError(f"node {node.name}: no cluster {cluster} of yours", "invalid")


def _rules(node: p.DagNodeSubmit) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    for name in ("retry", "priority"):
        if getattr(node, name):
            rules[name] = getattr(node, name)
    for name in ("retry_unless_exit", "pre_skip", "category", "abort_on", "abort_return"):
        if getattr(node, name) is not None:
            rules[name] = getattr(node, name)
    for name in ("after", "after_any"):
        if getattr(node, name):
            rules[name] = list(getattr(node, name))
    for name in ("pre", "post"):
        script = getattr(node, name)
        if script is not None:
            rules[name] = {
                "name": script.name,
                "executable": script.executable,
                "arguments": list(script.arguments),
                "defer_status": script.defer_status,
                "defer_time": script.defer_time,
            }
    return rules


# ------------------------------------------------------------------ queries


def on_query_dags(state: SchedulerState, conn: Caller, msg: p.QueryDags) -> p.Message:
    book = state.dags
    owner = None if msg.all_users and conn.admin else conn.name
    if msg.running and not msg.dags:
        ids = sorted(d for d, run in book.runs.items() if owner in (None, run.row.owner))
    else:
        ids = msg.dags or book.tables.owned(owner)
    ended = [d for d in ids if d not in book.runs]
    rows = {row.id: row for row in book.tables.dags(ended)} if ended else {}
    infos = []
    for dag in ids:
        run = book.runs.get(dag)
        row = run.row if run is not None else rows.get(dag)
        if msg.running and run is None:
            continue
        if row is None or not may_act_for(conn, row.owner):
            if msg.dags:
                raise RequestError(f"no DAG {dag}{'' if conn.admin else ' of yours'}", "not_found")
            continue
        nodes = run.nodes if run is not None else book.tables.nodes(dag)
        infos.append(dag_info(row, nodes, msg.nodes, partial(_queued, state)))
    return p.DagList(dags=infos)


def _queued(state: SchedulerState, cluster: int) -> dict[str, int]:
    """A cluster's jobs in the queue, by state."""
    counts = state.summary.cluster(cluster)
    if counts is None:
        return {}
    found = {"idle": counts.idle, "running": counts.running, "held": counts.held}
    return {name: n for name, n in found.items() if n}


def dag_info(
    row: DagRow,
    nodes: list[NodeRow],
    with_nodes: bool = True,
    queued: Callable[[int], dict[str, int]] | None = None,
) -> p.DagInfo:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.state] = counts.get(node.state, 0) + 1
    names = [n.name for n in nodes]
    return p.DagInfo(
        id=row.id,
        owner=row.owner,
        name=row.name,
        state=row.state,
        created=row.created,
        ended=row.ended,
        reason=row.reason,
        counts=counts,
        nodes=[
            p.DagNodeInfo(
                name=n.name,
                state=n.state,
                cluster=n.cluster,
                parents=[names[i] for i in n.parents],
                category=n.rules.get("category"),
                retries=n.attempt,
                max_retries=int(n.rules.get("retry", 0)),
                return_code=n.return_code,
                reason=n.reason,
                started=n.started,
                ended=n.ended,
                jobs=queued(n.cluster)
                if queued is not None and n.state == "queued" and n.cluster is not None
                else {},
            )
            for n in nodes
        ]
        if with_nodes
        else [],
    )


# ------------------------------------------------------------------ changes


def on_rerun_dag(state: SchedulerState, conn: Caller, msg: p.RerunDag) -> p.Message:
    """Run the nodes of an ended DAG that did not succeed, and those after them."""
    book = state.dags
    if msg.dag in book.runs:
        raise RequestError(f"DAG {msg.dag} has not ended", "conflict")
    rows = book.tables.dags([msg.dag])
    if not rows or not may_act_for(conn, rows[0].owner):
        raise RequestError(f"no DAG {msg.dag}{'' if conn.admin else ' of yours'}", "not_found")
    row = rows[0]
    if row.state == "done":
        raise RequestError(f"DAG {msg.dag} succeeded: nothing to run again", "conflict")
    if row.settings.get("files_expired"):
        days = state.config.result_retention / 86400
        raise RequestError(
            f"DAG {msg.dag} cannot run again: its inputs were removed {days:g} day(s)"
            " after it ended, with its results",
            "conflict",
        )
    nodes = book.tables.nodes(msg.dag)
    row.state, row.ended, row.reason = "running", None, ""
    book.tables.save_dag(row)
    run = book.add(row, nodes)
    sizes = state.store.cluster_sizes(n.cluster for n in nodes if n.cluster is not None)
    again = [n for n in nodes if n.state in ("failed", "futile", "removed")]
    for node in again:
        book.set(
            run, node, state="waiting", attempt=0, reason="", return_code=None, ended=None,
            first_proc=sizes.get(node.cluster, 0) if node.cluster is not None else 0,
        )  # fmt: skip
    dags.dag_log(state, msg.dag, f"DAG {msg.dag} run again by {conn.name}: {len(again)} node(s)")
    for node in again:
        if node.state == "waiting":
            dags.may_be_ready(state, run, node)
    dags.maybe_end(state, run)
    dags.advance(state, run)
    clusters = {n.name: n.cluster for n in again if n.cluster is not None}
    return p.DagSubmitted(dag=msg.dag, clusters=clusters)


def change_dags(
    state: SchedulerState, conn: Caller, action: str, ids: list[str], reason: str
) -> tuple[list[str], list[str], dict[str, str]]:
    """Apply ``action`` to the DAGs that ``ids`` name: the other ids, then the DAGs
    changed and those left alone (with why)."""
    rest: list[str] = []
    changed: list[str] = []
    skipped: dict[str, str] = {}
    by = f"by {conn.name}" + (f": {reason}" if reason else "")
    for text in ids:
        run = _named_dag(state, conn, text)
        if run is None:
            rest.append(text)
            continue
        if isinstance(run, str):
            skipped[text] = run
            continue
        if action == "remove":
            dags.remove_dag(state, run, by)
        elif action == "hold" and run.row.state == "running":
            dags.hold_dag(state, run, by)
        elif action == "release" and run.row.state == "held":
            dags.release_dag(state, run, by)
        else:
            skipped[text] = f"is a DAG that is {run.row.state}"
            continue
        changed.append(f"DAG {run.id}")
    return rest, changed, skipped


def _named_dag(state: SchedulerState, conn: Caller, text: str) -> DagRun | str | None:
    """The running DAG ``text`` names, why it cannot be changed, or None: no DAG."""
    if not text.isdigit():
        return None
    dag = int(text)
    run = state.dags.runs.get(dag)
    if run is None:
        rows = state.dags.tables.dags([dag])
        if not rows or not may_act_for(conn, rows[0].owner):
            return None
        return f"is a DAG already {rows[0].state}"
    if not may_act_for(conn, run.row.owner):
        return None
    return run
