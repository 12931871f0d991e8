"""Blocks (format studio.graph/2): parsing, expansion with dotted paths, errors named by path, analysis and
compile through instances, exported code, .pt2 and ONNX, and the parts downstream that speak paths.

Oracles are plain PyTorch: hand-written ResNet-18 and nanoGPT-style modules give the parameter counts, and
the flat /1 graph (compiled by the same compiler without blocks) gives the outputs the block form must."""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
from torch import nn

from studio.__main__ import main as cli
from studio.analysis import analyze
from studio.block_library import BLOCKS, builtin_block
from studio.codegen import to_code
from studio.compile import capture, compile_graph
from studio.errors import GraphError
from studio.graph import parse_graph
from studio.graph_expand import expand
from studio.templates import load_template


def _edges(*pairs):
    return [{"source": s, "target": t} for s, t in pairs]


def small_doc(**instance) -> dict:
    """16x8x8 input -> layer1 (basic, repeat 2) -> layer2 (basic_down 32) -> pool -> flatten -> fc."""
    layer1 = {"id": "layer1", "type": "basic", "repeat": 2, "params": {"channels": 16}, **instance}
    return {"format": "studio.graph/2", "name": "small",
            "blocks": {"basic": builtin_block("basic"), "basic_down": builtin_block("basic_down")},
            "nodes": [{"id": "input", "type": "Input", "params": {"shape": [16, 8, 8]}}, layer1,
                      {"id": "layer2", "type": "basic_down", "params": {"channels": 32, "stride": 2}},
                      {"id": "pool", "type": "AdaptiveAvgPool2d", "params": {"output_size": 1}},
                      {"id": "flatten", "type": "Flatten"},
                      {"id": "fc", "type": "Linear", "params": {"out_features": 3}}],
            "edges": _edges(("input", "layer1"), ("layer1", "layer2"), ("layer2", "pool"), ("pool", "flatten"),
                            ("flatten", "fc"))}


# ---- documents and expansion --------------------------------------------------------------------------------

def test_a_block_document_round_trips_and_a_graph_without_blocks_stays_format_1():
    doc = small_doc()
    g = parse_graph(doc)
    assert g.to_dict() == {k: doc[k] for k in ("format", "name", "blocks", "nodes", "edges")}
    assert parse_graph(json.loads(g.to_json())).to_dict() == g.to_dict()
    assert load_template("mlp").to_dict()["format"] == "studio.graph/1"
    with pytest.raises(GraphError, match="unknown key 'blocks'.*need format 'studio.graph/2'"):
        parse_graph({**doc, "format": "studio.graph/1"})


def test_expand_names_every_layer_by_path_and_chains_the_copies():
    flat = expand(parse_graph(small_doc())).graph
    ids = [n.id for n in flat.nodes]
    assert ids[:3] == ["input", "layer1.0.conv1", "layer1.0.bn1"]
    assert "layer1.1.relu2" in ids and "layer2.down_conv" in ids  # layer2 has no repeat: not indexed
    assert flat.inputs_of("layer1.1.conv1") == ["layer1.0.relu2"]  # copy 0's output feeds copy 1
    assert flat.inputs_of("layer1.0.add") == ["layer1.0.bn2", "input"]  # the skip comes from outside
    assert flat.inputs_of("layer2.down_conv") == ["layer1.1.relu2"]
    assert flat.inputs_of("pool") == ["layer2.relu2"]
    assert flat.node("layer2.conv1").params["stride"] == 2 and flat.node("layer1.1.conv1").params["out_channels"] == 16


def test_analysis_gives_each_instance_and_copy_its_shape_and_totals():
    a = analyze(parse_graph(small_doc()))
    assert a.ok, [str(i) for i in a.issues]
    assert a.instances["layer1"].output_shape == (16, 8, 8) and a.instances["layer2"].output_shape == (32, 4, 4)
    one_copy = 2 * (16 * 16 * 9) + 2 * (2 * 16)  # two convolutions without bias, two batch norms
    assert a.instances["layer1.0"].params == a.instances["layer1.1"].params == one_copy
    assert a.instances["layer1"].params == 2 * one_copy and a.instances["layer1"].label == "basic ×2"
    assert a.total_params == sum(i.params for p, i in a.instances.items() if "." not in p) + 32 * 3 + 3


# ---- errors, each named by its full path ------------------------------------------------------------------------

def _errors(doc) -> list[str]:
    return [str(i) for i in analyze(parse_graph(doc)).errors]


def test_a_bad_dollar_param_names_the_path_the_param_and_the_block():
    doc = small_doc()
    doc["blocks"]["basic"]["nodes"][1]["params"]["out_channels"] = "$chanels"
    errors = _errors(doc)
    assert errors[0] == ("layer1.0.conv1: out_channels='$chanels' names no parameter of block 'basic' (its "
                         "parameters: channels); declare 'chanels' in the block's params or use one of those")
    assert not any("must be an integer" in e for e in errors)  # reported once, not again by the layer check


def test_unknown_parameter_recursive_block_repeat_and_inputs_are_refused_with_their_path():
    doc = small_doc(params={"channels": 16, "chanels": 8})
    assert _errors(doc)[0].startswith("layer1: unknown parameter 'chanels' for block 'basic' (its parameters: "
                                      "channels)")
    doc = small_doc(repeat=0)
    assert _errors(doc) == ["layer1: repeat=0; expected an integer from 1 to 1000 (the number of chained copies): "
                            "use repeat 1 for one indexed copy, or remove repeat"]
    doc = small_doc()  # basic uses basic_down, which uses basic
    doc["blocks"]["basic"]["nodes"].append({"id": "inner", "type": "basic_down"})
    doc["blocks"]["basic"]["edges"] += _edges(("relu2", "inner"))
    doc["blocks"]["basic_down"]["nodes"].append({"id": "inner2", "type": "basic"})
    doc["blocks"]["basic_down"]["edges"] += _edges(("relu2", "inner2"))
    (error,) = _errors(doc)  # layer2, downstream of the broken layer1, is not expanded
    assert error.startswith("layer1.0.inner.inner2: block 'basic' contains itself (basic -> basic_down -> basic); "
                            "a block cannot use itself")
    doc = small_doc()
    doc["nodes"][3]["repeat"] = 2  # a layer, not a block instance
    assert "pool: repeat=2 is set on a AdaptiveAvgPool2d layer" in _errors(doc)[0]
    doc = small_doc()
    doc["blocks"]["pair"] = {"params": {}, "nodes": [{"id": "a", "type": "Input"}, {"id": "b", "type": "Input"},
                                                     {"id": "sum", "type": "Add"}],
                             "edges": _edges(("a", "sum"), ("b", "sum"))}
    doc["nodes"][1] = {"id": "layer1", "type": "pair"}
    assert _errors(doc)[0] == "layer1: block 'pair' takes 2 inputs (a, b) but has 1; connect a layer into it"


def test_a_shape_mismatch_inside_an_instance_names_the_copy_and_the_cli_prints_it_without_traceback(tmp_path, capsys):
    doc = small_doc()
    doc["nodes"][2] = {"id": "layer2", "type": "basic", "repeat": 2, "params": {"channels": 32}}
    errors = _errors(doc)
    assert errors[0].startswith("layer2.0.add: inputs have different shapes (32, 8, 8) and (16, 8, 8)")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    assert cli(["check", str(path)]) == 1
    out = capsys.readouterr()
    assert "layer2.0.add: inputs have different shapes" in out.out and "Traceback" not in out.out + out.err


# ---- oracles: hand-written PyTorch ---------------------------------------------------------------------------

class BasicBlock(nn.Module):  # torchvision's, as in torchvision/models/resnet.py
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
                           if stride != 1 or inplanes != planes else None)


def resnet18(num_classes=1000) -> nn.Module:
    m = nn.Module()
    m.conv1, m.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
    inplanes = 64
    for i, planes in enumerate((64, 128, 256, 512), 1):
        stride = 1 if i == 1 else 2
        setattr(m, f"layer{i}", nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)))
        inplanes = planes
    m.fc = nn.Linear(512, num_classes)
    return m


def test_resnet18_has_torchvisions_parameter_count_at_224_with_1000_classes():
    g = load_template("resnet18")
    g.node("input").params["shape"] = [3, 224, 224]
    g.node("fc").params["out_features"] = 1000
    a = analyze(g)
    with torch.device("meta"):
        expected = sum(p.numel() for p in resnet18().parameters())
    assert a.total_params == expected == 11_689_512
    assert a.output_shape == (1000,) and a.instances["layer4_1"].output_shape == (512, 7, 7)


class GPTBlock(nn.Module):  # nanoGPT's Block (bias=True)
    def __init__(self, d):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj_attn = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)


def test_a_six_block_gpt_has_the_parameter_count_of_nanogpt_with_an_untied_head():
    vocab, t, d, layers = 103, 64, 128, 6
    g = load_template("gpt_lm")
    g.node("h").repeat = layers
    a = analyze(g)
    with torch.device("meta"):
        ref = nn.ModuleDict({"wte": nn.Embedding(vocab, d), "wpe": nn.Embedding(t, d),
                             "h": nn.ModuleList(GPTBlock(d) for _ in range(layers)), "ln_f": nn.LayerNorm(d),
                             "lm_head": nn.Linear(d, vocab)})
    assert a.total_params == sum(p.numel() for p in ref.parameters())
    assert sorted(p for p in a.instances if p.startswith("h.")) == [f"h.{i}" for i in range(layers)]


def _as_flat_v1(graph):
    """The graph's expansion as a plain studio.graph/1 document: dotted paths become `_`-joined ids."""
    flat = expand(graph).graph
    doc = flat.to_dict()
    for n in doc["nodes"]:
        n["id"] = n["id"].replace(".", "_")
    for e in doc["edges"]:
        e["source"], e["target"] = e["source"].replace(".", "_"), e["target"].replace(".", "_")
    assert doc["format"] == "studio.graph/1"
    return parse_graph(doc)


@pytest.mark.parametrize("name", ["resnet20", "gpt_lm"])
def test_the_flat_graph_and_its_block_form_give_identical_outputs_from_the_same_weights(name):
    blocks = compile_graph(load_template(name), seed=0).eval()
    flat = compile_graph(_as_flat_v1(load_template(name)), seed=1).eval()
    state = blocks.state_dict()
    assert "layer1.0.conv1.weight" in state or "h.0.attn.in_proj_weight" in state or "stage1.0.conv1.weight" in state
    flat.load_state_dict({_flat_key(k, set(flat.node_types)): v for k, v in state.items()}, strict=True)
    x = (torch.randint(0, 103, (2, 64)) if name == "gpt_lm" else torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        assert torch.equal(blocks(x), flat(x))


def _flat_key(key: str, flat_ids: set[str]) -> str:
    """`h.0.attn.in_proj_weight` -> `h_0_attn.in_proj_weight`: the longest dotted prefix that is a flat id."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if "_".join(parts[:i]) in flat_ids:
            return "_".join(parts[:i]) + "." + ".".join(parts[i:])
    raise KeyError(key)


def test_the_resnet_small_template_and_its_block_form_agree():
    """The hand-unrolled /1 ResNet (b1_, b2_, b3_ prefixes) against the same network written with blocks."""
    flat_graph = load_template("resnet_small")
    doc = flat_graph.to_dict()
    keep = [n for n in doc["nodes"] if not n["id"].startswith(("b1_", "b2_", "b3_"))]
    stem = [n for n in keep if n["id"] not in ("gap", "flatten", "fc")]
    head = [n for n in keep if n["id"] in ("gap", "flatten", "fc")]
    inst = [{"id": "b1", "type": "basic", "params": {"channels": 16}},
            {"id": "b2", "type": "basic_down", "params": {"channels": 32, "stride": 2}},
            {"id": "b3", "type": "basic_down", "params": {"channels": 64, "stride": 2}}]
    nodes = stem + inst + head
    ids = [n["id"] for n in nodes]
    doc = {"format": "studio.graph/2", "name": "resnet_small",
           "blocks": {"basic": builtin_block("basic"), "basic_down": builtin_block("basic_down")},
           "nodes": nodes, "edges": _edges(*zip(ids[:-1], ids[1:], strict=True))}
    blocks = compile_graph(parse_graph(doc), seed=0).eval()
    flat = compile_graph(flat_graph, seed=1).eval()
    rename = {"down_conv": "down", "down_bn": "down_bn"}

    def key(k):
        if k[:3] in ("b1.", "b2.", "b3."):
            node, _, rest = k[3:].partition(".")
            return f"{k[:2]}_{rename.get(node, node)}.{rest}"
        return k

    flat.load_state_dict({key(k): v for k, v in blocks.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(blocks(x), flat(x))
    assert analyze(parse_graph(doc)).total_params == analyze(flat_graph).total_params


# ---- compile, code, .pt2 and ONNX ----------------------------------------------------------------------------

def test_the_module_tree_mirrors_the_blocks_and_survives_deepcopy():
    model = compile_graph(parse_graph(small_doc()), seed=0)
    assert isinstance(model.layer1, nn.Sequential) and len(model.layer1) == 2
    assert type(model.layer2).__name__ == "BlockModule" and model.layer2.block == "basic_down"
    assert list(model.state_dict())[:2] == ["layer1.0.conv1.weight", "layer1.0.bn1.weight"]
    copied = copy.deepcopy(model)
    assert isinstance(copied.layer1, nn.Sequential) and copied.layer1[0].conv1 is not model.layer1[0].conv1
    assert copied.order == model.order and "layer1.1.add" in copied.order


def test_exported_code_has_one_class_per_block_and_reproduces_the_model():
    graph = parse_graph(small_doc())
    code = to_code(graph)
    assert code.count("class Basic(nn.Module):") == 1 and "class BasicDown(nn.Module):" in code
    assert "self.layer1 = nn.Sequential(*[Basic(channels=16) for _ in range(2)])" in code
    assert "self.layer2 = BasicDown(channels=32, stride=2)" in code  # one use: its input size is a literal
    resnet = to_code(load_template("resnet18"))  # like torchvision: an input size that varies is an argument
    assert "self.layer3_0 = BasicDown(in_channels=128, channels=256, stride=2)" in resnet
    conv1 = "self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)"
    assert conv1 in resnet
    namespace: dict = {"__name__": "exported"}
    exec(compile(code, "exported.py", "exec"), namespace)  # noqa: S102 - the studio's own output
    model = compile_graph(graph, seed=0).eval()
    mine = namespace["Small"]().eval()
    mine.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(mine(x), model(x))


def test_pt2_and_onnx_exports_of_a_block_graph_run_like_pytorch():
    import onnxruntime as ort

    from studio.export import to_onnx

    model = compile_graph(parse_graph(small_doc()), seed=0).eval()
    x = torch.randn(3, 16, 8, 8)
    with torch.no_grad():
        expected = model(x)
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (x,)), buffer)
    buffer.seek(0)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(buffer).module()(x), expected)
    session = ort.InferenceSession(to_onnx(model), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    # onnxruntime's own convolution kernels: float32 rounding differs from PyTorch's in the last bits.
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-5)


def test_capture_finds_attention_per_copy_by_path():
    model = compile_graph(load_template("gpt_lm"), seed=0).eval()
    x = torch.randint(0, 103, (2, 64))
    with torch.no_grad():
        out, features, attention = capture(model, x, ["h.1.add_2", "h.3.attn"])
    assert sorted(attention) == [f"h.{i}.attn" for i in range(4)] and attention["h.3.attn"].shape == (2, 4, 64, 64)
    assert features["h.1.add_2"].shape == (2, 64, 128) and out.shape == (2, 64, 103)


# ---- downstream: frozen nodes, warm start, sweeps -------------------------------------------------------------

def test_a_frozen_instance_freezes_every_layer_inside_it():
    from studio.training.transfer import FROZEN_ATTR, freeze_nodes

    graph = parse_graph(small_doc(frozen=True))
    model = compile_graph(graph, seed=0)
    frozen = freeze_nodes(model, graph)
    assert "layer1.0.conv1" in frozen and "layer1.1.bn2" in frozen and not any(f.startswith("layer2") for f in frozen)
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters()) and getattr(model.layer1[1].bn1, FROZEN_ATTR)


def test_warm_start_groups_tensors_by_node_path():
    from studio.training.transfer import _by_node

    model = compile_graph(load_template("gpt_lm"), seed=0)
    nodes = _by_node(model.state_dict(), model.node_types)
    assert set(nodes["h.2.attn"]) == set(dict(model.h[2].attn.named_parameters())) | set(
        dict(model.h[2].attn.named_buffers()))
    assert "h" not in nodes and set(nodes["wte"]) == {"weight"}


def test_a_sweep_searches_a_block_parameter_and_a_repeat():
    from studio.sweeps.spec import SweepError, parse_sweep, trial_inputs

    base = {"format": "studio.sweep/1", "name": "depth", "graph": small_doc(), "data": "digits",
            "objective": "val_loss", "trials": 2}
    spec = parse_sweep({**base, "space": {"layer1.repeat": {"choice": [1, 3]}, "layer1.channels": {"choice": [16]},
                                          "lr": {"choice": [0.01]}}})
    graph, _ = trial_inputs(spec, {"layer1.repeat": 3, "layer1.channels": 16, "lr": 0.01})
    assert graph.node("layer1").repeat == 3 and "layer1.2.conv1" in analyze(graph).nodes
    with pytest.raises(SweepError) as e:
        parse_sweep({**base, "space": {"layer1.width": {"choice": [8]}, "layer1.0.conv1.kernel_size": {"choice": [3]},
                                       "layer1.repeat": {"choice": [0]}}})
    text = str(e.value)
    assert "unknown parameter 'width' for block instance 'layer1' (block 'basic')" in text
    assert "'layer1.0.conv1' is inside block instance 'layer1'" in text and "repeat must be an integer from 1" in text


def test_the_templates_hold_the_builtin_blocks():
    for name in ("resnet18", "resnet20", "gpt_lm", "unet"):
        graph = load_template(name)
        for block_name, block in graph.blocks.items():
            assert block.to_dict() == BLOCKS[block_name], (name, block_name)


def test_summary_lists_instances_with_their_totals_and_expand_lists_every_path(tmp_path, capsys):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(small_doc()))
    assert cli(["summary", str(path), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert [n["id"] for n in top["nodes"]] == ["input", "layer1", "layer2", "pool", "flatten", "fc"]
    assert top["nodes"][1]["type"] == "basic" and top["nodes"][1]["output_shape"] == [16, 8, 8]
    assert cli(["summary", str(path), "--json", "--expand"]) == 0
    every = json.loads(capsys.readouterr().out)
    assert "layer1.1.conv2" in [n["id"] for n in every["nodes"]] and every["total_params"] == top["total_params"]
    assert sum(n["params"] for n in top["nodes"]) == top["total_params"]


def test_a_graph_ending_in_an_instance_is_checked_against_a_dataset_by_path():
    from studio.data import check_graph_fits, get_info
    from studio.graph_edit import duplicated

    doc = {"format": "studio.graph/2", "name": "iris-head",
           "blocks": {"head": {"params": {"classes": 3}, "nodes": [
               {"id": "x", "type": "Input"}, {"id": "fc", "type": "Linear", "params": {"out_features": "$classes"}}],
               "edges": _edges(("x", "fc"))}},
           "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
                     {"id": "out", "type": "head", "params": {"classes": 3}}],
           "edges": _edges(("input", "out"))}
    info = get_info("iris")
    graph = parse_graph(doc)
    assert check_graph_fits(graph, analyze(graph), info) == []
    graph.node("out").params["classes"] = 5
    (issue,) = check_graph_fits(graph, analyze(graph), info)
    assert issue.node_id == "out.fc" and "out_features=3" in issue.message
    twin, nid = duplicated(parse_graph(small_doc()), "layer1")
    assert twin.node(nid).repeat == 2 and twin.node(nid).type == "basic"


def test_compare_diffs_two_block_graphs_by_path():
    from studio.inspection.compare import graph_diff

    a = parse_graph(small_doc())
    b = parse_graph(small_doc(repeat=3, params={"channels": 16}))
    b.blocks["basic_down"].body.node("conv2").params["kernel_size"] = 5
    diff = graph_diff(a, b)
    assert "layer1.2.conv1" in diff.added and not diff.removed
    assert ("layer2.conv2", "kernel_size", 3, 5) in diff.params_changed


def test_nested_blocks_with_repeat_compile_and_export_one_class_each():
    doc = small_doc()
    doc["blocks"]["stage"] = {"params": {"channels": 16}, "nodes": [
        {"id": "x", "type": "Input"},
        {"id": "down", "type": "basic_down", "params": {"channels": "$channels", "stride": 2}},
        {"id": "rest", "type": "basic", "repeat": 2, "params": {"channels": "$channels"}}],
        "edges": _edges(("x", "down"), ("down", "rest"))}
    doc["nodes"][2] = {"id": "layer2", "type": "stage", "repeat": 2, "params": {"channels": 32}}
    graph = parse_graph(doc)
    a = analyze(graph)
    assert a.ok and a.instances["layer2.1.rest"].output_shape == (32, 2, 2)  # 8 -> 4 -> 2
    model = compile_graph(graph, seed=0).eval()
    assert isinstance(model.layer2[1].rest, nn.Sequential) and "layer2.1.rest.1.conv1.weight" in model.state_dict()
    code = to_code(graph)
    assert "self.rest = nn.Sequential(*[Basic(channels=channels) for _ in range(2)])" in code
    namespace: dict = {"__name__": "exported"}
    exec(compile(code, "exported.py", "exec"), namespace)  # noqa: S102 - the studio's own output
    mine = namespace["Small"]().eval()
    mine.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(mine(x), model(x))


class ResBlock(nn.Module):  # a torchvision-style basic block
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(ResBlock(8), ResBlock(8), ResBlock(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layer1(self.stem(x))), 1))


def test_import_turns_repeated_children_into_a_block_with_the_modules_own_state_dict_keys():
    from studio.fximport import import_module

    net = _Net().eval()
    graph, unmapped = import_module(net, (3, 8, 8))
    assert unmapped == [] and graph.node("layer1").type == "ResBlock" and graph.node("layer1").repeat == 3
    assert [n.type for n in graph.blocks["ResBlock"].body.nodes][:3] == ["Input", "Conv2d", "BatchNorm2d"]
    model = compile_graph(graph, seed=0).eval()
    model.load_state_dict(net.state_dict(), strict=True)  # layer1.0.conv1.weight ... as in the module
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x))  # same process and kernels: equal up to op order


def test_explanations_reach_the_layers_inside_blocks_by_path():
    """Explain (studio.explain) on a block graph: integrated gradients complete within 2 %, and Grad-CAM
    and a layer attribution find a convolution inside an instance by its dotted path."""
    from studio.explain import Settings, explain

    model = compile_graph(parse_graph(small_doc()), seed=0).eval()
    x = torch.rand(16, 8, 8, generator=torch.Generator().manual_seed(0))
    ig = explain(model, x, method="integrated-gradients", settings=Settings(n_steps=128))
    assert ig.attributions.shape == (16, 8, 8) and ig.check.relative_error < 0.02, ig.check.sentence()
    conv = [name for name, m in model.named_modules() if name.startswith("layer2.") and isinstance(m, nn.Conv2d)][-1]
    cam = explain(model, x, method="grad-cam", settings=Settings(layer=conv))
    assert cam.attributions.shape[-2:] == (8, 8) and cam.notes.get("layer") == conv, cam.notes
