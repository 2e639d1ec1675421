"""A stored result is checked against the SHA-256 recorded when it arrived: ``dfetch``
of a damaged or deleted result fails naming the file, never delivers it silently."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import write

from scheduler import database as database_module
from scheduler import schema
from scheduler.result_hashes import FileHash
from scheduler.store import Store


@pytest.mark.parametrize("route", ["link", "ftp"])
def test_dfetch_refuses_damaged_or_missing_results(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
    route: str,
) -> None:
    cluster = make_cluster(workers=1, worker_args=("--always-ftp",) if route == "ftp" else ())
    write(tmp_path / "job.sh", "#!/bin/sh\nyes out | head -c 200000\n"
          "yes big | head -c 300000 > big.out\n", True)  # fmt: skip
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_output_files = big.out\nqueue 3\n")
    assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 0
    spool = cluster.config.spool_dir / "1"
    # Results are the scheduler's alone, however they came (linked or over FTP).
    for path in [spool, *spool.rglob("*")]:
        if path.parent.name != "input":
            mode = path.stat().st_mode & 0o777
            assert mode == (0o700 if path.is_dir() else 0o600), f"{path} {mode:o}"
    # Untouched, the results come back whole.
    out = cluster.run("dfetch", "1.0", "--dest", tmp_path / "ok")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "ok" / "1.0" / "big.out").read_bytes() == b"big\n" * 75000
    assert len((tmp_path / "ok" / "1.0" / "stdout").read_bytes()) == 200000
    # Damaged in the spool (same size), and deleted.
    with open(spool / "1" / "outputs" / "big.out", "r+b") as f:
        f.seek(1000)
        f.write(b"X")
    (spool / "2" / "stdout").unlink()
    got = tmp_path / "got"
    out = cluster.run("dfetch", "1.1", "--dest", got)
    assert out.returncode != 0
    assert "job 1.1: result file outputs/big.out is damaged in the spool" in out.stderr
    assert not (got / "1.1" / "big.out").exists()
    assert "Traceback" not in out.stderr
    out = cluster.run("dfetch", "1.2", "--dest", got)
    assert out.returncode != 0
    assert "job 1.2: result file stdout is missing from the spool" in out.stderr
    assert not (got / "1.2" / "stdout").exists()
    # Both at once, with the good one: the good one is written, the others named.
    out = cluster.run("dfetch", "1", "--dest", tmp_path / "all")
    assert out.returncode != 0
    assert "1.1: result file outputs/big.out is damaged" in out.stderr
    assert "1.2: result file stdout is missing" in out.stderr
    assert (tmp_path / "all" / "1.0" / "big.out").read_bytes() == b"big\n" * 75000


def test_the_hash_table_migration_keeps_what_was_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "dfarm.db"
    added = next(
        i for i, m in enumerate(schema.MIGRATIONS) if isinstance(m, str) and "result_hashes" in m
    )
    before = schema.MIGRATIONS[:added]
    monkeypatch.setattr(database_module, "MIGRATIONS", before)
    old = Store(db)
    old.accounts.add_user("alice")
    cluster = old.clusters.reserve_cluster("alice", 1000.0)
    old.results.save_files(cluster, 0, {"stdout": b"kept"})
    old.close()
    monkeypatch.setattr(database_module, "MIGRATIONS", schema.MIGRATIONS)
    new = Store(db)
    try:
        assert new.results.files(cluster, 0) == {"stdout": b"kept"}
        assert new.accounts.user_verifier("alice") is not None
        assert new.clusters.cluster_owner(cluster) == ("alice", False)
        new.results.save_hashes(cluster, 0, {"outputs/a": FileHash("ab" * 32, 5)})
        assert new.results.hashes(cluster, 0) == {"outputs/a": ("ab" * 32, 5)}
    finally:
        new.close()
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)


def test_the_dashboard_refuses_damaged_or_missing_results(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    from webtools import Browserless, web_cluster

    cluster, url = web_cluster(make_cluster, workers=1)
    write(tmp_path / "job.sh", "#!/bin/sh\nyes out | head -c 200000\n"
          "yes big | head -c 300000 > big.out\n", True)  # fmt: skip
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_output_files = big.out\nqueue\n")
    assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 0
    browser = Browserless(url)
    browser.login(cluster.token)
    assert browser.get("/jobs/1.0/files/big.out").body == b"big\n" * 75000
    spool = cluster.config.spool_dir / "1" / "0"
    with open(spool / "outputs" / "big.out", "r+b") as f:
        f.write(b"X")
    (spool / "stdout").unlink()
    damaged = browser.get("/jobs/1.0/files/big.out")
    assert damaged.status >= 400 and b"big\nbig" not in damaged.body
    assert "result file outputs/big.out of job 1.0 is damaged" in damaged.text
    missing = browser.get("/jobs/1.0/stdout")
    assert missing.status >= 400
    assert "result file stdout of job 1.0 is missing" in missing.text
