"""Write the option reference of ``dfarm scheduler`` and ``dfarm worker`` from their parsers.

    python -m scheduler.config_reference > docs/configuration-reference.md

A test compares the file with this output, so the reference cannot go stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scheduler.node_setup import config_file

HEADER = """\
# Configuration reference

Generated from the command-line parsers by `python -m scheduler.config_reference
> docs/configuration-reference.md`; do not edit by hand (a test fails when it is out
of date). How the settings are found is described in
[configuration.md](configuration.md).

Each option `--some-option` of `dfarm scheduler` or `dfarm worker` is also the key
`some_option` of `scheduler.toml` or `worker.toml` and the environment variable
`DFARM_SOME_OPTION`. A value wins in the order flag > environment > file > default.
"""


def parsers() -> dict[str, argparse.ArgumentParser]:
    from scheduler.__main__ import build_parser as scheduler_parser
    from worker_node.__main__ import build_parser as worker_parser

    return {"scheduler": scheduler_parser(), "worker": worker_parser()}


def _default(action: argparse.Action) -> str:
    boolean = (
        argparse._StoreTrueAction | argparse._StoreFalseAction | argparse.BooleanOptionalAction
    )
    if isinstance(action, boolean):
        return f"`{str(action.default).lower()}`"
    if action.default is None:
        return "not set"
    return f"`{config_file.toml_value(action.default)}`"


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreConstAction | argparse.BooleanOptionalAction):
        return "boolean"
    if action.choices is not None:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    if action.type is int:
        return "integer"
    if action.type is float:
        return "number"
    if action.type is Path:
        return "path"
    return "string"


def reference() -> str:
    parts = [HEADER]
    for node, parser in parsers().items():
        parts.append(f"\n## {node}.toml (`dfarm {node}`)\n")
        parts.append("| key | type | default | meaning |\n|---|---|---|---|")
        for key, action in config_file.settings(parser).items():
            meaning = " ".join((action.help or "").split()).replace("|", "\\|")
            parts.append(f"| `{key}` | {_kind(action)} | {_default(action)} | {meaning} |")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
