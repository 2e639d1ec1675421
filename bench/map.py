"""``Client.map`` beside Dask's ``client.map``, both on 2 workers of 1 slot.

    .venv/bin/python bench/map.py [--items 10000] [--quick]
    .venv/bin/python bench/map.py --latency [--runs 60]

dfarm: a local cluster (scheduler and 2 workers of 1 slot, as ``dfarm up -w 2``,
whose workers keep warm interpreters by default) and ``client.map(sq, range(N))``
with the default ``chunk_size`` (``"auto"``), then with explicit sizes; the latency
of a one-item map and of ``client.submit(sq, 3).result()``, from the call to the
result on the client; a function that imports numpy; ``chunk_size=1``, the latency
and the numpy function again on workers started with ``--no-warm-map`` (a new
Python per job); fair share: the wait of bob's 10-item map submitted while alice's
map of N items of a millisecond runs, against the run time of one of alice's jobs.
Dask: ``LocalCluster(n_workers=2, threads_per_worker=1)``, up for the whole run, when
``dask[distributed]`` is installed (``pip install -e '.[bench]'``; its rows read "not
available" otherwise): each measurement is taken in turns with Dask's (medians of
the rounds), so that the load of a shared machine weighs on both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_node import Client  # noqa: E402
from control_node.local_cluster import LocalCluster, local_accounts  # noqa: E402

#: The issue's targets: (minimum ratio of items/s, or maximum ratio of latency) to Dask.
TARGETS = {"default": 1.0, "chunk 1": 0.5, "latency": 2.0}


def sq(x: int) -> int:
    return x * x


def with_numpy(x: int) -> float:
    import numpy

    return float(numpy.arange(x % 100 + 1).sum())


def has_numpy() -> bool:
    return importlib.util.find_spec("numpy") is not None


def dask_reason() -> str | None:
    """Why Dask cannot be measured here, or None."""
    for module in ("dask", "distributed"):
        if importlib.util.find_spec(module) is None:
            return f"{module} not installed (pip install -e '.[bench]')"
    return None


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextmanager
def dfarm_client(*worker_args: str) -> Iterator[Client]:
    """A client of a fresh local cluster of 2 workers of 1 slot."""
    with dfarm_cluster(*worker_args) as (client, _):
        yield client


@contextmanager
def dfarm_cluster(*worker_args: str) -> Iterator[tuple[Client, Path]]:
    """A client of a fresh local cluster of 2 workers of 1 slot, and its home."""
    with tempfile.TemporaryDirectory(prefix="dfarm-bench-map-") as tmp:
        cluster = LocalCluster(Path(tmp) / "home", workers=0, slots=1)
        access = cluster.start()
        try:
            names = ["bench-1", "bench-2"]
            credentials = local_accounts(cluster.home, names, user=False)[1]
            for name in names:
                cluster.add_worker(name, *worker_args, credential_file=credentials[name])
            with Client(scheduler=f"{access.host}:{access.port}", token=access.token) as client:
                while len(client.workers()) < 2:
                    time.sleep(0.05)
                client.map(sq, range(2), chunk_size=1, files_dest=Path(tmp) / "files")  # warm up
                yield client, cluster.home
        finally:
            cluster.stop()


#: A measurement: the median of its runs for dfarm, and for Dask (None: no counterpart).
Pair = tuple[float, float | None]


def paired(ours: Callable[[], float], theirs: Callable[[], float] | None, rounds: int) -> Pair:
    """Medians of ``rounds`` runs of each, taken in turns (dfarm, Dask, dfarm, ...),
    so that a change of the machine's load weighs on both alike."""
    mine: list[float] = []
    base: list[float] = []
    for _ in range(rounds):
        mine.append(ours())
        if theirs is not None:
            base.append(theirs())
    return statistics.median(mine), statistics.median(base) if base else None


def measure_dfarm(
    dask: Any, items: int, few: int, sizes: list[int], latency_runs: int, *worker_args: str
) -> dict[str, Pair]:
    """On workers started with ``worker_args`` (none: warm interpreters, the default),
    each beside the same measurement of ``dask`` (a Dask client, or None), in turns:
    items/s of mapping ``sq`` with the default ``chunk_size`` and ``chunk_size=1``
    (``few`` items), the latency of a one-item map and of ``submit(sq, 3).result()``
    (seconds), the numpy function with ``chunk_size=1`` (items/s); on default
    workers also explicit chunk sizes (no Dask counterpart)."""
    out: dict[str, Pair] = {}
    with dfarm_client(*worker_args) as client, tempfile.TemporaryDirectory() as files:

        def rate(fn: Callable[[Any], Any], n: int, **options: Any) -> Callable[[], float]:
            def run() -> float:
                return n / timed(lambda: client.map(fn, range(n), files_dest=files, **options))

            return run

        def dask_rate(fn: Callable[[Any], Any], n: int) -> Callable[[], float] | None:
            if dask is None:
                return None
            return lambda: n / timed(lambda: dask.gather(dask.map(fn, range(n), pure=False)))

        def dask_latency() -> float:
            return timed(lambda: dask.submit(sq, 3, pure=False).result())

        theirs_latency = dask_latency if dask is not None else None
        cold = bool(worker_args)
        if not cold:
            out["default"] = paired(rate(sq, items), dask_rate(sq, items), 1)
        out["chunk 1"] = paired(rate(sq, few, chunk_size=1), dask_rate(sq, few), 3)
        if not cold:
            for size in sizes:
                out[f"chunk {size}"] = paired(rate(sq, items, chunk_size=size), None, 1)
        out["latency"] = paired(
            lambda: timed(lambda: client.map(sq, [3], files_dest=files)),
            theirs_latency,
            latency_runs,
        )
        if not cold:
            out["submit"] = paired(
                lambda: timed(lambda: client.submit(sq, 3).result()),
                theirs_latency,
                latency_runs,
            )
            out.update(measure_phases(client, latency_runs))
        if has_numpy():
            out["numpy"] = paired(
                rate(with_numpy, few, chunk_size=1), dask_rate(with_numpy, few), 1
            )
    if cold:
        return {f"cold {key}": pair for key, pair in out.items()}
    return out


#: The phases of one call, from its job's record and its item's start on the worker.
PHASES = {
    "phase submit": "submit(sq, 3) returns (the job is queued)",
    "phase dispatch": "the scheduler starts it on a worker",
    "phase start": "the worker starts sq in a warm interpreter",
    "phase run": "sq runs and the scheduler records the job's end",
    "phase result": "the result reaches the client",
}


def measure_phases(client: Client, runs: int) -> dict[str, Pair]:
    """Where the time of ``submit(sq, 3).result()`` goes: the median of each phase
    (seconds), from the call's clock, the job's record and the item's stats (one
    machine, one clock)."""
    spans: dict[str, list[float]] = {key: [] for key in PHASES}
    for _ in range(runs):
        called = time.time()
        future = client.submit(sq, 3)
        queued = time.time()
        future.result()
        done = time.time()
        (job,) = client.jobs(ids=[future.id], states=[])
        started = future.stats.started if future.stats is not None else 0.0
        assert job.start_time is not None and job.end_time is not None
        spans["phase submit"].append(queued - called)
        spans["phase dispatch"].append(job.start_time - called)
        spans["phase start"].append(started - job.start_time)
        spans["phase run"].append(job.end_time - started)
        spans["phase result"].append(done - job.end_time)
    return {key: (statistics.median(values), None) for key, values in spans.items()}


@contextmanager
def dask_client() -> Iterator[Any]:
    """A Dask client of ``LocalCluster(n_workers=2, threads_per_worker=1)``, warmed up;
    None where Dask is not installed."""
    if dask_reason() is not None:
        yield None
        return
    from dask.distributed import Client as DaskClient
    from dask.distributed import LocalCluster as DaskCluster

    with (
        DaskCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        DaskClient(cluster) as client,
    ):
        client.gather(client.map(sq, range(10), pure=False))
        yield client


def slow(x: int) -> int:
    """An item of a millisecond."""
    time.sleep(0.001)
    return x


def user_client(client: Client, home: Path, name: str) -> Client:
    """A client of the same scheduler as ``name``, a user added for it."""
    added = subprocess.run(
        [sys.executable, "-m", "control_node.cli.dfarm", "user", "add", name, "--home", str(home)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = added.stdout.strip().splitlines()[-1]
    return Client(scheduler=f"{client.endpoint.host}:{client.endpoint.port}", token=token)


def measure_fair_share(items: int) -> dict[str, float | None]:
    """alice maps ``slow`` over ``items`` items in the background; once her jobs run,
    bob maps it over 10: the seconds bob waits, and the median run time of alice's
    jobs (a chunk's)."""
    with (
        dfarm_cluster() as (client, home),
        tempfile.TemporaryDirectory() as files,
        user_client(client, home, "alice") as alice,
        user_client(client, home, "bob") as bob,
    ):
        handle = alice.map_async(slow, range(items))
        while not any(job.state == "running" for job in alice.cluster_jobs(int(handle.id))):
            time.sleep(0.05)
        waited = timed(lambda: bob.map(slow, range(10), files_dest=files))
        found = alice.map_results(handle.id, timeout=3600, files_dest=files)
    per_job: dict[str, float] = {}
    for stat in found.stats:
        per_job[stat.job_id] = per_job.get(stat.job_id, 0.0) + stat.seconds
    return {"fair bob": waited, "fair chunk": statistics.median(per_job.values())}


def rows(items: int, few: int, sizes: list[int], latency_runs: int = 20) -> list[tuple[str, ...]]:
    """The table's rows: label, dfarm, Dask, ratio, target, verdict."""
    if __name__ != "__main__":  # imported by run.py: the workers cannot import this file
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    reason = dask_reason()
    with dask_client() as dask:
        print(f"map: dfarm beside Dask, {items:,} items ...", file=sys.stderr)
        pairs = measure_dfarm(dask, items, few, sizes, latency_runs)
        print("map: dfarm (--no-warm-map workers) beside Dask ...", file=sys.stderr)
        pairs.update(measure_dfarm(dask, items, few, sizes, latency_runs, "--no-warm-map"))
    print(f"map: dfarm, fair share beside a {items:,}-item map ...", file=sys.stderr)
    fair = measure_fair_share(items)
    labels = {
        "default": f"map(sq, range({items:,})), chunk_size default (items/s)",
        "chunk 1": f"map(sq, range({few:,})), chunk_size=1 (items/s)",
        **{f"chunk {s}": f"map(sq, range({items:,})), chunk_size={s} (items/s)" for s in sizes},
        "latency": f"one-item map, call to result, median of {latency_runs} (ms)",
        "submit": f"submit(sq, 3).result(), median of {latency_runs} (ms)",
        **{key: f"  of which: {text}, median (ms)" for key, text in PHASES.items()},
        "numpy": f"a function importing numpy, {few:,} items, chunk_size=1 (items/s)",
        "cold chunk 1": f"--no-warm-map workers: map(sq, range({few:,})), chunk_size=1 (items/s)",
        "cold latency": f"--no-warm-map workers: one-item map, median of {latency_runs} (ms)",
        "cold numpy": f"--no-warm-map workers: the numpy function, {few:,} items, chunk_size=1"
        " (items/s)",
    }
    base_of = {
        "submit": "latency",
        "cold chunk 1": "chunk 1",
        "cold latency": "latency",
        "cold numpy": "numpy",
    }
    table: list[tuple[str, ...]] = []
    for key, label in labels.items():
        if key not in pairs:
            table.append((label, "numpy not installed", "-", "-", "-", "-"))
            continue
        mine, base = pairs[key]
        latency = key.endswith(("latency", "submit")) or key in PHASES
        scale, fmt = (1000, ".1f") if latency else (1, ".0f")
        target = None if key.startswith("cold") else TARGETS.get(base_of.get(key, key))
        if reason is not None:
            dask_text, ratio_text, verdict = f"not available: {reason}", "-", "-"
        elif base is None:
            dask_text, ratio_text, verdict = "-", "-", "-"
        else:
            ratio = mine / base
            dask_text, ratio_text = format(base * scale, fmt), f"{ratio:.2f}"
            ok = ratio <= target if latency and target else ratio >= (target or 0)
            verdict = "-" if target is None else ("met" if ok else "NOT met")
        sign = "<=" if latency else ">="
        table.append(
            (label, format(mine * scale, fmt), dask_text, ratio_text,
             "-" if target is None else f"{sign} {target:.2f}", verdict)
        )  # fmt: skip
    ratio = fair["fair bob"] / fair["fair chunk"]  # type: ignore[operator]
    table.append(
        (f"fair share: bob's 10-item map after alice's {items:,}-item one, in alice's"
         f" jobs of {fair['fair chunk']:.2f} s (s)",
         f"{fair['fair bob']:.2f}", "-", f"{ratio:.2f} jobs", "<= 2.00 jobs",
         "met" if ratio <= 2 else "NOT met")
    )  # fmt: skip
    return table


HEADERS = ("Client.map", "dfarm", "Dask", "ratio", "target", "")


def latency_rows(runs: int) -> list[tuple[str, ...]]:
    """``submit(sq, 3).result()`` beside Dask's one task, in turns, and its phases
    (milliseconds): the latency target alone, for a quick look."""
    if dask_reason() is not None:
        raise SystemExit(f"--latency needs Dask: {dask_reason()}")
    with dask_client() as dask, dfarm_client() as client:
        mine, base = paired(
            lambda: timed(lambda: client.submit(sq, 3).result()),
            lambda: timed(lambda: dask.submit(sq, 3, pure=False).result()),
            runs,
        )
        phases = measure_phases(client, runs)
    assert base is not None
    ratio = mine / base
    table: list[tuple[str, ...]] = [
        (f"submit(sq, 3).result(), median of {runs} (ms)", f"{mine * 1000:.1f}",
         f"{base * 1000:.1f}", f"{ratio:.2f}", f"<= {TARGETS['latency']:.2f}",
         "met" if ratio <= TARGETS["latency"] else "NOT met")
    ]  # fmt: skip
    for key, text in PHASES.items():
        table.append(
            (f"  of which: {text} (ms)", f"{phases[key][0] * 1000:.1f}", "-", "-", "-", "-")
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    parser.add_argument("--latency", action="store_true", help="the latency of a call only")
    parser.add_argument("--runs", type=int, default=60, help="rounds of --latency")
    args = parser.parse_args()
    if args.latency:
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(tabulate(latency_rows(args.runs), headers=HEADERS, disable_numparse=True))
        return 0
    items = 2_000 if args.quick else args.items
    few = min(items, 100 if args.quick else 300)
    table = rows(items, few, [10, 100])
    print("ratios are dfarm / Dask; 2 workers of 1 slot each, the same run")
    print(tabulate(table, headers=HEADERS, disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
