"""The launcher and the commands as a new user meets them: `dfarm up`, `dfarm user`,
and clear errors (never a traceback) when something is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import TestCluster, wait_until, write

from control_node.connection import AuthError, find_endpoint
from control_node.results_file import read_results
from scheduler import protocol as p


def dfarm(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):  # noqa: ANN201
    return subprocess.run(
        [sys.executable, "-m", "control_node.cli.dfarm", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
    env["DFARM_HOME"] = str(home)
    return env


def processes_using(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(home) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_dfarm_up_runs_jobs_and_stops_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = clean_env(home)

    def workers() -> list[dict]:
        out = subprocess.run([sys.executable, "-m", "control_node.cli.dstat", "--json"],
                             env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    command = [sys.executable, "-m", "control_node.cli.dfarm", "up", "--workers", "2"]
    command += ["--slots", "1"]
    # Twice in the same home (its logs appended to): "up" means the workers are there.
    for run in range(2):
        up = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            assert up.stdout is not None and "dfarm is up" in up.stdout.readline()
            assert len(workers()) == 2
            write(tmp_path / "hi.sh", "#!/bin/sh\necho hi from $DFARM_JOB_ID\n", True)
            write(tmp_path / "hi.sub", "executable = hi.sh\n")
            done = subprocess.run(
                [sys.executable, "-m", "control_node.cli.dsub", "--wait", "hi.sub"],
                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0 and "warning" not in done.stderr, done.stdout + done.stderr
            job = f"{run + 1}.0"
            # Its output is in the cluster's results file: a quiet job gets no folder.
            record = read_results(tmp_path / f"{run + 1}.results.jsonl")[0]
            assert record.stdout == f"hi from {job}\n" and not (tmp_path / job).exists()
            assert oct((home / "access.json").stat().st_mode & 0o777) == "0o600"
        finally:
            up.send_signal(signal.SIGTERM)
            out, _ = up.communicate(timeout=30)
        assert up.returncode == 0, out
        assert "dfarm stopped." in out
        wait_until(lambda: not processes_using(home), timeout=10, what="every process to exit")


def test_user_add_list_token_remove(cluster: TestCluster, tmp_path: Path) -> None:
    home = cluster.config.home
    added = dfarm("user", "--home", str(home), "add", "bob", "--email", "bob@example.org")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("bob:")
    again = dfarm("user", "--home", str(home), "add", "bob")
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = dfarm("user", "--home", str(home), "add", "Bob Smith")
    assert bad.returncode == 1 and "invalid user name" in bad.stderr
    after = dfarm("user", "add", "carol", "--home", str(home))  # --home after the action
    assert after.returncode == 0 and after.stdout.strip().splitlines()[-1].startswith("carol:")
    listing = dfarm("user", "--home", str(home), "list")
    assert "bob" in listing.stdout and "bob@example.org" in listing.stdout

    # bob sees only his own jobs: the local user's job is not in his queue.
    write(tmp_path / "s.sh", "#!/bin/sh\nsleep 30\n", True)
    write(tmp_path / "s.sub", "executable = s.sh\nqueue\n")
    assert cluster.run("dsub", "s.sub", cwd=tmp_path).returncode == 0
    bob = cluster.env(DFARM_TOKEN=token)
    assert json.loads(cluster.run("dq", "--json", env=bob).stdout) == []
    others = json.loads(cluster.run("dq", "--json", "--allusers", env=bob).stdout)
    assert [j["id"] for j in others] == ["1.0"] and others[0]["arguments"] == []
    refused = cluster.run("dfetch", "1.0", env=bob, cwd=tmp_path)
    assert refused.returncode == 1 and "no job of yours" in refused.stderr
    # Watching another user's cluster yields nothing of it.
    from control_node import Client
    from scheduler import protocol as p

    address = f"127.0.0.1:{cluster.access.port}"
    with Client(scheduler=address, token=token) as spy, Client(address, cluster.token) as me:
        for client in (spy, me):
            client.conn.request(p.Subscribe(clusters=[2]))  # the next cluster
        write(tmp_path / "t.sub", "executable = s.sh\nqueue\n")
        assert cluster.run("dsub", "-q", "t.sub", cwd=tmp_path).stdout.strip() == "2"
        assert me.conn.next_update(10) is not None  # the owner hears of it
        assert spy.conn.next_update(1) is None  # the other user does not
        assert spy.wait(["2"], timeout=10) == []  # and has nothing of it to wait for

    new = dfarm("user", "--home", str(home), "token", "bob")
    assert new.returncode == 0
    stale = cluster.run("dq", env=bob)
    assert stale.returncode == 1 and "authentication failed" in stale.stderr
    assert cluster.run("dq", env=cluster.env(DFARM_TOKEN=new.stdout.strip())).returncode == 0
    assert dfarm("user", "--home", str(home), "remove", "bob").returncode == 0
    assert "bob" not in dfarm("user", "--home", str(home), "list").stdout


def test_clear_errors_without_tracebacks(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "nothing-here")
    for command in ("dq", "dstat"):
        result = subprocess.run([sys.executable, "-m", f"control_node.cli.{command}"],
                                env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
        assert result.returncode == 1
        assert "no scheduler found" in result.stderr and "Traceback" not in result.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "control_node.cli.dq", "--scheduler", "127.0.0.1:1"],
        env={**env, "DFARM_TOKEN": "me:x"}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert unreachable.returncode == 1 and "cannot reach the scheduler" in unreachable.stderr
    missing = dfarm("worker", "--scheduler", "nohostport", "--secret-file", "/nonexistent")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert dfarm("frobnicate").returncode == 2
    no_db = dfarm("user", "--home", str(tmp_path / "none"), "list")
    assert no_db.returncode == 1 and "no scheduler state" in no_db.stderr
    submit = subprocess.run([sys.executable, "-m", "control_node.cli.dsub", "missing.sub"],
                            env={**env, "DFARM_SCHEDULER": "127.0.0.1:1", "DFARM_TOKEN": "me:x"},
                            capture_output=True, text=True, timeout=30, cwd=tmp_path)  # fmt: skip
    assert submit.returncode == 1 and "Traceback" not in submit.stderr


def test_the_local_token_serves_while_the_record_has_none(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """The scheduler writes its access record without a token when it starts; until
    ``dfarm up`` adds the local user's, commands take it from ``local-user.token``."""
    for name in ("DFARM_SCHEDULER", "DFARM_TOKEN", "DFARM_TLS_FINGERPRINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DFARM_HOME", str(tmp_path))
    p.AccessRecord(host="127.0.0.1", port=7070).save(tmp_path / p.ACCESS_FILE)
    with pytest.raises(AuthError, match="no user token"):
        find_endpoint()
    (tmp_path / p.LOCAL_TOKEN_FILE).write_text("alice.secret\n")
    assert find_endpoint().token == "alice.secret"
    monkeypatch.setenv("DFARM_TOKEN", "bob.secret")  # a token given still wins
    assert find_endpoint().token == "bob.secret"
