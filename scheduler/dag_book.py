"""The workflows a scheduler runs, in memory: each DAG not yet ended with its nodes,
and the indexes that turn a job's change into its node's.

Only what decisions read lives here; every change of it is written to SQLite
(:mod:`scheduler.dag_store`) in the unit that makes it, and a restart rebuilds this
from there (:meth:`DagBook.__init__`).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from scheduler.dag_store import DagRow, DagTables, NodeRow
from scheduler.database import Database

#: States of a node that still has something to do.
LIVE = frozenset({"waiting", "ready", "pre", "queued", "post"})
#: States of a node that counts against MAXJOBS: its jobs or scripts run.
ACTIVE = frozenset({"pre", "queued", "post"})
#: A DAG that still runs (or waits, held).
OPEN = ("running", "held")
#: The blocked queue of the nodes waiting for room under DAGMAN_MAX_PRE_SCRIPTS (no
#: category's name: those are printable).
PRE_QUEUE = "\0pre"


@dataclass
class DagRun:
    """One DAG not yet ended."""

    row: DagRow
    nodes: list[NodeRow]
    by_name: dict[str, int]
    #: Nodes in :data:`ACTIVE` states, per category ("" for none).
    active: Counter[str] = field(default_factory=Counter)
    #: Nodes in :data:`LIVE` states.
    live: int = 0
    #: Ready nodes, best first: (-priority, seq); an entry whose node is no longer
    #: ready is skipped.
    ready: list[tuple[int, int]] = field(default_factory=list)
    #: Ready nodes whose category was full when their turn came, per category.
    blocked: dict[str, list[int]] = field(default_factory=dict)
    #: Set when a failed unit undid changes: the queues are rebuilt from the states.
    stale: bool = False
    #: Nodes whose POST script runs, and those waiting for room under
    #: DAGMAN_MAX_POST_SCRIPTS.
    posts: set[int] = field(default_factory=set)
    post_queue: list[int] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.row.id

    def scripts_running(self, which: str) -> int:
        return sum(n.state == which for n in self.nodes)

    def category(self, node: NodeRow) -> str:
        return str(node.rules.get("category") or "")

    def rebuild(self) -> None:
        """The counts and queues from the nodes' states."""
        self.active = Counter(self.category(n) for n in self.nodes if n.state in ACTIVE)
        self.live = sum(n.state in LIVE for n in self.nodes)
        self.ready = [_rank(n) for n in self.nodes if n.state == "ready"]
        heapq.heapify(self.ready)
        self.blocked = {}
        self.stale = False


def _rank(node: NodeRow) -> tuple[int, int]:
    return -int(node.rules.get("priority") or 0), node.seq


class DagBook:
    """Every DAG not yet ended, by id; node clusters to their nodes; clusters outside
    a DAG that nodes wait for (``after=``)."""

    def __init__(self, database: Database):
        self.tables = DagTables(database)
        self.remember: Callable[[Callable[[], None]], None] = database.remember
        self.runs: dict[int, DagRun] = {}
        #: A node's cluster -> (DAG, node), for the DAGs in :attr:`runs`.
        self.by_cluster: dict[int, tuple[int, int]] = {}
        #: A cluster (or DAG) that nodes wait for -> those nodes.
        self.external: dict[int, set[tuple[int, int]]] = {}
        #: Lines for the DAGs' logs, written once the turn's units commit.
        self.log_lines: dict[int, list[str]] = {}
        #: When ended DAGs' files were last looked at for expiry.
        self.last_sweep = 0.0
        #: The parts received of DAGs sent in parts (see :mod:`scheduler.dag_parts`).
        self.parts: dict[int, Any] = {}
        for row in self.tables.dags(states=OPEN):
            self.add(row, self.tables.nodes(row.id))

    def add(self, row: DagRow, nodes: list[NodeRow]) -> DagRun:
        run = DagRun(row, nodes, {n.name: n.seq for n in nodes})
        run.rebuild()
        self.runs[row.id] = run
        for node in nodes:
            if node.cluster is not None:
                self.by_cluster[node.cluster] = (row.id, node.seq)
        self.remember(partial(self.drop, row.id))
        return run

    def drop(self, dag: int) -> None:
        run = self.runs.pop(dag, None)
        if run is None:
            return
        for node in run.nodes:
            if node.cluster is not None:
                self.by_cluster.pop(node.cluster, None)

    def end(self, run: DagRun) -> None:
        """``run`` ended: it leaves memory (put back if the unit fails)."""
        self.drop(run.id)
        self.remember(partial(self._put_back, run))

    def _put_back(self, run: DagRun) -> None:
        self.runs[run.id] = run
        for node in run.nodes:
            if node.cluster is not None:
                self.by_cluster[node.cluster] = (run.id, node.seq)

    def inputs_of(self, cluster: int) -> int | None:
        """The cluster whose inputs the jobs of ``cluster`` read: its DAG's for a node's
        (a node has no inputs folder of its own); None: its own."""
        key = self.by_cluster.get(cluster)
        return None if key is None else key[0]

    def lone_job(self, cluster: int) -> bool | None:
        """Whether ``cluster``, a node's, holds one job alone (its first attempt's
        only job); None: not known here (not a node's cluster, or its attempt was
        queued before a restart), to be asked of SQLite."""
        found = self.node_of(cluster)
        if found is None or not found[1].watched or not found[1].jobs:
            return None
        node = found[1]
        return node.first_proc == 0 and node.jobs == 1

    def node_of(self, cluster: int) -> tuple[DagRun, NodeRow] | None:
        key = self.by_cluster.get(cluster)
        if key is None:
            return None
        run = self.runs[key[0]]
        return run, run.nodes[key[1]]

    def holds(self, cluster: int) -> bool:
        """Whether ``cluster`` (a DAG, or a node's) has not ended: those awaiting it
        wait on."""
        if cluster in self.runs:
            return True
        found = self.node_of(cluster)
        return found is not None and found[1].state in LIVE

    def set(self, run: DagRun, node: NodeRow, write: bool = True, **changes: Any) -> None:
        """Change ``node`` (its row written in the open unit), keeping the DAG's counts
        and queues; undone with a unit that fails. ``write=False``: only in memory, for
        a change a restart makes again from what is written (a waiting node whose
        parents are done becomes ready)."""
        old = {name: getattr(node, name) for name in changes}
        self._apply(run, node, changes)
        if write:
            self.tables.save_node(run.id, node)
        self.remember(partial(self._undo, run, node, old))

    def _undo(self, run: DagRun, node: NodeRow, old: dict[str, Any]) -> None:
        for name, value in old.items():
            setattr(node, name, value)
        run.stale = True

    def _apply(self, run: DagRun, node: NodeRow, changes: dict[str, Any]) -> None:
        before = node.state
        for name, value in changes.items():
            setattr(node, name, value)
        after = node.state
        if before == after:
            return
        category = run.category(node)
        if before in ACTIVE:
            run.active[category] -= 1
        if after in ACTIVE:
            run.active[category] += 1
        run.live += (after in LIVE) - (before in LIVE)
        if after == "ready":
            heapq.heappush(run.ready, _rank(node))
        freed = [PRE_QUEUE] if before == "pre" else []
        if before in ACTIVE and after not in ACTIVE:
            freed += [category, ""]
        for queue in freed:
            for seq in run.blocked.pop(queue, ()):
                heapq.heappush(run.ready, _rank(run.nodes[seq]))

    def watch(self, node: NodeRow) -> None:
        """The node's attempt begins in this process: its jobs' ends are all seen."""
        old = (node.watched, node.failed_job)
        node.watched, node.failed_job = True, None
        self.remember(partial(self._unwatch, node, old))

    def set_failed(self, node: NodeRow, failed: tuple[str, int, str]) -> None:
        old = (node.watched, node.failed_job)
        node.failed_job = failed
        self.remember(partial(self._unwatch, node, old))

    def _unwatch(self, node: NodeRow, old: tuple[bool, tuple[str, int, str] | None]) -> None:
        node.watched, node.failed_job = old

    def wait_for(self, cluster: int, dag: int, seq: int) -> None:
        waiting = self.external.setdefault(cluster, set())
        if (dag, seq) not in waiting:
            waiting.add((dag, seq))
            self.remember(partial(waiting.discard, (dag, seq)))

    def waiting_on(self, cluster: int) -> list[tuple[int, int]]:
        """The nodes waiting for ``cluster``, no longer registered there."""
        waiting = self.external.pop(cluster, None)
        if not waiting:
            return []
        self.remember(partial(self.external.__setitem__, cluster, waiting))
        return sorted(waiting)
