"""The scheduler node's I/O shell: one asyncio loop owning every connection.

Each connection starts with the handshake (:mod:`scheduler.handshake`); then its
messages are routed by :data:`ROUTES`, which names the handler of each message
type: plain functions of the scheduler's state (:mod:`scheduler.state`), the
caller and the message. The roles allowed to send a type are declared on the
message class itself, so who may do what is visible in one place. A malformed or
forbidden message gets an ``error`` reply and never crashes the loop. This module
owns what the state does not: sockets, the turns of the loop (commit, then send),
and the periodic loops.
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
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from scheduler import (
    checkpoints,
    control_handlers,
    dag_handlers,
    explain,
    job_control,
    probe,
    result_fetch,
    small_submit,
    worker_control,
    worker_handlers,
)
from scheduler import protocol as p
from scheduler.clusters import abandon_cluster, remove_reservation, upload_failed
from scheduler.config import SchedulerConfig
from scheduler.connection import Connection, plain_host
from scheduler.core import build_state
from scheduler.dags import resume as resume_dags
from scheduler.departures import connection_closed
from scheduler.disk_space import DiskSpace, is_disk_full
from scheduler.handshake import handshake
from scheduler.housekeeping import housekeeping
from scheduler.identities import check_identities
from scheduler.node_setup.private_dir import make_private_dir
from scheduler.private import check_file, check_home
from scheduler.protocol import Role
from scheduler.staging import Spool
from scheduler.starting import schedule_once
from scheduler.state import SchedulerState
from scheduler.store import Store
from scheduler.tls_setup import load_or_create
from scheduler.units import run_unit
from scheduler.web.app import WebServer, start_web

log = logging.getLogger(__name__)

#: A handler: the reply (or a coroutine that makes it, awaited before the
#: connection's next request), or None when there is none yet.
Handler = Callable[[SchedulerState, Connection, Any], object]


class Scheduler:
    """The scheduler node. ``await Scheduler(config).serve()`` runs it until stopped."""

    def __init__(self, config: SchedulerConfig):
        self.config = config
        make_private_dir(config.home)
        check_home(config.home)  # raises PrivacyError for what it cannot fix
        if config.tls and config.tls_key:
            check_file(config.tls_key)
        disk = DiskSpace(config.home, config.min_free_space)
        secret = ensure_secret(config)
        store = Store(config.db_path)
        self.tls = (
            load_or_create(config.home, config.tls_cert, config.tls_key) if config.tls else None
        )
        spool = Spool(
            config.spool_dir,
            host=_bind_host(config.host),
            port=config.ftp_port,
            passive_ports=config.ftp_passive_ports,
            masquerade_address=config.masquerade_address,
            tls=self.tls,
        )
        self._wake = asyncio.Event()
        self.state = build_state(
            config, store, spool, secret, clock=time.time, wake=self._wake.set,
            end_turn=self.end_turn, disk=disk,
        )  # fmt: skip
        self.state.tls = self.tls
        self.store, self.spool = store, spool
        self._ids = itertools.count(1)
        #: Connections with frames to send at the end of this turn of the loop.
        self._dirty: set[Connection] = set()
        #: Workers whose frames wait for a commit the full disk refused ...
        self._held: set[Connection] = set()
        #: ... and whether such a commit is still to be made.
        self._commit_failed = False
        self._turn_ending = False
        #: The database is closed: the scheduler stopped.
        self._closed = False
        #: Every live connection, by the task serving it.
        #: The tasks serving connections, waited for at shutdown (the connections
        #: themselves are ``state.peers``).
        self._serving: set[asyncio.Task[None]] = set()
        self.store.on_batch_open = self._end_turn_soon
        self.state.effects.on_queued = self._end_turn_soon
        disk.on_room = self._wake.set  # idle jobs start again
        self._stopping = asyncio.Event()
        self.port = config.port

    # ------------------------------------------------------------------ lifecycle

    def _link_mails(self, web: WebServer | None) -> None:
        """Mails link to the dashboard at ``--web-url``, else at the address it listens
        on; not at an ephemeral port (``--web-port 0``), dead after a restart."""
        if self.config.web_url:
            self.state.mailer.link_jobs(self.config.web_url.rstrip("/") + "/jobs/{job}")
        elif web is not None and self.config.web_port:
            self.state.mailer.link_jobs(web.url + "jobs/{job}")
        mail = self.state.mailer.config
        if mail is None:
            log.info("mail: not configured (no --smtp-host): no job sends mail")
            return
        log.info(
            "mail: through %s:%d (%s) from %s",
            mail.host, mail.smtp_port, mail.security, mail.sender,
        )  # fmt: skip
        if self.state.mailer.config is not None and self.state.mailer.config.job_url:
            log.info("mail: links to %s", self.state.mailer.config.job_url)
        elif web is not None:
            log.info("mail: no link to the dashboard, its port is ephemeral (set --web-url)")

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        tls: dict[str, Any] = (
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

        def failed(cluster: int, why: str) -> None:
            loop.call_soon_threadsafe(
                run_unit,
                self.state,
                "upload failure",
                lambda: upload_failed(self.state, cluster, why),
            )

        def disk_full(exc: OSError) -> None:
            loop.call_soon_threadsafe(self.state.disk.write_failed, exc)

        self.spool.arrivals.on_failed = failed
        self.spool.on_disk_full = disk_full
        self.state.disk.check(force=True)  # says so in the log if the disk is full already
        for cluster in self.store.clusters.incomplete_clusters():
            abandon_cluster(self.state, cluster, "the submission was interrupted by a restart")
        check_identities(self.state)  # users removed while the scheduler was down
        for cluster in self.store.clusters.reservations():
            remove_reservation(self.state, cluster, "was cut by a restart")
        run_unit(self.state, "workflows resumed", lambda: resume_dags(self.state))
        self.end_turn()
        web = await start_web(self.state) if self.config.web_port is not None else None
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
            len(self.state.jobs.active),
        )
        self.state.loop_lag.start()
        tasks = [
            asyncio.create_task(self._scheduling_loop(), name="scheduling"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
            asyncio.create_task(self.state.mailer.run(), name="mail"),
        ]
        self._wake.set()
        if ready is not None:
            ready.set()
        try:
            async with server:
                await self._stopping.wait()
        finally:
            self.state.loop_lag.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if web is not None:
                await web.stop()
            # Every connection winds down (and commits) before the database closes.
            # Closing makes each reader see the end of its stream; cancelling the
            # task instead makes Python 3.11's start_server log a spurious error.
            serving = list(self._serving)
            for conn in list(self.state.peers.values()):
                conn.writer.close()
            if serving:
                await asyncio.wait(serving, timeout=5)
            self.end_turn()
            self.spool.stop()
            self._closed = True
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
            undo=self.store.remember,
        )
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        self.state.peers[conn.id] = conn
        address = conn.address
        try:
            # A blocked address still gets its handshake: a right proof is let in.
            if await handshake(self.state, conn, lambda timeout: self._read(conn, timeout)):
                await self._serve_peer(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            if conn.role is None:
                self.state.guard.failed(address)
        except p.ProtocolError as exc:
            blocked = conn.role is None and self.state.guard.blocked_for(address)
            if conn.role is None:
                self.state.guard.failed(address)
            if not blocked:  # a blocked address's garbage is not logged line by line
                log.warning("closing %s (%s): %s", conn.peer, conn.name or "?", exc)
            with contextlib.suppress(ConnectionError):
                conn.send(p.Error(message=str(exc), code="protocol"))
        except Exception:
            # A bug met in the handshake: it costs this connection (a failed handshake)
            # and is logged once, never left to asyncio as an unhandled exception.
            if conn.role is None:
                self.state.guard.failed(address)
            log.exception("internal error serving %s (%s)", conn.peer, conn.name or "?")
            conn.send(p.Error(message="internal error", code="internal"))
        finally:
            self._serving.discard(task)
            self.state.peers.pop(conn.id, None)
            if not self._closed:  # a connection slow to end outlives the database
                run_unit(self.state, "departure", lambda: connection_closed(self.state, conn))
                self.end_turn()
            writer.close()
            # Cancelled at shutdown while a TLS close is under way: the task ends here.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _read(self, conn: Connection, timeout: float | None = None) -> p.Message:
        """The next message from ``conn`` (within ``timeout`` seconds)."""
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
            reply = run_unit(self.state, message.type, partial(route, self.state, conn, message))
            if isinstance(reply, Awaitable):
                # File I/O of a user's size, in a thread: this connection waits for
                # it, the loop serves the others. It only reads: it is no unit.
                try:
                    reply = await reply
                except Exception:
                    log.exception("unit %s failed", message.type)
                    reply = p.Error(
                        message=f"internal error handling {message.type!r}", code="internal"
                    )
            if isinstance(reply, p.Message):
                conn.send(reply.with_id(message.id))
            await conn.writer.drain()

    # ------------------------------------------------------------------ turns of the loop

    def _output(self, conn: Connection) -> None:
        self._dirty.add(conn)
        self._end_turn_soon()

    def _end_turn_soon(self) -> None:
        if not self._turn_ending:
            self._turn_ending = True
            asyncio.get_running_loop().call_soon(self.end_turn)

    def end_turn(self) -> None:
        """Commit what this turn wrote, carry out the effects its units deferred (see
        :mod:`scheduler.effects`), then send what it queued: a peer never hears of a
        change that a crash could still take back, and a worker told to run a job
        finds the folder of its earlier attempt already cleared. While the disk is
        too full to commit, the writes wait in memory (see :meth:`Store.commit`) and
        so do the effects and the frames to workers, whose acknowledged results would
        otherwise be forgotten: users still get their answers."""
        self._turn_ending = False
        if self._closed:  # a turn ended late, after the stop
            return
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
            self.state.disk.write_failed(exc)
            held = {conn for conn in self._dirty if conn.role is Role.WORKER}
            self._held |= held
            self._dirty -= held
        else:
            if self._commit_failed:
                log.warning("the writes held for lack of disk space are committed")
                self._commit_failed = False
                self._dirty |= self._held
                self._held.clear()
            self.state.effects.run()
        now = time.monotonic()
        for conn in self._dirty:
            delay = conn.flush_delay(now)
            if delay <= 0:
                conn.flush(now)
            elif not conn.deferred:
                conn.deferred = True
                asyncio.get_running_loop().call_later(delay, self._flush_deferred, conn)
        self._dirty.clear()

    def _flush_deferred(self, conn: Connection) -> None:
        # Through the end of a turn, so that nothing leaves before its commit.
        conn.deferred = False
        if conn.outbox:
            conn.urgent = True
            self._output(conn)

    # ------------------------------------------------------------------ loops

    async def _scheduling_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            run_unit(self.state, "scheduling pass", lambda: schedule_once(self.state))
            # Let a burst of messages in before the next pass.
            await asyncio.sleep(0)

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            # First, between turns: a database cannot be shared again under the
            # batch that a unit writing opens.
            self._disk_round()
            run_unit(self.state, "identity check", lambda: check_identities(self.state))
            housekeeping(self.state, self.state.clock())

    def _disk_round(self) -> None:
        """Look at the disk, commit what waits for room, and let the store share its
        database again once there is room."""
        self.state.disk.check()
        if self._commit_failed:
            self.end_turn()
        if self.store.exclusive and not self.state.disk.full:
            self.store.share()


#: The handler of each message type.
ROUTES: dict[type[p.Message], Handler] = {
    p.Register: worker_handlers.on_register,
    p.Heartbeat: worker_handlers.on_heartbeat,
    p.JobFinished: worker_handlers.on_job_finished,
    p.NewCluster: control_handlers.on_new_cluster,
    p.SubmitJobs: control_handlers.on_submit_jobs,
    p.SubmitSmall: small_submit.on_submit_small,
    p.QueryJobs: control_handlers.on_query_jobs,
    p.QueryBatches: control_handlers.on_query_batches,
    p.QueryWorkers: control_handlers.on_query_workers,
    p.Subscribe: control_handlers.on_subscribe,
    p.AwaitClusters: control_handlers.on_await_clusters,
    p.FetchResults: result_fetch.on_fetch_results,
    p.ChangeJobs: job_control.on_change_jobs,
    p.EditJobs: job_control.on_edit_jobs,
    p.QueryHistory: job_control.on_query_history,
    p.TailJob: job_control.on_tail_job,
    p.OutputChunk: job_control.on_output_chunk,
    p.DrainWorker: worker_control.on_drain_worker,
    p.Draining: worker_control.on_draining,
    p.Checkpointed: checkpoints.on_checkpointed,
    p.QueryUsers: explain.on_query_users,
    p.QueryCounts: explain.on_query_counts,
    p.AnalyzeJobs: explain.on_analyze_jobs,
    p.ProbeFtp: probe.on_probe_ftp,
    p.SubmitDag: dag_handlers.on_submit_dag,
    p.QueryDags: dag_handlers.on_query_dags,
    p.RerunDag: dag_handlers.on_rerun_dag,
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
