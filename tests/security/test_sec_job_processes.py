"""Every process a job starts ends with the job, whatever session it moved to, and
``dstat`` says how each worker makes sure of it (issue 23, the ``setsid`` item)."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write
from job_processes import alive_as

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs a worker running as root")

#: Children in sessions of their own, each orphaned at once (double fork); each
#: writes its pid to $2 and sleeps. The job ends once all $1 are there.
SCATTER = """#!/bin/sh
i=0
while [ $i -lt "$1" ]; do
    ( setsid sh -c 'echo $$ >> "$0"; exec sleep 600' "$2" & )
    i=$((i + 1))
done
while [ "$(wc -l < "$2")" -lt "$1" ]; do :; done
echo scattered
"""


def _survivors(pids: list[int], uid: int, work: Path) -> list[int]:
    """The live ones of ``pids``, killed (a failing test leaves nothing running)."""
    alive = [pid for pid in pids if alive_as(pid, uid, work)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return alive


def _workers(cluster: TestCluster) -> dict[str, dict[str, object]]:
    out = cluster.run("dstat", "--json")
    data = json.loads(out.stdout)
    workers = data["workers"] if isinstance(data, dict) else data
    return {w["name"]: w for w in workers}


def _tracking(cluster: TestCluster) -> str:
    return str(_workers(cluster)["w1"]["metrics"]["process_tracking"])


def _state(cluster: TestCluster, job: str) -> str:
    out = cluster.run("dq", "--json", "--all")
    return {j["id"]: j["state"] for j in json.loads(out.stdout)}.get(job, "")


def _free_uid(base: int) -> int:
    if any(base <= pw.pw_uid < base + 2 for pw in pwd.getpwall()):
        pytest.skip(f"uids {base}-{base + 1} are taken here")
    return base


@pytest.mark.parametrize("slot_uids", [False, True], ids=["run-as-nobody", "slot-uids"])
def test_a_thousand_setsid_children_die_with_their_job(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
    slot_uids: bool,
) -> None:
    base = _free_uid(62200)
    args = ("--slot-uids", str(base)) if slot_uids else ()
    cluster = make_cluster(workers=1, worker_args=args)
    uid = base if slot_uids else pwd.getpwnam("nobody").pw_uid
    marks = tmp_path / "pids"
    marks.touch()
    marks.chmod(0o666)
    count = 1000
    write(tmp_path / "scatter.sh", SCATTER, True)
    write(tmp_path / "s.sub", f"executable = scatter.sh\narguments = {count} {marks}\nqueue\n")
    out = cluster.run("dsub", "--wait", "s.sub", cwd=tmp_path)
    pids = [int(line) for line in marks.read_text().split()]
    survivors = _survivors(pids, uid, cluster.workers_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(pids) == count
    assert not survivors, f"{len(survivors)} of {count} children outlived their job"
    # dstat says how this worker ends its jobs' processes, in the table and in JSON,
    # as the worker's log does.
    tracking = _tracking(cluster)
    assert "subreaper" in tracking and ("uid sweep" in tracking) == slot_uids
    assert f"jobs' processes are ended by: {tracking}" in cluster.log("w1")
    table = cluster.run("dstat").stdout
    assert "JOB_PROCESSES" in table and tracking in table


@pytest.mark.parametrize("slot_uids", [False, True], ids=["run-as-nobody", "slot-uids"])
def test_children_of_a_job_that_killed_its_launcher_die_with_it(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
    slot_uids: bool,
) -> None:
    """Killing its launcher (its parent, of its own uid) frees a job's orphans from
    the subreaper: the launcher's cgroup, or the slot uid's sweep, still ends them."""
    base = _free_uid(62400)
    args = ("--slot-uids", str(base)) if slot_uids else ()
    cluster = make_cluster(workers=1, worker_args=args)
    uid = base if slot_uids else pwd.getpwnam("nobody").pw_uid
    marks = tmp_path / "pids"
    marks.touch()
    marks.chmod(0o666)
    write(tmp_path / "scatter.sh", SCATTER.replace("echo scattered", "kill -9 $PPID"), True)
    write(tmp_path / "s.sub", f"executable = scatter.sh\narguments = 20 {marks}\nqueue\n")
    tracking = _tracking(cluster)
    if not slot_uids and "cgroup" not in tracking:
        pytest.skip(f"this worker cannot make cgroups ({tracking})")
    assert cluster.run("dsub", "s.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: _state(cluster, "1.0") == "held", timeout=60, what="the job's end")
    pids = [int(line) for line in marks.read_text().split()]
    survivors = _survivors(pids, uid, cluster.workers_dir)
    assert len(pids) == 20
    assert not survivors, f"{len(survivors)} of 20 children outlived their job"


def test_a_slot_uids_process_outside_the_jobs_tree_is_swept(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """What a job had another service start for it (here the test starts it, as the
    slot's uid, outside every job's tree) ends with the job on a slot-uid worker."""
    base = _free_uid(62300)
    cluster = make_cluster(workers=1, worker_args=("--slot-uids", str(base)))
    gate, started = tmp_path / "gate", tmp_path / "started"
    write(tmp_path / "wait.sh", f"#!/bin/sh\ntouch {started}\n"
          f"while [ ! -e {gate} ]; do sleep 0.05; done\nid -u\n", True)  # fmt: skip
    write(tmp_path / "w.sub", "executable = wait.sh\nqueue 2\n")
    assert cluster.run("dsub", "w.sub", cwd=tmp_path).returncode == 0
    wait_until(started.exists, what="the job started")
    outside = subprocess.Popen(
        ["setpriv", f"--reuid={base}", f"--regid={base}", "--clear-groups", "sleep", "600"],
        start_new_session=True,
    )
    try:
        gate.touch()
        wait_until(lambda: outside.poll() is not None, timeout=60, what="the sweep")
    finally:
        if outside.poll() is None:
            outside.kill()
        outside.wait()
    assert outside.returncode == -signal.SIGKILL
    # The slot's launcher was spared: the next job of the slot runs as before.
    out = cluster.run("dsub", "--wait", "w.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
