"""A workflow as read from a DAG file (HTCondor's DAGMan format) or built in Python:
nodes, each a submit file with its variables, scripts and retry rules, and the edges
between them. The reader (:mod:`control_node.dag_file`) makes one; ``dsub-dag`` and
``Client.submit_dag`` hand it to the scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ScriptWhen = Literal["PRE", "POST", "HOLD"]

#: ``CONFIG`` settings a DAG may make, each with what it means here; any other name is
#: refused. ``DAGMAN_DEFAULT_APPEND_VARS`` is applied by the reader (``append_vars``).
CONFIG_SETTINGS: dict[str, str] = {
    "DAGMAN_MAX_JOBS_SUBMITTED": "at most this many nodes' jobs queued at once (0: no limit)",
    "DAGMAN_MAX_PRE_SCRIPTS": "at most this many PRE scripts running at once (0: no limit)",
    "DAGMAN_MAX_POST_SCRIPTS": "at most this many POST scripts running at once (0: no limit)",
    "DAGMAN_ALWAYS_RUN_POST": "run a node's POST script even when its PRE script failed",
    "DAGMAN_DEFAULT_APPEND_VARS": "VARS without PREPEND/APPEND are defined after the "
    "submit file is read (False: before)",
}


@dataclass
class DagScript:
    """``SCRIPT [DEFER status time] PRE|POST|HOLD node executable arguments...``."""

    when: ScriptWhen
    executable: str
    arguments: list[str] = field(default_factory=list)
    #: ``DEFER status time``: a script exiting with ``defer_status`` runs again after
    #: ``defer_time`` seconds.
    defer_status: int | None = None
    defer_time: int = 0
    #: The line of the DAG file that set it.
    line: int = 0


@dataclass
class DagNode:
    """One ``JOB`` line with everything the rest of the file says about it."""

    name: str
    submit_file: str
    #: ``DIR``: the folder the node's submit file is read and run from, relative to the
    #: DAG file's folder ("" for that folder).
    directory: str = ""
    #: ``DONE``: the node counts as finished and never runs.
    done: bool = False
    #: ``NOOP``: no job is queued (its submit file need not exist); its scripts still run
    #: and it succeeds unless one of them fails.
    noop: bool = False
    #: ``VARS``: macros defined for the node's submit file, ``$(JOB)`` already replaced
    #: by the node's name; ``$(RETRY)`` is left for the one who queues the jobs (macros
    #: ``JOB`` and ``RETRY`` are defined for the submit file too, as DAGMan does).
    #: ``My.Name`` / ``+Name`` keys are job attributes.
    vars: dict[str, str] = field(default_factory=dict)
    #: Names of ``vars`` defined after the submit file is read (``VARS ... APPEND``, or
    #: the default under ``DAGMAN_DEFAULT_APPEND_VARS``); the others come before it, so
    #: that its ``if defined`` sees them.
    append_vars: list[str] = field(default_factory=list)
    #: ``RETRY name N [UNLESS-EXIT v]``.
    retry: int = 0
    retry_unless_exit: int | None = None
    pre: DagScript | None = None
    post: DagScript | None = None
    hold: DagScript | None = None
    #: ``PRE_SKIP name code``: a PRE script exiting with it marks the node done.
    pre_skip: int | None = None
    priority: int = 0
    category: str | None = None
    #: ``ABORT-DAG-ON name value [RETURN r]``: (value, return code or None).
    abort_on: tuple[int, int | None] | None = None
    #: Names of the nodes it waits for.
    parents: list[str] = field(default_factory=list)
    #: The line of its ``JOB`` statement, and the file of that line (a splice's node is
    #: named in the spliced file).
    line: int = 0
    file: str = ""


@dataclass
class Dag:
    """A whole workflow, splices and external sub-DAGs already expanded."""

    #: The DAG file (absolute), or "" for one built in Python.
    path: str = ""
    #: Nodes in the order the file names them.
    nodes: dict[str, DagNode] = field(default_factory=dict)
    #: ``MAXJOBS category n``.
    max_jobs: dict[str, int] = field(default_factory=dict)
    #: ``DOT file [DONT-UPDATE] [OVERWRITE|DONT-OVERWRITE] [INCLUDE header]``: written
    #: once when the DAG is submitted (:func:`control_node.dag_dot.write_dot_file`).
    dot_file: str | None = None
    #: ``DONT-OVERWRITE``: write ``file.0``, ``file.1``... (the first free one).
    dot_overwrite: bool = True
    #: ``INCLUDE header``: a file whose text goes into the DOT file after its label.
    dot_include: str | None = None
    #: ``CONFIG file``: the settings it makes that dfarm applies (``DAGMAN_*`` names).
    config: dict[str, str] = field(default_factory=dict)

    def children(self, name: str) -> list[str]:
        """Nodes that name ``name`` as a parent, in file order (a walk over every node:
        :meth:`child_lists` gives all nodes' children at once)."""
        return [n.name for n in self.nodes.values() if name in n.parents]

    def child_lists(self) -> dict[str, list[str]]:
        """Every node's children, in file order, in one walk over the edges."""
        out: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for parent in node.parents:
                out[parent].append(node.name)
        return out

    def folder(self, name: str) -> Path:
        """The folder node ``name`` is submitted from (its ``DIR``), absolute where the
        DAG has a path; scripts run there too."""
        base = Path(self.path).parent if self.path else Path.cwd()
        return base / self.nodes[name].directory

    def submit_path(self, name: str) -> Path:
        """Node ``name``'s submit file."""
        return self.folder(name) / self.nodes[name].submit_file
