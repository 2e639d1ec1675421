"""The worker daemon: connects out to the scheduler and runs the jobs it is given.

One loop: connect, handshake, register, then serve messages and send
heartbeats until the connection breaks; then reconnect with backoff. Jobs keep
running while the scheduler is away, and each result is kept until the
scheduler acknowledges it, so a result is never lost to a broken connection.

Behind a short running job the scheduler may queue more jobs (``run_job`` with
``after``, see :mod:`scheduler.queue_ahead`): each starts the moment the one it
waits for ends, in its place, in the same slot thread (a chain never goes back
to the event loop between two jobs), and their results leave a few at a time.
Queued jobs that have not started are dropped when the connection breaks; the
worker names them when it registers again, and the scheduler requeues them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import secrets
import shutil
import threading
from collections.abc import Callable

from scheduler import protocol as p
from scheduler.transport.tls import TlsError, check_pin, client_context
from worker_node import checkpoint
from worker_node.cgroups import JobCgroups
from worker_node.containers import Containers
from worker_node.disk import DiskWatch
from worker_node.gpu_choice import choose_gpus
from worker_node.identity import IdentityError, JobAccounts
from worker_node.job_python import job_python, reachable_by_others
from worker_node.launcher import Launchers
from worker_node.launcher import problem as launcher_problem
from worker_node.leftovers import kill_leftovers
from worker_node.metrics import Sampler
from worker_node.reaper import mechanism
from worker_node.runner import Attempt, run_attempt
from worker_node.sandbox import Sandbox
from worker_node.spool_link import SpoolLink
from worker_node.transfer import OwnerCaches
from worker_node.worker_config import WorkerConfig

log = logging.getLogger(__name__)

#: Refusals a worker does not retry: its credential is wrong (``auth``), it speaks
#: another protocol version, or the scheduler is not the one it pins. Any other
#: refusal (a flooded or busy scheduler) is retried with backoff, jobs running on.
FATAL_REFUSALS = frozenset({"auth", "version", "tls"})
#: Results of chains of queued jobs are sent once this many are waiting ...
RESULT_BATCH = 8
#: ... or this many seconds after the first of them; the result of a job that
#: ran this long, or with nothing queued behind it, is sent at once.
RESULT_DELAY = 0.005


class Worker:
    def __init__(self, config: WorkerConfig, sampler: Sampler):
        self.config = config
        self.sampler = sampler
        self.accounts = JobAccounts(config.run_as, slot_uids=config.slot_uids, slots=config.slots)
        self._sandboxes_made = 0
        config.work_dir.mkdir(parents=True, exist_ok=True)
        if self.accounts.privileged and not reachable_by_others(config.work_dir, read=False):
            raise IdentityError(
                f"--work-dir {config.work_dir}: jobs, run as other accounts, cannot reach it"
                " (a folder above it is private): choose one such as /var/lib/dfarm"
            )
        self.jobs_dir = config.work_dir / "jobs"
        kill_leftovers(self.jobs_dir)  # their jobs were (or will be) run elsewhere
        shutil.rmtree(self.jobs_dir, ignore_errors=True)  # leftovers of a previous run
        self.jobs_dir.mkdir()
        self.jobs_dir.chmod(0o711)  # jobs reach their own sandbox, list no one else's
        self.job_python = config.job_python or job_python(config.work_dir, self.accounts.privileged)
        self.launchers = self._launchers(sampler)
        self.caches = OwnerCaches(config.work_dir / "cache")
        cgroup = self.launchers.cgroups if self.launchers is not None else None
        sampler.process_tracking = mechanism(
            self.accounts.privileged and self.launchers is not None,
            bool(config.slot_uids),
            cgroup.kind if cgroup else None,
        )
        log.info("jobs' processes are ended by: %s", sampler.process_tracking)
        self.disk = DiskWatch(config.work_dir, config.min_free_space, config.name)
        self.disk.start()
        self.containers = Containers(
            config.container_runtimes, config.work_dir / "containers", config.image_cache_bytes
        )
        #: The scheduler's spool where this worker shares its file system (files
        #: move by hard link); None: over FTP. Found again at each registration.
        self.spool: SpoolLink | None = None
        self.attempts: dict[str, Attempt] = {}
        #: Attempts queued behind another (in :attr:`attempts` too), by its key.
        self.waiting: dict[str, Attempt] = {}
        #: Results the slot threads left for the loop to send: (attempt, result,
        #: whether a job queued behind it took its place).
        self._done: list[tuple[Attempt, p.JobFinished, bool]] = []
        #: Guards :attr:`waiting`, :attr:`_done` and ``Attempt.ended`` (slot threads
        #: use them too).
        self._chain_lock = threading.Lock()
        #: Queued attempts dropped unstarted with the last connection (told on registering).
        self.dropped: list[str] = []
        #: This process, told on each registering: the scheduler knows it by it, and
        #: that an attempt it does not list was never given to it.
        self.incarnation = secrets.token_hex(16)
        #: GPUs not reserved by a running job (the scheduler reserves the count).
        self.free_gpus: list[int] = list(config.gpu_ids or range(config.gpus))
        #: Sandboxes of idle slots, kept for the next job of the same cluster.
        self.sandboxes: list[Sandbox] = []
        #: One thread per slot: a job's thread waits for its process.
        self.executor = concurrent.futures.ThreadPoolExecutor(config.slots, "slot")
        #: Results not yet acknowledged, by request id.
        self.unacked: dict[int, p.JobFinished] = {}
        self._ids = itertools.count(1)
        self._writer: asyncio.StreamWriter | None = None
        self._stopping = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        #: Checkpoints the slot threads send for the scheduler to commit.
        self.requests = checkpoint.Requests(self._send, self._ids)

    def _launchers(self, sampler: Sampler) -> Launchers | None:
        """A root worker's launchers, which run as job accounts with an interpreter
        those accounts can run; None (said in the log and in ``dstat``) if they cannot.
        Another worker starts its jobs directly, those of maps from launchers of its
        own account where it keeps warm interpreters."""
        warm_map = (
            (self.config.warm_map_items, self.config.warm_map_idle)
            if self.config.warm_map
            else None
        )
        if not self.accounts.privileged:
            sampler.job_start = "direct"
            if warm_map is None or self.job_python is None:
                return None
            return Launchers(self.job_python, None, warm_map=warm_map)
        assert self.accounts.fallback is not None
        why = launcher_problem(self.job_python, self.accounts.fallback)
        if why is not None:
            sampler.job_start = f"slow: {why}"
            log.warning(
                "jobs start the slow way (each from a copy of the worker), not from launchers: %s",
                why,
            )
            return None
        sampler.job_start = "launchers"
        assert self.job_python is not None
        cgroups = JobCgroups.create(self.config.name)
        return Launchers(self.job_python, cgroups, warm_map=warm_map)

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve until :meth:`stop`; reconnect with backoff when the scheduler is away."""
        backoff = 0.5
        self.requests.loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                try:
                    await self._session()
                    backoff = 0.5
                except p.HandshakeError as exc:
                    if exc.code in FATAL_REFUSALS:
                        raise
                    # Refused for another reason than a wrong credential (a busy or
                    # flooded scheduler): running jobs go on; try again later.
                    log.warning("the scheduler refused the handshake: %s; retrying", exc)
                except (OSError, asyncio.IncompleteReadError, p.ProtocolError, TimeoutError) as exc:
                    if self._stopping.is_set():  # our own stop closed the connection
                        log.info("disconnected from the scheduler")
                        break
                    log.warning(
                        "scheduler %s:%d unreachable: %s", self.config.host, self.config.port, exc
                    )
                if self._stopping.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, self.config.max_backoff)
        finally:
            for attempt in self.attempts.values():
                attempt.kill("the worker is shutting down")
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.disk.stop()
            if self.launchers is not None:
                self.launchers.close()
            for sandbox in self.sandboxes:
                sandbox.discard()
            log.info("worker %s stopped", self.config.name)

    def stop(self) -> None:
        self._stopping.set()
        if self._writer is not None:
            self._writer.close()

    def drain(self, grace: float | None = None) -> None:
        """Take no new jobs, let running ones finish, give back those still running
        after ``grace`` seconds, then exit. Asked twice: exit now."""
        if self._drain_task is not None:
            log.info("asked again to stop: stopping now")
            self.stop()
            return
        grace = self.config.grace if grace is None else grace
        self._drain_task = asyncio.get_running_loop().create_task(self._drain(grace))

    async def _drain(self, grace: float) -> None:
        log.info("draining: %d job(s) running, grace period %.0f s", len(self.attempts), grace)
        self._send(p.Draining(id=next(self._ids)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self._vacate(loop)
        while self.attempts and loop.time() < deadline:
            await asyncio.sleep(0.1)
        if self.attempts:
            keys = list(self.attempts)
            log.info("grace period over: giving back %d job(s)", len(keys))
            self._send(p.Draining(id=next(self._ids), requeue=keys))
            for attempt in list(self.attempts.values()):
                self._kill(attempt, "the worker is shutting down")
        deadline = loop.time() + 10  # results (even discarded ones) acknowledged first
        while (self.attempts or self.unacked) and loop.time() < deadline:
            await asyncio.sleep(0.1)
        self.stop()

    def _vacate(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ask each running job that checkpoints itself to checkpoint now; one that
        has not within its vacate time is killed and given back."""
        for attempt in list(self.attempts.values()):
            if attempt.keeper is not None and not attempt.ended:
                seconds = checkpoint.vacate(attempt.keeper, attempt.signal)
                loop.call_later(seconds, self._vacate_overdue, attempt)

    def _vacate_overdue(self, attempt: Attempt) -> None:
        if self.attempts.get(attempt.key) is attempt and not attempt.ended:
            assert attempt.keeper is not None
            if not attempt.keeper.vacated:
                self._send(p.Draining(id=next(self._ids), requeue=[attempt.key]))
            self._kill(attempt, "it did not checkpoint within its job_max_vacate_time")

    # ------------------------------------------------------------------ one connection

    async def _session(self) -> None:
        pinned = self.config.tls_fingerprint
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.config.host, self.config.port, ssl=client_context() if pinned else None
            ),
            timeout=10,
        )
        try:
            if pinned:
                try:
                    check_pin(writer.get_extra_info("ssl_object"), pinned)
                except TlsError as exc:
                    raise p.HandshakeError(str(exc), "tls") from None
            await self._handshake(reader, writer)
            metrics = self._metrics()
            # Attempts still running, and finished ones whose result is not yet
            # acknowledged: the scheduler keeps both as this worker's.
            running = [a.key for a in self.attempts.values()]
            running += [f"{r.job_id}:{r.attempt}" for r in self.unacked.values()]
            await p.write_message(
                writer,
                p.Register(
                    id=0,
                    slots=self.config.slots,
                    cpus=self.config.cpus,
                    memory_mb=self.config.memory_mb,
                    gpus=self.config.gpus,
                    metrics=metrics,
                    running=running,
                    dropped=self.dropped,
                    incarnation=self.incarnation,
                ),
            )
            reply = await asyncio.wait_for(p.read_message(reader), timeout=30)
            if isinstance(reply, p.Error) and reply.code == "conflict":
                raise ConnectionError(reply.message)  # the old connection may linger: retry
            if isinstance(reply, p.Error):
                raise p.HandshakeError(f"registration refused: {reply.message}", reply.code)
            if not isinstance(reply, p.Registered):
                raise p.ProtocolError(f"expected registered, got {reply.type}")
            log.info(
                "registered as worker %d with %s:%d",
                reply.worker_id,
                self.config.host,
                self.config.port,
            )
            self._find_spool(reply.spool)
            self._writer = writer
            self.dropped = []
            for request_id, result in self.unacked.items():
                self._send(result.with_id(request_id))
            if self._drain_task is not None:
                self._send(p.Draining(id=next(self._ids)))
            heartbeat = asyncio.create_task(self._heartbeats(reply.heartbeat_interval))
            try:
                while True:
                    self._handle(await p.read_message(reader))
            finally:
                heartbeat.cancel()
                self._writer = None
                self.requests.connection_lost()
                self._drop_queued()
                for attempt in self.attempts.values():
                    attempt.connection_lost()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = p.password_key(self.config.secret)
        hello = p.Hello(
            role=p.Role.WORKER.value,
            version=p.PROTOCOL_VERSION,
            name=self.config.name,
            nonce=p.new_nonce(),
        )
        await p.write_message(writer, hello)
        challenge = await asyncio.wait_for(p.read_message(reader), timeout=30)
        await p.write_message(writer, p.answer_challenge(key, hello, challenge))
        welcome = await asyncio.wait_for(p.read_message(reader), timeout=30)
        assert isinstance(challenge, p.Challenge)
        p.verify_welcome(key, hello, challenge, welcome)

    def _find_spool(self, offer: p.SpoolShare | None) -> None:
        """Link files with the scheduler's spool where this worker shares its file
        system (unless ``always_ftp``)."""
        self.spool = None if self.config.always_ftp else SpoolLink.find(offer, self.config.work_dir)
        if self.spool is not None:
            log.info(
                "the spool %s is on this file system: files move by hard link", self.spool.root
            )
        else:
            log.info("files move over FTP")

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            metrics = await asyncio.to_thread(self._metrics)
            self._send(p.Heartbeat(metrics=metrics))

    def _metrics(self) -> p.WorkerMetrics:
        """The machine's metrics, whether the disk is full and each running job's
        peak memory (looked at now)."""
        metrics = self.sampler.sample()
        peaks = {}
        for attempt in list(self.attempts.values()):
            peak = attempt.measure_memory()
            if peak is not None:
                peaks[attempt.key] = peak
        return dataclasses.replace(
            metrics, disk_full=self.disk.problem() is not None, job_memory_mb=peaks
        )

    def _send(self, message: p.Message) -> bool:
        """Send on the current connection; False when there is none."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(p.encode(message))
            return True
        return False

    # ------------------------------------------------------------------ messages

    def _handle(self, message: p.Message) -> None:
        if self.requests.answer(message):
            return
        if isinstance(message, p.RunJob):
            self._start(message)
        elif isinstance(message, p.KillJob):
            attempt = self.attempts.get(f"{message.job_id}:{message.attempt}")
            if attempt is not None:
                log.info("job %s: killed (%s)", message.job_id, message.reason)
                self._kill(attempt, message.reason)
        elif isinstance(message, p.NewGrant):
            attempt = self.attempts.get(f"{message.job_id}:{message.attempt}")
            if attempt is not None:
                attempt.new_grant(message.ftp)
        elif isinstance(message, p.ReadOutput):
            self._read_output(message)
        elif isinstance(message, p.Drain):
            log.info("the scheduler asks this worker to drain")
            self.drain(message.grace)
        elif isinstance(message, p.Ok) and message.id is not None:
            self.unacked.pop(message.id, None)
        elif isinstance(message, p.Error):
            log.warning("scheduler error: %s", message.message)
        else:
            log.warning("unexpected %s message ignored", message.type)

    def _read_output(self, msg: p.ReadOutput) -> None:
        attempt = self.attempts.get(f"{msg.job_id}:{msg.attempt}")
        read = None if attempt is None else attempt.read_output(msg.stream, msg.offset, msg.limit)
        if read is None:
            chunk = p.OutputChunk(job_id=msg.job_id, offset=msg.offset, running=False)
        else:
            data, size = read
            chunk = p.OutputChunk(
                job_id=msg.job_id, offset=msg.offset, data=p.pack_bytes(data), size=size
            )
        self._send(chunk.with_id(msg.id))

    def _start(self, msg: p.RunJob) -> None:
        attempt = Attempt(msg=msg)
        if attempt.key in self.attempts:
            log.warning("job %s attempt %d already runs here", msg.job_id, msg.attempt)
            return
        # Keyed by attempt: a stale attempt being killed never blocks the current one.
        self.attempts[attempt.key] = attempt
        with self._chain_lock:
            leader = self.attempts.get(msg.after)
            if leader is not None and not leader.ended and msg.after not in self.waiting:
                self.waiting[msg.after] = attempt  # starts when that one ends
                return
        if self.config.gpus:
            attempt.gpus = choose_gpus(self.free_gpus, msg.spec, self.sampler.gpus)
            self.free_gpus = [i for i in self.free_gpus if i not in attempt.gpus]
        asyncio.create_task(self._run(attempt))

    def _kill(self, attempt: Attempt, reason: str) -> None:
        """Kill a running attempt; one still queued is dropped (it never ran)."""
        with self._chain_lock:
            leader = next((k for k, queued in self.waiting.items() if queued is attempt), None)
            if leader is not None:
                follower = self.waiting.pop(attempt.key, None)
                if follower is None:
                    del self.waiting[leader]
                else:
                    self.waiting[leader] = follower
        if leader is None:
            attempt.kill(reason)  # one taken from the queue just now has not started yet
        else:
            del self.attempts[attempt.key]

    def _drop_queued(self) -> None:
        """Forget the attempts that wait for another: the scheduler requeues them."""
        with self._chain_lock:
            dropped, self.waiting = list(self.waiting.values()), {}
        for attempt in dropped:
            del self.attempts[attempt.key]
            self.dropped.append(attempt.key)
        if dropped:
            log.info("%d queued job(s) dropped: the scheduler gives them out again", len(dropped))

    def _sandbox(self, cluster: int, owner: str) -> Sandbox:
        """An idle slot's sandbox, preferably one last used by ``cluster``, else by
        another cluster of ``owner``."""
        for wanted in (lambda s: s.cluster == cluster, lambda s: s.owner == owner):
            for i, sandbox in enumerate(self.sandboxes):
                if wanted(sandbox):
                    return self.sandboxes.pop(i)
        if self.sandboxes:
            return self.sandboxes.pop()
        self._sandboxes_made += 1
        return Sandbox(self.jobs_dir, self._sandboxes_made - 1)

    async def _run(self, attempt: Attempt) -> None:
        """Run ``attempt``, then the chain of attempts queued behind it, in a slot thread."""
        sandbox = self._sandbox(p.parse_job_id(attempt.msg.job_id)[0], attempt.msg.owner)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.sandboxes.append(sandbox)

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self.executor, self._run_chain, attempt, sandbox, loop, release
            )
        finally:
            release()

    def _run_chain(
        self,
        attempt: Attempt | None,
        sandbox: Sandbox,
        loop: asyncio.AbstractEventLoop,
        release: Callable[[], None],
    ) -> None:
        """In a slot thread: run attempts one after the other while one is queued
        behind the last, each on its leader's GPUs; their results go to the loop a
        few at a time (see RESULT_BATCH). The slot's sandbox is given back (on the
        loop, by ``release``) before the last result is sent: the next job the
        scheduler sends for this slot takes it, and with it the slot's launcher and
        warm interpreter, never another one's."""
        while attempt is not None:
            msg = attempt.msg
            log.debug(
                "job %s attempt %d: starting %s", msg.job_id, msg.attempt, msg.spec.executable
            )
            result = self._run_one(attempt, sandbox)
            with self._chain_lock:
                attempt.ended = True
                follower = self.waiting.pop(attempt.key, None)
                first = not self._done
                self._done.append((attempt, result, follower is not None))
                full = len(self._done) >= RESULT_BATCH
            if follower is None:
                loop.call_soon_threadsafe(release)
            if follower is None or full or result.wall_time >= RESULT_DELAY:
                loop.call_soon_threadsafe(self._send_done)
            elif first:  # the loop sends it, with those that follow, a little later
                loop.call_soon_threadsafe(loop.call_later, RESULT_DELAY, self._send_done)
            if follower is not None:
                follower.gpus = attempt.gpus
            attempt = follower

    def _run_one(self, attempt: Attempt, sandbox: Sandbox) -> p.JobFinished:
        """In a slot thread: one attempt, unless the disk is full; an attempt that ends
        on a full disk (see :func:`run_attempt`), or whose files could not be written,
        is the worker's failure."""
        msg = attempt.msg
        problem = self.disk.problem()
        if problem is not None:
            return p.JobFinished(
                job_id=msg.job_id, attempt=msg.attempt, failure=problem, disk_full=True
            )
        error: Exception | None = None
        try:
            account = self.accounts.for_owner(msg.owner, sandbox.index)
            cache = self.caches.for_owner(msg.owner)
            result = run_attempt(
                attempt, cache, sandbox, account, self.job_python, self.launchers,
                self.spool, self.disk, self.requests.ask, self.containers,
            )  # fmt: skip
        except Exception as exc:  # a bug must cost this job, not the slot's chain
            error = exc
            failure = f"internal error on worker {self.config.name}: {exc}"
            result = p.JobFinished(job_id=msg.job_id, attempt=msg.attempt, failure=failure)
        judged = self.disk.judge(result, error)
        if error is not None and not judged.disk_full:
            log.error("job %s attempt %d: internal error", msg.job_id, msg.attempt,
                      exc_info=error)  # fmt: skip
        return judged

    def _send_done(self) -> None:
        """On the loop: send the results the slot threads left, in one write."""
        with self._chain_lock:
            done, self._done = self._done, []
        if not done:
            return
        frames = []
        if any(result.disk_full for _, result, _ in done):
            # The scheduler learns first that this worker is full, then of the
            # attempt: the job is not given back to it.
            frames.append(p.encode(p.Heartbeat(metrics=self._metrics())))
        for attempt, result, chained in done:
            self.attempts.pop(attempt.key, None)
            if not chained:  # else the job queued behind it runs on its GPUs
                self.free_gpus += attempt.gpus or []
            msg = attempt.msg
            keeper = attempt.keeper
            if keeper is not None and keeper.vacating and not keeper.vacated:
                # Asked to checkpoint, it ended without one: evicted all the same.
                frames.append(p.encode(p.Draining(id=next(self._ids), requeue=[attempt.key])))
            # Every job's end is in the scheduler's database; only failures are worth a line.
            clean = result.exit_code == 0 and not result.failure
            log.log(
                logging.DEBUG if clean else logging.INFO,
                "job %s attempt %d: exit %s signal %s%s",
                msg.job_id,
                msg.attempt,
                result.exit_code,
                result.exit_signal,
                f" ({result.failure})" if result.failure else "",
            )
            request_id = next(self._ids)
            self.unacked[request_id] = result
            frames.append(p.encode(result.with_id(request_id)))
        # Without a connection they wait in unacked, sent again on registering.
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"".join(frames))
