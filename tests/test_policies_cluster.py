"""Job policies on a real cluster: submit files with HTCondor's policy keys, and the
scheduler holding, releasing, removing and rerunning their jobs as they say."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TestCluster, wait_until, write

#: Policies are evaluated every second here (HTCondor's default is a minute).
FAST = ("--policy-interval", "1")


def job(cluster: TestCluster, job_id: str) -> dict:
    out = cluster.run("dq", "--json", "--all", job_id)
    assert out.returncode == 0, out.stderr
    return next((j for j in json.loads(out.stdout) if j["id"] == job_id), {})


def submit(cluster: TestCluster, tmp_path: Path, script: str, policy: str) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\n" + script, True)
    write(tmp_path / "job.sub", f"executable = job.sh\n{policy}\nqueue\n")
    out = cluster.run("dsub", "job.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "not yet evaluated" not in out.stderr


def test_periodic_remove_on_run_time_removes_a_running_job(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1, scheduler_args=FAST)
    started = tmp_path / "started"
    policy = "periodic_remove = JobStatus == 2 && (time() - EnteredCurrentStatus) > 1"
    # It never ends by itself: only the policy ends it.
    submit(cluster, tmp_path, f"touch {started}\nwhile true; do sleep 0.05; done\n", policy)
    wait_until(lambda: job(cluster, "1.0").get("state") == "removed")
    assert started.exists()
    reason = (
        "The job attribute PeriodicRemove expression 'JobStatus == 2 && (time() -"
        " EnteredCurrentStatus) > 1' evaluated to TRUE"
    )
    wait_until(lambda: f"job 1.0: killed ({reason})" in cluster.log("w1"))


def test_on_exit_hold_holds_a_failing_job_with_its_reason(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1, scheduler_args=FAST)
    policy = 'on_exit_hold = ExitCode != 0\non_exit_hold_reason = strcat("failed with ", ExitCode)'
    submit(cluster, tmp_path, "exit 3\n", policy)
    wait_until(lambda: job(cluster, "1.0").get("state") == "held")
    held = job(cluster, "1.0")
    assert (held["hold_reason"], held["exit_code"], held["num_starts"]) == ("failed with 3", 3, 1)
    assert held["hold_code"] == 3  # HTCondor's JobPolicy


def test_periodic_release_reruns_a_held_job_until_its_third_start(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=FAST)
    policy = "on_exit_hold = ExitCode != 0\nperiodic_release = NumJobStarts < 3"
    submit(cluster, tmp_path, "exit 1\n", policy)
    wait_until(lambda: job(cluster, "1.0").get("num_starts") == 3)
    wait_until(lambda: job(cluster, "1.0").get("state") == "held")
    released = "job 1.0: release (The job attribute PeriodicRelease expression"
    assert cluster.log("scheduler").count(released) == 2
    # Released by its policy, not by hand: a user's hold is left alone.
    assert job(cluster, "1.0")["hold_reason"].startswith("The job attribute OnExitHold")


def test_on_exit_remove_reruns_a_failing_job_until_it_succeeds(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=FAST)
    counter = tmp_path / "runs"
    script = f'echo run >> {counter}\n[ "$(wc -l < {counter})" -ge 3 ] && exit 0\nexit 1\n'
    submit(cluster, tmp_path, script, "on_exit_remove = ExitCode == 0")
    wait_until(lambda: job(cluster, "1.0").get("state") == "completed")
    done = job(cluster, "1.0")
    assert (done["exit_code"], done["num_starts"]) == (0, 3)
    assert counter.read_text() == "run\n" * 3
