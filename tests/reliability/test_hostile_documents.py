"""Graph documents with values no graph can use: NaN and Infinity, integers past int64 or past
Python's 4,300-digit limit, nesting hundreds deep, and sizes that would become terabytes. Whatever
the place in the document, parsing, the `check` command and the Build page's upload give only the
studio's own GraphError (or analysis issues), never ValueError, RecursionError or a traceback."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.build.graph_files import parse_upload
from studio.__main__ import main
from studio.analysis import analyze
from studio.errors import GraphError
from studio.graph import loads_graph, parse_graph, value_problem

BASE = {"format": "studio.graph/1", "name": "t", "nodes": [
    {"id": "input", "type": "Input", "params": {"shape": [1, 8, 8]}, "position": {"x": 0, "y": 0}},
    {"id": "flat", "type": "Flatten", "position": {"x": 0, "y": 80}},
    {"id": "fc", "type": "Linear", "params": {"out_features": 3}, "position": {"x": 0, "y": 160}}],
    "edges": [{"source": "input", "target": "flat"}, {"source": "flat", "target": "fc"}]}


def nested(depth: int):
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


HOSTILE = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(min_value=2**63, max_value=10**80) | st.integers(min_value=-(10**80), max_value=-(2**63)),
    st.integers(20, 700).map(nested),
    st.integers(20, 700).map(lambda d: json.loads("[" * d + "]" * d)),
)


def places(doc, path=()):
    """Every (container, key) in the document where a value can be replaced."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield doc, k
            yield from places(v)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield doc, i
            yield from places(v)


def with_value(place: int, value):
    doc = json.loads(json.dumps(BASE))
    spots = list(places(doc))
    container, key = spots[place % len(spots)]
    container[key] = value
    return doc


def as_json(doc) -> str:
    return json.dumps(doc)  # NaN/Infinity written as JSON's NaN/Infinity tokens, as a hostile file would


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(place=st.integers(0, 200), value=HOSTILE)
def test_a_hostile_value_anywhere_is_a_graph_error_from_parse_load_and_upload(place, value):
    doc = with_value(place, value)
    with pytest.raises(GraphError):
        parse_graph(doc)
    with pytest.raises(GraphError):
        loads_graph(as_json(doc))
    graph, issues = parse_upload(as_json(doc).encode())
    assert graph is None and issues and all(isinstance(i.message, str) and i.message for i in issues)


@SETTINGS
@given(place=st.integers(0, 200), value=st.floats(allow_nan=False, allow_infinity=False)
       | st.integers(-(2**63) + 1, 2**63 - 1))
def test_finite_numbers_anywhere_give_a_graph_or_studio_errors_only(place, value):
    doc = with_value(place, value)
    try:
        graph = parse_graph(doc)
    except GraphError:
        return
    analyze(graph)  # issues, never an exception


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(place=st.integers(0, 200), value=HOSTILE)
def test_the_check_command_reports_a_hostile_document_as_an_error_line(tmp_path_factory, capsys, place, value):
    path = tmp_path_factory.mktemp("doc") / "g.json"
    path.write_text(as_json(with_value(place, value)))
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    assert "graph:" in out.out or "error:" in out.err  # one line per issue


def test_the_literal_cases_of_the_report():
    with pytest.raises(GraphError, match=r"holds NaN; every number in a graph must be finite"):
        loads_graph(as_json(BASE).replace('"x": 0', '"x": NaN', 1))
    with pytest.raises(GraphError, match=r"position'\]\['x'\] is inf"):
        loads_graph(as_json(BASE).replace('"x": 0', '"x": 1e999', 1))
    with pytest.raises(GraphError, match=r"integer literal thousands of digits long"):
        loads_graph(as_json(BASE).replace('"x": 0', '"x": 1' + "0" * 5000, 1))
    with pytest.raises(GraphError, match=r"nested more than 16 levels deep"):
        parse_graph(with_value(3, nested(600)))
    assert value_problem(BASE) is None


@pytest.mark.parametrize(("shape", "message"), [
    ([-5], r"shape=\[-5\] has the entry -5, which is out of range; expected shape >= 1"),
    ([0], r"has the entry 0, which is out of range; expected shape >= 1"),
    ([2**40], r"has the entry 1,099,511,627,776; entries are at most 2,147,483,647"),
    ([2] * 100, r"shape has 100 entries; at most 8 are allowed"),
    ([10**6, 10**6], r"holds 1,000,000,000,000 values per sample, more than the 16,777,216 allowed"),
])
def test_input_shapes_that_would_become_terabytes_are_issues(shape, message):
    doc = json.loads(json.dumps(BASE))
    doc["nodes"][0]["params"]["shape"] = shape
    issues = [i for i in analyze(parse_graph(doc)).issues if i.node_id == "input"]
    assert issues and issues[0].param == "shape"
    assert any(re.search(message, i.message) for i in issues), [i.message for i in issues]


def test_positional_encoding_is_bounded_and_its_buffer_counted_in_the_size_budget():
    doc = {"format": "studio.graph/1", "name": "pe", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [8, 16]}},
        {"id": "pe", "type": "PositionalEncoding", "params": {"max_len": 30_000_000}}],
        "edges": [{"source": "input", "target": "pe"}]}
    assert [i.message for i in analyze(parse_graph(doc)).issues] == [
        "max_len=30000000 is out of range; expected max_len <= 65536"]
    doc["nodes"][1]["params"]["max_len"] = 65_536
    issues = analyze(parse_graph(doc), param_budget=1_000_000).issues
    assert len(issues) == 1 and issues[0].node_id == "pe"
    assert "0 parameters and 1,048,576 buffer values" in issues[0].message and "max_len" in issues[0].message
    assert analyze(parse_graph(doc)).ok  # within the default budget


@pytest.mark.parametrize("node, shape", [
    ({"type": "AdaptiveAvgPool1d", "params": {"output_size": 10**9}}, [4, 8]),
    ({"type": "AdaptiveAvgPool2d", "params": {"output_size": [100_000, 100_000]}}, [3, 8, 8]),
])
def test_a_layer_whose_one_sample_output_could_never_fit_is_an_issue_not_an_out_of_memory(node, shape):
    """AdaptiveAvgPool1d(output_size=10**9) used to pass analysis and fail in training with the advice
    to try a smaller batch size: no batch of one fits."""
    doc = {"format": "studio.graph/1", "name": "big", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": shape}}, {"id": "big", **node}],
        "edges": [{"source": "input", "target": "big"}]}
    try:
        issues = analyze(parse_graph(doc)).issues
    except GraphError as e:  # a param bound may refuse it first: also the studio's own words
        issues = e.issues
    assert issues and issues[0].node_id in ("big", None), issues
    assert any("one sample's output may take" in i.message or "out of range" in i.message for i in issues), issues
