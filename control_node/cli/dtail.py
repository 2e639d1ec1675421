"""``dtail``: the live stdout (or stderr) of a running job."""

from __future__ import annotations

import argparse
import sys

from control_node.cli.common import add_connection_options, connect, run_command
from control_node.client import Client
from control_node.connection import DfarmError, dump_json
from scheduler import protocol as p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dtail", description="Show a running job's output.")
    parser.add_argument(
        "id", metavar="ID", help="cluster.proc of a running job (or a cluster of one job)"
    )
    parser.add_argument("-f", "--follow", action="store_true", help="follow as it grows")
    parser.add_argument("--stderr", action="store_true", help="stderr instead of stdout")
    parser.add_argument(
        "--bytes", "-c", type=int, default=64 * 1024, help="show the last N bytes (default 64 KiB)"
    )
    add_connection_options(parser)
    args = parser.parse_args(argv)
    if args.bytes < 1:
        parser.error("--bytes must be at least 1")
    out = sys.stdout.buffer

    def body() -> int:
        with connect(args) as client:
            args.id = one_job(client, args.id)
            size = client.tail(args.id, stderr=args.stderr, limit=1).size
            start = max(0, size - args.bytes)
            if args.follow:
                for data in client.follow(args.id, stderr=args.stderr, offset=start):
                    out.write(data)
                    out.flush()
                return 0
            chunk = client.tail(args.id, stderr=args.stderr, offset=start, limit=args.bytes)
        if args.json:
            print(dump_json(chunk))
            return 0
        data = p.unpack_bytes(chunk.data)
        if not chunk.running and not data:
            print(f"dtail: job {args.id} is not running and has no output", file=sys.stderr)
            return 1
        out.write(data)
        return 0

    return run_command("dtail", body)


def one_job(client: Client, job_id: str) -> str:
    """``job_id`` itself, or the one job of cluster ``job_id``."""
    try:
        cluster, proc = p.parse_job_id(job_id)
    except ValueError as exc:
        raise DfarmError(str(exc)) from None
    if proc is not None:
        return job_id
    jobs = client.jobs([str(cluster)], states=[], limit=2)
    if not jobs:
        raise DfarmError(f"no job of yours in cluster {cluster}")
    if len(jobs) > 1:
        raise DfarmError(f"cluster {cluster} has several jobs: give CLUSTER.PROC ({jobs[0].id})")
    return jobs[0].id


if __name__ == "__main__":
    sys.exit(main())
