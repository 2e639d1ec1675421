"""`make bench`: every performance target of dfarm in one table.

    .venv/bin/python bench/run.py [--runs 3] [--quick]

Each figure is the median of several runs (spread in brackets), next to its
baseline measured in the same run on the same machine: the spawn rate of
`xargs -P2`, a plain loopback copy, and HyperQueue (from PyPI, run in a
private network namespace; skipped with the reason when it cannot run); the
scheduler's CPU per job with 1,000 simulated workers of 16 slots is compared
with 20 of 8; ``Client.map`` is compared with Dask's on 2 workers of 1 slot
(bench/map.py, one run); the results of big clusters are fetched by ``dsub --wait``
and ``dfetch`` (bench/results_fetch.py). The machines are shared and noisy: compare ratios, not

(bench/map.py, one run); a DAG's scheduler CPU per node with a flat cluster's per
job (bench/dag.py). The machines are shared and noisy: compare ratios, not
absolute times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))

import container_start  # noqa: E402
import dag as dag_bench  # noqa: E402
import hq_baseline  # noqa: E402
import latency  # noqa: E402
import map as map_bench  # noqa: E402
import queue_views  # noqa: E402
import results_fetch  # noqa: E402
import scheduler_cpu  # noqa: E402
import staging  # noqa: E402
import throughput  # noqa: E402


def med(values: list[float]) -> float:
    return statistics.median(values)


def show(value: float, values: list[float], fmt: str) -> str:
    return f"{format(value, fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def compared(
    label: str,
    values: list[float],
    baseline: str,
    base: list[float],
    fmt: str,
    target: str = "-",
    ok: Callable[[float], bool] | None = None,
) -> tuple[str, ...]:
    """A table row: dfarm's ``values`` beside the ``baseline``'s ``base``, their ratio
    of medians, and whether ``ok`` holds for that ratio (no verdict without ``ok``)."""
    ratio = med(values) / med(base)
    return (
        label,
        show(med(values), values, fmt),
        f"{baseline} {show(med(base), base, fmt)}",
        f"{ratio:.2f}",
        target,
        "-" if ok is None else verdict(ok(ratio)),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    args = parser.parse_args()
    jobs, size_mb, sim_jobs = (500, 256, 2000) if args.quick else (2000, 1024, 10000)
    pool_jobs = 20000 if args.quick else 100000
    rows = []

    hq_reason = hq_baseline.available()
    print(f"throughput: {jobs} jobs ...", file=sys.stderr)
    t = throughput.measure(jobs, workers=2, runs=args.runs)
    rates = [jobs / s for s in t["dfarm"]]
    xargs_rates = [jobs / s for s in t["xargs"]]
    if hq_reason is None:
        print("throughput: HyperQueue ...", file=sys.stderr)
        hq_rates = [jobs / hq_baseline.throughput(jobs, 2) for _ in range(args.runs)]
        label = f"1. throughput, {jobs} jobs, 2 slots (jobs/s)"
        rows.append(
            compared(label, rates, "HyperQueue", hq_rates, ".0f", ">= 1.00", lambda r: r >= 1.0)
        )
    else:
        rows.append(
            (
                "1. throughput vs HyperQueue",
                show(med(rates), rates, ".0f"),
                f"skipped: {hq_reason}",
                "-",
                ">= 1.00",
                "-",
            )
        )
    rows.append(
        compared("   throughput vs process spawning", rates, "xargs -P2", xargs_rates, ".0f",
                 ">= 0.50", lambda r: r >= 0.5)
    )  # fmt: skip

    print("latency ...", file=sys.stderr)
    lat = [s * 1000 for s in latency.latency(20)]
    if hq_reason is None:
        hq_lat = [s * 1000 for s in hq_baseline.latency(20)]
        rows.append(
            compared("2. latency, one job, median of 20 (ms)", lat, "HyperQueue", hq_lat, ".1f",
                     "<= 20 ms, <= 3.00", lambda r: med(lat) <= 20 and r <= 3)
        )  # fmt: skip
    else:
        rows.append(
            (
                "2. latency, one job, median of 20 (ms)",
                show(med(lat), lat, ".1f"),
                f"skipped: {hq_reason}",
                "-",
                "<= 20 ms",
                verdict(med(lat) <= 20),
            )
        )

    print("container start latency ...", file=sys.stderr)
    starts = {k: [s * 1000 for s in v] for k, v in container_start.measure(10).items()}
    for runtime in ("bubblewrap", "podman"):
        label = f"   latency, one job in a container ({runtime}), median of 10 (ms)"
        if runtime in starts:
            rows.append(compared(label, starts[runtime], "no container", starts["plain"], ".1f"))
        else:
            rows.append((label, "-", f"skipped: {runtime} does not work here", "-", "-", "-"))

    print(f"staging: {size_mb} MiB ...", file=sys.stderr)
    st = staging.measure(size_mb, args.runs)
    copy_rates = [size_mb / s for s in st["copy"]]
    # In: control node -> sandbox; out: job end -> fetched. A worker on the spool's
    # file system links files with it; one elsewhere moves them over FTP.
    ways = (
        ("link", "in", "3. staging {} MiB in, worker on the spool's disk (MiB/s)"),
        ("link", "out", "   staging {} MiB out, worker on the spool's disk (MiB/s)"),
        ("ftp", "in", "   staging {} MiB in, worker elsewhere: FTP (MiB/s)"),
        ("ftp", "out", "   staging {} MiB out, worker elsewhere: FTP (MiB/s)"),
    )
    for route, key, text in ways:
        values = [size_mb / s for s in st[key][route]]
        rows.append(
            compared(text.format(size_mb), values, "loopback copy", copy_rates, ".0f",
                     ">= 0.50", lambda r: r >= 0.5)
        )  # fmt: skip
    twice = [size_mb / s for s in st["twice"]]
    label = "   for reference: the same copy twice in sequence (MiB/s)"
    rows.append(compared(label, twice, "loopback copy", copy_rates, ".0f"))
    relayed = [size_mb / s for s in st["relayed"]]
    label = "   for reference: the two copies, the first relayed on as it arrives (MiB/s)"
    rows.append(compared(label, relayed, "loopback copy", copy_rates, ".0f"))
    peak = max(st["peak_rss"].values()) / 2**20
    rows.append(
        (
            "   peak RSS of any process (MiB)",
            f"{peak:.0f}",
            "-",
            "-",
            "flat",
            verdict(peak < size_mb / 4),
        )
    )

    print("scheduler CPU with simulated workers ...", file=sys.stderr)
    for waiting, what in (
        ("none", ""),
        ("await", ", plus a client waiting for the cluster to end"),
        ("updates", ", plus a client shown each job's update"),
    ):
        cpu = [
            scheduler_cpu.measure(sim_jobs, 20, 8, waiting=waiting)["total_cpu_us"]
            for _ in range(args.runs)
        ]
        label = f"4. scheduler CPU per job, {sim_jobs} jobs, 20x8 simulated slots{what} (µs)"
        target = waiting == "none"
        goal = verdict(med(cpu) < 250) if target else "-"
        rows.append((label, show(med(cpu), cpu, ".0f"), "-", "-", "< 250" if target else "-", goal))

    # Many workers: 1,000 of 16 slots against 20 of 8, their runs alternating. Most
    # jobs go to a slot freed by a completion, the first 16,000 aside.
    few, many = (20, 8), (1000, 16)
    print(f"scheduler CPU, {pool_jobs} jobs, 20x8 and 1000x16 simulated slots ...", file=sys.stderr)
    by_pool = scheduler_cpu.compare([few, many], pool_jobs, args.runs, waiting="none")
    small = [r["total_cpu_us"] for r in by_pool[few]]
    large = [r["total_cpu_us"] for r in by_pool[many]]
    label = "   scheduler CPU per job, {:,} jobs, {}x{} simulated slots (µs)"
    rows.append((label.format(pool_jobs, *few), show(med(small), small, ".0f"), "-", "-",
                 "<= 200", verdict(med(small) <= 200)))  # fmt: skip
    rows.append(
        compared(label.format(pool_jobs, *many), large, "20x8", small, ".0f", "<= 200, <= 1.10",
                 lambda r: med(large) <= 200 and r <= 1.10)
    )  # fmt: skip

    print(
        f"deep queue: {pool_jobs:,} idle jobs, views and 5 queue-page clients ...", file=sys.stderr
    )
    views = queue_views.measure(pool_jobs, 5, 20, lambda text: print(text, file=sys.stderr))
    rows += [(f"5. {r[0]}" if i == 0 else f"   {r[0]}", *r[1:]) for i, r in enumerate(views)]

    items = 2_000 if args.quick else 10_000
    for i, row in enumerate(map_bench.rows(items, 100 if args.quick else 300, [10, 100])):
        label = f"6. Client.map vs Dask: {row[0]}" if i == 0 else f"   {row[0]}"
        rows.append((label, *row[1:]))

    print("results of big clusters: dsub --wait and dfetch ...", file=sys.stderr)
    for i, row in enumerate(results_fetch.measure(args.runs, args.quick)):
        label = row[0].split(". ", 1)[-1]
        rows.append((f"7. {label}" if i == 0 else f"   {label}", *row[1:]))

    dag_nodes = 2_000 if args.quick else 10_000
    print(f"DAG of {dag_nodes:,} nodes beside a flat cluster ...", file=sys.stderr)
    by_kind = dag_bench.measure(dag_nodes, 20, 8, args.runs)
    flat_cpu = [r["total_cpu_us"] for r in by_kind["flat"]]
    dag_cpu = [r["total_cpu_us"] for r in by_kind["dag"]]
    label = f"8. scheduler CPU per DAG node, {dag_nodes:,} nodes in chains and fans (µs)"
    rows.append(
        compared(label, dag_cpu, "flat cluster", flat_cpu, ".0f", "<= 1.50", lambda r: r <= 1.5)
    )

    print(f"\nmedian of {args.runs} runs [min-max]; ratios are dfarm / baseline")
    headers = ("target", "dfarm", "baseline", "ratio", "target", "")
    print(tabulate(rows, headers=headers, disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
