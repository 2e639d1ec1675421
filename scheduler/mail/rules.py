"""Which state changes mail whom: the ``notification`` rules, in one place.

- ``Complete`` (the default when an address is given): when a job ends,
  whatever its exit code, or could not start (its inputs could not be staged, or
  its program could not be executed: a hold mailed as a failure).
- ``Error``: when a job fails: a non-zero exit code, a signal, or a hold.
- ``Always``: on completion, on every hold, and each time a running job goes
  back to the queue to run again (a retry).
- ``Never``: no mail.

A cluster of more than one job sends one digest when no job of it is idle or
running any more, unless ``notification_per_job = true``.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.job_records import Job
from scheduler.mail.compose import failed
from scheduler.protocol import NOT_STARTED, JobSpec, JobState

NOTIFICATIONS = ("Never", "Complete", "Error", "Always")


def wants_mail(spec: JobSpec) -> bool:
    return bool(spec.notify_user) and spec.notification != "Never"


def reason(job: Job, old: JobState) -> str | None:
    """Why the change ``old -> job.state`` may be mailed: completed, failed, held,
    requeued; None when it is never mailed (submitted, started, removed, released)."""
    new = job.state
    if new is JobState.COMPLETED:
        return "failed" if failed(job) else "completed"
    if new is JobState.HELD:
        return "failed" if could_not_start(job) else "held"
    if old is JobState.RUNNING and new is JobState.IDLE:
        return "requeued"
    return None


def could_not_start(job: Job) -> bool:
    """Whether ``job`` is held because its program never started."""
    return job.state is JobState.HELD and (job.hold_reason or "").startswith(NOT_STARTED)


def mails_for(notification: str, why: str) -> bool:
    """Whether a job with this ``notification`` is mailed for ``why``."""
    if notification == "Complete":
        return why in ("completed", "failed")
    if notification == "Error":
        return why in ("failed", "held")
    return notification == "Always"


def digest_wanted(notification: str, jobs: Sequence[Job]) -> bool:
    """Whether a finished cluster (the jobs of one address) gets its digest."""
    if notification == "Error":
        return any(failed(j) for j in jobs)
    if notification in ("Complete", "Always"):
        return any(j.state in (JobState.COMPLETED, JobState.HELD) for j in jobs)
    return False
