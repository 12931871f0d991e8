"""The canvas layout keeps skip connections visible: the layered layout moves the nodes a skip would run
behind aside, and an edge that still passes behind nodes (placed by hand, or an old file) is drawn over
them, dashed (components/build/canvas.py)."""

from components.build import canvas
from studio.analysis import analyze
from studio.templates import load_template


def _column(name: str):
    """A template with its nodes in one column, as hand-placed (or older) files have them."""
    graph = load_template(name)
    for k, n in enumerate(graph.nodes):
        n.position = {"x": 0.0, "y": 80.0 * k}
    return graph


def _hidden(graph, direction="down"):
    return [(e.source, e.target) for e in graph.edges if canvas.behind_nodes(graph, e.source, e.target, direction)]


def test_a_residual_column_hides_its_skips_and_the_layout_shows_every_edge():
    graph = _column("resnet_small")  # the skips run behind the blocks
    assert ("stem_relu", "b1_add") in _hidden(graph)
    assert _hidden(load_template("resnet_small")) == [] and _hidden(load_template("unet")) == []  # as shipped
    for direction in ("down", "right"):
        laid = canvas.auto_layout(graph, direction)
        assert _hidden(laid, direction) == [], direction
        xs = {n.id: n.position["x" if direction == "down" else "y"] for n in laid.nodes}
        assert xs["b1_conv1"] != xs["stem_relu"] == xs["b1_add"]  # the main path steps out, the skip stays straight


def test_an_edge_behind_nodes_is_drawn_over_them_dashed():
    graph = _column("resnet_small")
    nodes, edges = canvas.flow_elements(graph, analyze(graph), None, "down")
    by_id = {e.source + ">" + e.target: e for e in edges}
    skip, plain = by_id["stem_relu>b1_add"].asdict(), by_id["b1_bn2>b1_add"].asdict()
    assert skip["zIndex"] > plain.get("zIndex", 0) and skip["style"]["strokeDasharray"]
    assert "strokeDasharray" not in plain["style"]
