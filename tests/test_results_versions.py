"""The version of each large result file hashed, kept with its hash in the database:
a file still of that version is copied in place without hashing it again, after a
restart of the scheduler too; any change to it makes the copy hashed."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import TestCluster, write
from test_fetch_local import HOST, JOB, SUBMIT, exchange, put, tree
from test_results_file import connect

from control_node import fetch_local
from control_node.connection import DfarmError
from scheduler import database as database_module
from scheduler import result_hashes
from scheduler.result_hashes import SETTLE_NS, FileHash, FileVersion, hash_results
from scheduler.schema import MIGRATIONS, RESULT_HASH_VERSIONS
from scheduler.staging import Spool
from scheduler.store import Store
from scheduler.transport.local_reads import proof


def test_hashing_records_the_version_read(tmp_path: Path) -> None:
    job_dir = tmp_path / "7" / "0"
    (job_dir / "outputs").mkdir(parents=True)
    (job_dir / "stdout").write_bytes(b"out")
    (job_dir / "outputs" / "big.bin").write_bytes(b"big" * 1000)
    found = hash_results(job_dir)
    assert sorted(found) == ["outputs/big.bin", "stdout"]
    for name, hashed in found.items():
        assert hashed.size == (job_dir / name).stat().st_size
        assert hashed.version == FileVersion.of((job_dir / name).stat())
        # Just written, but hashed only once a later write would change its times.
        assert time.time_ns() - hashed.version.ctime_ns >= SETTLE_NS


def test_a_file_changed_ahead_of_the_clock_gets_no_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stdout").write_bytes(b"out")
    monkeypatch.setattr(result_hashes.time, "time_ns", lambda: 0)
    assert hash_results(tmp_path) == {"stdout": FileHash(hashlib.sha256(b"out").hexdigest(), 3)}


def test_a_database_of_the_previous_schema_keeps_its_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashes recorded before versions were have none: those files are hashed when
    read; hashes recorded from then on keep theirs."""
    db_path = tmp_path / "dfarm.db"
    before = MIGRATIONS[: MIGRATIONS.index(RESULT_HASH_VERSIONS)]
    with monkeypatch.context() as patch:
        patch.setattr(database_module, "MIGRATIONS", before)
        Store(db_path).close()
    with closing(sqlite3.connect(db_path)) as db, db:
        db.execute(
            "INSERT INTO result_hashes (cluster, proc, name, sha256, size) VALUES (3, 0, ?, ?, 5)",
            ("outputs/a", "ab" * 32),
        )
    store = Store(db_path)  # migrates
    try:
        assert store.results.hashes(3, 0) == {"outputs/a": ("ab" * 32, 5)}
        assert store.results.hashes_of([(3, 0)]) == {(3, 0): {"outputs/a": ("ab" * 32, 5)}}
        assert store.results.versions_of([(3, 0)]) == []
        version = FileVersion(device=66, inode=1 << 40, size=9, mtime_ns=17 * 10**17, ctime_ns=1)
        store.results.save_hashes(4, 1, {"outputs/b": FileHash("cd" * 32, 9, version),
                                         "outputs/c": FileHash("ef" * 32, 2)})  # fmt: skip
        assert store.results.hashes(4, 1) == {"outputs/b": ("cd" * 32, 9),
                                              "outputs/c": ("ef" * 32, 2)}  # fmt: skip
        assert store.results.versions_of([(3, 0), (4, 1)]) == [(version, "cd" * 32)]
    finally:
        store.close()


def _ask(grant: Any, path: str) -> Callable[[str], dict[str, Any]]:
    return lambda nonce: {"user": grant.user, "proof": proof(grant.password, nonce),
                          "paths": [path]}  # fmt: skip


def test_any_change_to_a_file_ends_what_its_version_vouched_for(spool: Spool) -> None:
    name = spool.local_reads.name
    assert name is not None

    def another_inode(path: Path) -> None:
        shutil.copy(path, path.with_name("x"))
        os.replace(path.with_name("x"), path)

    changes: dict[str, Callable[[Path], object]] = {
        "content, same size": lambda path: path.write_bytes(b"DATA"),
        "size": lambda path: path.write_bytes(b"data and more"),
        "mtime": lambda path: os.utime(path, ns=(0, path.stat().st_mtime_ns + 1)),
        "ctime only": lambda path: path.chmod(0o640),
        "inode": another_inode,
    }
    for proc, change in enumerate(changes.values()):
        sha = put(spool, 7, proc, b"data")
        path = spool.job_dir(7, proc) / "outputs" / "big.bin"
        spool.local_reads.vouch([(FileVersion.of(path.stat()), sha)])
        grant = spool.grant_fetch([(7, proc)], HOST, owners=("someone",))
        asked = _ask(grant, f"7/{proc}/outputs/big.bin")
        assert exchange(name, asked)[0]["verified"] == [sha]
        change(path)
        assert exchange(name, asked)[0]["verified"] == [None], list(changes)[proc]


def test_after_a_restart_an_unchanged_file_is_not_hashed_a_changed_one_is(
    cluster: TestCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "job.sh", JOB, executable=True)
    write(tmp_path / "job.sub", SUBMIT.replace("queue 4", "queue 2"))
    with connect(cluster) as client:
        submitted = client.submit(tmp_path / "job.sub", cwd=str(tmp_path))
        submitted.wait(timeout=120)
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait()
    cluster.start_scheduler()
    hashed: list[int] = []
    sha256 = fetch_local._sha256

    def counted_hash(fd: int, size: int) -> str:
        hashed.append(size)
        return sha256(fd, size)

    monkeypatch.setattr(fetch_local, "_sha256", counted_hash)
    spooled = [cluster.config.spool_dir / str(submitted.id) / str(proc) / "outputs" / "big.bin"
               for proc in (0, 1)]  # fmt: skip
    with connect(cluster) as client:
        client.fetch([str(submitted.id)], dest=tmp_path / "first", per_job=False)
        assert hashed == []  # each still the version hashed when it arrived
        # Touched, the same bytes: hashed, and fetched as before.
        os.utime(spooled[0])
        client.fetch([str(submitted.id)], dest=tmp_path / "touched", per_job=False)
        assert hashed == [spooled[0].stat().st_size]
        # Another content of the same size: hashed, and told.
        with open(spooled[1], "r+b") as f:
            f.write(b"X")
        with pytest.raises(DfarmError, match="big.bin is damaged in the spool"):
            client.fetch([str(submitted.id)], dest=tmp_path / "changed", per_job=False)
    assert tree(tmp_path / "first") == tree(tmp_path / "touched")
    assert len([name for name in tree(tmp_path / "first") if name.endswith("big.bin")]) == 2
