"""The scheduler's modules import only lower ones: the state and its transitions know
nothing of the handlers or of the I/O shell, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import scheduler

ROOT = Path(scheduler.__file__).parent
#: From the bottom up; a module may import only modules of a lower layer.
LAYERS = [
    [
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
    ["watchers", "starting", "leaving", "selection", "handshake"],
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
