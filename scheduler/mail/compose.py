"""The text of notification mails: one job's, or one digest for a whole cluster.

Messages are built with :class:`email.message.EmailMessage` and addresses with
:class:`email.headerregistry.Address`, and every header value a user can
influence (the executable's name, the address) is reduced to one printable
line first, so nothing a user writes can add a header.
"""

from __future__ import annotations

import email.policy
import email.utils
import time
from collections.abc import Mapping, Sequence
from email.headerregistry import Address
from email.message import EmailMessage

from scheduler.job_records import Job
from scheduler.protocol import JobState

#: Lines of stdout and stderr quoted in a job's mail, and the bytes read for them.
TAIL_LINES = 20
TAIL_BYTES = 4096
#: Jobs listed by name in a digest, per list.
DIGEST_LIST = 20
SUBJECT_TAG = "[dfarm]"


def failed(job: Job) -> bool:
    """A job that ended badly: held, a non-zero exit code, or killed by a signal."""
    if job.state is JobState.HELD:
        return True
    return job.state is JobState.COMPLETED and (job.exit_code != 0 or job.exit_signal is not None)


def outcome(job: Job) -> str:
    """``exit code 0``, ``killed by signal 9``, ``held: <reason>``, ..."""
    if job.state is JobState.HELD:
        return f"held: {job.hold_reason or 'no reason given'}"
    if job.exit_signal is not None:
        return f"killed by signal {job.exit_signal}"
    if job.exit_code is not None:
        return f"exit code {job.exit_code}"
    return job.state.value


def job_message(
    job: Job,
    reason: str,
    tails: Mapping[str, str],
    *,
    sender: str,
    recipient: str,
    job_url: str | None,
    detail: str = "",
) -> EmailMessage:
    """The mail about one job; ``reason`` is completed, failed, held or requeued."""
    what = {
        "completed": "completed",
        "failed": "failed",
        "held": "was put on hold",
        "requeued": "was requeued to run again",
    }[reason]
    subject = f"{SUBJECT_TAG} job {job.id} {reason}: {job.spec.executable} ({outcome(job)})"
    if reason == "requeued":
        subject = f"{SUBJECT_TAG} job {job.id} requeued: {job.spec.executable}"
    lines = [f"Job {job.id} {what}.", ""]
    rows = [
        ("Executable", " ".join([job.spec.executable, *job.spec.arguments])),
        ("Owner", job.owner),
        ("Worker", job.worker or "-"),
        ("Submitted", when(job.submit_time)),
        ("Started", when(job.start_time)),
        ("Ended", when(job.end_time)),
        ("Wall time", duration(job.wall_time)),
        ("CPU time", duration(job.cpu_time)),
        ("Starts", str(job.num_starts)),
    ]
    if reason == "requeued":
        rows.append(("Requeued because", detail or "-"))
    elif job.state is JobState.HELD:
        rows.append(("Hold reason", job.hold_reason or "-"))
    if job.exit_signal is not None:
        rows.append(("Signal", str(job.exit_signal)))
    elif job.exit_code is not None:
        rows.append(("Exit code", str(job.exit_code)))
    lines += [f"{name + ':':<18}{one_line(value, 500)}" for name, value in rows]
    for name in ("stdout", "stderr"):
        text = tails.get(name, "")
        lines += ["", f"Last lines of {name}:" if text else f"{name}: (empty)"]
        lines += [f"  {line}" for line in text.splitlines()]
    lines += ["", *_fetch_hint(job.id, job_url)]
    return _message(subject, "\n".join(lines), sender, recipient, job.id)


def digest_message(
    cluster: int,
    jobs: Sequence[Job],
    *,
    sender: str,
    recipient: str,
    job_url: str | None,
) -> EmailMessage:
    """One mail for a whole cluster: counts, run times, the slowest and the failed jobs."""
    completed = [j for j in jobs if j.state is JobState.COMPLETED and not failed(j)]
    bad = [j for j in jobs if failed(j)]
    removed = [j for j in jobs if j.state is JobState.REMOVED]
    held = [j for j in bad if j.state is JobState.HELD]
    ran = [j for j in jobs if j.wall_time is not None]
    total = sum(j.wall_time or 0.0 for j in ran)
    cpu = sum(j.cpu_time or 0.0 for j in ran)
    executables = sorted({j.spec.executable for j in jobs})
    counts = f"{len(completed)} completed, {len(bad) - len(held)} failed"
    counts += f", {len(held)} held" if held else ""
    counts += f", {len(removed)} removed" if removed else ""
    subject = f"{SUBJECT_TAG} cluster {cluster} done: {len(jobs)} jobs, {counts}"
    lines = [
        f"Cluster {cluster} is done: {len(jobs)} jobs, {counts}.",
        "",
        f"Executable:      {one_line(', '.join(executables), 300)}",
        f"Submitted:       {when(min(j.submit_time for j in jobs))}",
        f"First start:     {when(min((j.start_time for j in ran if j.start_time), default=None))}",
        f"Last end:        {when(max((j.end_time for j in jobs if j.end_time), default=None))}",
        f"Total run time:  {duration(total)} wall, {duration(cpu)} CPU",
        f"Mean run time:   {duration(total / len(ran)) if ran else '-'} per job that ran",
    ]
    if ran:
        slowest = sorted(ran, key=lambda j: j.wall_time or 0.0, reverse=True)[:5]
        lines += ["", "Slowest jobs:"]
        lines += [f"  {j.id:<12} {duration(j.wall_time)}  on {j.worker or '-'}" for j in slowest]
    if bad:
        lines += ["", "Failed jobs:"]
        lines += [
            f"  {j.id:<12} {one_line(outcome(j), 200)}  on {j.worker or '-'}"
            for j in bad[:DIGEST_LIST]
        ]
        if len(bad) > DIGEST_LIST:
            lines.append(f"  ... and {len(bad) - DIGEST_LIST} more: dq --all {cluster}")
    lines += ["", *_fetch_hint(str(cluster), job_url)]
    return _message(subject, "\n".join(lines), sender, recipient, str(cluster))


def _fetch_hint(job_id: str, job_url: str | None) -> list[str]:
    lines = [f"Fetch the results with:  dfetch {job_id}"]
    if job_url:
        lines.append(f"On the web:  {job_url.replace('{job}', job_id)}")
    return lines


def _message(subject: str, body: str, sender: str, recipient: str, job_id: str) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = Address(display_name="dfarm", addr_spec=sender)
    msg["To"] = Address(addr_spec=recipient)
    msg["Subject"] = one_line(subject, 200)
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid("dfarm", domain=sender.rpartition("@")[2])
    # RFC 3834: an automatic message, so vacation responders stay quiet.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Dfarm-Job"] = job_id
    msg.set_content(body, cte="quoted-printable")
    return msg


def one_line(text: str, limit: int) -> str:
    """``text`` as one printable line of at most ``limit`` characters."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def tail_text(data: bytes) -> str:
    """The last :data:`TAIL_LINES` lines of ``data``, decoded, control characters dropped."""
    text = data[-TAIL_BYTES:].decode("utf-8", errors="replace")
    lines = text.splitlines()[-TAIL_LINES:]
    return "\n".join(
        "".join(c if c.isprintable() or c == "\t" else "?" for c in ln) for ln in lines
    )


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(timestamp))


def duration(seconds: float | None) -> str:
    """``0+00:01:05`` (days+hh:mm:ss), as HTCondor and ``dq`` print run times."""
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 86400}+{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
