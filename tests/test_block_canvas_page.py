"""A block opened on the Build page's canvas (AppTest): open it from an instance, add a layer into it from
the palette, draw a skip into it, see an invalid edit refused, go back, undo until the block is gone."""

from __future__ import annotations

from studio.analysis import analyze
from tests.conftest import chain
from tests.test_build_page import browser, current, flow_args, label, run, start

OPEN_KEY = "studio.build.open_block"


def flat_doc() -> dict:
    return chain(("input", "Input", {"shape": [6]}), ("fc1", "Linear", {"out_features": 16}), ("relu", "ReLU", None),
                 ("fc2", "Linear", {"out_features": 6}), ("head", "Linear", {"out_features": 3}), name="mlp")


def ids(at) -> set[str]:
    return {n["id"] for n in flow_args(at)["nodes"]}


def pairs(g, block="mlp") -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in g.blocks[block].body.edges}


def grouped_mlp(workspace):
    """The Build page with fc1, relu, fc2 of `flat_doc` grouped into block `mlp`, instance `b`."""
    at = start(workspace, flat_doc())
    at.multiselect(key="studio.build.group.nodes").set_value(["fc1", "relu", "fc2"])
    at.text_input(key="studio.build.group.name").input("mlp")
    at.text_input(key="studio.build.group.instance").input("b")
    at.button(key="studio.build.group.go").click()
    return run(at)


def test_open_a_block_add_a_skip_in_it_refuse_two_outputs_go_back_and_undo(_workspace):
    at = grouped_mlp(_workspace)
    assert current(at).node("b").type == "mlp"
    params = analyze(current(at)).total_params

    # Open it from the instance's inspector: the canvas draws the block's layers with b's shapes.
    browser(at, selected="b")
    at.button(key="studio.build.open_block_btn.b").click()
    run(at)
    assert at.session_state[OPEN_KEY] == ("mlp", "b")
    assert ids(at) == {"x_1", "fc1", "relu", "fc2"}  # the block's Input `x` is x_1 on the canvas
    assert "(16,)" in label(at, "fc1") and "(6,)" in label(at, "x_1")
    assert any("Editing block 'mlp'" in m.value and "shapes of instance **b**" in m.value for m in at.markdown)

    # Select fc2, add an Add from the palette: it goes into the block, after fc2.
    browser(at, selected="fc2")
    at.button(key="studio.build.add.Add").click()
    run(at)
    assert ("fc2", "add1") in pairs(current(at)) and "add1" in ids(at)
    assert not current(at).has_node("add1")  # in the block, not in the graph
    # Drag a skip from the block's input into the Add: every instance follows.
    args = flow_args(at)
    browser(at, edges=args["edges"] + [{"id": "st-flow-edge_x_1-add1", "source": "x_1", "target": "add1"}])
    g = current(at)
    assert ("x", "add1") in pairs(g) and g.blocks["mlp"].output_id() == "add1"
    a = analyze(g)
    assert a.ok and "b.add1" in a.nodes and a.total_params == params
    assert "(6,)" in label(at, "add1") and "⚠" not in label(at, "add1")

    # An edit that leaves two outputs (fc2 no longer feeds the Add) is refused with its reason.
    args = flow_args(at)
    browser(at, edges=[e for e in args["edges"] if (e["source"], e["target"]) != ("fc2", "add1")])
    assert current(at) == g
    assert any("a block has a single output" in e.value for e in at.error)
    assert ("fc2", "add1") in {(e["source"], e["target"]) for e in flow_args(at)["edges"]}  # drawn again

    # The inspector edits the selected layer's params in the definition.
    browser(at, selected="fc1")
    (out,) = [t for t in at.text_input if t.key.startswith("studio.build.open_block_param.mlp.fc1.out_features.")]
    out.input("12")
    run(at)
    assert current(at).blocks["mlp"].body.node("fc1").params == {"out_features": 12}
    assert "(12,)" in label(at, "fc1")

    # Back to the graph: the instance is selected again.
    at.button(key="studio.build.open_block_back").click()
    run(at)
    assert OPEN_KEY not in at.session_state and "b" in ids(at) and "fc1" not in ids(at)
    assert at.session_state["studio.build.selected"] == "b"

    # Open again and undo: the param, the skip, the Add, then the grouping (the block is gone: the canvas
    # shows the graph again).
    at.button(key="studio.build.open_block_btn.b").click()
    run(at)
    for _ in range(3):
        at.button(key="studio.build.undo").click()
        run(at)
    assert pairs(current(at)) == {("x", "fc1"), ("fc1", "relu"), ("relu", "fc2")}
    assert ids(at) == {"x_1", "fc1", "relu", "fc2"}
    at.button(key="studio.build.undo").click()
    run(at)
    assert not current(at).blocks and OPEN_KEY not in at.session_state
    assert ids(at) == {"input", "fc1", "relu", "fc2", "head"}


def test_the_shapes_of_another_instance_and_layout_of_the_open_block(_workspace):
    from tests.test_block_view import mlp_doc

    at = start(_workspace, mlp_doc())
    browser(at, selected="c")
    at.button(key="studio.build.open_block_btn.c").click()
    run(at)
    assert "(5,)" in label(at, "fc1")  # c's width
    (pick,) = [s for s in at.selectbox if s.key and s.key.startswith("studio.build.open_block_instance.")]
    assert pick.options == ["b", "c"] and pick.value == "c"
    pick.set_value("b")
    run(at)
    assert "(16,)" in label(at, "fc1") and at.session_state[OPEN_KEY] == ("mlp", "b")
    assert current(at).blocks["mlp"].body.node("fc1").position is None  # drawn laid out, not stored
    at.button(key="studio.build.layout_right").click()
    run(at)
    body = current(at).blocks["mlp"].body
    assert body.node("fc1").position["x"] > body.node("x").position["x"]  # left to right, in the block
    assert body.node("fc1").params == {"out_features": "$width"}
    at.button(key="studio.build.undo").click()
    run(at)
    assert current(at).blocks["mlp"].body.node("fc1").position is None


def test_a_layer_renamed_in_the_open_block_stays_selected_and_drawn_under_its_new_id(_workspace):
    at = grouped_mlp(_workspace)
    browser(at, selected="b")
    at.button(key="studio.build.open_block_btn.b").click()
    run(at)
    browser(at, selected="fc1")
    (layer_id,) = [t for t in at.text_input if t.key.startswith("studio.build.open_block_param_id.mlp.")]
    layer_id.input("proj")
    run(at)
    assert pairs(current(at)) == {("x", "proj"), ("proj", "relu"), ("relu", "fc2")}
    assert ids(at) == {"x_1", "proj", "relu", "fc2"} and "(16,)" in label(at, "proj")
    assert at.session_state["studio.build.selected"] == "proj"
    assert any(m.value.startswith("#### proj") for m in at.markdown)  # its inspector, under the new id
