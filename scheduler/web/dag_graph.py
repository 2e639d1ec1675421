"""A workflow drawn as an SVG picture for the web dashboard: one box per node, coloured
by its state, parents above children (a layered drawing: each node one layer below its
lowest parent, the nodes of a layer ordered to keep edges short and uncrossed), an
arrow per edge, and a legend of the states shown.

A pure function of the nodes: no scripts, no external references, no ``style``
attributes or elements (the dashboard's Content-Security-Policy allows neither), only
SVG presentation attributes; each box has a ``<title>`` (its name and state, shown on
hover) and, where a link is given, is a link (to the node's jobs, say).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

__all__ = ["MAX_BENDS", "MAX_NODES", "STATE_COLOURS", "GraphNode", "dag_svg", "layers"]

#: Larger workflows are not drawn (the picture would be unreadable and slow); the
#: picture then says so.
MAX_NODES = 1500
#: Edges that span layers bend beside the boxes of the layers between, up to this many
#: bends in all (past it, they are drawn straight, to keep the picture quick to make).
MAX_BENDS = 5000
#: Fill and text colour of each state; any other state is drawn in grey.
STATE_COLOURS: dict[str, tuple[str, str]] = {
    "done": ("#3a9d5d", "#ffffff"),
    "running": ("#2e5cb8", "#ffffff"),
    "idle": ("#d0d5dd", "#1d2430"),
    "waiting": ("#ffffff", "#1d2430"),
    "pre": ("#7a5af8", "#ffffff"),
    "post": ("#7a5af8", "#ffffff"),
    "held": ("#f79009", "#1d2430"),
    "failed": ("#d92d20", "#ffffff"),
    "removed": ("#667085", "#ffffff"),
}
_OTHER = ("#98a2b3", "#1d2430")
_STROKE = "#667085"
_LABEL_CHARS = 22
_CHAR_WIDTH = 7
_BOX_HEIGHT = 26
_GAP_X = 14
_GAP_Y = 46
#: The room a long edge takes where it crosses a layer.
_BEND_WIDTH = 6
_MARGIN = 12
_LEGEND_HEIGHT = 28
_FONT = "system-ui, sans-serif"


@dataclass(frozen=True)
class GraphNode:
    """A node to draw: its name, its state (``done``, ``running``, ``idle``,
    ``waiting``, ``failed``...) and the names of its parents."""

    name: str
    state: str
    parents: tuple[str, ...] = ()


#: A place in a layer: a node, or a bend of a long edge (parent, child, layer) crossing it.
Item = str | tuple[str, str, int]


@dataclass
class Layout:
    """The layers, top to bottom, each in its drawing order, with every edge that spans
    several layers cut into one step a layer (``up``/``down`` link the items)."""

    rows: list[list[Item]]
    up: dict[Item, list[Item]]
    down: dict[Item, list[Item]]
    #: False when the long edges would need more than MAX_BENDS bends: they are then
    #: drawn straight from parent to child.
    bent: bool = True

    def chain(self, parent: str, child: str, depth: Mapping[str, int]) -> list[Item]:
        """The items an edge goes through, from its parent to its child."""
        if not self.bent:
            return [parent, child]
        bends: list[Item] = [(parent, child, d) for d in range(depth[parent] + 1, depth[child])]
        return [parent, *bends, child]


def layers(nodes: Sequence[GraphNode]) -> list[list[str]]:
    """The nodes by layer, each one layer below its lowest parent, each layer in the
    order that keeps edges short and uncrossed. ``ValueError`` for a duplicate name,
    an unknown parent or a cycle."""
    layout, _ = _layout(nodes)
    return [[item for item in row if isinstance(item, str)] for row in layout.rows]


def _layout(nodes: Sequence[GraphNode]) -> tuple[Layout, dict[str, int]]:
    by_name: dict[str, GraphNode] = {}
    for node in nodes:
        if node.name in by_name:
            raise ValueError(f"node {node.name!r} is given twice")
        by_name[node.name] = node
    children: dict[str, list[str]] = {name: [] for name in by_name}
    for node in nodes:
        for parent in dict.fromkeys(node.parents):
            if parent not in by_name:
                raise ValueError(f"node {node.name!r} has an unknown parent {parent!r}")
            children[parent].append(node.name)
    depth = _depths(by_name, children)
    bends = sum(depth[n.name] - depth[p] - 1 for n in nodes for p in dict.fromkeys(n.parents))
    layout = Layout([[] for _ in range(max(depth.values(), default=-1) + 1)], {}, {})
    layout.bent = bends <= MAX_BENDS
    for node in nodes:
        layout.rows[depth[node.name]].append(node.name)
        layout.up[node.name], layout.down[node.name] = [], []
    for node in nodes:
        for parent in dict.fromkeys(node.parents):
            chain = layout.chain(parent, node.name, depth)
            for k, bend in enumerate(chain[1:-1], 1):
                layout.rows[depth[parent] + k].append(bend)
                layout.up[bend], layout.down[bend] = [], []
            for high, low in zip(chain, chain[1:], strict=False):
                layout.down[high].append(low)
                layout.up[low].append(high)
    _order(layout)
    return layout, depth


def _depths(by_name: Mapping[str, GraphNode], children: Mapping[str, list[str]]) -> dict[str, int]:
    """Each node's layer: the longest path to it from a node without parents."""
    waiting = {name: len(set(node.parents)) for name, node in by_name.items()}
    ready = [name for name, count in waiting.items() if count == 0]
    depth = dict.fromkeys(ready, 0)
    while ready:
        name = ready.pop()
        for child in children[name]:
            depth[child] = max(depth.get(child, 0), depth[name] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(depth) < len(by_name) or any(waiting.values()):
        stuck = sorted(name for name, count in waiting.items() if count)
        raise ValueError(f"the nodes have a cycle (through {', '.join(stuck[:5])})")
    return depth


def _order(layout: Layout) -> None:
    """Reorder each layer by the mean place of its items' neighbours in the layer
    above (sweeping down) and below (sweeping up): the barycentre heuristic."""
    rows = layout.rows

    def sweep(indexes: range, neighbours: Mapping[Item, list[Item]], ref: int) -> None:
        for i in indexes:
            place = {item: k for k, item in enumerate(rows[i + ref])}
            keys = {item: _barycentre(neighbours[item], place, k) for k, item in enumerate(rows[i])}
            rows[i].sort(key=keys.__getitem__)

    for _ in range(4):
        sweep(range(1, len(rows)), layout.up, -1)
        sweep(range(len(rows) - 2, -1, -1), layout.down, 1)


def _barycentre(neighbours: Sequence[Item], place: Mapping[Item, int], own: int) -> float:
    """The mean place of ``neighbours`` in the next layer (``own`` without any)."""
    seen = [place[n] for n in neighbours if n in place]
    return sum(seen) / len(seen) if seen else own


def dag_svg(nodes: Sequence[GraphNode], links: Mapping[str, str] | None = None) -> str:
    """The SVG picture of ``nodes`` (see the module's text); ``links`` maps a node's
    name to the address its box links to."""
    if len(nodes) > MAX_NODES:
        return _note(f"{len(nodes)} nodes: too many to draw (at most {MAX_NODES})")
    if not nodes:
        return _note("no nodes")
    layout, depth = _layout(nodes)
    state = {node.name: node.state for node in nodes}
    box_w = min(max(len(n.name) for n in nodes), _LABEL_CHARS) * _CHAR_WIDTH + 16

    def width(item: Item) -> int:
        return box_w if isinstance(item, str) else _BEND_WIDTH

    centre = _centres(layout, width)
    shift = _MARGIN - min(centre[row[0]] - width(row[0]) / 2 for row in layout.rows if row)
    right = max(centre[row[-1]] + width(row[-1]) / 2 for row in layout.rows if row)
    total_w = max(right + shift + _MARGIN, 320)
    top = _MARGIN + _LEGEND_HEIGHT
    rows = len(layout.rows)
    total_h = top + rows * _BOX_HEIGHT + (rows - 1) * _GAP_Y + _MARGIN
    left: dict[Item, float] = {}
    y_of: dict[Item, float] = {}
    for r, row in enumerate(layout.rows):
        for item in row:
            left[item] = round(centre[item] + shift - width(item) / 2, 1)
            y_of[item] = top + r * (_BOX_HEIGHT + _GAP_Y)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:g}" height="{total_h:g}" '
        f'viewBox="0 0 {total_w:g} {total_h:g}" font-family="{_FONT}" font-size="12" '
        'role="img" class="dag-graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M 0 0 L 10 5 L 0 10 z" fill="{_STROKE}"/></marker></defs>',
    ]
    out += _legend(sorted(set(state.values()), key=_state_rank))
    out.append(f'<g class="edges" fill="none" stroke="{_STROKE}" stroke-width="1.2">')
    for node in nodes:
        for parent in dict.fromkeys(node.parents):
            chain = layout.chain(parent, node.name, depth)
            mid = [left[i] + width(i) / 2 for i in chain]
            d = [f"M {mid[0]:g} {y_of[parent] + _BOX_HEIGHT:g}"]
            for k in range(1, len(chain)):
                y1 = y_of[chain[k - 1]] + _BOX_HEIGHT
                y2, bend = y_of[chain[k]], _GAP_Y / 2
                d.append(
                    f"C {mid[k - 1]:g} {y1 + bend:g} {mid[k]:g} {y2 - bend:g} {mid[k]:g} {y2:g}"
                )
                if k < len(chain) - 1:
                    d.append(f"L {mid[k]:g} {y2 + _BOX_HEIGHT:g}")
            out.append(f'<path d="{" ".join(d)}" marker-end="url(#arrow)"/>')
    out.append("</g>")
    for node in nodes:
        out.append(
            _box(node, (left[node.name], y_of[node.name]), box_w, (links or {}).get(node.name))
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _centres(layout: Layout, width: Callable[[Item], int]) -> dict[Item, float]:
    """Each item's horizontal centre: packed in its layer's order at first, then moved
    a few times toward the mean centre of its neighbours in the layer above (or below),
    as near as the order and the gaps between boxes allow, so that chains run straight."""
    centre: dict[Item, float] = {}
    for row in layout.rows:
        x = 0.0
        for item in row:
            centre[item] = x + width(item) / 2
            x += width(item) + _GAP_X
    for _ in range(4):
        for rows, neighbours in (
            (layout.rows[1:], layout.up),
            (layout.rows[-2::-1], layout.down),
        ):
            for row in rows:
                wanted = [_mean([centre[n] for n in neighbours[i]], centre[i]) for i in row]
                _place(row, wanted, width, centre)
    return centre


def _place(
    row: list[Item], wanted: list[float], width: Callable[[Item], int], centre: dict[Item, float]
) -> None:
    """Centres for ``row`` as near ``wanted`` as its order and gaps allow: the mean of
    packing from the left (pushing right) and from the right (pushing left)."""
    gap = [(width(a) + width(b)) / 2 + _GAP_X for a, b in zip(row, row[1:], strict=False)]
    from_left = list(wanted)
    for k in range(1, len(row)):
        from_left[k] = max(from_left[k], from_left[k - 1] + gap[k - 1])
    from_right = list(wanted)
    for k in range(len(row) - 2, -1, -1):
        from_right[k] = min(from_right[k], from_right[k + 1] - gap[k])
    mixed = [(a + b) / 2 for a, b in zip(from_left, from_right, strict=True)]
    for k in range(1, len(row)):
        mixed[k] = max(mixed[k], mixed[k - 1] + gap[k - 1])
    for item, x in zip(row, mixed, strict=True):
        centre[item] = x


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _box(node: GraphNode, at: tuple[float, float], width: int, link: str | None) -> str:
    fill, ink = STATE_COLOURS.get(node.state, _OTHER)
    x, y = at
    label = node.name if len(node.name) <= _LABEL_CHARS else node.name[: _LABEL_CHARS - 1] + "…"
    parts = [
        f'<g class="node" data-node={quoteattr(node.name)} data-state={quoteattr(node.state)}>',
        f"<title>{escape(node.name)}: {escape(node.state)}</title>",
        f'<rect x="{x:g}" y="{y:g}" width="{width}" height="{_BOX_HEIGHT}" rx="5" '
        f'fill="{fill}" stroke="{_STROKE}"/>',
        f'<text x="{x + width / 2:g}" y="{y + _BOX_HEIGHT / 2 + 4:g}" text-anchor="middle" '
        f'fill="{ink}">{escape(label)}</text>',
        "</g>",
    ]
    if link is not None:
        parts = [f"<a href={quoteattr(link)}>", *parts, "</a>"]
    return "".join(parts)


def _legend(states: list[str]) -> list[str]:
    out = ['<g class="legend">']
    x = _MARGIN
    for name in states:
        fill, _ = STATE_COLOURS.get(name, _OTHER)
        out.append(
            f'<rect x="{x}" y="{_MARGIN}" width="12" height="12" rx="2" fill="{fill}" '
            f'stroke="{_STROKE}"/><text x="{x + 16}" y="{_MARGIN + 10}">{escape(name)}</text>'
        )
        x += 16 + _CHAR_WIDTH * len(name) + 14
    out.append("</g>")
    return out


def _state_rank(state: str) -> tuple[int, str]:
    order = list(STATE_COLOURS)
    return (order.index(state) if state in order else len(order), state)


def _note(text: str) -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="480" height="40" viewBox="0 0 480 40" '
        f'font-family="{_FONT}" font-size="13" role="img" class="dag-graph">'
        f'<text x="12" y="24" fill="#667085">{escape(text)}</text></svg>\n'
    )
