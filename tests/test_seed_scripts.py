"""A Python script without a ``#!`` line runs with the worker's Python, and a job
that could not start is mailed as a failure (a real scheduler, workers and SMTP)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write
from smtp_server import SmtpServer

Cluster = Callable[..., TestCluster]

STATS = "import sys\nprint('args', sys.argv[1:])\nprint('python', sys.version_info[0])\n"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def test_a_py_script_without_shebang_runs_with_the_workers_python(
    cluster: TestCluster, tmp_path: Path
) -> None:
    write(tmp_path / "stats.py", STATS)  # not even executable, as the toolkit's scripts
    write(tmp_path / "job.sub", "executable = stats.py\narguments = data.txt 3\n"
          "output = out.txt\nerror = err.txt\nqueue\n")  # fmt: skip
    result = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out.txt").read_text() == "args ['data.txt', '3']\npython 3\n"
    long = cluster.run("dq", "--all", "-l", "1.0").stdout
    assert "command = python3 stats.py data.txt 3 (if stats.py has no '#!' line)" in long


def test_a_py_script_with_a_shebang_runs_as_it_says(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "job.py", "#!/bin/sh\necho run by sh\n", executable=True)
    write(tmp_path / "job.sub", "executable = job.py\noutput = out.txt\nqueue\n")
    result = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out.txt").read_text() == "run by sh\n"


def test_a_job_that_cannot_start_is_mailed_on_completion(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=smtp.args())
    write(tmp_path / "notexec.txt", "no shebang, not a binary\n", executable=True)
    write(tmp_path / "job.sub", "executable = notexec.txt\nnotify_user = me@example.org\n"
          "notification = Complete\nqueue\n")  # fmt: skip
    result = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    assert result.returncode == 1
    assert "held: cannot execute 'notexec.txt'" in result.stdout
    wait_until(lambda: smtp.inbox.count() == 1, what="the mail about the job that did not start")
    (mail,) = smtp.inbox.mails
    subject = mail.message["Subject"]
    assert subject.startswith("[dfarm] job 1.0 failed: notexec.txt (held: cannot execute")
    assert re.search(r"Exec format error", mail.body)


def test_an_ordinary_hold_is_still_not_mailed_on_completion(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=smtp.args())
    write(tmp_path / "job.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(tmp_path / "notexec.txt", "no shebang\n", executable=True)
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_output_files = nope.txt\n"
          "notify_user = me@example.org\nnotification = Complete\nqueue\n")  # fmt: skip
    assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 1
    # A second job that cannot start is mailed: when its mail has come, the first
    # job's would have come before it.
    write(tmp_path / "bad.sub", "executable = notexec.txt\nnotify_user = me@example.org\n"
          "notification = Complete\nqueue\n")  # fmt: skip
    assert cluster.run("dsub", "--wait", "bad.sub", cwd=tmp_path).returncode == 1
    wait_until(lambda: smtp.inbox.count() >= 1, what="the second job's mail")
    jobs = json.loads(cluster.run("dq", "--all", "--json").stdout)
    assert [j["state"] for j in jobs] == ["held", "held"]
    assert [m.message["X-Dfarm-Job"] for m in smtp.inbox.mails] == ["2.0"]


def test_without_a_python_for_the_jobs_account_the_reason_says_so(tmp_path: Path) -> None:
    from worker_node import py_scripts

    script = write(tmp_path / "stats.py", STATS)
    reason = py_scripts.command(script, ["a"], None)
    assert isinstance(reason, str) and "--job-python" in reason
    assert py_scripts.command(script, ["a"], "/usr/bin/python3") == [
        "/usr/bin/python3", str(script), "a"
    ]  # fmt: skip
    shebang = write(tmp_path / "run.py", "#!/bin/sh\n", executable=True)
    assert py_scripts.command(shebang, ["a"], None) == [str(shebang), "a"]
