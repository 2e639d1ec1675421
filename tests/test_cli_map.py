"""``Client.map_async``/``map_results``, the files a mapped function writes, ``stop_when``'s
hit and the items never run, and ``save_stats``' totals, against a real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT, TestCluster

from control_node import Client, NotFound
from control_node.mapping import MapJobFailed

START = """
import sys
from control_node import Client


def square(x):
    with open(f"out-{x}.txt", "w") as f:  # a file in the job's working directory
        f.write(str(x))
    return x * x


with Client(scheduler=sys.argv[1], token=sys.argv[2]) as client:
    handle = client.map_async(square, range(6), chunk_size=2)
print(handle.id, handle.items, handle.jobs)
"""

COLLECT = """
import json, sys
from control_node import Client

with Client(scheduler=sys.argv[1], token=sys.argv[2]) as client:
    found = client.map_results(sys.argv[3], timeout=60, files_dest=sys.argv[4])
print(json.dumps(sorted(found.items())))
"""


@pytest.fixture
def client(cluster: TestCluster) -> Iterator[Client]:
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as c:
        yield c


def python(cluster: TestCluster, script: str, *args: str | Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), f"127.0.0.1:{cluster.access.port}",
         cluster.token, *map(str, args)],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=cluster.env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_map_started_in_one_process_is_collected_in_another(
    cluster: TestCluster, client: Client, tmp_path: Path
) -> None:
    map_id, items, jobs = python(cluster, START).split()
    assert (items, jobs) == ("6", "3")  # the process that started it has exited
    found = client.map_results(map_id, timeout=60, files_dest=tmp_path / "files")
    assert dict(found) == {x: x * x for x in range(6)}
    # Each item's files come back on their own, though two items shared a job.
    assert found.files[3] == {"out-3.txt": tmp_path / "files" / "3" / "out-3.txt"}
    assert sorted(found.files) == list(range(6))
    assert (tmp_path / "files" / "3" / "out-3.txt").read_text() == "3"
    # Later, from yet another process: the same results.
    again = python(cluster, COLLECT, map_id, tmp_path / "again")
    assert json.loads(again) == [[x, x * x] for x in range(6)]
    assert not client.jobs()  # nothing of it left in the queue
    with pytest.raises(ValueError, match="not the id of a map"):
        client.map_results("12.0")
    with pytest.raises(NotFound):
        client.map_results("999")
    plain = client.submit({"executable": "/bin/true", "queue": 1}, cwd=str(tmp_path))
    with pytest.raises(MapJobFailed, match="no result.pkl: it is not a job of a map"):
        client.map_results(plain.id, timeout=60)


def test_map_brings_back_the_files_its_function_writes(client: Client, tmp_path: Path) -> None:
    def write_table(n: int) -> int:
        Path("table.csv").write_text("".join(f"{i},{i * n}\n" for i in range(3)))
        return n

    found = client.map(write_table, [2, 5], files_dest=tmp_path / "out")
    assert dict(found) == {2: 2, 5: 5}
    assert found.files[5]["table.csv"].read_text() == "0,0\n1,5\n2,10\n"
    assert found.files[2]["table.csv"] == tmp_path / "out" / "0" / "table.csv"


def test_stop_when_returns_the_hit_and_the_items_never_run(client: Client) -> None:
    # One item a job, so that items after the hit are still queued when it comes back.
    found = client.map(lambda x: x, range(40), chunk_size=1, stop_when=lambda r: r == 3)
    assert found.stopped_at == 3 and found.hit == 3 and found[3] == 3
    assert found.not_run and 39 in found.not_run
    assert set(found.not_run).isdisjoint(found) and set(found.not_run) | set(found) == set(
        range(40)
    )
    assert None not in found.values()
    # Without a hit, nothing is said to be left out.
    whole = client.map(lambda x: x, range(4), stop_when=lambda r: r > 10)
    assert whole.stopped_at is None and whole.hit is None and whole.not_run == []


def test_save_stats_writes_the_project_totals(client: Client, tmp_path: Path) -> None:
    def invert(x: int) -> float:
        return 1 / x

    found = client.map(invert, range(6), chunk_size=2, errors="keep")
    assert isinstance(found.errors[0], ZeroDivisionError) and 0 not in found
    assert found[4] == 0.25
    found.save_stats(tmp_path / "stats.json")
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert (saved["items"], saved["failures"], saved["not_run"]) == (6, 1, 0)
    seconds = [s["seconds"] for s in saved["items_stats"]]
    assert saved["total_seconds"] == pytest.approx(sum(seconds), abs=1e-5)
    assert saved["mean_seconds"] == pytest.approx(sum(seconds) / 6, abs=1e-5)
    per_worker = {w["worker"]: w for w in saved["per_worker"]}
    assert set(per_worker) <= {"w1", "w2"}
    assert sum(w["items"] for w in per_worker.values()) == 6
    assert sum(w["failures"] for w in per_worker.values()) == 1
    assert saved["items_stats"][0]["failed"] is True and saved["items_stats"][1]["index"] == 1
