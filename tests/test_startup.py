"""A command's start-up imports only what it uses (``python -X importtime`` measures the
time; this guards the imports, never the clock)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules a command that only asks the scheduler something never needs at start-up:
#: each costs milliseconds (tabulate reads its package metadata; ssl only for TLS).
HEAVY = [
    "asyncio",
    "ssl",
    "ftplib",
    "tabulate",
    "importlib.metadata",
    "email",
    "cloudpickle",
    "sqlite3",
    "aiohttp",
    "jinja2",
    "control_node.submit",
    "control_node.mapping",
    "control_node.sweep",
    "scheduler.state",
    "scheduler.server",
]

#: Each quick command, the heavy modules it may import, and a bound on the modules its
#: start-up adds (about 70 for the protocol and the client today).
QUICK = {
    "dstat": set(),
    "dq": set(),
    "dwait": set(),
    "drm": set(),
    "dhold": set(),
    "drelease": set(),
    "dtail": set(),
    "dwatch": set(),
}
MAX_MODULES = 100


def imported_by(module: str) -> tuple[list[str], int]:
    """The modules importing ``module`` loads in a fresh interpreter, and their number."""
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    added: list[str] = json.loads(out)
    return added, len(added)


@pytest.mark.parametrize("command", sorted(QUICK))
def test_quick_command_imports_no_heavy_module(command: str) -> None:
    added, count = imported_by(f"control_node.cli.{command}")
    heavy = [
        name
        for name in HEAVY
        if name not in QUICK[command] and any(m == name or m.startswith(name + ".") for m in added)
    ]
    assert heavy == [], f"{command} imports {heavy} at start-up"
    assert count <= MAX_MODULES, f"{command} imports {count} modules at start-up"


def test_the_package_names_its_api_without_importing_it() -> None:
    added, _ = imported_by("control_node")
    assert "control_node.client" not in added
    code = "from control_node import Client, SubmitError, DfarmError; print(Client.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Client"


def test_help_runs_without_the_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from control_node.cli.dq import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: dq" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


#: What a map item's Python may load beyond cloudpickle's own imports: the runner and the
#: package's lazy ``__init__``.
MAP_RUNNER_EXTRA = 5


def test_the_map_runner_imports_cloudpickle_and_nothing_of_the_client() -> None:
    """Every item of ``Client.map`` starts ``python -m control_node.map_runner``: it must
    not pay for the client, the results store's reader, the submit parser or asyncio."""
    runner, count = imported_by("control_node.map_runner")
    _, pickler = imported_by("cloudpickle")
    ours = sorted(m for m in runner if m.startswith(("control_node", "scheduler", "worker_node")))
    assert ours == ["control_node", "control_node.map_runner"]
    heavy = [
        m
        for m in runner
        if m.split(".")[0]
        in {"asyncio", "ssl", "sqlite3", "tabulate", "email", "aiohttp", "psutil", "pathlib"}
    ]
    assert heavy == [], f"the map runner imports {heavy}"
    assert count <= pickler + MAP_RUNNER_EXTRA, f"the map runner imports {runner}"
