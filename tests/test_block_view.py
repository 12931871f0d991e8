"""A block opened on the canvas (studio.block_view): the body drawn with one instance's shapes and values,
and the canvas's edits taken back into the definition, every instance following."""

from __future__ import annotations

import pytest
import torch

from studio.analysis import analyze
from studio.block_view import block_view, instances_of, with_block_body_from_view
from studio.compile import compile_graph
from studio.errors import GraphError
from studio.graph import Edge, Node, parse_graph


def mlp_doc() -> dict:
    """Block `mlp` (fc1 -> relu -> fc2, sizes from its params) used twice: `b` repeated twice, then `c`."""
    return {"format": "studio.graph/2", "name": "t",
            "blocks": {"mlp": {"params": {"width": 4, "out": 4}, "nodes": [
                {"id": "x", "type": "Input"},
                {"id": "fc1", "type": "Linear", "params": {"out_features": "$width"}},
                {"id": "relu", "type": "ReLU"},
                {"id": "fc2", "type": "Linear", "params": {"out_features": "$out"}}],
                "edges": [{"source": "x", "target": "fc1"}, {"source": "fc1", "target": "relu"},
                          {"source": "relu", "target": "fc2"}]}},
            "nodes": [{"id": "input", "type": "Input", "params": {"shape": [6]}},
                      {"id": "pre", "type": "Linear", "params": {"out_features": 8}},
                      {"id": "b", "type": "mlp", "repeat": 2, "params": {"width": 16, "out": 8}},
                      {"id": "c", "type": "mlp", "params": {"width": 5, "out": 8}},
                      {"id": "head", "type": "Linear", "params": {"out_features": 3}}],
            "edges": [{"source": "input", "target": "pre"}, {"source": "pre", "target": "b"},
                      {"source": "b", "target": "c"}, {"source": "c", "target": "head"}]}


def test_the_view_shows_the_first_instance_shapes_and_values_or_the_one_asked_for():
    g = parse_graph(mlp_doc())
    assert instances_of(g, "mlp") == ["b", "c"]
    v = block_view(g, "mlp")
    assert v.instance == "b" and v.values == {"width": 16, "out": 8}
    a = analyze(v.graph)
    assert a.ok, a.issues
    assert v.graph.node("x_1").params == {"shape": [8]} and v.ids["x"] == "x_1"
    assert a.nodes["fc1"].output_shape == (16,) and a.nodes["fc1"].params == 8 * 16 + 16
    assert a.output_id == "fc2" and a.nodes["fc2"].output_shape == (8,)
    c = block_view(g, "mlp", instance="c")
    assert c.instance == "c" and analyze(c.graph).nodes["fc1"].output_shape == (5,)
    assert block_view(g, "mlp", instance="nope").instance == "b"
    # The definition itself is untouched: its refs stay refs.
    assert g.blocks["mlp"].body.node("fc1").params == {"out_features": "$width"}


def test_an_unused_block_shows_its_defaults_and_inputs_without_shape():
    doc = mlp_doc()
    doc["nodes"] = doc["nodes"][:2]
    doc["edges"] = doc["edges"][:1]
    v = block_view(parse_graph(doc), "mlp")
    assert v.instance is None and v.values == {"width": 4, "out": 4}
    assert v.graph.node("fc1").params == {"out_features": 4} and v.graph.node("x_1").params == {}


def _with_skip(view):
    """The canvas's edit: a new Add after fc2 (as the palette adds it) and an edge x -> add (a skip)."""
    edited = view.copy()
    edited.nodes.append(Node("add", "Add", {}, {"x": 10.0, "y": 400.0}))
    edited.edges += [Edge("fc2", "add"), Edge("x_1", "add")]
    edited.node("fc1").position = {"x": 120.0, "y": 110.0}
    edited.node("fc1").params = {"out_features": 16}  # the view's substituted value: must not leak back
    return edited


def test_a_skip_added_in_the_view_changes_every_instance_like_a_hand_written_residual_module():
    g = parse_graph(mlp_doc())
    before = analyze(g)
    g2 = with_block_body_from_view(g, "mlp", _with_skip(block_view(g, "mlp").graph))
    body = g2.blocks["mlp"].body
    assert body.node("fc1").params == {"out_features": "$width"}  # the ref is intact
    assert body.node("fc1").position == {"x": 120.0, "y": 110.0}
    assert g2.blocks["mlp"].output_id() == "add" and ("x", "add") in {(e.source, e.target) for e in body.edges}
    after = analyze(g2)
    assert after.ok, after.issues
    assert after.total_params == before.total_params  # an Add has no weights
    assert {p for p in after.nodes if p.endswith(".add")} == {"b.0.add", "b.1.add", "c.add"}

    torch.manual_seed(0)
    model = compile_graph(g2, seed=0).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        h = model.get_submodule("pre")(x)
        for path in ("b.0", "b.1", "c"):  # the oracle: each copy is fc2(relu(fc1(h))) + h
            fc1, fc2 = model.get_submodule(f"{path}.fc1"), model.get_submodule(f"{path}.fc2")
            h = fc2(torch.relu(fc1(h))) + h
        expected = model.get_submodule("head")(h)
        torch.testing.assert_close(model(x), expected)  # same process, same ops: float32 defaults suffice
    keys = set(model.state_dict())
    assert {"b.0.fc1.weight", "b.1.fc2.bias", "c.fc1.weight"} <= keys


def test_an_edit_that_leaves_two_outputs_or_a_cycle_or_drops_an_input_is_refused_with_its_cause():
    g = parse_graph(mlp_doc())
    view = block_view(g, "mlp").graph
    two = view.copy()
    two.nodes.append(Node("extra", "ReLU"))
    two.edges.append(Edge("fc1", "extra"))
    with pytest.raises(GraphError, match=r"leaves 2 nodes without an outgoing edge \(fc2, extra\).*single output"):
        with_block_body_from_view(g, "mlp", two)
    loop = view.copy()
    loop.edges.append(Edge("fc2", "fc1"))
    with pytest.raises(GraphError, match="cycle through fc1, relu, fc2"):
        with_block_body_from_view(g, "mlp", loop)
    gone = view.copy()
    gone.nodes = [n for n in gone.nodes if n.id != "x_1"]
    gone.edges = [e for e in gone.edges if e.source != "x_1"]
    with pytest.raises(GraphError, match="Input 'x' cannot be removed"):
        with_block_body_from_view(g, "mlp", gone)
    assert g == parse_graph(mlp_doc())  # nothing changed


def test_removing_and_rewiring_layers_in_the_view():
    g = parse_graph(mlp_doc())
    view = block_view(g, "mlp").graph
    view.nodes = [n for n in view.nodes if n.id != "relu"]
    view.edges = [Edge("x_1", "fc1"), Edge("fc1", "fc2")]
    g2 = with_block_body_from_view(g, "mlp", view)
    assert [n.id for n in g2.blocks["mlp"].body.nodes] == ["x", "fc1", "fc2"]
    assert analyze(g2).ok and analyze(g2).total_params == analyze(g).total_params


def test_a_layer_added_in_the_view_goes_into_the_chain_and_a_deleted_one_is_bridged():
    from studio.block_view import bridged, view_with_layer

    g = parse_graph(mlp_doc())
    view = block_view(g, "mlp").graph
    for i, n in enumerate(view.nodes):
        n.position = {"x": 0.0, "y": 100.0 * i}
    # An Add after fc1 goes between fc1 and relu (a block cannot hold a second output); relu and fc2 move down.
    added, nid = view_with_layer(view, "Add", "fc1", step=(0.0, 100.0))
    assert nid == "add1" and {("fc1", "add1"), ("add1", "relu")} <= {(e.source, e.target) for e in added.edges}
    assert added.node("add1").position == {"x": 0.0, "y": 200.0} and added.node("fc2").position["y"] == 400.0
    g2 = with_block_body_from_view(g, "mlp", added)
    assert [n.id for n in g2.blocks["mlp"].body.nodes] == ["x", "fc1", "add1", "relu", "fc2"]
    with pytest.raises(ValueError, match="not a palette layer that takes an input"):
        view_with_layer(view, "Input", "fc1")

    # The canvas deletes relu with its edges: bridged, fc1 feeds fc2 and the block stays one chain.
    deleted = view.copy()
    deleted.nodes = [n for n in deleted.nodes if n.id != "relu"]
    deleted.edges = [e for e in deleted.edges if "relu" not in (e.source, e.target)]
    g3 = with_block_body_from_view(g, "mlp", bridged(view, deleted))
    assert {(e.source, e.target) for e in g3.blocks["mlp"].body.edges} == {("x", "fc1"), ("fc1", "fc2")}
    with pytest.raises(GraphError, match="single output"):  # without the bridge: fc1 and fc2 both end
        with_block_body_from_view(g, "mlp", deleted)


def test_every_block_of_the_block_templates_opens_with_its_instance_shapes_and_no_error():
    from studio.templates import list_templates, load_template

    seen = 0
    for name in [t.name for t in list_templates()]:
        g = load_template(name)
        if not g.blocks:
            continue
        a = analyze(g)
        for block in g.blocks:
            v = block_view(g, block, a)
            inst = a.expansion.instances[v.instance]
            va = analyze(v.graph)
            assert va.ok, (name, block, va.issues[:3])
            # the view's output is the instance's first copy's output, shape for shape
            assert va.nodes[va.output_id].output_shape == a.nodes[inst.copy_outputs[0]].output_shape, (name, block)
            # and taking the unchanged view back changes nothing but positions
            back = with_block_body_from_view(g, block, v.graph)
            assert [n.params for n in back.blocks[block].body.nodes] == [n.params for n in g.blocks[block].body.nodes]
            seen += 1
    assert seen >= 5


def test_an_instance_fed_through_an_error_shows_the_first_instance_with_known_input_shapes():
    from studio.block_view import inputs_known, view_with_layer

    g = parse_graph(mlp_doc())
    half, _ = view_with_layer(block_view(g, "mlp").graph, "Add", "fc2")  # an Add with one input: an error
    g2 = with_block_body_from_view(g, "mlp", half)
    a = analyze(g2)
    assert any(i.node_id == "b.0.add1" for i in a.errors)
    v = block_view(g2, "mlp", a, instance="c")  # c is fed by b, which has no output shape now
    assert v.instance == "b" and v.graph.node("x_1").params == {"shape": [8]} and inputs_known(v)
