"""The scheduler's cost of running a workflow beside a flat cluster, and its memory for
a large DAG.

    .venv/bin/python bench/dag.py [--nodes 10000] [--workers 20x8] [--runs 3]
                                  [--memory-nodes 100000]

Per job (first table): a real scheduler process (``LocalCluster``, no workers) is
given, through the real client, either one flat cluster of N procs of a tiny script
(``dsub``) or a DAG of N nodes of one job each (``dsub-dag``'s path: every node's
submit file read, the DAG sent whole); then W simulated workers of S slots (those of
``bench/scheduler_cpu.py``: the real protocol, no process, every job answered at once
with exit code 0) run it. The DAG is made of chains and fans: groups of 100 nodes, a
root, 98 nodes after it and a last node after those 98, each group after the one
before. The scheduler process's CPU time (user + system) from the start of the
submission to the last job's acknowledged end, per job, is the scheduling overhead:
the DAG's must be at most 1.5 times the flat cluster's (the issue's target). The runs
alternate flat, DAG, flat, DAG... on fresh schedulers; medians are shown.

Memory (second table): a scheduler's state in this process, on a database in a
temporary folder, is given a DAG of M nodes (a chain of fans as above) by its own
handler, then reopened as after a restart; the table shows the growth of this
process's resident memory at each step and per node.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scheduler_cpu import FakeWorkers, _cpu  # noqa: E402

from control_node.client import Client  # noqa: E402
from control_node.local_cluster import LocalCluster, local_user_token  # noqa: E402
from scheduler import protocol as p  # noqa: E402
from scheduler.config import SchedulerConfig  # noqa: E402

#: Nodes per group: a root, GROUP - 2 nodes after it, one node after those.
GROUP = 100


def dag_text(nodes: int) -> str:
    """A DAG of ``nodes`` nodes in chains and fans (see the module's documentation)."""
    lines = [f"JOB n{i} job.sub" for i in range(nodes)]
    for start in range(0, nodes, GROUP):
        end = min(start + GROUP, nodes)
        if start:
            lines.append(f"PARENT n{start - 1} CHILD n{start}")
        middle = [f"n{i}" for i in range(start + 1, end - 1)]
        if middle:
            lines.append(f"PARENT n{start} CHILD {' '.join(middle)}")
            lines.append(f"PARENT {' '.join(middle)} CHILD n{end - 1}")
        elif end - 1 > start:
            lines.append(f"PARENT n{start} CHILD n{end - 1}")
    return "\n".join(lines) + "\n"


def one_run(root: Path, kind: str, nodes: int, workers: int, slots: int) -> dict[str, float]:
    cluster = LocalCluster(root / f"home-{kind}-{time.monotonic_ns()}", workers=0, slots=1)
    cluster.home.mkdir(parents=True)
    cluster.logs.mkdir()
    cluster.token = local_user_token(cluster.home)
    try:
        access = cluster.start_scheduler("--allow-pool-secret")
        sched = psutil.Process(cluster.processes["scheduler"].pid)
        secret = p.password_key(p.read_secret(SchedulerConfig(home=cluster.home).secret_path))
        with Client(scheduler=f"127.0.0.1:{access.port}", token=cluster.token) as client:
            cpu0, wall0 = _cpu(sched), time.perf_counter()
            if kind == "flat":
                sub = client.submit(root / "flat.sub", cwd=str(root))
                assert len(sub.job_ids) == nodes
            else:
                run = client.submit_dag(root / "bench.dag")
                assert len(run.clusters) == nodes
            cpu1 = _cpu(sched)
            sim = FakeWorkers(access.port, secret, nodes, slots)
            asyncio.run(sim.run(workers, 300.0 + nodes / 20))
            cpu2, wall2 = _cpu(sched), time.perf_counter()
            if kind == "dag":
                info = run.wait(timeout=60)
                assert info.state == "done", info.reason
        twice = [j for j, n in sim.runs.items() if n != 1]
        assert len(sim.runs) == nodes and not twice, f"not dispatched once: {twice[:5]}"
    finally:
        cluster.stop()
    return {
        "submit_cpu_us": (cpu1 - cpu0) / nodes * 1e6,
        "run_cpu_us": (cpu2 - cpu1) / nodes * 1e6,
        "total_cpu_us": (cpu2 - cpu0) / nodes * 1e6,
        "wall_s": wall2 - wall0,
    }


def measure(nodes: int, workers: int, slots: int, runs: int) -> dict[str, list[dict[str, float]]]:
    """``runs`` runs of each kind (``flat``, ``dag``), alternating."""
    results: dict[str, list[dict[str, float]]] = {"flat": [], "dag": []}
    with tempfile.TemporaryDirectory(prefix="dfarm-bench-dag-") as tmp:
        root = Path(tmp)
        (root / "job.sh").write_text("#!/bin/sh\ntrue\n")
        (root / "job.sh").chmod(0o755)
        (root / "job.sub").write_text("executable = job.sh\nqueue\n")
        (root / "flat.sub").write_text(f"executable = job.sh\nqueue {nodes}\n")
        (root / "bench.dag").write_text(dag_text(nodes))
        for _ in range(runs):
            for kind in ("flat", "dag"):
                results[kind].append(one_run(root, kind, nodes, workers, slots))
    return results


def per_job(nodes: int, workers: int, slots: int, runs: int) -> tuple[str, float]:
    results = measure(nodes, workers, slots, runs)
    rows = []
    for kind, found in results.items():
        med = {k: statistics.median(r[k] for r in found) for k in found[0]}
        rows.append([
            "flat cluster" if kind == "flat" else "DAG (chains and fans)",
            nodes, f"{med['submit_cpu_us']:.0f}", f"{med['run_cpu_us']:.0f}",
            f"{med['total_cpu_us']:.0f}", f"{med['wall_s']:.1f}",
        ])  # fmt: skip
    flat = statistics.median(r["total_cpu_us"] for r in results["flat"])
    dag = statistics.median(r["total_cpu_us"] for r in results["dag"])
    for kind, found in results.items():
        each = ", ".join(f"{r['total_cpu_us']:.0f}" for r in found)
        print(f"{kind}: total CPU us/job of each run, in order: {each}")
    headers = ["submission", "jobs", "submit CPU us/job", "run CPU us/job",
               "total CPU us/job", "wall s"]  # fmt: skip
    return tabulate(rows, headers, tablefmt="github"), dag / flat


def memory(nodes: int) -> str:
    """Resident memory of a scheduler state holding a DAG of ``nodes`` nodes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from core_fakes import FakeClock, close_state, open_state, user

    from scheduler.dag_handlers import on_submit_dag

    proc = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="dfarm-bench-dagmem-") as tmp:
        home = Path(tmp) / "home"
        clock = FakeClock()
        state = open_state(home, clock)
        gc.collect()
        before = proc.memory_info().rss
        caller = user("alice")
        dag = state.store.clusters.reserve_cluster("alice", clock())
        data = b"#!/bin/sh\ntrue\n"
        sha = hashlib.sha256(data).hexdigest()
        state.spool.input_dir(dag).mkdir(parents=True, exist_ok=True)
        (state.spool.input_dir(dag) / sha).write_bytes(data)
        script = p.InputFile(name="job.sh", sha256=sha, size=len(data))
        spec = p.JobSpec(executable="job.sh", inputs=[script])
        names = [f"n{i}" for i in range(nodes)]
        parents: list[list[str]] = [[] for _ in range(nodes)]
        for start in range(0, nodes, GROUP):
            end = min(start + GROUP, nodes)
            if start:
                parents[start] = [names[start - 1]]
            for i in range(start + 1, end - 1):
                parents[i] = [names[start]]
            if end - 1 > start + 1:
                parents[end - 1] = names[start + 1 : end - 1]
        message = p.SubmitDag(
            dag=dag,
            name="memory.dag",
            nodes=[
                p.DagNodeSubmit(name=n, submit_file="job.sub", jobs=[spec], parents=ps)
                for n, ps in zip(names, parents, strict=True)
            ],
        )
        t0 = time.perf_counter()
        with state.store.transaction():
            reply = on_submit_dag(state, caller, message)
        state.store.commit()
        submit_s = time.perf_counter() - t0
        assert isinstance(reply, p.DagSubmitted), reply
        del message
        gc.collect()
        loaded = proc.memory_info().rss
        close_state(state)
        del state
        gc.collect()
        base = proc.memory_info().rss
        t0 = time.perf_counter()
        state = open_state(home, clock)
        reopen_s = time.perf_counter() - t0
        gc.collect()
        reopened = proc.memory_info().rss
        runs = len(state.dags.runs)
        close_state(state)
    rows = [
        ["submitted (in memory with its first jobs queued)", nodes,
         f"{(loaded - before) / 2**20:.0f}", f"{(loaded - before) / nodes:.0f}", f"{submit_s:.1f}"],
        ["reopened (a restart)", nodes, f"{(reopened - base) / 2**20:.0f}",
         f"{(reopened - base) / nodes:.0f}", f"{reopen_s:.1f}"],
    ]  # fmt: skip
    assert runs == 1
    headers = ["scheduler state", "nodes", "RSS growth MiB", "bytes/node", "seconds"]
    return tabulate(rows, headers, tablefmt="github")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10000)
    parser.add_argument("--workers", default="20x8", help="W simulated workers of S slots")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-nodes", type=int, default=100000)
    args = parser.parse_args()
    workers, slots = (int(x) for x in args.workers.split("x"))
    table, ratio = per_job(args.nodes, workers, slots, args.runs)
    print(table)
    verdict = "meets" if ratio <= 1.5 else "misses"
    print(f"\nDAG / flat total CPU per job: {ratio:.2f} ({verdict} the target of at most 1.5)\n")
    print(memory(args.memory_nodes))
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
