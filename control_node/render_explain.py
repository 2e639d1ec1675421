"""The text of ``dfarm users``, ``dq -analyze`` and ``dsub --dry-run``."""

from __future__ import annotations

from collections.abc import Sequence

from control_node.render import tabulate
from scheduler import protocol as p


def users_table(reply: p.UserList) -> str:
    """Users by fair-share order: least usage first."""
    rows = [
        (
            u.user,
            f"{u.effective_usage:.1f}",
            f"{u.share * 100:.1f}%",
            u.idle,
            u.running,
            u.rank or "-",
        )
        for u in reply.users
    ]
    table = tabulate(
        rows, headers=["USER", "USAGE(cpu-s)", "SHARE", "IDLE", "RUNNING", "NEXT"], tablefmt="plain"
    )
    hours = reply.halflife / 3600
    note = f"Usage decays with a half-life of {hours:g} h; the user with the least goes first."
    return f"{table}\n{note}" if rows else f"No usage yet.\n{note}"


def analyses(items: Sequence[p.JobAnalysis]) -> str:
    """Each job's explanation as a paragraph."""
    return "\n\n".join(f"{a.id}: {a.summary}" for a in items)


def cluster_analysis(c: p.ClusterAnalysis) -> str:
    """A cluster's jobs counted by why they wait, the most first."""
    lines = [f"Cluster {c.cluster} ({c.owner}): {c.idle} idle, {c.running} running, {c.held} held."]
    lines += [f"  {n} idle: {reason}" for reason, n in c.idle_reasons.items()]
    lines += [f"  {n} held: {reason}" for reason, n in c.hold_reasons.items()]
    return "\n".join(lines)
