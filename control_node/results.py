"""Waiting for jobs and bringing their results home.

Every job fetched gets a line in its cluster's ``<cluster>.results.jsonl`` (see
:mod:`control_node.results_file`). Without ``output``/``error`` in the submit file, a
job with files worth a folder (or every job, with ``per_job``) also gets
``./<cluster>.<proc>/``: ``stdout``, ``stderr``, ``status.json`` and its output files.
With them, as HTCondor does: stdout and stderr to the named paths, output files into
the job's ``initialdir``; ``status.json`` is not written. A ``log`` file gets the
job's events.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_node import results_file
from control_node.connection import Connection, DfarmError, Pushed, SchedulerUnavailable
from control_node.fetch_downloads import Download, download_all
from control_node.job_queries import query_jobs
from control_node.results_file import ClusterResultsFile, results_path
from scheduler import protocol as p

DONE_STATES = {p.JobState.COMPLETED.value, p.JobState.REMOVED.value, p.JobState.HELD.value}
RESERVED_NAMES = {"stdout", "stderr", "status.json"}
#: The job attribute (``+DfarmPerJob = true`` in a submit file) that asks for a
#: ``<cluster>.<proc>/`` folder for each of its jobs, as ``--per-job`` does.
PER_JOB_ATTRIBUTE = "DfarmPerJob"
#: Seconds between two writes of a results file while a fetch goes on.
FLUSH_INTERVAL = 2.0


@dataclass(frozen=True)
class FetchedJob:
    """Where one job's results were written."""

    job: p.JobInfo
    stdout: Path | None
    stderr: Path | None
    outputs: list[Path]
    #: The job's ``<cluster>.<proc>/`` folder, when it got one.
    folder: Path | None = None
    #: Its cluster's results file, which has a line for it.
    results_file: Path | None = None
    #: Whether stdout (stderr) was too large to come inline (so is not in the line).
    stdout_large: bool = False
    stderr_large: bool = False
    #: What the job printed, for a job without a file for it (its line holds it).
    stdout_data: bytes | None = None
    stderr_data: bytes | None = None

    @property
    def failed(self) -> bool:
        return failed(self.job)

    def stdout_text(self) -> str:
        """What the job printed on stdout, from its file or its results line."""
        return _text(self.stdout, self.stdout_data)

    def stderr_text(self) -> str:
        """What the job printed on stderr, from its file or its results line."""
        return _text(self.stderr, self.stderr_data)


def _text(path: Path | None, data: bytes | None) -> str:
    if path is not None:
        return path.read_text(errors="replace")
    return (data or b"").decode(errors="replace")


def failed(job: p.JobInfo) -> bool:
    """A job that did not complete with exit code 0."""
    return not (job.state == p.JobState.COMPLETED.value and job.exit_code == 0)


def describe_status(job: p.JobInfo) -> str:
    """``exit code 0``, ``killed by signal 9``, ``held: reason (exit code 1)`` ..."""
    if job.state == p.JobState.HELD.value:
        return f"held: {job.hold_reason}{ended_with(job)}"
    if job.exit_signal is not None:
        return f"killed by signal {job.exit_signal}"
    if job.exit_code is not None:
        return f"exit code {job.exit_code}"
    return job.state


def ended_with(job: p.JobInfo) -> str:
    """`` (exit code 1)`` for a held job whose program had ended, so that a hold for
    a missing output file does not hide how the program exited; else ``""``."""
    if job.exit_signal is not None:
        return f" (killed by signal {job.exit_signal})"
    if job.exit_code is not None:
        return f" (exit code {job.exit_code})"
    return ""


def seconds_text(seconds: float) -> str:
    """A duration as people write it: ``0.5 s``, ``2 s``, ``3 min 5 s``, ``2 h 10 min``."""
    if seconds < 1:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60} s" if s % 60 else "")
    return f"{s // 3600} h" + (f" {s % 3600 // 60} min" if s % 3600 // 60 else "")


def wait(
    conn: Connection,
    job_ids: list[str],
    timeout: float | None = None,
    on_update: Callable[[dict[str, p.JobInfo]], None] | None = None,
) -> list[p.JobInfo]:
    """Block until every job is completed, removed or held; returns their records."""
    if on_update is None and all(p.parse_job_id(j)[1] is None for j in job_ids):
        return _await_clusters(conn, job_ids, timeout)
    jobs: dict[str, p.JobInfo] = {}
    # Without a progress display only the final states matter.
    for jobs, _ in _watch(conn, job_ids, timeout, all_states=on_update is not None):
        if on_update:
            on_update(jobs)
    return [jobs[j] for j in sorted(jobs, key=_order)]


def _await_clusters(conn: Connection, job_ids: list[str], timeout: float | None) -> list[p.JobInfo]:
    """:func:`wait` for whole clusters without progress: the scheduler says when each
    is done, and the records are read once, at the end."""
    pending = {p.parse_job_id(j)[0] for j in job_ids}
    conn.request(p.AwaitClusters(clusters=sorted(pending)))
    for pushed in _pushed(conn, timeout):
        if isinstance(pushed, p.ClusterDone):
            pending.discard(pushed.cluster)
        if not pending:
            break
    return query_jobs(conn, job_ids, states=[])  # in id order, as the scheduler answers


def as_completed(
    conn: Connection, job_ids: list[str], timeout: float | None = None
) -> Iterator[p.JobInfo]:
    """Each job's record as soon as it is completed, removed or held."""
    for jobs, changed in _watch(conn, job_ids, timeout, all_states=False):
        if changed is None:
            yield from (job for job in jobs.values() if job.state in DONE_STATES)
        elif changed.state in DONE_STATES:
            yield changed


def _watch(
    conn: Connection, job_ids: list[str], timeout: float | None, all_states: bool
) -> Iterator[tuple[dict[str, p.JobInfo], p.JobInfo | None]]:
    """The jobs' records, then again after each update (with the job that changed),
    until none is left to finish."""
    clusters = sorted({p.parse_job_id(j)[0] for j in job_ids})
    conn.request(p.Subscribe(clusters=clusters, states=[] if all_states else sorted(DONE_STATES)))
    records = query_jobs(conn, job_ids, states=[])
    jobs = {j.id: j for j in records}
    pending = {j.id for j in records if j.state not in DONE_STATES}
    yield jobs, None
    if not pending:
        return
    for update in _pushed(conn, timeout):
        # Updates of jobs already finished (and reported) are skipped.
        if not isinstance(update, p.JobUpdate) or update.job.id not in pending:
            continue
        jobs[update.job.id] = update.job
        if update.job.state in DONE_STATES:
            pending.discard(update.job.id)
        yield jobs, update.job
        if not pending:
            return


def _pushed(conn: Connection, timeout: float | None) -> Iterator[Pushed]:
    """What the scheduler pushes, as it comes; TimeoutError after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 5.0 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"jobs still running after {seconds_text(timeout or 0)}")
        pushed = conn.next_update(min(left, 5.0))
        if pushed is not None:
            yield pushed


def _order(job_id: str) -> tuple[int, int]:
    cluster, proc = p.parse_job_id(job_id)
    return cluster, proc or 0


def fetch(
    conn: Connection,
    ids: list[str],
    dest: Path | None = None,
    submit_paths: bool = True,
    unfinished: list[p.JobInfo] | None = None,
    per_job: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[FetchedJob]:
    """Download the results of finished jobs. ``dest`` (default: the current
    directory) holds each cluster's results file (see :mod:`control_node.results_file`)
    and the ``<cluster>.<proc>/`` folders: one for every job with ``per_job``, else only
    for a job with output files, a stdout or stderr too large to come inline, or a
    failure. With ``submit_paths``, jobs whose submit file named ``output``/``error``
    get them where it said, when its ``initialdir`` exists on this machine. The records
    of jobs named that have not finished (idle or running: nothing to fetch yet) are
    appended to ``unfinished``; ``progress(done, total)`` is called after each reply."""
    fetcher = Fetcher(conn, dest, submit_paths, per_job, progress)
    fetcher.fetch(ids, unfinished)
    return fetcher.finish()


class Fetcher:
    """Fetches results in batches (as they finish, or all at once) into one place:
    each cluster's results file is kept in memory and rewritten whole after each reply;
    event logs and the list of damaged files are written and told by :meth:`finish`."""

    def __init__(
        self,
        conn: Connection,
        dest: Path | None = None,
        submit_paths: bool = True,
        per_job: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ):
        self.conn = conn
        self.dest = Path.cwd() if dest is None else dest
        self.submit_paths = submit_paths
        self.per_job = per_job
        self.progress = progress
        self.fetched: list[FetchedJob] = []
        self.files: dict[int, ClusterResultsFile] = {}
        self._logs: dict[str, list[tuple[p.JobEvent, str]]] = {}
        self._damaged: list[str] = []
        self._flush_due = time.monotonic() + FLUSH_INTERVAL

    def fetch(self, ids: list[str], unfinished: list[p.JobInfo] | None = None) -> None:
        """Fetch these jobs' results: each part of them is asked for as soon as the
        part before has come, so that the scheduler makes it while that one is written."""
        done, total = 0, 0
        pending = self.conn.send_request(p.FetchResults(ids=ids, brief=True)) if ids else None
        while pending is not None:
            data = self.conn.raw_reply(pending)
            remaining = data.get("remaining") or []
            ask = p.FetchResults(ids=remaining, brief=True)
            pending = self.conn.send_request(ask) if remaining else None
            wire_jobs = data.get("jobs") or []
            reply = _job_results(data)
            total = total or len(reply.jobs) + len(reply.remaining)
            self._write_reply(reply, wire_jobs, unfinished)
            done += len(reply.jobs)
            if self.progress is not None:
                self.progress(done, total)

    def _write_reply(
        self,
        reply: p.JobResults,
        wire_jobs: list[dict[str, Any]],
        unfinished: list[p.JobInfo] | None,
    ) -> None:
        """Write the results of a reply; ``wire_jobs``: its jobs as they came, the lines
        of the results files."""
        large = None if reply.large is None else set(reply.large)
        downloads: list[Download] = []
        for job, wire in zip(reply.jobs, wire_jobs, strict=True):
            if job.state not in DONE_STATES:
                if unfinished is not None:
                    unfinished.append(job)
                continue
            spec = reply.specs.get(job.id)  # brief: only where it names paths
            inline = {n: p.unpack_bytes(d) for n, d in reply.files.get(job.id, {}).items()}
            # Paths in someone else's submit file (an admin fetching it) are never
            # written to: they could name any file of the admin's.
            own_paths = self.submit_paths and job.owner == self.conn.user
            in_spool = large is None or job.id in large
            results = self._results_file(job.cluster)
            fetched = _fetch_job(
                downloads,
                _JobFiles(inline, reply.hashes.get(job.id, {}), in_spool),
                job,
                spec,
                self.dest,
                own_paths,
                self.per_job,
                results.path,
            )
            self.fetched.append(fetched)
            results.add(job.proc, _record_line(fetched, wire, inline, self.dest))
            if spec is not None and spec.log and own_paths:
                self._logs.setdefault(spec.log, []).extend(
                    (e, job.id) for e in reply.events.get(job.id, [])
                )
        if downloads:
            if reply.download is None:
                self._damaged.extend(
                    f"job {d.job_id}: result file {d.name} is missing from the spool"
                    for d in downloads
                    if d.expected is not None
                )
            else:
                if reply.local is not None:
                    # Imported here: the commands that only show the queue never copy.
                    from control_node.fetch_local import copy_in_place

                    downloads = copy_in_place(reply.download, reply.local, downloads, self._damaged)
                download_all(reply.download, downloads, self._damaged)
        # Each file is rewritten whole: at most every few seconds while results come,
        # so that a cluster's fetch writes it a few times, not once a reply.
        if time.monotonic() >= self._flush_due:
            self.flush()

    def flush(self) -> None:
        """Write every results file changed since the last time."""
        for results in self.files.values():
            results.flush()
        self._flush_due = time.monotonic() + FLUSH_INTERVAL

    def _results_file(self, cluster: int) -> ClusterResultsFile:
        if cluster not in self.files:
            self.files[cluster] = ClusterResultsFile(results_path(self.dest, cluster))
        return self.files[cluster]

    def finish(self) -> list[FetchedJob]:
        """Write the results files and event logs; every job fetched, or DfarmError
        naming what is damaged."""
        self.flush()
        for path, events in self._logs.items():
            try:
                write_event_log(Path(path), events)
            except OSError as exc:
                self._damaged.append(
                    f"cannot write the event log '{path}' (log): {exc.strerror or exc}"
                )
        if self._damaged:
            raise DfarmError(
                "; ".join(self._damaged)
                + f" (not written; the other {len(self.fetched)} job(s)' results were)"
            )
        return self.fetched


@dataclass(frozen=True)
class _JobFiles:
    """What a reply says of one job's files: the small ones' content, the recorded
    hashes of the large ones, and whether the spool has any of its files."""

    inline: dict[str, bytes]
    expected: dict[str, str]
    in_spool: bool

    def large(self, name: str) -> bool:
        """Whether ``name`` is in the spool rather than inline."""
        if name in self.inline:
            return False
        return name in self.expected or (self.in_spool and not self.expected)


def _job_results(data: dict[str, Any]) -> p.JobResults:
    """A ``job_results`` reply that came as JSON data, checked as every reply is."""
    fields = {k: v for k, v in data.items() if k != "type"}
    if data.get("type") != p.JobResults.type:
        raise SchedulerUnavailable(f"bad reply from the scheduler: {data.get('type')!r}")
    try:
        reply = p.from_wire(p.JobResults, fields, p.JobResults.type)
    except p.ProtocolError as exc:
        raise SchedulerUnavailable(f"bad reply from the scheduler: {exc}") from None
    assert isinstance(reply, p.JobResults)
    return reply


def _record_line(
    fetched: FetchedJob, wire: dict[str, Any], inline: dict[str, bytes], dest: Path
) -> str:
    """The job's line of its cluster's results file (``wire``: its record as it came)."""
    folder = fetched.folder
    own_out = fetched.stdout if fetched.stdout is not None and folder is None else None
    own_err = fetched.stderr if fetched.stderr is not None and folder is None else None
    return results_file.line(
        wire,
        inline.get("stdout", b"" if fetched.stdout_large is False else None),
        inline.get("stderr", b"" if fetched.stderr_large is False else None),
        None if folder is None else os.path.relpath(folder, dest),
        own_out,
        own_err,
    )


def wants_folder(job: p.JobInfo, files: _JobFiles, per_job: bool) -> bool:
    """Whether a job's results get a ``<cluster>.<proc>/`` folder: always with
    ``per_job`` or ``+DfarmPerJob = true`` in its submit file; else for output files,
    a stdout or stderr too large to come inline, or a job that did not succeed."""
    return (
        per_job
        or job.attributes.get(PER_JOB_ATTRIBUTE, "").lower() == "true"
        or failed(job)
        or bool(job.output_files)
        or files.large("stdout")
        or files.large("stderr")
    )


def _fetch_job(
    downloads: list[Download],
    files: _JobFiles,
    job: p.JobInfo,
    spec: p.JobSpec | None,
    dest: Path,
    submit_paths: bool,
    per_job: bool,
    results_file: Path | None = None,
) -> FetchedJob:
    """Write one job's small results; its large ones are added to ``downloads``."""
    folder: Path | None = None
    if (
        spec is not None
        and submit_paths
        and (spec.output or spec.error)
        and Path(spec.initialdir or "/-").is_dir()
    ):
        out = Path(spec.output) if spec.output else None
        err = Path(spec.error) if spec.error else None
        out_dir = Path(spec.initialdir or dest)
    elif wants_folder(job, files, per_job):
        folder = out_dir = dest / job.id
        out_dir.mkdir(parents=True, exist_ok=True)
        out, err = out_dir / "stdout", out_dir / "stderr"
        _write(out_dir / "status.json", (json.dumps(p.to_wire(job), indent=2) + "\n").encode())
    else:
        # Everything of it is in its cluster's results file.
        return FetchedJob(
            job,
            None,
            None,
            [],
            None,
            results_file,
            stdout_data=files.inline.get("stdout", b""),
            stderr_data=files.inline.get("stderr", b""),
        )
    remote = f"{job.cluster}/{job.proc}"
    inline, expected = files.inline, files.expected

    def get(name: str, local: Path) -> None:
        if name in inline:
            _write(local, inline[name])
        elif name in expected:
            downloads.append(Download(job.id, name, f"{remote}/{name}", local, expected[name]))
        elif files.in_spool and not expected:
            # Hashes are recorded for every large file; a job without any is older.
            downloads.append(Download(job.id, name, f"{remote}/{name}", local, None))
        elif name in ("stdout", "stderr"):
            _write(local, b"")  # the job printed nothing there

    for local, name in ((out, "stdout"), (err, "stderr")):
        if local is not None:
            get(name, local)
    outputs = []
    for name in job.output_files:
        if name != os.path.basename(name) or name in ("", ".", ".."):
            continue  # never a path: results stay inside their folder
        local_name = f"output-{name}" if out_dir.name == job.id and name in RESERVED_NAMES else name
        get(f"outputs/{name}", out_dir / local_name)
        outputs.append(out_dir / local_name)
    return FetchedJob(
        job,
        out,
        err,
        outputs,
        folder=folder,
        results_file=results_file,
        stdout_large=files.large("stdout"),
        stderr_large=files.large("stderr"),
    )


def _write(local: Path, data: bytes) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, local)


def write_event_log(path: Path, events: list[tuple[p.JobEvent, str]]) -> None:
    """One line per event: time, job id, event, detail (the same for every job
    sharing a log file, in time order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(e.time))} {job_id} "
        f"{e.event}: {e.detail}\n"
        for e, job_id in sorted(events, key=lambda pair: (pair[0].time, _order(pair[1])))
    ]
    path.write_text("".join(lines))


def tail(path: Path | None, lines: int = 10) -> str:
    """The last lines of a text file, for showing a failed job's stderr."""
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])
