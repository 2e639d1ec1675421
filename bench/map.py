"""``Client.map`` beside Dask's ``client.map``, both on 2 workers of 1 slot.

    .venv/bin/python bench/map.py [--items 10000] [--quick]

dfarm: a local cluster (scheduler and 2 workers of 1 slot, as ``dfarm up -w 2``,
whose workers keep warm interpreters by default) and ``client.map(sq, range(N))``
with the default ``chunk_size`` (``"auto"``), then with explicit sizes; the latency
of a one-item map and of ``client.submit(sq, 3).result()``, from the call to the
result on the client; a function that imports numpy; ``chunk_size=1``, the latency
and the numpy function again on workers started with ``--no-warm-map`` (a new
Python per job); fair share: the wait of bob's 10-item map submitted while alice's
map of N items of a millisecond runs, against the run time of one of alice's jobs.
Dask: ``LocalCluster(n_workers=2,
threads_per_worker=1)`` in the same run, when ``dask[distributed]`` is installed
(``pip install -e '.[bench]'``); its rows read "not available" otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
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


def measure_dfarm(
    items: int, few: int, sizes: list[int], latency_runs: int
) -> dict[str, float | None]:
    """On workers as they start by default (warm interpreters): items/s of each way of
    mapping ``sq`` (``few`` items with ``chunk_size=1``), the median latency of a
    one-item map and of ``submit(sq, 3).result()`` (seconds), and the numpy function
    with ``chunk_size=1``, whose import a warm interpreter pays once."""
    out: dict[str, float | None] = {}
    with dfarm_client() as client, tempfile.TemporaryDirectory() as files:

        def run(fn: Callable[[Any], Any], n: int, **options: Any) -> None:
            found = client.map(fn, range(n), files_dest=files, **options)
            assert len(found) == n

        out["default"] = items / timed(lambda: run(sq, items))
        out["chunk 1"] = few / timed(lambda: run(sq, few, chunk_size=1))
        for size in sizes:
            out[f"chunk {size}"] = items / timed(lambda: run(sq, items, chunk_size=size))  # noqa: B023
        out["latency"] = statistics.median(timed(lambda: run(sq, 1)) for _ in range(latency_runs))
        out["submit"] = statistics.median(
            timed(lambda: client.submit(sq, 3).result()) for _ in range(latency_runs)
        )
        if has_numpy():
            out["numpy"] = few / timed(lambda: run(with_numpy, few, chunk_size=1))
    return out


def measure_cold(few: int, latency_runs: int) -> dict[str, float | None]:
    """``chunk_size=1``, the one-item latency and the numpy function on workers
    started with ``--no-warm-map`` (a new Python for each job)."""
    with dfarm_client("--no-warm-map") as client, tempfile.TemporaryDirectory() as files:

        def run(fn: Callable[[Any], Any], n: int, **options: Any) -> None:
            assert len(client.map(fn, range(n), files_dest=files, **options)) == n

        return {
            "cold chunk 1": few / timed(lambda: run(sq, few, chunk_size=1)),
            "cold latency": statistics.median(
                timed(lambda: run(sq, 1)) for _ in range(latency_runs)
            ),
            "cold numpy": few / timed(lambda: run(with_numpy, few, chunk_size=1))
            if has_numpy()
            else None,
        }


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


def measure_dask(items: int, few: int, latency_runs: int) -> dict[str, float | None]:
    """The same figures for Dask (explicit chunk sizes have no Dask counterpart)."""
    from dask.distributed import Client as DaskClient
    from dask.distributed import LocalCluster as DaskCluster

    out: dict[str, float | None] = {}
    with (
        DaskCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        DaskClient(cluster) as client,
    ):
        client.gather(client.map(sq, range(10), pure=False))  # warm up

        def run(fn: Callable[[Any], Any], n: int) -> None:
            assert len(client.gather(client.map(fn, range(n), pure=False))) == n

        out["default"] = items / timed(lambda: run(sq, items))
        out["chunk 1"] = few / timed(lambda: run(sq, few))
        lat = [
            timed(lambda: client.submit(sq, 3, pure=False).result()) for _ in range(latency_runs)
        ]
        out["latency"] = statistics.median(lat)
        out["numpy"] = few / timed(lambda: run(with_numpy, few)) if has_numpy() else None
    return out


def rows(items: int, few: int, sizes: list[int], latency_runs: int = 20) -> list[tuple[str, ...]]:
    """The table's rows: label, dfarm, Dask, ratio, target, verdict."""
    if __name__ != "__main__":  # imported by run.py: the workers cannot import this file
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    reason = dask_reason()
    print(f"map: dfarm, {items:,} items ...", file=sys.stderr)
    ours = measure_dfarm(items, few, sizes, latency_runs)
    print("map: dfarm, workers with --no-warm-map ...", file=sys.stderr)
    ours.update(measure_cold(few, latency_runs))
    print(f"map: dfarm, fair share beside a {items:,}-item map ...", file=sys.stderr)
    fair = measure_fair_share(items)
    theirs: dict[str, float | None] = {}
    if reason is None:
        print(f"map: Dask, {items:,} items ...", file=sys.stderr)
        theirs = measure_dask(items, few, latency_runs)
    labels = {
        "default": f"map(sq, range({items:,})), chunk_size default (items/s)",
        "chunk 1": f"map(sq, range({few:,})), chunk_size=1 (items/s)",
        **{f"chunk {s}": f"map(sq, range({items:,})), chunk_size={s} (items/s)" for s in sizes},
        "latency": f"one-item map, call to result, median of {latency_runs} (ms)",
        "submit": f"submit(sq, 3).result(), median of {latency_runs} (ms)",
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
        mine, base = ours.get(key), theirs.get(base_of.get(key, key))
        if mine is None:
            table.append((label, "numpy not installed", "-", "-", "-", "-"))
            continue
        latency = key.endswith(("latency", "submit"))
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    args = parser.parse_args()
    items = 2_000 if args.quick else args.items
    few = min(items, 100 if args.quick else 300)
    table = rows(items, few, [10, 100])
    print("ratios are dfarm / Dask; 2 workers of 1 slot each, the same run")
    print(tabulate(table, headers=HEADERS, disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
