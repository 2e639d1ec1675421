"""A cluster's results in one file, per-job folders only where worth it, end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
from conftest import TestCluster, write

from control_node.client import Client
from control_node.connection import DfarmError
from control_node.results_file import EXTRA_FIELDS, read_results
from scheduler import protocol as p

JOB = """#!/bin/sh
case "$1" in
  quiet) echo "hello $1"; echo "note $1" >&2 ;;
  fail) echo "about to fail"; echo "boom" >&2; exit 3 ;;
  out) echo "made a file"; echo data > out.txt ;;
  big) head -c 100000 /dev/zero | tr '\\0' y ;;
esac
"""
SUBMIT = """executable = job.sh
arguments = $(kind)
should_transfer_files = YES
transfer_output_files = $(files)
queue kind, files from (
  quiet,
  fail,
  out, out.txt
  big,
  quiet,
)
"""
KINDS = ["quiet", "fail", "out", "big", "quiet"]


def cluster_id(stdout: str) -> int:
    """The cluster of ``dsub``'s first line: ``5 job(s) submitted to cluster 7.``"""
    return int(stdout.splitlines()[0].rstrip(".").split()[-1])


@pytest.fixture
def waited(cluster: TestCluster, tmp_path: Path) -> tuple[TestCluster, Path, int]:
    """The mixed cluster above, submitted with ``dsub --wait`` into ``tmp_path``."""
    write(tmp_path / "job.sh", JOB, executable=True)
    write(tmp_path / "job.sub", SUBMIT)
    done = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # one job failed
    return cluster, tmp_path, cluster_id(done.stdout)


def connect(cluster: TestCluster) -> Client:
    return Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token)


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dsub_wait_writes_one_record_a_job_and_folders_only_where_worth_it(
    waited: tuple[TestCluster, Path, int],
) -> None:
    cluster, here, cid = waited
    records = lines_of(here / f"{cid}.results.jsonl")
    assert [r["proc"] for r in records] == list(range(len(KINDS)))
    fields = {f.name for f in p.JobInfo.__dataclass_fields__.values()} | set(EXTRA_FIELDS)
    assert all(set(r) == fields for r in records)
    quiet, fail, out, big, _ = records
    assert quiet["state"] == "completed" and quiet["exit_code"] == 0
    assert quiet["stdout"] == "hello quiet\n" and quiet["stderr"] == "note quiet\n"
    assert quiet["params"] == {"kind": "quiet", "files": ""}
    assert quiet["worker"] in ("w1", "w2") and quiet["end_time"] >= quiet["start_time"] > 0
    assert quiet["folder"] is None and not (here / f"{cid}.0").exists()
    assert not (here / f"{cid}.4").exists()
    # A failure, an output file and a large stdout get a folder as before.
    assert fail["exit_code"] == 3 and fail["folder"] == f"{cid}.1"
    assert fail["stderr"] == "boom\n"
    assert (here / f"{cid}.1" / "stderr").read_text() == "boom\n"
    assert json.loads((here / f"{cid}.1" / "status.json").read_text())["exit_code"] == 3
    assert out["folder"] == f"{cid}.2"
    assert (here / f"{cid}.2" / "out.txt").read_text() == "data\n"
    assert big["folder"] == f"{cid}.3" and big["stdout"] is None
    assert (here / f"{cid}.3" / "stdout").read_bytes() == b"y" * 100000
    assert sorted(path.name for path in here.iterdir() if path.name.startswith(f"{cid}.")) == [
        f"{cid}.1",
        f"{cid}.2",
        f"{cid}.3",
        f"{cid}.results.jsonl",
    ]


def test_per_job_restores_a_folder_for_every_job(
    waited: tuple[TestCluster, Path, int],
) -> None:
    cluster, here, cid = waited
    dest = here / "all"
    fetched = cluster.run("dfetch", "--per-job", "--dest", dest, str(cid), cwd=here)
    assert fetched.returncode == 1, fetched.stderr
    for proc, kind in enumerate(KINDS):
        folder = dest / f"{cid}.{proc}"
        assert (folder / "status.json").is_file() and (folder / "stderr").is_file()
        if kind == "quiet":
            assert (folder / "stdout").read_text() == "hello quiet\n"
    records = lines_of(dest / f"{cid}.results.jsonl")
    assert [r["folder"] for r in records] == [f"{cid}.{proc}" for proc in range(len(KINDS))]
    # The same records as the default layout, but for where the files are.
    default = lines_of(here / f"{cid}.results.jsonl")
    strip = {"folder", "mail"}
    assert [{k: v for k, v in r.items() if k not in strip} for r in records] == [
        {k: v for k, v in r.items() if k not in strip} for r in default
    ]


def test_dresults_and_the_python_api_read_the_same_records(
    waited: tuple[TestCluster, Path, int],
) -> None:
    cluster, here, cid = waited
    path = here / f"{cid}.results.jsonl"
    from_scheduler = cluster.run("dresults", "--json", str(cid), cwd=here)
    from_file = cluster.run("dresults", "--json", path, cwd=here)
    assert from_scheduler.returncode == 0, from_scheduler.stderr
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout) == json.loads(from_scheduler.stdout)
    records = Client.read_results(path)
    with connect(cluster) as client:
        queried = client.cluster_jobs(cid)
    assert [r.job for r in records] == queried
    assert [r.stdout for r in records][0] == "hello quiet\n"


def test_output_and_error_keep_htcondors_meaning(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "job.sh", JOB, executable=True)
    write(
        tmp_path / "job.sub",
        "executable = job.sh\narguments = quiet\noutput = out.$(Process)\n"
        "error = logs/err.$(Process)\nqueue 2\n",
    )
    (tmp_path / "logs").mkdir()
    done = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cid = cluster_id(done.stdout)
    for proc in (0, 1):
        assert (tmp_path / f"out.{proc}").read_text() == "hello quiet\n"
        assert (tmp_path / "logs" / f"err.{proc}").read_text() == "note quiet\n"
        assert not (tmp_path / f"{cid}.{proc}").exists()
    records = read_results(tmp_path / f"{cid}.results.jsonl")
    assert [r.stdout_path for r in records] == [str(tmp_path / "out.0"), str(tmp_path / "out.1")]
    assert [r.folder for r in records] == [None, None]


def test_a_fetch_broken_half_way_and_repeated_ends_with_identical_files(
    cluster: TestCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "job.sh",
        "#!/bin/sh\nhead -c 3000000 /dev/urandom > big.bin\necho $1\n",
        executable=True,
    )
    monkeypatch.chdir(tmp_path)
    from control_node import fetch_local

    # Over FTP, as a client on another machine fetches (tests/test_fetch_local.py: in place).
    monkeypatch.setattr(fetch_local, "copy_in_place", lambda grant, name, d, damaged: d)
    write(
        tmp_path / "job.sub",
        "executable = job.sh\narguments = $(Process)\nshould_transfer_files = YES\n"
        "transfer_output_files = big.bin\nqueue 4\n",
    )
    with connect(cluster) as client:
        submitted = client.submit(tmp_path / "job.sub")
        submitted.wait(timeout=120)
        clean = tmp_path / "clean"
        client.fetch([str(submitted.id)], dest=clean, per_job=False)

        from control_node import fetch_downloads

        real: Callable[..., str] = fetch_downloads.receive
        calls = []

        def breaks_in_the_third(session: object, remote: str, f: BinaryIO, free: object) -> str:
            calls.append(remote)
            if len(calls) < 3:
                return real(session, remote, f, free)

            class Half:
                def write(self, block: memoryview) -> None:
                    f.write(block)
                    raise ConnectionResetError("cut")

            return real(session, remote, Half(), free)

        monkeypatch.setattr(fetch_downloads, "receive", breaks_in_the_third)
        again = tmp_path / "again"
        with pytest.raises(DfarmError, match="cut"):
            client.fetch([str(submitted.id)], dest=again, per_job=False)
        assert any(path.name.endswith(".part") for path in again.rglob("*"))
        monkeypatch.setattr(fetch_downloads, "receive", real)
        client.fetch([str(submitted.id)], dest=again, per_job=False)
    assert tree(again) == tree(clean)
    assert len([name for name in tree(clean) if name.endswith("big.bin")]) == 4


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (a temporary one included)."""
    return {
        str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


def test_a_submit_key_asks_for_a_folder_for_every_job(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "job.sh", JOB, executable=True)
    write(
        tmp_path / "job.sub",
        "executable = job.sh\narguments = quiet\n+DfarmPerJob = true\nqueue 2\n",
    )
    done = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cid = cluster_id(done.stdout)
    for proc in (0, 1):
        assert (tmp_path / f"{cid}.{proc}" / "stdout").read_text() == "hello quiet\n"
    assert [r.folder for r in read_results(tmp_path / f"{cid}.results.jsonl")] == [
        f"{cid}.0",
        f"{cid}.1",
    ]


def test_a_fetch_of_more_jobs_than_a_reply_holds_gets_each_once(
    cluster: TestCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\necho $1\n", executable=True)
    write(tmp_path / "job.sub", "executable = job.sh\narguments = $(Process)\nqueue 2100\n")
    monkeypatch.chdir(tmp_path)
    with connect(cluster) as client:
        submitted = client.submit(tmp_path / "job.sub")
        submitted.wait(timeout=300)
        # The whole cluster and one of its jobs again: replies of at most 2,000 jobs.
        fetched = client.fetch([str(submitted.id), f"{submitted.id}.2050"], per_job=False)
        one_by_one = [f"{submitted.id}.{proc}" for proc in range(2100)]
        again = client.fetch(one_by_one, dest=tmp_path / "again", per_job=False)
    assert [f.job.proc for f in fetched] == list(range(2100))
    assert [f.job.proc for f in again] == list(range(2100))
    records = read_results(tmp_path / f"{submitted.id}.results.jsonl")
    assert [(r.job.proc, r.stdout, r.folder) for r in records] == [
        (proc, f"{proc}\n", None) for proc in range(2100)
    ]
    assert (tmp_path / "again" / f"{submitted.id}.results.jsonl").read_bytes() == (
        tmp_path / f"{submitted.id}.results.jsonl"
    ).read_bytes()
