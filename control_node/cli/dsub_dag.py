"""``dsub-dag``: submit a workflow written in HTCondor's DAG format.

    dsub-dag analysis.dag                # DAG 7 submitted: 104 nodes
    dsub-dag --wait analysis.dag         # ... and wait: exit 1 if any node failed
    dsub-dag --rerun-failed 7            # run again what of DAG 7 did not succeed

Every node's submit file (with its VARS) and every script are read before anything
is queued; a mistake is refused with the file and line. With ``--wait``, once the DAG
has ended the results of every node's jobs are fetched as ``dsub --wait`` fetches a
cluster's: each node's ``<cluster>.results.jsonl`` (and ``<cluster>.<proc>/`` folders
for jobs with files) in ``--dest`` (default: the current directory)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from control_node.cli.common import add_connection_options, connect, run_command
from control_node.connection import DfarmError, NotFound
from scheduler import protocol as p

NOTIFICATIONS = ("Never", "Complete", "Error", "Always")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsub-dag", description="Submit a DAG file (HTCondor's DAGMan format)."
    )
    parser.add_argument("dag_file", nargs="?", help="the DAG file")
    parser.add_argument(
        "--wait", action="store_true", help="wait for the DAG to end, then fetch its results"
    )
    parser.add_argument(
        "--dest",
        type=Path,
        help="where --wait puts each node's results file and <cluster>.<proc>/ folders"
        " (default: the current directory)",
    )
    parser.add_argument(
        "--rerun-failed",
        type=int,
        metavar="ID",
        help="run again the nodes of DAG ID that did not succeed (and those after them)",
    )
    parser.add_argument(
        "--notify-user", metavar="ADDRESS", help="mail this address when the DAG ends"
    )
    parser.add_argument(
        "--notification",
        choices=NOTIFICATIONS,
        default=None,
        help="when to mail: at every end (Complete, Always), on failure (Error) or never"
        " (default Complete with --notify-user, else Never)",
    )
    parser.add_argument(
        "--no-submit", action="store_true", help="read and check everything; queue nothing"
    )
    add_connection_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.dag_file is None) == (args.rerun_failed is None):
        print("dsub-dag: error: give a DAG file or --rerun-failed ID", file=sys.stderr)
        return 2
    return run_command("dsub-dag", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from control_node.dag_dot import write_dot_file
    from control_node.dag_file import read_dag
    from control_node.dag_lines import DagFileError
    from control_node.dag_submit import plan_dag, send_dag

    with connect(args) as client:
        if args.rerun_failed is not None:
            reply = client.conn.request(p.RerunDag(dag=args.rerun_failed))
            assert isinstance(reply, p.DagSubmitted)
            print(f"DAG {reply.dag} runs again: {len(reply.clusters)} node(s) with jobs")
            return _wait(client, reply.dag, args) if args.wait else 0
        try:
            dag = read_dag(args.dag_file)
        except (DagFileError, OSError) as exc:
            raise DfarmError(str(exc)) from None
        plans = plan_dag(dag)
        if args.no_submit:
            print(f"{args.dag_file}: {len(dag.nodes)} nodes, every submit file read")
            return 0
        notification = args.notification or ("Complete" if args.notify_user else "Never")
        settings = {"notification": notification}
        if args.notify_user:
            settings["notify_user"] = args.notify_user
        name = args.dag_file.rsplit("/", 1)[-1]
        reply = send_dag(client.conn, dag, plans, name, settings)
        for warning in reply.warnings:
            print(f"dsub-dag: warning: {warning}", file=sys.stderr)
        write_dot_file(dag)
        if args.json:
            print(json.dumps({"dag": reply.dag, "clusters": reply.clusters}))
        else:
            print(f"DAG {reply.dag} submitted: {len(dag.nodes)} nodes")
        return _wait(client, reply.dag, args) if args.wait else 0


def _wait(client: object, dag: int, args: argparse.Namespace) -> int:
    from control_node.client import Client
    from control_node.results_report import results_report

    assert isinstance(client, Client)
    client.wait([str(dag)])
    info = client.dags([dag])[0]
    clusters, fetched = node_clusters(info), []
    with contextlib.suppress(NotFound):  # none of them queued a job (a PRE script failed)
        fetched = client.fetch(clusters, dest=args.dest) if clusters else []
    counts = ", ".join(f"{n} {s}" for s, n in sorted(info.counts.items()))
    if not args.json:
        print(f"DAG {dag} {info.state}: {counts}")
        if info.reason:
            print(info.reason)
        if fetched:
            print(results_report(fetched))
    return 0 if info.state == "done" else 1


def node_clusters(info: p.DagInfo) -> list[str]:
    """The clusters of the DAG's nodes whose jobs were queued (those that ran, or were
    removed), in the DAG's order: what ``--wait`` fetches."""
    ran = ("queued", "post", "done", "failed", "removed")
    return [
        str(node.cluster)
        for node in info.nodes
        if node.cluster is not None and node.state in ran and node.started is not None
    ]


if __name__ == "__main__":
    sys.exit(main())
