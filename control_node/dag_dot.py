"""A workflow as a Graphviz DOT file: what the ``DOT`` statement of a DAG file asks
for (``dot -Tsvg dag.dot -o dag.svg`` draws it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from control_node.dag_model import Dag

__all__ = ["dot_text", "write_dot_file"]

#: How a node is drawn, by what the file says of it.
_DONE_STYLE = 'style=filled fillcolor="#d9f2d9"'
_NOOP_STYLE = "style=dashed"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_text(dag: Dag, states: Mapping[str, str] | None = None, header: str = "") -> str:
    """The DOT text of ``dag``: a node per node, labelled with its name (and its state
    where ``states`` gives one), an edge per parent; ``header`` goes after the label,
    as DAGMan puts a ``DOT ... INCLUDE`` file's text."""
    label = Path(dag.path).name if dag.path else "workflow"
    lines = ["digraph DAG {", f"    label={_quoted('DAG ' + label)};"]
    lines += ["    " + h for h in header.splitlines() if h.strip()]
    for node in dag.nodes.values():
        text = node.name
        if states and node.name in states:
            text += f" ({states[node.name]})"
        style = _DONE_STYLE if node.done else _NOOP_STYLE if node.noop else ""
        attrs = f"shape=ellipse label={_quoted(text)}" + (f" {style}" if style else "")
        lines.append(f"    {_quoted(node.name)} [{attrs}];")
    for node in dag.nodes.values():
        lines += [f"    {_quoted(p)} -> {_quoted(node.name)};" for p in node.parents]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dot_file(dag: Dag, states: Mapping[str, str] | None = None) -> Path | None:
    """Write the DOT file the DAG's ``DOT`` statement names (None where it names
    none): over the file, or with ``DONT-OVERWRITE`` as ``file.N``, the first N free.
    The file is written under a temporary name and renamed into place."""
    if dag.dot_file is None:
        return None
    base = Path(dag.path).parent if dag.path else Path.cwd()
    target = base / dag.dot_file
    if not dag.dot_overwrite:
        n = 0
        while Path(f"{target}.{n}").exists():
            n += 1
        target = Path(f"{target}.{n}")
    header = ""
    if dag.dot_include is not None:
        header = (base / dag.dot_include).read_text()
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(dot_text(dag, states, header))
    temporary.replace(target)
    return target
