"""``dq``: the job queue."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator

from control_node import render, render_classad, render_dag, render_explain, render_queue
from control_node.cli.classad_options import add_classad_options, parse_classad_args
from control_node.cli.common import add_connection_options, connect, run_command
from control_node.cli.users import show_users
from control_node.client import Client
from scheduler import protocol as p
from scheduler.matching.classad import Expression


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dq", description="Show your jobs in the queue.")
    parser.add_argument("ids", nargs="*", metavar="ID", help="cluster or cluster.proc")
    parser.add_argument(
        "--all", action="store_true", help="also completed and removed jobs (default: queue only)"
    )
    parser.add_argument(
        "--allusers", "-allusers", action="store_true", help="every user's jobs, not only yours"
    )
    parser.add_argument(
        "-l", "-long", "--long", action="store_true", help="every attribute of each job as"
        " 'Attr = value' (as condor_q -long), then its parameters and result"
    )  # fmt: skip
    add_classad_options(parser)
    parser.add_argument(
        "-hold",
        "-held",
        "--hold",
        action="store_true",
        help="held jobs and why (as condor_q -hold)",
    )
    parser.add_argument(
        "-run", "--run", action="store_true", help="running jobs and where (as condor_q -run)"
    )
    parser.add_argument(
        "-batch", "--batch", action="store_true",
        help="one row per batch (JobBatchName, else cluster): the default, as condor_q's",
    )  # fmt: skip
    parser.add_argument(
        "-nobatch", "--nobatch", action="store_true",
        help="one row per job, written as the scheduler sends them",
    )  # fmt: skip
    parser.add_argument(
        "--users", action="store_true", help="each user's fair-share usage (as 'dfarm users')"
    )
    parser.add_argument(
        "-analyze",
        "--analyze",
        "-better-analyze",
        "--better-analyze",
        action="store_true",
        help="say why the jobs named are not running (a cluster: how many for which reason)",
    )
    parser.add_argument(
        "--summary", action="store_true", help="only the number of jobs in each state"
    )
    parser.add_argument(
        "-limit", "--limit", type=int, default=0, metavar="N", help="show at most N jobs"
    )
    parser.add_argument(
        "-dag", "--dag", action="store_true",
        help="the DAGs named (default: yours): their nodes by state, and each node",
    )  # fmt: skip
    add_connection_options(parser)
    args, expr, af_options = parse_classad_args(parser, argv)
    if args.dag:
        from control_node.render_dag import show_dags

        return run_command("dq", lambda: show_dags(args))
    if args.users:
        return run_command("dq", lambda: show_users(args))
    if args.analyze:
        if not args.ids:
            parser.error("-analyze needs a job id (CLUSTER or CLUSTER.PROC)")
        return run_command("dq", lambda: analyze(args))
    if args.summary:
        return run_command("dq", lambda: summary(args))

    return run_command("dq", lambda: show(args, expr, af_options))


def show(args: argparse.Namespace, expr: Expression | None, af_options: str) -> int:
    """The queue in the view asked for: the batch view from the scheduler's counts,
    or jobs written page by page as they arrive."""
    per_job = (
        args.nobatch or args.json or args.autoformat or args.long or args.hold or args.run
        or (not args.batch and (args.all or args.limit > 0))
    )  # fmt: skip
    clusters, pairs = _split_ids(args.ids)
    with connect(args) as client:
        if not per_job and expr is None and not pairs and not args.all and args.limit <= 0:
            print(render_queue.batch_view(client.batches(clusters, all_users=args.allusers)))
            return 0
        states = ["held"] if args.hold else ["running"] if args.run else [] if args.all else None
        pages = client.job_pages(
            args.ids, states=states, all_users=args.allusers, limit=0 if expr else args.limit,
            page=PAGE,
        )  # fmt: skip
        pages = _limited((render_classad.matching(page, expr) for page in pages), args.limit)
        if not per_job:
            jobs = [job for page in pages for job in page]
            if jobs:
                print(render_classad.batch_table(jobs))
            print()
            print(render_queue.totals_line("query", _states(jobs)))
        elif args.json and expr is None:
            # As they came: no record made of each only to be written back.
            wire = client.wire_pages(args.ids, states=states, all_users=args.allusers,
                                     limit=args.limit, page=PAGE)  # fmt: skip
            render_queue.write_json(wire, sys.stdout)
        elif args.json:
            render_queue.write_json(pages, sys.stdout)
        elif args.autoformat:
            af = render_classad.AutoFormat(args.autoformat, af_options)
            render_classad.check_attributes(af.attributes)
            for page in pages:
                if page:
                    print(render_classad.autoformat(page, af))
                    af = _no_header(af)  # -af:h's header comes once, atop the first job
        elif args.long:
            gap = ""
            for page in pages:
                if page:
                    print(gap + render.jobs_long(page))
                    gap = "\n"  # a blank line between jobs, as within a page
        elif args.hold or args.run:
            jobs = [job for page in pages for job in page]
            table = render_classad.held_table if args.hold else _running_table
            print(table(jobs))
        else:
            writer = render_queue.JobListWriter(sys.stdout, time.time())
            for page in pages:
                writer.write(page)
            writer.end()
            _dag_nodes_not_queued(client, args)
    return 0


def _dag_nodes_not_queued(client: Client, args: argparse.Namespace) -> None:
    """After the whole job list: the running DAGs' nodes that have no jobs yet."""
    if args.ids:
        return
    running = client.dags(all_users=args.allusers, running=True, nodes=False)
    texts = [text for info in running if (text := render_dag.not_queued_text(info))]
    if texts:
        print("\n".join(texts))


#: Jobs per page of a listing: the first shows at once, the rest follow as they come;
#: a page holds the scheduler's loop a few milliseconds.
PAGE = 250


def _split_ids(ids: list[str]) -> tuple[list[int], list[str]]:
    """Cluster ids named whole, and the ``cluster.proc`` ids."""
    clusters, pairs = [], []
    for text in ids:
        cluster, _, proc = text.partition(".")
        if proc:
            pairs.append(text)
        elif cluster.isdigit():
            clusters.append(int(cluster))
        else:
            pairs.append(text)  # not an id: the scheduler says why
    return clusters, pairs


def _limited(pages: Iterator[list[p.JobInfo]], limit: int) -> Iterator[list[p.JobInfo]]:
    """The pages, cut after ``limit`` jobs (0: all)."""
    left = limit
    for page in pages:
        if limit > 0:
            page = page[:left]
            left -= len(page)
        yield page
        if limit > 0 and left <= 0:
            return


def _states(jobs: list[p.JobInfo]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state] = counts.get(job.state, 0) + 1
    return counts


def _no_header(af: render_classad.AutoFormat) -> render_classad.AutoFormat:
    return render_classad.AutoFormat(af.attributes, af.options.replace("h", ""))


def _running_table(jobs: list[p.JobInfo]) -> str:
    return render_classad.running_table(jobs, time.time())


def analyze(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.analyze_clusters(args.ids)
    if args.json:
        print(render.dump_json([*found.clusters, *found.jobs]))
        return 0
    parts = [render_explain.cluster_analysis(c) for c in found.clusters]
    if found.jobs:
        parts.append(render_explain.analyses(found.jobs))
    print("\n\n".join(parts))
    return 0


def summary(args: argparse.Namespace) -> int:
    with connect(args) as client:
        counts = client.counts(all_users=args.allusers)
    if args.json:
        print(render.dump_json(counts))
    else:
        parts = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        print(f"{sum(counts.values())} job(s) in the queue{': ' + parts if parts else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
