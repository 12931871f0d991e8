"""Property-based: random and mutated graph documents never raise anything but the studio's own
errors, every issue names a node or the graph and says something, and `check` never crashes.

CI runs at least 2,000 generated documents per property (env CI set); locally fewer.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.__main__ import main
from studio.analysis import analyze
from studio.errors import GraphError, Issue
from studio.graph import parse_graph
from studio.layers import REGISTRY

EXAMPLES = 2000 if os.environ.get("CI") else 250
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

TYPES = sorted(REGISTRY)
PARAM_NAMES = sorted({p.name for s in REGISTRY.values() for p in s.params}) + ["in_features", "bogus"]
ids = st.sampled_from(["input", "a", "b", "c", "d", "conv1", "fc", "1x", "class", "", "x" * 70])
values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=True) | st.sampled_from(
        ["same", "valid", "mean", "relu", "float32", "int64", "learned", "none", "x'\"\n"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
shapes = st.lists(st.integers(-1, 40), min_size=0, max_size=4)


@st.composite
def node(draw):
    t = draw(st.sampled_from(TYPES + ["Nope", 3]))
    params = draw(st.dictionaries(st.sampled_from(PARAM_NAMES), values, max_size=3))
    if t == "Input":
        params = {"shape": draw(shapes), "dtype": draw(st.sampled_from(["float32", "int64", "x"]))}
    d = {"id": draw(ids), "type": t, "params": params}
    if draw(st.booleans()):
        d["position"] = draw(st.sampled_from([{"x": 1, "y": 2}, {"x": "a"}, None, [1]]))
    return d


@st.composite
def document(draw):
    nodes = draw(st.lists(node(), max_size=7))
    node_ids = [n["id"] for n in nodes] or ["a"]
    edges = draw(st.lists(st.fixed_dictionaries(
        {"source": st.sampled_from(node_ids + ["ghost"]), "target": st.sampled_from(node_ids)},
        optional={"port": st.integers(-1, 3) | st.just("0")}), max_size=9))
    doc = {"format": "studio.graph/1", "name": draw(st.text(max_size=8)), "nodes": nodes, "edges": edges}
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(["extra", "format", "nodes", "edges"]))] = draw(values)
    return doc


def check_issues(issues: list[Issue], ids_in_doc: set) -> None:
    for i in issues:
        assert isinstance(i, Issue) and i.message.strip()
        assert i.node_id is None or isinstance(i.node_id, str)
        assert i.severity in ("error", "warning")


def run_everything(doc) -> None:
    try:
        g = parse_graph(doc)
    except GraphError as e:
        assert e.issues
        check_issues(e.issues, set())
        return
    a = analyze(g)
    check_issues(a.issues, {n.id for n in g.nodes})
    for i in a.issues:
        assert i.node_id is None or g.has_node(i.node_id), f"issue names a node not in the graph: {i}"


@SETTINGS
@given(document())
def test_random_documents_only_raise_studio_errors(doc):
    run_everything(doc)


VALID = {"format": "studio.graph/1", "name": "seed", "nodes": [
    {"id": "input", "type": "Input", "params": {"shape": [1, 12, 12]}},
    {"id": "conv1", "type": "Conv2d", "params": {"out_channels": 4, "kernel_size": 3, "padding": 1}},
    {"id": "relu1", "type": "ReLU"}, {"id": "pool", "type": "MaxPool2d", "params": {"kernel_size": 2}},
    {"id": "skip", "type": "Conv2d", "params": {"out_channels": 4, "kernel_size": 1, "stride": 2}},
    {"id": "add", "type": "Add"}, {"id": "flat", "type": "Flatten"},
    {"id": "fc", "type": "Linear", "params": {"out_features": 3}}],
    "edges": [{"source": "input", "target": "conv1"}, {"source": "conv1", "target": "relu1"},
              {"source": "relu1", "target": "pool"}, {"source": "input", "target": "skip"},
              {"source": "pool", "target": "add"}, {"source": "skip", "target": "add"},
              {"source": "add", "target": "flat"}, {"source": "flat", "target": "fc"}]}


@st.composite
def mutated(draw):
    doc = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 5))
        n = draw(st.sampled_from(doc["nodes"])) if doc["nodes"] else None
        if op == 0 and n is not None:
            n.setdefault("params", {})[draw(st.sampled_from(PARAM_NAMES))] = draw(values)
        elif op == 1 and n is not None:
            n["type"] = draw(st.sampled_from(TYPES))
        elif op == 2 and doc["edges"]:
            doc["edges"].pop(draw(st.integers(0, len(doc["edges"]) - 1)))
        elif op == 3 and len(doc["nodes"]) > 1:
            a, b = draw(st.sampled_from(doc["nodes"])), draw(st.sampled_from(doc["nodes"]))
            doc["edges"].append({"source": a["id"], "target": b["id"]})
        elif op == 4 and n is not None:
            doc["nodes"].remove(n)
        elif n is not None and n["type"] == "Input":
            n["params"]["shape"] = draw(shapes)
    return doc


@SETTINGS
@given(mutated())
def test_mutated_documents_only_raise_studio_errors(doc):
    run_everything(doc)


@settings(max_examples=max(50, EXAMPLES // 10), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(document(), mutated(), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))))
def test_check_command_never_crashes(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("g") / "g.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    assert main(["check", str(path)]) in (0, 1)
