"""Results of sweeps: collected at completion, summarized by ``dresults``, end to end."""

from __future__ import annotations

import json
import signal
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT, TestCluster, wait_until, write

from control_node.sweep import Sweep, histogram_lines, summarize
from scheduler import protocol as p
from scheduler.job_records import JobResult
from scheduler.job_results import extract_result, parse_result
from scheduler.protocol import JobSpec

MODEL = """#!/usr/bin/env python3
import sys
x = sys.argv[1]
if x == "fail":
    print("1.5")
    sys.exit(2)
if x == "text":
    print("no number here")
    sys.exit(0)
if x == "big":
    print("y" * 100000)
    print(42)
    sys.exit(0)
print("working on", x)
print(float(x) * 2)
"""


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def submit(cluster: TestCluster, tmp_path: Path, text: str) -> str:
    write(tmp_path / "job.sub", text)
    result = cluster.run("dsub", "--quiet", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_results_are_collected_and_summarized(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "model.py", MODEL, executable=True)
    cid = submit(
        cluster,
        tmp_path,
        "executable = model.py\narguments = $(x)\nqueue x in (1, 2, 3.5, 10, big, fail, text)\n",
    )
    waited = cluster.run("dresults", cid, "--watch", "--interval", "0.2", "--summary")
    assert waited.returncode == 0, waited.stderr
    assert f"Cluster {cid}: 7 jobs, 5 results, 2 failures, 0 pending" in waited.stdout

    jobs = json.loads(cluster.run("dq", "--all", "--json", cid).stdout)
    by_x = {j["params"]["x"]: j for j in jobs}
    assert by_x["3.5"]["result"] == {"value": 7.0} and by_x["3.5"]["result_error"] is None
    assert by_x["big"]["result"] == {"value": 42.0}  # stdout too large to come inline
    assert by_x["fail"]["result"] is None and by_x["fail"]["result_error"] == "exit code 2"
    assert by_x["text"]["result"] is None and "not a number" in by_x["text"]["result_error"]
    long = cluster.run("dq", "-l", "--all", f"{cid}.2").stdout
    assert "params.x = 3.5" in long and "result.value = 7.0" in long
    assert cluster.run("dfetch", "--per-job", f"{cid}.2", cwd=tmp_path).returncode == 0
    status = json.loads((tmp_path / f"{cid}.2" / "status.json").read_text())
    assert status["params"] == {"x": "3.5"} and status["result"] == {"value": 7.0}

    report = json.loads(cluster.run("dresults", cid, "--json").stdout)
    values = [2.0, 4.0, 7.0, 20.0, 42.0]
    s = report["summary"]["value"]
    assert (report["results"], report["failures"], report["pending"]) == (5, 2, 0)
    assert s["count"] == 5 and s["mean"] == pytest.approx(np.mean(values))
    assert s["sd"] == pytest.approx(statistics.stdev(values))
    assert s["cv"] == pytest.approx(np.std(values, ddof=1) / np.mean(values))
    assert [s["q1"], s["median"], s["q3"]] == pytest.approx(np.percentile(values, [25, 50, 75]))
    assert (s["min"], s["max"]) == (2.0, 42.0)
    assert report["by_user"] == [{"user": jobs[0]["owner"], "results": 5, "failures": 2}]
    assert sum(w["results"] for w in report["by_worker"]) == 5

    table = cluster.run("dresults", cid)
    assert table.returncode == 0, table.stderr
    assert "Histogram of value:" in table.stdout and "exit code 2" in table.stdout
    lines = cluster.run("dresults", cid, "--csv").stdout.splitlines()
    assert lines[0] == "job,state,owner,worker,x,value,status" and len(lines) == 8

    plotted = cluster.run("dresults", cid, "--plot", tmp_path / "sweep.png")
    assert plotted.returncode == 0, plotted.stderr
    assert png_size(tmp_path / "sweep.png") == (1280, 480)  # density + result vs x


def test_cluster_jobs_come_in_pages(cluster: TestCluster, tmp_path: Path) -> None:
    from control_node import Client

    write(tmp_path / "n.sh", "#!/bin/sh\necho $1\n", executable=True)
    cid = submit(cluster, tmp_path, "executable = n.sh\narguments = $(Process)\nqueue 7\n")
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        for page in (1, 3, 7, 100):
            jobs = client.cluster_jobs(int(cid), page=page)
            assert [j.proc for j in jobs] == list(range(7))
        client.wait([cid], timeout=60)
        again = client.submit(tmp_path / "job.sub", cwd=str(tmp_path))
        assert len(again.sweep().jobs) == 7


def test_result_file_json_and_random_params(cluster: TestCluster, tmp_path: Path) -> None:
    write(
        tmp_path / "model.sh",
        '#!/bin/sh\necho "{\\"a\\": $1, \\"b\\": 2}" > out.json\necho not the result\n',
        executable=True,
    )
    write(
        tmp_path / "job.sub",
        "executable = model.sh\nrandom_seed = 3\nload = $RANDOM_INTEGER(1, 9)\n"
        "arguments = $(load)\nresult_file = out.json\nqueue 3\n",
    )
    waited = cluster.run("dsub", "--wait", "--json", "job.sub", cwd=tmp_path)
    assert waited.returncode == 0, waited.stderr
    done = json.loads(waited.stdout)
    cid = str(done["cluster"])
    for job in done["jobs"]:  # the updates pushed on completion carry the result
        assert job["result"] == {"a": float(job["params"]["load"]), "b": 2.0}
    report = json.loads(cluster.run("dresults", cid, "--json").stdout)
    assert report["keys"] == ["a", "b"] and report["params"] == ["load"]
    for row in report["jobs"]:
        assert row["a"] == float(row["load"]) and row["b"] == 2.0
    plotted = cluster.run("dresults", cid, "--key", "b", "--plot", tmp_path / "b.png")
    assert plotted.returncode == 0, plotted.stderr
    assert png_size(tmp_path / "b.png") == (1280, 480)
    bad = cluster.run("dresults", cid, "--key", "nope")
    assert bad.returncode == 1 and "no result has the key 'nope'" in bad.stderr
    missing = cluster.run("dresults", "999")
    assert missing.returncode == 1 and "no job of yours in cluster 999" in missing.stderr


def test_watch_shows_results_as_they_arrive(cluster: TestCluster, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    script = f"#!/bin/sh\n[ $1 = 0 ] || while [ ! -e {gate} ]; do sleep 0.05; done\necho $1\n"
    write(tmp_path / "job.sh", script, executable=True)
    cid = submit(cluster, tmp_path, "executable = job.sh\narguments = $(Process)\nqueue 3\n")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dresults", cid, "--watch", "--interval", "0.2"],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    first = "3 jobs, 1 results, 0 failures, 2 pending"
    try:
        assert watcher.stdout is not None
        for line in watcher.stdout:  # frames come every 0.2 s while jobs wait at the gate
            if first in line:
                break
        gate.touch()
        out, _ = watcher.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0
    assert "3 jobs, 3 results, 0 failures, 0 pending" in out


# ----------------------------------------------------------------------------- units


def test_parse_result_forms() -> None:
    assert parse_result("3.25", "x") == JobResult({"value": 3.25}, None)
    assert parse_result('{"a": 1, "b": -2.5}', "x") == JobResult({"a": 1.0, "b": -2.5}, None)
    assert parse_result("nan", "x").error and parse_result('{"a": "1"}', "x").error
    assert parse_result("[1, 2]", "x").error and parse_result('{"a": true}', "x").error


def test_extract_result_from_the_spool_and_exit_status(tmp_path: Path) -> None:
    spec = JobSpec(executable="x")
    (tmp_path / "stdout").write_bytes(b"z" * 200_000 + b"\n12.5\n\n")
    assert extract_result(spec, {}, tmp_path, 0, None).value == {"value": 12.5}
    assert extract_result(spec, {}, tmp_path, 1, None).error == "exit code 1"
    assert extract_result(spec, {}, tmp_path, None, 9).error == "killed by signal 9"
    assert extract_result(spec, {}, None, 0, None).error == "no output on stdout"
    with_file = JobSpec(executable="x", result_file="r.json")
    assert "no result file" in (extract_result(with_file, {}, tmp_path, 0, None).error or "")
    inline = {"outputs/r.json": b'{"k": 2}\n'}
    assert extract_result(with_file, inline, tmp_path, 0, None).value == {"k": 2.0}


def test_summary_matches_statistics_and_numpy() -> None:
    rng = np.random.default_rng(1)
    values = list(rng.normal(10, 2, 501))
    s = summarize(values)
    assert s is not None and s.count == 501
    assert s.mean == pytest.approx(statistics.mean(values))
    assert s.sd == pytest.approx(statistics.stdev(values))
    assert s.cv == pytest.approx(statistics.stdev(values) / statistics.mean(values))
    assert [s.q1, s.median, s.q3] == pytest.approx(np.percentile(values, [25, 50, 75]))
    assert (s.min, s.max) == (min(values), max(values))
    one = summarize([4.0])
    assert one is not None and one.sd is None and one.median == 4.0
    assert summarize([]) is None


def test_histogram_counts_every_value() -> None:
    lines = histogram_lines([1.0, 2.0, 2.0, 3.0, 10.0], bins=3)
    assert [int(line.split()[-1]) for line in lines] == [4, 0, 1]
    assert histogram_lines([5.0, 5.0])[0].endswith(" 2")


def test_failures_are_counted_not_averaged() -> None:
    def job(proc: int, state: str, result: dict | None, error: str | None = None) -> p.JobInfo:
        return p.JobInfo(
            id=f"1.{proc}", cluster=1, proc=proc, owner="u", state=state, submit_time=0.0,
            worker="w1", params={"x": str(proc)}, result=result, result_error=error,
        )  # fmt: skip

    sweep = Sweep(
        [
            job(0, "completed", {"value": 1.0}),
            job(1, "completed", None, "exit code 1"),
            job(2, "held", None),
            job(3, "running", None),
            job(4, "completed", {"value": 3.0}),
        ]
    )
    assert sweep.values("value") == [1.0, 3.0] and sweep.summary()["value"].mean == 2.0
    assert (len(sweep.done), len(sweep.failures), len(sweep.pending)) == (2, 2, 1)
    assert sweep.contributions("worker") == [("w1", 2, 2)]
    assert [r["status"] for r in sweep.rows()][:4] == ["ok", "exit code 1", "held: None", "running"]


def test_clashing_names_get_prefixed_columns() -> None:
    job = p.JobInfo(
        id="1.0", cluster=1, proc=0, owner="u", state="completed", submit_time=0.0,
        params={"worker": "a", "x": "1"}, result={"x": 2.0, "status": 3.0},
    )  # fmt: skip
    sweep = Sweep([job])
    assert sweep.columns == [
        "job", "state", "owner", "worker", "param.worker", "x", "result.x", "result.status",
        "status",
    ]  # fmt: skip
    row = sweep.rows()[0]
    assert (row["param.worker"], row["x"], row["result.x"], row["status"]) == ("a", "1", 2.0, "ok")


@pytest.mark.slow
def test_the_documented_examples(cluster: TestCluster, tmp_path: Path) -> None:
    """submit_examples/montecarlo.sub and grid.sub give the output the README shows."""
    examples = Path(__file__).resolve().parent.parent / "submit_examples"
    readme = (examples.parent / "README.md").read_text()
    for name in ("montecarlo.sub", "grid.sub"):
        sub = cluster.run("dsub", "--quiet", name, cwd=examples)
        assert sub.returncode == 0, sub.stderr
        cid = sub.stdout.strip()
        done = cluster.run("dresults", cid, "--watch", "--interval", "0.5", "--summary")
        assert done.returncode == 0, done.stderr
        out = cluster.run("dresults", cid).stdout
        summary = out[out.index("RESULT ") : out.index("USER ")]
        assert summary.strip() and all(line in readme for line in summary.splitlines())
    long = cluster.run("dq", "-l", "--all", "1.3").stdout
    for line in ("params.load = 11.25789747", "result.wait_ms = 56.73085777669079"):
        assert line in long and line in readme


def test_results_survive_a_scheduler_kill(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    """Results are in SQLite: kept across kill -9; one reported after the restart counts."""
    cluster = make_cluster(workers=1)
    gate = tmp_path / "go"
    script = f"#!/bin/sh\n[ $1 = 0 ] || while [ ! -e {gate} ]; do sleep 0.05; done\necho $1.5\n"
    write(tmp_path / "job.sh", script, executable=True)
    cid = submit(cluster, tmp_path, "executable = job.sh\narguments = $(x)\nqueue x in (0, 1)\n")
    wait_until(
        lambda: (
            "1 results" in cluster.run("dresults", cid, "--summary").stdout
            and "running" in cluster.run("dq", cid).stdout
        ),
        what="one result and one running job",
    )
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait()
    gate.touch()  # the second job ends while the scheduler is down
    cluster.start_scheduler()
    done = cluster.run("dresults", cid, "--watch", "--interval", "0.2", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(r["x"], r["value"]) for r in report["jobs"]] == [(0, 0.5), (1, 1.5)]


def test_store_keeps_results_per_job(tmp_path: Path) -> None:
    from scheduler.store import Store

    store = Store(tmp_path / "db.sqlite")
    try:
        for cluster in range(1, 1202):
            store.results.save_result(cluster, 0, JobResult({"value": float(cluster)}, None))
        store.results.save_result(7, 1, JobResult(None, "exit code 1"))
        store.results.save_result(7, 1, JobResult({"a": 2.0}, None))  # a later attempt replaces it
        results = store.results.of_clusters(range(1, 1300))
        assert len(results) == 1202 and results[(1201, 0)].value == {"value": 1201.0}
        assert results[(7, 1)] == JobResult({"a": 2.0}, None)
        assert store.results.of_clusters([]) == {}
    finally:
        store.close()
