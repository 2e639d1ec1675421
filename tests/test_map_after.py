"""``Client.map(..., after=[...])``: a map that waits for other clusters, on a real
cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TestCluster

from control_node import Client
from control_node.mapping import MapJobFailed


@pytest.fixture
def client(cluster: TestCluster) -> Iterator[Client]:
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as c:
        yield c


def test_a_map_runs_after_the_clusters_it_waits_for(client: Client) -> None:
    def ended(x: int) -> float:
        time.sleep(0.5)
        return time.time()

    def started(x: int) -> float:
        return time.time()

    first = client.map_async(ended, range(2), chunk_size=1)
    second = client.map_async(started, range(3), after=[int(first.id)])
    found = client.map(started, range(4), after=[int(first.id), int(second.id)], timeout=120)
    before = client.map_results(first, timeout=60)
    middle = client.map_results(second, timeout=60)
    assert list(found) == [0, 1, 2, 3] and len(found.stats) == 4
    assert min(middle.values()) >= max(before.values())
    assert min(found.values()) >= max(middle.values())


def test_a_map_after_a_failed_cluster_never_runs(client: Client, tmp_path: Path) -> None:
    def started(x: int) -> float:
        return time.time()

    bad = client.submit("executable = /bin/sh\narguments = -c false\nqueue\n", cwd=str(tmp_path))
    with pytest.raises(MapJobFailed, match="never queued"):
        client.map(started, range(2), after=[bad], timeout=120)
    assert client.wait([str(bad.id)])[0].exit_code != 0
