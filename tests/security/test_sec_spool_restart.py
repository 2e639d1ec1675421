"""A scheduler killed (SIGKILL) in the middle of a large upload leaves nothing of it:
at its restart the partial file goes, and so does the cluster it was for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import COMMAND_TIMEOUT, wait_until, write

from control_node.connection import Connection, Endpoint
from scheduler import protocol as p
from scheduler.transport.ftp import ftp_session

MIB = 1 << 20


def _kill(cluster) -> None:  # noqa: ANN001
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait(timeout=30)


def _files(spool: Path) -> list[str]:
    return sorted(
        str(f.relative_to(spool)) for f in spool.rglob("*") if f.is_file() and f.name != ".identity"
    )


def test_an_upload_cut_by_sigkill_is_removed_at_the_restart(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    spool = cluster.config.spool_dir
    with Connection(Endpoint("127.0.0.1", cluster.access.port, cluster.token)) as conn:
        created = conn.request(p.NewCluster())
        partial = spool / str(created.cluster) / "input" / "part-0"
        with ftp_session(created.upload) as ftp:
            ftp.voidcmd("TYPE I")
            data = ftp.transfercmd("STOR part-0")
            block = os.urandom(MIB)
            for _ in range(8):
                data.sendall(block)
            wait_until(lambda: partial.exists() and partial.stat().st_size >= 8 * MIB)
            _kill(cluster)
            data.close()
    assert partial.exists()  # what the killed scheduler left
    cluster.start_scheduler()
    assert _files(spool) == []
    assert not (spool / str(created.cluster)).exists()
    assert "removed 1 input(s) whose upload a restart interrupted" in cluster.log("scheduler")


def test_a_submission_cut_by_sigkill_mid_upload_leaves_nothing(
    make_cluster, tmp_path: Path
) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    spool = cluster.config.spool_dir
    # A large input (sparse here, a real file to the client): its jobs are queued
    # while it uploads, naming it.
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(1 << 30)
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_input_files = big.bin\nqueue 2\n")
    dsub = subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dsub", "job.sub"],
        cwd=tmp_path,
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        inputs = spool / "1" / "input"
        wait_until(
            lambda: (
                any(f.stat().st_size > 64 * MIB for f in inputs.glob("*"))
                or dsub.poll() is not None
            ),
            timeout=COMMAND_TIMEOUT,
            what="the upload to be well under way",
        )
        assert dsub.poll() is None, dsub.communicate()
        _kill(cluster)
        _, err = dsub.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        if dsub.poll() is None:
            dsub.kill()
            dsub.wait()
    assert dsub.returncode != 0 and "Traceback" not in err, err
    assert _files(spool) != []  # what the killed scheduler left
    cluster.start_scheduler()
    assert _files(spool) == []
    out = cluster.run("dq", "--json", "--all")
    assert json.loads(out.stdout) == []
    history = cluster.run("dhistory", "--json")
    states = {j["state"] for j in json.loads(history.stdout)}
    assert states <= {"removed"}, history.stdout


def test_a_client_killed_mid_upload_leaves_nothing(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    # The scheduler lives on: the partial upload goes with its cluster, abandoned
    # (jobs queued) or expired (only reserved), without a restart.
    cluster = make_cluster(workers=0, scheduler_args=("--reservation-ttl", "5"))
    spool = cluster.config.spool_dir
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(1 << 30)
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_input_files = big.bin\nqueue 2\n")
    dsub = subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dsub", "job.sub"],
        cwd=tmp_path,
        env=cluster.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        inputs = spool / "1" / "input"
        wait_until(
            lambda: (
                any(f.stat().st_size > 64 * MIB for f in inputs.glob("*"))
                or dsub.poll() is not None
            ),
            timeout=COMMAND_TIMEOUT,
            what="the upload to be well under way",
        )
        assert dsub.poll() is None
    finally:
        dsub.kill()
        dsub.wait()
    wait_until(lambda: _files(spool) == [], what="the partial upload's removal")
    out = cluster.run("dq", "--json", "--all")
    assert json.loads(out.stdout) == []
