"""The one mail of a DAG's end: nodes done and failed, the time it took and each failed
node's reason, sent per the DAG's ``notification`` (``Complete`` or ``Always``: at
every end; ``Error``: when it failed) to its ``notify_user``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.mail.compose import SUBJECT_TAG, duration, when
from scheduler.mail.compose import _message as compose_message

if TYPE_CHECKING:
    from scheduler.dag_book import DagRun
    from scheduler.state import SchedulerState

#: Failed nodes listed in the mail, at most.
LISTED = 50


def wants_mail(notification: str, final: str) -> bool:
    return notification in ("Complete", "Always") or (notification == "Error" and final != "done")


def dag_ended(state: SchedulerState, run: DagRun) -> None:
    """Queue the mail of ``run``'s end, if its settings ask for one."""
    settings = run.row.settings
    address = settings.get("notify_user")
    config = state.mailer.config
    notification = settings.get("notification", "")
    if not address or config is None or not wants_mail(notification, run.row.state):
        return
    counts: dict[str, int] = {}
    for node in run.nodes:
        counts[node.state] = counts.get(node.state, 0) + 1
    failed = [n for n in run.nodes if n.state == "failed"]
    row = run.row
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    subject = f"{SUBJECT_TAG} DAG {row.id} {row.state}: {len(run.nodes)} nodes, {summary}"
    lines = [
        f"DAG {row.id} ({row.name}) {row.state}: {len(run.nodes)} nodes, {summary}.",
        "",
        f"Submitted:   {when(row.created)}",
        f"Ended:       {when(row.ended)}",
        f"Total time:  {duration((row.ended or row.created) - row.created)}",
    ]
    if row.reason:
        lines += ["", row.reason]
    if failed:
        lines += ["", "Failed nodes:"]
        lines += [f"  {n.name}: {n.reason}" for n in failed[:LISTED]]
        if len(failed) > LISTED:
            lines.append(f"  ... and {len(failed) - LISTED} more (dq -dag {row.id})")
    message = compose_message(subject, "\n".join(lines) + "\n", config.sender, address, str(row.id))
    state.mailer.queue_mail(row.id, row.owner, "dag", address, message)
