"""The statements of a DAG file other than those that define nodes (DAGMan's second
pass): PARENT/CHILD, VARS, RETRY, SCRIPT, PRE_SKIP, PRIORITY, CATEGORY, MAXJOBS,
ABORT-DAG-ON, DONE, CONFIG, DOT and REJECT. Mixed into the reader of
:mod:`control_node.dag_file`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from control_node.dag_checks import VAR_NAME, var_name_problem
from control_node.dag_lines import DagFileError, Line, read_lines
from control_node.dag_model import CONFIG_SETTINGS, Dag, DagNode, DagScript

__all__ = ["Scope", "StatementReader", "Syntax"]


class Syntax:
    """What each statement looks like, for messages."""

    JOB = "JOB NodeName SubmitFile [DIR directory] [NOOP] [DONE]"
    SUBDAG = "SUBDAG EXTERNAL NodeName DagFile [DIR directory] [NOOP] [DONE]"
    SPLICE = "SPLICE SpliceName DagFile [DIR directory]"
    INCLUDE = "INCLUDE FileName"
    PARENT = "PARENT ParentName ... CHILD ChildName ..."
    VARS = 'VARS <NodeName | ALL_NODES> [PREPEND | APPEND] macroname="value" ...'
    RETRY = "RETRY <NodeName | ALL_NODES> NumberOfRetries [UNLESS-EXIT value]"
    SCRIPT = "SCRIPT [DEFER status time] PRE|POST <NodeName | ALL_NODES> Executable [arguments]"
    PRE_SKIP = "PRE_SKIP <NodeName | ALL_NODES> non-zero-exit-code"
    PRIORITY = "PRIORITY <NodeName | ALL_NODES> PriorityValue"
    CATEGORY = "CATEGORY <NodeName | ALL_NODES> CategoryName"
    MAXJOBS = "MAXJOBS CategoryName MaxJobsValue"
    ABORT = "ABORT-DAG-ON <NodeName | ALL_NODES> AbortExitValue [RETURN DAGReturnValue]"
    DONE = "DONE NodeName"
    CONFIG = "CONFIG FileName"
    DOT = "DOT FileName [DONT-UPDATE] [OVERWRITE | DONT-OVERWRITE] [INCLUDE HeaderFile]"


ALL_NODES = "ALL_NODES"
_INT = re.compile(r"[+-]?\d+")
#: ``name = "value"``: in the value a backslash escapes the next character.
_VAR_PAIR = re.compile(r'\s*(\+?[A-Za-z0-9_.]+)\s*=\s*"((?:\\.|[^"\\])*)"')
_VAR_ESCAPE = re.compile(r"\\(.)")
_JOB_MACRO = re.compile(r"\$\(JOB\)", re.IGNORECASE)
_BOOLEAN_SETTINGS = frozenset({"DAGMAN_ALWAYS_RUN_POST", "DAGMAN_DEFAULT_APPEND_VARS"})


@dataclass
class Scope:
    """One DAG file being read: the top one, a splice or an external sub-DAG."""

    #: The file's path (for messages) and the folder its relative paths start from.
    path: Path
    base: Path
    #: Where its nodes' folders start, relative to the top DAG's folder.
    prefix: str
    #: ``"splice+"`` for a spliced file, "" for the top one.
    scope: str
    #: Node names as this file knows them -> full names.
    nodes: dict[str, str] = field(default_factory=dict)
    #: Splices and sub-DAGs this file names -> (initial nodes, terminal nodes, all).
    splices: dict[str, tuple[list[str], list[str], list[str]]] = field(default_factory=dict)
    #: The names of those that are SUBDAG EXTERNAL, with their PRIORITY.
    subdags: dict[str, int] = field(default_factory=dict)
    #: The definitions' lines, for duplicate messages.
    defined: dict[str, Line] = field(default_factory=dict)


class StatementReader:
    """Carries out one second-pass statement on the workflow."""

    dag: Dag
    #: The line of each edge (parent, child), for a cycle's message.
    edge_lines: dict[tuple[str, str], Line]
    #: Each node's parents as a set, to add an edge once in constant time.
    parent_sets: dict[str, set[str]]
    #: VARS whose PREPEND/APPEND was said: (node, var) -> True for APPEND.
    placements: dict[tuple[str, str], bool]
    config_file: Path | None

    def statement(self, sc: Scope, line: Line) -> None:
        handler = _HANDLERS.get(line.keyword)
        if handler is None:
            raise line.error(f"unknown statement {line.words[0]!r}")
        handler(self, sc, line)

    # ------------------------------------------------------------------- targets

    def targets(self, sc: Scope, line: Line, name: str, syntax: str) -> list[DagNode]:
        """The nodes a per-node statement names (a node, or ALL_NODES: every node this
        file defines). A splice is refused, and so is a sub-DAG: dfarm expands it into
        its nodes, so it is no one node that could retry or run scripts."""
        what = line.keyword
        if name.upper() == ALL_NODES:
            if sc.subdags:
                subdag = next(iter(sc.subdags))
                raise line.error(
                    f"{what} ALL_NODES would apply to SUBDAG EXTERNAL {subdag}, which dfarm "
                    "expands into its nodes: name the nodes instead"
                )
            return [self.dag.nodes[full] for full in sc.nodes.values()]
        if name in sc.nodes:
            return [self.dag.nodes[sc.nodes[name]]]
        if name in sc.subdags:
            raise line.error(
                f"{name} is a SUBDAG EXTERNAL, which dfarm expands into its nodes: {what} "
                "cannot apply to it as one node (a NOOP node before or after it can carry "
                "scripts; its nodes can carry the rest)"
            )
        if name in sc.splices:
            raise line.error(f"{name} is a splice: {what} applies to nodes, not to a splice")
        raise line.error(f"unknown node {name!r} ({syntax})")

    def edge_side(self, sc: Scope, line: Line, names: list[str], parent: bool) -> list[str]:
        """The full names one side of a PARENT ... CHILD line stands for: a splice's
        terminal nodes as a parent, its initial nodes as a child."""
        out: list[str] = []
        for name in names:
            if name in sc.nodes:
                out.append(sc.nodes[name])
            elif name in sc.splices:
                initial, terminal, _ = sc.splices[name]
                out += terminal if parent else initial
            else:
                raise line.error(f"unknown node {name!r}")
        return out

    # ---------------------------------------------------------------- statements

    def parent(self, sc: Scope, line: Line) -> None:
        words = line.words[1:]
        upper = [w.upper() for w in words]
        if upper.count("CHILD") != 1:
            raise line.error(Syntax.PARENT)
        cut = upper.index("CHILD")
        parents, children = words[:cut], words[cut + 1 :]
        if not parents or not children:
            raise line.error(Syntax.PARENT)
        if any(w.upper() == ALL_NODES for w in parents):
            named = set(children)
            parents = [n for n in [*sc.nodes, *sc.splices] if n not in named]
        if any(w.upper() == ALL_NODES for w in children):
            named = set(parents)
            children = [n for n in [*sc.nodes, *sc.splices] if n not in named]
        above = list(dict.fromkeys(self.edge_side(sc, line, parents, parent=True)))
        for child in self.edge_side(sc, line, children, parent=False):
            node, known = self.dag.nodes[child], self.parent_sets.setdefault(child, set())
            for p in above:
                if p == child:
                    raise line.error(f"the DAG has a cycle: {p} -> {p}")
                if p not in known:
                    known.add(p)
                    node.parents.append(p)
                    self.edge_lines[(p, child)] = line

    def vars(self, sc: Scope, line: Line) -> None:
        m = re.match(r"\s*\S+\s+(\S+)\s*(.*)$", line.text)
        if m is None:
            raise line.error(Syntax.VARS)
        name, rest = m[1], m[2]
        placement: bool | None = None
        head = rest.split(maxsplit=1)
        if head and head[0].upper() in ("PREPEND", "APPEND"):
            placement = head[0].upper() == "APPEND"
            rest = head[1] if len(head) > 1 else ""
        pairs = parse_vars(line, rest)
        for node in self.targets(sc, line, name, Syntax.VARS):
            for key, value in pairs:
                node.vars[key] = _JOB_MACRO.sub(node.name.replace("\\", "\\\\"), value)
                if placement is not None:
                    self.placements[(node.name, key)] = placement

    def retry(self, sc: Scope, line: Line) -> None:
        words = line.words
        if len(words) not in (3, 5) or (len(words) == 5 and words[3].upper() != "UNLESS-EXIT"):
            raise line.error(Syntax.RETRY)
        count = integer(line, words[2], "the number of retries", low=0)
        unless = integer(line, words[4], "UNLESS-EXIT") if len(words) == 5 else None
        for node in self.targets(sc, line, words[1], Syntax.RETRY):
            node.retry, node.retry_unless_exit = count, unless

    def script(self, sc: Scope, line: Line) -> None:
        words = line.words[1:]
        defer_status, defer_time = None, 0
        if words and words[0].upper() == "DEFER":
            if len(words) < 3:
                raise line.error(Syntax.SCRIPT)
            defer_status = integer(line, words[1], "the DEFER status", low=1)
            defer_time = integer(line, words[2], "the DEFER time", low=0)
            words = words[3:]
        if words and words[0].upper() == "DEBUG":
            raise line.error(
                "SCRIPT DEBUG is not supported: a script's output goes to the DAG's log"
            )
        if words and words[0].upper() == "HOLD":
            raise line.error(
                "SCRIPT HOLD is not supported: a held node's jobs show in `dq -dag ID` and "
                "`dq -hold`"
            )
        if len(words) < 3 or words[0].upper() not in ("PRE", "POST"):
            raise line.error(Syntax.SCRIPT)
        when = words[0].upper()
        script = DagScript(
            when="PRE" if when == "PRE" else "POST",
            executable=words[2],
            arguments=words[3:],
            defer_status=defer_status,
            defer_time=defer_time,
            line=line.number,
        )
        for node in self.targets(sc, line, words[1], Syntax.SCRIPT):
            setattr(node, when.lower(), replace(script, arguments=list(script.arguments)))

    def pre_skip(self, sc: Scope, line: Line) -> None:
        words = line.words
        if len(words) != 3:
            raise line.error(Syntax.PRE_SKIP)
        code = integer(line, words[2], "the PRE_SKIP exit code", low=1, high=255)
        for node in self.targets(sc, line, words[1], Syntax.PRE_SKIP):
            node.pre_skip = code

    def priority(self, sc: Scope, line: Line) -> None:
        words = line.words
        if len(words) != 3:
            raise line.error(Syntax.PRIORITY)
        value = integer(line, words[2], "the priority")
        name = words[1]
        if name.upper() == ALL_NODES:  # a sub-DAG's priority is added to its nodes'
            sc.subdags.update(dict.fromkeys(sc.subdags, value))
            for full in sc.nodes.values():
                self.dag.nodes[full].priority = value
        elif name in sc.subdags:
            sc.subdags[name] = value
        else:
            for node in self.targets(sc, line, name, Syntax.PRIORITY):
                node.priority = value

    def category(self, sc: Scope, line: Line) -> None:
        words = line.words
        if len(words) != 3:
            raise line.error(Syntax.CATEGORY)
        name = category_name(sc, words[2])
        for node in self.targets(sc, line, words[1], Syntax.CATEGORY):
            node.category = name

    def maxjobs(self, sc: Scope, line: Line) -> None:
        words = line.words
        if len(words) != 3:
            raise line.error(Syntax.MAXJOBS)
        limit = integer(line, words[2], "MAXJOBS", low=1)
        self.dag.max_jobs[category_name(sc, words[1])] = limit

    def abort_dag_on(self, sc: Scope, line: Line) -> None:
        words = line.words
        if len(words) not in (3, 5) or (len(words) == 5 and words[3].upper() != "RETURN"):
            raise line.error(Syntax.ABORT)
        value = integer(line, words[2], "the abort exit value")
        code = integer(line, words[4], "RETURN", low=0, high=255) if len(words) == 5 else None
        for node in self.targets(sc, line, words[1], Syntax.ABORT):
            node.abort_on = (value, code)

    def done(self, sc: Scope, line: Line) -> None:
        words = line.words
        if len(words) != 2 or words[1].upper() == ALL_NODES:
            raise line.error(Syntax.DONE)
        if words[1] in sc.subdags:
            for full in sc.splices[words[1]][2]:
                self.dag.nodes[full].done = True
            return
        for node in self.targets(sc, line, words[1], Syntax.DONE):
            node.done = True

    def config(self, sc: Scope, line: Line) -> None:
        words = line.words
        if len(words) != 2:
            raise line.error(Syntax.CONFIG)
        top_only(sc, line)
        path = (sc.base / words[1]).absolute()
        if self.config_file is not None and self.config_file != path:
            raise line.error(f"a second CONFIG file: {self.config_file} is already named")
        if not path.is_file():
            raise line.error(f"CONFIG file {path} does not exist")
        self.config_file = path
        for setting in read_lines(path):
            m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*=\s*(.*)", setting.text)
            if m is None:
                raise setting.error("expected NAME = value")
            name = m[1].upper()
            if name not in CONFIG_SETTINGS:
                known = ", ".join(CONFIG_SETTINGS)
                raise setting.error(
                    f"{m[1]} is not a setting dfarm applies to a DAG (it applies {known})"
                )
            self.dag.config[name] = config_value(setting, name, m[2].strip())

    def dot(self, sc: Scope, line: Line) -> None:
        words = line.words
        if len(words) < 2:
            raise line.error(Syntax.DOT)
        top_only(sc, line)
        self.dag.dot_file = str((sc.base / words[1]).absolute())
        rest = words[2:]
        while rest:
            word = rest.pop(0).upper()
            if word == "UPDATE":
                raise line.error(
                    "DOT UPDATE is not supported: the DOT file is written once, when the DAG "
                    "is submitted; `dq -dag ID` and the web page show it as it runs"
                )
            if word in ("OVERWRITE", "DONT-OVERWRITE"):
                self.dag.dot_overwrite = word == "OVERWRITE"
            elif word == "INCLUDE" and rest:
                header = (sc.base / rest.pop(0)).absolute()
                if not header.is_file():
                    raise line.error(f"DOT INCLUDE file {header} does not exist")
                self.dag.dot_include = str(header)
            elif word != "DONT-UPDATE":
                raise line.error(f"unexpected {word!r}: {Syntax.DOT}")

    def reject(self, sc: Scope, line: Line) -> None:
        raise line.error("the DAG file is marked REJECT: it must not run")


_HANDLERS = {
    "PARENT": StatementReader.parent,
    "VARS": StatementReader.vars,
    "RETRY": StatementReader.retry,
    "SCRIPT": StatementReader.script,
    "PRE_SKIP": StatementReader.pre_skip,
    "PRIORITY": StatementReader.priority,
    "CATEGORY": StatementReader.category,
    "MAXJOBS": StatementReader.maxjobs,
    "ABORT-DAG-ON": StatementReader.abort_dag_on,
    "DONE": StatementReader.done,
    "CONFIG": StatementReader.config,
    "DOT": StatementReader.dot,
    "REJECT": StatementReader.reject,
}


def top_only(sc: Scope, line: Line) -> None:
    """CONFIG and DOT are the whole DAG's (DAGMan ignores them in a splice, and applies
    them to a sub-DAG alone, which dfarm expands): refused elsewhere, not ignored."""
    if sc.scope:
        raise line.error(
            f"{line.keyword} in a spliced or sub-DAG file is not supported: dfarm runs them "
            "all as one DAG, whose CONFIG and DOT the top DAG file gives"
        )


def category_name(sc: Scope, name: str) -> str:
    """A category's full name: one starting with ``+`` is global, any other belongs to
    its splice (``splice+name``), as in DAGMan."""
    return name if name.startswith("+") else sc.scope + name


def integer(
    line: Line, text: str, what: str, low: int | None = None, high: int | None = None
) -> int:
    """An integer word, within [low, high]."""
    if not _INT.fullmatch(text):
        raise line.error(f"{what} must be an integer, not {text!r}")
    value = int(text)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"from {low} to {high}"
        raise line.error(f"{what} must be {bounds}, not {value}")
    return value


def parse_vars(line: Line, text: str) -> list[tuple[str, str]]:
    """The ``name="value"`` pairs of a VARS line, as DAGMan reads them: a name of
    letters, digits, ``_`` and ``.`` (``+Name`` is ``My.Name``); in the value ``\\"``
    is a double quote and ``\\\\`` a backslash, and any other backslash an error."""
    pairs: list[tuple[str, str]] = []
    at = 0
    while text[at:].strip():
        m = _VAR_PAIR.match(text, at)
        if m is None or not VAR_NAME.fullmatch(m[1]):
            raise line.error(_vars_problem(text[at:].strip()))
        name = "My." + m[1][1:] if m[1].startswith("+") else m[1]
        if problem := var_name_problem(name):
            raise line.error(problem)
        if bad := re.search(r"\\[^\\\"]", m[2].replace("\\\\", "")):
            raise line.error(f"unknown escape sequence {bad[0]!r} in the value of {name}")
        pairs.append((name, _VAR_ESCAPE.sub(r"\1", m[2])))
        at = m.end()
    if not pairs:
        raise line.error(Syntax.VARS)
    return pairs


def _vars_problem(rest: str) -> str:
    """What is wrong with the VARS pair at the start of ``rest``."""
    m = re.match(r"([^\s=]*)\s*(=?)\s*(.?)", rest)
    assert m is not None  # every part may be empty
    if not VAR_NAME.fullmatch(m[1]):
        return f'expected macroname="value" at {rest!r}'
    if m[1].upper() in ("PREPEND", "APPEND"):
        return f"{m[1]} must come before all the variables"
    if not m[2]:
        return f"expected = after {m[1]}"
    if m[3] != '"':
        return f"the value of {m[1]} must be in double quotes"
    return f"the value of {m[1]} has no closing double quote"


def config_value(line: Line, name: str, value: str) -> str:
    """A CONFIG setting's value, checked: "true"/"false" or a whole number."""
    if name in _BOOLEAN_SETTINGS:
        lowered = value.lower()
        if lowered in ("true", "1", "yes"):
            return "true"
        if lowered in ("false", "0", "no"):
            return "false"
        raise line.error(f"{name} must be True or False, not {value!r}")
    if not value.isdigit():
        raise line.error(f"{name} must be a whole number, not {value!r}")
    return str(int(value))


__all__ += ["DagFileError", "category_name", "config_value", "integer", "parse_vars"]
