"""Worker ids follow the order their credentials were issued in (w1 is ID 1), whatever
order the workers first register in; ``dstat`` and the dashboard show the same."""

from __future__ import annotations

import json
from collections.abc import Callable

from conftest import TestCluster, wait_until
from webtools import Browserless, web_cluster


def _ids(cluster: TestCluster) -> dict[str, int]:
    return {w["name"]: w["id"] for w in json.loads(cluster.run("dstat", "--json").stdout)}


def test_worker_ids_follow_the_order_of_their_names(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster, url = web_cluster(make_cluster, workers=0)
    home = str(cluster.config.home)
    credentials = {}
    for name in ("w1", "w2"):  # as an administrator adds them: dfarm worker add
        added = cluster.run("dfarm", "worker", "add", name, "--home", home)
        assert added.returncode == 0, added.stderr
        credentials[name] = added.stdout.strip().splitlines()[-1]
    for name in ("w2", "w1"):  # w2 registers first
        path = cluster.config.home / f"{name}.cred"
        path.touch(mode=0o600)
        path.write_text(credentials[name] + "\n")
        cluster.add_worker(name, credential_file=path)
        wait_until(lambda name=name: name in _ids(cluster), what=f"{name} to register")
    assert _ids(cluster) == {"w1": 1, "w2": 2}
    client = Browserless(url)
    client.login(cluster.token)
    assert {w["name"]: w["id"] for w in client.get("/api/workers").json()} == {"w1": 1, "w2": 2}
