"""The scheduler node: one asyncio loop owning every connection and the job table.

Each connection starts with the handshake of :mod:`scheduler.protocol`; then
its messages are routed by :data:`ROUTES`, which names the handler of each
message type (worker messages in :mod:`scheduler.worker_handlers`, user
requests in :mod:`scheduler.control_handlers`). The roles allowed to send a
type are declared on the message class itself, so who may do what is visible
in one place. A malformed or forbidden message gets an ``error`` reply and
never crashes the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import sqlite3
import time
from typing import Any

from scheduler import protocol as p
from scheduler.authz import may_control
from scheduler.config import SchedulerConfig
from scheduler.connection import Connection, RequestError, plain_host
from scheduler.control_handlers import ControlHandlers
from scheduler.disk_space import DiskSpace, full_message, is_disk_full
from scheduler.dispatch import Slots
from scheduler.explain import ExplainHandlers
from scheduler.handshake import HandshakeHandlers, pool_verifier
from scheduler.handshake_guard import HandshakeGuard
from scheduler.identities import IdentityHandlers
from scheduler.job_control import JobControlHandlers
from scheduler.jobs import JobTable
from scheduler.mail import Mailer
from scheduler.matching.macros import match_spec
from scheduler.node_setup.private_dir import make_private_dir
from scheduler.private import check_file, check_home
from scheduler.probe import ProbeHandlers
from scheduler.protocol import JobState, Role
from scheduler.queue_ahead import RunTimes, queue_behind
from scheduler.quota import Quota
from scheduler.reservations import Reservations
from scheduler.retention import Retention
from scheduler.staging import Spool
from scheduler.store import Job, Store
from scheduler.tls_setup import load_or_create
from scheduler.web.app import WebServer, start_web
from scheduler.worker_control import WorkerControlHandlers
from scheduler.worker_handlers import WorkerHandlers

log = logging.getLogger(__name__)


class Scheduler(
    WorkerHandlers,
    WorkerControlHandlers,
    ControlHandlers,
    JobControlHandlers,
    ExplainHandlers,
    ProbeHandlers,
    HandshakeHandlers,
    IdentityHandlers,
):
    """The scheduler node. ``await Scheduler(config).serve()`` runs it until stopped."""

    def __init__(self, config: SchedulerConfig):
        self.config = config
        make_private_dir(config.home)
        check_home(config.home)  # raises PrivacyError for what it cannot fix
        if config.tls and config.tls_key:
            check_file(config.tls_key)
        self.disk = DiskSpace(config.home, config.min_free_space)
        self.secret = ensure_secret(config)
        self.pool_verifier = pool_verifier(self.secret)
        self.store = Store(config.db_path)
        self.tls = (
            load_or_create(config.home, config.tls_cert, config.tls_key) if config.tls else None
        )
        self.spool = Spool(
            config.spool_dir,
            host=_bind_host(config.host),
            port=config.ftp_port,
            passive_ports=config.ftp_passive_ports,
            masquerade_address=config.masquerade_address,
            tls=self.tls,
        )
        self.mailer = Mailer(config.mail, self.store, self.spool.job_dir)
        self.jobs = JobTable(self.store, on_change=self._notify, halflife=config.usage_halflife)
        self.mailer.resume(self.jobs.active.values())
        self.workers: dict[int, Connection] = {}
        self.controls: dict[int, Connection] = {}
        #: Connections watching each cluster, with the states they want (empty: all).
        self.subscribers: dict[int, dict[Connection, frozenset[str]]] = {}
        #: Connections to tell once each cluster has no idle or running job left.
        self.awaiting: dict[int, set[Connection]] = {}
        #: Running jobs whose worker is away: requeued unless it returns by the deadline.
        self.orphans: dict[str, float] = {}
        #: Clusters submitted in parts: the proc number their next part starts at, and
        #: the connection (or dashboard user) sending them.
        self.partial_clusters: dict[int, tuple[int, object]] = {}
        #: Output requests (``dtail``) waiting for a worker: the asking connection,
        #: its request id and the worker asked, by the id of the request to the worker.
        self.tails: dict[int, tuple[Connection, int | None, Connection]] = {}
        #: Hashing of large results under way, in threads (see scheduler/result_hashes.py).
        self.hashing: set[asyncio.Task[None]] = set()
        #: The FTP probes (``dfarm doctor``) each connection holds, by directory name.
        self.probes: dict[Connection, list[str]] = {}
        self.retention = Retention(self.store, self.spool, config.result_retention)
        #: Mean run time of each cluster's jobs, for queueing short jobs on workers.
        self.run_times = RunTimes()
        self.quota = Quota(self.store, self.spool, config.upload_limit, config.spool_quota)
        self.reservations = Reservations(config.reservation_ttl, clock=time.time)
        self._ids = itertools.count(1)
        self.guard = HandshakeGuard(config.auth_failure_limit, config.auth_failure_window)
        #: Connections with frames to send at the end of this turn of the loop.
        self._dirty: set[Connection] = set()
        #: Workers whose frames wait for a commit the full disk refused ...
        self._held: set[Connection] = set()
        #: ... and whether such a commit is still to be made.
        self._commit_failed = False
        self._turn_ending = False
        #: Every live connection, by the task serving it.
        self._peers: dict[asyncio.Task[None], Connection] = {}
        self.store.on_batch_open = self._end_turn_soon
        self._wake = asyncio.Event()
        self.disk.on_room = self._wake.set  # idle jobs start again
        self._stopping = asyncio.Event()
        self.port = config.port
        restart_deadline = time.time() + config.worker_timeout
        for job in self.jobs.running():
            self.orphans[job.id] = restart_deadline

    # ------------------------------------------------------------------ lifecycle

    def _link_mails(self, web: WebServer | None) -> None:
        """Mails link to the dashboard at ``--web-url``, else at the address it listens
        on; not at an ephemeral port (``--web-port 0``), dead after a restart."""
        if self.config.web_url:
            self.mailer.link_jobs(self.config.web_url.rstrip("/") + "/jobs/{job}")
        elif web is not None and self.config.web_port:
            self.mailer.link_jobs(web.url + "jobs/{job}")
        mail = self.mailer.config
        if mail is None:
            log.info("mail: not configured (no --smtp-host): no job sends mail")
            return
        log.info(
            "mail: through %s:%d (%s) from %s",
            mail.host, mail.smtp_port, mail.security, mail.sender,
        )  # fmt: skip
        if self.mailer.config is not None and self.mailer.config.job_url:
            log.info("mail: links to %s", self.mailer.config.job_url)
        elif web is not None:
            log.info("mail: no link to the dashboard, its port is ephemeral (set --web-url)")

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        tls = (
            {
                "ssl": self.tls.server_context(),
                "ssl_handshake_timeout": self.config.handshake_timeout,
            }
            if self.tls
            else {}
        )
        if self.config.host == "::" and socket.has_dualstack_ipv6():
            # One socket for both families (IPv4 peers as ::ffff:a.b.c.d), as for FTP.
            sock = socket.create_server(
                ("::", self.config.port), family=socket.AF_INET6, dualstack_ipv6=True
            )
            server = await asyncio.start_server(self._connection, sock=sock, **tls)
        else:
            server = await asyncio.start_server(
                self._connection, self.config.host, self.config.port, **tls
            )
        self.port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self.spool.arrivals.on_failed = lambda cluster, why: loop.call_soon_threadsafe(
            self.upload_failed, cluster, why
        )
        self.spool.on_disk_full = lambda exc: loop.call_soon_threadsafe(self.disk.write_failed, exc)
        self.disk.check(force=True)  # says so in the log if the disk is full already
        for cluster in self.store.incomplete_clusters():
            self.abandon_cluster(cluster, "the submission was interrupted by a restart")
        self.check_identities()  # users removed while the scheduler was down
        for cluster in self.store.reservations():
            self.remove_reservation(cluster, "was cut by a restart")
        self.end_turn()
        web = await start_web(self) if self.config.web_port is not None else None
        self._link_mails(web)
        self.spool.start()
        self._save_access()
        if self.tls:
            log.info("TLS on; certificate %s, SHA-256 %s", self.tls.cert, self.tls.fingerprint)
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
            asyncio.create_task(self.mailer.run(), name="mail"),
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
            await asyncio.gather(*tasks, return_exceptions=True)
            if web is not None:
                await web.stop()
            # Every connection winds down (and commits) before the database closes.
            # Closing makes each reader see the end of its stream; cancelling the
            # task instead makes Python 3.11's start_server log a spurious error.
            peers = list(self._peers.items())
            for _, conn in peers:
                conn.writer.close()
            if peers:
                await asyncio.wait([task for task, _ in peers], timeout=5)
            self.end_turn()
            self.spool.stop()
            self.store.close()
            log.info("scheduler stopped")

    def stop(self) -> None:
        self._stopping.set()

    def _save_access(self) -> None:
        """Write ``access.json``; on a full disk, the one written before stays."""
        record = p.AccessRecord(
            host=self.config.client_host(),
            port=self.port,
            tls_fingerprint=self.tls.fingerprint if self.tls else None,
        )
        try:
            record.save(self.config.access_path)
            os.chmod(self.config.access_path, 0o600)  # the scheduler's, as its whole home
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.config.access_path.with_suffix(".tmp").unlink(missing_ok=True)
            log.error("cannot write %s (%s): clients use the one written before",
                      self.config.access_path, exc)  # fmt: skip

    # ------------------------------------------------------------------ connections

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        conn = Connection(
            next(self._ids),
            reader,
            writer,
            f"{plain_host(peer[0])}:{peer[1]}",
            self.config.masquerade_address or plain_host(local[0]),
            on_output=self._output,
        )
        task = asyncio.current_task()
        assert task is not None
        self._peers[task] = conn
        address = conn.address
        try:
            # A blocked address still gets its handshake: a right proof is let in.
            if await self._handshake(conn):
                await self._serve_peer(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            if conn.role is None:
                self.guard.failed(address)
        except p.ProtocolError as exc:
            blocked = conn.role is None and self.guard.blocked_for(address)
            if conn.role is None:
                self.guard.failed(address)
            if not blocked:  # a blocked address's garbage is not logged line by line
                log.warning("closing %s (%s): %s", conn.peer, conn.name or "?", exc)
            with contextlib.suppress(ConnectionError):
                conn.send(p.Error(message=str(exc), code="protocol"))
        except Exception:
            # A bug met in the handshake: it costs this connection (a failed handshake)
            # and is logged once, never left to asyncio as an unhandled exception.
            if conn.role is None:
                self.guard.failed(address)
            log.exception("internal error serving %s (%s)", conn.peer, conn.name or "?")
            conn.send(p.Error(message="internal error", code="internal"))
        finally:
            self._peers.pop(task, None)
            self._disconnected(conn)
            self.end_turn()
            writer.close()
            # Cancelled at shutdown while a TLS close is under way: the task ends here.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _read(self, conn: Connection, timeout: float | None = None) -> p.Message:
        return await asyncio.wait_for(
            p.read_message(conn.reader, self.config.max_frame), timeout=timeout
        )

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
                if asyncio.iscoroutine(reply):
                    # File I/O of a user's size, in a thread: this connection waits
                    # for it, the loop serves the others.
                    reply = await reply
            except RequestError as exc:
                reply = p.Error(message=str(exc), code=exc.code)
            except Exception as exc:
                if is_disk_full(exc):  # the unit was undone: nothing of it is kept
                    reply = self.disk_full_error(exc)
                else:
                    # A bug must cost one request, never the connection or the loop.
                    log.exception("internal error handling %s from %s", message.type, conn.peer)
                    reply = p.Error(
                        message=f"internal error handling {message.type!r}", code="internal"
                    )
            if reply is not None:
                conn.send(reply.with_id(message.id))
            await conn.writer.drain()

    def _disconnected(self, conn: Connection) -> None:
        self.end_probes(conn)
        if conn.role is Role.CONTROL:
            self.controls.pop(conn.id, None)
            for subs in self.subscribers.values():
                subs.pop(conn, None)
            for waiting in self.awaiting.values():
                waiting.discard(conn)
            for cluster, (_, submitter) in list(self.partial_clusters.items()):
                if submitter is conn:
                    self.abandon_cluster(cluster, "the submission was interrupted")
        if conn.slots is not None and self.workers.get(conn.slots.worker_id) is conn:
            del self.workers[conn.slots.worker_id]
            self._drop_tails(conn)
            # A revoked worker cannot come back: its jobs are requeued at once.
            deadline = time.time() + (0 if conn.revoked else self.config.worker_timeout)
            for job_id in conn.running:
                self.orphans[job_id] = deadline
            # A worker that comes back gets new grants for the jobs it still runs.
            for grant in conn.grants.values():
                self.spool.revoke(grant)
            conn.grants.clear()
            log.info("worker %s disconnected with %d running job(s)", conn.name, len(conn.running))

    # ------------------------------------------------------------------ turns of the loop

    def _output(self, conn: Connection) -> None:
        self._dirty.add(conn)
        self._end_turn_soon()

    def _end_turn_soon(self) -> None:
        if not self._turn_ending:
            self._turn_ending = True
            asyncio.get_running_loop().call_soon(self.end_turn)

    def end_turn(self) -> None:
        """Commit what this turn wrote, then send what it queued: a peer never hears
        of a change that a crash could still take back. While the disk is too full to
        commit, the writes wait in memory (see :meth:`Store.commit`) and so do the
        frames to workers, whose acknowledged results would otherwise be forgotten:
        users still get their answers."""
        self._turn_ending = False
        try:
            self.store.commit()
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                log.critical("cannot commit to %s: stopping", self.config.db_path, exc_info=True)
                self._dirty.clear()
                self.stop()
                return
            if not self._commit_failed:
                log.error("cannot commit to %s: %s; kept in memory until there is room",
                          self.config.db_path, exc)  # fmt: skip
            self._commit_failed = True
            self.disk.write_failed(exc)
            held = {conn for conn in self._dirty if conn.role is Role.WORKER}
            self._held |= held
            self._dirty -= held
        else:
            if self._commit_failed:
                log.warning("the writes held for lack of disk space are committed")
                self._commit_failed = False
                self._dirty |= self._held
                self._held.clear()
        now = time.monotonic()
        for conn in self._dirty:
            delay = conn.flush_delay(now)
            if delay <= 0:
                conn.flush(now)
            elif not conn.deferred:
                conn.deferred = True
                asyncio.get_running_loop().call_later(delay, self._flush_deferred, conn)
        self._dirty.clear()

    def disk_full_error(self, exc: BaseException) -> p.Error:
        """The reply to a request undone because a write of it found no room."""
        self.disk.write_failed(exc)
        message = self.disk.problem or full_message(self.config.home, self.disk.free)
        return p.Error(message=message, code="disk_full")

    def refuse_if_disk_full(self) -> None:
        """Refuse new work (a submission) while the scheduler's disk is full."""
        problem = self.disk.refusal()
        if problem is not None:
            raise RequestError(problem, "disk_full")

    def _flush_deferred(self, conn: Connection) -> None:
        # Through the end of a turn, so that nothing leaves before its commit.
        conn.deferred = False
        if conn.outbox:
            conn.urgent = True
            self._output(conn)

    # ------------------------------------------------------------------ job updates

    def _notify(self, job: Job) -> None:
        self.mailer.changed(job)
        subs = self.subscribers.get(job.cluster)
        if subs:
            update: p.JobUpdate | None = None
            for conn, states in subs.items():
                if not may_control(conn, job) or (states and job.state.value not in states):
                    continue  # updates go to the job's owner (and admins) only
                update = update or p.JobUpdate(job=job.info())
                conn.send(update, urgent=False)
        if job.cluster in self.awaiting and job.state not in p.UNFINISHED_STATES:
            self.cluster_may_be_done(job.cluster)

    def cluster_may_be_done(self, cluster: int) -> None:
        """Tell those awaiting ``cluster`` that it is done, if it is: fully submitted,
        with no job idle or running."""
        if cluster in self.jobs.unfinished or cluster in self.partial_clusters:
            return
        for conn in self.awaiting.pop(cluster, ()):
            conn.send(p.ClusterDone(cluster=cluster))

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
            candidates = self._slots()
        free = [slots for slots in candidates if slots.free]
        if not free or not len(self.jobs.queue) or self.disk.full:
            return  # with the disk full, jobs wait: their results could not be kept
        assigned = self.jobs.assign(free)
        for slots, job in assigned:
            self._send_run(self.workers[slots.worker_id], job)
        with self.store.transaction():
            for slots, job in assigned:
                self._queue_behind(self.workers[slots.worker_id], job)

    def _queue_behind(self, conn: Connection, head: Job) -> None:
        """Queue jobs on ``head``'s worker behind it, if they would start soon."""
        assert conn.slots is not None
        chain = queue_behind(
            self.jobs, conn.slots, conn.running, head, self.run_times, self.config.queue_wait
        )
        for leader, job in chain:
            self._send_run(conn, job, after=leader)

    def _send_run(self, conn: Connection, job: Job, after: Job | None = None) -> None:
        """Send a job just marked running to its worker (to start after ``after``)."""
        assert conn.slots is not None
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
                data = self.spool.inline_input(job.cluster, item)
                if data is not None:
                    files[item.sha256] = data
                    conn.sent_inputs.add(item.sha256)
        conn.send(
            p.RunJob(
                job_id=job.id,
                attempt=job.attempt,
                owner=job.owner,
                spec=match_spec(job.spec, conn.slots, conn.metrics),
                ftp=grant,
                files=files,
                after="" if after is None else f"{after.id}:{after.attempt}",
            )
        )

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.check_identities()
            self.housekeeping(time.time())

    def housekeeping(self, now: float) -> None:
        """Declare silent workers lost, requeue orphans past their deadline, expire grants,
        look at the disk (and commit what waits for room)."""
        self.disk.check()
        if self._commit_failed:
            self.end_turn()
        if self.store.exclusive and not self.disk.full:
            self.store.share()
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
        self.spool.end_expired_probes()
        self.expire_reservations(now)
        self.retention.expire(now, self.jobs.active)


#: The handler of each message type: it returns the reply (or a coroutine that does,
#: awaited before the connection's next request), or None when there is none yet.
ROUTES: dict[type[p.Message], Any] = {
    p.Register: Scheduler.on_register,
    p.Heartbeat: Scheduler.on_heartbeat,
    p.JobFinished: Scheduler.on_job_finished,
    p.NewCluster: Scheduler.on_new_cluster,
    p.SubmitJobs: Scheduler.on_submit_jobs,
    p.QueryJobs: Scheduler.on_query_jobs,
    p.QueryWorkers: Scheduler.on_query_workers,
    p.Subscribe: Scheduler.on_subscribe,
    p.AwaitClusters: Scheduler.on_await_clusters,
    p.FetchResults: Scheduler.on_fetch_results,
    p.ChangeJobs: Scheduler.on_change_jobs,
    p.EditJobs: Scheduler.on_edit_jobs,
    p.QueryHistory: Scheduler.on_query_history,
    p.TailJob: Scheduler.on_tail_job,
    p.OutputChunk: Scheduler.on_output_chunk,
    p.DrainWorker: Scheduler.on_drain_worker,
    p.Draining: Scheduler.on_draining,
    p.QueryUsers: Scheduler.on_query_users,
    p.QueryCounts: Scheduler.on_query_counts,
    p.AnalyzeJobs: Scheduler.on_analyze_jobs,
    p.ProbeFtp: Scheduler.on_probe_ftp,
}


def _bind_host(host: str) -> str:
    return "" if host == "0.0.0.0" else host


def ensure_secret(config: SchedulerConfig) -> bytes:
    """The worker pool secret, created (mode 0600) on first start."""
    path = config.secret_path
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        log.info("created worker pool secret %s", path)
    return p.read_secret(path)
