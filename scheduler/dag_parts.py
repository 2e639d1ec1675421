"""A DAG too large for one frame arrives in parts (see :class:`SubmitDag`): the
parts before the last are kept in memory, by DAG, until the last one makes the DAG
whole; nothing is checked or queued before. Parts whose DAG's reservation ended (the
submitter went away) are dropped when another DAG's first part arrives."""

from __future__ import annotations

from dataclasses import dataclass, replace

from scheduler import protocol as p
from scheduler.callers import Caller
from scheduler.connection import RequestError
from scheduler.state import SchedulerState

#: Nodes of one DAG, at most.
MAX_NODES = 1_000_000


@dataclass(slots=True)
class Parts:
    owner: str
    first: p.SubmitDag
    nodes: list[p.DagNodeSubmit]


def gather(state: SchedulerState, conn: Caller, msg: p.SubmitDag) -> p.SubmitDag | None:
    """The whole DAG once ``msg`` is its last part, else None (the part is kept)."""
    book = state.dags
    if msg.first_node == 0:
        if msg.last:
            return msg
        _drop_stale(state)
        held = Parts(conn.name, msg, list(msg.nodes))
        _put(state, msg.dag, held)
    else:
        held = book.parts.get(msg.dag)  # type: ignore[assignment]
        if held is None or held.owner != conn.name or len(held.nodes) != msg.first_node:
            raise RequestError(
                f"DAG {msg.dag}: a part from node {msg.first_node} that does not follow"
                " the parts received",
                "invalid",
            )
        count = len(held.nodes)
        held.nodes.extend(msg.nodes)
        state.dags.remember(lambda: held.nodes.__delitem__(slice(count, None)))
    if msg.last or len(held.nodes) > MAX_NODES:
        # Not put back if the unit fails: a refused DAG is refused whole.
        book.parts.pop(msg.dag, None)
    if len(held.nodes) > MAX_NODES:
        raise RequestError(f"at most {MAX_NODES} nodes in one DAG", "invalid")
    if not msg.last:
        return None
    return replace(held.first, nodes=held.nodes, first_node=0, last=True)


def _put(state: SchedulerState, dag: int, parts: Parts | None) -> None:
    book = state.dags
    old = book.parts.get(dag)
    if parts is None:
        book.parts.pop(dag, None)
    else:
        book.parts[dag] = parts

    def undo() -> None:
        if old is None:
            book.parts.pop(dag, None)
        else:
            book.parts[dag] = old

    book.remember(undo)


def _drop_stale(state: SchedulerState) -> None:
    for dag in list(state.dags.parts):
        owner = state.store.clusters.cluster_owner(dag)
        if owner is None or owner[1]:
            _put(state, dag, None)
