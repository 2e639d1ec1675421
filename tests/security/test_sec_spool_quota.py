"""The spool quota holds against clusters reserved and never submitted, and against
``dfarm doctor``'s FTP probes: an attacker sends the protocol's messages by hand and
uploads through the grants with a plain FTP client."""

from __future__ import annotations

import contextlib
import ftplib
import io
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import wait_until, write

from control_node.connection import Connection, Endpoint, RequestFailed
from scheduler import protocol as p
from scheduler.transport.ftp import ftp_session

KIB = 1024


def attacker(cluster, token: str | None = None) -> Connection:  # noqa: ANN001
    return Connection(Endpoint("127.0.0.1", cluster.access.port, token or cluster.token))


def upload(grant: p.FtpGrant, name: str, size: int, folder: str = "") -> str:
    """Store ``size`` bytes as ``name``; the server's reply (an error's text if refused)."""
    try:
        with ftp_session(grant, timeout=30) as ftp:
            if folder:
                ftp.cwd(folder)
            try:
                return ftp.storbinary(f"STOR {name}", io.BytesIO(os.urandom(size)))
            except OSError:  # the server closed the data channel: its reply says why
                return ftp.getresp()
    except (ftplib.Error, OSError, EOFError) as exc:
        return str(exc)


def spool_bytes(spool: Path) -> int:
    return sum(f.stat().st_size for f in spool.rglob("*") if f.is_file() and f.name != ".identity")


def test_reserved_clusters_count_against_the_quota(make_cluster) -> None:  # noqa: ANN001
    quota, limit = 2100 * KIB, 400 * KIB
    cluster = make_cluster(
        workers=0, scheduler_args=("--spool-quota", "2100K", "--upload-limit", "400K")
    )
    grants, refused = [], []
    with attacker(cluster) as conn:
        for _ in range(7):
            try:
                grants.append(conn.request(p.NewCluster()).upload)
            except RequestFailed as exc:
                refused.append(str(exc))
        # Each reservation holds its budget: five of 400 KiB, a sixth of what is left.
        assert len(grants) == 6 and len(refused) == 1, refused
        assert "spool quota exceeded" in refused[0]
        replies = [upload(g, "part-0", limit) for g in grants]
        # A second file through each grant: refused past its budget, as bytes arrive.
        replies += [upload(g, "part-1", limit) for g in grants]
        assert sum("Upload limit exceeded" in r for r in replies) >= len(grants)
        assert spool_bytes(cluster.config.spool_dir) <= quota, replies
        # More reservations, each used: the spool never holds more than the quota,
        # and once it is full no reservation is granted.
        for _ in range(20):
            try:
                grant = conn.request(p.NewCluster()).upload
            except RequestFailed as exc:
                assert "spool quota exceeded" in str(exc)
                break
            upload(grant, "part-0", 50 * KIB)
            assert spool_bytes(cluster.config.spool_dir) <= quota
        else:
            pytest.fail("reservations never stopped")


def test_parallel_uploads_share_their_grants_budget(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0, scheduler_args=("--spool-quota", "1M"))
    with attacker(cluster) as conn:
        grant = conn.request(p.NewCluster()).upload
        # Four sessions of one grant, each sending 600 KiB at once: the budget is one.
        with contextlib.ExitStack() as stack:
            sessions = [stack.enter_context(ftp_session(grant)) for _ in range(4)]
            channels = []
            for number, ftp in enumerate(sessions):
                ftp.voidcmd("TYPE I")
                channels.append(ftp.transfercmd(f"STOR part-{number}"))
            for _ in range(60):
                for channel in channels:
                    with contextlib.suppress(OSError):
                        channel.sendall(os.urandom(10 * KIB))
            for channel in channels:
                channel.close()
            replies = []
            for ftp in sessions:
                try:
                    replies.append(ftp.voidresp())
                except ftplib.Error as exc:
                    replies.append(str(exc))
        assert sum("Upload limit exceeded" in r for r in replies) >= 2, replies
        assert spool_bytes(cluster.config.spool_dir) <= 1 << 20


def _reserved(cluster) -> list[int]:  # noqa: ANN001
    with sqlite3.connect(f"file:{cluster.config.db_path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT id FROM clusters WHERE submitted IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.cluster = clusters.id)"
        ).fetchall()
    return [row[0] for row in rows]


def test_reservations_not_submitted_expire(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0, scheduler_args=("--reservation-ttl", "2"))
    spool = cluster.config.spool_dir
    with attacker(cluster) as conn:
        created = conn.request(p.NewCluster())
        assert upload(created.upload, "part-0", 100 * KIB).startswith("226")
        assert (spool / str(created.cluster) / "input" / "part-0").exists()
        wait_until(lambda: not (spool / str(created.cluster)).exists(), what="the expiry")
        assert _reserved(cluster) == []
        assert "reserved cluster 1 removed: it was not submitted in time" in cluster.log(
            "scheduler"
        )
        assert "530" in upload(created.upload, "part-1", 10)  # its grant is gone
        with pytest.raises(Exception, match="not reserved by you"):
            conn.request(p.SubmitJobs(cluster=created.cluster, submit_file="x.sub", jobs=[]))
    # A submission within the TTL is not touched.
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\nqueue\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    # Reservations left by a scheduler that died (their grants died with it) are
    # removed at its restart, old or not.
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait(timeout=30)
    left = []
    with sqlite3.connect(cluster.config.db_path) as db:
        for created in (time.time() - 3600, time.time()):
            left.append(
                db.execute(
                    "INSERT INTO clusters (owner, created) VALUES ('root', ?)", (created,)
                ).lastrowid
            )
    for number in left:
        write(spool / str(number) / "input" / "part-0", "x" * 1000)
    cluster.start_scheduler()
    assert _reserved(cluster) == []
    assert not any((spool / str(number)).exists() for number in left)
    assert (spool / "2").exists()  # the submitted cluster stays


def add_token(cluster, name: str) -> str:  # noqa: ANN001
    add = cluster.run("dfarm", "user", "add", name, "--home", cluster.config.home)
    assert add.returncode == 0, add.stderr
    return add.stdout.strip().splitlines()[-1]


def test_probes_are_small_counted_and_removed(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1, scheduler_args=("--spool-quota", "4M"))
    probes = cluster.config.spool_dir / "probe"
    # root keeps 4.3 MB of results: over its quota.
    write(tmp_path / "big.sh", "#!/bin/sh\nhead -c 4300000 /dev/zero\n", True)
    write(tmp_path / "big.sub", "executable = big.sh\nqueue\n")
    assert cluster.run("dsub", "--wait", "big.sub", cwd=tmp_path).returncode == 0
    with attacker(cluster) as conn:
        for _ in range(10):
            with pytest.raises(RequestFailed, match="spool quota exceeded"):
                conn.request(p.ProbeFtp())
    assert not any(probes.rglob("*"))
    # bob is under his quota: his probes take a small file each, no more; a
    # connection holds two at most, and they count (each at its whole budget)
    # until they end.
    bob = add_token(cluster, "bob")
    with attacker(cluster, bob) as conn:
        replies = []
        for _ in range(10):
            granted = conn.request(p.ProbeFtp())
            assert isinstance(granted, p.ProbeGranted)
            replies.append(upload(granted.ftp, "probe.bin", 4 << 20, granted.directory))
            assert len(list(probes.iterdir())) <= 2
        assert all("Upload limit exceeded" in r for r in replies), replies
        # A small probe file goes through.
        granted = conn.request(p.ProbeFtp())
        assert upload(granted.ftp, "probe.bin", 200 * KIB, granted.directory).startswith("226")
        assert spool_bytes(probes) == 200 * KIB
    # The connection closed: its probes are over and removed.
    wait_until(lambda: not any(probes.iterdir()), what="the probes' removal")
    # Sixteen probes held on eight connections fill bob's 4 MiB quota.
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(attacker(cluster, bob)) for _ in range(9)]
        for conn in conns[:8]:
            conn.request(p.ProbeFtp())
            conn.request(p.ProbeFtp())
        with pytest.raises(RequestFailed, match="spool quota exceeded"):
            conns[8].request(p.ProbeFtp())
