"""The commands' words and exit codes, as a shell script relies on them, against a real
cluster: dfetch, drm, dtail, dwait, dhistory, dresults, status.json, held jobs, output paths."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TestCluster, wait_until, write


def dq(cluster: TestCluster, *args: str) -> dict[str, dict]:
    out = cluster.run("dq", "--json", "--all", *args)
    assert out.returncode == 0, out.stderr
    return {j["id"]: j for j in json.loads(out.stdout)}


def gated_job(tmp_path: Path, count: int = 1) -> Path:
    """A submit file of ``count`` jobs that print a line, then wait for a gate file."""
    gate = tmp_path / "go"
    write(tmp_path / "job.sh", f"#!/bin/sh\necho started\n"
          f"while [ ! -e {gate} ]; do sleep 0.05; done\necho done\n", True)  # fmt: skip
    write(tmp_path / "job.sub", f"executable = job.sh\nqueue {count}\n")
    return gate


def submit(cluster: TestCluster, tmp_path: Path, name: str = "job.sub") -> None:
    out = cluster.run("dsub", name, cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_dfetch_of_an_unfinished_job_exits_2_and_says_so(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    gated_job(tmp_path)
    submit(cluster, tmp_path)
    out = cluster.run("dfetch", "1.0", cwd=tmp_path)
    assert out.returncode == 2, out
    assert "1.0 is idle: not finished, nothing to fetch yet" in out.stderr
    assert not (tmp_path / "1.0").exists()


def test_drm_of_a_removed_job_exits_0_and_says_it_is_already_removed(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    cluster = make_cluster(workers=0)
    gated_job(tmp_path)
    submit(cluster, tmp_path)
    assert cluster.run("drm", "1.0").returncode == 0
    again = cluster.run("drm", "1.0")
    assert again.returncode == 0, again
    assert again.stdout.strip().splitlines() == ["0 job(s) removed", "1.0: already removed"]
    # Holding a removed job is still refused.
    held = cluster.run("dhold", "1.0")
    assert held.returncode == 1 and "1.0: not held: it is removed" in held.stdout


def test_dtail_of_a_cluster_of_one_job_tails_that_job(cluster: TestCluster, tmp_path: Path) -> None:
    gate = gated_job(tmp_path)
    submit(cluster, tmp_path)
    wait_until(lambda: cluster.run("dtail", "1.0").stdout == "started\n", what="output")
    out = cluster.run("dtail", "1")
    assert out.returncode == 0 and out.stdout == "started\n", out
    gate.touch()
    gated_job(tmp_path, count=2)
    submit(cluster, tmp_path)
    several = cluster.run("dtail", "2")
    assert several.returncode == 1
    assert "cluster 2 has several jobs: give CLUSTER.PROC (2.0)" in several.stderr
    assert "no job of yours in cluster 9" in cluster.run("dtail", "9").stderr


def test_dwait_timeout_says_a_human_duration(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    gated_job(tmp_path)
    submit(cluster, tmp_path)
    out = cluster.run("dwait", "1", "--timeout", "0.3")
    assert out.returncode == 2
    assert out.stderr.strip() == "dwait: jobs still running after 0.3 s"
    out = cluster.run("dwait", "1.0", "--timeout", "1", "--no-fetch")
    assert out.returncode == 2 and out.stderr.strip() == "dwait: jobs still running after 1 s"


def test_seconds_text() -> None:
    from control_node.results import seconds_text

    assert seconds_text(1.9795575980000422) == "2 s"
    assert seconds_text(0.25) == "0.2 s"
    assert seconds_text(125) == "2 min 5 s" and seconds_text(120) == "2 min"
    assert seconds_text(7800) == "2 h 10 min"


def test_dhistory_allusers(cluster: TestCluster, tmp_path: Path) -> None:
    other = cluster.run("dfarm", "user", "--home", cluster.config.home, "add", "bob")
    assert other.returncode == 0, other.stderr
    token = other.stdout.strip().splitlines()[-1]
    write(tmp_path / "t.sh", "#!/bin/sh\necho hi\n", True)
    write(tmp_path / "t.sub", "executable = t.sh\nqueue\n")
    env = cluster.env(DFARM_TOKEN=token)
    assert cluster.run("dsub", "--wait", "t.sub", cwd=tmp_path, env=env).returncode == 0
    submit(cluster, tmp_path, "t.sub")
    assert cluster.run("dwait", "2", "--no-fetch").returncode == 0
    mine = json.loads(cluster.run("dhistory", "--json").stdout)
    assert [j["id"] for j in mine] == ["2.0"]
    everyone = cluster.run("dhistory", "--allusers", "--json")
    assert everyone.returncode == 0, everyone.stderr
    assert [j["id"] for j in json.loads(everyone.stdout)] == ["1.0", "2.0"]
    assert [j["id"] for j in json.loads(cluster.run("dhistory", "-allusers", "--json").stdout)]
    both = cluster.run("dhistory", "--allusers", "--user", "bob")
    assert both.returncode == 2 and "not both" in both.stderr


def test_dresults_json_gives_numeric_parameters_as_numbers(
    cluster: TestCluster, tmp_path: Path
) -> None:
    write(tmp_path / "m.sh", "#!/bin/sh\necho 1\n", True)
    write(tmp_path / "m.sub", "executable = m.sh\narguments = $(d) $(n)\n"
          "queue d, n from (\n0.05, 3\n1e-3, big\n007, -2\n)\n")  # fmt: skip
    assert cluster.run("dsub", "--wait", "m.sub", cwd=tmp_path).returncode == 0
    rows = json.loads(cluster.run("dresults", "1", "--json").stdout)["jobs"]
    assert [(r["d"], r["n"]) for r in rows] == [(0.05, 3), (0.001, "big"), ("007", -2)]


def test_status_json_of_an_ordinary_job_has_no_result(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "t.sh", "#!/bin/sh\necho hello\n", True)
    write(tmp_path / "t.sub", "executable = t.sh\nqueue\n")
    write(tmp_path / "two.sub", "executable = t.sh\nqueue 2\n")
    assert cluster.run("dsub", "--wait", "t.sub", cwd=tmp_path).returncode == 0
    status = json.loads((tmp_path / "1.results.jsonl").read_text())
    assert status["result"] is None and status["result_error"] is None
    # The jobs of a sweep (here over $(Process)) still say why they have no result.
    assert cluster.run("dsub", "--wait", "two.sub", cwd=tmp_path).returncode == 0
    status = json.loads((tmp_path / "2.results.jsonl").read_text().splitlines()[1])
    assert status["result_error"] == "the last line of stdout is not a number or a JSON" \
        " object of numbers: 'hello'"  # fmt: skip


def test_a_held_job_shows_its_exit_code_and_its_termination(
    cluster: TestCluster, tmp_path: Path
) -> None:
    write(tmp_path / "f.sh", "#!/bin/sh\nexit 3\n", True)
    write(tmp_path / "f.sub", "executable = f.sh\ntransfer_output_files = results.dat\n"
          "log = f.log\nqueue\n")  # fmt: skip
    out = cluster.run("dsub", "--wait", "f.sub", cwd=tmp_path)
    assert "1.0: held: " in out.stdout and "'results.dat' was not produced" in out.stdout
    assert out.stdout.rstrip().endswith("(exit code 3) -> ./1.0/"), out.stdout
    assert dq(cluster)["1.0"]["exit_code"] == 3
    table = cluster.run("dq", "-nobatch").stdout
    assert "'results.dat' was not produced (exit code 3)" in table, table
    assert "ExitCode = 3" in cluster.run("dq", "-l", "1.0").stdout
    assert cluster.run("dfetch", "1.0", cwd=tmp_path).returncode == 1
    events = [line.split(" ", 2)[2] for line in (tmp_path / "f.log").read_text().splitlines()]
    at = next(i for i, e in enumerate(events) if e.startswith("terminated"))
    assert events[at] == "terminated: exit code 3"
    assert events[at + 1].startswith("held: ") and "results.dat" in events[at + 1]


def test_output_in_a_folder_is_where_dsub_says(cluster: TestCluster, tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    write(tmp_path / "o.sh", "#!/bin/sh\necho out\necho err >&2\necho data > result.txt\n", True)
    write(tmp_path / "o.sub", "executable = o.sh\nname = run1\noutput = logs/$(name).out\n"
          "error = logs/$(name).err\ntransfer_output_files = result.txt\nqueue\n")  # fmt: skip
    out = cluster.run("dsub", "--wait", "o.sub", cwd=tmp_path)
    assert out.returncode == 0, out
    line = next(x for x in out.stdout.splitlines() if x.startswith("1.0: "))
    # stdout and stderr where the submit file says, output files in the initialdir (as
    # HTCondor does), and the line says both.
    assert line == "1.0: exit code 0 -> ./logs/ (output files: ./)", out.stdout
    assert (tmp_path / "logs" / "run1.out").read_text() == "out\n"
    assert (tmp_path / "logs" / "run1.err").read_text() == "err\n"
    assert (tmp_path / "result.txt").read_text() == "data\n"
    fetched = cluster.run("dfetch", "1.0", cwd=tmp_path)
    assert fetched.stdout.endswith("\n1.0: exit code 0 -> ./logs/ (output files: ./)\n"), fetched
