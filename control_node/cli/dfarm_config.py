"""``dfarm config show scheduler|worker [--json] [OPTIONS]``: the effective configuration.

Every setting of the node with its value and where it came from (flag,
environment variable, file and line, or default), secrets masked. OPTIONS are
the node's own, so ``dfarm config show worker --config w.toml --slots 4`` shows
what that command line would run with. The output is valid TOML.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from scheduler import config_file

NODES = ("scheduler", "worker")
USAGE = "usage: dfarm config show scheduler|worker [--json] [--config FILE] [OPTIONS]"


def node_parser(node: str) -> argparse.ArgumentParser:
    if node == "scheduler":
        from scheduler.__main__ import build_parser
    else:
        from worker_node.__main__ import build_parser
    return build_parser()


def main(argv: list[str] | None = None) -> int:
    try:
        return show(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # `dfarm config show worker | head`
        sys.stderr.close()
        return 0


def show(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE + "\n\n" + __doc__.split("\n\n")[1])
        return 0
    if len(argv) < 2 or argv[0] != "show" or argv[1] not in NODES:
        print(f"dfarm config: error: {USAGE}", file=sys.stderr)
        return 2
    node, rest = argv[1], argv[2:]
    as_json = "--json" in rest
    rest = [a for a in rest if a != "--json"]
    parser = node_parser(node)
    parser.prog = f"dfarm config show {node}"
    try:
        args, sources = config_file.load(parser, rest, node)
    except config_file.ConfigError as exc:
        print(f"dfarm config: error: {exc}", file=sys.stderr)
        return 2
    rows = config_file.effective(parser, args, sources)
    if as_json:
        records = [
            {"key": k, "value": _plain(v), "source": s.kind, "where": s.detail} for k, v, s in rows
        ]
        print(json.dumps(records, indent=2))
        return 0
    path = config_file.config_path(getattr(args, "config", None), node, _environ())
    print(f"# dfarm {node}: effective configuration (file: {path or 'none'})")
    for key, value, source in rows:
        shown = None if value is None else config_file.toml_value(value)
        line = f"# {key} is not set" if shown is None else f"{key} = {shown}"
        print(f"{line:<48} # {source}")
    return 0


def _plain(value: object) -> object:
    return str(value) if isinstance(value, Path) else value


def _environ() -> dict[str, str]:
    return dict(os.environ)
