"""``chunk_size="auto"``, the default of ``Client.map``: a tiny function is batched, a
slow one spread over every slot, on a real cluster of two 1-slot workers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import TestCluster

from control_node import Client
from control_node.mapping import (
    CHUNK_SECONDS,
    SMALL_MAP_PER_SLOT,
    ItemStats,
    Row,
    auto_chunk_size,
)


@pytest.fixture
def client(cluster: TestCluster) -> Iterator[Client]:
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as c:
        yield c


def test_a_one_millisecond_function_is_batched(client: Client) -> None:
    def tick(x: int) -> int:
        time.sleep(0.001)
        return -x

    found = client.map(tick, range(400))
    assert list(found.items()) == [(x, -x) for x in range(400)]
    jobs = {s.job_id for s in found.stats}
    # Two items a slot first, then chunks of about CHUNK_SECONDS (sleep(0.001) takes
    # longer on a loaded machine): far fewer jobs than items.
    assert len(jobs) <= 400 // 20, sorted(jobs)


def test_the_first_call_paying_imports_does_not_make_chunks_small(client: Client) -> None:
    def imports_once(x: int) -> int:
        if "imported" not in globals():  # the first call in a job, as an import would
            time.sleep(1)
            globals()["imported"] = True
        return x

    found = client.map(imports_once, range(100))
    assert len({s.job_id for s in found.stats}) <= 4


def test_a_slow_function_is_spread_over_every_slot(client: Client) -> None:
    def slow(x: int) -> int:
        time.sleep(CHUNK_SECONDS + 0.05)
        return x + 1

    items = SMALL_MAP_PER_SLOT * 2 + 2
    found = client.map(slow, range(items))
    assert dict(found) == {x: x + 1 for x in range(items)}
    # Two items a slot first, then one item a job.
    jobs = [s.job_id for s in found.stats]
    assert sorted(jobs.count(j) for j in set(jobs)) == [1] * (items - 4) + [2, 2]
    assert {s.worker for s in found.stats} == {"w1", "w2"}
    assert {s.worker for s in found.stats[4:]} == {"w1", "w2"}


def test_a_small_map_runs_one_item_a_job_in_one_cluster(client: Client) -> None:
    found = client.map(abs, range(-SMALL_MAP_PER_SLOT, SMALL_MAP_PER_SLOT))
    assert dict(found) == {x: abs(x) for x in range(-SMALL_MAP_PER_SLOT, SMALL_MAP_PER_SLOT)}
    jobs = [s.job_id for s in found.stats]
    assert len(set(jobs)) == 2 * SMALL_MAP_PER_SLOT
    assert len({job.partition(".")[0] for job in jobs}) == 1


def test_map_async_cuts_a_few_chunks_per_slot(client: Client) -> None:
    handle = client.map_async(abs, range(-50, 50))
    assert handle.jobs == 8  # 2 slots, 4 chunks each
    assert dict(handle.results(client, timeout=60)) == {x: abs(x) for x in range(-50, 50)}


@pytest.mark.parametrize("size", [0, -1, "big", 1.5, True])
def test_a_chunk_size_is_auto_or_a_positive_integer(client: Client, size: object) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        client.map(abs, [1], chunk_size=size)  # type: ignore[arg-type]


def row(seconds: float) -> Row:
    return Row(0, 0, ItemStats(0, "1.0", "w1", 1, 0.0, seconds))


def test_auto_chunk_size_aims_at_chunk_seconds_and_never_fewer_chunks_than_slots() -> None:
    assert auto_chunk_size([row(0.001)], 10_000, 2) == int(CHUNK_SECONDS / 0.001)
    assert auto_chunk_size([row(0.0)], 10_000, 2) == 5_000
    assert auto_chunk_size([row(0.000001)], 10_000, 4) == 2_500
    assert auto_chunk_size([row(0.5), row(2.0)], 100, 2) == 1
    assert auto_chunk_size([row(1.0), row(0.001)], 10_000, 2) == int(CHUNK_SECONDS / 0.001)
    assert auto_chunk_size([row(0.001)], 3, 8) == 1
