"""The dashboard's picture of a workflow: well-formed SVG with no script or outside
reference, one box per node coloured by its state, every parent drawn above its
children, boxes that do not overlap, and edges that the ordering keeps uncrossed where
it can."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from scheduler.web.dag_graph import (
    MAX_BENDS,
    MAX_NODES,
    STATE_COLOURS,
    GraphNode,
    dag_svg,
    layers,
)

SVG = "{http://www.w3.org/2000/svg}"

DIAMOND = [
    GraphNode("A", "done"),
    GraphNode("B", "running", ("A",)),
    GraphNode("C", "failed", ("A",)),
    GraphNode("D", "waiting", ("B", "C")),
]


def boxes(svg: str) -> dict[str, tuple[float, float, float, float, str, str]]:
    """Each node's box: x, y, width, height, fill and state."""
    out = {}
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        if group.get("class") != "node":
            continue
        rect = group.find(f"{SVG}rect")
        assert rect is not None
        out[group.get("data-node") or ""] = (
            float(rect.get("x") or 0),
            float(rect.get("y") or 0),
            float(rect.get("width") or 0),
            float(rect.get("height") or 0),
            rect.get("fill") or "",
            group.get("data-state") or "",
        )
    return out


def test_the_diamond_is_drawn_in_three_layers_with_its_states() -> None:
    svg = dag_svg(DIAMOND)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    drawn = boxes(svg)
    assert set(drawn) == {"A", "B", "C", "D"}
    assert drawn["A"][1] < drawn["B"][1] == drawn["C"][1] < drawn["D"][1]
    for name, state in [("A", "done"), ("B", "running"), ("C", "failed"), ("D", "waiting")]:
        assert drawn[name][4] == STATE_COLOURS[state][0] and drawn[name][5] == state
    paths = [p for p in root.iter(f"{SVG}path") if p.get("marker-end")]
    assert len(paths) == 4
    titles = [t.text for t in root.iter(f"{SVG}title")]
    assert "C: failed" in titles
    legend = [t.text for g in root.iter(f"{SVG}g") if g.get("class") == "legend" for t in g]
    assert [t for t in legend if t] == ["done", "running", "waiting", "failed"]


def test_no_scripts_styles_or_outside_references() -> None:
    svg = dag_svg(DIAMOND, links={"A": "/jobs/1.0"})
    root = ET.fromstring(svg)
    tags = {e.tag.removeprefix(SVG) for e in root.iter()}
    assert not tags & {"script", "style", "foreignObject", "image", "use"}
    for element in root.iter():
        assert "style" not in element.attrib
        assert not any(k.lower().startswith("on") for k in element.attrib)
    assert [a.get("href") for a in root.iter(f"{SVG}a")] == ["/jobs/1.0"]
    assert "http://" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_names_are_escaped() -> None:
    nodes = [GraphNode('a<b>&"c', "idle"), GraphNode("x", "weird", ('a<b>&"c',))]
    svg = dag_svg(nodes)
    drawn = boxes(svg)
    assert set(drawn) == {'a<b>&"c', "x"}
    assert drawn["x"][5] == "weird" and drawn["x"][4] != ""


def test_parents_are_always_above_and_boxes_never_overlap() -> None:
    # Three levels of fan-out and fan-in, 50 nodes, with a long edge skipping layers.
    nodes = [GraphNode("start", "done")]
    mids = [f"m{i}" for i in range(8)]
    nodes += [GraphNode(m, "running", ("start",)) for m in mids]
    leaves = [f"l{i}" for i in range(40)]
    nodes += [GraphNode(leaf, "idle", (mids[i % 8],)) for i, leaf in enumerate(leaves)]
    nodes.append(GraphNode("end", "waiting", (*leaves, "start")))
    assert len(nodes) == 50
    drawn = boxes(dag_svg(nodes))
    for node in nodes:
        for parent in node.parents:
            assert drawn[parent][1] + drawn[parent][3] < drawn[node.name][1]
    for a, b in itertools.combinations(drawn.values(), 2):
        apart_x = a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0]
        apart_y = a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]
        assert apart_x or apart_y


def test_long_edges_go_around_the_boxes_of_the_layers_they_cross() -> None:
    nodes = [GraphNode("top", "done")]
    nodes += [GraphNode(f"a{i}", "idle", ("top",)) for i in range(5)]
    nodes += [GraphNode(f"b{i}", "idle", (f"a{i}",)) for i in range(5)]
    nodes.append(GraphNode("bottom", "waiting", ("top", *(f"b{i}" for i in range(5)))))
    svg = dag_svg(nodes)
    drawn = boxes(svg)
    crossings = 0
    for path in ET.fromstring(svg).iter(f"{SVG}path"):
        if not path.get("marker-end"):
            continue  # the arrow head's shape
        words = (path.get("d") or "").split()
        for k, word in enumerate(words):
            if word != "L":
                continue
            x, y_end = float(words[k + 1]), float(words[k + 2])
            crossings += 1
            for bx, by, bw, bh, _, _ in drawn.values():
                assert not (bx <= x <= bx + bw and by < y_end and y_end - bh < by + bh)
    assert crossings == 2  # top -> bottom crosses the a and b layers beside their boxes


def test_past_the_bend_budget_long_edges_are_drawn_straight() -> None:
    # A chain whose first node is a parent of every node: ~n*n/2 bends.
    n = 120
    assert n * (n - 3) // 2 > MAX_BENDS
    nodes = [GraphNode("c0", "done")]
    nodes += [GraphNode(f"c{i}", "idle", (f"c{i - 1}", "c0")) for i in range(1, n)]
    root = ET.fromstring(dag_svg(nodes))
    paths = [p.get("d") or "" for p in root.iter(f"{SVG}path") if p.get("marker-end")]
    assert len(paths) == 2 * n - 3 and not any(" L " in d for d in paths)
    few = nodes[:40]
    paths = [p.get("d") or "" for p in ET.fromstring(dag_svg(few)).iter(f"{SVG}path")]
    assert any(" L " in d for d in paths if d.startswith("M") and "z" not in d)


def test_the_ordering_uncrosses_two_chains() -> None:
    # Given crossed (b2 is a's child, b1 is z's), the layer below is reordered.
    nodes = [
        GraphNode("a", "idle"),
        GraphNode("z", "idle"),
        GraphNode("b1", "idle", ("z",)),
        GraphNode("b2", "idle", ("a",)),
    ]
    assert layers(nodes) == [["a", "z"], ["b2", "b1"]]


def test_longest_path_layering() -> None:
    nodes = [
        GraphNode("a", "idle"),
        GraphNode("b", "idle", ("a",)),
        GraphNode("c", "idle", ("a", "b")),
    ]
    assert layers(nodes) == [["a"], ["b"], ["c"]]


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([GraphNode("a", "idle"), GraphNode("a", "idle")], "given twice"),
        ([GraphNode("a", "idle", ("x",))], "unknown parent 'x'"),
        ([GraphNode("a", "idle", ("b",)), GraphNode("b", "idle", ("a",))], "cycle"),
    ],
)
def test_what_is_no_workflow_is_refused(nodes: list[GraphNode], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dag_svg(nodes)


def test_too_many_nodes_are_not_drawn_and_the_picture_says_so() -> None:
    nodes = [GraphNode(f"n{i}", "idle") for i in range(MAX_NODES + 1)]
    root = ET.fromstring(dag_svg(nodes))
    assert not boxes(dag_svg(nodes))
    assert "too many to draw" in "".join(root.itertext())
    assert "no nodes" in dag_svg([])


def test_the_picture_is_the_same_each_time() -> None:
    assert dag_svg(DIAMOND) == dag_svg(list(DIAMOND))
