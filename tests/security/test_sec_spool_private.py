"""The scheduler's home is private to its account: a job running as another account on
the scheduler's machine reads none of it, and a home others can read is fixed (or
refused) at the start."""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs a worker running as root")

#: What the job tries to read, relative to the scheduler's home.
TARGETS = ["dfarm.db", "dfarm.db-wal", "worker.secret", "access.json", "logs/scheduler.log"]


def _modes(home: Path) -> list[str]:
    """The paths of ``home`` (but ``workers/``) that other accounts could reach."""
    found = []
    for folder, dirs, files in os.walk(home):
        dirs[:] = [d for d in dirs if not (Path(folder) == home and d == "workers")]
        if Path(folder).name == "input":
            files = []  # linked inputs keep the worker's mode (behind 0700 folders)
        for name in [*dirs, *files]:
            mode = stat.S_IMODE(os.lstat(os.path.join(folder, name)).st_mode)
            if mode & 0o077:
                found.append(f"{os.path.join(folder, name)} {mode:o}")
    return found


def test_a_job_reads_nothing_of_the_schedulers_home(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    # The home lies in a folder every account may traverse (tmp_path is 1777).
    cluster = make_cluster(workers=1)
    home = cluster.config.home
    add = cluster.run("dfarm", "user", "add", "bob", "--home", home)
    bob = cluster.env(DFARM_TOKEN=add.stdout.strip().splitlines()[-1])
    # bob's cluster: a large input and a large result, both in the spool.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "secret.bin").write_bytes(b"bob-input-" * 20_000)
    write(tmp_path / "b" / "out.sh", "#!/bin/sh\nyes bob-result | head -c 200000\n", True)
    write(tmp_path / "b" / "out.sub", "executable = out.sh\n"
          "transfer_input_files = secret.bin\nqueue\n")  # fmt: skip
    out = cluster.run("dsub", "--wait", "--per-job", "out.sub", cwd=tmp_path / "b", env=bob)
    assert out.returncode == 0, out.stderr
    spool_files = [
        f for f in cluster.config.spool_dir.rglob("*") if f.is_file() and f.name != ".identity"
    ]
    assert any(f.parent.name == "input" for f in spool_files)
    assert any(f.name == "stdout" for f in spool_files)
    targets = [home / t for t in TARGETS] + spool_files
    assert all(t.exists() for t in targets), [t for t in targets if not t.exists()]
    # The attacker's job runs as nobody and tries every path.
    listing = tmp_path / "a" / "targets.txt"
    write(listing, "".join(f"{t}\n" for t in targets))
    write(tmp_path / "a" / "peek.sh", "#!/bin/sh\nid -u\nwhile read -r f; do\n"
          "  if cat \"$f\" > /dev/null 2>&1; then echo \"READ $f\"; cat \"$f\" | head -c 300;"
          " else echo \"DENIED $f\"; fi\ndone < targets.txt\n"
          f"ls {home} {cluster.config.spool_dir} 2>&1\nexit 0\n", True)  # fmt: skip
    write(tmp_path / "a" / "peek.sub", "executable = peek.sh\n"
          "transfer_input_files = targets.txt\nqueue\n")  # fmt: skip
    out = cluster.run("dsub", "--wait", "--per-job", "peek.sub", cwd=tmp_path / "a")
    assert out.returncode == 0, out.stderr
    got = tmp_path / "got"
    assert cluster.run("dfetch", "--per-job", "2.0", "--dest", got).returncode == 0
    seen = (got / "2.0" / "stdout").read_text()
    assert seen.splitlines()[0] == str(pwd.getpwnam("nobody").pw_uid)
    assert "READ" not in seen, seen
    assert seen.count("DENIED") == len(targets), seen
    assert "bob-" not in seen and "Permission denied" in seen
    # Every folder is 0700 and every file 0600 (the results too).
    assert _modes(home) == []


def _stop_scheduler(cluster) -> None:  # noqa: ANN001
    proc = cluster.processes["scheduler"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_the_start_makes_a_readable_home_private(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    home = cluster.config.home
    _stop_scheduler(cluster)
    # A clumsy operator: a home and a database others may read.
    home.chmod(0o755)
    cluster.config.db_path.chmod(0o644)
    (home / "spool").chmod(0o755)
    cluster.start_scheduler()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(cluster.config.db_path.stat().st_mode) == 0o600
    assert _modes(home) == []
    log = cluster.log("scheduler")
    assert "private to this account" in log and f"{cluster.config.db_path} (644)" in log


def test_a_readable_file_of_another_account_stops_the_start(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    home = cluster.config.home
    _stop_scheduler(cluster)
    stray = home / "notes.txt"
    stray.write_text("x")
    stray.chmod(0o644)
    os.chown(stray, 65534, 65534)
    out = subprocess.run(
        [sys.executable, "-m", "scheduler", "--home", str(home), "--port", "0", "--log-file", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert f"{stray} may be read by other accounts" in out.stderr
    assert "chown" in out.stderr and "Traceback" not in out.stderr


def test_dfarm_up_keeps_its_home_private(tmp_path: Path) -> None:
    from control_node.local_cluster import LocalCluster

    home = tmp_path / "up"
    cluster = LocalCluster(home, workers=1, slots=1)
    try:
        cluster.start()
        cluster.wait_for_workers(1)
        assert (home / "logs" / "scheduler.log").exists()
        assert _modes(home) == []
        # Its workers run jobs as other accounts: their folders are outside the home.
        assert not cluster.workers_dir.is_relative_to(home)
    finally:
        cluster.stop(grace=5)
