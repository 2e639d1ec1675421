"""``dedit``: change the requests, limits or attributes of idle or held jobs (like
condor_qedit).

dedit 42.0 request_memory=4GB
dedit 42 request_memory 4GB allowed_job_duration=7200
dedit 42 +JobFlavour='"longlunch"' MY.Project=7
"""

from __future__ import annotations

import argparse
import sys

from control_node import render
from control_node.cli.common import add_connection_options, connect, run_command


def split_words(words: list[str]) -> tuple[list[str], dict[str, str]]:
    """Job ids first, then ``KEY=VALUE`` or ``KEY VALUE`` pairs."""
    ids: list[str] = []
    rest = list(words)
    while rest and "=" not in rest[0] and rest[0][:1].isdigit():
        ids.append(rest.pop(0))
    changes: dict[str, str] = {}
    while rest:
        word = rest.pop(0)
        key, sep, value = word.partition("=")
        if not sep:
            if not rest:
                raise ValueError(f"{word!r} has no value: write KEY=VALUE")
            value = rest.pop(0)
        changes[key.strip()] = value.strip()
    return ids, changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dedit",
        description="Change the requests, limits or attributes (+Name, MY.Name) of idle"
        " or held jobs.",
    )
    parser.add_argument("words", nargs="+", metavar="ID|KEY=VALUE")
    add_connection_options(parser)
    args = parser.parse_args(argv)
    try:
        ids, changes = split_words(args.words)
    except ValueError as exc:
        parser.error(str(exc))
    if not ids or not changes:
        parser.error("give job ids, then KEY=VALUE (e.g. dedit 42.0 request_memory=4GB)")

    def body() -> int:
        with connect(args) as client:
            reply = client.edit(ids, changes)
        if args.json:
            print(render.dump_json(reply))
        else:
            print(render.changed_report(reply, "edit"))
        return 1 if reply.skipped and not reply.changed else 0

    return run_command("dedit", body)


if __name__ == "__main__":
    sys.exit(main())
