"""``client.submit(fn, *args, **kwargs)``: one call as a job, through the warm path of
``Client.map``, with futures, ``as_completed`` and ``gather``, on a real cluster."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TestCluster

from control_node import Client
from control_node.connection import RequestFailed
from control_node.futures import CancelledError, Future
from control_node.mapping import MapJobFailed
from scheduler import protocol as p


@pytest.fixture
def client(cluster: TestCluster) -> Iterator[Client]:
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as c:
        yield c


def test_a_call_returns_a_future_of_its_result(client: Client) -> None:
    def power(x: int, exponent: int = 2) -> tuple[int, str, str]:
        return x**exponent, os.environ["DFARM_JOB_ID"], sys.modules["__main__"].__spec__.name

    future = client.submit(power, 3, exponent=3)
    assert isinstance(future, Future)
    value, job_id, main = future.result(timeout=60)
    assert (value, job_id) == (27, future.id) and future.done()
    if os.geteuid() == 0:  # a root worker's launchers: the warm interpreter of a map
        assert main == "worker_node.launcher"
    assert future.exception() is None
    assert future.stats is not None and future.stats.job_id == future.id
    (job,) = client.wait([future.id])
    assert job.state == "completed" and job.exit_code == 0  # a job as any other


def test_an_exception_comes_back_with_the_remote_traceback(client: Client) -> None:
    def fails(x: int) -> float:
        return 1 / x

    future = client.submit(fails, 0)
    with pytest.raises(ZeroDivisionError) as info:
        future.result(timeout=60)
    assert "return 1 / x" in "\n".join(info.value.__notes__)
    assert isinstance(future.exception(), ZeroDivisionError)


def test_as_completed_yields_futures_as_their_jobs_end(client: Client) -> None:
    def late(x: int) -> int:
        time.sleep(x)
        return x

    calls = [client.submit(late, x) for x in (3, 0)]
    order = [future.result() for future in client.as_completed(calls, timeout=60)]
    assert order == [0, 3]


def test_gather_keeps_and_stops_as_map_does(client: Client) -> None:
    def half(x: int) -> float:
        if x == 5:
            raise ValueError("five")
        return x / 2

    calls = [client.submit(half, x) for x in range(6)]
    found = client.gather(calls, keep_if=lambda r: r >= 1, errors="keep", timeout=60)
    assert dict(found) == {2: 1.0, 3: 1.5, 4: 2.0}
    assert list(found.errors) == [5] and isinstance(found.errors[5], ValueError)
    assert [s.index for s in found.stats] == [2, 3, 4, 5]

    def slow(x: int) -> int:
        if x:
            time.sleep(60)
        return x

    calls = [client.submit(slow, x) for x in range(3)]
    stopped = client.gather(calls, stop_when=lambda r: r == 0, timeout=60)
    assert (stopped.hit, stopped.stopped_at, stopped.not_run) == (0, 0, [1, 2])
    ended = client.wait([c.id for c in calls[1:]], timeout=60)
    assert {job.state for job in ended} == {"removed"}
    with pytest.raises(CancelledError):
        calls[1].result(timeout=60)


def test_a_crashed_call_is_retried_per_max_retries(client: Client) -> None:
    def crash_once() -> str:
        if os.environ["DFARM_ATTEMPT"] == "1":
            os._exit(3)
        return os.environ["DFARM_ATTEMPT"]

    assert client.submit(crash_once, resources={"max_retries": 1}).result(timeout=60) == "2"
    with pytest.raises(MapJobFailed, match="exit code 3"):
        client.submit(crash_once).result(timeout=60)


def test_cancel_removes_a_waiting_call(client: Client) -> None:
    def wait() -> None:
        time.sleep(60)

    running = [client.submit(wait) for _ in range(2)]  # both slots busy
    queued = client.submit(wait)
    assert queued.cancel() and not queued.cancel()
    with pytest.raises(CancelledError):
        queued.result(timeout=60)
    for future in running:
        future.cancel()


def test_a_call_is_submitted_in_one_request_and_its_end_pushed_with_its_result(
    client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent: list[str] = []
    request = client.conn.request

    def counted(message: Any) -> Any:
        sent.append(message.type)
        return request(message)

    monkeypatch.setattr(client.conn, "request", counted)
    calls = [client.submit(pow, x, 2) for x in range(3)]
    assert sent == ["submit_small"] * 3  # reserved, queued and awaited at once
    # Read out of order: each future's end is pushed once, whoever reads it first.
    assert [f.result(timeout=60) for f in reversed(calls)] == [4, 1, 0]
    assert sent == ["submit_small"] * 3  # each result came with its end: no fetch
    assert all(f.stats is not None and f.stats.attempt == 1 for f in calls)
    (job,) = client.wait([calls[0].id])
    assert job.state == "completed" and job.exit_code == 0
    # The records are those of any job: its results can be fetched again.
    (again,) = client.fetch([calls[0].id], dest=tmp_path)
    assert again.job.exit_code == 0


def test_a_call_with_a_large_result_fetches_it(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    request = client.conn.request

    def counted(message: Any) -> Any:
        sent.append(message.type)
        return request(message)

    monkeypatch.setattr(client.conn, "request", counted)
    size = p.INLINE_LIMIT * 2  # its result.pkl does not come inline
    assert client.submit(bytes, size).result(timeout=60) == bytes(size)
    assert sent[0] == "submit_small" and "fetch_results" in sent


def test_a_one_item_map_takes_one_request(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    request = client.conn.request

    def counted(message: Any) -> Any:
        sent.append(message.type)
        return request(message)

    monkeypatch.setattr(client.conn, "request", counted)
    found = client.map(abs, [-3], timeout=60)
    assert dict(found) == {-3: 3} and found.stats[0].attempt == 1
    assert sent == ["submit_small"]  # its result came with its end


def test_a_refused_small_submission_leaves_nothing(cluster: TestCluster, client: Client) -> None:
    missing = p.InputFile(name="data", sha256="ab" * 32, size=1)  # neither sent nor uploaded
    with pytest.raises(RequestFailed):
        client.conn.request(
            p.SubmitSmall(submit_file="x.sub", jobs=[p.JobSpec(executable="x", inputs=[missing])])
        )
    assert not [d for d in cluster.config.spool_dir.iterdir() if d.name.isdigit()]
    future = client.submit(pow, 2, 2)
    assert future.result(timeout=60) == 4
    assert future.id == "1.0"  # the refused one's cluster id was never taken
