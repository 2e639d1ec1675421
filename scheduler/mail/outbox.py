"""The mail outbox: decides on the event loop, delivers in a thread, records in SQLite.

A mail is written to the ``mail`` table in the same transaction as the state
change that caused it, so a crash loses neither; pending mails are taken up
again when the scheduler restarts. What the mailer notes in memory (the jobs it
watches, the mails due) is undone with a unit of work that fails, as its rows are
rolled back (see :mod:`scheduler.undo`). Delivery runs in a daemon thread, one SMTP
connection per batch, and its outcome comes back to the loop: sent, retried
with a doubling delay, or given up (``failed``) after ``retry_for`` seconds or a
permanent refusal. A failing mail server delays no job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from scheduler.job_records import Job
from scheduler.mail import compose, rules
from scheduler.mail.settings import MailConfig, check_address
from scheduler.mail.smtp import Mail, Outcome, deliver
from scheduler.protocol import UNFINISHED_STATES, JobInfo, JobSpec, JobState
from scheduler.store import Store
from scheduler.undo import UndoDict

log = logging.getLogger("scheduler.mail")

#: Mails sent over one SMTP connection.
BATCH = 50
_CHUNK = 500
_INSERT = (
    "INSERT INTO mail (cluster, proc, owner, reason, recipient, message, state, attempts,"
    " created, next_try, error) VALUES (?,?,?,?,?,?,'pending',0,?,?,'')"
)
T = TypeVar("T")


class _Tally(UndoDict[int, int]):
    """A count per cluster, 0 where there is none, each change undone with a failed
    unit."""

    def __missing__(self, key: int) -> int:
        return 0


class Mailer:
    """Notification mail of one scheduler. ``config`` None: no SMTP, no mail."""

    def __init__(
        self,
        config: MailConfig | None,
        store: Store,
        job_dir: Callable[[int, int], Path],
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        #: When mail is queued and falls due (the scheduler gives its own clock).
        self.clock = clock
        self.store = store
        self.job_dir = job_dir
        undo = store.remember
        #: Last state seen of each job of a cluster that asked for mail.
        self._seen: UndoDict[tuple[int, int], JobState] = UndoDict(undo)
        #: Idle or running jobs of each such cluster, its jobs watched, its number
        #: of jobs.
        self._unfinished = _Tally(undo)
        self._watched = _Tally(undo)
        self._size: UndoDict[int, int] = UndoDict(undo)
        #: Clusters submitted in parts whose last part has not come yet: each counts
        #: one unfinished (and watched) job more, so its digest waits for all parts.
        self._coming: UndoDict[int, None] = UndoDict(undo)
        #: Mails not yet delivered: id -> time of the next attempt.
        self._due: UndoDict[int, float] = UndoDict(undo)
        self._wake: asyncio.Event | None = None
        self._any_mail = bool(store.query("SELECT 1 FROM mail LIMIT 1"))

    @property
    def configured(self) -> bool:
        return self.config is not None

    def addressed(self, specs: list[JobSpec], owner: str) -> list[JobSpec]:
        """``specs`` with the owner's registered address (``dfarm user add --email``)
        where ``notification`` asks for mail and names no ``notify_user``, as
        HTCondor mails the job's owner then."""
        if all(s.notify_user or s.notification == "Never" for s in specs):
            return specs
        rows = self.store.query("SELECT email FROM users WHERE name=?", (owner,))
        address = rows[0]["email"] if rows else None
        try:
            check_address(address or "")
        except ValueError:
            return specs  # none usable: check_submission warns
        return [
            s if s.notify_user or s.notification == "Never" else replace(s, notify_user=address)
            for s in specs
        ]

    # ------------------------------------------------------------------ watching jobs

    def link_jobs(self, url: str) -> None:
        """Link each mail to the dashboard's job page (``{job}``: the id), unless
        ``--mail-job-url`` named another."""
        if self.config is not None and self.config.job_url is None:
            self.config = dataclasses.replace(self.config, job_url=url)

    def resume(self, active: Iterable[Job]) -> None:
        """After a restart: watch the clusters of active jobs that asked for mail and
        take up the mails still pending."""
        if self.config is None:
            return
        jobs = list(active)
        clusters = {j.cluster for j in jobs if rules.wants_mail(j.spec)}
        for job in jobs:
            if job.cluster in clusters:
                self._watch(job)
        for chunk in _chunks(sorted(clusters)):
            rows = self.store.query(
                f"SELECT cluster, COUNT(*) AS n FROM jobs WHERE cluster IN ({_marks(chunk)})"
                " GROUP BY cluster",
                chunk,
            )
            self._size.update({row["cluster"]: row["n"] for row in rows})
        for row in self.store.query("SELECT id, next_try FROM mail WHERE state='pending'"):
            self._due[row["id"]] = row["next_try"]
        if self._due:
            log.info("%d mail(s) still to deliver", len(self._due))

    def submitted(self, jobs: list[Job], more: bool = False) -> None:
        """A new cluster, or a part of one (``more``: other parts follow): watch it
        if any of its jobs asked for mail."""
        if self.config is None:
            return
        cluster = jobs[0].cluster
        if any(rules.wants_mail(j.spec) for j in jobs):
            for job in jobs:
                self._watch(job)
            self._size[cluster] = self._size.get(cluster, 0) + len(jobs)
        if not more:
            self.submit_ended(cluster)
        elif cluster in self._watched and cluster not in self._coming:
            self._coming[cluster] = None
            self._unfinished[cluster] += 1
            self._watched[cluster] += 1

    def submit_ended(self, cluster: int) -> None:
        """No more parts of ``cluster`` will come (its last came, or it was abandoned)."""
        if cluster not in self._coming:
            return
        del self._coming[cluster]
        self._unfinished[cluster] -= 1
        self._watched[cluster] -= 1
        if self._unfinished[cluster] <= 0:  # every job queued of it has ended
            if self._size.get(cluster, 1) > 1:
                self._digests(cluster)
            self._forget(cluster)

    def _watch(self, job: Job) -> None:
        self._seen[(job.cluster, job.proc)] = job.state
        self._watched[job.cluster] += 1
        if job.state in UNFINISHED_STATES:
            self._unfinished[job.cluster] += 1

    def changed(self, job: Job) -> None:
        """The one hook on job state changes (called in the change's transaction)."""
        key = (job.cluster, job.proc)
        old = self._seen.get(key)
        if old is None or old is job.state:
            return
        final = job.state in (JobState.COMPLETED, JobState.REMOVED)
        if final:
            del self._seen[key]
        else:
            self._seen[key] = job.state
        try:
            self._changed(job, old)
        except Exception:
            # A bug here must not undo the job's state change.
            log.exception("cannot prepare the mail about job %s", job.id)
        if final:
            self._watched[job.cluster] -= 1
            if self._watched[job.cluster] <= 0:  # the cluster is over: forget it
                self._forget(job.cluster)

    def _forget(self, cluster: int) -> None:
        self._watched.pop(cluster, None)
        self._size.pop(cluster, None)
        self._unfinished.pop(cluster, None)

    def _changed(self, job: Job, old: JobState) -> None:
        cluster = job.cluster
        self._unfinished[cluster] += (job.state in UNFINISHED_STATES) - (old in UNFINISHED_STATES)
        digest = self._size.get(cluster, 1) > 1
        why = rules.reason(job, old)
        if (
            why is not None
            and rules.wants_mail(job.spec)
            and (job.spec.notification_per_job or not digest)
            and rules.mails_for(job.spec.notification, why)
        ):
            self._job_mail(job, why)
        if (
            old in UNFINISHED_STATES
            and job.state not in UNFINISHED_STATES
            and self._unfinished[cluster] <= 0
        ):
            del self._unfinished[cluster]
            if digest:
                self._digests(cluster)

    def _job_mail(self, job: Job, why: str) -> None:
        assert self.config is not None and job.spec.notify_user
        detail = ""
        if why == "requeued":
            events = self.store.events(job.cluster, job.proc)
            detail = events[-1].detail if events else ""
        small = self.store.results.files(job.cluster, job.proc)
        tails = {
            name: compose.tail_text(small[name] if name in small else self._tail(job, name))
            for name in ("stdout", "stderr")
        }
        message = compose.job_message(
            job,
            why,
            tails,
            sender=self.config.sender,
            recipient=job.spec.notify_user,
            job_url=self.config.job_url,
            detail=detail,
        )
        self._queue(job.cluster, job.proc, job.owner, why, job.spec.notify_user, message)

    def _tail(self, job: Job, name: str) -> bytes:
        """The end of a large stdout or stderr, which the spool keeps (small ones: SQLite)."""
        path = self.job_dir(job.cluster, job.proc) / name
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - compose.TAIL_BYTES))
                return f.read()
        except OSError:
            return b""

    def _digests(self, cluster: int) -> None:
        """One digest per address for the jobs of a finished cluster that asked for one."""
        assert self.config is not None
        groups: dict[str, list[Job]] = {}
        for job in self.store.jobs(clusters=[cluster]):
            if rules.wants_mail(job.spec) and not job.spec.notification_per_job:
                groups.setdefault(job.spec.notify_user or "", []).append(job)
        for address, jobs in groups.items():
            notifications = {j.spec.notification for j in jobs}
            if not any(rules.digest_wanted(n, jobs) for n in notifications):
                continue
            message = compose.digest_message(
                cluster, jobs, sender=self.config.sender, recipient=address,
                job_url=self.config.job_url,
            )  # fmt: skip
            self._queue(cluster, None, jobs[0].owner, "digest", address, message)

    def queue_mail(self, cluster: int, owner: str, why: str, to: str, message: Any) -> None:
        """Queue a mail about a whole cluster or DAG (``why`` names it), as this
        module's own are."""
        self._queue(cluster, None, owner, why, to, message)

    def _queue(
        self, cluster: int, proc: int | None, owner: str, why: str, to: str, message: Any
    ) -> None:
        now = self.clock()
        with self.store.transaction() as db:
            cur = db.execute(_INSERT, (cluster, proc, owner, why, to, message.as_bytes(), now, now))
        self._due[int(cur.lastrowid or 0)] = now
        if not self._any_mail:
            self.store.remember(lambda: setattr(self, "_any_mail", False))
            self._any_mail = True
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ delivery

    async def run(self) -> None:
        """Deliver mails as they come due, until cancelled."""
        self._wake = asyncio.Event()
        while True:
            now = self.clock()
            due = sorted((t, i) for i, t in self._due.items() if t <= now)[:BATCH]
            if not due or self.config is None:
                later = min(self._due.values(), default=None)
                timeout = None if later is None or self.config is None else later - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
                continue
            ids = [i for _, i in due]
            rows = self.store.query(
                f"SELECT id, recipient, message FROM mail WHERE id IN ({_marks(ids)})"
                " AND state='pending'",
                ids,
            )
            mails = [Mail(r["id"], r["recipient"], bytes(r["message"])) for r in rows]
            for gone in set(ids) - {m.id for m in mails}:
                self._due.pop(gone, None)
            if mails:
                try:
                    outcomes = await _in_thread(deliver, self.config, mails)
                except Exception:
                    log.exception("mail delivery failed")
                    outcomes = {m.id: Outcome(False, False, "internal error") for m in mails}
                self._record(outcomes)

    def _record(self, outcomes: dict[int, Outcome]) -> None:
        assert self.config is not None
        now = self.clock()
        ids = list(outcomes)
        rows = self.store.query(
            f"SELECT id, cluster, proc, recipient, attempts, created FROM mail"
            f" WHERE id IN ({_marks(ids)})",
            ids,
        )
        with self.store.transaction() as db:
            for row in rows:
                mail_id, result = row["id"], outcomes[row["id"]]
                attempts = row["attempts"] + 1
                what = _what(row)
                if result.delivered:
                    state, next_try = "sent", None
                    log.info("mail about %s to %s sent", what, row["recipient"])
                elif result.permanent or now + self.config.delay(attempts) > (
                    row["created"] + self.config.retry_for
                ):
                    state, next_try = "failed", None
                    log.error(
                        "mail about %s to %s given up after %d attempt(s): %s",
                        what, row["recipient"], attempts, result.error,
                    )  # fmt: skip
                else:
                    state, next_try = "pending", now + self.config.delay(attempts)
                    log.warning(
                        "mail about %s to %s not delivered (attempt %d): %s; next try in %.0f s",
                        what, row["recipient"], attempts, result.error, next_try - now,
                    )  # fmt: skip
                db.execute(
                    "UPDATE mail SET state=?, attempts=?, next_try=?, error=?, sent=?"
                    " WHERE id=?",
                    (state, attempts, next_try or now, result.error, now if state == "sent"
                     else None, mail_id),
                )  # fmt: skip
                if next_try is None:
                    self._due.pop(mail_id, None)
                else:
                    self._due[mail_id] = next_try

    # ------------------------------------------------------------------ status

    def annotate(self, infos: list[JobInfo], owner: str) -> list[JobInfo]:
        """``infos`` with the delivery state of each job's mail (its own, or its
        cluster's digest) in ``mail``, for the jobs of ``owner`` only: the state's
        error text can name the recipient."""
        if not self._any_mail or not infos:
            return infos
        status = self.status(sorted({i.cluster for i in infos if i.owner == owner}))
        out = []
        for info in infos:
            text = status.get((info.cluster, info.proc)) or status.get((info.cluster, None))
            text = text if info.owner == owner else None
            out.append(dataclasses.replace(info, mail=text) if text else info)
        return out

    def status(self, clusters: list[int]) -> dict[tuple[int, int | None], str]:
        """The state of the latest mail of each job (proc None: a cluster's digest)."""
        status: dict[tuple[int, int | None], str] = {}
        for chunk in _chunks(clusters):
            rows = self.store.query(
                f"SELECT cluster, proc, state, error FROM mail WHERE cluster IN ({_marks(chunk)})"
                " ORDER BY id",
                chunk,
            )
            for row in rows:
                text = row["state"] + (f": {row['error']}" if row["error"] else "")
                status[(row["cluster"], row["proc"])] = text
        return status


def _what(row: Any) -> str:
    return (
        f"cluster {row['cluster']}"
        if row["proc"] is None
        else f"job {row['cluster']}.{row['proc']}"
    )


def _marks(values: list[Any]) -> str:
    return ",".join("?" * len(values))


def _chunks(values: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run ``fn`` in a daemon thread: a hung SMTP server can delay neither the loop
    nor the scheduler's exit (a mail cut short stays pending and is sent again)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def target() -> None:
        result, error = None, None
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the loop, which logs it
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name="dfarm-smtp", daemon=True).start()
    return future
