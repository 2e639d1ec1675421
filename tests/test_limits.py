"""max_retries, and the memory and wall-time limits that put a job on hold."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TestCluster, wait_until, write

from control_node import Client


def client(cluster: TestCluster) -> Client:
    return Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token)


def test_max_retries_reruns_a_failing_job(cluster: TestCluster, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write(tmp_path / "fail.sh", f"#!/bin/sh\necho $DFARM_ATTEMPT >> {runs}\nexit 7\n", True)
    write(tmp_path / "fail.sub", "executable = fail.sh\nmax_retries = 2\nlog = fail.log\nqueue\n")
    # Fails twice (the second time killed by a signal), then succeeds.
    flaky = tmp_path / "flaky"
    write(tmp_path / "flaky.sh", f"#!/bin/sh\necho x >> {flaky}\nn=$(wc -l < {flaky})\n"
          '[ "$n" = 1 ] && exit 1\n[ "$n" = 2 ] && kill -9 $$\nexit 0\n', True)  # fmt: skip
    write(tmp_path / "flaky.sub", "executable = flaky.sh\nmax_retries = 5\nqueue\n")
    assert cluster.run("dsub", "fail.sub", cwd=tmp_path).returncode == 0
    assert cluster.run("dsub", "flaky.sub", cwd=tmp_path).returncode == 0
    with client(cluster) as c:
        fail, flaky_job = c.wait(["1", "2"], timeout=60)
    assert (fail.state, fail.exit_code, fail.num_starts) == ("completed", 7, 3)
    assert runs.read_text().split() == ["1", "2", "3"]
    assert (flaky_job.state, flaky_job.exit_code, flaky_job.num_starts) == ("completed", 0, 3)
    assert cluster.run("dfetch", "1", cwd=tmp_path).returncode == 1
    log = (tmp_path / "fail.log").read_text()
    assert "1.0 retrying: exit code 7: retry 1 of 2" in log
    assert "1.0 retrying: exit code 7: retry 2 of 2" in log
    history = json.loads(cluster.run("dhistory", "2", "--json").stdout)
    assert history[0]["num_starts"] == 3
    assert history[0]["total_run_time"] >= history[0]["wall_time"] > 0


def test_a_job_over_its_memory_is_held_then_edited_and_released(
    cluster: TestCluster, tmp_path: Path
) -> None:
    # The memory is taken by a child process: the whole tree counts.
    write(tmp_path / "hog.py", "import subprocess, sys, time\n"
          "child = 'b = bytearray(120 * 2**20); import time; time.sleep(1.5)'\n"
          "subprocess.run([sys.executable, '-c', child], check=True)\n", True)  # fmt: skip
    write(tmp_path / "hog.sh", '#!/bin/sh\nexec "$DFARM_PYTHON" hog.py\n', True)
    write(tmp_path / "hog.sub", "executable = hog.sh\ntransfer_input_files = hog.py\n"
          "request_memory = 60MB\nmax_retries = 3\nqueue\n")  # fmt: skip
    assert cluster.run("dsub", "hog.sub", cwd=tmp_path).returncode == 0
    with client(cluster) as c:
        (job,) = c.wait(["1"], timeout=60)
        assert job.state == "held" and job.num_starts == 1  # a limit is not retried
        assert job.hold_reason is not None
        assert job.hold_reason.startswith("memory limit exceeded: used ")
        assert "over request_memory = 60 MB" in job.hold_reason
        assert "held: memory limit exceeded" in cluster.run("dq", "-nobatch").stdout
        assert c.edit(["1.0"], {"request_memory": "1GB"}).changed == ["1.0"]
        assert c.release(["1"]).changed == ["1.0"]
        (job,) = c.wait(["1"], timeout=60)
    assert (job.state, job.exit_code, job.num_starts) == ("completed", 0, 2)


def test_a_job_over_its_wall_time_is_held(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "slow.sh", "#!/bin/sh\nsleep 60\n", True)
    write(tmp_path / "slow.sub", "executable = slow.sh\nallowed_job_duration = 1\nqueue\n")
    assert cluster.run("dsub", "slow.sub", cwd=tmp_path).returncode == 0
    with client(cluster) as c:
        (job,) = c.wait(["1"], timeout=60)
        assert job.state == "held" and job.exit_signal == 9
        assert job.hold_reason is not None
        assert job.hold_reason.startswith("wall-time limit exceeded: ran ")
        assert job.hold_reason.endswith("more than allowed_job_duration = 1 s")
        assert c.remove(["1"]).changed == ["1.0"]
    wait_until(lambda: not json.loads(cluster.run("dq", "--json").stdout))
