"""A workflow as read from a DAG file (HTCondor's DAGMan format) or built in Python:
nodes, each a submit file with its variables, scripts and retry rules, and the edges
between them. The reader (:mod:`control_node.dag_file`) makes one; ``dsub-dag`` and
``Client.submit_dag`` hand it to the scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ScriptWhen = Literal["PRE", "POST", "HOLD"]


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
    #: ``VARS``: macros defined for the node's submit file.
    vars: dict[str, str] = field(default_factory=dict)
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
    #: The line of its ``JOB`` statement.
    line: int = 0


@dataclass
class Dag:
    """A whole workflow, splices and external sub-DAGs already expanded."""

    #: The DAG file (absolute), or "" for one built in Python.
    path: str = ""
    #: Nodes in the order the file names them.
    nodes: dict[str, DagNode] = field(default_factory=dict)
    #: ``MAXJOBS category n``.
    max_jobs: dict[str, int] = field(default_factory=dict)
    #: ``DOT file [UPDATE|DONT-UPDATE] [OVERWRITE|DONT-OVERWRITE] [INCLUDE header]``.
    dot_file: str | None = None
    #: ``CONFIG file``: the settings it makes that dfarm applies (``DAGMAN_*`` names).
    config: dict[str, str] = field(default_factory=dict)

    def children(self, name: str) -> list[str]:
        """Nodes that name ``name`` as a parent, in file order."""
        return [n.name for n in self.nodes.values() if name in n.parents]
