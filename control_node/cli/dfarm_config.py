"""``dfarm config show [scheduler|worker] [--json] [OPTIONS]``: the effective configuration.

Every setting of the node with its value and where it came from (flag,
environment variable, file and line, or default), secrets masked. OPTIONS are
the node's own, so ``dfarm config show worker --config w.toml --slots 4`` shows
what that command line would run with; without a node, both are shown. The
output is valid TOML.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from scheduler.node_setup import config_file

NODES = ("scheduler", "worker")
USAGE = "usage: dfarm config show [scheduler|worker] [--json] [--config FILE] [OPTIONS]"


def node_parser(node: str) -> argparse.ArgumentParser:
    """The node's own command-line parser: its options are the keys of its file."""
    if node == "scheduler":  # the entry point's parser, nothing else of the scheduler
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
    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    if argv == ["show"]:  # both nodes, each from its own file
        nodes: dict[str, list[str]] = {node: [] for node in NODES}
    elif len(argv) >= 2 and argv[0] == "show" and argv[1] in NODES:
        nodes = {argv[1]: argv[2:]}
    else:
        print(f"dfarm config: error: {USAGE}", file=sys.stderr)
        return 2
    shown: dict[str, list[dict[str, object]]] = {}
    for node, rest in nodes.items():
        parser = node_parser(node)
        parser.prog = f"dfarm config show {node}"
        try:
            args, sources = config_file.load(parser, rest, node)
        except config_file.ConfigError as exc:
            print(f"dfarm config: error: {exc}", file=sys.stderr)
            return 2
        rows = config_file.effective(parser, args, sources)
        if as_json:
            shown[node] = [
                {"key": k, "value": _plain(v), "source": s.kind, "where": s.detail}
                for k, v, s in rows
            ]
            continue
        path = config_file.config_path(getattr(args, "config", None), node, dict(os.environ))
        print(f"# dfarm {node}: effective configuration (file: {path or 'none'})")
        for key, value, source in rows:
            text = None if value is None else config_file.toml_value(value)
            line = f"# {key} is not set" if text is None else f"{key} = {text}"
            print(f"{line:<48} # {source}")
    if as_json:
        print(json.dumps(shown if len(shown) > 1 else next(iter(shown.values())), indent=2))
    return 0


def _plain(value: object) -> object:
    return str(value) if isinstance(value, Path) else value
