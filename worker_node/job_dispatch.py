"""The jobs a worker is given, each run in a slot thread (see :mod:`worker_node.daemon`,
whose :class:`~worker_node.daemon.Worker` connects, registers and hands each
``run_job`` and ``kill_job`` here).

Behind a short running job the scheduler may queue more jobs (``run_job`` with
``after``, see :mod:`scheduler.queue_ahead`): each starts the moment the one it
waits for ends, in its place, in the same slot thread (a chain never goes back
to the event loop between two jobs), and their results leave a few at a time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler import protocol as p
from worker_node import checkpoint
from worker_node.containers import Containers
from worker_node.disk import DiskWatch
from worker_node.gpu_choice import choose_gpus
from worker_node.identity import JobAccounts
from worker_node.launcher import Launchers
from worker_node.metrics import Sampler
from worker_node.runner import Attempt, run_attempt
from worker_node.sandbox import Sandbox
from worker_node.spool_link import SpoolLink
from worker_node.transfer import OwnerCaches

if TYPE_CHECKING:
    from worker_node.daemon import WorkerConfig

log = logging.getLogger("worker_node.daemon")

#: Results of chains of queued jobs are sent once this many are waiting ...
RESULT_BATCH = 8
#: ... or this many seconds after the first of them; the result of a job that
#: ran this long, or with nothing queued behind it, is sent at once.
RESULT_DELAY = 0.005


class JobDispatch:
    """A worker's side of its jobs: starting, chaining, killing and the sending of
    results. Its state is set up by :class:`worker_node.daemon.Worker`."""

    config: WorkerConfig
    sampler: Sampler
    accounts: JobAccounts
    caches: OwnerCaches
    launchers: Launchers | None
    job_python: str | None
    spool: SpoolLink | None
    disk: DiskWatch
    containers: Containers
    requests: checkpoint.Requests
    jobs_dir: Path
    executor: concurrent.futures.ThreadPoolExecutor
    attempts: dict[str, Attempt]
    waiting: dict[str, Attempt]
    dropped: list[str]
    free_gpus: list[int]
    sandboxes: list[Sandbox]
    unacked: dict[int, p.JobFinished]
    _sandboxes_made: int
    _done: list[tuple[Attempt, p.JobFinished, bool]]
    _chain_lock: threading.Lock
    _ids: itertools.count[int]
    _writer: asyncio.StreamWriter | None

    #: The machine's metrics, sent before the results of a worker whose disk is full.
    _metrics: Callable[[], p.WorkerMetrics]

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
