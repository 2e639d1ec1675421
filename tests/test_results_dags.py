"""``dfetch`` and ``dresults`` of a DAG's id: its node clusters' results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import TestCluster, wait_until, write

from control_node.results_file import read_results


def test_dfetch_and_dresults_of_a_dag_take_its_node_clusters(
    cluster: TestCluster, tmp_path: Path
) -> None:
    write(tmp_path / "node.sh", '#!/bin/sh\necho "{\\"node\\": \\"$1\\"}"\n', executable=True)
    write(tmp_path / "node.sub", "executable = node.sh\narguments = $(JOB)\nqueue\n")
    write(tmp_path / "two.dag", "JOB A node.sub\nJOB B node.sub\nPARENT A CHILD B\n")
    submitted = cluster.run("dsub_dag", "two.dag", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    def dag() -> dict[str, Any]:
        return json.loads(cluster.run("dq", "-dag", "1", "--json").stdout)[0]

    wait_until(lambda: dag()["state"] == "done", what="the DAG done")
    clusters = [node["cluster"] for node in dag()["nodes"]]
    assert len(clusters) == 2 and 1 not in clusters  # the DAG's id is a cluster of no jobs

    fetched = cluster.run("dfetch", "--dest", "out", "1", cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    for cid, node in zip(clusters, ["A", "B"], strict=True):
        records = read_results(tmp_path / "out" / f"{cid}.results.jsonl")
        assert [(r.job.id, r.stdout) for r in records] == [(f"{cid}.0", f'{{"node": "{node}"}}\n')]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{cid}.results.jsonl" for cid in clusters
    )

    shown = cluster.run("dresults", "1", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    report = json.loads(shown.stdout)
    assert report["dag"] == 1 and report["clusters"] == clusters
    text = cluster.run("dresults", "1").stdout
    assert f"DAG 1 (clusters {clusters[0]} {clusters[1]}): 2 jobs, " in text

    # A number that is neither a cluster of yours nor a DAG is refused as before.
    missing = cluster.run("dfetch", "--dest", "out", "99", cwd=tmp_path)
    assert missing.returncode == 1 and "no job of yours matches 99" in missing.stderr
    one = cluster.run("dresults", str(clusters[0]), "--json")
    assert json.loads(one.stdout)["cluster"] == clusters[0]
