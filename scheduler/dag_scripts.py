"""PRE and POST scripts of DAG nodes: run on the scheduler's machine, as the DAG's
owner, in the DAG's folder, with a time limit, their output in the DAG's log.

A scheduler running as root runs a script as the local account of the DAG's
owner when it is a user's (uid at least 1000), else as ``nobody``, as workers run
jobs: never as root. A scheduler running as anyone else runs only the scripts of
DAGs of its own account's name (others are refused at submit). A script is started
once the unit that put its node in ``pre`` or ``post`` has committed; its end is a
unit of its own (:func:`scheduler.dags.script_ended`). A restart runs a script that was running
again, as DAGMan's recovery does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import re
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from scheduler.dag_book import DagRun
    from scheduler.dag_store import NodeRow
    from scheduler.state import SchedulerState

#: What is called, in a unit of its own, when a script ends: (state, key, code, note).
Ended: TypeAlias = "Callable[[SchedulerState, tuple[int, int, str, int], int | None, str], None]"

log = logging.getLogger("scheduler.server")

#: Seconds a script may run before it is killed (and fails).
SCRIPT_TIMEOUT = 600.0
#: Accounts below this uid are never a script's (root, system accounts).
UID_MIN = 1000
FALLBACK_ACCOUNT = "nobody"
#: The words of a script's arguments replaced when it runs (DAGMan's macros): only a
#: word that is one of them, whole.
MACROS = re.compile(
    r"\$(JOBID|JOB|RETURN|RETRY|MAX_RETRIES|PRE_SCRIPT_RETURN|DAG_STATUS|FAILED_COUNT)"
)
#: $RETURN given to a POST script when the PRE script failed (DAGMan's value).
PRE_FAILED_RETURN = -1004
#: A node's reason once its PRE script failed (its POST script then runs).
PRE_FAILED = "PRE script exited with "


@dataclass(frozen=True)
class ScriptRun:
    """One run of a node's script: what starts it and what its end is given to."""

    state: SchedulerState
    #: (DAG id, node seq, "pre" or "post", attempt).
    key: tuple[int, int, str, int]
    argv: list[str]
    folder: Path
    #: The uid and gid it runs as; None: the scheduler's own.
    account: tuple[int, int] | None
    timeout: float
    #: Its heading in the DAG's log.
    title: str
    ended: Ended


def own_account() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def may_run_scripts(owner: str) -> str | None:
    """Why a DAG of ``owner`` may not have scripts here, or None."""
    if os.geteuid() == 0 or owner == own_account():
        return None
    return (
        f"this scheduler runs as {own_account()!r}, not as root: it runs PRE/POST scripts"
        f" only of DAGs of {own_account()!r}, not of {owner!r}"
    )


def script_account(owner: str) -> tuple[int, int] | None:
    """The uid and gid a script of ``owner`` runs as; None: the scheduler's own."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(owner)
        if entry.pw_uid >= UID_MIN:
            return entry.pw_uid, entry.pw_gid
    entry = pwd.getpwnam(FALLBACK_ACCOUNT)
    return entry.pw_uid, entry.pw_gid


def prepare_folder(folder: Path, owner: str, scripts: dict[str, bytes]) -> None:
    """The DAG's folder, its scripts written (named by sha256), owned by the account
    the scripts run as."""
    folder.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    folder.mkdir(mode=0o700, exist_ok=True)
    for sha, data in scripts.items():
        path = folder / sha
        path.write_bytes(data)
        path.chmod(0o755)
    (folder / "dag.log").touch(mode=0o600)
    account = script_account(owner)
    if account is not None:
        os.chown(folder, *account)
        for sha in scripts:
            os.chown(folder / sha, *account)


def arguments(state: SchedulerState, run: DagRun, node: NodeRow, which: str) -> list[str]:
    """The script's command line with DAGMan's macros replaced."""
    script: dict[str, Any] = node.rules[which]
    failed = sum(n.state == "failed" for n in run.nodes)
    pre_failed = node.reason.startswith(PRE_FAILED)
    last = node.first_proc
    if which == "post" and node.cluster is not None:
        last = max(last, state.store.cluster_sizes([node.cluster]).get(node.cluster, 1) - 1)
    values = {
        "JOB": node.name,
        "RETRY": str(node.attempt),
        "MAX_RETRIES": str(node.rules.get("retry", 0)),
        "JOBID": f"{node.cluster}.{last}" if node.cluster is not None else "",
        "RETURN": str(PRE_FAILED_RETURN if pre_failed else node.return_code or 0),
        "PRE_SCRIPT_RETURN": str(
            node.return_code if pre_failed else 0 if node.rules.get("pre") else -1
        ),
        "DAG_STATUS": "2" if failed else "0",
        "FAILED_COUNT": str(failed),
    }
    # Relative to the folder, where the script starts: the scheduler's home, above
    # it, is private to the scheduler's account.
    argv = ["./" + script["executable"]]
    for arg in script.get("arguments", []):
        whole = MACROS.fullmatch(arg)
        argv.append(values[whole.group(1)] if whole else arg)
    return argv


def launch(state: SchedulerState, run: DagRun, node: NodeRow, which: str, ended: Ended) -> None:
    """Start the node's ``which`` script once the unit commits; ``ended`` is called in a
    unit of its own when it ends."""
    argv = arguments(state, run, node, which)
    key = (run.id, node.seq, which, node.attempt)
    timeout = float(run.row.settings.get("script_timeout") or SCRIPT_TIMEOUT)
    folder = state.config.home / "dags" / str(run.id)
    account = script_account(run.row.owner)
    title = f"{which.upper()} script of node {node.name}"
    script = ScriptRun(state, key, argv, folder, account, timeout, title, ended)
    state.effects.defer(f"DAG {run.id} {which} script", partial(_start, script))


def _start(script: ScriptRun) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no event loop (the core's tests): run it here
        code, note = _run_now(script)
        _ended(script, code, note)
        return
    task = loop.create_task(_run(script))
    script.state.hashing.add(task)  # kept alive until it ends, as result hashing is
    task.add_done_callback(script.state.hashing.discard)


def _popen_args(folder: Path, account: tuple[int, int] | None) -> dict[str, Any]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder), "LANG": "C.UTF-8"}
    args: dict[str, Any] = {
        "cwd": folder,
        "env": env,
        "stdin": subprocess.DEVNULL,
        "stderr": subprocess.STDOUT,
        "start_new_session": True,
    }
    if account is not None:
        args.update(user=account[0], group=account[1], extra_groups=[])
    return args


async def _run(script: ScriptRun) -> None:
    code: int | None = None
    note = ""
    try:
        with open(script.folder / "dag.log", "ab") as out:
            out.write(f"--- {script.title}: {script.argv}\n".encode())
            out.flush()
            proc = await asyncio.create_subprocess_exec(
                *script.argv, stdout=out, **_popen_args(script.folder, script.account)
            )
            try:
                code = await asyncio.wait_for(proc.wait(), script.timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                note = f"timed out after {script.timeout:.0f} s"
    except OSError as exc:
        note = f"could not run: {exc}"
    _ended(script, code, note)


def _run_now(script: ScriptRun) -> tuple[int | None, str]:
    try:
        with open(script.folder / "dag.log", "ab") as out:
            done = subprocess.run(
                script.argv,
                stdout=out,
                timeout=script.timeout,
                **_popen_args(script.folder, script.account),
            )
        return done.returncode, ""
    except subprocess.TimeoutExpired:
        return None, f"timed out after {script.timeout:.0f} s"
    except OSError as exc:
        return None, f"could not run: {exc}"


def _ended(script: ScriptRun, code: int | None, note: str) -> None:
    from scheduler.units import run_unit

    state, key = script.state, script.key
    run_unit(state, "DAG script", lambda: script.ended(state, key, code, note))


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
