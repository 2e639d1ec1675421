"""The scheduler's modules import only lower ones: the state and its transitions know
nothing of the handlers or of the I/O shell, and no two modules import each other.
A job changes state through :mod:`scheduler.transitions` alone."""

from __future__ import annotations

import ast
from pathlib import Path

import scheduler

ROOT = Path(scheduler.__file__).parent
#: From the bottom up; a module may import only modules of a lower layer.
LAYERS = [
    [
        "job_records",
        "database",
        "accounts",
        "cluster_table",
        "result_table",
        "store",
        "connection",
        "callers",
        "dispatch",
        "fairshare",
        "matchmaker",
        "usage",
        "jobs",
        "queue_ahead",
    ],
    ["workers"],
    ["state"],
    ["watchers", "starting", "selection", "handshake"],
    ["transitions"],
    ["clusters"],
    [
        "worker_handlers",
        "worker_control",
        "control_handlers",
        "job_control",
        "explain",
        "probe",
        "identities",
    ],  # fmt: skip
    ["housekeeping", "departures", "core"],
    ["server"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def imports_of(name: str) -> set[str]:
    """The modules of the scheduler package that ``scheduler.<name>`` imports."""
    tree = ast.parse((ROOT / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "scheduler":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("scheduler."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("scheduler.")}
    return found


def test_each_module_imports_only_lower_layers() -> None:
    wrong = [
        f"{name} imports {other}"
        for name in LAYER
        for other in imports_of(name)
        if other in LAYER
        and LAYER[other] >= LAYER[name]
        and other != name
        # Within the lowest layer, the order is the one of its list.
        and not (LAYER[name] == 0 and LAYERS[0].index(other) < LAYERS[0].index(name))
    ]
    assert not wrong, wrong


#: Where ``JobTable.transition`` may be called: the moves, and the job table's own
#: start of a matched job (see scheduler/jobs.py).
TRANSITION_CALLERS = {"transitions", "jobs"}


def transition_calls(path: Path) -> list[int]:
    """The lines of ``path`` that call a method named ``transition``."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "transition"
    ]


def test_jobs_change_state_only_through_the_transitions_module() -> None:
    wrong = [
        f"{path.relative_to(ROOT.parent)}:{line}"
        for path in sorted(ROOT.rglob("*.py"))
        if not (path.parent == ROOT and path.stem in TRANSITION_CALLERS)
        for line in transition_calls(path)
    ]
    assert not wrong, wrong
    assert transition_calls(ROOT / "transitions.py")  # the check sees the calls it allows


def test_the_transition_check_finds_a_call_outside(tmp_path: Path) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text("def on_x(state, job):\n    state.jobs.transition(job, 1, 'held')\n")
    assert transition_calls(handler) == [2]
