"""``dq -dag``: DAGs, their nodes by state, and each node (``--json``: the records
``/api/dags`` gives too)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from control_node.cli.common import connect
from control_node.connection import DfarmError
from control_node.render import tabulate
from scheduler import protocol as p

#: The order states are counted in.
ORDER = ("done", "queued", "pre", "post", "ready", "waiting", "failed", "futile", "removed")


def counts_text(counts: dict[str, int]) -> str:
    known = [s for s in ORDER if counts.get(s)] + sorted(set(counts) - set(ORDER))
    return ", ".join(f"{counts[s]} {_word(s)}" for s in known)


def _word(state: str) -> str:
    return {"waiting": "waiting on parents", "queued": "running or idle"}.get(state, state)


#: The states of nodes that have no job in the queue yet, nor will have until they start.
NOT_QUEUED = ("ready", "pre", "post", "waiting")


def not_queued_text(info: p.DagInfo) -> str:
    """``dq -nobatch``'s line for a running DAG's nodes not in the job list, or ""."""
    counts = {s: n for s, n in info.counts.items() if s in NOT_QUEUED and n}
    if not counts:
        return ""
    return (
        f"DAG {info.id} ({info.name}): {sum(counts.values())} node(s) without jobs in the"
        f" queue: {counts_text(counts)} (dq -dag {info.id})"
    )


def dag_text(info: p.DagInfo) -> str:
    ended = time.strftime(" ended %m/%d %H:%M", time.localtime(info.ended)) if info.ended else ""
    lines = [
        f"DAG {info.id} ({info.name}) of {info.owner}: {info.state}{ended};"
        f" {len(info.nodes) or sum(info.counts.values())} nodes: {counts_text(info.counts)}"
    ]
    if info.reason:
        lines.append(f"  {info.reason}")
    if info.nodes:
        rows = []
        for n in info.nodes:
            if n.jobs:
                state = next(s for s in ("running", "held", "idle") if n.jobs.get(s))
                n = replace(n, state=state)
            info_text = n.reason or (
                f"after {', '.join(n.parents)}" if n.state == "waiting" and n.parents else ""
            )
            rows.append(
                (
                    n.name,
                    n.state,
                    "-" if n.cluster is None else n.cluster,
                    f"{n.retries}/{n.max_retries}" if n.max_retries else "-",
                    info_text,
                )
            )
        table = tabulate(
            rows,
            headers=("NODE", "STATE", "CLUSTER", "RETRIES", "INFO"),
            tablefmt="plain",
            disable_numparse=True,
            colalign=("left", "left", "right", "right", "left"),
        )
        lines += ["  " + line.rstrip() for line in table.splitlines()]
    return "\n".join(lines)


def show_dags(args: argparse.Namespace) -> int:
    try:
        ids = [int(i) for i in args.ids]
    except ValueError:
        raise DfarmError("dq -dag takes DAG ids (numbers)") from None
    with connect(args) as client:
        dags = client.dags(ids, all_users=args.allusers)
    if args.json:
        print(json.dumps([p.to_wire(d) for d in dags], indent=1))
        return 0
    if not dags:
        print("no DAGs")
    for info in dags:
        print(dag_text(info))
    return 0
