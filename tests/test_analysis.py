"""Validation: every case a user can hit gets an issue on the right node, with a message that says
what happened, what was expected and how to fix it."""

from __future__ import annotations

import pytest

from studio.analysis import analyze
from studio.graph import parse_graph
from tests.conftest import chain


def issues(doc, **kw):
    return analyze(parse_graph(doc), **kw).issues


def only(doc, node_id, param, pattern, **kw):
    found = [i for i in issues(doc, **kw) if i.severity == "error"]
    assert found, "expected an issue, the graph validated"
    hit = [i for i in found if i.node_id == node_id and i.param == param]
    assert hit, f"no issue on ({node_id!r}, {param!r}): {found}"
    import re

    assert re.search(pattern, hit[0].message), hit[0].message
    return hit[0]


IMG = ("input", "Input", {"shape": [3, 5, 5]})
VEC = ("input", "Input", {"shape": [16]})
SEQ = ("input", "Input", {"shape": [10, 12]})
TOK = ("input", "Input", {"shape": [10], "dtype": "int64"})


def test_valid_graph_has_no_issue():
    assert issues(chain(IMG, ("conv", "Conv2d", {"out_channels": 4, "padding": 1}), ("flat", "Flatten", None),
                        ("fc", "Linear", {"out_features": 3}))) == []


def test_unknown_type_suggests_the_closest():
    only(chain(VEC, ("fc", "Linaer", None)), "fc", None, r"unknown layer type 'Linaer'; did you mean 'Linear'\?")


def test_unknown_param_suggests_the_closest():
    only(chain(VEC, ("fc", "Linear", {"out_feature": 3})), "fc", "out_feature",
         r"unknown param 'out_feature' for Linear; did you mean 'out_features'\?")


def test_inferred_param_is_refused():
    only(chain(VEC, ("fc", "Linear", {"in_features": 16})), "fc", "in_features", r"in_features is inferred")


@pytest.mark.parametrize("params, param, pattern", [
    ({"out_features": "10"}, "out_features", r"out_features must be an integer, got '10'"),
    ({"out_features": 0}, "out_features", r"out_features=0 is out of range; expected out_features >= 1"),
    ({"out_features": 2.5}, "out_features", r"must be an integer, got 2.5"),
    ({"bias": 1}, "bias", r"bias must be true or false, got 1"),
])
def test_param_type_and_range(params, param, pattern):
    only(chain(VEC, ("fc", "Linear", params)), "fc", param, pattern)


def test_choice_and_float_range():
    only(chain(VEC, ("drop", "Dropout", {"p": 1.5})), "drop", "p", r"p=1.5 is out of range; expected p <= 1")
    only(chain(VEC, ("act", "GELU", {"approximate": "fast"})), "act", "approximate",
         r"approximate='fast' is not one of 'none', 'tanh'")


def test_no_input():
    doc = chain(("a", "Linear", None), ("b", "ReLU", None))
    found = issues(doc)
    assert any(i.node_id is None and "no Input node" in i.message for i in found)
    assert any(i.node_id == "a" and "takes one input but has 0" in i.message for i in found)


def test_cycle():
    doc = chain(VEC, ("a", "Linear", None), ("b", "ReLU", None))
    doc["edges"].append({"source": "b", "target": "a"})
    only(doc, "a", None, r"is on a cycle")


def test_unconnected_node():
    doc = chain(VEC, ("fc", "Linear", None))
    doc["nodes"].append({"id": "lonely", "type": "ReLU"})
    only(doc, "lonely", None, r"is not connected to anything; connect it or delete it")


def test_more_than_one_output():
    doc = chain(VEC, ("a", "Linear", None))
    doc["nodes"].append({"id": "b", "type": "Linear"})
    doc["edges"].append({"source": "input", "target": "b"})
    only(doc, "b", None, r"is an output .* and so is 'a'; a model has a single output")


def test_wrong_number_of_inputs():
    only(chain(VEC, ("add", "Add", None)), "add", None, r"Add takes at least 2 inputs but has 1")
    doc = chain(VEC, ("a", "ReLU", None), ("fc", "Linear", None))
    doc["edges"].append({"source": "input", "target": "fc"})
    only(doc, "fc", None, r"Linear takes one input but has 2; merge the branches first")


def test_mismatched_shapes_at_a_merge():
    doc = chain(("input", "Input", {"shape": [16, 14, 14]}), ("a", "Conv2d", {"out_channels": 32, "padding": 1}))
    doc["nodes"] += [{"id": "b", "type": "Conv2d", "params": {"out_channels": 64, "padding": 1}},
                     {"id": "add", "type": "Add"}]
    doc["edges"] += [{"source": "input", "target": "b"}, {"source": "a", "target": "add"},
                     {"source": "b", "target": "add"}]
    only(doc, "add", None, r"inputs have different shapes \(32, 14, 14\) and \(64, 14, 14\)")


def test_wrong_rank():
    only(chain(VEC, ("conv", "Conv2d", None)), "conv", None, r"Conv2d expects a \(C, H, W\) input, got \(16,\)")
    only(chain(IMG, ("lstm", "LSTM", None)), "lstm", None, r"LSTM expects a \(T, F\) input, got \(3, 5, 5\)")


def test_kernel_larger_than_input():
    only(chain(IMG, ("conv3", "Conv2d", {"kernel_size": 7})), "conv3", "kernel_size",
         r"^kernel_size=7 is larger than its input \(5, 5\); use kernel_size <= 5 or padding=3$")
    only(chain(IMG, ("pool", "MaxPool2d", {"kernel_size": 6})), "pool", "kernel_size", r"larger than its input")


def test_dtypes_embedding_and_conv():
    only(chain(SEQ, ("emb", "Embedding", None)), "emb", None, r"expects int64 token ids but receives float32")
    only(chain(("input", "Input", {"shape": [1, 8, 8], "dtype": "int64"}), ("conv", "Conv2d", None)), "conv", None,
         r"Conv2d expects float32 input but receives int64 token ids; add an Embedding first")


def test_heads_must_divide_embedding():
    only(chain(SEQ, ("att", "MultiheadAttention", {"num_heads": 5})), "att", "num_heads",
         r"num_heads=5 does not divide the embedding size 12")
    only(chain(TOK, ("emb", "Embedding", {"num_embeddings": 20, "embedding_dim": 10}),
               ("enc", "TransformerEncoderLayer", {"nhead": 4})), "enc", "nhead", r"nhead=4 does not divide")


def test_parameter_budget():
    doc = chain(("input", "Input", {"shape": [4096]}), ("fc", "Linear", {"out_features": 4096}))
    only(doc, "fc", None, r"the model has 16,781,312 parameters, over the budget of 1,000,000", param_budget=1e6)
    assert issues(doc) == []  # the default budget is 1e9


def test_downstream_of_a_broken_node_is_skipped_but_other_branches_are_checked():
    doc = chain(VEC, ("bad", "Conv2d", None), ("after", "Linear", None), ("add", "Add", None))
    doc["nodes"].append({"id": "other", "type": "Linear", "params": {"out_features": -1}})
    doc["edges"] += [{"source": "input", "target": "other"}, {"source": "other", "target": "add"}]
    found = issues(doc)
    assert not any(i.node_id in ("after", "add") for i in found), "no cascade below the broken node"
    assert any(i.node_id == "bad" for i in found)
    assert any(i.node_id == "other" and i.param == "out_features" for i in found)


def test_torch_rejection_becomes_a_node_issue():
    # GroupNorm on a 1-channel input with 2 groups is caught by the spec's check; a pooling window
    # that collapses the input after stride is left to PyTorch, whose message is passed on.
    only(chain(("input", "Input", {"shape": [1, 4, 4]}), ("gn", "GroupNorm", {"num_groups": 2})), "gn",
         "num_groups", r"num_groups=2 does not divide the 1 channels")
    found = issues(chain(("input", "Input", {"shape": [2, 3]}), ("conv", "Conv1d",
                                                               {"kernel_size": 2, "padding": "same", "stride": 2})))
    assert any(i.node_id == "conv" for i in found)


def test_analysis_figures():
    a = analyze(parse_graph(chain(IMG, ("conv", "Conv2d", {"out_channels": 4}), ("flat", "Flatten", None),
                                  ("fc", "Linear", {"out_features": 2}))))
    assert a.nodes["conv"].output_shape == (4, 3, 3)
    assert a.nodes["conv"].params == 4 * 3 * 3 * 3 + 4
    assert a.nodes["conv"].flops == 2 * (4 * 3 * 3) * (3 * 3 * 3)
    assert a.nodes["flat"].activation_bytes == 36 * 4
    assert a.output_shape == (2,) and a.input_shape == (3, 5, 5) and a.output_id == "fc"


def test_a_linear_after_a_multi_dim_output_warns_with_the_flatten_fix():
    """Issue 18: PyTorch takes (64, 5, 5) -> Linear(128) as (64, 5, 128); a classifier almost never wants it."""
    from studio.graph import parse_graph
    from tests.conftest import chain

    g = parse_graph(chain(("input", "Input", {"shape": [1, 14, 14]}),
                          ("conv1", "Conv2d", {"out_channels": 64, "kernel_size": 3}),
                          ("pool1", "MaxPool2d", {"kernel_size": 2}), ("linear1", "Linear", {"out_features": 128})))
    a = analyze(g)
    assert a.ok and a.nodes["linear1"].output_shape == (64, 6, 128)
    (w,) = a.warnings
    assert w.node_id == "linear1" and "insert Flatten before linear1" in w.message and "(64, 6, 6)" in w.message


def test_a_size_shrunk_to_nothing_names_the_layers_that_shrank_it():
    from studio.data import apply_dataset, get_info
    from studio.templates import load_template

    g = apply_dataset(load_template("seed_cnn"), get_info("digits"))  # 8x8 through unpadded 3x3 convolutions
    (e,) = analyze(g).errors
    assert e.node_id == "pool2"
    assert "the size was lost upstream: input 8x8 -> conv1 6x6" in e.message and "shrunk by: conv1, pool1, conv2" \
        in e.message
