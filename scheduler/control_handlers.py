"""What the scheduler does with the requests of users (control nodes)."""

from __future__ import annotations

import bisect
import logging
import sqlite3
import time

from scheduler import protocol as p
from scheduler.authz import may_act_for, may_control, not_found, visible_info
from scheduler.connection import Connection, RequestError
from scheduler.disk_space import is_disk_full
from scheduler.dispatch import Slots
from scheduler.matching.attributes import capacities, impossible_warnings
from scheduler.protocol import JobState
from scheduler.quota import QuotaError
from scheduler.staging import StagingError, upload_sizes
from scheduler.store import Job, JobResult
from scheduler.submission import SubmissionError, check_submission

log = logging.getLogger("scheduler.server")

FINAL = {state.value for state in p.FINAL_STATES}


class ControlHandlers:
    """Handlers of user requests; mixed into :class:`scheduler.server.Scheduler`."""

    def on_new_cluster(self, conn: Connection, msg: p.NewCluster) -> p.Message:
        self.refuse_if_disk_full()
        try:
            budget = self.quota.upload_budget(conn.name)
        except QuotaError as exc:
            raise RequestError(str(exc), "quota") from None
        now = self.reservations.clock()
        cluster = self.store.reserve_cluster(conn.name, now)
        self.reservations.add(cluster, now)
        ttl = self.config.reservation_ttl
        return p.ClusterCreated(
            cluster=cluster,
            upload=self.spool.grant_upload(cluster, conn.local_host, ttl=ttl, max_bytes=budget),
        )

    def expire_reservations(self, now: float) -> None:
        """Remove the reserved clusters whose first part did not come in time."""
        for cluster in self.reservations.due(now):
            self.remove_reservation(cluster, "was not submitted in time")

    def remove_reservation(self, cluster: int, why: str) -> None:
        """Remove a cluster reserved without a job: its grant, folder and row."""
        if cluster in self.partial_clusters or not self.store.forget_reservation(cluster):
            return  # it has jobs now
        self.spool.remove_cluster(cluster)
        log.info("reserved cluster %d removed: it %s", cluster, why)

    def on_submit_jobs(self, conn: Connection, msg: p.SubmitJobs) -> p.Message:
        owner = self.store.cluster_owner(msg.cluster)
        if owner is None or owner[0] != conn.name:
            raise RequestError(f"cluster {msg.cluster} was not reserved by you", "not_found")
        if owner[1]:
            raise RequestError(f"cluster {msg.cluster} was already submitted", "conflict")
        expected, submitter = self.partial_clusters.get(msg.cluster, (0, conn))
        if submitter is not conn:
            raise RequestError(f"cluster {msg.cluster} is being submitted elsewhere", "conflict")
        if msg.first_proc != expected:
            raise RequestError(
                f"cluster {msg.cluster}: the next part starts at proc {expected},"
                f" not {msg.first_proc}",
                "invalid",
            )
        try:
            self.refuse_if_disk_full()
            return self._queue_part(conn, msg)
        except (sqlite3.Error, OSError) as exc:
            if not is_disk_full(exc):
                raise
            error = self.disk_full_error(exc)
            if expected:
                self.abandon_cluster(msg.cluster, f"the submission failed: {error.message}")
            raise RequestError(error.message, "disk_full") from None
        except RequestError as exc:
            if expected:  # earlier parts are queued: the cluster is not submitted whole
                self.abandon_cluster(msg.cluster, f"the submission failed: {exc}")
                raise RequestError(
                    f"{exc}; the {expected} job(s) of cluster {msg.cluster} already queued"
                    " were removed",
                    exc.code,
                ) from None
            raise

    def _queue_part(self, conn: Connection, msg: p.SubmitJobs) -> p.Message:
        if not msg.jobs and msg.first_proc:
            return self._end_cluster(conn, msg)
        specs = self.mailer.addressed(msg.jobs, conn.name)
        try:
            self.spool.store_inputs(msg.cluster, msg.files)
            sizes = upload_sizes(msg.uploads, specs)
            # The quota counts each upload at its declared size, not what has arrived.
            declared = {msg.uploads[sha]: size for sha, size in sizes.items()}
            self.quota.check_submission(conn.name, msg.cluster, declared)
            self.spool.name_uploads(msg.cluster, msg.uploads, sizes)
            warnings = check_submission(
                specs, self.spool.input_dir(msg.cluster), mail=self.mailer.configured
            )
        except (SubmissionError, StagingError, p.ProtocolError) as exc:
            raise RequestError(str(exc), "invalid") from None
        except QuotaError as exc:
            raise RequestError(str(exc), "quota") from None
        warnings += impossible_warnings(specs, capacities(self._slots()), msg.first_proc)
        jobs = self.jobs.submit(
            msg.cluster, conn.name, msg.submit_file, specs, msg.first_proc, msg.last
        )
        self.reservations.submitted(msg.cluster)
        if msg.last:
            self.partial_clusters.pop(msg.cluster, None)
            self.spool.end_upload(msg.cluster)  # the client sends it once its uploads end
        else:
            self.partial_clusters[msg.cluster] = (msg.first_proc + len(jobs), conn)
        self.mailer.submitted(jobs, more=not msg.last)
        log.info("user %s submitted cluster %d: %d job(s)", conn.name, msg.cluster, len(jobs))
        self._wake.set()
        return p.Submitted(cluster=msg.cluster, job_ids=[j.id for j in jobs], warnings=warnings)

    def _end_cluster(self, conn: Connection, msg: p.SubmitJobs) -> p.Message:
        """An empty last part: the cluster's uploads have ended, it is whole."""
        if not msg.last or msg.files or msg.uploads:
            raise RequestError("an empty part only ends a cluster", "invalid")
        self.jobs.submit(msg.cluster, conn.name, msg.submit_file, [], msg.first_proc)
        self.partial_clusters.pop(msg.cluster, None)
        self.spool.end_upload(msg.cluster)
        self.mailer.submit_ended(msg.cluster)
        self.cluster_may_be_done(msg.cluster)
        return p.Submitted(cluster=msg.cluster, job_ids=[])

    def upload_failed(self, cluster: int, why: str) -> None:
        """An input of ``cluster`` did not arrive: its jobs cannot run. Only a cluster
        still open waits for its uploads (its client sends the last part after them)."""
        if cluster in self.partial_clusters:
            self.abandon_cluster(cluster, why)

    def abandon_cluster(self, cluster: int, why: str) -> None:
        """A cluster whose last part will not come: remove what was queued of it."""
        self.partial_clusters.pop(cluster, None)
        self.spool.drop_uploads(cluster)
        jobs = [job for job in self.jobs.active.values() if job.cluster == cluster]
        now = time.time()
        with self.store.transaction():
            for job in jobs:
                was_running = job.state is JobState.RUNNING
                self.jobs.transition(job, JobState.REMOVED, "removed", why, end_time=now)
                if was_running:
                    self._stop_attempt(job, why)
            self.store.close_cluster(cluster, now)
        self.mailer.submit_ended(cluster)
        self.cluster_may_be_done(cluster)
        log.warning("cluster %d: %s: %d queued job(s) removed", cluster, why, len(jobs))

    def _slots(self) -> list[Slots]:
        """What each registered worker offers."""
        return [c.slots for c in self.workers.values() if c.slots is not None]

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
        jobs, more = _page(jobs, msg.after, msg.limit)
        finished = {
            job.cluster
            for job in jobs
            if job.state is JobState.COMPLETED and may_control(conn, job)
        }
        results = self.store.results(finished)
        infos = [self._visible(conn, job, results.get((job.cluster, job.proc))) for job in jobs]
        return p.JobList(jobs=self.mailer.annotate(infos, conn.name), more=more)

    def _visible(self, conn: Connection, job: Job, result: JobResult | None = None) -> p.JobInfo:
        """The job as ``conn`` may see it (see :mod:`scheduler.authz`)."""
        return visible_info(conn, job, job.info(result))

    def worker_infos(self) -> list[p.WorkerInfo]:
        """The registered workers as ``dstat`` lists them."""
        return [_worker_info(w) for w in self.workers.values() if w.slots]

    def on_query_workers(self, conn: Connection, msg: p.QueryWorkers) -> p.Message:
        self.disk.check()
        return p.WorkerList(
            workers=self.worker_infos(),
            scheduler_disk_full=self.disk.problem or "",
            spool_bytes=self.retention.spool_bytes(),
            result_retention=self.config.result_retention,
        )

    def on_subscribe(self, conn: Connection, msg: p.Subscribe) -> p.Message:
        for cluster in msg.clusters:
            self.subscribers.setdefault(cluster, {})[conn] = frozenset(msg.states)
        return p.Ok()

    def on_await_clusters(self, conn: Connection, msg: p.AwaitClusters) -> p.Message:
        for cluster in msg.clusters:
            owner = self.store.cluster_owner(cluster)
            if owner is None or not may_act_for(conn, owner[0]):
                # Nothing of it to wait for: a query of it finds no job of the caller's.
                conn.send(p.ClusterDone(cluster=cluster))
                continue
            self.awaiting.setdefault(cluster, set()).add(conn)
            self.cluster_may_be_done(cluster)
        return p.Ok()

    def on_fetch_results(self, conn: Connection, msg: p.FetchResults) -> p.Message:
        clusters, pairs = _parse_ids(msg.ids)
        if not clusters and not pairs:
            raise RequestError("name at least one job or cluster")
        owner = None if conn.admin else conn.name
        jobs = self.store.jobs(owner=owner, clusters=clusters, job_ids=pairs)
        if not jobs:
            raise RequestError(not_found(conn, " ".join(msg.ids)), "not_found")
        expired = self.store.expired_jobs(j.cluster for j in jobs)
        gone = [j.id for j in jobs if (j.cluster, j.proc) in expired]
        if gone:
            days = self.config.result_retention / 86400
            raise RequestError(
                f"the results of {' '.join(gone[:10])}{' ...' if len(gone) > 10 else ''} "
                f"were cleaned {days:g} day(s) after the job ended",
                "not_found",
            )
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
        hashes = {j.id: self.store.hashes(j.cluster, j.proc) for j in sent}
        large = [
            (j.cluster, j.proc)
            for j in sent
            if hashes[j.id] or self.spool.job_dir(j.cluster, j.proc).exists()
        ]
        results = self.store.results({j.cluster for j in sent})
        return p.JobResults(
            download=self.spool.grant_fetch(large, conn.local_host) if large else None,
            files=files,
            jobs=self.mailer.annotate(
                [j.info(results.get((j.cluster, j.proc))) for j in sent], conn.name
            ),
            specs={j.id: j.spec for j in sent},
            events={j.id: self.store.events(j.cluster, j.proc) for j in sent},
            remaining=[j.id for j in jobs[len(sent) :]],
            hashes={
                job_id: {name: sha for name, (sha, _) in found.items()}
                for job_id, found in hashes.items()
                if found
            },
        )


def _page(jobs: list[Job], after: str, limit: int) -> tuple[list[Job], bool]:
    """The jobs (sorted by id) after the id ``after``, at most ``limit`` (0: all)."""
    if after:
        try:
            cluster, proc = p.parse_job_id(after)
        except ValueError as exc:
            raise RequestError(str(exc), "invalid") from None
        key = (cluster, -1 if proc is None else proc)
        jobs = jobs[bisect.bisect_right(jobs, key, key=lambda j: (j.cluster, j.proc)) :]
    if limit > 0 and len(jobs) > limit:
        return jobs[:limit], True
    return jobs, False


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


def _worker_state(s: Slots) -> str:
    """What ``dstat`` says a worker is doing: draining (taking no new job) comes first."""
    if s.draining:
        return "draining"
    return "disk full" if s.disk_full else "busy" if s.used_slots else "idle"


def _worker_info(conn: Connection) -> p.WorkerInfo:
    assert conn.slots is not None and conn.metrics is not None
    s = conn.slots
    return p.WorkerInfo(
        id=s.worker_id,
        name=s.name,
        state=_worker_state(s),
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
        auth=conn.auth,
    )
