"""Workflows on a real cluster: a scheduler process, workers, SQLite on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TestCluster, write

from control_node import Client


def client_of(cluster: TestCluster) -> Client:
    return Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token)


def job_script(folder: Path) -> None:
    """job.sh NAME: appends NAME and its parents' marks to order.txt, exits $2 (0)."""
    write(
        folder / "job.sh",
        f'#!/bin/sh\necho "$1" >> {folder}/order.txt\nexit ${{2:-0}}\n',
        True,
    )
    write(folder / "job.sub", "executable = job.sh\narguments = $(node) $(code)\nqueue\n")


def order(folder: Path) -> list[str]:
    path = folder / "order.txt"
    return path.read_text().split() if path.exists() else []


def test_a_diamond_runs_each_node_after_its_parents(cluster: TestCluster, tmp_path: Path) -> None:
    job_script(tmp_path)
    write(
        tmp_path / "diamond.dag",
        "# a diamond\n"
        + "".join(f'JOB {n} job.sub\nVARS {n} node="{n}"\n' for n in "ABCD")
        + "PARENT A CHILD B C\nPARENT B C CHILD D\n",
    )
    result = cluster.run("dsub_dag", "--wait", "diamond.dag", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DAG 1 submitted: 4 nodes" in result.stdout
    assert "DAG 1 done" in result.stdout
    ran = order(tmp_path)
    assert sorted(ran) == ["A", "B", "C", "D"]
    assert ran[0] == "A" and ran[-1] == "D"
    shown = json.loads(cluster.run("dq", "-dag", "1", "--json").stdout)
    assert {n["name"]: n["state"] for n in shown[0]["nodes"]} == dict.fromkeys("ABCD", "done")
    # Done: the DAG's inputs, which its nodes' jobs read, are gone; no node had a
    # folder of its own (their results came inline).
    spool = cluster.config.home / "spool"
    assert not (spool / "1").exists()
    assert not any((spool / str(n["cluster"])).exists() for n in shown[0]["nodes"])


def test_wait_fetches_each_nodes_results(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "say.sh", '#!/bin/sh\necho "said $1"\nexit $2\n', True)
    write(tmp_path / "say.sub", "executable = say.sh\narguments = $(JOB) $(code)\nqueue 2\n")
    write(
        tmp_path / "two.dag",
        'JOB A say.sub\nVARS A code="0"\nJOB B say.sub\nVARS B code="3"\n'
        'JOB C say.sub\nVARS C code="0"\nPARENT A CHILD B\nPARENT B CHILD C\n',
    )
    dest = tmp_path / "out"
    dest.mkdir()
    result = cluster.run("dsub_dag", "--wait", "--dest", str(dest), "two.dag", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    nodes = json.loads(cluster.run("dq", "-dag", "1", "--json").stdout)[0]["nodes"]
    clusters = {n["name"]: n["cluster"] for n in nodes}
    for name, code in (("A", 0), ("B", 3)):
        lines = (dest / f"{clusters[name]}.results.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert [r["exit_code"] for r in records] == [code, code], records
        assert all(r["stdout"].strip() == f"said {name}" for r in records), records
    # C never ran: nothing of it is fetched.
    assert not (dest / f"{clusters['C']}.results.jsonl").exists()
    assert not list(tmp_path.glob("*.results.jsonl"))


def counting_job(folder: Path) -> None:
    """count.sh NODE CODE GOOD_AT: the run number GOOD_AT (and later) exits 0, the
    runs before it CODE."""
    write(
        folder / "count.sh",
        "#!/bin/sh\n"
        f"f={folder}/count.$1\n"
        'n=$(cat "$f" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$f"\n'
        f'echo "$1" >> {folder}/order.txt\n'
        'if [ "$n" -lt "$3" ]; then exit "$2"; fi\nexit 0\n',
        True,
    )
    write(
        folder / "count.sub",
        "executable = count.sh\narguments = $(JOB) $(code) $(good_at)\nqueue\n",
    )


def nodes_of(cluster: TestCluster, dag: int) -> dict[str, dict[str, object]]:
    shown = json.loads(cluster.run("dq", "-dag", str(dag), "--json").stdout)
    return {n["name"]: n for n in shown[0]["nodes"]}


def test_retry_reruns_a_node_unless_it_exits_with_the_value_named(
    cluster: TestCluster, tmp_path: Path
) -> None:
    counting_job(tmp_path)
    write(
        tmp_path / "retry.dag",
        'JOB A count.sub\nVARS A code="1" good_at="3"\nRETRY A 3\n'
        'JOB B count.sub\nVARS B code="7" good_at="9"\nRETRY B 5 UNLESS-EXIT 7\n'
        'JOB C count.sub\nVARS C code="0" good_at="1"\nPARENT B CHILD C\n',
    )
    result = cluster.run("dsub_dag", "--wait", "retry.dag", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert order(tmp_path).count("A") == 3  # two failures, then success
    assert order(tmp_path).count("B") == 1  # exit 7: no retry
    assert "C" not in order(tmp_path)
    nodes = nodes_of(cluster, 1)
    assert (nodes["A"]["state"], nodes["A"]["retries"]) == ("done", 2)
    assert nodes["B"]["state"] == "failed" and "exited with 7" in str(nodes["B"]["reason"])
    assert nodes["C"]["state"] == "futile"
    assert "1 node(s) failed: B: job" in result.stdout


def test_pre_and_post_scripts_change_a_nodes_result(cluster: TestCluster, tmp_path: Path) -> None:
    counting_job(tmp_path)
    write(
        tmp_path / "pre.sh", f'#!/bin/sh\necho "pre $1 $(id -u)" >> {tmp_path}/scripts.txt\n', True
    )
    write(
        tmp_path / "post.sh",
        f'#!/bin/sh\necho "post $1 $2 $3" >> {tmp_path}/scripts.txt\nexit $3\n',
        True,
    )
    write(
        tmp_path / "scripts.dag",
        # A's job fails (exit 4) but its POST script says success; B's job succeeds
        # but its POST script fails it, so D never runs; C is skipped by its PRE script.
        'JOB A count.sub\nVARS A code="4" good_at="9"\n'
        "SCRIPT PRE A pre.sh $JOB\nSCRIPT POST A post.sh $JOB $RETURN 0\n"
        'JOB B count.sub\nVARS B code="0" good_at="1"\nSCRIPT POST B post.sh $JOB $RETURN 3\n'
        'JOB C count.sub\nVARS C code="0" good_at="1"\n'
        "SCRIPT PRE C post.sh $JOB x 9\nPRE_SKIP C 9\n"
        'JOB D count.sub\nVARS D code="0" good_at="1"\nPARENT A B CHILD D\n',
    )
    result = cluster.run("dsub_dag", "--wait", "scripts.dag", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (tmp_path / "scripts.txt").exists(), result.stdout + cluster.run("dq", "-dag").stdout
    lines = (tmp_path / "scripts.txt").read_text().splitlines()
    assert "post A 4 0" in lines and "post B 0 3" in lines and "post C x 9" in lines
    pre = next(line for line in lines if line.startswith("pre A"))
    assert pre.split()[2] != "0"  # never as root
    nodes = nodes_of(cluster, 1)
    assert nodes["A"]["state"] == "done"
    assert nodes["B"]["state"] == "failed" and "POST script exited with 3" in str(
        nodes["B"]["reason"]
    )
    assert nodes["C"]["state"] == "done" and "C" not in order(tmp_path)
    assert nodes["D"]["state"] == "futile"


def test_abort_dag_on_ends_the_dag(cluster: TestCluster, tmp_path: Path) -> None:
    counting_job(tmp_path)
    write(
        tmp_path / "abort.dag",
        'JOB A count.sub\nVARS A code="5" good_at="9"\nABORT-DAG-ON A 5 RETURN 2\n'
        'JOB B count.sub\nVARS B code="0" good_at="1"\nPARENT A CHILD B\n'
        'JOB C count.sub\nVARS C code="0" good_at="1"\nPARENT A CHILD C\n',
    )
    result = cluster.run("dsub_dag", "--wait", "abort.dag", cwd=tmp_path)
    assert result.returncode == 1
    assert "aborted: node A returned 5 (ABORT-DAG-ON); DAG return value 2" in result.stdout
    assert order(tmp_path) == ["A"]
    nodes = nodes_of(cluster, 1)
    assert [nodes[n]["state"] for n in "ABC"] == ["failed", "removed", "removed"]


def test_a_cycle_is_refused_before_anything_is_queued(cluster: TestCluster, tmp_path: Path) -> None:
    job_script(tmp_path)
    write(
        tmp_path / "cycle.dag",
        "JOB A job.sub\nJOB B job.sub\nJOB C job.sub\nPARENT A CHILD B\nPARENT B CHILD C\n"
        "PARENT C CHILD A\n",
    )
    result = cluster.run("dsub_dag", "cycle.dag", cwd=tmp_path)
    assert result.returncode == 1
    assert "cycle.dag:" in result.stderr and "cycle" in result.stderr
    assert json.loads(cluster.run("dq", "-dag", "--json").stdout) == []
    write(tmp_path / "missing.dag", "JOB A job.sub\nJOB B nothere.sub\nPARENT A CHILD B\n")
    result = cluster.run("dsub_dag", "missing.dag", cwd=tmp_path)
    assert result.returncode == 1 and "missing.dag:2:" in result.stderr, result.stderr


def test_after_from_python_waits_for_clusters(cluster: TestCluster, tmp_path: Path) -> None:
    counting_job(tmp_path)
    sub = "executable = count.sh\narguments = {name} {code} 99\nqueue {n}\n"
    with client_of(cluster) as c:
        prep = c.submit(sub.format(name="prep", code=0, n=1), cwd=str(tmp_path))
        sims = c.submit(sub.format(name="sim", code=0, n=3), cwd=str(tmp_path), after=[prep])
        merge = c.submit(sub.format(name="merge", code=0, n=1), cwd=str(tmp_path), after=[sims])
        bad = c.submit(sub.format(name="bad", code=3, n=1), cwd=str(tmp_path), after=[merge])
        never = c.submit(sub.format(name="never", code=0, n=1), cwd=str(tmp_path), after=[bad])
        anyway = c.submit(
            sub.format(name="anyway", code=0, n=1), cwd=str(tmp_path), after_any=[bad]
        )
        jobs = anyway.wait(timeout=60)
        never.wait(timeout=60)
    assert [j.state for j in jobs] == ["completed"]
    ran = order(tmp_path)
    assert ran[0] == "prep" and ran[1:4] == ["sim"] * 3 and ran[4:6] == ["merge", "bad"]
    assert ran[6:] == ["anyway"]


def test_after_honours_strict(cluster: TestCluster, tmp_path: Path) -> None:
    from control_node.submit import SubmitError

    counting_job(tmp_path)
    sub = "executable = count.sh\narguments = one 0 99\nnot_a_key = 1\nqueue\n"
    with client_of(cluster) as c:
        prep = c.submit(sub, cwd=str(tmp_path))
        with pytest.raises(SubmitError, match="not_a_key.*--strict"):
            c.submit(sub, cwd=str(tmp_path), strict=True, after=[prep])
        lenient = c.submit(sub, cwd=str(tmp_path), after=[prep])
        assert any("not_a_key" in w for w in lenient.warnings)
        lenient.wait(timeout=60)
    assert json.loads(cluster.run("dq", "-dag", "--json").stdout)[0]["counts"] == {"done": 1}


def test_splices_dirs_noop_done_and_config_run_as_read(
    cluster: TestCluster, tmp_path: Path
) -> None:
    counting_job(tmp_path)
    inner = tmp_path / "inner"
    write(inner / "count.sub", f"executable = {tmp_path}/count.sh\narguments = $(JOB) 0 1\nqueue\n")
    write(inner / "part.dag", "JOB A count.sub\nJOB B count.sub\nPARENT A CHILD B\n")
    write(
        tmp_path / "whole.dag",
        "CONFIG whole.config\n"
        'JOB first count.sub\nVARS first code="0" good_at="1"\n'
        'JOB other count.sub\nVARS other code="0" good_at="1"\n'
        "JOB skipped count.sub DONE\n"
        "JOB gate nothing.sub NOOP\n"
        "SPLICE S part.dag DIR inner\n"
        'JOB last count.sub\nVARS last code="0" good_at="1"\n'
        "PARENT first other skipped CHILD gate\nPARENT gate CHILD S\nPARENT S CHILD last\n"
        "DOT whole.dot\n",
    )
    write(tmp_path / "whole.config", "DAGMAN_MAX_JOBS_SUBMITTED = 1\n")
    checked = cluster.run("dsub_dag", "--no-submit", "whole.dag", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(cluster.run("dq", "-dag", "--json").stdout) == []
    result = cluster.run("dsub_dag", "--wait", "whole.dag", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = order(tmp_path)
    assert sorted(ran[:2]) == ["first", "other"] and ran[2:] == ["S+A", "S+B", "last"]
    nodes = nodes_of(cluster, 1)
    assert nodes["skipped"]["cluster"] is None and nodes["gate"]["cluster"] is None
    assert all(n["state"] == "done" for n in nodes.values())
    assert "S+A" in (tmp_path / "whole.dot").read_text()
    spans = sorted((n["started"], n["ended"]) for n in nodes.values() if n["cluster"])
    # DAGMAN_MAX_JOBS_SUBMITTED = 1: first and other, free to run together, did not.
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans


def test_script_defer_and_always_run_post(cluster: TestCluster, tmp_path: Path) -> None:
    counting_job(tmp_path)
    # pre.sh NAME: exits 5 the first time (run me again later), then 0.
    write(
        tmp_path / "pre.sh",
        f'#!/bin/sh\nf={tmp_path}/pre.$1\nif [ -e "$f" ]; then exit 0; fi\n: > "$f"\nexit 5\n',
        True,
    )
    write(tmp_path / "fail.sh", "#!/bin/sh\nexit 2\n", True)
    write(
        tmp_path / "post.sh",
        f'#!/bin/sh\necho "post $1 $2 $3" >> {tmp_path}/scripts.txt\nexit 0\n',
        True,
    )
    write(tmp_path / "always.config", "DAGMAN_ALWAYS_RUN_POST = True\n")
    write(
        tmp_path / "defer.dag",
        "CONFIG always.config\n"
        'JOB A count.sub\nVARS A code="0" good_at="1"\nSCRIPT DEFER 5 1 PRE A pre.sh $JOB\n'
        'JOB B count.sub\nVARS B code="0" good_at="1"\nSCRIPT PRE B fail.sh\n'
        "SCRIPT POST B post.sh $JOB $RETURN $PRE_SCRIPT_RETURN\n",
    )
    result = cluster.run("dsub_dag", "--wait", "defer.dag", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert order(tmp_path) == ["A"]  # B's jobs never ran: its PRE script failed
    assert (tmp_path / "scripts.txt").read_text() == "post B -1004 2\n"
    log = cluster.config.home / "dags" / "1" / "dag.log"
    text = log.read_text()
    assert "node A: PRE script exited with 5" in text and "node A: done" in text
