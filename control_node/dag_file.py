"""The reader of HTCondor DAG files (DAGMan's input format) into a
:class:`~control_node.dag_model.Dag`.

A DAG file is read as DAGMan reads it: keywords in any case, ``#`` comment lines, a
trailing backslash continuing a line (:mod:`control_node.dag_lines`), two passes (the
statements that define nodes first, so that ``PARENT`` and the others may name a node
defined further down; :mod:`control_node.dag_statements` for the second),
``ALL_NODES``, ``INCLUDE`` read in its place, ``SPLICE`` and ``SUBDAG EXTERNAL``
expanded into the one workflow with their names as prefixes (``splice+node``).
Relative paths start from the DAG file's folder (DAGMan starts them from the folder it
is submitted from: the same when one submits from there). What dfarm does not carry
out is refused, as is every error DAGMan finds, with the file, the line and the reason
(:class:`DagFileError`): cycles, unknown or duplicate nodes, missing files.
"""

from __future__ import annotations

import os
from pathlib import Path

from control_node.dag_checks import find_cycle, name_problem
from control_node.dag_lines import DagFileError, Line, quoted_words, read_lines
from control_node.dag_model import Dag, DagNode
from control_node.dag_statements import Scope, StatementReader, Syntax

__all__ = ["MAX_DEPTH", "DagFileError", "read_dag"]

#: How deep INCLUDE, SPLICE and SUBDAG EXTERNAL may nest.
MAX_DEPTH = 20

#: Statements that define nodes (the first pass).
_NODE_STATEMENTS = frozenset({"JOB", "SUBDAG", "SPLICE"})
#: Statements of DAGMan that dfarm refuses, and why.
_REFUSED = {
    "FINAL": "FINAL nodes are not supported: make the node a child of the others "
    "(PARENT ... CHILD), and it runs when they all succeed",
    "PROVISIONER": "PROVISIONER nodes are not supported",
    "SERVICE": "SERVICE nodes are not supported",
    "SUBMIT-DESCRIPTION": "inline submit descriptions are not supported: write it to a "
    "submit file and name that file",
    "SET_JOB_ATTR": "SET_JOB_ATTR is not supported: no DAGMan job runs to carry the attribute",
    "ENV": "ENV is not supported: no DAGMan job runs whose environment it would set",
    "JOBSTATE_LOG": "JOBSTATE_LOG is not supported: `dq -dag ID --json` gives the nodes' states",
    "NODE_STATUS_FILE": "NODE_STATUS_FILE is not supported: `dq -dag ID --json` gives the "
    "nodes' states",
    "SAVE_POINT_FILE": "SAVE_POINT_FILE is not supported: the scheduler keeps the DAG's "
    "progress itself",
    "CONNECT": "CONNECT (splice pins) is not supported",
    "PIN_IN": "PIN_IN (splice pins) is not supported",
    "PIN_OUT": "PIN_OUT (splice pins) is not supported",
    "DATA": "DATA nodes are not supported",
}


def read_dag(path: str | Path) -> Dag:
    """Read the DAG file at ``path`` and every file it includes or splices; refuse
    (:class:`DagFileError`) what DAGMan would refuse and what dfarm does not run."""
    top = Path(path).absolute()
    reader = _Reader(Dag(path=str(top)))
    reader.splicing.append(top)
    reader.read_file(top, top.parent, "", "", depth=0, at=None)
    reader.finish()
    return reader.dag


class _Reader(StatementReader):
    """One reading: the workflow so far, and what the checks at the end need."""

    def __init__(self, dag: Dag) -> None:
        self.dag = dag
        self.edge_lines = {}
        self.parent_sets = {}
        #: The top DAG's folder, and whether each submit file seen exists.
        self.top = str(Path(dag.path).parent)
        self.exists: dict[str, bool] = {}
        self.placements = {}
        self.config_file = None
        #: Node names in the order they were defined, and the DAG files being spliced.
        self.order: list[str] = []
        self.splicing: list[Path] = []

    def read_file(
        self, path: Path, base: Path, prefix: str, scope: str, depth: int, at: Line | None
    ) -> Scope:
        """Read one DAG file (the top one, a splice or a sub-DAG) into the workflow."""
        sc = Scope(path, base, prefix, scope)
        lines = self.expand_includes(path, base, depth, [], at)
        for line in lines:
            if line.keyword in _NODE_STATEMENTS:
                self.define(sc, line, depth)
            elif line.keyword in _REFUSED:
                raise line.error(_REFUSED[line.keyword])
        for line in lines:
            if line.keyword not in _NODE_STATEMENTS:
                self.statement(sc, line)
        for name, priority in sc.subdags.items():
            for full in sc.splices[name][2]:
                self.dag.nodes[full].priority += priority
        return sc

    def expand_includes(
        self, path: Path, base: Path, depth: int, chain: list[Path], at: Line | None
    ) -> list[Line]:
        """The statements of ``path``, each INCLUDE's read in its place."""
        if path in chain:
            raise _error(at, path, "includes itself")
        if depth > MAX_DEPTH:
            raise _error(at, path, f"nests deeper than {MAX_DEPTH} files")
        if not path.is_file():
            raise _error(at, path, "is not a file" if path.exists() else "does not exist")
        out: list[Line] = []
        for line in read_lines(path):
            if line.keyword != "INCLUDE":
                out.append(line)
            elif len(line.words) != 2:
                raise line.error(Syntax.INCLUDE)
            else:
                target = (base / line.words[1]).absolute()
                out += self.expand_includes(target, base, depth + 1, [*chain, path], line)
        return out

    # ----------------------------------------------------------------------- nodes

    def define(self, sc: Scope, line: Line, depth: int) -> None:
        """A JOB, SUBDAG EXTERNAL or SPLICE statement."""
        words = quoted_words(line)
        if line.keyword == "JOB":
            self.job(sc, line, words)
        elif line.keyword == "SUBDAG":
            if len(words) < 2 or words[1].upper() != "EXTERNAL":
                raise line.error(Syntax.SUBDAG)
            name, file, options = node_words(line, words[2:], Syntax.SUBDAG)
            self.splice(sc, line, name, file, options, depth)
            sc.subdags[name] = 0
        else:
            if len(words) not in (3, 5) or (len(words) == 5 and words[3].upper() != "DIR"):
                raise line.error(Syntax.SPLICE)
            options = {"DIR": words[4]} if len(words) == 5 else {}
            self.splice(sc, line, words[1], words[2], options, depth)

    def job(self, sc: Scope, line: Line, words: list[str]) -> None:
        name, file, options = node_words(line, words[1:], Syntax.JOB)
        if file.startswith("{"):
            raise line.error(_REFUSED["SUBMIT-DESCRIPTION"])
        self.check_new_name(sc, line, name)
        node = DagNode(
            name=sc.scope + name,
            submit_file=file,
            directory=self.folder(sc, line, options.get("DIR")),
            done="DONE" in options,
            noop="NOOP" in options,
            line=line.number,
            file=line.path,
        )
        self.dag.nodes[node.name] = node
        self.order.append(node.name)
        sc.nodes[name] = node.name
        sc.defined[name] = line
        if not (node.noop or node.done):
            submit = os.path.join(self.top, node.directory, file)
            if not self.exists.setdefault(submit, os.path.isfile(submit)):
                raise line.error(f"submit file {submit} does not exist")

    def check_new_name(self, sc: Scope, line: Line, name: str) -> None:
        if problem := name_problem(name):
            raise line.error(problem)
        if name in sc.defined:
            first = sc.defined[name]
            raise line.error(f"{name} is already defined at {first.path}:{first.number}")

    def folder(self, sc: Scope, line: Line, directory: str | None) -> str:
        """A node's folder relative to the top DAG's folder (or absolute): a splice's
        DIR comes before its nodes' own."""
        if directory is None:
            return sc.prefix
        joined = str(Path(sc.prefix) / directory) if sc.prefix else directory
        if not (Path(self.dag.path).parent / joined).is_dir():
            raise line.error(f"DIR {directory} is not a folder")
        return joined

    def splice(
        self, sc: Scope, line: Line, name: str, file: str, options: dict[str, str], depth: int
    ) -> None:
        """Expand the SPLICE (or SUBDAG EXTERNAL) ``name`` of DAG file ``file`` here."""
        self.check_new_name(sc, line, name)
        prefix = self.folder(sc, line, options.get("DIR"))
        base = Path(self.dag.path).parent / prefix
        target = (base / file).absolute()
        if target in self.splicing:
            raise line.error(f"DAG file {target} splices itself")
        before = len(self.order)
        self.splicing.append(target)
        self.read_file(target, base, prefix, sc.scope + name + "+", depth + 1, line)
        self.splicing.pop()
        added = self.order[before:]
        if not added:
            raise line.error(f"DAG file {base / file} defines no node")
        for full in added:
            node = self.dag.nodes[full]
            node.done = node.done or "DONE" in options
            node.noop = node.noop or "NOOP" in options
        inside = set(added)
        parents = {p for n in added for p in self.dag.nodes[n].parents}
        initial = [n for n in added if not inside.intersection(self.dag.nodes[n].parents)]
        terminal = [n for n in added if n not in parents]
        sc.splices[name] = (initial, terminal, added)
        sc.defined[name] = line

    # ------------------------------------------------------------------ the end

    def finish(self) -> None:
        """What needs the whole workflow: a cycle, where each VARS goes."""
        if not self.dag.nodes:
            raise DagFileError(self.dag.path, None, "defines no node")
        cycle = find_cycle({n.name: n.parents for n in self.dag.nodes.values()})
        if cycle is not None:
            edge = self.edge_lines[(cycle[0], cycle[1])]
            raise edge.error("the DAG has a cycle: " + " -> ".join(cycle))
        append = self.dag.config.get("DAGMAN_DEFAULT_APPEND_VARS") == "true"
        for node in self.dag.nodes.values():
            node.append_vars = [v for v in node.vars if self.placements.get((node.name, v), append)]


def node_words(line: Line, words: list[str], syntax: str) -> tuple[str, str, dict[str, str]]:
    """The name, file and options (``DIR d``, ``NOOP``, ``DONE``, in any order) of a
    JOB or SUBDAG EXTERNAL statement."""
    if len(words) < 2:
        raise line.error(syntax)
    options: dict[str, str] = {}
    rest = words[2:]
    while rest:
        word = rest.pop(0).upper()
        if word == "DIR" and rest:
            options["DIR"] = rest.pop(0)
        elif word in ("NOOP", "DONE"):
            options[word] = ""
        else:
            raise line.error(f"unexpected {word!r}: {syntax}")
    return words[0], words[1], options


def _error(at: Line | None, path: Path, what: str) -> DagFileError:
    """The error of a DAG file that cannot be read: at the line that named it."""
    if at is None:
        return DagFileError(str(path), None, what)
    return at.error(f"DAG file {path} {what}")
