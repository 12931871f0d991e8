"""The graph document: strict parsing with clear issues, atomic save, exact round trip."""

from __future__ import annotations

import json
import re

import pytest

from studio.errors import GraphError
from studio.graph import load_graph, loads_graph, parse_graph, save_graph
from tests.conftest import chain


def doc():
    d = chain(("input", "Input", {"shape": [1, 28, 28], "dtype": "float32"}),
              ("conv1", "Conv2d", {"out_channels": 32, "kernel_size": 3, "padding": 1}),
              ("relu1", "ReLU", None), ("flat", "Flatten", None), ("fc", "Linear", {"out_features": 10}))
    d["description"] = "seed"
    d["nodes"][4]["position"] = {"x": 0, "y": 400}
    d["edges"].append({"source": "flat", "target": "fc", "port": 0})
    d["edges"].pop(3)
    return d


def issues_of(bad) -> list:
    with pytest.raises(GraphError) as e:
        parse_graph(bad) if not isinstance(bad, str) else loads_graph(bad)
    return e.value.issues


def test_round_trip_is_exact(tmp_path):
    g = parse_graph(doc())
    save_graph(g, tmp_path / "g.json")
    again = load_graph(tmp_path / "g.json")
    assert again == g
    assert again.to_dict() == doc()
    assert not list(tmp_path.glob(".*tmp")), "atomic save left a temp file behind"


@pytest.mark.parametrize("mutate, node_id, pattern", [
    (lambda d: d.update(extra=1), None, r"unknown key 'extra' in the document"),
    (lambda d: d["nodes"][1].update(kind="x"), "conv1", r"unknown key 'kind' in nodes\[1\]"),
    (lambda d: d["edges"][0].update(weight=2), None, r"unknown key 'weight' in edges\[0\]"),
    (lambda d: d["nodes"][2].update(id="conv1"), "conv1", r"duplicate node id 'conv1'"),
    (lambda d: d["nodes"][2].update(id="1relu"), None, r"'1relu' is not a Python identifier"),
    (lambda d: d["nodes"][2].update(id="class"), "class", r"'class' is reserved"),
    (lambda d: d["nodes"][2].update(id="a" * 65), None, r"at most 64"),
    (lambda d: d["nodes"][2].update(id=7), None, r"id must be a string, got int 7"),
    (lambda d: d["nodes"][1].update(params=[1]), "conv1", r"params must be an object, got list"),
    (lambda d: d["nodes"][1].update(type=3), "conv1", r"type must be a string"),
    (lambda d: d["edges"].append({"source": "fc", "target": "ghost"}), "ghost",
     r"target node 'ghost', which does not exist"),
    (lambda d: d["edges"].append({"source": "fc", "target": "fc"}), "fc", r"edge to itself"),
    (lambda d: d["edges"].append({"source": "input", "target": "conv1"}), "conv1", r"two edges from 'input'"),
    (lambda d: d["edges"][0].update(port=-1), "conv1", r"port must be a non-negative integer"),
    (lambda d: d.update(nodes={}), None, r"nodes must be a list"),
    (lambda d: d.update(format="studio.graph/3"), None, r"expected 'studio.graph/1'"),
    (lambda d: d["nodes"][0].update(position={"x": "a", "y": 0}), "input", r"position must be"),
])
def test_structural_problems_are_issues(mutate, node_id, pattern):
    d = doc()
    mutate(d)
    issues = issues_of(d)
    hits = [i for i in issues if re.search(pattern, i.message)]
    assert hits, f"no issue matches {pattern!r}: {issues}"
    assert hits[0].node_id == node_id


def test_malformed_json_names_line_and_column():
    (issue,) = issues_of('{"format": "studio.graph/1",\n "nodes": [}')
    assert issue.node_id is None
    assert "not valid JSON at line 2, column" in issue.message


def test_every_problem_is_reported_at_once():
    d = doc()
    d["nodes"][1]["bogus"] = 1
    d["nodes"][2]["id"] = "2x"
    d["edges"].append({"source": "nowhere", "target": "fc"})
    assert len(issues_of(d)) >= 3


def test_not_an_object_and_unreadable_file(tmp_path):
    assert "must be a JSON object, got list" in issues_of("[1, 2]")[0].message
    with pytest.raises(GraphError, match="cannot read graph file"):
        load_graph(tmp_path / "missing.json")


def test_topological_order_and_cycle():
    g = parse_graph(doc())
    assert g.topological_order() == ["input", "conv1", "relu1", "flat", "fc"]
    d = doc()
    d["edges"].append({"source": "fc", "target": "conv1"})
    with pytest.raises(GraphError, match="cycle") as e:
        parse_graph(d).topological_order()
    assert {i.node_id for i in e.value.issues} >= {"conv1", "fc"}


def test_ports_order_inputs():
    d = chain(("input", "Input", {"shape": [4]}), ("a", "Linear", None))
    d["nodes"] += [{"id": "b", "type": "Linear"}, {"id": "cat", "type": "Concat"}]
    d["edges"] += [{"source": "input", "target": "b"},
                   {"source": "a", "target": "cat", "port": 1}, {"source": "b", "target": "cat", "port": 0}]
    assert parse_graph(d).inputs_of("cat") == ["b", "a"]
    assert json.loads(parse_graph(d).to_json())["edges"][-1]["port"] == 0


def test_ids_that_shadow_module_attributes_are_refused():
    for bad in ("eval", "parameters", "to", "cuda", "forward", "training", "input_shape"):
        d = doc()
        d["nodes"][2]["id"] = bad
        d["edges"][1]["target"] = bad
        d["edges"][2]["source"] = bad
        assert any(f"{bad!r} is reserved" in i.message for i in issues_of(d)), bad
