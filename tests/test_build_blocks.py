"""Build page with blocks (AppTest): the Blocks palette, an instance drawn as one node with its shape, the
instance inspector (repeat, block params, expand on the canvas, ungroup), group into block, undo; and the
pure block edits behind them (studio.graph_block_edit)."""

from __future__ import annotations

import pytest
import torch

from studio.analysis import analyze
from studio.block_library import builtin_block
from studio.compile import compile_graph
from studio.graph_block_edit import grouped, inlined, with_block, with_instance, with_repeat
from studio.templates import load_template
from tests.test_blocks import small_doc
from tests.test_build_page import browser, current, flow_args, label, node, run, start


def test_an_instance_is_one_node_with_its_shape_and_its_inspector_edits_repeat_and_params(_workspace):
    at = start(_workspace, small_doc())
    assert [n["id"] for n in flow_args(at)["nodes"]] == ["input", "layer1", "layer2", "pool", "flatten", "fc"]
    assert label(at, "layer1") == "**layer1**\n\n▣ basic ×2 -> (16, 8, 8)"
    browser(at, selected="layer1")
    (repeat,) = [w for w in at.number_input if w.key.startswith("studio.build.repeat.layer1.")]
    repeat.set_value(3)
    run(at)
    assert current(at).node("layer1").repeat == 3 and label(at, "layer1").endswith("▣ basic ×3 -> (16, 8, 8)")
    assert any("layer1\\.2 |" in m.value for m in at.markdown)  # the per-copy table (markdown-escaped path)
    (channels,) = [t for t in at.text_input if t.key.startswith("studio.build.block_param.layer1.channels.")]
    channels.input("24")
    run(at)
    assert current(at).node("layer1").params == {"channels": 24}
    assert "#dc2626" in node(at, "layer1")["style"]["border"]  # layer1.0.add: 24 and 16 channels differ
    assert any("layer1.0.add: inputs have different shapes" in e.value.replace("\\", "") for e in at.error)
    at.button(key="studio.build.undo").click()
    run(at)
    assert current(at).node("layer1").params == {"channels": 16} and current(at).node("layer1").repeat == 3


def test_expand_draws_every_copy_by_path_and_ungroup_replaces_the_instance(_workspace):
    at = start(_workspace, small_doc())
    browser(at, selected="layer1")
    (toggle,) = [t for t in at.toggle if t.key.startswith("studio.build.expand.layer1.")]
    toggle.set_value(True)
    run(at)
    ids = [n["id"] for n in flow_args(at)["nodes"]]
    assert "layer1.1.conv2" in ids and "layer2.conv1" not in ids
    inner = node(at, "layer1.0.add")
    assert inner["deletable"] is False and inner["connectable"] is False
    assert "(16, 8, 8)" in inner["data"]["content"]
    browser(at)  # the browser answers with the inner nodes too: not an edit of the graph
    assert [n.id for n in current(at).nodes][:3] == ["input", "layer1", "layer2"]
    at.button(key="studio.build.ungroup_btn.layer1").click()
    run(at)
    g = current(at)
    assert not g.has_node("layer1") and g.inputs_of("layer1_1_conv1") == ["layer1_0_relu2"]
    assert g.inputs_of("layer2") == ["layer1_1_relu2"] and analyze(g).ok


def test_the_blocks_palette_adds_a_builtin_block_and_group_makes_one(_workspace):
    at = start(_workspace, load_template("mlp").to_dict())
    browser(at, selected="fc1")
    at.sidebar.button(key="studio.build.add_block.gpt_block").click()
    run(at)
    g = current(at)
    assert "gpt_block" in g.blocks and g.inputs_of("gptblock1") == ["fc1"]
    at.sidebar.multiselect(key="studio.build.group.nodes").set_value(["fc2", "relu2"])
    at.sidebar.text_input(key="studio.build.group.name").input("dense")
    at.sidebar.text_input(key="studio.build.group.instance").input("block2")
    at.sidebar.button(key="studio.build.group.go").click()
    run(at)
    g = current(at)
    assert "dense" in g.blocks and [n.type for n in g.blocks["dense"].body.nodes] == ["Input", "Linear", "ReLU"]
    assert g.node("block2").type == "dense" and not g.has_node("fc2")


def test_group_then_ungroup_keeps_the_model_and_bad_groups_say_why():
    g = load_template("resnet_small")
    blocks = grouped(g, [n.id for n in g.nodes if n.id.startswith("b1_")], "res", "b1")
    assert blocks.blocks["res"].input_ids == ["x"] and blocks.inputs_of("b1") == ["stem_relu"]
    assert analyze(blocks).total_params == analyze(g).total_params
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the same seed initialises the same layers in the same order
        assert torch.equal(compile_graph(g, seed=0).eval()(x), compile_graph(blocks, seed=0).eval()(x))
    back = inlined(with_repeat(blocks, "b1", 2), "b1")
    assert back.inputs_of("b1_1_b1_conv1") == ["b1_0_b1_relu2"] and analyze(back).ok
    with pytest.raises(ValueError, match="a block has one output, but b1_relu2, b2_conv1 of the selection feed"):
        grouped(g, ["b1_relu2", "b2_conv1"], "pair")
    with pytest.raises(ValueError, match="block name 'Linear' is a palette type"):
        grouped(g, ["b1_add"], "Linear")
    with pytest.raises(ValueError, match="only a block instance repeats"):
        with_repeat(g, "stem", 2)
    g2, nid = with_instance(with_block(g, "basic", builtin_block("basic")), "basic", "stem_relu")
    assert g2.inputs_of(nid) == ["stem_relu"] and g2.outputs_of(nid) == []  # two consumers: appended, not inserted
    with pytest.raises(ValueError, match="already has a different block named 'basic'"):
        with_block(g2, "basic", builtin_block("gpt_block"))


def test_editing_the_block_definition_changes_every_instance(_workspace):
    at = start(_workspace, small_doc())
    before = analyze(current(at)).total_params
    browser(at, selected="layer1")
    assert at.selectbox(key="studio.build.block_layer.basic").value == "conv1"
    (bias,) = [t for t in at.text_input if t.key.startswith("studio.build.block_param.basic.conv1.bias.")]
    bias.input("true")
    run(at)
    g = current(at)
    assert g.blocks["basic"].body.node("conv1").params["bias"] is True
    assert analyze(g).total_params == before + 2 * 16  # both copies of layer1 gain a 16-channel bias
    (out,) = [t for t in at.text_input if t.key.startswith("studio.build.block_param.basic.conv1.out_channels.")]
    assert out.value == "$channels"
    at.text_input(key="studio.build.declare.basic").input("width=8")
    run(at)
    (out,) = [t for t in at.text_input if t.key.startswith("studio.build.block_param.basic.conv1.out_channels.")]
    out.input("$wdith")
    run(at)
    assert any("layer1.0.conv1: out_channels='$wdith' names no parameter of block 'basic'" in e.value.replace("\\", "")
               for e in at.error)
    assert current(at).blocks["basic"].params == {"channels": 64, "width": 8}


def test_renaming_a_block_renames_its_instances_everywhere():
    from studio.graph_block_edit import renamed_block

    g = load_template("resnet20")
    g2 = renamed_block(g, "basic", "res_block")
    assert list(g2.blocks) == ["res_block", "basic_down"] and g2.node("stage1").type == "res_block"
    assert analyze(g2).total_params == analyze(g).total_params and "basic" in g.blocks  # the argument unchanged
    with pytest.raises(ValueError, match="already has a block named 'basic_down'"):
        renamed_block(g, "basic", "basic_down")
    with pytest.raises(ValueError, match="is a palette type"):
        renamed_block(g, "basic", "Conv2d")


def test_a_layer_added_to_and_removed_from_a_block_changes_every_instance_and_undo_restores_it(_workspace):
    at = start(_workspace, small_doc())
    before = analyze(current(at))
    browser(at, selected="layer1")
    at.selectbox(key="studio.build.block_layer.basic").set_value("relu1")
    run(at)
    at.selectbox(key="studio.build.block_add_type.basic").set_value("Dropout")
    at.button(key="studio.build.block_add.basic").click()
    run(at)
    body = current(at).blocks["basic"].body
    assert [(e.source, e.target) for e in body.edges if "dropout1" in (e.source, e.target)] == [
        ("dropout1", "conv2"), ("relu1", "dropout1")]
    after = analyze(current(at))
    assert after.ok and {"layer1.0.dropout1", "layer1.1.dropout1"} <= set(after.nodes)  # every copy
    assert at.selectbox(key="studio.build.block_layer.basic").value == "dropout1"  # ready to edit its params
    at.button(key="studio.build.block_remove.basic").click()
    run(at)
    assert "dropout1" not in [n.id for n in current(at).blocks["basic"].body.nodes]
    after = analyze(current(at))
    assert "layer1.1.dropout1" not in after.nodes and after.total_params == before.total_params
    at.selectbox(key="studio.build.block_layer.basic").set_value("add")
    run(at)
    at.button(key="studio.build.block_remove.basic").click()
    run(at)
    assert any("merges 2 inputs" in e.value for e in at.error)  # refused, with the reason; nothing changed
    at.button(key="studio.build.undo").click()
    run(at)
    assert "layer1.1.dropout1" in analyze(current(at)).nodes  # the removal is one undo away


def test_a_layer_renamed_inside_a_block_renames_every_copy_and_keeps_its_weights_shape():
    from studio.graph import parse_graph
    from studio.graph_block_edit import renamed_block_layer

    g = parse_graph(small_doc())
    g2 = renamed_block_layer(g, "basic", "conv1", "c1")
    body = g2.blocks["basic"].body
    assert body.has_node("c1") and not body.has_node("conv1")
    assert {(e.source, e.target) for e in body.edges} >= {("x", "c1"), ("c1", "bn1")}
    a, a2 = analyze(g), analyze(g2)
    assert a2.ok and a2.total_params == a.total_params
    assert {"layer1.0.c1", "layer1.1.c1"} <= set(a2.nodes) and "layer1.0.conv1" not in a2.nodes
    keys = compile_graph(g2, seed=0).state_dict()
    assert keys["layer1.1.c1.weight"].shape == compile_graph(g, seed=0).state_dict()["layer1.1.conv1.weight"].shape
    assert g.blocks["basic"].body.has_node("conv1")  # the argument is unchanged
    with pytest.raises(ValueError, match="already has a layer 'conv2'"):
        renamed_block_layer(g, "basic", "conv1", "conv2")
    with pytest.raises(ValueError, match="not a Python identifier"):
        renamed_block_layer(g, "basic", "conv1", "1st")


def test_a_block_parameter_is_removed_only_once_no_layer_takes_it():
    from studio.graph import parse_graph
    from studio.graph_block_edit import with_block_param_declared, without_block_param

    g = parse_graph(small_doc())
    with pytest.raises(ValueError, match=r"'channels' is used by conv1.out_channels, conv2.out_channels"):
        without_block_param(g, "basic", "channels")
    g = with_block_param_declared(g, "basic", "width", 8)
    g.node("layer1").params["width"] = 12  # an instance's value for it goes with it
    g2 = without_block_param(g, "basic", "width")
    assert g2.blocks["basic"].params == {"channels": 64} and g2.node("layer1").params == {"channels": 16}
    assert analyze(g2).ok and analyze(g2).total_params == analyze(parse_graph(small_doc())).total_params


def test_the_inspector_renames_a_layer_of_the_block_and_removes_an_unused_parameter(_workspace):
    at = start(_workspace, small_doc())
    browser(at, selected="layer1")
    (layer_id,) = [t for t in at.text_input if t.key.startswith("studio.build.block_param_id.basic.")]
    assert layer_id.value == "conv1"
    layer_id.input("c1")
    run(at)
    assert current(at).blocks["basic"].body.has_node("c1") and "layer1.1.c1" in analyze(current(at)).nodes
    assert at.selectbox(key="studio.build.block_layer.basic").value == "c1"  # still the layer shown
    (layer_id,) = [t for t in at.text_input if t.key.startswith("studio.build.block_param_id.basic.")]
    layer_id.input("bn1")  # taken: refused with the reason, nothing changed
    run(at)
    assert any("already has a layer 'bn1'" in e.value for e in at.error)
    assert current(at).blocks["basic"].body.has_node("c1")
    at.selectbox(key="studio.build.undeclare.basic").set_value("channels")
    at.button(key="studio.build.undeclare_btn.basic").click()
    run(at)
    assert any("'channels' is used by" in e.value for e in at.error)
    assert "channels" in current(at).blocks["basic"].params  # refused: nothing changed
    at.button(key="studio.build.undo").click()
    run(at)
    assert current(at).blocks["basic"].body.has_node("conv1")  # the rename is one undo step
