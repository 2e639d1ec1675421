"""Large clusters travel in parts and queries in pages, so that no frame outgrows the
limit; the sizes are made small here so that a few jobs cross several boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TestCluster, write

import control_node.client
import control_node.submit
from control_node import Client
from control_node.connection import DfarmError
from scheduler import protocol as p


def test_cluster_in_parts_and_queue_in_pages(
    make_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster: TestCluster = make_cluster(workers=0)
    monkeypatch.setattr(control_node.submit, "PART", 3)
    monkeypatch.setattr(control_node.client, "PAGE", 2)
    write(tmp_path / "job.sh", "#!/bin/sh\necho $1\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\narguments = $(Process)\nqueue 7\n")
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as me:
        sub = me.submit(str(tmp_path / "job.sub"), cwd=str(tmp_path))
        assert sub.job_ids == [f"{sub.id}.{i}" for i in range(7)]
        # Nobody runs them: no worker is connected, and the submitter is told so.
        assert any("no worker is connected" in w for w in sub.warnings)
        jobs = me.jobs()
        assert [j.id for j in jobs] == sub.job_ids
        assert [j.arguments for j in jobs] == [[str(i)] for i in range(7)]
        assert [j.id for j in me.jobs(limit=3)] == sub.job_ids[:3]
        assert me.counts() == {"idle": 7, "running": 0, "completed": 0, "held": 0, "removed": 0}
        # A part out of order, or one for a finished cluster, is refused.
        spec = p.JobSpec(executable="job.sh")
        with pytest.raises(DfarmError, match="already submitted"):
            me.conn.request(p.SubmitJobs(cluster=sub.id, submit_file="x", jobs=[spec]))
        created = me.conn.request(p.NewCluster())
        part = p.SubmitJobs(cluster=created.cluster, submit_file="x", jobs=[spec], first_proc=1)
        with pytest.raises(DfarmError, match="the next part starts at proc 0, not 1"):
            me.conn.request(part)
    summary = cluster.run("dq", "--summary")
    assert summary.stdout.strip() == "7 job(s) in the queue: 7 idle"
    page = cluster.run("dq", "-limit", "2")
    assert page.returncode == 0, page.stderr
    assert [i for i in range(7) if f"{sub.id}.{i} " in page.stdout] == [0, 1]
