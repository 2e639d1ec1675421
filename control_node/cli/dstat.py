"""``dstat``: the workers and their machines."""

from __future__ import annotations

import argparse
import sys

from control_node import render
from control_node.cli.common import add_connection_options, connect, run_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dstat", description="Show the workers of the pool.")
    add_connection_options(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        with connect(args) as client:
            pool = client.pool()
        workers = pool.workers
        if args.json:
            print(render.dump_json(workers))
            return 0
        if pool.scheduler_disk_full:
            print(f"scheduler: {pool.scheduler_disk_full}; new submissions are refused")
        if workers:
            print(render.workers_table(workers))
        used = sum(w.slots_used for w in workers)
        total = sum(w.slots_total for w in workers)
        print(f"{len(workers)} worker(s), {used}/{total} slots busy")
        print(
            f"spool: {render.size(pool.spool_bytes)} used; results kept"
            f" {pool.result_retention / 86400:g} day(s) after a job ends"
        )
        return 0

    return run_command("dstat", body)


if __name__ == "__main__":
    sys.exit(main())
