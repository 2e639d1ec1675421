"""A workflow built in Python: ``c.dag()`` hands out a :class:`DagBuilder`, whose
:meth:`~DagBuilder.job` adds a node that runs after the nodes it names, and whose
:attr:`~DagBuilder.dag` is the :class:`~control_node.dag_model.Dag` a DAG file would
give. What the file reader refuses, the builder refuses too, at the call that does it
(:class:`DagBuildError`)::

    d = DagBuilder()
    prep = d.job("prep", "prep.sub")
    sims = [d.job(f"sim{i}", "sim.sub", after=[prep], vars={"i": str(i)}) for i in range(3)]
    d.job("merge", "merge.sub", after=sims, retry=2)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from control_node.dag_checks import name_problem, var_name_problem
from control_node.dag_model import CONFIG_SETTINGS, Dag, DagNode, DagScript, ScriptWhen

__all__ = ["DagBuildError", "DagBuilder", "Script"]

#: A script as given: a command line (split at blanks), [executable, *arguments], or a
#: :class:`DagScript`.
Script = str | Sequence[str] | DagScript


class DagBuildError(ValueError):
    """A node or setting the workflow cannot have; the message says which and why."""


class DagBuilder:
    """Builds a :class:`Dag` node by node; a node's parents are named before it, so
    the workflow can have no cycle."""

    def __init__(self, folder: str | Path | None = None) -> None:
        #: Relative submit files, DIRs and scripts start from here (the current
        #: folder when the builder was made, unless given).
        self.folder = Path(folder if folder is not None else Path.cwd()).absolute()
        self.dag = Dag()

    def job(
        self,
        name: str,
        submit_file: str | Path,
        after: Iterable[str] = (),
        *,
        dir: str | Path = "",
        vars: Mapping[str, str] | None = None,
        append_vars: Iterable[str] = (),
        retry: int = 0,
        retry_unless_exit: int | None = None,
        pre: Script | None = None,
        post: Script | None = None,
        pre_skip: int | None = None,
        priority: int = 0,
        category: str | None = None,
        abort_on: int | tuple[int, int | None] | None = None,
        noop: bool = False,
        done: bool = False,
    ) -> str:
        """Add node ``name`` (returned, to name it in a later ``after=``), running
        ``submit_file`` once every node of ``after`` has succeeded. The options mean
        what the DAG file's statements of the same names mean: ``retry`` and
        ``retry_unless_exit`` (RETRY ... UNLESS-EXIT), ``abort_on`` (ABORT-DAG-ON: an
        exit value, or (value, DAG return code)), ``append_vars`` (VARS ... APPEND)."""
        if problem := name_problem(name):
            raise DagBuildError(problem)
        if name in self.dag.nodes:
            raise DagBuildError(f"node {name} is already defined")
        parents = list(dict.fromkeys(after if not isinstance(after, str) else [after]))
        for parent in parents:
            if parent not in self.dag.nodes:
                raise DagBuildError(f"{name}: after= names {parent!r}, which is not a node yet")
        folder = self.folder / dir
        if not folder.is_dir():
            raise DagBuildError(f"{name}: dir {folder} is not a folder")
        if not (noop or done) and not (folder / submit_file).is_file():
            raise DagBuildError(f"{name}: submit file {folder / submit_file} does not exist")
        node = DagNode(
            name=name,
            submit_file=str(submit_file),
            directory=str(folder),
            done=done,
            noop=noop,
            vars=_vars(name, vars or {}),
            retry=_at_least(name, "retry", retry, 0),
            retry_unless_exit=retry_unless_exit,
            pre=_script(name, "PRE", pre),
            post=_script(name, "POST", post),
            pre_skip=None if pre_skip is None else _within(name, "pre_skip", pre_skip, 1, 255),
            priority=priority,
            category=category,
            abort_on=_abort(name, abort_on),
            parents=parents,
        )
        node.append_vars = [v for v in append_vars if v in node.vars]
        if missing := set(append_vars) - set(node.vars):
            raise DagBuildError(f"{name}: append_vars names no var {sorted(missing)}")
        self.dag.nodes[name] = node
        return name

    def max_jobs(self, category: str, limit: int) -> DagBuilder:
        """MAXJOBS: at most ``limit`` nodes of ``category`` with jobs queued at once."""
        self.dag.max_jobs[category] = _at_least(category, "max_jobs", limit, 1)
        return self

    def config(self, name: str, value: str | int | bool) -> DagBuilder:
        """A setting of :data:`~control_node.dag_model.CONFIG_SETTINGS`."""
        upper = name.upper()
        if upper not in CONFIG_SETTINGS:
            raise DagBuildError(f"{name} is not a setting dfarm applies to a DAG")
        if upper == "DAGMAN_DEFAULT_APPEND_VARS":
            raise DagBuildError("give append_vars= to job() instead of DAGMAN_DEFAULT_APPEND_VARS")
        if upper == "DAGMAN_ALWAYS_RUN_POST":
            if not isinstance(value, bool):
                raise DagBuildError(f"{name} must be True or False, not {value!r}")
            self.dag.config[upper] = str(value).lower()
        elif isinstance(value, bool) or not str(value).isdigit():
            raise DagBuildError(f"{name} must be a whole number, not {value!r}")
        else:
            self.dag.config[upper] = str(int(value))
        return self


def _vars(node: str, given: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in given.items():
        if problem := var_name_problem(key):
            raise DagBuildError(f"{node}: {problem}")
        key = "My." + key[1:] if key.startswith("+") else key
        out[key] = re.sub(r"\$\(JOB\)", node.replace("\\", "\\\\"), str(value), flags=re.I)
    return out


def _script(node: str, when: ScriptWhen, given: Script | None) -> DagScript | None:
    if given is None:
        return None
    if isinstance(given, DagScript):
        if given.when != when:
            raise DagBuildError(f"{node}: a {given.when} script given as {when.lower()}=")
        return given
    words = given.split() if isinstance(given, str) else [str(w) for w in given]
    if not words:
        raise DagBuildError(f"{node}: the {when} script is empty")
    return DagScript(when=when, executable=words[0], arguments=words[1:])


def _abort(node: str, given: int | tuple[int, int | None] | None) -> tuple[int, int | None] | None:
    if given is None:
        return None
    value, code = (given, None) if isinstance(given, int) else given
    if code is not None:
        _within(node, "abort_on's return code", code, 0, 255)
    return (value, code)


def _at_least(node: str, what: str, value: int, low: int) -> int:
    if value < low:
        raise DagBuildError(f"{node}: {what} must be at least {low}, not {value}")
    return value


def _within(node: str, what: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise DagBuildError(f"{node}: {what} must be from {low} to {high}, not {value}")
    return value
