"""``dresults``: the results of a parameter sweep, summarized."""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from control_node import render
from control_node.cli.common import add_connection_options, connect, run_command
from control_node.client import Client
from control_node.connection import DfarmError
from control_node.results_dags import dag_clusters
from control_node.results_file import SUFFIX, read_results
from control_node.sweep import Sweep, histogram_lines
from scheduler import protocol as p

CLEAR = "\033[H\033[J"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dresults",
        description="Summarize the results of a cluster: each job's parameters and result,"
        " statistics, a histogram and who produced them.",
    )
    parser.add_argument(
        "cluster",
        metavar="CLUSTER",
        help="cluster id, DAG id (its node clusters' jobs together), or a results file"
        " (<cluster>.results.jsonl) to read without a scheduler",
    )
    parser.add_argument("--csv", action="store_true", help="print one CSV row per job")
    parser.add_argument("--plot", metavar="FILE.png", type=Path, help="write a density plot")
    parser.add_argument("--key", help="result key to plot and draw (default: the first)")
    parser.add_argument("--summary", action="store_true", help="leave out the table of jobs")
    parser.add_argument(
        "--watch", action="store_true", help="redraw the summary as results arrive, until done"
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, metavar="S", help="seconds between redraws"
    )
    add_connection_options(parser)
    args = parser.parse_args(argv)
    from_file = args.cluster.endswith(SUFFIX)
    if from_file and args.watch:
        parser.error("--watch needs a cluster id, not a results file")
    if not (from_file or args.cluster.isdigit()):
        parser.error(f"not a cluster id or a results file: {args.cluster!r}")

    def body() -> int:
        if from_file:
            sweep = read_file(Path(args.cluster))
            args.cluster = str(sweep.jobs[0].cluster)
            source = Source(int(args.cluster))
        else:
            with connect(args) as client:
                source = find_source(client, int(args.cluster))
                sweep = watch(client, args, source) if args.watch else fetch(client, source)
        if args.json:
            print(render.dump_json({**source.json(), **sweep.report()}))
        elif args.csv:
            print(csv_text(sweep), end="")
        elif not args.watch:
            print(report_text(sweep, source.label(), args.key, table=not args.summary))
        if args.plot:
            write_plot(sweep, args)
        return 0

    return run_command("dresults", body)


@dataclass(frozen=True)
class Source:
    """Where a sweep's jobs are: a cluster, or a DAG's node clusters."""

    number: int
    #: For a DAG: its node clusters.
    clusters: tuple[int, ...] | None = None

    def label(self) -> str:
        if self.clusters is None:
            return f"Cluster {self.number}"
        return f"DAG {self.number} (clusters {' '.join(map(str, self.clusters))})"

    def json(self) -> dict[str, object]:
        if self.clusters is None:
            return {"cluster": self.number}
        return {"dag": self.number, "clusters": list(self.clusters)}


def find_source(client: Client, number: int) -> Source:
    """Cluster ``number``, or DAG ``number`` when no cluster of yours has that number."""
    clusters = dag_clusters(client, number)
    return Source(number) if clusters is None else Source(number, tuple(clusters))


def fetch(client: Client, source: Source) -> Sweep:
    if source.clusters is None:
        jobs = client.cluster_jobs(source.number)
        if not jobs:
            raise DfarmError(f"no job of yours in cluster {source.number}")
        return Sweep(jobs)
    jobs = [job for cluster in source.clusters for job in client.cluster_jobs(cluster)]
    if not jobs:
        raise DfarmError(f"DAG {source.number} has submitted no node yet")
    return Sweep(jobs)


def read_file(path: Path) -> Sweep:
    """The sweep of a results file, as ``dsub --wait`` or ``dfetch`` wrote it."""
    try:
        records = read_results(path)
    except OSError as exc:
        raise DfarmError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, p.ProtocolError) as exc:
        raise DfarmError(f"{path} is not a results file: {exc}") from None
    if not records:
        raise DfarmError(f"{path} has no job")
    return Sweep([r.job for r in records])


def watch(client: Client, args: argparse.Namespace, source: Source) -> Sweep:
    """Redraw the summary until no job is idle or running; returns the last state."""
    tty = sys.stdout.isatty()
    while True:
        if source.clusters is not None:  # nodes submitted since
            source = find_source(client, source.number)
        sweep = fetch(client, source)
        text = report_text(sweep, source.label(), args.key, table=False)
        if not (args.json or args.csv):
            print((CLEAR if tty else "") + text + "\n", flush=True)
        if not sweep.pending:
            return sweep
        time.sleep(max(0.1, args.interval))


def key_of(sweep: Sweep, key: str | None) -> str | None:
    if key is not None and key not in sweep.keys:
        raise DfarmError(f"no result has the key {key!r} (keys: {', '.join(sweep.keys) or '-'})")
    return key or (sweep.keys[0] if sweep.keys else None)


def report_text(sweep: Sweep, label: str, key: str | None, table: bool = True) -> str:
    """The table of jobs, the summary, the histogram and the contributions."""
    parts = []
    if table:
        params, keys = list(sweep.param_columns.values()), list(sweep.key_columns.values())
        headers = ["JOB", *params, *[k.upper() for k in keys], "WORKER", "STATUS"]
        rows = [
            [r["job"], *[r[k] for k in params], *[_num(r[k]) for k in keys],
             r["worker"] or "-", r["status"]]
            for r in sweep.rows()
        ]  # fmt: skip
        parts.append(tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True))
    parts.append(
        f"{label}: {len(sweep.jobs)} jobs, {len(sweep.done)} results,"
        f" {len(sweep.failures)} failures, {len(sweep.pending)} pending"
    )
    summary = sweep.summary()
    if summary:
        names = ["count", "mean", "sd", "cv", "min", "q1", "median", "q3", "max"]
        rows = [[k, *(_num(getattr(s, n)) for n in names)] for k, s in summary.items()]
        parts.append(
            tabulate(rows, headers=["RESULT", *[n.upper() for n in names]], tablefmt="plain",
                     disable_numparse=True)
        )  # fmt: skip
    chosen = key_of(sweep, key)
    if chosen is not None and sweep.values(chosen):
        parts.append(f"Histogram of {chosen}:\n" + "\n".join(histogram_lines(sweep.values(chosen))))
    for field, title in (("owner", "USER"), ("worker", "WORKER")):
        counts = sweep.contributions(field)
        if counts:
            parts.append(tabulate(counts, headers=[title, "RESULTS", "FAILURES"], tablefmt="plain"))
    return "\n\n".join(parts)


def csv_text(sweep: Sweep) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=sweep.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sweep.rows())
    return out.getvalue()


def write_plot(sweep: Sweep, args: argparse.Namespace) -> None:
    key = key_of(sweep, args.key)
    if key is None:
        raise DfarmError(f"cluster {args.cluster} has no results to plot yet")
    from control_node.sweep_plot import plot_sweep  # matplotlib only when plotting

    try:
        width, height = plot_sweep(sweep, key, args.plot, f"cluster {args.cluster}: {key}")
    except OSError as exc:
        raise DfarmError(f"cannot write {args.plot}: {exc.strerror or exc}") from None
    if not (args.json or args.csv):
        print(f"plot written to {args.plot} ({width}x{height})")


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
