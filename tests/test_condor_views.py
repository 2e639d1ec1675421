"""dq's and dhistory's HTCondor habits (-af, -constraint, -hold, -run, -long, the batch
view) against a real cluster, in condor_q's formats."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TestCluster, wait_until, write
from test_job_control import gated, me, submit

from control_node.client import Client


def _jobs(cluster: TestCluster) -> dict[str, dict]:
    out = cluster.run("dq", "--json", "--all")
    assert out.returncode == 0, out.stderr
    return {j["id"]: j for j in json.loads(out.stdout)}


def _lines(cluster: TestCluster, command: str, *args: str) -> list[str]:
    out = cluster.run(command, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_condor_q_views(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1)
    user = me(cluster)
    write(tmp_path / "quick.sh", "#!/bin/sh\nexit 3\n", True)
    write(tmp_path / "quick.sub", 'executable = quick.sh\nbatch_name = quick\n'
          '+Flavour = "espresso"\nqueue\n')  # fmt: skip
    submit(cluster, tmp_path, "quick")
    wait_until(lambda: _jobs(cluster)["1.0"]["state"] == "completed", what="1.0 completed")
    extra = 'request_memory = 128\nbatch_name = gate\n+Flavour = "longlunch"\n'
    gate = gated(tmp_path, count=3, extra=extra + "+Score = 10 + $(Process)\n")
    submit(cluster, tmp_path)
    assert cluster.run("dhold", "2.2", "-reason", "later").returncode == 0
    wait_until(lambda: _jobs(cluster)["2.0"]["start_time"] is not None, what="2.0 started")

    # -af: values space-separated, strings bare, UNDEFINED as "undefined"; expressions too.
    assert _lines(cluster, "dq", "-af", "ClusterId", "ProcId", "JobStatus", "Flavour") == [
        "2 0 2 longlunch", "2 1 1 longlunch", "2 2 5 longlunch",
    ]  # fmt: skip
    assert _lines(
        cluster, "dq", "2.0", "-af:j", "Score * 2", 'JobBatchName =?= "gate"', "Nope"
    ) == ["2.0 20 true undefined"]
    assert _lines(cluster, "dq", "2.1", "-af:h,", "Owner", "Cmd") == [
        "Owner, Cmd",
        f"{user}, job.sh",
    ]
    assert _lines(cluster, "dq", "2.1", "-af:lV", "Flavour") == ['Flavour = "longlunch"']
    assert _lines(cluster, "dq", "2.1", "-af", "RequestCpus", "RequestMemory") == ["1 128"]

    # -constraint: a ClassAd expression over the job's ad; a syntax error is a usage error.
    held = _lines(cluster, "dq", "-constraint", "JobStatus == 5", "-af", "ProcId",
                  "HoldReasonCode", "HoldReason")  # fmt: skip
    assert held == [f"2 1 held by {user}: later"]
    assert _lines(cluster, "dq", "-constraint", "Score > 10 && MY.Flavour == \"LONGLUNCH\"",
                  "-af", "ProcId") == ["1", "2"]  # fmt: skip
    bad = cluster.run("dq", "-constraint", "JobStatus ==")
    assert bad.returncode == 2 and "-constraint 'JobStatus =='" in bad.stderr, bad.stderr
    assert cluster.run("dq", "-af:q", "Owner").returncode == 2

    # -hold and -run, as condor_q prints them.
    hold = _lines(cluster, "dq", "-hold")
    assert hold[0].split() == ["ID", "OWNER", "HELD_SINCE", "HOLD_REASON"]
    assert [line.split()[0] for line in hold[1:]] == ["2.2"]
    assert hold[1].endswith(f"held by {user}: later")
    run = _lines(cluster, "dq", "-run")
    assert run[0].split() == ["ID", "OWNER", "SUBMITTED", "RUN_TIME", "HOST(S)"]
    assert [line.split()[0] for line in run[1:]] == ["2.0"] and run[1].split()[-1] == "w1"

    # -long: the ClassAd as Attr = value lines, strings quoted, own attributes as written.
    long = _lines(cluster, "dq", "-long", "2.0")
    for line in ("ClusterId = 2", "ProcId = 0", "JobStatus = 2", f'Owner = "{user}"',
                 'Flavour = "longlunch"', "Score = 10 + 0", 'JobBatchName = "gate"',
                 'RemoteHost = "w1"', "NumJobStarts = 1"):  # fmt: skip
        assert line in long, long

    # The batch view: one row per owner and batch, '_' for none in a state; --all
    # counts finished jobs too (from their records).
    headers = ["OWNER", "BATCH_NAME", "SUBMITTED", "DONE", "RUN", "IDLE", "HOLD", "TOTAL",
               "JOB_IDS"]  # fmt: skip
    batch = _lines(cluster, "dq", "-batch", "--all")
    assert batch[0].split() == headers
    rows = {line.split()[1]: line.split() for line in batch[1 : batch.index("")]}
    assert rows["quick"][0] == user and rows["quick"][-6:] == ["1", "_", "_", "_", "1", "1.0"]
    assert rows["gate"][-6:] == ["_", "1", "1", "1", "3", "2.0-2"]
    assert batch[-1].startswith("Total for query: 4 jobs; 1 completed, 0 removed, 1 idle,")
    # The default: batches in the queue (a finished one has left it), counted by the
    # scheduler, then condor_q's totals.
    default = _lines(cluster, "dq")
    assert default[0].split() == headers
    assert [line.split()[1:] for line in default[1:-3]] == [["gate", *rows["gate"][2:]]], default
    assert default[-3:] == [
        "",
        "Total for query: 3 jobs; 0 completed, 0 removed, 1 idle, 1 running, 1 held, 0 suspended",
        "Total for all users: 3 jobs; 0 completed, 0 removed, 1 idle, 1 running, 1 held,"
        " 0 suspended",
    ]
    assert _lines(cluster, "dq", "-batch") == default
    assert _lines(cluster, "dq", "2")[1:-3] == default[1:-3]
    assert _lines(cluster, "dq", "1")[0].startswith("Total for query: 0 jobs")
    # -nobatch lists jobs, as dq did before the batch view was the default.
    nobatch = _lines(cluster, "dq", "-nobatch")
    assert nobatch[0].split()[:3] == ["ID", "OWNER", "STATE"]
    assert [line.split()[0] for line in nobatch[1:4]] == ["2.0", "2.1", "2.2"]
    assert nobatch[4:] == [
        f"2.2 held: held by {user}: later",
        "3 job(s): 1 idle, 1 running, 1 held",
    ]
    assert _lines(cluster, "dq", "--nobatch", "2.0")[1].split()[0] == "2.0"

    # dhistory: the same -af and -constraint over finished jobs.
    history = _lines(cluster, "dhistory", "-af", "ClusterId", "ExitCode", "ExitBySignal",
                     "Flavour", "-constraint", "ExitCode == 3")  # fmt: skip
    assert history == ["1 3 false espresso"]
    none = _lines(cluster, "dhistory", "-constraint", 'Flavour == "ristretto"')
    assert none == ["no finished job matches"]
    gate.touch()
    wait_until(lambda: _jobs(cluster)["2.1"]["state"] == "completed", what="2.1 completed")
    # -limit counts the jobs that match, however far back they ended (as condor_history):
    # the reader pages back through the history, here one job a page.
    assert _lines(cluster, "dhistory", "-limit", "1", "-constraint", "ExitCode == 3",
                  "-af", "ClusterId") == ["1"]  # fmt: skip
    wait_until(lambda: _jobs(cluster)["2.0"]["state"] == "completed", what="2.0 completed")
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        pages = [[j.id for j in page] for page in client.history_pages(page=1)]
        whole = [j.id for j in client.history()]
    assert len(pages) == 3 and [pg[0] for pg in reversed(pages)] == whole
