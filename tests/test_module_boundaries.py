"""The boundaries between the nodes, read from the source (``ast``): no ``import *``,
no import cycles, and the worker and control nodes import of the scheduler only its
shared libraries (the wire and the packages beside it), never the daemon's modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scheduler", "worker_node", "control_node")

#: The packages under ``scheduler/`` that are libraries of all three nodes, not the
#: scheduler daemon: what the worker and control nodes may import.
SHARED = (
    "scheduler.protocol",  # the wire: frames, messages, records, the handshake
    "scheduler.matching",  # requirements, capacity, worker attributes, $$(NAME)
    "scheduler.transport",  # TLS, the spool's FTP client, content hashes
    "scheduler.node_setup",  # config files, logging set-up, private folders
)

#: The ``dfarm`` console script starts every role, so it reaches the scheduler
#: node's commands, but only through their entry points (a ``main`` or the
#: ``build_parser`` of one), imported where the command is chosen.
ENTRY_POINTS = frozenset(
    {
        ("control_node.cli.dfarm", "scheduler.__main__"),  # dfarm scheduler
        ("control_node.cli.dfarm", "scheduler.admin"),  # dfarm user ...
        ("control_node.cli.dfarm", "scheduler.worker_admin"),  # dfarm worker add|revoke|list
        ("control_node.cli.dfarm", "scheduler.backup"),  # dfarm backup
        ("control_node.cli.dfarm_config", "scheduler.__main__"),  # dfarm config show scheduler
    }
)

#: Import cycles left among the scheduler's request handlers, which are being
#: split apart separately; each entry is the set of modules of one cycle. Once
#: that work is in, this set is emptied, and a cycle that reappears fails the test.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the three nodes, by dotted name."""
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs, at module level or in a function; not those under
    ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                yield from import_nodes(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        else:
            yield from import_nodes(node)


def imported(name: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The modules of the three nodes that ``node`` (in module ``name``) loads: the
    most precise one each name reaches (a submodule, else its package)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        targets = [t for t in targets[:-1] if t in known] or [base]
    found = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def graph() -> tuple[dict[str, set[str]], list[str]]:
    """Each module's imports among the three nodes, and every ``import *``."""
    found = modules()
    known = set(found)
    edges: dict[str, set[str]] = {}
    stars = []
    for name, path in found.items():
        tree = ast.parse(path.read_text(), str(path))
        edges[name] = set()
        for node in import_nodes(tree):
            if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                stars.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            edges[name] |= imported(name, path, node, known)
    return edges, stars


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as
    one cycle through them, in import order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        # Iterative: the import graph is deep enough to matter for recursion.
        work = [(v, iter(sorted(edges[v])))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.add(w)
                        if w == node:
                            break
                    if len(component) > 1:
                        components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_one_cycle(c, edges) for c in components]


def _one_cycle(component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest import cycle through the first module of ``component``."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not a cycle")


def outside_shared(edges: dict[str, set[str]]) -> list[str]:
    """Imports of the scheduler's modules that are not its shared libraries: by the
    worker and control nodes (but the ``dfarm`` entry points), and by those
    libraries themselves (the worker would load them through the library)."""
    shared = lambda m: any(m == s or m.startswith(s + ".") for s in SHARED)  # noqa: E731
    wrong = []
    for name, targets in sorted(edges.items()):
        client = name.startswith(("worker_node", "control_node")) or shared(name)
        for target in sorted(targets):
            if not client or not target.startswith("scheduler") or shared(target):
                continue
            if (name, target) not in ENTRY_POINTS:
                wrong.append(f"{name} imports {target}")
    return wrong


def test_no_star_imports() -> None:
    _, stars = graph()
    assert stars == [], "import * in " + ", ".join(stars)


def test_no_import_cycles() -> None:
    found = cycles(graph()[0])
    new = [c for c in found if frozenset(c) not in KNOWN_CYCLES]
    assert new == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in new)
    gone = KNOWN_CYCLES - {frozenset(c) for c in found}
    assert not gone, f"no longer a cycle, take it off KNOWN_CYCLES: {[sorted(c) for c in gone]}"


def test_nodes_import_only_the_shared_libraries() -> None:
    wrong = outside_shared(graph()[0])
    assert wrong == [], "\n".join(wrong)


def test_the_checks_see_what_they_look_for() -> None:
    """The graph and the checks catch a cycle, a function-level import and a
    forbidden import, and skip ``if TYPE_CHECKING:``."""
    code = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from scheduler.store import Store\n"
        "def f():\n    from scheduler import config\n"
    )
    tree = ast.parse(code)
    known = {"scheduler", "scheduler.store", "scheduler.config", "worker_node.x"}
    path = ROOT / "worker_node" / "x.py"
    targets = set().union(*(imported("worker_node.x", path, n, known) for n in import_nodes(tree)))
    assert targets == {"scheduler.config"}
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    assert outside_shared({"worker_node.x": targets}) == ["worker_node.x imports scheduler.config"]
