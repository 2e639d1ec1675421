"""What HTCondor derives from submit keys, on a real cluster: a deferred job starts at its
time, ``success_exit_code`` and ``retry_until`` decide the retries, a custom resource
matches the worker that advertises it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import TestCluster, wait_until, write


def job(cluster: TestCluster, job_id: str) -> dict:
    out = cluster.run("dq", "--json", "--all", job_id)
    assert out.returncode == 0, out.stderr
    return next((j for j in json.loads(out.stdout) if j["id"] == job_id), {})


def submit(cluster: TestCluster, tmp_path: Path, script: str, keys: str) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\n" + script, True)
    write(tmp_path / "job.sub", f"executable = job.sh\n{keys}\nqueue\n")
    out = cluster.run("dsub", "job.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_a_deferred_job_starts_at_its_time(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1)
    started = tmp_path / "started"
    at = int(time.time()) + 3
    # The window lets it start however late its match comes on a loaded machine.
    submit(
        cluster, tmp_path, f"date +%s > {started}\n", f"deferral_time = {at}\ndeferral_window = 600"
    )
    wait_until(lambda: job(cluster, "1.0").get("state") == "completed")
    assert int(started.read_text()) >= at


def test_success_exit_code_and_retry_until(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1)
    counter = tmp_path / "runs"
    # Exits 0, then 2 (the success code): run twice, then completed.
    script = f'echo run >> {counter}\n[ "$(wc -l < {counter})" -ge 2 ] && exit 2\nexit 0\n'
    submit(cluster, tmp_path, script, "success_exit_code = 2")
    wait_until(lambda: job(cluster, "1.0").get("state") == "completed")
    done = job(cluster, "1.0")
    assert (done["exit_code"], done["num_starts"]) == (2, 2)
    # retry_until an exit code: exits 5, 4, 3: the third ends it, with no further retry.
    script = f"echo run >> {counter}2\nexit $((6 - $(wc -l < {counter}2)))\n"
    submit(cluster, tmp_path, script, "retry_until = 3\nmax_retries = 10")
    wait_until(lambda: job(cluster, "2.0").get("state") == "completed")
    done = job(cluster, "2.0")
    assert (done["exit_code"], done["num_starts"]) == (3, 3)


def test_a_custom_resource_matches_where_a_worker_advertises_it(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    cluster = make_cluster(workers=1, worker_args=("--attributes", "foo=4"))
    submit(cluster, tmp_path, "exit 0\n", "request_foo = 2")
    wait_until(lambda: job(cluster, "1.0").get("state") == "completed")
    submit(cluster, tmp_path, "exit 0\n", "request_bar = 1")
    out = cluster.run("dq", "-analyze", "2.0")
    assert "no worker advertises the resource 'bar' (request_bar)" in out.stdout, out


def test_memory_usage_is_measured_and_held_on(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    """The worker measures a running job's memory; ``MemoryUsage`` (MB, its peak) is in
    the job's ad for its policies, as HTCondor's."""
    args = ("--policy-interval", "1", "--heartbeat-interval", "0.5")
    cluster = make_cluster(workers=1, scheduler_args=args)
    # It never ends by itself: only the policy ends it (a shell's memory is 1 MB or more).
    submit(
        cluster, tmp_path, "while true; do sleep 0.05; done\n", "periodic_hold = MemoryUsage >= 1"
    )
    wait_until(lambda: job(cluster, "1.0").get("state") == "held")
    held = job(cluster, "1.0")
    assert held["memory_usage"] >= 1
    assert held["hold_reason"].startswith("The job attribute PeriodicHold expression")
    out = cluster.run("dq", "-af", "MemoryUsage", "1.0")
    assert out.returncode == 0 and int(out.stdout.split()[0]) >= 1, out
