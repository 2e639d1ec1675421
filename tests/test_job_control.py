"""drm, dhold, drelease, dedit, dhistory, dwait and dtail against a real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import TestCluster, wait_until, write


def gated(tmp_path: Path, name: str = "job", count: int = 1, extra: str = "") -> Path:
    """A submit file whose jobs print a line, wait for a gate file, then print another."""
    gate = tmp_path / "go"
    write(tmp_path / f"{name}.sh", f"#!/bin/sh\necho started $DFARM_JOB_ID\n"
          f"while [ ! -e {gate} ]; do sleep 0.05; done\necho done $DFARM_ATTEMPT\n"
          "echo err >&2\n", True)  # fmt: skip
    write(tmp_path / f"{name}.sub", f"executable = {name}.sh\n{extra}queue {count}\n")
    return gate


def dq(cluster: TestCluster, *args: str) -> dict[str, dict]:
    out = cluster.run("dq", "--json", "--all", *args)
    assert out.returncode == 0, out.stderr
    return {j["id"]: j for j in json.loads(out.stdout)}


def state(cluster: TestCluster, job_id: str) -> str:
    return dq(cluster, job_id).get(job_id, {}).get("state", "")


def me(cluster: TestCluster) -> str:
    return cluster.token.partition(":")[0]


def submit(cluster: TestCluster, tmp_path: Path, name: str = "job") -> None:
    out = cluster.run("dsub", f"{name}.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_hold_release_remove_an_idle_job(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    gated(tmp_path, count=2)
    submit(cluster, tmp_path)
    out = cluster.run("dhold", "1.0", "-reason", "not yet")
    assert out.returncode == 0 and "1 job(s) held: 1.0" in out.stdout
    jobs = dq(cluster)
    assert jobs["1.0"]["state"] == "held" and jobs["1.1"]["state"] == "idle"
    assert jobs["1.0"]["hold_reason"] == f"held by {me(cluster)}: not yet"
    assert f"1.0 held: held by {me(cluster)}: not yet" in cluster.run("dq", "-nobatch").stdout
    # Holding again does nothing and says why; releasing puts it back in the queue.
    again = cluster.run("dhold", "1.0")
    assert again.returncode == 1 and "1.0: not held: it is held" in again.stdout
    assert cluster.run("drelease", "1.0").returncode == 0
    assert dq(cluster)["1.0"]["state"] == "idle" and dq(cluster)["1.0"]["hold_reason"] is None
    out = cluster.run("drm", "1", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["changed"] == ["1.0", "1.1"]
    assert {j["state"] for j in dq(cluster).values()} == {"removed"}
    # A removed job stays removed.
    out = cluster.run("drelease", "1.0")
    assert out.returncode == 1 and "not released: it is removed" in out.stdout


def test_hold_and_remove_running_jobs(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1)
    gate = gated(tmp_path, count=2)
    submit(cluster, tmp_path)
    wait_until(lambda: state(cluster, "1.0") == "running")
    assert cluster.run("dhold", "1.0").returncode == 0
    assert state(cluster, "1.0") == "held"
    # The slot is free again: the next job starts; the held one was killed on w1.
    wait_until(lambda: state(cluster, "1.1") == "running")
    wait_until(lambda: f"job 1.0: killed (held by {me(cluster)})" in cluster.log("w1"))
    assert cluster.run("drm", "1.1").returncode == 0
    wait_until(lambda: f"job 1.1: killed (removed by {me(cluster)})" in cluster.log("w1"))
    assert cluster.run("drelease", "1.0").returncode == 0
    wait_until(lambda: state(cluster, "1.0") == "running")
    gate.touch()
    wait_until(lambda: state(cluster, "1.0") == "completed")
    jobs = dq(cluster)
    assert (jobs["1.0"]["num_starts"], jobs["1.1"]["state"]) == (2, "removed")
    assert cluster.run("dfetch", "--per-job", "1.0", cwd=tmp_path).returncode == 0
    assert (tmp_path / "1.0" / "stdout").read_text() == "started 1.0\ndone 2\n"
    # Completed jobs are left alone.
    out = cluster.run("drm", "1.0")
    assert out.returncode == 1 and "1.0: not removed: it is completed" in out.stdout


def test_remove_all_and_other_users(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    gated(tmp_path, count=3)
    submit(cluster, tmp_path)
    add = cluster.run("dfarm", "user", "add", "bob", "--home", cluster.config.home)
    bob = cluster.env(DFARM_TOKEN=add.stdout.strip().splitlines()[-1])
    for command in ("drm", "dhold", "drelease", "dtail"):
        out = subprocess.run(
            [sys.executable, "-m", f"control_node.cli.{command}", "1.0"],
            env=bob, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 1 and "no job of yours" in out.stderr and "1.0" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "control_node.cli.dedit", "1", "request_memory=1GB"],
        env=bob, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "no job of yours" in out.stderr
    assert cluster.run("drm", "-all").returncode == 0
    assert {j["state"] for j in dq(cluster).values()} == {"removed"}
    assert cluster.run("drm").returncode == 2  # nothing named


def test_edit_requests_of_idle_and_held_jobs(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    gated(tmp_path, extra="request_memory = 100\n")
    submit(cluster, tmp_path)
    out = cluster.run("dedit", "1.0", "request_memory=2GB", "max_retries", "3")
    assert out.returncode == 0 and "1 job(s) edited: 1.0" in out.stdout
    bad = cluster.run("dedit", "1.0", "executable=evil.sh")
    assert bad.returncode == 1 and "'executable' cannot be edited" in bad.stderr
    bad = cluster.run("dedit", "1.0", "request_memory=lots")
    assert bad.returncode == 1 and "request_memory: invalid memory size" in bad.stderr
    cluster.add_worker("w1", "--memory", "1GB")
    wait_until(lambda: "w1 (id" in cluster.log("scheduler"))
    # 2 GB does not fit the 1 GB worker; after an edit down it runs.
    assert state(cluster, "1.0") == "idle"
    assert cluster.run("dedit", "1", "request_memory=512MB").returncode == 0
    wait_until(lambda: state(cluster, "1.0") == "running")
    out = cluster.run("dedit", "1.0", "request_memory=1GB")
    assert out.returncode == 1 and "is running (hold it first)" in out.stdout


def test_dq_long_shows_job_max_retries_where_it_was_given(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    cluster = make_cluster(workers=0)
    gated(tmp_path, name="plain")
    gated(tmp_path, name="retried", extra="max_retries = 3\n")
    submit(cluster, tmp_path, "plain")
    submit(cluster, tmp_path, "retried")

    def retries_lines(job_id: str) -> list[str]:
        long = cluster.run("dq", "-l", job_id).stdout.splitlines()
        return [line for line in long if "MaxRetries" in line]

    assert retries_lines("1.0") == []  # as condor_submit: none where none was given
    assert retries_lines("2.0") == ["JobMaxRetries = 3"]
    assert dq(cluster)["2.0"]["max_retries"] == 3
    assert cluster.run("dedit", "2.0", "max_retries=5").returncode == 0
    assert retries_lines("2.0") == ["JobMaxRetries = 5"]


def test_job_attributes_are_shown_and_edited(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    gated(tmp_path, extra='+JobFlavour = "espresso"\nbatch_name = run$(Process)\n')
    submit(cluster, tmp_path)
    assert dq(cluster)["1.0"]["attributes"] == {
        "JobFlavour": '"espresso"',
        "JobBatchName": '"run0"',
    }
    long = cluster.run("dq", "-l", "1.0").stdout.splitlines()
    assert 'JobFlavour = "espresso"' in long and 'JobBatchName = "run0"' in long
    out = cluster.run("dedit", "1.0", '+jobflavour="longlunch"', "MY.Project=7")
    assert out.returncode == 0 and "1 job(s) edited: 1.0" in out.stdout, out.stderr
    assert dq(cluster)["1.0"]["attributes"] == {
        "JobBatchName": '"run0"', "jobflavour": '"longlunch"', "Project": "7"
    }  # fmt: skip
    bad = cluster.run("dedit", "1.0", "+Not-A-Name=1")
    assert bad.returncode == 1 and "not a job attribute name" in bad.stderr


def test_hold_true_queues_the_job_held(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1)
    gate = gated(tmp_path, extra="hold = true\n")
    gate.touch()
    submit(cluster, tmp_path)
    job = dq(cluster)["1.0"]
    assert job["state"] == "held" and job["hold_reason"] == "submitted on hold at user's request"
    assert cluster.run("drelease", "1.0").returncode == 0
    wait_until(lambda: state(cluster, "1.0") == "completed")


def test_history_wait_and_log(cluster: TestCluster, tmp_path: Path) -> None:
    gate = gated(tmp_path, count=2, extra="log = job.log\n")
    gate.touch()
    write(tmp_path / "bad.sh", "#!/bin/sh\nexit 3\n", True)
    write(tmp_path / "bad.sub", "executable = bad.sh\nqueue\n")
    submit(cluster, tmp_path)
    out = cluster.run("dwait", "--per-job", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "1.0: exit code 0" in out.stdout and (tmp_path / "1.1" / "stdout").exists()
    log = (tmp_path / "job.log").read_text()
    for event in ("1.0 submitted", "1.0 executing: on worker", "1.0 terminated: exit code 0"):
        assert event in log
    submit(cluster, tmp_path, "bad")
    out = cluster.run("dwait", "--per-job", "2", "--json", cwd=tmp_path)
    assert out.returncode == 1 and json.loads(out.stdout)[0]["exit_code"] == 3
    history = json.loads(cluster.run("dhistory", "--json").stdout)
    assert sorted(j["id"] for j in history) == ["1.0", "1.1", "2.0"]
    assert history[-1]["id"] == "2.0"  # in the order they ended
    first = history[0]
    assert first["worker"] in ("w1", "w2") and first["num_starts"] == 1
    assert first["wall_time"] is not None and first["cpu_time"] is not None
    table = cluster.run("dhistory", "2").stdout
    assert "exit code 3" in table and "STARTS" in table
    assert json.loads(cluster.run("dhistory", "--json", "--since", "1h").stdout)
    assert json.loads(cluster.run("dhistory", "--json", "--since", "2999-01-01").stdout) == []
    bad = cluster.run("dhistory", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "give a duration" in bad.stderr


def test_tail_a_running_job(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1)
    gate = gated(tmp_path)
    submit(cluster, tmp_path)
    wait_until(lambda: cluster.run("dtail", "1.0").stdout == "started 1.0\n")
    with subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dtail", "1.0", "-f"],
        env=cluster.env(), stdout=subprocess.PIPE, text=True,
    ) as follow:  # fmt: skip
        assert follow.stdout is not None
        assert follow.stdout.readline() == "started 1.0\n"
        gate.touch()
        # -f ends when the job does, with the end of its output.
        assert follow.stdout.read() == "done 1\n"
        assert follow.wait(timeout=60) == 0
    assert state(cluster, "1.0") == "completed"
    assert cluster.run("dtail", "1.0").stdout == "started 1.0\ndone 1\n"
    assert cluster.run("dtail", "1.0", "--stderr").stdout == "err\n"
    assert cluster.run("dtail", "1.0", "--bytes", "7").stdout == "done 1\n"
    out = cluster.run("dtail", "9.0")
    assert out.returncode == 1 and "no job of yours is 9.0" in out.stderr


def test_tail_follows_a_job_from_before_it_starts(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    gate = gated(tmp_path)
    gate.touch()
    submit(cluster, tmp_path)
    assert cluster.run("dtail", "1.0").returncode == 0  # idle: nothing yet
    with subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dtail", "1.0", "-f"],
        env=cluster.env(), stdout=subprocess.PIPE, text=True,
    ) as follow:  # fmt: skip
        cluster.add_worker("w1")
        assert follow.wait(timeout=60) == 0
        assert follow.stdout is not None
        assert follow.stdout.read() == "started 1.0\ndone 1\n"
