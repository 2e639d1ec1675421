"""Submitting a workflow: every node's submit file read (with its VARS) and every
input and script found before anything is queued; then one cluster reserved for the
DAG, its inputs (each file once, whatever the number of nodes using it) uploaded
there, and the DAG sent (in parts when it does not fit one frame). The scheduler
keeps it and queues each node's jobs as the node's own cluster once its parents
have succeeded.

``Client.submit(..., after=[...])`` is a DAG of one node that waits for clusters
outside it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from control_node.connection import Connection
from control_node.dag_model import Dag, DagNode, DagScript
from control_node.input_files import InputTrees
from control_node.submit import (
    SubmitError,
    _mentions_cluster,
    _read_small_files,
    _spec,
    _staged,
    parse_description,
)
from control_node.submit_file import ProcDescription
from control_node.upload import Upload, UploadError
from scheduler import protocol as p

#: Bytes of one message of a DAG sent in parts, at most: half a frame, as the
#: scheduler's limit is a frame (16 MiB unless set lower).
PART_BYTES = p.DEFAULT_MAX_FRAME // 2


class DagSubmitError(SubmitError):
    """The DAG cannot be submitted (names the DAG file's line where one is at fault)."""


@dataclass
class NodePlan:
    """One node as read on the submitting machine."""

    node: DagNode
    folder: Path
    procs: list[ProcDescription] = field(default_factory=list)
    #: The cluster reserved for it, where its submit file names $(Cluster).
    cluster: int | None = None
    after: list[int] = field(default_factory=list)
    after_any: list[int] = field(default_factory=list)
    #: Script path -> its content.
    scripts: dict[str, bytes] = field(default_factory=dict)
    #: Whether its submit file is read again once a cluster is reserved for it.
    from_file: bool = True


def _where(dag: Dag, node: DagNode) -> str:
    return f"{node.file or dag.path or '<dag>'}:{node.line}: " if node.line else ""


def plan_dag(dag: Dag, cwd: str | None = None) -> list[NodePlan]:
    """Read every node's submit file and scripts; a :class:`DagSubmitError` names the
    DAG file's line (and the submit file's) of the first problem."""
    base = Path(dag.path).parent if dag.path else Path(cwd or os.getcwd())
    plans = []
    for node in dag.nodes.values():
        folder = (base / node.directory).resolve() if node.directory else base
        plan = NodePlan(node, folder)
        where = _where(dag, node)
        for script in (node.pre, node.post):
            if script is not None:
                plan.scripts[script.executable] = _read_script(folder, script, where)
        if node.hold is not None:
            raise DagSubmitError(f"{where}SCRIPT HOLD is not supported: dfarm has no HOLD scripts")
        if not node.done and not node.noop:
            path = folder / node.submit_file
            if not path.is_file():
                raise DagSubmitError(f"{where}node {node.name}: no submit file {path}")
            try:
                plan.procs = _parse(path, folder, node, 0)
            except SubmitError as exc:
                raise DagSubmitError(f"{where}node {node.name}: {exc}") from None
        plans.append(plan)
    return plans


def _parse(path: Path, folder: Path, node: DagNode, cluster: int) -> list[ProcDescription]:
    from control_node.submit_file import SubmitFileError, parse_submit_file

    appended = set(node.append_vars)
    before = {"JOB": node.name, "RETRY": "0"}
    before |= {k: v for k, v in node.vars.items() if k not in appended}
    after = {k: v for k, v in node.vars.items() if k in appended}
    try:
        found = parse_submit_file(
            path, cluster=cluster, cwd=str(folder), macros=before, append_macros=after
        )
    except SubmitFileError as exc:
        raise SubmitError(str(exc), exc.path, exc.line) from None
    return found.procs


def _read_script(folder: Path, script: DagScript, where: str) -> bytes:
    path = folder / script.executable
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DagSubmitError(f"{where}script {path}: {exc.strerror or exc}") from None


def send_dag(
    conn: Connection, dag: Dag, plans: list[NodePlan], name: str, settings: dict[str, str]
) -> p.DagSubmitted:
    """Reserve the DAG's cluster, upload every input once, send the DAG."""
    for plan in plans:
        path = plan.folder / plan.node.submit_file
        if plan.from_file and plan.procs and _mentions_cluster(path, None):
            created = conn.request(p.NewCluster())
            assert isinstance(created, p.ClusterCreated)
            plan.cluster = created.cluster
            try:
                plan.procs = _parse(
                    plan.folder / plan.node.submit_file, plan.folder, plan.node, plan.cluster
                )
            except SubmitError as exc:
                raise DagSubmitError(f"node {plan.node.name}: {exc}") from None
    created = conn.request(p.NewCluster())
    assert isinstance(created, p.ClusterCreated)
    trees = InputTrees()
    paths = list(
        dict.fromkeys(
            local for plan in plans for proc in plan.procs for local, _ in _staged(proc, trees)
        )
    )
    digests, inline = _read_small_files(paths)
    try:
        large = Upload(created.upload, [path for path in paths if path not in digests]).run()
        large.finish()
    except UploadError as exc:
        raise DagSubmitError(f"uploading the inputs failed: {exc}") from None
    digests.update(large.digests)
    scripts: dict[str, str] = {}
    nodes = []
    for plan in plans:
        node = plan.node
        specs = p.shared_specs([_spec(proc, digests, trees) for proc in plan.procs])
        nodes.append(
            p.DagNodeSubmit(
                name=node.name,
                submit_file=node.submit_file,
                jobs=specs,
                parents=list(node.parents),
                after=plan.after,
                after_any=plan.after_any,
                done=node.done,
                retry=node.retry,
                retry_unless_exit=node.retry_unless_exit,
                pre=_script(node.pre, plan, scripts),
                post=_script(node.post, plan, scripts),
                pre_skip=node.pre_skip,
                priority=node.priority,
                category=node.category,
                abort_on=node.abort_on[0] if node.abort_on else None,
                abort_return=node.abort_on[1] if node.abort_on else None,
                cluster=plan.cluster,
            )
        )
    whole = p.SubmitDag(
        dag=created.cluster,
        name=name,
        nodes=nodes,
        files=inline,
        uploads=dict(large.uploads),
        scripts=scripts,
        max_jobs=dict(dag.max_jobs),
        # The reader applies DAGMAN_DEFAULT_APPEND_VARS itself.
        config={k: v for k, v in dag.config.items() if k.upper() != "DAGMAN_DEFAULT_APPEND_VARS"},
        notify_user=settings.get("notify_user"),
        notification=settings.get("notification", "Never"),
    )
    reply: p.Message | None = None
    for part in dag_parts(whole):
        reply = conn.request(part)
    assert isinstance(reply, p.DagSubmitted)
    return reply


def dag_parts(whole: p.SubmitDag, limit: int | None = None) -> list[p.SubmitDag]:
    """``whole`` as messages of at most ``limit`` bytes (:data:`PART_BYTES`) each,
    as far as its nodes allow (a node larger than that goes alone): the first with
    every field but the later nodes, the others with their nodes alone."""
    limit = PART_BYTES if limit is None else limit
    room = limit - len(p.encode(replace(whole, nodes=[])))
    if len(p.encode(whole)) <= limit:
        return [whole]
    parts: list[p.SubmitDag] = []
    start, size = 0, 0
    rest = replace(
        whole, nodes=[], files={}, uploads={}, scripts={}, max_jobs={}, config={},
        notify_user=None,
    )  # fmt: skip
    for i, node in enumerate(whole.nodes):
        cost = len(p.encode_wire(p.to_wire(node))) + 1
        if size + cost > room and i > start:
            base = whole if not parts else rest
            parts.append(replace(base, nodes=whole.nodes[start:i], first_node=start, last=False))
            start, size, room = i, 0, limit - len(p.encode(rest))
        size += cost
    base = whole if not parts else rest
    parts.append(replace(base, nodes=whole.nodes[start:], first_node=start, last=True))
    return parts


def _script(
    script: DagScript | None, plan: NodePlan, scripts: dict[str, str]
) -> p.DagScriptSpec | None:
    if script is None:
        return None
    data = plan.scripts[script.executable]
    sha = hashlib.sha256(data).hexdigest()
    scripts[sha] = p.pack_bytes(data)
    return p.DagScriptSpec(
        name=os.path.basename(script.executable),
        executable=sha,
        arguments=list(script.arguments),
        defer_status=script.defer_status,
        defer_time=script.defer_time,
    )


def submit_dag(
    conn: Connection, dag: Dag, cwd: str | None = None, settings: dict[str, str] | None = None
) -> p.DagSubmitted:
    """Read and submit ``dag``; nothing is queued if any part of it is wrong."""
    plans = plan_dag(dag, cwd)
    name = os.path.basename(dag.path) if dag.path else "<python>"
    return send_dag(conn, dag, plans, name, settings or {})


def submit_after(
    conn: Connection,
    path: Path,
    text: str | None,
    cwd: str | None,
    after: list[int],
    after_any: list[int],
    strict: bool = False,
) -> tuple[int, list[str]]:
    """Submit one submit file whose jobs wait for clusters (``after``: until each
    succeeded; ``after_any``: until each ended); its cluster and warnings. ``strict``
    refuses a key that is neither HTCondor's nor used as a macro, as ``submit_file``."""
    description = parse_description(path, text, 0, cwd, None, strict=strict)
    node = DagNode(name=path.name or "job", submit_file=path.name)
    plan = NodePlan(node, Path(cwd or os.getcwd()), description.procs, None, after, after_any)
    plan.from_file = False
    if description.procs and _mentions_cluster(path, text):
        created = conn.request(p.NewCluster())
        assert isinstance(created, p.ClusterCreated)
        plan.cluster = created.cluster
        seed = description.random_seed
        plan.procs = parse_description(path, text, created.cluster, cwd, seed).procs
    reply = send_dag(conn, Dag(nodes={node.name: node}), [plan], path.name, {})
    return reply.clusters.get(node.name, 0), list(description.warnings) + list(reply.warnings)
