"""A worker running as root never runs a job as root; jobs cannot read each other's
sandboxes (real worker processes, run as root here)."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs a worker running as root")


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def states(cluster: TestCluster, env: dict[str, str]) -> dict[str, str]:
    out = cluster.run("dq", "--json", "--all", env=env)
    return {j["id"]: j["state"] for j in json.loads(out.stdout)}


def test_jobs_run_as_their_owner_or_nobody_never_root(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1, slots=2)
    # A user with an account here (uid >= UID_MIN) runs as that account.
    users = [pw.pw_name for pw in pwd.getpwall() if 1000 <= pw.pw_uid < 65534]
    if not users:
        pytest.skip("no user account on this machine")
    user = users[0]
    add = cluster.run("dfarm", "user", "add", user, "--home", cluster.config.home)
    other = cluster.env(DFARM_TOKEN=add.stdout.strip().splitlines()[-1])
    gate = tmp_path / "gate"
    jobs_dir = cluster.workers_dir / "w1" / "jobs"
    # root's job (1.0): runs as nobody, keeps a secret in its sandbox, waits.
    write(tmp_path / "a" / "keep.sh", "#!/bin/sh\nid -u; stat -c '%a %u' .\n"
          "echo s3cr3t > mine.txt\n"
          f"while [ ! -e {gate} ]; do sleep 0.05; done\n", True)  # fmt: skip
    write(tmp_path / "a" / "keep.sub", "executable = keep.sh\nqueue\n")
    assert cluster.run("dsub", "keep.sub", cwd=tmp_path / "a").returncode == 0
    wait_until(lambda: list(jobs_dir.glob("1.0-1/mine.txt")), what="job 1.0's secret")
    # The other user's job (2.0): runs as their account, tries to read 1.0's sandbox.
    write(tmp_path / "b" / "peek.sh", "#!/bin/sh\nid -u\ncat \"$1/mine.txt\"\nls \"$1\"\n"
          "ls \"$(dirname \"$1\")\"\nexit 0\n", True)  # fmt: skip
    write(tmp_path / "b" / "peek.sub", f"executable = peek.sh\narguments = {jobs_dir}/1.0-1\n"
          "queue\n")  # fmt: skip
    assert (
        cluster.run(
            "dsub", "--wait", "--per-job", "peek.sub", cwd=tmp_path / "b", env=other
        ).returncode
        == 0
    )
    assert (
        cluster.run("dfetch", "--per-job", "2.0", "--dest", tmp_path / "got", env=other).returncode
        == 0
    )
    peek = tmp_path / "got" / "2.0"
    assert (peek / "stdout").read_text().split() == [str(uid(user))]
    assert (peek / "stderr").read_text().count("Permission denied") == 3
    gate.touch()
    wait_until(lambda: states(cluster, cluster.env()).get("1.0") == "completed")
    assert cluster.run("dfetch", "--per-job", "1.0", "--dest", tmp_path / "got").returncode == 0
    first = (tmp_path / "got" / "1.0" / "stdout").read_text().splitlines()
    assert first == [str(uid("nobody")), f"700 {uid('nobody')}"]


def test_system_accounts_are_never_used_for_a_namesake_user(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    cluster = make_cluster(workers=1)
    add = cluster.run("dfarm", "user", "add", "daemon", "--home", cluster.config.home)
    daemon = cluster.env(DFARM_TOKEN=add.stdout.strip().splitlines()[-1])
    write(tmp_path / "id.sh", "#!/bin/sh\nid -u\n", True)
    write(tmp_path / "id.sub", "executable = id.sh\nqueue\n")
    assert (
        cluster.run("dsub", "--wait", "--per-job", "id.sub", cwd=tmp_path, env=daemon).returncode
        == 0
    )
    assert (
        cluster.run("dfetch", "--per-job", "1.0", "--dest", tmp_path / "got", env=daemon).returncode
        == 0
    )
    assert (tmp_path / "got" / "1.0" / "stdout").read_text() == f"{uid('nobody')}\n"


@pytest.mark.parametrize(
    ("account", "refusal"),
    [("root", "is root: jobs never run as root"), ("no-such-account", "no such account")],
)
def test_run_as_must_be_an_unprivileged_account(
    make_cluster,  # noqa: ANN001
    account: str,
    refusal: str,
) -> None:
    cluster = make_cluster(workers=0)
    worker = cluster.add_worker("w1", "--run-as", account)
    cluster.expected_exits.add("w1")
    assert worker.wait(timeout=30) == 2
    assert refusal in cluster.log("w1")


def test_a_work_dir_jobs_cannot_reach_is_refused(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    worker = cluster.add_worker("w1", "--work-dir", str(private / "w1"))
    cluster.expected_exits.add("w1")
    assert worker.wait(timeout=30) == 2
    assert f"--work-dir {private / 'w1'}: jobs, run as other accounts, cannot reach it" in (
        cluster.log("w1")
    )


def test_slot_uids_isolate_jobs_of_users_without_accounts(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    base = 62000
    if any(base <= pw.pw_uid < base + 2 for pw in pwd.getpwall()):
        pytest.skip("uids 62000-62001 are taken here")
    cluster = make_cluster(workers=1, slots=2, worker_args=("--slot-uids", str(base)))
    gate = tmp_path / "gate"
    jobs_dir = cluster.workers_dir / "w1" / "jobs"
    # Both jobs are root's (no account to run as): each slot runs them as its own uid.
    write(tmp_path / "keep.sh", "#!/bin/sh\nid -u\necho s3cr3t > mine.txt\n"
          f"while [ ! -e {gate} ]; do sleep 0.05; done\n", True)  # fmt: skip
    write(tmp_path / "keep.sub", "executable = keep.sh\nqueue\n")
    assert cluster.run("dsub", "keep.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: list(jobs_dir.glob("1.0-1/mine.txt")), what="job 1.0's secret")
    write(tmp_path / "peek.sh", '#!/bin/sh\nid -u\ncat "$1/mine.txt"\nexit 0\n', True)
    write(tmp_path / "peek.sub", f"executable = peek.sh\narguments = {jobs_dir}/1.0-1\nqueue\n")
    assert cluster.run("dsub", "--wait", "--per-job", "peek.sub", cwd=tmp_path).returncode == 0
    gate.touch()
    wait_until(lambda: states(cluster, cluster.env()).get("1.0") == "completed")
    assert cluster.run("dfetch", "--per-job", "1", "2", "--dest", tmp_path / "got").returncode == 0
    keep = (tmp_path / "got" / "1.0" / "stdout").read_text().split()
    peek = (tmp_path / "got" / "2.0" / "stdout").read_text().split()
    assert sorted(keep + peek) == [str(base), str(base + 1)]
    assert "Permission denied" in (tmp_path / "got" / "2.0" / "stderr").read_text()


def test_a_job_that_kills_its_launcher_fails_and_the_next_job_runs(
    make_cluster, tmp_path: Path
) -> None:  # noqa: ANN001, E501
    cluster = make_cluster(workers=1)
    # The job runs as nobody, started by the slot's launcher (its parent), which also
    # runs as nobody: the job can kill it, and only its own run is lost.
    write(tmp_path / "kill.sh", "#!/bin/sh\nid -u\nkill -9 $PPID\nsleep 30\n", True)
    write(tmp_path / "kill.sub", "executable = kill.sh\nqueue\n")
    write(tmp_path / "ok.sh", "#!/bin/sh\nid -u\n", True)
    write(tmp_path / "ok.sub", "executable = ok.sh\nqueue 3\n")
    assert cluster.run("dsub", "kill.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: states(cluster, cluster.env()).get("1.0") not in ("idle", "running"))
    jobs = json.loads(cluster.run("dq", "--json", "--all", "-l").stdout)
    assert "the job launcher is gone" in str(jobs[0]), jobs[0]
    assert (
        cluster.run(
            "dsub", "--wait", "--per-job", "ok.sub", "--dest", tmp_path / "r", cwd=tmp_path
        ).returncode
        == 0
    )
    outs = {(tmp_path / "r" / f"2.{i}" / "stdout").read_text() for i in range(3)}
    assert outs == {f"{uid('nobody')}\n"}
    assert "Traceback" not in cluster.log("w1")
