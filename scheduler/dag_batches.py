"""A running DAG in ``dq``'s batch view: one line named ``DAGFILE+ID`` (as DAGMan's
batch name), in place of its nodes' clusters, counting nodes as ``dq -dag`` does:
DONE the nodes done, RUN / HOLD / IDLE the nodes with jobs in the queue (a running
job makes the node running, else a held one held) or running a script or ready to
start (idle), TOTAL every node: those waiting on their parents count in the total
alone, as DAGMan's nodes not yet submitted do in ``condor_q``."""

from __future__ import annotations

from scheduler import protocol as p
from scheduler.dag_book import DagRun
from scheduler.state import SchedulerState


def with_dags(
    state: SchedulerState, lines: list[p.BatchInfo], owner: str | None
) -> list[p.BatchInfo]:
    """``lines`` with the clusters of running DAGs' nodes replaced by a line a DAG."""
    book = state.dags
    runs = [run for run in book.runs.values() if owner in (None, run.row.owner)]
    if not runs:
        return lines
    kept = [line for line in lines if line.cluster not in book.by_cluster]
    return sorted(kept + [dag_line(state, run) for run in runs], key=lambda line: line.cluster)


def dag_line(state: SchedulerState, run: DagRun) -> p.BatchInfo:
    done = running = held = idle = 0
    queued: list[int] = []
    for node in run.nodes:
        if node.state == "done":
            done += 1
        elif node.state == "queued" and node.cluster is not None:
            queued.append(node.cluster)
            line = state.summary.cluster(node.cluster)
            if line is not None and line.running:
                running += 1
            elif line is not None and line.held:
                held += 1
            else:
                idle += 1
        elif node.state in ("queued", "ready", "pre", "post"):
            idle += 1
    ids = "-" if not queued else f"{min(queued)}.0" if len(queued) == 1 else (
        f"{min(queued)}.0 ... {max(queued)}.0"
    )  # fmt: skip
    return p.BatchInfo(
        cluster=run.id,
        owner=run.row.owner,
        batch_name=f"{run.row.name}+{run.id}",
        submitted=run.row.created,
        done=done,
        running=running,
        idle=idle,
        held=held,
        total=len(run.nodes),
        job_ids=ids,
    )
