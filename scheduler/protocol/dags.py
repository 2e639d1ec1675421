"""Messages of workflows: a DAG submitted (``dsub-dag``, ``Client.submit_dag``, a
``submit(after=...)``), its state asked for (``dq -dag``) and ran again
(``dsub-dag --rerun-failed``); registered like every other message type.

A DAG's id is a cluster id reserved for it (``new_cluster``), as HTCondor's DAGMan
job is a cluster: its inputs (every node's, each stored once) and scripts are
uploaded there. Each node's jobs become a cluster of their own once its parents
have succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from scheduler.protocol.messages import CONTROL, Message
from scheduler.protocol.records import JobSpec

__all__ = [
    "DAG_STATES",
    "NODE_STATES",
    "DagInfo",
    "DagList",
    "DagNodeInfo",
    "DagNodeSubmit",
    "DagScriptSpec",
    "DagSubmitted",
    "QueryDags",
    "RerunDag",
    "SubmitDag",
]

#: A node's states: waiting on parents, ready (its parents done, waiting for room
#: under MAXJOBS), its PRE script running, its jobs queued, its POST script running,
#: then done, failed, or never run because a parent failed (``futile``) or the DAG
#: was removed or aborted.
NODE_STATES = ("waiting", "ready", "pre", "queued", "post", "done", "failed", "futile", "removed")
#: A DAG's states.
DAG_STATES = ("running", "held", "done", "failed", "removed")


@dataclass(frozen=True, kw_only=True)
class DagScriptSpec:
    """A PRE or POST script: ``executable`` is the sha256 of its file, sent in
    :attr:`SubmitDag.scripts`; ``name`` its file name."""

    name: str
    executable: str
    arguments: list[str] = field(default_factory=list)
    defer_status: int | None = None
    defer_time: int = 0


@dataclass(frozen=True, kw_only=True)
class DagNodeSubmit:
    """One node: its jobs (as ``submit_jobs`` carries them), parents and rules."""

    name: str
    submit_file: str = ""
    jobs: list[JobSpec] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    #: Clusters outside the DAG it waits for: ``after`` until each succeeded,
    #: ``after_any`` until each ended.
    after: list[int] = field(default_factory=list)
    after_any: list[int] = field(default_factory=list)
    done: bool = False
    retry: int = 0
    retry_unless_exit: int | None = None
    pre: DagScriptSpec | None = None
    post: DagScriptSpec | None = None
    pre_skip: int | None = None
    priority: int = 0
    category: str | None = None
    abort_on: int | None = None
    abort_return: int | None = None
    #: A cluster the client reserved for it (its submit file names $(Cluster));
    #: None: the scheduler reserves one.
    cluster: int | None = None


@dataclass(frozen=True, kw_only=True)
class SubmitDag(Message):
    """Queue the DAG reserved as cluster ``dag``; its inputs are uploaded (small ones
    inline in ``files``, large ones named in ``uploads`` as for ``submit_jobs``).

    A DAG too large for one frame comes in parts, in order, on one connection: each
    part names the index of its first node (``first_node``) and carries the next
    nodes; the fields besides ``nodes`` are read from the first part; the ``last``
    part makes the DAG whole, and it is then checked and queued (or refused) as one.
    """

    type: ClassVar[str] = "submit_dag"
    roles = CONTROL
    dag: int
    name: str
    nodes: list[DagNodeSubmit]
    files: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)
    #: Script files by sha256 (base64).
    scripts: dict[str, str] = field(default_factory=dict)
    max_jobs: dict[str, int] = field(default_factory=dict)
    #: DAGMAN_* settings applied (see docs/workflows.md).
    config: dict[str, str] = field(default_factory=dict)
    notify_user: str | None = None
    notification: str = "Never"
    #: The index in the DAG of ``nodes[0]`` (0 for the first part).
    first_node: int = 0
    #: Whether this is the DAG's last part.
    last: bool = True


@dataclass(frozen=True, kw_only=True)
class DagSubmitted(Message):
    type: ClassVar[str] = "dag_submitted"
    dag: int
    #: The cluster of each node that runs jobs.
    clusters: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class DagNodeInfo:
    name: str
    state: str
    cluster: int | None = None
    parents: list[str] = field(default_factory=list)
    category: str | None = None
    #: Retries used, and allowed.
    retries: int = 0
    max_retries: int = 0
    #: The node's return value: the exit of its POST script, else of its jobs.
    return_code: int | None = None
    reason: str = ""
    started: float | None = None
    ended: float | None = None
    #: Its jobs in the queue by state (``idle``, ``running``, ``held``) while it is
    #: ``queued``.
    jobs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DagInfo:
    id: int
    owner: str
    name: str
    state: str
    created: float
    ended: float | None = None
    #: Why it failed: each failed node and its reason, or the abort.
    reason: str = ""
    #: Nodes by state.
    counts: dict[str, int] = field(default_factory=dict)
    nodes: list[DagNodeInfo] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class QueryDags(Message):
    """DAGs by id (none: the caller's, or everyone's with ``all_users``); ``nodes``:
    with their nodes; ``running``: only those not ended."""

    type: ClassVar[str] = "query_dags"
    roles = CONTROL
    dags: list[int] = field(default_factory=list)
    all_users: bool = False
    nodes: bool = True
    running: bool = False


@dataclass(frozen=True, kw_only=True)
class DagList(Message):
    type: ClassVar[str] = "dag_list"
    dags: list[DagInfo]


@dataclass(frozen=True, kw_only=True)
class RerunDag(Message):
    """Run again what of an ended DAG did not succeed (``--rerun-failed``)."""

    type: ClassVar[str] = "rerun_dag"
    roles = CONTROL
    dag: int
