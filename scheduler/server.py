"""The scheduler node: one asyncio loop owning every connection and the job table.

Each connection starts with the handshake of :mod:`scheduler.protocol`; then
its messages are routed by :data:`ROUTES`, which names the handler of each
message type. The roles allowed to send a type are declared on the message
class itself, so who may do what is visible in one place. A malformed or
forbidden message gets an ``error`` reply and never crashes the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scheduler import protocol as p
from scheduler.config import SchedulerConfig
from scheduler.dispatch import Slots
from scheduler.jobs import JobTable
from scheduler.protocol import JobState, Role
from scheduler.staging import Spool, StagingError
from scheduler.store import Job, Store
from scheduler.submission import SubmissionError, check_submission, safe_result_name

log = logging.getLogger(__name__)


FINAL = {state.value for state in p.FINAL_STATES}


class RequestError(Exception):
    """A request that is refused with a readable reason (sent back as ``error``)."""

    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class Connection:
    id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: str
    #: The scheduler's own address as this peer reached it: what FTP grants name.
    local_host: str
    role: Role | None = None
    name: str = ""
    #: For workers, once registered.
    slots: Slots | None = None
    metrics: p.WorkerMetrics | None = None
    running: dict[str, Job] = field(default_factory=dict)
    grants: dict[str, p.FtpGrant] = field(default_factory=dict)
    #: Hashes of small inputs already sent inline to this worker (it caches them).
    sent_inputs: set[str] = field(default_factory=set)
    connected_since: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.time)

    #: Frames waiting for the end of this turn of the event loop.
    outbox: list[bytes] = field(default_factory=list)
    #: Called with this connection when it has frames to send.
    on_output: Callable[[Connection], None] = lambda conn: None

    def send(self, message: p.Message) -> None:
        """Queue a frame; it leaves at the end of the loop's turn, after the commit."""
        if not self.outbox:
            self.on_output(self)
        self.outbox.append(p.encode(message))

    def flush(self) -> None:
        if self.outbox and not self.writer.is_closing():
            self.writer.write(b"".join(self.outbox))
        self.outbox.clear()


class Scheduler:
    """The scheduler node. ``await Scheduler(config).serve()`` runs it until stopped."""

    def __init__(self, config: SchedulerConfig):
        self.config = config
        config.home.mkdir(parents=True, exist_ok=True)
        self.secret = ensure_secret(config)
        self.store = Store(config.db_path)
        self.spool = Spool(config.spool_dir, host=_bind_host(config.host), port=config.ftp_port)
        self.jobs = JobTable(self.store, on_change=self._notify)
        self.workers: dict[int, Connection] = {}
        self.controls: dict[int, Connection] = {}
        #: Connections watching each cluster, with the states they want (empty: all).
        self.subscribers: dict[int, dict[Connection, frozenset[str]]] = {}
        #: Running jobs whose worker is away: requeued unless it returns by the deadline.
        self.orphans: dict[str, float] = {}
        self._ids = itertools.count(1)
        #: Connections with frames to send at the end of this turn of the loop.
        self._dirty: set[Connection] = set()
        self._turn_ending = False
        self.store.on_batch_open = self._end_turn_soon
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.port = config.port
        restart_deadline = time.time() + config.worker_timeout
        for job in self.jobs.running():
            self.orphans[job.id] = restart_deadline

    # ------------------------------------------------------------------ lifecycle

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        server = await asyncio.start_server(self._connection, self.config.host, self.config.port)
        self.port = server.sockets[0].getsockname()[1]
        self.spool.start()
        p.AccessRecord(host=self.config.client_host(), port=self.port).save(self.config.access_path)
        log.info(
            "scheduler listening on %s:%d (FTP %d), %d active jobs",
            self.config.host,
            self.port,
            self.spool.port,
            len(self.jobs.active),
        )
        tasks = [
            asyncio.create_task(self._scheduling_loop(), name="scheduling"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
        ]
        self._wake.set()
        if ready is not None:
            ready.set()
        try:
            async with server:
                await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            self._end_turn()
            for conn in [*self.workers.values(), *self.controls.values()]:
                conn.writer.close()
            self.spool.stop()
            self.store.close()
            log.info("scheduler stopped")

    def stop(self) -> None:
        self._stopping.set()

    # ------------------------------------------------------------------ connections

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        conn = Connection(
            next(self._ids),
            reader,
            writer,
            f"{peer[0]}:{peer[1]}",
            _host_for_grants(local[0]),
            on_output=self._output,
        )
        try:
            if await self._handshake(conn):
                await self._serve_peer(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except p.ProtocolError as exc:
            log.warning("closing %s (%s): %s", conn.peer, conn.name or "?", exc)
            with contextlib.suppress(ConnectionError):
                conn.send(p.Error(message=str(exc), code="protocol"))
        finally:
            self._disconnected(conn)
            self._end_turn()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read(self, conn: Connection, timeout: float | None = None) -> p.Message:
        return await asyncio.wait_for(
            p.read_message(conn.reader, self.config.max_frame), timeout=timeout
        )

    async def _handshake(self, conn: Connection) -> bool:
        timeout = self.config.handshake_timeout
        try:
            hello = await self._read(conn, timeout)
        except TimeoutError:
            log.warning("handshake from %s: nothing received in %.0f s", conn.peer, timeout)
            return False
        if not isinstance(hello, p.Hello):
            raise p.ProtocolError(f"expected hello, got {hello.type}")
        if hello.version != p.PROTOCOL_VERSION:
            conn.send(
                p.Error(
                    message=f"protocol version {hello.version} is not supported: this "
                    f"scheduler speaks version {p.PROTOCOL_VERSION}; upgrade dfarm",
                    code="version",
                )
            )
            return False
        key = self._key_for(hello)
        server_nonce = p.new_nonce()
        conn.send(p.Challenge(nonce=server_nonce))
        try:
            auth = await self._read(conn, timeout)
        except TimeoutError:
            return False
        expected = p.handshake_digest(key or secrets.token_bytes(32), "peer", hello, server_nonce)
        if (
            not isinstance(auth, p.Auth)
            or key is None
            or not secrets.compare_digest(auth.digest, expected)
        ):
            log.warning(
                "authentication failed for %s %r from %s", hello.role, hello.name, conn.peer
            )
            await asyncio.sleep(0.2)  # slows down guessing
            what = "worker secret" if hello.role == Role.WORKER.value else "user token"
            conn.send(p.Error(message=f"authentication failed: wrong {what}", code="auth"))
            return False
        conn.role, conn.name = Role(hello.role), hello.name
        conn.send(
            p.Welcome(
                digest=p.handshake_digest(key, "scheduler", hello, server_nonce),
                server_name=self.config.client_host(),
                server_time=time.time(),
            )
        )
        if conn.role is Role.CONTROL:
            self.controls[conn.id] = conn
        log.debug("%s %s authenticated from %s", conn.role.value, conn.name, conn.peer)
        return True

    def _key_for(self, hello: p.Hello) -> bytes | None:
        if hello.role == Role.WORKER.value:
            return self.secret
        if hello.role == Role.CONTROL.value:
            return self.store.user_key(hello.name)
        return None

    async def _serve_peer(self, conn: Connection) -> None:
        while True:
            message = await self._read(conn)
            assert conn.role is not None
            route = ROUTES.get(type(message))
            if route is None or conn.role not in message.roles:
                conn.send(
                    p.Error(
                        id=message.id,
                        message=f"a {conn.role.value} may not send {message.type!r}",
                        code="forbidden",
                    )
                )
                continue
            try:
                reply = route(self, conn, message)
            except RequestError as exc:
                reply = p.Error(message=str(exc), code=exc.code)
            except Exception:
                # A bug must cost one request, never the connection or the loop.
                log.exception("internal error handling %s from %s", message.type, conn.peer)
                reply = p.Error(
                    message=f"internal error handling {message.type!r}", code="internal"
                )
            if reply is not None:
                conn.send(reply.with_id(message.id))
            await conn.writer.drain()

    def _disconnected(self, conn: Connection) -> None:
        if conn.role is Role.CONTROL:
            self.controls.pop(conn.id, None)
            for subs in self.subscribers.values():
                subs.pop(conn, None)
        if conn.slots is not None and self.workers.get(conn.slots.worker_id) is conn:
            del self.workers[conn.slots.worker_id]
            deadline = time.time() + self.config.worker_timeout
            for job_id in conn.running:
                self.orphans[job_id] = deadline
            log.info("worker %s disconnected with %d running job(s)", conn.name, len(conn.running))

    # ------------------------------------------------------------------ turns of the loop

    def _output(self, conn: Connection) -> None:
        self._dirty.add(conn)
        self._end_turn_soon()

    def _end_turn_soon(self) -> None:
        if not self._turn_ending:
            self._turn_ending = True
            asyncio.get_running_loop().call_soon(self._end_turn)

    def _end_turn(self) -> None:
        """Commit what this turn wrote, then send what it queued: a peer never hears
        of a change that a crash could still take back."""
        self._turn_ending = False
        try:
            self.store.commit()
        except sqlite3.Error:
            log.critical("cannot commit to %s: stopping", self.config.db_path, exc_info=True)
            self._dirty.clear()
            self.stop()
            return
        for conn in self._dirty:
            conn.flush()
        self._dirty.clear()

    # ------------------------------------------------------------------ job updates

    def _notify(self, job: Job) -> None:
        subs = self.subscribers.get(job.cluster)
        if subs:
            update: p.JobUpdate | None = None
            for conn, states in subs.items():
                if states and job.state.value not in states:
                    continue
                update = update or p.JobUpdate(job=job.info())
                conn.send(update)

    # ------------------------------------------------------------------ loops

    async def _scheduling_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._schedule_once()
            # Let a burst of messages in before the next pass.
            await asyncio.sleep(0)

    def _schedule_once(self, candidates: list[Slots] | None = None) -> None:
        """Start idle jobs on free slots (of ``candidates``, default every worker)."""
        if candidates is None:
            candidates = [c.slots for c in self.workers.values() if c.slots]
        free = [slots for slots in candidates if slots.free]
        if not free or not len(self.jobs.queue):
            return
        for slots, job in self.jobs.assign(free):
            conn = self.workers[slots.worker_id]
            if job.attempt > 1:  # forget what an earlier attempt left
                self.store.clear_files(job.cluster, job.proc)
                self.spool.clear_job_dir(job.cluster, job.proc)
            grant = self.spool.grant_job(
                job.cluster, job.proc, conn.local_host, self.config.job_grant_ttl
            )
            conn.running[job.id] = job
            conn.grants[job.id] = grant
            files = {}
            for item in job.spec.inputs:
                if item.sha256 not in conn.sent_inputs:
                    data = self.spool.inline_input(job.cluster, item.sha256)
                    if data is not None:
                        files[item.sha256] = data
                        conn.sent_inputs.add(item.sha256)
            conn.send(
                p.RunJob(
                    job_id=job.id,
                    attempt=job.attempt,
                    owner=job.owner,
                    spec=job.spec,
                    ftp=grant,
                    files=files,
                )
            )

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.housekeeping(time.time())

    def housekeeping(self, now: float) -> None:
        """Declare silent workers lost, requeue orphans past their deadline, expire grants."""
        for conn in list(self.workers.values()):
            if now - conn.last_heartbeat > self.config.worker_timeout:
                log.warning(
                    "worker %s sent no heartbeat for %.0f s: declared lost",
                    conn.name,
                    now - conn.last_heartbeat,
                )
                conn.writer.close()
        expired = [job_id for job_id, deadline in self.orphans.items() if deadline <= now]
        if expired:
            with self.store.transaction():
                for job_id in expired:
                    del self.orphans[job_id]
                    job = self.jobs.get(job_id)
                    if job is not None and job.state is JobState.RUNNING:
                        self.jobs.requeue(job, f"worker {job.worker} was lost")
            self._wake.set()
        self.spool.authorizer.expire(now)

    # ------------------------------------------------------------------ worker messages

    def on_register(self, conn: Connection, msg: p.Register) -> p.Message:
        if conn.slots is not None:
            raise RequestError("this worker is already registered")
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
        conn.metrics, conn.last_heartbeat = msg.metrics, now
        self.workers[worker_id] = conn
        self._adopt(conn, msg.running)
        log.info(
            "worker %s (id %d) registered from %s: %d slots, %d cpus, %d MB",
            conn.name, worker_id, conn.peer, msg.slots, msg.cpus, msg.memory_mb,
        )  # fmt: skip
        self._wake.set()
        return p.Registered(worker_id=worker_id, heartbeat_interval=self.config.heartbeat_interval)

    def _adopt(self, conn: Connection, running: list[str]) -> None:
        """Take back the attempts a returning worker still runs; stop the stale ones."""
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
                conn.slots.take(job)
                conn.running[job_id] = job
                conn.grants[job_id] = self.spool.grant_job(
                    job.cluster, job.proc, conn.local_host, self.config.job_grant_ttl
                )
                log.info("worker %s still runs job %s: adopted", conn.name, job_id)
            else:
                conn.send(p.KillJob(job_id=job_id, attempt=attempt, reason="stale attempt"))

    def on_heartbeat(self, conn: Connection, msg: p.Heartbeat) -> None:
        self._registered(conn)
        conn.metrics, conn.last_heartbeat = msg.metrics, time.time()
        assert conn.slots is not None
        conn.slots.disk_free_mb = msg.metrics.disk_free_mb

    def on_job_finished(self, conn: Connection, msg: p.JobFinished) -> p.Message:
        slots = self._registered(conn)
        job = conn.running.get(msg.job_id)
        if job is None or job.attempt != msg.attempt or job.state is not JobState.RUNNING:
            log.info(
                "worker %s: result of stale attempt %s:%d discarded",
                conn.name,
                msg.job_id,
                msg.attempt,
            )
            return p.Ok()
        failure = msg.failure
        try:
            files = {name: p.unpack_bytes(text) for name, text in msg.files.items()}
            if not all(safe_result_name(name) for name in files):
                raise p.ProtocolError("invalid result file name")
        except p.ProtocolError as exc:
            files, failure = {}, failure or f"the worker sent invalid results: {exc}"
        outcome = dict(
            end_time=time.time(),
            wall_time=msg.wall_time,
            cpu_time=msg.cpu_time,
            exit_code=msg.exit_code,
            exit_signal=msg.exit_signal,
            output_files=msg.output_files,
        )
        with self.store.transaction():
            self.store.save_files(job.cluster, job.proc, files)
            if failure:
                self.jobs.hold(job, failure, **outcome)
            else:
                status = (
                    f"exit code {msg.exit_code}"
                    if msg.exit_signal is None
                    else f"signal {msg.exit_signal}"
                )
                self.jobs.transition(job, JobState.COMPLETED, "terminated", status, **outcome)
            del conn.running[msg.job_id]
            self.spool.revoke(conn.grants.pop(msg.job_id))
            slots.give_back(job)
            # The freed slot's next job, in the same transaction: the reply and the
            # next RunJob leave together, after the commit.
            self._schedule_once([slots])
        return p.Ok()

    def _registered(self, conn: Connection) -> Slots:
        if conn.slots is None:
            raise RequestError("register first")
        return conn.slots

    # ------------------------------------------------------------------ control messages

    def on_new_cluster(self, conn: Connection, msg: p.NewCluster) -> p.Message:
        cluster = self.store.reserve_cluster(conn.name, time.time())
        return p.ClusterCreated(
            cluster=cluster, upload=self.spool.grant_upload(cluster, conn.local_host)
        )

    def on_submit_jobs(self, conn: Connection, msg: p.SubmitJobs) -> p.Message:
        owner = self.store.cluster_owner(msg.cluster)
        if owner is None or owner[0] != conn.name:
            raise RequestError(f"cluster {msg.cluster} was not reserved by you", "not_found")
        if owner[1]:
            raise RequestError(f"cluster {msg.cluster} was already submitted", "conflict")
        try:
            self.spool.store_inputs(msg.cluster, msg.files)
            warnings = check_submission(msg.jobs, self.spool.input_dir(msg.cluster))
        except (SubmissionError, StagingError, p.ProtocolError) as exc:
            raise RequestError(str(exc), "invalid") from None
        jobs = self.jobs.submit(msg.cluster, conn.name, msg.submit_file, msg.jobs)
        log.info("user %s submitted cluster %d: %d job(s)", conn.name, msg.cluster, len(jobs))
        self._wake.set()
        return p.Submitted(cluster=msg.cluster, job_ids=[j.id for j in jobs], warnings=warnings)

    def on_query_jobs(self, conn: Connection, msg: p.QueryJobs) -> p.Message:
        clusters, pairs = _parse_ids(msg.ids)
        owner = None if msg.all_users else conn.name
        states = set(msg.states) or {s.value for s in JobState}
        # Jobs in the queue are in memory; only finished ones are read from SQLite.
        jobs = self.jobs.select(owner, clusters, pairs, states - FINAL)
        if states & FINAL:
            jobs += self.store.jobs(
                owner=owner, clusters=clusters, job_ids=pairs, states=sorted(states & FINAL)
            )
        jobs.sort(key=lambda job: (job.cluster, job.proc))
        return p.JobList(jobs=[self._visible(conn, job) for job in jobs])

    def _visible(self, conn: Connection, job: Job) -> p.JobInfo:
        """Other users' jobs show no arguments or outputs (as HTCondor's queue does)."""
        info = job.info()
        if job.owner != conn.name:
            info = p.JobInfo(**{**p.to_wire(info), "arguments": [], "output_files": []})
        return info

    def on_query_workers(self, conn: Connection, msg: p.QueryWorkers) -> p.Message:
        return p.WorkerList(workers=[_worker_info(w) for w in self.workers.values() if w.slots])

    def on_subscribe(self, conn: Connection, msg: p.Subscribe) -> p.Message:
        for cluster in msg.clusters:
            self.subscribers.setdefault(cluster, {})[conn] = frozenset(msg.states)
        return p.Ok()

    def on_fetch_results(self, conn: Connection, msg: p.FetchResults) -> p.Message:
        clusters, pairs = _parse_ids(msg.ids)
        if not clusters and not pairs:
            raise RequestError("name at least one job or cluster")
        jobs = self.store.jobs(owner=conn.name, clusters=clusters, job_ids=pairs)
        if not jobs:
            raise RequestError(f"no job of yours matches {' '.join(msg.ids)}", "not_found")
        files: dict[str, dict[str, str]] = {}
        budget, sent = p.INLINE_BUDGET, []
        for job in jobs:
            small = self.store.files(job.cluster, job.proc)
            size = sum(len(data) for data in small.values())
            if sent and size > budget:
                break  # the rest in another request, so a reply never outgrows a frame
            budget -= size
            files[job.id] = {name: p.pack_bytes(data) for name, data in small.items()}
            sent.append(job)
        large = [
            (j.cluster, j.proc) for j in sent if self.spool.job_dir(j.cluster, j.proc).exists()
        ]
        return p.JobResults(
            download=self.spool.grant_fetch(large, conn.local_host) if large else None,
            files=files,
            jobs=[j.info() for j in sent],
            specs={j.id: j.spec for j in sent},
            events={j.id: self.store.events(j.cluster, j.proc) for j in sent},
            remaining=[j.id for j in jobs[len(sent) :]],
        )


ROUTES: dict[type[p.Message], Any] = {
    p.Register: Scheduler.on_register,
    p.Heartbeat: Scheduler.on_heartbeat,
    p.JobFinished: Scheduler.on_job_finished,
    p.NewCluster: Scheduler.on_new_cluster,
    p.SubmitJobs: Scheduler.on_submit_jobs,
    p.QueryJobs: Scheduler.on_query_jobs,
    p.QueryWorkers: Scheduler.on_query_workers,
    p.Subscribe: Scheduler.on_subscribe,
    p.FetchResults: Scheduler.on_fetch_results,
}


def _parse_ids(ids: list[str]) -> tuple[list[int], list[tuple[int, int]]]:
    clusters: list[int] = []
    pairs: list[tuple[int, int]] = []
    for text in ids:
        try:
            cluster, proc = p.parse_job_id(text)
        except ValueError as exc:
            raise RequestError(str(exc), "invalid") from None
        if proc is None:
            clusters.append(cluster)
        else:
            pairs.append((cluster, proc))
    return clusters, pairs


def _worker_info(conn: Connection) -> p.WorkerInfo:
    assert conn.slots is not None and conn.metrics is not None
    s = conn.slots
    return p.WorkerInfo(
        id=s.worker_id,
        name=s.name,
        state="busy" if s.used_slots else "idle",
        address=conn.peer,
        slots_total=s.slots,
        slots_used=s.used_slots,
        cpus_total=s.cpus,
        cpus_used=s.used_cpus,
        memory_total_mb=s.memory_mb,
        memory_used_mb=s.used_memory_mb,
        gpus_total=s.gpus,
        gpus_used=s.used_gpus,
        metrics=conn.metrics,
        last_heartbeat=conn.last_heartbeat,
        connected_since=conn.connected_since,
    )


def _bind_host(host: str) -> str:
    return "" if host in ("0.0.0.0", "::") else host


def _host_for_grants(local_address: str) -> str:
    """The address FTP grants name: the one this peer already reached us on."""
    if local_address.startswith("::ffff:"):
        return local_address[7:]
    return local_address


def ensure_secret(config: SchedulerConfig) -> bytes:
    """The worker pool secret, created (mode 0600) on first start."""
    path = config.secret_path
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32) + "\n")
        log.info("created worker pool secret %s", path)
    return p.read_secret(path)
