"""Large clusters travel in parts and queries in pages, so that no frame outgrows the
limit; the sizes are made small here so that a few jobs cross several boundaries."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import signal
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

import control_node.job_queries
import control_node.submit
from control_node import Client
from control_node.connection import DfarmError
from scheduler import protocol as p


def test_cluster_in_parts_and_queue_in_pages(
    make_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster: TestCluster = make_cluster(workers=0)
    monkeypatch.setattr(control_node.submit, "PART", 3)
    monkeypatch.setattr(control_node.submit, "FIRST_PART", 1)
    monkeypatch.setattr(control_node.job_queries, "PAGE", 2)
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
    # Each part twice the one before, up to PART: the first jobs can start early.
    parts = re.findall(rf"submitted cluster {sub.id}: (\d+) job", cluster.log("scheduler"))
    assert parts == ["1", "2", "3", "1"]
    summary = cluster.run("dq", "--summary")
    assert summary.stdout.strip() == "7 job(s) in the queue: 7 idle"
    page = cluster.run("dq", "-limit", "2")
    assert page.returncode == 0, page.stderr
    assert [i for i in range(7) if f"{sub.id}.{i} " in page.stdout] == [0, 1]


_DATA = b"#!/bin/sh\n"
_SHA = hashlib.sha256(_DATA).hexdigest()
SPEC = p.JobSpec(executable="job.sh", inputs=[p.InputFile(name="job.sh", sha256=_SHA, size=10)])
SCRIPT = {_SHA: p.pack_bytes(_DATA)}


def first_part(me: Client, jobs: int) -> int:
    """A new cluster whose first part is queued, the others still to come."""
    created = me.conn.request(p.NewCluster())
    assert isinstance(created, p.ClusterCreated)
    me.conn.request(p.SubmitJobs(cluster=created.cluster, submit_file="x", jobs=[SPEC] * jobs,
                                 files=SCRIPT, last=False))  # fmt: skip
    assert {j.state for j in me.cluster_jobs(created.cluster)} == {"idle"}
    return created.cluster


def test_a_cluster_whose_last_part_never_comes_is_removed(make_cluster) -> None:  # noqa: ANN001
    cluster: TestCluster = make_cluster(workers=0)
    address = f"127.0.0.1:{cluster.access.port}"
    with Client(scheduler=address, token=cluster.token) as me:
        # A later part is refused: what was queued goes, and the reply says so.
        refused = first_part(me, 2)
        bad = dataclasses.replace(SPEC, request_cpus=0)
        part = p.SubmitJobs(cluster=refused, submit_file="x", jobs=[bad], first_proc=2)
        with pytest.raises(DfarmError, match=r"the 2 job\(s\) of cluster 1 already queued were"):
            me.conn.request(part)
        assert {j.state for j in me.cluster_jobs(refused)} == {"removed"}
        good = dataclasses.replace(part, jobs=[SPEC])
        with pytest.raises(DfarmError, match="already submitted"):
            me.conn.request(good)
        # The connection closes before the last part.
        with Client(scheduler=address, token=cluster.token) as other:
            interrupted = first_part(other, 3)
        wait_until(lambda: {j.state for j in me.cluster_jobs(interrupted)} == {"removed"})
        # The scheduler restarts before the last part (the connection still open).
        restarted = first_part(me, 1)
        cluster.processes["scheduler"].send_signal(signal.SIGKILL)
        cluster.processes["scheduler"].wait()
    cluster.start_scheduler()
    with Client(scheduler=address, token=cluster.token) as me:
        assert [j.state for j in me.cluster_jobs(restarted)] == ["removed"]
    log = cluster.log("scheduler")
    assert f"cluster {interrupted}: the submission was interrupted: 3 queued job(s) removed" in log
    assert (f"cluster {restarted}: the submission was interrupted by a restart:"
            " 1 queued job(s) removed") in log  # fmt: skip


def test_a_wait_without_progress_ends_when_the_whole_cluster_is_done(make_cluster) -> None:  # noqa: ANN001
    """AwaitClusters: done once no job of the cluster is idle or running; a held job
    counts as done, a part still to come does not."""
    cluster: TestCluster = make_cluster(workers=0)
    address = f"127.0.0.1:{cluster.access.port}"
    with Client(address, cluster.token) as me, Client(address, cluster.token) as waiter:
        parts = first_part(me, 2)
        waiter.conn.request(p.AwaitClusters(clusters=[parts]))
        me.remove([str(parts)])
        assert waiter.conn.next_update(0.5) is None  # its last part is still to come
        me.conn.request(p.SubmitJobs(cluster=parts, submit_file="x", jobs=[SPEC], first_proc=2))
        assert waiter.conn.next_update(0.5) is None
        me.hold([str(parts)])
        assert waiter.conn.next_update(10) == p.ClusterDone(cluster=parts)
        jobs = waiter.wait([str(parts)], timeout=10)
        assert [(j.proc, j.state) for j in jobs] == [(0, "removed"), (1, "removed"), (2, "held")]
        # A submission abandoned with nothing of it left to run ends the wait too.
        abandoned = first_part(me, 1)
        waiter.conn.request(p.AwaitClusters(clusters=[abandoned]))
        me.remove([str(abandoned)])
        assert waiter.conn.next_update(0.5) is None
        bad = dataclasses.replace(SPEC, request_cpus=0)
        part = p.SubmitJobs(cluster=abandoned, submit_file="x", jobs=[bad], first_proc=1)
        with pytest.raises(DfarmError, match="already queued were removed"):
            me.conn.request(part)
        assert waiter.conn.next_update(10) == p.ClusterDone(cluster=abandoned)
