"""The graph-editing operations of studio.graph_edit: each returns an edited copy and leaves its argument alone."""

from __future__ import annotations

import pytest
import torch

from studio.analysis import analyze
from studio.compile import compile_graph
from studio.graph import parse_graph
from studio.graph_edit import (
    duplicated,
    new_node_id,
    renamed,
    with_frozen,
    with_input_moved_up,
    with_param,
    without_edge,
    without_node,
)
from tests.conftest import chain


def mlp():
    return parse_graph(chain(("input", "Input", {"shape": [4]}), ("fc1", "Linear", {"out_features": 8}),
                             ("relu1", "ReLU", {}), ("fc2", "Linear", {"out_features": 3})))


def two_branches():
    """input -> a (2 features), input -> b (5 features), both into a Concat."""
    doc = chain(("input", "Input", {"shape": [4]}), ("a", "Linear", {"out_features": 2}))
    doc["nodes"] += [{"id": "b", "type": "Linear", "params": {"out_features": 5}},
                     {"id": "cat", "type": "Concat"}]
    doc["edges"] += [{"source": "input", "target": "b"}, {"source": "a", "target": "cat"},
                     {"source": "b", "target": "cat"}]
    return parse_graph(doc)


def test_with_param_sets_a_value_and_omits_the_default():
    g = mlp()
    g2 = with_param(g, "fc1", "out_features", 16)
    assert g2.node("fc1").params == {"out_features": 16}
    assert analyze(g2).nodes["fc1"].output_shape == (16,)
    g3 = with_param(g2, "fc1", "bias", False)
    assert g3.node("fc1").params == {"out_features": 16, "bias": False}
    # back at the documented default (bias=True, out_features=64): the key disappears from the document
    g4 = with_param(with_param(g3, "fc1", "bias", True), "fc1", "out_features", 64)
    assert g4.node("fc1").params == {}
    # 64.0 is not the int default 64: it stays, so the validator can say so
    assert with_param(g, "fc1", "out_features", 64.0).node("fc1").params == {"out_features": 64.0}
    assert g.node("fc1").params == {"out_features": 8}  # the argument is unchanged


def test_with_frozen_marks_the_node_and_the_document_keeps_it():
    g = with_frozen(mlp(), "fc1", True)
    assert g.node("fc1").frozen and not g.node("fc2").frozen
    assert parse_graph(g.to_dict()).node("fc1").frozen
    assert not with_frozen(g, "fc1", False).node("fc1").frozen


def test_renamed_moves_the_edges_and_refuses_used_or_reserved_ids():
    g = mlp()
    g2 = renamed(g, "fc1", "hidden")
    assert [n.id for n in g2.nodes] == ["input", "hidden", "relu1", "fc2"]
    assert g2.inputs_of("hidden") == ["input"] and g2.inputs_of("relu1") == ["hidden"]
    assert renamed(g, "fc1", "fc1").to_dict() == g.to_dict()
    with pytest.raises(ValueError, match="'fc2' is already used by another node; choose another"):
        renamed(g, "fc1", "fc2")
    with pytest.raises(ValueError, match="reserved"):
        renamed(g, "fc1", "forward")
    with pytest.raises(ValueError, match="not a Python identifier"):
        renamed(g, "fc1", "1st layer")
    assert g.has_node("fc1") and not g.has_node("hidden")


def test_without_node_and_without_edge():
    g = mlp()
    g2 = without_node(g, "relu1")
    assert [n.id for n in g2.nodes] == ["input", "fc1", "fc2"]
    assert [(e.source, e.target) for e in g2.edges] == [("input", "fc1")]
    g3 = without_edge(g, "fc1", "relu1")
    assert [(e.source, e.target) for e in g3.edges] == [("input", "fc1"), ("relu1", "fc2")]
    assert len(g.nodes) == 4 and len(g.edges) == 3


def test_duplicated_gets_a_free_id_the_same_params_and_inputs():
    g = mlp()
    g2, nid = duplicated(g, "fc1")
    assert nid == "linear1"
    assert [n.id for n in g2.nodes] == ["input", "fc1", "linear1", "relu1", "fc2"]
    twin = g2.node(nid)
    assert twin.type == "Linear" and twin.params == {"out_features": 8} and g2.inputs_of(nid) == ["input"]
    twin.params["out_features"] = 99  # its params are its own
    assert g2.node("fc1").params == {"out_features": 8}
    g3, nid3 = duplicated(g2, "fc1")
    assert nid3 == "linear2"
    assert analyze(g3).nodes[nid3].output_shape == (8,)


def test_new_node_id_skips_taken_and_reserved_ids():
    g = mlp()
    assert new_node_id(g, "Conv2d") == "conv2d1"
    assert new_node_id(g, "ReLU") == "relu2"
    assert new_node_id(g, "!!") == "layer1"


def test_with_input_moved_up_swaps_the_concat_order_in_the_compiled_model():
    g = two_branches()
    assert g.inputs_of("cat") == ["a", "b"]
    g2 = with_input_moved_up(g, "cat", 1)
    assert g2.inputs_of("cat") == ["b", "a"]
    assert {(e.source, e.port) for e in g2.edges if e.target == "cat"} == {("b", 0), ("a", 1)}
    assert g.inputs_of("cat") == ["a", "b"]
    model = compile_graph(g2, seed=0)
    x = torch.randn(3, 4)
    expected = torch.cat([model.b(x), model.a(x)], dim=1)  # the oracle: torch.cat in the new order
    assert torch.equal(model(x), expected)
