"""``dfetch``: download the results of finished jobs, from any machine.

Each cluster's results go to ``<cluster>.results.jsonl`` (see
:mod:`control_node.results_file`); a job gets a ``<cluster>.<proc>/`` folder only when
it has files worth one, or with ``--per-job``. A DAG's id (one that names no cluster
of yours) fetches the results of each of its node clusters.

Exit status: 0 when every job named is finished and its results were fetched, 1 when
one of them failed (a non-zero exit, a signal, held or removed) or on an error, 2 when
one of them has not finished yet (idle or running: nothing was fetched for it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from control_node import render
from control_node.cli.common import add_connection_options, connect, run_command
from control_node.cli.results_options import add_per_job_option
from control_node.results_dags import expand_dags
from control_node.results_report import fetch_progress, results_report
from scheduler import protocol as p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dfetch",
        description="Download stdout, stderr, exit status and outputs of jobs.",
        epilog="exit status: 0 all fetched and succeeded, 1 a job failed or an error,"
        " 2 a job has not finished yet",
    )
    parser.add_argument(
        "ids", nargs="+", metavar="ID", help="cluster, cluster.proc or DAG (its node clusters)"
    )
    parser.add_argument(
        "--dest", type=Path, help="folder for the results files and <cluster>.<proc>/ folders"
    )
    add_per_job_option(parser)
    parser.add_argument(
        "--here",
        action="store_true",
        help="always use ./<cluster>.<proc>/, even if the submit file named output paths",
    )
    add_connection_options(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        unfinished: list[p.JobInfo] = []
        with connect(args) as client:
            progress = None if args.json else fetch_progress(sys.stderr)
            try:
                fetched = client.fetch(
                    expand_dags(client, args.ids),
                    dest=args.dest,
                    submit_paths=not args.here,
                    unfinished=unfinished,
                    per_job=args.per_job,
                    progress=progress,
                )
            finally:
                if progress is not None:
                    sys.stderr.write("\n")
        if args.json:
            print(render.dump_json([f.job for f in fetched]))
        elif fetched:
            print(results_report(fetched))
        for job in unfinished:
            print(
                f"dfetch: {job.id} is {job.state}: not finished, nothing to fetch yet"
                f" (dwait {job.id} waits for it and fetches)",
                file=sys.stderr,
            )
        if unfinished:
            return 2
        return 1 if any(f.failed for f in fetched) else 0

    return run_command("dfetch", body)


if __name__ == "__main__":
    sys.exit(main())
