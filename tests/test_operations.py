"""Running dfarm on real machines: IPv6, `dfarm doctor`, `dfarm backup`,
`dfarm install-service` and logging under systemd."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import TestCluster, wait_until, write

from control_node.local_cluster import worker_credential
from scheduler.node_setup import config_file


def dfarm(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "control_node.cli.dfarm", *map(str, args)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def big_job(folder: Path) -> Path:
    """A job whose input and output are too large to travel inside messages."""
    write(folder / "input.dat", "".join(f"{i:07d}\n" for i in range(20_000)))
    write(folder / "job.sh", "#!/bin/sh\ntac input.dat > output.dat\n", executable=True)
    return write(folder / "job.sub", "executable = job.sh\ntransfer_input_files = input.dat\n"
                 "transfer_output_files = output.dat\nqueue\n")  # fmt: skip


def test_ipv6_and_both_families_on_double_colon(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    """host = "::" serves IPv4 and IPv6 peers; clients and workers use [::1]:PORT."""
    cluster: TestCluster = make_cluster(workers=0, scheduler_args=("--host", "::"))
    port = cluster.access.port
    cluster.add_worker("w4")  # over IPv4: 127.0.0.1
    cluster.add_worker("w6", "--scheduler", f"[::1]:{port}")
    wait_until(lambda: cluster.log("scheduler").count("registered from") >= 2, what="workers")
    log = cluster.log("scheduler")
    assert "registered from 127.0.0.1:" in log and "registered from ::1:" in log
    env = cluster.env(DFARM_SCHEDULER=f"[::1]:{port}", DFARM_TOKEN=cluster.token)
    for proc_dir in ("a", "b"):
        folder = tmp_path / proc_dir
        big_job(folder)
        done = cluster.run("dsub", "--wait", "job.sub", cwd=folder, env=env)
        assert done.returncode == 0, done.stderr + cluster.log("scheduler")
    outputs = list(tmp_path.glob("*/*.0/output.dat"))
    assert len(outputs) == 2
    assert all(o.read_text().startswith("0019999\n") for o in outputs)
    doctor = dfarm("doctor", env=env)
    assert doctor.returncode == 0, doctor.stdout
    assert f"[::1]:{port}" in doctor.stdout and "received intact" in doctor.stdout


def test_doctor_says_what_to_fix(cluster: TestCluster, tmp_path: Path) -> None:
    port = cluster.access.port
    env = cluster.env(DFARM_SCHEDULER=f"127.0.0.1:{port}", DFARM_TOKEN=cluster.token)
    assert dfarm("doctor", env=env).returncode == 0

    user = cluster.token.split(":")[0]
    wrong = dfarm("doctor", env={**env, "DFARM_TOKEN": f"{user}:{'0' * 43}"})
    assert wrong.returncode == 1
    lines = wrong.stdout.splitlines()
    assert lines[1].startswith("[ OK ] 2. scheduler reachable")
    assert lines[2].startswith("[FAIL] 3. authentication: the scheduler refused: authentication")
    assert f"'dfarm user token {user}'" in lines[3]

    closed = dfarm("doctor", env={**env, "DFARM_SCHEDULER": "127.0.0.1:1"})
    assert closed.returncode == 1
    assert "[FAIL] 2. scheduler reachable: cannot connect to 127.0.0.1:1:" in closed.stdout
    assert "start the scheduler" in closed.stdout

    lost = dfarm("doctor", env={k: v for k, v in env.items() if k != "DFARM_HOME"} | {
        "DFARM_SCHEDULER": "", "DFARM_HOME": str(tmp_path / "nothing")})  # fmt: skip
    assert lost.returncode == 1 and "[FAIL] 1. scheduler address: no scheduler found" in lost.stdout

    secret = write(tmp_path / "wrong.secret", "00" * 32 + "\n")
    secret.chmod(0o600)
    worker = dfarm("doctor", "--worker", "--scheduler", f"127.0.0.1:{port}", "--secret-file",
                   secret, env=env)  # fmt: skip
    assert worker.returncode == 1
    assert "[FAIL] 3. authentication: the scheduler refused: authentication failed: wrong " \
           "worker credential" in worker.stdout  # fmt: skip
    assert f"the pool secret in {secret} is not the scheduler's" in worker.stdout
    w1 = worker_credential(cluster.home, "w1")
    credential = dfarm("doctor", "--worker", "--scheduler", f"127.0.0.1:{port}",
                       "--credential-file", w1, env=env)  # fmt: skip
    assert credential.returncode == 0, credential.stdout
    assert "worker w1's credential" in credential.stdout
    good = dfarm("doctor", "--worker", "--scheduler", f"127.0.0.1:{port}", "--secret-file",
                 cluster.config.secret_path, env=env)  # fmt: skip
    assert good.returncode == 0, good.stdout
    # On the scheduler node, a worker check finds the scheduler through access.json.
    here = dfarm("doctor", "--worker", "--secret-file", cluster.config.secret_path,
                 env=cluster.env())  # fmt: skip
    assert here.returncode == 0, here.stdout
    assert f"(file {cluster.config.access_path})" in here.stdout
    for out in (wrong, closed, lost, worker, credential, good, here):
        assert "Traceback" not in out.stdout + out.stderr


def test_backup_while_the_scheduler_runs(cluster: TestCluster, tmp_path: Path) -> None:
    big_job(tmp_path)
    assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 0
    # Keep the scheduler writing while the copy is taken.
    more = subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dsub", "job.sub"], cwd=tmp_path,
        env=cluster.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    copy = tmp_path / "backup" / "dfarm.db"
    copy.parent.mkdir()
    out = dfarm("backup", copy, "--home", cluster.config.home, env=cluster.env())
    more.wait(60)
    assert out.returncode == 0, out.stderr
    assert copy.stat().st_mode & 0o777 == 0o600
    db = sqlite3.connect(copy)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        states = db.execute("SELECT state FROM jobs WHERE cluster = 1").fetchall()
        assert states == [("completed",)]
    finally:
        db.close()
    missing = dfarm("backup", tmp_path / "x.db", "--home", tmp_path / "none")
    assert missing.returncode == 1 and "no scheduler database at" in missing.stderr


def test_install_service_units(tmp_path: Path) -> None:
    for node in ("scheduler", "worker"):
        out = dfarm("install-service", node, "--dry-run", "--config", tmp_path / f"{node}.toml")
        assert out.returncode == 0, out.stderr
        text = out.stdout
        for line in ("User=dfarm", "Restart=on-failure", "KillSignal=SIGTERM", "KillMode=mixed",
                     f"StateDirectory=dfarm{'/worker' if node == 'worker' else ''}"):  # fmt: skip
            assert f"\n{line}\n" in text, line
        assert f" {node} --config {tmp_path / f'{node}.toml'}\n" in text
    assert "TimeoutStopSec=330" in out.stdout  # the worker's grace and a margin
    units = tmp_path / "units"
    config = tmp_path / "etc" / "worker.toml"
    out = dfarm("install-service", "worker", "--unit-dir", units, "--config", config,
                "--no-create-user")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (units / "dfarm-worker.service").read_text().startswith("# Written by")
    from worker_node.__main__ import build_parser

    args, sources = config_file.load(build_parser(), ["--config", str(config)], "worker", {})
    assert args.work_dir == Path("/var/lib/dfarm/worker") and sources["work_dir"].kind == "file"


def test_logs_go_to_journald_under_systemd(tmp_path: Path) -> None:
    """Started by systemd (JOURNAL_STREAM set), the scheduler logs to stderr only,
    without timestamps (journald adds them); otherwise also to HOME/scheduler.log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
    for journald in (True, False):
        home = tmp_path / f"home-{journald}"
        run_env = {**env, "JOURNAL_STREAM": "8:1234"} if journald else env
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "--home", str(home), "--host", "127.0.0.1",
             "--port", "0"], env=run_env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_until(lambda home=home: (home / "access.json").exists(), what="the scheduler")
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
        first = stderr.splitlines()[0]
        assert (home / "scheduler.log").exists() is not journald
        if journald:
            assert first.startswith("INFO scheduler"), first
        else:
            assert first[:4].isdigit(), first  # a timestamp
            assert "scheduler listening" in (home / "scheduler.log").read_text()
        assert "Traceback" not in stderr
    assert json.loads((tmp_path / "home-True" / "access.json").read_text())["port"] > 0


def test_passive_mode_announces_the_masquerade_address_and_uses_the_range(
    tmp_path: Path,
) -> None:
    """What a firewall and a NAT router need: passive ports from the configured range,
    and the public address announced in PASV replies (and named in grants)."""
    import ftplib
    import re
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from scheduler.staging import Spool

    ports = range(47310, 47320)
    spool = Spool(tmp_path / "spool", "127.0.0.1", 0, ports, "203.0.113.9")
    spool.start()
    try:
        grant, directory = spool.grant_probe("203.0.113.9")
        assert grant.host == "203.0.113.9"
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", spool.port, timeout=10)
        ftp.login(grant.user, grant.password)
        reply = ftp.sendcmd("PASV")
        numbers = re.search(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", reply).groups()
        assert ".".join(numbers[:4]) == "203.0.113.9"
        assert int(numbers[4]) * 256 + int(numbers[5]) in ports
        # The probe directory is the grant's only writable place.
        ftp.cwd(directory)
        assert ftp.nlst() == []
        ftp.quit()
    finally:
        spool.stop()


def test_doctor_fails_on_clocks_apart() -> None:
    """The clock step compares the scheduler's time in its welcome with the middle of
    the exchange (a unit test: clocks cannot be set apart on one machine)."""
    import argparse

    from control_node.doctor import Doctor, Failed
    from scheduler import protocol as p

    lines: list[str] = []
    doctor = Doctor(argparse.Namespace(timeout=1.0), lines.append)
    now = 1_800_000_000.0
    doctor._sent, doctor._received = now, now + 0.2
    doctor.state.welcome = p.Welcome(digest="", server_name="s", server_time=now + 0.1 + 7.5)
    try:
        doctor.clock()
    except Failed as exc:
        assert str(exc) == "the scheduler's clock is +7.5 s from this host's"
        assert "NTP" in exc.fix
    else:
        raise AssertionError("a 7.5 s offset passed")
    doctor.state.welcome = p.Welcome(digest="", server_name="s", server_time=now + 0.1 - 0.4)
    assert doctor.clock() == "offset -400 ms"
