"""Inputs whose jobs are queued while their upload still runs (cut-through), with a
real spool and FTP server, a worker's input cache reading over FTP, and a worker
on the spool's file system linking."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from control_node import Client
from scheduler import protocol as p
from scheduler.transport.ftp import ARRIVING, ftp_session

with warnings.catch_warnings():  # pyftpdlib imports asyncore, deprecated in 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from scheduler.arrivals import ArrivalError
    from scheduler.staging import Spool
from worker_node.spool_link import SpoolLink
from worker_node.transfer import InputCache, TransferError

HOST = "127.0.0.1"
DATA = os.urandom(3 << 20)
SHA = hashlib.sha256(DATA).hexdigest()
HALF = len(DATA) // 2
ITEM = p.InputFile(name="data.bin", sha256=SHA, size=len(DATA))


@contextlib.contextmanager
def uploading(spool: Spool, first: bytes, name: str = "part-0") -> Iterator[socket.socket]:
    """An upload into cluster 5's input folder that has sent ``first`` and goes on
    with what the caller sends; it ends when the block does."""
    with ftp_session(spool.grant_upload(5, HOST)) as ftp:
        ftp.voidcmd("TYPE I")
        conn = ftp.transfercmd(f"STOR {name}")
        with conn:
            conn.sendall(first)
            path = spool.input_dir(5) / name
            wait_until(lambda: path.exists() and path.stat().st_size == len(first))
            yield conn
        ftp.voidresp()


def fetch_in_thread(spool: Spool, cache: InputCache) -> tuple[threading.Thread, list[object]]:
    """A worker fetching ITEM over FTP in a thread; the list gets its path or error."""
    outcome: list[object] = []

    def fetch() -> None:
        try:
            with ftp_session(spool.grant_job(5, 0, HOST, ttl=60)) as ftp:
                outcome.append(cache.fetch(ftp, f"input/{SHA}", ITEM))
        except TransferError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=fetch)
    thread.start()
    return thread, outcome


def test_a_worker_reads_an_input_as_its_upload_arrives(spool: Spool, tmp_path: Path) -> None:
    folder = spool.input_dir(5)
    cache = InputCache(tmp_path / "cache")
    with uploading(spool, DATA[:HALF]) as conn:
        spool.arrivals.name(5, folder, "part-0", SHA, len(DATA))
        # Named by its hash at once, marked as arriving, the upload's name gone.
        assert sorted(f.name for f in folder.iterdir()) == [SHA, SHA + ARRIVING]
        assert (folder / SHA).stat().st_size == HALF
        thread, outcome = fetch_in_thread(spool, cache)
        thread.join(0.5)
        assert thread.is_alive() and not outcome  # it read half and waits for more
        conn.sendall(DATA[HALF:])
    thread.join(10)
    assert outcome == [cache.path(SHA)]
    assert cache.path(SHA).read_bytes() == DATA
    wait_until(lambda: not (folder / (SHA + ARRIVING)).exists())
    assert sorted(f.name for f in folder.iterdir()) == [SHA]


def test_an_upload_that_ends_short_loses_its_input(spool: Spool, tmp_path: Path) -> None:
    """The reader stops with a clear error, and the scheduler is told which cluster
    lost an input."""
    failed: list[tuple[int, str]] = []
    spool.arrivals.on_failed = lambda cluster, why: failed.append((cluster, why))
    folder = spool.input_dir(5)
    cache = InputCache(tmp_path / "cache")
    with uploading(spool, DATA[:HALF]):
        spool.arrivals.name(5, folder, "part-0", SHA, len(DATA))
        thread, outcome = fetch_in_thread(spool, cache)
        thread.join(0.5)
        assert thread.is_alive()
    thread.join(10)
    (error,) = outcome
    assert isinstance(error, TransferError) and "cannot fetch input 'data.bin'" in str(error)
    wait_until(lambda: failed != [])
    assert failed == [
        (5, f"the upload of input {SHA[:12]} ended after {HALF} of {len(DATA)} bytes")
    ]
    assert list(folder.iterdir()) == [] and list(cache.root.iterdir()) == []


def test_naming_refuses_what_is_not_an_upload_of_the_input(spool: Spool) -> None:
    folder = spool.input_dir(5)
    name = spool.arrivals.name
    with uploading(spool, DATA[:HALF]):
        for upload, sha, size, why in [
            ("../part-0", SHA, len(DATA), "not an upload's name"),
            ("part-0", "../" + SHA[3:], len(DATA), "invalid sha256"),
            ("part-1", SHA, len(DATA), "was not found"),
            ("part-0", SHA, HALF - 1, f"has {HALF} bytes, expected {HALF - 1}"),
        ]:
            with pytest.raises(ArrivalError, match=why):
                name(5, folder, upload, sha, size)
        assert [f.name for f in folder.iterdir()] == ["part-0"]
    # An upload that has ended must have every byte.
    with pytest.raises(ArrivalError, match=f"has {HALF} bytes, expected {len(DATA)}"):
        name(5, folder, "part-0", SHA, len(DATA))
    # One that has them is renamed, with no marker.
    (folder / "part-1").write_bytes(DATA)
    name(5, folder, "part-1", SHA, len(DATA))
    assert (folder / SHA).read_bytes() == DATA and not (folder / (SHA + ARRIVING)).exists()
    # The same content again: the stored copy stays, the upload goes.
    (folder / "part-2").write_bytes(DATA)
    inode = (folder / SHA).stat().st_ino
    name(5, folder, "part-2", SHA, len(DATA))
    assert sorted(f.name for f in folder.iterdir()) == sorted(["part-0", SHA])
    assert (folder / SHA).stat().st_ino == inode


def test_a_restart_removes_the_inputs_whose_upload_it_cut(tmp_path: Path) -> None:
    folder = tmp_path / "spool" / "5" / "input"
    folder.mkdir(parents=True)
    (folder / SHA).write_bytes(DATA[:HALF])
    (folder / (SHA + ARRIVING)).touch()
    whole = hashlib.sha256(b"whole").hexdigest()
    (folder / whole).write_bytes(b"whole")
    Spool(tmp_path / "spool").stop()
    assert [f.name for f in folder.iterdir()] == [whole]


def test_a_worker_on_the_spool_links_an_input_once_it_has_arrived(tmp_path: Path) -> None:
    folder = tmp_path / "spool" / "5" / "input"
    folder.mkdir(parents=True)
    (folder / SHA).write_bytes(DATA[:HALF])
    (folder / (SHA + ARRIVING)).touch()
    link = SpoolLink(tmp_path / "spool", os.getuid(), os.getgid())
    found: list[dict[str, tuple[Path, int]]] = []
    thread = threading.Thread(target=lambda: found.append(link.inputs(5, [ITEM])))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()
    with open(folder / SHA, "ab") as f:
        f.write(DATA[HALF:])
    (folder / (SHA + ARRIVING)).unlink()
    thread.join(5)
    assert found == [{"data.bin": (folder / SHA, (folder / SHA).stat().st_ino)}]


def test_a_plain_upload_is_never_taken_for_an_arriving_one(spool: Spool) -> None:
    """Without a marker, a short input is refused by the worker as before, never
    waited for."""
    folder = spool.input_dir(5)
    folder.mkdir(parents=True)
    (folder / SHA).write_bytes(DATA[:HALF])
    cache = InputCache(spool.root.parent / "cache")
    short = f"ended after {HALF} of {len(DATA)} bytes"
    with (
        ftp_session(spool.grant_job(5, 0, HOST, ttl=60)) as ftp,
        pytest.raises(TransferError, match=short),
    ):
        cache.fetch(ftp, f"input/{SHA}", ITEM)


SCRIPT = b"#!/bin/sh\nsha256sum data.bin\n"
SCRIPT_SHA = hashlib.sha256(SCRIPT).hexdigest()
SPEC = p.JobSpec(
    executable="job.sh",
    inputs=[p.InputFile(name="job.sh", sha256=SCRIPT_SHA, size=len(SCRIPT)), ITEM],
)


def submit_while_uploading(me: Client, cut: bool) -> int:
    """Queue a job of a new cluster while its input uploads: half the input, then
    the rest (or, if ``cut``, nothing more); returns the cluster."""
    created = me.conn.request(p.NewCluster())
    with ftp_session(created.upload) as ftp:
        ftp.voidcmd("TYPE I")
        with ftp.transfercmd("STOR part-0") as conn:
            conn.sendall(DATA[:HALF])
            me.conn.request(p.SubmitJobs(cluster=created.cluster, submit_file="x", jobs=[SPEC],
                                         files={SCRIPT_SHA: p.pack_bytes(SCRIPT)},
                                         uploads={SHA: "part-0"}, last=False))  # fmt: skip
            # The worker takes the job and reads the input as it arrives.
            wait_until(lambda: me.cluster_jobs(created.cluster)[0].state == "running")
            if not cut:
                conn.sendall(DATA[HALF:])
        ftp.voidresp()
    return created.cluster


def test_a_job_runs_while_its_input_uploads(make_cluster) -> None:  # noqa: ANN001
    """With real processes, over FTP: the job starts before the upload ends and reads
    the whole input; an upload cut short removes the jobs queued with it."""
    cluster = make_cluster(workers=1, worker_args=("--always-ftp",))
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as me:
        whole = submit_while_uploading(me, cut=False)
        me.conn.request(p.SubmitJobs(cluster=whole, submit_file="x", jobs=[], first_proc=1))
        (job,) = me.wait([str(whole)], timeout=60)
        assert job.state == "completed" and job.exit_code == 0, job
        (fetched,) = me.fetch([job.id], dest=cluster.config.home / "out")
        assert fetched.stdout_text().split()[0] == SHA
        cut = submit_while_uploading(me, cut=True)
        wait_until(lambda: me.cluster_jobs(cut)[0].state == "removed")
    why = f"the upload of input {SHA[:12]} ended after {HALF} of {len(DATA)} bytes"
    assert f"cluster {cut}: {why}: 1 queued job(s) removed" in cluster.log("scheduler")


def test_a_small_input_still_arriving_is_not_sent_inline(spool: Spool) -> None:
    """A small input goes inside the run message only once it is whole (one over
    the client's inline budget is uploaded, and may still be arriving)."""
    small = b"x" * 1000
    item = p.InputFile(name="small", sha256=hashlib.sha256(small).hexdigest(), size=len(small))
    folder = spool.input_dir(5)
    folder.mkdir(parents=True)
    (folder / item.sha256).write_bytes(small[:500])
    assert spool.inline_input(5, item) is None
    (folder / item.sha256).write_bytes(small)
    assert spool.inline_input(5, item) == p.pack_bytes(small)
    assert spool.inline_input(5, ITEM) is None  # a large one never, whatever is there


def test_an_upload_that_ends_while_its_submit_is_checked_counts_as_whole(tmp_path: Path) -> None:
    """The size read before the upload ended is short, but the marker is gone and the
    file whole by the time it is looked at again: the input is accepted. A short
    file without a marker is still refused."""
    from scheduler.submission import SubmissionError, _check_inputs

    data = b"x" * 3000
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / digest).write_bytes(data)  # the upload has ended: no marker
    spec = p.JobSpec(executable="in", inputs=[p.InputFile(name="in", sha256=digest, size=3000)])
    _check_inputs("job 0", spec, tmp_path, {digest: 1000})  # 1000: read mid-upload
    marker = tmp_path / (digest + ARRIVING)
    (tmp_path / digest).write_bytes(data[:1000])
    marker.touch()
    _check_inputs("job 0", spec, tmp_path, {})  # still arriving
    marker.unlink()
    with pytest.raises(SubmissionError, match="has 1000 bytes, expected 3000"):
        _check_inputs("job 0", spec, tmp_path, {})
