"""The dashboard's pages tell the truth about running and waiting jobs, and an
unknown address gets the site's own page: a real scheduler and workers, and the
pages as a browser gets them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import TestCluster, wait_until, write
from webtools import Browserless, web_cluster


def _blocking_jobs(tmp_path: Path, count: int) -> tuple[Path, str]:
    """A submit file of ``count`` jobs that run until ``flag`` exists."""
    flag = tmp_path / "go"
    write(tmp_path / "block.sh", f"#!/bin/sh\nwhile [ ! -e {flag} ]; do sleep 0.1; done\n", True)
    write(tmp_path / "block.sub", f"executable = block.sh\nqueue {count}\n")
    return flag, "block.sub"


def _jobs(cluster: TestCluster) -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in json.loads(cluster.run("dq", "--all", "--json").stdout)}


def _states(cluster: TestCluster) -> dict[str, str]:
    return {k: j["state"] for k, j in _jobs(cluster).items()}


def _run_time(client: Browserless, job: str) -> str:
    return re.search(r'id="run-time">([^<(]*)', client.get(f"/jobs/{job}").text)[1].strip()


def test_job_page_shows_the_run_time_of_a_running_and_a_held_job(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster, url = web_cluster(make_cluster, workers=1)
    flag, sub = _blocking_jobs(tmp_path, 1)
    assert cluster.run("dsub", sub, cwd=tmp_path).returncode == 0
    client = Browserless(url)
    client.login(cluster.token)
    wait_until(lambda: _states(cluster).get("1.0") == "running", what="the job to run")
    running = _run_time(client, "1.0")
    assert re.fullmatch(r"\d+\+\d\d:\d\d:\d\d", running), running
    assert client.get("/api/jobs/1.0").json()["run_time"] >= 0
    assert cluster.run("dhold", "1.0").returncode == 0
    wait_until(lambda: _states(cluster).get("1.0") == "held", what="the job to be held")
    held = _run_time(client, "1.0")
    assert re.fullmatch(r"\d+\+\d\d:\d\d:\d\d", held) and held >= running, held
    # dq shows no worker for a held job, nor for a released one that waits again.
    assert _jobs(cluster)["1.0"]["worker"] is None
    assert "w1" not in cluster.run("dq", "1.0").stdout
    assert cluster.run("dsub", sub, cwd=tmp_path).returncode == 0
    wait_until(lambda: _states(cluster).get("2.0") == "running", what="the second job to run")
    assert cluster.run("drelease", "1.0").returncode == 0
    released = _jobs(cluster)["1.0"]
    assert released["state"] == "idle" and released["worker"] is None, released
    assert _jobs(cluster)["2.0"]["worker"] == "w1"
    flag.touch()


def test_an_unknown_address_gets_a_404_page_with_the_navigation(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster, url = web_cluster(make_cluster, workers=0)
    client = Browserless(url)
    anonymous = client.get("/no/such/page")
    assert anonymous.status == 404 and "there is no page at /no/such/page" in anonymous.text
    assert "<nav>" in anonymous.text and 'href="/static/style.css"' in anonymous.text
    client.login(cluster.token)
    page = client.get("/nothing-here")
    assert page.status == 404 and "there is no page at /nothing-here" in page.text
    assert 'href="/queue"' in page.text and 'action="/logout"' in page.text
    api = client.get("/api/nothing")
    assert api.status == 404 and "<nav>" not in api.text


def _analysis(cluster: TestCluster, job: str) -> dict[str, Any]:
    done = cluster.run("dq", "-analyze", "--json", job)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]


def test_start_estimates_count_the_running_jobs_and_the_queue_is_one_line_a_job(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster, url = web_cluster(make_cluster, workers=2)
    write(tmp_path / "quick.sh", "#!/bin/sh\necho done\n", True)
    write(tmp_path / "quick.sub", "executable = quick.sh\nqueue\n")
    done = cluster.run("dsub", "--wait", "--dest", str(tmp_path / "r"), "quick.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # a mean run time of a fraction of a second
    flag, sub = _blocking_jobs(tmp_path, 4)
    assert cluster.run("dsub", sub, cwd=tmp_path).returncode == 0
    wait_until(lambda: [_states(cluster).get(f"2.{i}") for i in range(2)] == ["running"] * 2,
               what="both slots running")  # fmt: skip
    # Both slots run jobs that have run longer than the mean: no estimate, not "0 s".
    analysis = wait_until(
        lambda: (a := _analysis(cluster, "2.2"))["estimated_start"] is None and a,
        what="the estimate to count the running jobs' time",
    )
    assert "run longer" in analysis["summary"] and "about 0 s" not in analysis["summary"]
    client = Browserless(url)
    client.login(cluster.token)
    rows = {r["id"]: r for r in client.get("/api/queue").json()["jobs"]}
    for job in ("2.2", "2.3"):
        assert rows[job]["reason"] == "0 of 2 matching worker(s) free", rows[job]
    page = client.get("/queue").text
    assert "Ahead of it" not in page and page.count("0 of 2 matching worker(s) free") == 2
    # The whole explanation is on the job's page.
    why = re.search(r'id="why">([^<]*)', client.get("/jobs/2.3").text)[1]
    assert why.startswith("Job 2.3 is idle. 2 of 2 connected worker(s)") and "Ahead of it" in why
    assert cluster.run("dhold", "2.3").returncode == 0
    held = {r["id"]: r for r in client.get("/api/queue").json()["jobs"]}["2.3"]
    assert held["reason"] == f"held by {cluster.token.rpartition(':')[0]}", held
    flag.touch()
