"""A worker on the spool's file system links files with it: when it may, and how."""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.protocol import SPOOL_IDENTITY_FILE, InputFile, SpoolShare
from worker_node.spool_link import SpoolLink
from worker_node.transfer import TransferError

# pyftpdlib imports asyncore/asynchat, deprecated in Python 3.11: not ours to fix.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from scheduler.staging import Spool


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    spool = Spool(tmp_path / "spool")  # not started: its folder and identity are enough
    yield spool
    spool.stop()


def test_a_worker_that_finds_the_identity_links(spool: Spool, tmp_path: Path) -> None:
    found = SpoolLink.find(spool.share, tmp_path)
    assert found is not None and found.root == spool.root
    assert (spool.root / SPOOL_IDENTITY_FILE).stat().st_mode & 0o777 == 0o600


def test_no_offer_or_another_identity_means_ftp(spool: Spool, tmp_path: Path) -> None:
    assert SpoolLink.find(None, tmp_path) is None
    # The same path on another machine holds another secret.
    other = SpoolShare(path=spool.share.path, identity="0" * 32)
    assert SpoolLink.find(other, tmp_path) is None
    assert SpoolLink.find(SpoolShare(path="/nonexistent", identity="x"), tmp_path) is None


def test_an_identity_others_can_read_is_not_trusted(spool: Spool, tmp_path: Path) -> None:
    (spool.root / SPOOL_IDENTITY_FILE).chmod(0o644)
    assert SpoolLink.find(spool.share, tmp_path) is None


def test_inputs_are_linked_only_when_complete_plain_and_the_spools(
    spool: Spool, tmp_path: Path
) -> None:
    link = SpoolLink.find(spool.share, tmp_path)
    assert link is not None
    folder = spool.input_dir(7)
    folder.mkdir(parents=True)
    sha = hashlib.sha256(b"12345").hexdigest()
    (folder / sha).write_bytes(b"12345")
    (folder / ("b" * 64)).write_bytes(b"123")  # an upload cut short
    os.symlink("/etc/passwd", folder / ("c" * 64))
    items = [InputFile(name=n, sha256=n[0] * 64, size=5) for n in ("b.bin", "c.bin")]
    items.append(InputFile(name="a.bin", sha256=sha, size=5))
    items.append(InputFile(name="d.bin", sha256="d" * 64, size=5))  # not uploaded
    found = link.inputs(7, items)
    assert list(found) == ["a.bin"]
    assert found["a.bin"] == (folder / sha, (folder / sha).stat().st_ino)
    # Read-only and executable, as the cache's entries.
    assert (folder / sha).stat().st_mode & 0o777 == 0o555


def test_an_input_changed_in_the_spool_is_refused_by_name(spool: Spool, tmp_path: Path) -> None:
    link = SpoolLink.find(spool.share, tmp_path)
    assert link is not None
    folder = spool.input_dir(7)
    folder.mkdir(parents=True)
    sha = hashlib.sha256(b"12345").hexdigest()
    (folder / sha).write_bytes(b"12345")
    item = InputFile(name="a.bin", sha256=sha, size=5)
    assert list(link.inputs(7, [item])) == ["a.bin"]
    (folder / sha).chmod(0o644)
    (folder / sha).write_bytes(b"12346")  # same size, other content
    with pytest.raises(TransferError, match="input 'a.bin' does not match its hash"):
        link.inputs(7, [item])


def test_results_are_linked_when_the_jobs_own_else_copied(spool: Spool, tmp_path: Path) -> None:
    link = SpoolLink.find(spool.share, tmp_path)
    assert link is not None
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "own.bin").write_bytes(b"o" * 1000)
    (sandbox / "twice.bin").write_bytes(b"t" * 1000)
    os.link(sandbox / "twice.bin", tmp_path / "elsewhere.bin")  # a job's link out
    with (
        open(sandbox / "own.bin", "rb") as own,
        open(sandbox / "twice.bin", "rb") as twice,
        tempfile.TemporaryFile(dir=sandbox) as stdout,
    ):
        stdout.write(b"s" * 1000)
        link.put_results(7, 3, 1, [("outputs/own.bin", own), ("outputs/twice.bin", twice),
                                   ("stdout", stdout)])  # fmt: skip
    put = spool.attempt_dir(7, 3, 1)
    assert (put / "outputs" / "own.bin").stat().st_ino == (sandbox / "own.bin").stat().st_ino
    assert (put / "outputs" / "twice.bin").stat().st_ino != (sandbox / "twice.bin").stat().st_ino
    assert (put / "outputs" / "twice.bin").read_bytes() == b"t" * 1000
    assert (put / "stdout").read_bytes() == b"s" * 1000
    job = spool.job_dir(7, 3)
    for path in (job, put, *job.rglob("*")):
        st = path.lstat()
        assert st.st_uid == spool.root.stat().st_uid
        assert st.st_mode & 0o777 == (0o700 if path.is_dir() else 0o600)


def test_the_scheduler_takes_the_results_of_the_attempt_that_counts(spool: Spool) -> None:
    """A stale attempt (its worker was cut off while the job ran again elsewhere)
    puts its results beside those of the attempt that counts, never over them."""
    for attempt in (1, 2):
        folder = spool.attempt_dir(7, 3, attempt) / "outputs"
        folder.mkdir(parents=True)
        (folder / "out.txt").write_text(f"attempt {attempt}")
        (folder.parent / "stdout").write_text(f"stdout {attempt}")
    spool.take_attempt(7, 3, 2)
    spool.take_attempt(7, 3, 2)  # the result sent again after a reconnect
    spool.drop_attempt(7, 3, 1)
    job = spool.job_dir(7, 3)
    assert sorted(str(p.relative_to(job)) for p in job.rglob("*")) == [
        "outputs", "outputs/out.txt", "stdout"
    ]  # fmt: skip
    assert (job / "outputs" / "out.txt").read_text() == "attempt 2"
    assert (job / "stdout").read_text() == "stdout 2"
