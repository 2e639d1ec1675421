"""The Python API against a real local cluster: submit, wait, results, and map."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TestCluster, wait_until, write

from control_node import AuthError, Client, NotFound, SchedulerUnavailable, SubmitError
from control_node.mapping import MapResults


@pytest.fixture
def client(cluster: TestCluster) -> Iterator[Client]:
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as c:
        yield c


def test_submit_a_dict_wait_and_fetch_results(client: Client, tmp_path: Path) -> None:
    write(tmp_path / "echo.sh", '#!/bin/sh\necho "$@"\n', executable=True)
    cluster = client.submit(
        {"executable": "echo.sh", "arguments": ["it's", "a b", 7], "queue": 2}, cwd=str(tmp_path)
    )
    assert cluster.job_ids == [f"{cluster.id}.0", f"{cluster.id}.1"]
    jobs = cluster.wait(timeout=60)
    assert [j.exit_code for j in jobs] == [0, 0]
    fetched = cluster.results(dest=tmp_path / "out")
    assert [f.stdout_text() for f in fetched] == ["it's a b 7\n"] * 2
    assert [f.folder for f in fetched] == [None, None]  # their lines hold everything
    assert {j.state for j in cluster.status()} == {"completed"}


def test_submit_text_errors_name_the_line(client: Client, tmp_path: Path) -> None:
    with pytest.raises(SubmitError) as info:
        client.submit("executable = missing.sh\nqueue\n", cwd=str(tmp_path))
    assert info.value.line == 1 and "missing.sh" in str(info.value)
    with pytest.raises(SubmitError, match="queue"):
        client.submit({"executable": "x", "queue": "many"})


def test_errors_are_typed(cluster: TestCluster, client: Client) -> None:
    with pytest.raises(NotFound):
        client.fetch(["999.0"])
    with pytest.raises(AuthError):
        Client(scheduler=f"127.0.0.1:{cluster.access.port}", token="alice:wrong")
    with pytest.raises(SchedulerUnavailable):
        Client(scheduler="127.0.0.1:1", token=cluster.token)


def test_map_returns_every_result_in_order_with_stats(client: Client, tmp_path: Path) -> None:
    items = list(range(1000))
    found = client.map(lambda x: x * x, items, chunk_size=50)
    assert list(found) == items and list(found.values()) == [x * x for x in items]
    assert len(found.stats) == 1000 and len({s.job_id for s in found.stats}) == 20
    assert {s.worker for s in found.stats} <= {"w1", "w2"} and found.stopped_at is None
    found.save_stats(tmp_path / "stats.json")
    saved = json.loads((tmp_path / "stats.json").read_text())
    item = saved["items_stats"][3]
    assert item["index"] == 3 and item["attempt"] == 1 and item["seconds"] >= 0


def test_map_keep_if_and_unhashable_items(client: Client) -> None:
    found = client.map(sum, [[1, 2], [3, 4], [5]], keep_if=lambda total: total > 3)
    assert dict(found) == {1: 7, 2: 5}  # unhashable items: keyed by position


def test_map_unordered_yields_as_jobs_complete(client: Client, tmp_path: Path) -> None:
    gate = str(tmp_path / "go")

    def gated_if_zero(x: int) -> int:
        while x == 0 and not os.path.exists(gate):
            time.sleep(0.02)
        return x

    results = iter(client.map(gated_if_zero, [0, 1, 2, 3], ordered=False))
    first = next(results)
    assert first[0] != 0  # item 0 cannot end before the gate opens: it was not waited for
    Path(gate).touch()
    assert sorted(item for item, _ in [first, *results]) == [0, 1, 2, 3]


def test_map_remote_exception_comes_back_with_its_traceback(client: Client) -> None:
    def invert(x: float) -> float:
        return 1 / x

    with pytest.raises(ZeroDivisionError) as info:
        client.map(invert, [1, 2, 0, 4], chunk_size=2)
    note = "\n".join(info.value.__notes__)
    assert "Remote traceback (item 2" in note and "return 1 / x" in note


def test_map_stop_when_removes_the_rest(cluster: TestCluster, client: Client) -> None:
    def is_prime(n: int) -> bool:
        time.sleep(0.2)
        return n > 1 and all(n % d for d in range(2, math.isqrt(n) + 1))

    found = client.map(is_prime, range(90, 130), stop_when=bool)
    assert found.stopped_at is not None and is_prime(found.stopped_at)
    assert len(found) < 40
    # Nothing of the map is left in the queue.
    assert json.loads(cluster.run("dq", "--json").stdout) == []


def map_with_a_worker_killed(cluster: TestCluster, gate: Path, **options: Any) -> MapResults:
    """``x + 1`` over ``range(6)`` on two workers, with w1 killed (SIGKILL) while both
    run a job (each waits for ``gate``, made once w1 is dead)."""

    def gated(x: int) -> int:
        while not gate.exists():  # both workers are busy when one of them is killed
            time.sleep(0.02)
        return x + 1

    def kill_w1() -> None:
        wait_until(lambda: len(cluster.run("dq", "--json").stdout.split('"running"')) == 3)
        cluster.expected_exits.add("w1")
        cluster.processes["w1"].send_signal(signal.SIGKILL)
        cluster.processes["w1"].wait()
        gate.touch()

    killer = threading.Thread(target=kill_w1)
    killer.start()
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        found = client.map(gated, range(6), timeout=120, **options)
    killer.join()
    return found


def test_map_loses_nothing_when_a_worker_dies(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=2, scheduler_args=("--worker-timeout", "1"))
    found = map_with_a_worker_killed(cluster, tmp_path / "go")
    assert dict(found) == {x: x + 1 for x in range(6)}
    rerun = [s for s in found.stats if s.attempt == 2]
    assert rerun and {s.worker for s in rerun} == {"w2"}  # the killed job ran again on w2
