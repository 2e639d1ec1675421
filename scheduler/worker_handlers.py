"""What the scheduler does with the messages of workers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

from scheduler import protocol as p
from scheduler.connection import Connection, RequestError
from scheduler.dispatch import Slots
from scheduler.handshake import BY_POOL_SECRET
from scheduler.job_results import extract_result
from scheduler.matching.attributes import slot_attributes
from scheduler.protocol import JobState
from scheduler.queue_ahead import release
from scheduler.result_hashes import hash_results
from scheduler.store import Job
from scheduler.submission import safe_name, safe_result_name

log = logging.getLogger("scheduler.server")

POOL_SECRET_REFUSED = (
    "this scheduler takes workers with a credential of their own only, not the pool"
    " secret: run 'dfarm worker add NAME' on the scheduler node and start the worker with"
    " --credential-file (or start a throw-away scheduler with --allow-pool-secret)"
)
#: Attempts of a job that may fail on full worker disks before it is held.
MAX_DISK_FULL = 3


def _status(msg: p.JobFinished) -> str:
    """``exit code 1`` or ``signal 9``: how a job's program ended."""
    return f"exit code {msg.exit_code}" if msg.exit_signal is None else f"signal {msg.exit_signal}"


def _check_registration(msg: p.Register) -> None:
    """Refuse what no real worker sends, before anything is recorded."""
    if msg.slots < 1 or msg.cpus < 1 or msg.memory_mb < 0 or msg.gpus < 0:
        raise RequestError("slots and cpus must be >= 1, memory and gpus >= 0", "invalid")
    for field, entries in (("running", msg.running), ("dropped", msg.dropped)):
        for entry in entries:
            job_id, _, attempt = entry.partition(":")
            try:
                proc = p.parse_job_id(job_id)[1]
            except ValueError:
                proc = None
            if proc is None or not attempt.isdigit():
                raise RequestError(f"{field}: {entry[:40]!r} is not JOB_ID:ATTEMPT", "invalid")


class WorkerHandlers:
    """Handlers of worker messages; mixed into :class:`scheduler.server.Scheduler`."""

    def on_register(self, conn: Connection, msg: p.Register) -> None:
        if conn.slots is not None:
            raise RequestError("this worker is already registered")
        if conn.auth == BY_POOL_SECRET and not self.config.allow_pool_secret:
            log.warning("worker %s from %s: the pool secret is not accepted", conn.name, conn.peer)
            raise RequestError(POOL_SECRET_REFUSED, "auth")
        _check_registration(msg)
        now = time.time()
        worker_id = self.store.worker_id(conn.name, now)
        if worker_id in self.workers:
            raise RequestError(f"a worker named {conn.name!r} is already connected", "conflict")
        conn.slots = Slots(
            worker_id=worker_id,
            name=conn.name,
            slots=max(1, msg.slots),
            cpus=msg.cpus,
            memory_mb=msg.memory_mb,
            gpus=msg.gpus,
            disk_free_mb=msg.metrics.disk_free_mb,
        )
        conn.slots.attributes = slot_attributes(conn.slots, msg.metrics)
        conn.metrics, conn.last_heartbeat = msg.metrics, now
        self._disk_state(conn.slots, msg.metrics.disk_full)
        self.workers[worker_id] = conn
        # Several heartbeats fit in the timeout, so one late heartbeat loses nothing.
        interval = min(self.config.heartbeat_interval, self.config.worker_timeout / 3)
        # The reply goes first: a worker reads nothing else before it (stale attempts
        # are stopped with messages that follow).
        reply = p.Registered(
            worker_id=worker_id, heartbeat_interval=interval, spool=self.spool.share
        )
        conn.send(reply.with_id(msg.id))
        self._adopt(conn, msg.running, set(msg.dropped))
        log.info(
            "worker %s (id %d) registered from %s: %d slots, %d cpus, %d MB",
            conn.name, worker_id, conn.peer, msg.slots, msg.cpus, msg.memory_mb,
        )  # fmt: skip
        self._wake.set()
        return None

    def _adopt(self, conn: Connection, running: list[str], dropped: set[str]) -> None:
        """Take back the attempts a returning worker still runs; stop the stale ones;
        requeue the others (those it ``dropped`` unstarted as never started)."""
        assert conn.slots is not None
        for entry in running:
            job_id, _, attempt_text = entry.partition(":")
            job = self.jobs.get(job_id)
            attempt = int(attempt_text) if attempt_text.isdigit() else -1
            if (
                job is not None
                and job.state is JobState.RUNNING
                and job.worker == conn.name
                and job.attempt == attempt
            ):
                self.orphans.pop(job_id, None)
                # Queued there when the connection broke: it has started since.
                self.jobs.began(job, time.time())
                conn.slots.take(job)
                conn.running[job_id] = job
                grant = self.spool.grant_job(
                    job.cluster, job.proc, conn.local_host, self.config.job_grant_ttl
                )
                conn.grants[job_id] = grant
                # The grant of its run_job died with the connection (or the scheduler).
                conn.send(p.NewGrant(job_id=job_id, attempt=attempt, ftp=grant))
                log.info("worker %s still runs job %s: adopted", conn.name, job_id)
            else:
                conn.send(p.KillJob(job_id=job_id, attempt=attempt, reason="stale attempt"))
        # What it no longer runs (it was restarted) need not wait for the deadline.
        gone = [
            job
            for job_id in self.orphans
            if (job := self.jobs.get(job_id)) is not None and job.worker == conn.name
        ]
        for job in gone:
            del self.orphans[job.id]
            if job.state is not JobState.RUNNING:
                continue
            if f"{job.id}:{job.attempt}" in dropped:
                self.jobs.requeue(job, f"queued on worker {conn.name}, which dropped it unstarted",
                                  started=False)  # fmt: skip
            else:
                self.jobs.requeue(job, f"worker {conn.name} came back without it")

    def on_heartbeat(self, conn: Connection, msg: p.Heartbeat) -> None:
        self._registered(conn)
        conn.metrics, conn.last_heartbeat = msg.metrics, time.time()
        # A job's grant lasts while its worker is heard from, however long the job runs.
        users = [grant.user for grant in conn.grants.values()]
        self.spool.authorizer.extend(users, conn.last_heartbeat + self.config.job_grant_ttl)
        assert conn.slots is not None
        conn.slots.disk_free_mb = msg.metrics.disk_free_mb
        conn.slots.attributes = slot_attributes(conn.slots, msg.metrics)
        self._disk_state(conn.slots, msg.metrics.disk_full)

    def _disk_state(self, slots: Slots, full: bool) -> None:
        """A worker whose disk is full gets no job until it reports room again."""
        if full == slots.disk_full:
            return
        slots.disk_full = full
        if full:
            log.warning("worker %s: its disk is full; it gets no job until it has room",
                        slots.name)  # fmt: skip
        else:
            log.info("worker %s: its disk has room again", slots.name)
            self._wake.set()

    def _has_result(self, job: Job) -> bool:
        """Whether a job has a result: one of a sweep (queue variables, or a cluster of
        several jobs) or one naming a ``result_file``; an ordinary job has none."""
        spec = job.spec
        if spec.result_file or spec.params or self.jobs.unfinished.get(job.cluster, 0) > 1:
            return True
        return self.store.cluster_has_others(job.cluster, job.proc)

    def _hold_finished(
        self, job: Job, msg: p.JobFinished, failure: str, outcome: dict[str, object]
    ) -> None:
        """Hold a job whose run failed; when its program had ended, the log says how
        first, as HTCondor's log has the termination before the hold."""
        if msg.exit_code is not None or msg.exit_signal is not None:
            self.store.save_job(job, "terminated", _status(msg))
        self.jobs.hold(job, failure, **outcome)

    def on_job_finished(self, conn: Connection, msg: p.JobFinished) -> p.Message | None:
        self._registered(conn)
        job = self._current(conn, msg)
        if job is None:
            if msg.spooled:
                try:
                    cluster, proc = p.parse_job_id(msg.job_id)
                except ValueError as exc:
                    raise RequestError(str(exc)) from None
                if proc is not None:
                    self.spool.drop_attempt(cluster, proc, msg.attempt)
            return p.Ok()
        if msg.spooled and msg.disk_full:  # results cut short: never taken
            self.spool.drop_attempt(job.cluster, job.proc, msg.attempt)
            return self._finish(conn, msg, {})
        if msg.spooled:
            try:
                self.spool.take_attempt(job.cluster, job.proc, msg.attempt)
            except OSError as exc:
                why = f"its results could not be put in place in the spool: {exc}"
                msg = dataclasses.replace(msg, failure=msg.failure or why)
        job_dir = self.spool.job_dir(job.cluster, job.proc)
        if msg.disk_full or not job_dir.is_dir():
            return self._finish(conn, msg, {})
        # Large results: their hashes first, in a thread; the reply follows.
        task = asyncio.get_running_loop().create_task(self._hash_and_finish(conn, msg, job_dir))
        self.hashing.add(task)
        task.add_done_callback(self.hashing.discard)
        return None

    def _current(self, conn: Connection, msg: p.JobFinished) -> Job | None:
        """The job whose attempt ``msg`` reports, if it is still the running one."""
        job = conn.running.get(msg.job_id)
        if job is None or job.attempt != msg.attempt or job.state is not JobState.RUNNING:
            log.info(
                "worker %s: result of stale attempt %s:%d discarded",
                conn.name,
                msg.job_id,
                msg.attempt,
            )
            return None
        return job

    async def _hash_and_finish(self, conn: Connection, msg: p.JobFinished, job_dir: Path) -> None:
        try:
            hashes = await asyncio.to_thread(hash_results, job_dir)
            assert conn.slots is not None
            if self.workers.get(conn.slots.worker_id) is not conn:
                return  # gone meanwhile: it sends the result again when it is back
            reply = self._finish(conn, msg, hashes)
        except Exception:
            log.exception("internal error taking the result of %s", msg.job_id)
            reply = p.Error(message="internal error taking the result", code="internal")
        conn.send(reply.with_id(msg.id))

    def _finish(
        self, conn: Connection, msg: p.JobFinished, hashes: dict[str, tuple[str, int]]
    ) -> p.Message:
        """Record the end of an attempt whose large results (if any) have these hashes."""
        slots = self._registered(conn)
        job = self._current(conn, msg)
        if job is None:
            return p.Ok()
        failure = msg.failure
        try:
            files = {name: p.unpack_bytes(text) for name, text in msg.files.items()}
            if not all(safe_result_name(name) for name in files) or not all(
                safe_name(name) for name in msg.output_files
            ):
                raise p.ProtocolError("invalid result file name")
        except p.ProtocolError as exc:
            files, failure = {}, failure or f"the worker sent invalid results: {exc}"
            msg = dataclasses.replace(msg, output_files=[])
        outcome = dict(
            end_time=time.time(),
            wall_time=msg.wall_time,
            cpu_time=msg.cpu_time,
            exit_code=msg.exit_code,
            exit_signal=msg.exit_signal,
            output_files=msg.output_files,
        )
        again = self._run_again(job, msg, failure) if failure else ""
        with self.store.transaction():
            self.store.save_files(job.cluster, job.proc, files)
            self.store.save_hashes(job.cluster, job.proc, hashes)
            if again:
                self.jobs.requeue(job, again)
            elif failure:
                self._hold_finished(job, msg, failure, outcome)
            elif retry := self._retry(job, msg):
                self.jobs.transition(job, JobState.IDLE, "retrying", retry, worker=None, **outcome)
            else:
                result = None
                if self._has_result(job):
                    job_dir = self.spool.job_dir(job.cluster, job.proc)
                    result = extract_result(
                        job.spec, files, job_dir, msg.exit_code, msg.exit_signal
                    )
                    self.store.save_result(job.cluster, job.proc, result)
                # Held by the job, so the update pushed on completion carries the result.
                self.jobs.transition(
                    job, JobState.COMPLETED, "terminated", _status(msg), result=result, **outcome
                )
            if msg.exit_signal is None and not failure:
                self.run_times.record(job.cluster, msg.wall_time)
            del conn.running[msg.job_id]
            self.spool.revoke(conn.grants.pop(msg.job_id))
            # The slot's next job, in the same transaction: the reply and the next
            # RunJob leave together, after the commit.
            follower = release(self.jobs, slots, conn.running, job)
            if follower is None:
                self._schedule_once([slots])
            else:
                self._queue_behind(conn, follower)
        return p.Ok()

    def _run_again(self, job: Job, msg: p.JobFinished, failure: str) -> str:
        """Why an attempt that failed is not held but run again (elsewhere), or "":
        a full disk, the worker's (up to MAX_DISK_FULL times) or the scheduler's
        (its results could not be kept), is no fault of the job."""
        if msg.disk_full:
            events = self.store.events(job.cluster, job.proc)
            before = sum(e.event == "evicted" and e.detail.startswith("disk full") for e in events)
            return failure if before + 1 < MAX_DISK_FULL else ""
        if self.disk.check(force=True) or self.disk.full_since(job.start_time or job.submit_time):
            return f"{failure}; run again: the scheduler's disk was full"
        return ""

    def _retry(self, job: Job, msg: p.JobFinished) -> str:
        """Why a failed run is run again (``max_retries``), or "" when it is not."""
        if msg.exit_code == 0 or job.spec.max_retries <= 0:
            return ""
        done = sum(e.event == "retrying" for e in self.store.events(job.cluster, job.proc))
        if done >= job.spec.max_retries:
            return ""
        status = (
            f"exit code {msg.exit_code}" if msg.exit_signal is None else f"signal {msg.exit_signal}"
        )
        return f"{status}: retry {done + 1} of {job.spec.max_retries}"

    def _registered(self, conn: Connection) -> Slots:
        if conn.slots is None:
            raise RequestError("register first")
        return conn.slots
