"""Every palette type, through one harness: defaults valid, shapes/params/FLOPs equal PyTorch's."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from studio.analysis import analyze
from studio.compile import compile_graph
from studio.graph import parse_graph
from studio.layers import CATEGORIES, REGISTRY, InSpec

PALETTE = {  # DESIGN.md's palette table, verbatim
    "input": ["Input"],
    "core": ["Linear", "Flatten", "Reshape", "Permute", "Dropout", "Identity"],
    "convolution": ["Conv1d", "Conv2d", "ConvTranspose2d"],
    "pooling": ["MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d"],
    "normalization": ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm"],
    "activation": ["ReLU", "LeakyReLU", "GELU", "SiLU", "ELU", "Tanh", "Sigmoid", "Softmax"],
    "recurrent": ["RNN", "LSTM", "GRU"],
    "embedding": ["Embedding", "PositionalEncoding"],
    "attention": ["MultiheadAttention", "TransformerEncoderLayer"],
    "sequence": ["SequencePool"],
    "merge": ["Add", "Multiply", "Concat"],
}
LAYERS = sorted(t for t in REGISTRY if t != "Input")


def test_registry_is_exactly_the_palette():
    assert {t: REGISTRY[t].category for t in REGISTRY} == {t: c for c, ts in PALETTE.items() for t in ts}
    assert set(CATEGORIES) == set(PALETTE)


def single_layer_graph(type_name: str, params: dict | None = None) -> dict:
    """Input(s) -> layer, with the spec's example input; several inputs come from one Input via Identity."""
    spec = REGISTRY[type_name]
    ex = spec.example
    nodes = [{"id": "input", "type": "Input", "params": {"shape": list(ex[0].shape), "dtype": ex[0].dtype}}]
    edges = []
    for k, ins in enumerate(ex):
        if len(ex) == 1:
            edges.append({"source": "input", "target": "layer"})
            continue
        # Branches reshape the one input to each example shape.
        nodes.append({"id": f"b{k}", "type": "Reshape", "params": {"shape": list(ins.shape)}})
        edges += [{"source": "input", "target": f"b{k}"}, {"source": f"b{k}", "target": "layer", "port": k}]
    assert len({math.prod(i.shape) for i in ex}) == 1, "a spec's example inputs must share a size"
    nodes.append({"id": "layer", "type": type_name, **({"params": params} if params else {})})
    return {"format": "studio.graph/1", "name": type_name, "nodes": nodes, "edges": edges}


def example_batch(type_name: str, batch: int = 3) -> torch.Tensor:
    ex = REGISTRY[type_name].example[0]
    if ex.dtype == "int64":
        return torch.randint(0, 10, (batch, *ex.shape))
    return torch.randn(batch, *ex.shape)


@pytest.mark.parametrize("type_name", LAYERS)
def test_defaults_valid_and_shape_params_equal_pytorch(type_name):
    graph = parse_graph(single_layer_graph(type_name))
    a = analyze(graph)
    assert a.issues == [], a.issues
    model = compile_graph(graph, seed=0).eval()
    with torch.no_grad():
        out = model(example_batch(type_name))
    info = a.nodes["layer"]
    assert info.output_shape == tuple(out.shape[1:])
    assert info.dtype == str(out.dtype).removeprefix("torch.")
    assert info.params == sum(p.numel() for p in model.parameters() if p.requires_grad)  # only `layer` has any
    assert info.activation_bytes == out[0].numel() * out.element_size()


ELEMENTWISE = sorted(t for t, spec in REGISTRY.items() if spec.elementwise)


def test_the_elementwise_layers_are_the_weightless_activations_dropout_and_identity():
    assert ELEMENTWISE == sorted([*(t for t in PALETTE["activation"] if t != "Softmax"), "Dropout", "Identity"])


@pytest.mark.parametrize("type_name", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 4, 6), (2, 3, 4, 5)])
def test_elementwise_layers_keep_shape_and_dtype_with_no_params_and_no_counted_flops(type_name, shape):
    """What analysis assumes for `elementwise` specs (it skips their meta run), checked on PyTorch itself."""
    spec = REGISTRY[type_name]
    params = {p.name: p.default for p in spec.params}
    dtypes = ["float32", "int64"] if spec.dtype == "any" else ["float32"]
    for dtype in dtypes:
        doc = {"format": "studio.graph/1", "name": "e", "edges": [{"source": "input", "target": "layer"}],
               "nodes": [{"id": "input", "type": "Input", "params": {"shape": list(shape), "dtype": dtype}},
                         {"id": "layer", "type": type_name, "params": params}]}
        info = analyze(parse_graph(doc)).nodes["layer"]
        module = spec.build(params, [info.inputs[0]])
        x = torch.randn(2, *shape) if dtype == "float32" else torch.randint(0, 9, (2, *shape))
        with FlopCounterMode(display=False) as counter:
            out = module(x)
        assert (info.output_shape, info.dtype) == (tuple(out.shape[1:]), str(out.dtype).removeprefix("torch."))
        assert info.params == sum(p.numel() for p in module.parameters()) == 0
        assert info.flops == counter.get_total_flops() == 0


@pytest.mark.parametrize("type_name", sorted(REGISTRY))
def test_schema_is_complete_and_json_round_trips(type_name):
    spec = REGISTRY[type_name]
    assert spec.doc and spec.doc.endswith(".")
    for p in spec.params:
        assert p.help, f"{type_name}.{p.name} has no help text"
        assert p.problem(p.default) is None, f"{type_name}.{p.name} default {p.default!r} is invalid"
    explicit = {p.name: p.default for p in spec.params}
    doc = single_layer_graph(type_name) if type_name != "Input" else {
        "format": "studio.graph/1", "name": "i", "nodes": [{"id": "input", "type": "Input", "params": explicit}],
        "edges": []}
    if type_name != "Input" and explicit:
        doc["nodes"][-1]["params"] = explicit
    g = parse_graph(doc)
    assert parse_graph(g.to_dict()) == g
    assert analyze(g).errors == []


def test_recording_attention_never_changes_output():
    g = parse_graph({"format": "studio.graph/1", "name": "attn", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [6, 8]}},
        {"id": "mha", "type": "MultiheadAttention", "params": {"num_heads": 2, "causal": True}},
        {"id": "enc", "type": "TransformerEncoderLayer",
         "params": {"nhead": 2, "dim_feedforward": 16, "norm_first": True, "dropout": 0.0}}],
        "edges": [{"source": "input", "target": "mha"}, {"source": "mha", "target": "enc"}]})
    model = compile_graph(g, seed=0).eval()
    x = torch.randn(2, 6, 8)
    from studio.compile import capture

    plain = model(x)
    out, feats, attn = capture(model, x, ["mha"])
    assert torch.equal(plain, out)
    assert torch.equal(feats["mha"], model.mha(x))
    assert attn["mha"].shape == (2, 2, 6, 6) and attn["enc"].shape == (2, 2, 6, 6)
    assert torch.allclose(attn["mha"].sum(-1), torch.ones(2, 2, 6))
    assert attn["mha"].triu(diagonal=1).abs().max() == 0, "causal weights must not look ahead"
    # Oracle: PyTorch's own weights from nn.MultiheadAttention with need_weights=True.
    mask = torch.triu(torch.full((6, 6), float("-inf")), diagonal=1)
    _, ref = torch.nn.MultiheadAttention.forward(model.mha, x, x, x, attn_mask=mask, need_weights=True,
                                                 average_attn_weights=False)
    assert torch.allclose(attn["mha"], ref, atol=1e-6)


def test_attention_labels_count_heads_in_words_and_no_category_is_the_issue_red():
    from studio.layers import CATEGORY_COLORS

    assert REGISTRY["MultiheadAttention"].describe({"num_heads": 1}) == "MultiheadAttention 1 head"
    assert REGISTRY["MultiheadAttention"].describe({"num_heads": 4, "causal": True}) == \
        "MultiheadAttention 4 heads causal"
    assert REGISTRY["TransformerEncoderLayer"].describe({"nhead": 1, "dim_feedforward": 64}) == \
        "TransformerEncoderLayer 1 head ff64"
    assert "#dc2626" not in CATEGORY_COLORS.values()  # red marks a node with an error on the canvas
    assert len(set(CATEGORY_COLORS.values())) == len(CATEGORY_COLORS)


# ---- from_module: each spec reads its own modules back -------------------------------------------------

def _varied_params(spec) -> dict:
    """Defaults, with every bool flipped and every number moved off its default, where still valid."""
    params = {p.name: p.default for p in spec.params}
    for p in spec.params:
        if p.kind == "bool":
            candidate = not p.default
        elif p.kind == "float" and p.default is not None:
            candidate = min(p.default + 0.25, p.max) if p.max is not None else p.default + 0.25
        elif p.kind == "choice":
            candidate = p.choices[-1]
        else:
            continue
        trial = {**params, p.name: candidate}
        info = analyze(parse_graph(single_layer_graph(spec.type, trial))).nodes.get("layer")
        if info is not None and not analyze(parse_graph(single_layer_graph(spec.type, trial))).errors:
            params = trial
    return params


MODULE_SPECS = sorted(t for t, spec in REGISTRY.items() if spec.make is not None)


def test_every_module_layer_can_read_itself_back_and_function_layers_compile_to_functions():
    for type_name, spec in REGISTRY.items():
        if type_name == "Input":
            continue
        assert (spec.make is None) == (spec.function is not None), type_name
        if spec.make is not None:
            assert spec.from_module is not None and spec.module_types, f"{type_name} has no from_module"


@pytest.mark.parametrize("type_name", MODULE_SPECS)
@pytest.mark.parametrize("variant", ["defaults", "varied"])
def test_from_module_inverts_build(type_name, variant):
    spec = REGISTRY[type_name]
    params = spec.resolve({}) if variant == "defaults" else _varied_params(spec)
    info = analyze(parse_graph(single_layer_graph(type_name, params))).nodes["layer"]
    module = spec.build(params, list(info.inputs))
    assert type(module) in spec.module_types
    read = spec.from_module(module)
    # Equal params, or params that build the same module (LayerNorm's bias means nothing without affine).
    rebuilt = spec.build(read, list(info.inputs))
    shapes = lambda mod: {k: v.shape for k, v in mod.state_dict().items()}  # noqa: E731
    assert spec.resolve(read) == spec.resolve(params) or (repr(rebuilt) == repr(module)
                                                          and shapes(rebuilt) == shapes(module))
    assert type(rebuilt) is type(module) and repr(rebuilt) == repr(module)


# ---- independent oracles: modules built by hand from torch.nn, and closed-form FLOPs ---------------------

def _first(out):
    return out[0] if isinstance(out, tuple) else out


# Each type at its defaults on its spec's example input, written by hand with torch.nn (not by spec.build),
# and how to call it so it computes what the palette layer computes.
HAND_BUILT = {
    "Linear": (lambda: nn.Linear(16, 64), None),
    "Conv1d": (lambda: nn.Conv1d(3, 32, 3), None),
    "Conv2d": (lambda: nn.Conv2d(3, 32, 3), None),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(8, 32, 3), None),
    "MaxPool1d": (lambda: nn.MaxPool1d(2), None), "MaxPool2d": (lambda: nn.MaxPool2d(2), None),
    "AvgPool1d": (lambda: nn.AvgPool1d(2), None), "AvgPool2d": (lambda: nn.AvgPool2d(2), None),
    "AdaptiveAvgPool1d": (lambda: nn.AdaptiveAvgPool1d(1), None),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d(1), None),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(8), None), "BatchNorm2d": (lambda: nn.BatchNorm2d(4), None),
    "LayerNorm": (lambda: nn.LayerNorm(16), None), "GroupNorm": (lambda: nn.GroupNorm(1, 8), None),
    "Flatten": (lambda: nn.Flatten(), None), "Dropout": (lambda: nn.Dropout(0.5), None),
    "Identity": (lambda: nn.Identity(), None),
    "ReLU": (lambda: nn.ReLU(), None), "LeakyReLU": (lambda: nn.LeakyReLU(0.01), None),
    "GELU": (lambda: nn.GELU(), None), "SiLU": (lambda: nn.SiLU(), None), "ELU": (lambda: nn.ELU(1.0), None),
    "Tanh": (lambda: nn.Tanh(), None), "Sigmoid": (lambda: nn.Sigmoid(), None),
    "Softmax": (lambda: nn.Softmax(dim=-1), None),
    "RNN": (lambda: nn.RNN(16, 64, batch_first=True), lambda m, x: m(x)[0]),
    "LSTM": (lambda: nn.LSTM(16, 64, batch_first=True), lambda m, x: m(x)[0]),
    "GRU": (lambda: nn.GRU(16, 64, batch_first=True), lambda m, x: m(x)[0]),
    "Embedding": (lambda: nn.Embedding(1000, 64), None),
    "MultiheadAttention": (lambda: nn.MultiheadAttention(16, 4, batch_first=True),
                           lambda m, x: m(x, x, x, need_weights=False)[0]),
    "TransformerEncoderLayer": (lambda: nn.TransformerEncoderLayer(16, 4, batch_first=True), None),
}


@pytest.mark.parametrize("type_name", sorted(HAND_BUILT))
def test_spec_module_equals_a_module_built_directly_from_torch_nn(type_name):
    spec = REGISTRY[type_name]
    module = spec.build({}, list(spec.example)).eval()
    make, call = HAND_BUILT[type_name]
    torch.manual_seed(0)
    hand = make().eval()
    assert {k: v.shape for k, v in module.state_dict().items()} == {k: v.shape for k, v in hand.state_dict().items()}
    hand.load_state_dict(module.state_dict(), strict=True)
    x = example_batch(type_name)
    with torch.no_grad():
        assert torch.equal(_first(module(x)), (call or (lambda m, x: m(x)))(hand, x))


def _closed_form_flops(type_name: str) -> int:
    """Forward FLOPs of one sample at the defaults (a multiply-add is 2), written out by hand."""
    if type_name == "Linear":
        return 2 * 16 * 64
    if type_name == "Conv1d":  # (3, 32) -> (32, 30), kernel 3
        return 2 * 3 * 3 * 32 * 30
    if type_name == "Conv2d":  # (3, 16, 16) -> (32, 14, 14), kernel 3x3
        return 2 * 3 * 3 * 3 * 32 * 14 * 14
    if type_name == "ConvTranspose2d":  # every input pixel spreads a 3x3 kernel to each output channel
        return 2 * 8 * 7 * 7 * 3 * 3 * 32
    raise KeyError(type_name)


@pytest.mark.parametrize("type_name", LAYERS)
def test_flops_equal_an_independent_count(type_name):
    """Closed form for Linear and convolutions; FlopCounterMode on the hand-built module for the others."""
    flops = analyze(parse_graph(single_layer_graph(type_name))).total_flops
    if type_name in ("Linear", "Conv1d", "Conv2d", "ConvTranspose2d"):
        assert flops == _closed_form_flops(type_name)
    elif type_name in HAND_BUILT:
        make, call = HAND_BUILT[type_name]
        with torch.device("meta"):  # PyTorch's reference kernels: CPU's fused LSTM/attention count nothing
            hand = make().eval()
        with FlopCounterMode(display=False) as counter:
            (call or (lambda m, x: m(x)))(hand, example_batch(type_name, batch=1).to("meta"))
        assert flops == counter.get_total_flops()
    else:  # the studio's own weightless layers (Reshape, Permute, merges, SequencePool, PositionalEncoding)
        assert REGISTRY[type_name].category in ("core", "merge", "sequence", "embedding")
        assert flops == 0


# ---- the facts other parts of the studio act on (LayerSpec.keeps_shape, size_param, ...), held to PyTorch --

def _with(fact: str) -> list[str]:
    return sorted(t for t, spec in REGISTRY.items() if getattr(spec, fact))


def _run(type_name: str, params: dict | None = None, x: torch.Tensor | None = None):
    """(module, input batch, output) of the layer at `params` on a batch of its example input (or on `x`)."""
    x = example_batch(type_name) if x is None else x
    ins = [InSpec(tuple(x.shape[1:]), str(x.dtype).removeprefix("torch."))]
    module = REGISTRY[type_name].build(params or {}, ins).eval()
    with torch.no_grad():
        return module, x, _first(module(x))


def test_elementwise_layers_also_claim_to_keep_their_shape():
    assert set(ELEMENTWISE) <= set(_with("keeps_shape"))


@pytest.mark.parametrize("type_name", _with("keeps_shape"))
def test_keeps_shape_layers_give_their_input_shape_at_any_settings(type_name):
    spec = REGISTRY[type_name]
    for params in (spec.resolve({}), _varied_params(spec)):
        _, x, out = _run(type_name, params)
        assert out.shape == x.shape, params


@pytest.mark.parametrize("type_name", _with("size_param"))
def test_size_param_sets_the_output_size_along_its_dim(type_name):
    name, dim = REGISTRY[type_name].size_param
    for size in (5, 12):
        _, _, out = _run(type_name, {name: size})
        assert out.shape[1:][dim] == size


@pytest.mark.parametrize("type_name", _with("dense"))
def test_dense_layers_map_the_last_dim_and_keep_the_others(type_name):
    assert REGISTRY[type_name].size_param[1] == -1
    _, x, out = _run(type_name, x=torch.randn(2, 3, 5, REGISTRY[type_name].example[0].shape[-1]))
    assert out.shape[:-1] == x.shape[:-1]


@pytest.mark.parametrize("type_name", _with("outputs_probabilities"))
def test_probability_layers_give_a_distribution_at_their_defaults(type_name):
    _, _, out = _run(type_name)
    assert (out >= 0).all()
    torch.testing.assert_close(out.sum(dim=-1), torch.ones(out.shape[:-1]))


@pytest.mark.parametrize("type_name", _with("vocab_param"))
def test_vocab_param_bounds_the_token_ids(type_name):
    spec = REGISTRY[type_name]
    size = spec.param(spec.vocab_param).default
    assert spec.dtype == "int"
    _run(type_name, x=torch.tensor([[0, size - 1]]))
    with pytest.raises(IndexError):
        _run(type_name, x=torch.tensor([[0, size]]))


@pytest.mark.parametrize("type_name", _with("dead_units"))
def test_dead_unit_layers_give_zero_for_inputs_at_most_zero_only(type_name):
    x = example_batch(type_name).abs()
    assert (_run(type_name, x=-x)[2] == 0).all()
    assert (_run(type_name, x=x + 0.1)[2] > 0).all()


@pytest.mark.parametrize("type_name", _with("gradcam"))
def test_gradcam_layers_give_maps_of_learned_filters(type_name):
    module, _, out = _run(type_name)
    assert out.dim() == 4 and any(True for _ in module.parameters())

