"""Checks a workflow must pass whoever made it (the DAG file reader or the Python
builder): node names DAGMan accepts, and no cycle."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["RESERVED_NAMES", "VAR_NAME", "find_cycle", "name_problem", "var_name_problem"]

#: Words that cannot name a node (any case), as in DAGMan.
RESERVED_NAMES = frozenset({"PARENT", "CHILD", "ALL_NODES"})
_SPACE = re.compile(r"\s")
#: A VARS macro name: letters, digits, ``_`` and ``.``, with a letter or digit, and
#: ``+`` first for a job attribute (``+Name`` is ``My.Name``).
VAR_NAME = re.compile(r"\+?[A-Za-z0-9_.]*[A-Za-z0-9][A-Za-z0-9_.]*")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a node or splice, or None when it can."""
    if not name:
        return "a node needs a name"
    if _SPACE.search(name):
        return f"node name {name!r} contains white space"
    if name.upper() in RESERVED_NAMES:
        return f"{name!r} is a reserved word and cannot name a node"
    if "+" in name or "." in name:
        return (
            f"node name {name!r} contains '+' or '.', which DAGMan reserves "
            "('+' joins a splice's name to its nodes' names)"
        )
    return None


def var_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a VARS macro, or None when it can."""
    if not VAR_NAME.fullmatch(name):
        return f"{name!r} cannot name a macro (letters, digits, '_' and '.')"
    if name.lower().startswith("queue"):
        return f"a macro name cannot begin with 'queue': {name}"
    return None


def find_cycle(parents: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of the graph given as each node's parents (``[a, b, ..., a]``, each
    node a parent of the next), or None when there is none."""
    done: set[str] = set()
    for start in parents:
        if start in done:
            continue
        # Iterative depth-first walk along parent edges; `path` is the current chain.
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(parents.get(start, ()))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if nxt in on_path:
                loop = path[path.index(nxt) :] + [nxt]
                return list(reversed(loop))
            if nxt in done:
                continue
            path.append(nxt)
            on_path.add(nxt)
            stack.append(iter(parents.get(nxt, ())))
    return None
