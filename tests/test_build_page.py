"""The Build page under AppTest: the canvas, the inspector, undo, files, autosave and the palette.

The canvas component renders as an unknown element under AppTest: what was sent to the browser is
read from its JSON args, and a browser answer is faked by writing the component's value into the
session state (FIELD-NOTES.md).
"""

from __future__ import annotations

import html
import itertools
import json
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from components.build.canvas import FLOW_KEY
from components.build.inspector import parse_text
from components.build.palette import add_layer
from studio.analysis import analyze
from studio.codegen import to_code
from studio.graph import parse_graph
from studio.layers import REGISTRY, Param
from studio.templates import list_templates, load_template
from tests.conftest import chain

ROOT = Path(__file__).resolve().parents[1]
_clock = itertools.count(int(time.time() * 1000))


def small_cnn():
    return chain(("input", "Input", {"shape": [1, 28, 28]}), ("conv1", "Conv2d", {"out_channels": 8, "kernel_size": 3}),
                 ("relu1", "ReLU", None), ("flat", "Flatten", None), ("fc", "Linear", {"out_features": 10}),
                 name="small-cnn")


def start(workspace: Path, doc: dict | None = None) -> AppTest:
    """A session on the Build page; `doc` is put in the autosave first, as if left by a previous session."""
    if doc is not None:
        (workspace / "graphs").mkdir(parents=True, exist_ok=True)
        (workspace / "graphs" / "_autosave.json").write_text(json.dumps(doc))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/1_Build.py")
    return run(at)


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def flow_args(at: AppTest) -> dict:
    (el,) = at.get("component_instance")
    return json.loads(el.proto.json_args)


def node(at: AppTest, node_id: str) -> dict:
    return next(n for n in flow_args(at)["nodes"] if n["id"] == node_id)


def plain(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def label(at: AppTest, node_id: str) -> str:
    """The node's label as the user reads it (markdown escapes and HTML entities undone)."""
    text = re.sub(r"\\(.)", r"\1", node(at, node_id)["data"]["content"])
    return html.unescape(text)


def browser(at: AppTest, *, selected: str | None = None, nodes=None, edges=None) -> AppTest:
    """Answer as the browser would, with the component's whole state and a newer timestamp."""
    args = flow_args(at)
    at.session_state[FLOW_KEY] = {"nodes": args["nodes"] if nodes is None else nodes,
                                  "edges": args["edges"] if edges is None else edges,
                                  "selectedId": selected, "timestamp": next(_clock)}
    return run(at)


def current(at: AppTest):
    return at.session_state["studio.session.graph"]


def param_box(at: AppTest, node_id: str, name: str):
    """The inspector's text box of one param (its key is made anew when the value shown changes: widget_keys)."""
    prefix = f"studio.build.param.{node_id}.{name}."
    (box,) = [t for t in [*at.text_input, *at.number_input] if t.key and t.key.startswith(prefix)]
    return box


def type_param(at: AppTest, node_id: str, name: str, text: str) -> None:
    """Type into a param's box: an int param has a number box (bounded), the others a text box."""
    box = param_box(at, node_id, name)
    box.set_value(int(text)) if box.type == "number_input" else box.input(text)


def rename_box(at: AppTest):
    (box,) = [t for t in at.text_input if t.key and t.key.startswith("studio.build.rename.")]
    return box


def show_tab(at: AppTest, label: str) -> AppTest:
    at.session_state["studio.build.tab"] = label
    return run(at)


# ---- the editing loop ----------------------------------------------------------------------------

def test_click_edit_param_updates_shape_then_invalid_value_flags_node_and_undo_restores(_workspace):
    at = start(_workspace, small_cnn())
    assert "Conv2d 8@3x3 -> (8, 26, 26)" in label(at, "conv1")
    browser(at, selected="conv1")
    assert at.session_state["studio.build.selected"] == "conv1"

    type_param(at, "conv1", "out_channels", "16")
    run(at)
    assert "Conv2d 16@3x3 -> (16, 26, 26)" in label(at, "conv1")
    assert "(16, 26, 26)" in label(at, "relu1")  # downstream shapes follow at once

    seen = {param_box(at, "conv1", "kernel_size").key}
    type_param(at, "conv1", "kernel_size", "40")
    run(at)
    seen.add(param_box(at, "conv1", "kernel_size").key)
    conv = node(at, "conv1")
    assert "⚠" in label(at, "conv1") and "-> ?" in label(at, "conv1")
    assert "#dc2626" in conv["style"]["border"]
    assert any("kernel_size=40 is larger than its input" in plain(e.value) for e in at.error)
    assert "⚠" not in label(at, "relu1")  # only the broken node is flagged

    at.button(key="studio.build.undo").click()
    run(at)
    conv = node(at, "conv1")
    assert "⚠" not in label(at, "conv1") and "#dc2626" not in conv["style"]["border"]
    assert "(16, 26, 26)" in label(at, "conv1")
    assert param_box(at, "conv1", "kernel_size").value == "3"  # the form follows undo
    # ... in a widget never seen before: the browser would start one it saw from what was typed in it (40)
    assert param_box(at, "conv1", "kernel_size").key not in seen
    at.button(key="studio.build.redo").click()
    run(at)
    assert "⚠" in label(at, "conv1")


def test_an_int_param_out_of_its_bounds_still_shows_in_a_box_and_is_flagged(_workspace):
    doc = small_cnn()
    next(n for n in doc["nodes"] if n["id"] == "fc")["params"]["out_features"] = 0  # a hand-edited file
    at = start(_workspace, doc)
    browser(at, selected="fc")
    box = param_box(at, "fc", "out_features")
    assert box.value == 0 and box.min is None  # bounded, Streamlit would refuse the page
    assert "⚠" in label(at, "fc")
    box.set_value(12)
    run(at)
    assert current(at).node("fc").params["out_features"] == 12 and param_box(at, "fc", "out_features").min == 1


def test_open_template_from_gallery_and_change_a_param(_workspace):
    t = next(t for t in list_templates() if any(n.type == "Conv2d" for n in load_template(t.name).nodes))
    at = start(_workspace)
    show_tab(at, "Templates")
    at.button(key=f"studio.build.template.{t.name}").click()
    run(at)
    graph = current(at)
    assert at.session_state["studio.session.template"] == t.name
    (said,) = [s.value for s in at.success]  # in the message slot, not a toast
    assert said.startswith(f"Opened template {t.name}."), said
    assert not at.toast
    assert at.session_state["studio.session.dataset_id"] == t.dataset
    assert at.session_state["studio.session.dataset_options"] == t.dataset_options
    conv = next(n for n in graph.nodes if n.type == "Conv2d")
    before = analyze(graph).nodes[conv.id].output_shape
    browser(at, selected=conv.id)
    box = param_box(at, conv.id, "out_channels")
    assert box.type == "number_input" and box.min == 1  # an int param: a number box with its bounds
    box.set_value(box.value + 3)
    run(at)
    after = analyze(current(at)).nodes[conv.id].output_shape
    assert after[0] == before[0] + 3
    assert str(after) in label(at, conv.id)


def test_browser_edits_connect_move_delete_and_stale_answers_are_ignored(_workspace):
    doc = small_cnn()
    doc["nodes"].append({"id": "drop", "type": "Dropout"})
    at = start(_workspace, doc)
    assert any("is not connected" in i.message for i in analyze(current(at)).issues)
    args = flow_args(at)
    nodes = [dict(n, position={"x": 500, "y": 42}) if n["id"] == "drop" else n for n in args["nodes"]]
    # The user connects fc -> drop: the component adds the edge with its own id format.
    edges = args["edges"] + [{"id": "st-flow-edge_fc-drop", "source": "fc", "target": "drop"}]
    browser(at, nodes=nodes, edges=edges, selected="st-flow-edge_fc-drop")
    g = current(at)
    assert ("fc", "drop") in {(e.source, e.target) for e in g.edges}
    assert g.node("drop").position == {"x": 500, "y": 42}
    assert analyze(g).ok and "(10,)" in label(at, "drop")
    assert at.session_state["studio.build.selected_edge"] == ("fc", "drop")

    # A rerun that returns the same (stale) value changes nothing.
    at.session_state[FLOW_KEY] = dict(at.session_state[FLOW_KEY], nodes=[], edges=[])
    run(at)
    assert len(current(at).nodes) == 6

    # Deleting a node from its context menu removes it and its edges.
    args = flow_args(at)
    browser(at, nodes=[n for n in args["nodes"] if n["id"] != "drop"],
            edges=[e for e in args["edges"] if "drop" not in (e["source"], e["target"])])
    assert not current(at).has_node("drop") and analyze(current(at)).ok
    at.button(key="studio.build.undo").click()
    run(at)
    assert current(at).has_node("drop")


def test_an_old_picture_answering_with_a_template_open_deletes_nothing(_workspace):
    """Issue 18: the browser's answer about the old graph arrives in the same rerun as a template's
    Open (its callback runs before the page reads the canvas). It must not read as deleting every
    node the two graphs do not share (only `input` was left)."""
    at = start(_workspace, small_cnn())
    browser(at)
    show_tab(at, "Templates")
    old_picture = flow_args(at)
    lstm = load_template("lstm_classifier")
    # In one rerun: the component's late answer (the old picture, a newer timestamp) and the click.
    at.session_state[FLOW_KEY] = {"nodes": old_picture["nodes"], "edges": old_picture["edges"],
                                  "selectedId": None, "timestamp": next(_clock)}
    at.button(key="studio.build.template.lstm_classifier").click()
    run(at)
    assert [n.id for n in current(at).nodes] == [n.id for n in lstm.nodes]
    assert len(current(at).edges) == len(lstm.edges)
    # The canvas is pushed the template (above the answer's timestamp), and once the browser shows it,
    # its answers are edits again.
    args = flow_args(at)
    assert args["timestamp"] > at.session_state["studio.build.browser_ts"]
    assert {n["id"] for n in args["nodes"]} == {n.id for n in lstm.nodes}
    browser(at)
    run(at)
    assert [n.id for n in current(at).nodes] == [n.id for n in lstm.nodes]
    # The old graph is one undo away.
    at.button(key="studio.build.undo").click()
    run(at)
    assert [n.id for n in current(at).nodes] == ["input", "conv1", "relu1", "flat", "fc"]


def test_an_answer_from_before_a_new_layer_does_not_delete_it(_workspace):
    """A layer added from the palette is not in the browser's answer that was already on its way."""
    at = start(_workspace, small_cnn())
    browser(at, selected="conv1")
    at.sidebar.button(key="studio.build.add.BatchNorm2d").click()
    run(at)
    assert current(at).has_node("batchnorm2d1")
    stale = flow_args(at)
    stale_nodes = [dict(n, data=dict(n["data"], studio_gen=n["data"]["studio_gen"] - 1))
                   for n in stale["nodes"] if n["id"] != "batchnorm2d1"]
    browser(at, nodes=stale_nodes, edges=[e for e in stale["edges"] if "batchnorm2d1" not in e["id"]])
    assert current(at).has_node("batchnorm2d1") and analyze(current(at)).ok
    # The same deletion made on the newest picture is the user's: it is applied.
    args = flow_args(at)
    browser(at, nodes=[n for n in args["nodes"] if n["id"] != "batchnorm2d1"],
            edges=[e for e in args["edges"] if "batchnorm2d1" not in (e["source"], e["target"])])
    assert not current(at).has_node("batchnorm2d1")


def test_push_only_when_the_picture_changes(_workspace):
    at = start(_workspace, small_cnn())
    browser(at)  # the browser adopted the first push and answered
    run(at)
    assert flow_args(at)["timestamp"] == 0  # nothing new: the component keeps its own state
    at.button(key="studio.build.layout_right").click()
    run(at)
    args = flow_args(at)
    assert args["timestamp"] > at.session_state["studio.build.browser_ts"] - 1
    assert {n["targetPosition"] for n in args["nodes"] if n["id"] != "input"} == {"left"}
    xs = [node(at, nid)["position"]["x"] for nid in ("input", "conv1", "relu1", "flat", "fc")]
    assert xs == sorted(xs) and len(set(xs)) == 5


def test_inspector_rename_duplicate_delete(_workspace):
    at = start(_workspace, small_cnn())
    browser(at, selected="conv1")
    rename_box(at).input("2conv")
    run(at)
    assert any("is not a Python identifier" in plain(e.value) for e in at.error)
    assert current(at).has_node("conv1")
    rename_box(at).input("features")
    run(at)
    g = current(at)
    assert g.has_node("features") and g.inputs_of("relu1") == ["features"]
    assert at.session_state["studio.build.selected"] == "features"

    at.button(key="studio.build.duplicate").click()
    run(at)
    g = current(at)
    twin = at.session_state["studio.build.selected"]
    assert g.node(twin).type == "Conv2d" and g.node(twin).params == g.node("features").params
    assert g.inputs_of(twin) == ["input"]
    at.button(key="studio.build.delete").click()
    run(at)
    assert not current(at).has_node(twin) and analyze(current(at)).ok


def test_issue_list_names_the_node_and_selects_it(_workspace):
    doc = small_cnn()
    doc["nodes"][1]["params"]["kernel_size"] = 30
    at = start(_workspace, doc)
    assert at.tabs[0].label == "Issues (1)"
    at.button(key="studio.build.issue.0").click()
    run(at)
    assert at.session_state["studio.build.selected"] == "conv1"
    assert "boxShadow" in node(at, "conv1")["style"]


# ---- files ---------------------------------------------------------------------------------------

def test_invalid_upload_leaves_the_graph_untouched_and_a_valid_one_opens(_workspace):
    at = start(_workspace, small_cnn())
    before = current(at).to_dict()
    show_tab(at, "Files")
    bad = {"format": "studio.graph/1", "name": "bad", "nodes": [{"id": "1x", "type": "Linear"}], "edgez": []}
    at.file_uploader[0].set_value(("bad.json", json.dumps(bad).encode(), "application/json"))
    run(at)
    assert current(at).to_dict() == before
    text = plain(" ".join(e.value for e in at.error))
    assert "not a valid graph" in text and "unchanged" in text and "edgez" in text

    at.file_uploader[0].set_value(("broken.json", b"{not json", "application/json"))
    run(at)
    assert current(at).to_dict() == before
    assert any("not valid JSON" in plain(e.value) for e in at.error)

    good = chain(("input", "Input", {"shape": [4]}), ("fc", "Linear", {"out_features": 3}), name="tiny")
    at.file_uploader[0].set_value(("tiny.json", json.dumps(good).encode(), "application/json"))
    run(at)
    assert [n.id for n in current(at).nodes] == ["input", "fc"]
    assert "Linear 3 -> (3,)" in label(at, "fc")


def test_hostile_strings_are_escaped_on_the_canvas(_workspace):
    doc = small_cnn()
    doc["nodes"][2]["type"] = "<img src=x onerror=alert(1)>"
    at = start(_workspace, doc)
    content = node(at, "relu1")["data"]["content"]
    assert "<img" not in content and "&lt;img" in content
    assert "#dc2626" in node(at, "relu1")["style"]["border"]  # unknown type: an issue on that node


def test_save_open_and_new(_workspace):
    at = start(_workspace, small_cnn())
    show_tab(at, "Files")
    at.text_input(key="studio.build.save_name").input("my-cnn")
    at.button(key="studio.build.save").click()
    run(at)
    saved = _workspace / "graphs" / "my-cnn.json"
    assert saved.exists() and json.loads(saved.read_text())["name"] == "my-cnn"
    at.button(key="studio.build.new").click()
    run(at)
    assert [n.type for n in current(at).nodes] == ["Input"]
    at.button(key="studio.build.open.my-cnn").click()
    run(at)
    assert len(current(at).nodes) == 5
    at.text_input(key="studio.build.save_name").input("../evil")
    at.button(key="studio.build.save").click()
    run(at)
    assert any("cannot be a file name" in plain(e.value) for e in at.error)
    assert not (_workspace / "evil.json").exists()


def test_autosave_restores_the_graph_in_a_new_session(_workspace):
    at = start(_workspace, small_cnn())
    browser(at, selected="fc")
    type_param(at, "fc", "out_features", "7")
    run(at)
    again = start(_workspace)  # a browser refresh: a new session, no doc written this time
    assert current(again).node("fc").params["out_features"] == 7
    assert "Linear 7 -> (7,)" in label(again, "fc")


def test_train_button_goes_to_the_train_page_with_the_graph_and_dataset(_workspace):
    at = start(_workspace, small_cnn())
    at.session_state["studio.session.dataset_id"] = "digits"
    at.button(key="studio.build.train").click()
    at.run()
    # The Train page now runs: the canvas is gone, the choice travelled.
    assert at.title[0].value == "Train" and not at.get("component_instance")
    assert at.session_state["studio.session.dataset_id"] == "digits"
    assert at.session_state["studio.session.graph"].node("fc").params == {"out_features": 10}


def test_summary_and_code_tabs(_workspace):
    at = start(_workspace, small_cnn())
    show_tab(at, "Summary")
    df = at.dataframe[0].value
    assert list(df["node"]) == ["input", "conv1", "relu1", "flat", "fc", "Total"]
    total = analyze(parse_graph(small_cnn())).total_params
    assert df["params"].iloc[-1] == total == 8 * 9 + 8 + 8 * 26 * 26 * 10 + 10
    assert df["output shape"].iloc[1] == "(8, 26, 26)"
    show_tab(at, "Code")
    labels = [b.label for b in at.get("download_button")]
    assert "Graph JSON" in labels
    assert at.code[0].value.rstrip() == to_code(current(at)).rstrip()
    assert "Python code" in [b.label for b in at.get("download_button")]
    at.button(key="studio.build.make_torchscript").click()
    run(at)
    labels = [b.label for b in at.get("download_button")]
    assert "TorchScript (legacy) (.pt)" in labels and "Build ONNX" in [b.label for b in at.button]


def test_the_open_tab_stays_open_when_the_issue_count_changes(_workspace):
    at = start(_workspace, small_cnn())
    show_tab(at, "Summary")
    assert at.tabs[0].label == "Issues (0)" and len(at.dataframe) == 1
    browser(at, selected="conv1")
    type_param(at, "conv1", "kernel_size", "30")  # larger than the 28x28 input: one issue
    run(at)
    assert at.tabs[0].label == "Issues (1)"
    assert len(at.dataframe) == 1 and at.session_state["studio.build.tab"] == "Summary"  # still on Summary


# ---- palette -------------------------------------------------------------------------------------

def test_every_palette_type_can_be_added_and_edited(_workspace):
    at = start(_workspace, chain(("input", "Input", {"shape": [4]}), name="empty"))
    for type_name in REGISTRY:
        at.button(key=f"studio.build.add.{type_name}").click()
        run(at)
        nid = at.session_state["studio.build.selected"]
        assert current(at).node(nid).type == type_name
        assert label(at, nid).startswith(f"**{nid}**")
    assert len(current(at).nodes) == 1 + len(REGISTRY)


def test_palette_search_and_add_after_selection(_workspace):
    at = start(_workspace, small_cnn())
    at.text_input(key="studio.build.palette_search").input("batchnorm")
    run(at)
    assert {b.label for b in at.sidebar.button} == {"BatchNorm1d", "BatchNorm2d"}
    browser(at, selected="conv1")
    at.sidebar.button(key="studio.build.add.BatchNorm2d").click()
    run(at)
    g = current(at)
    assert g.inputs_of("batchnorm2d1") == ["conv1"] and g.inputs_of("relu1") == ["batchnorm2d1"]
    assert analyze(g).ok


def test_an_added_layer_takes_the_sizes_of_the_nearest_of_its_type_and_says_what_it_costs(_workspace):
    at = start(_workspace, chain(("input", "Input", {"shape": [4]}), ("fc1", "Linear", {"out_features": 16}),
                                 ("relu", "ReLU", None), ("fc2", "Linear", {"out_features": 3}), name="mlp"))
    browser(at, selected="relu")
    at.sidebar.button(key="studio.build.add.Linear").click()
    run(at)
    nid = at.session_state["studio.build.selected"]
    g = current(at)
    assert g.inputs_of(nid) == ["relu"] and g.node(nid).params == {"out_features": 16}  # fc1's, not the default
    assert analyze(g).nodes[nid].params == 16 * 16 + 16
    assert f"Added {nid} (Linear, sizes from fc1): +272 parameters." in [c.value for c in at.sidebar.caption]


def test_add_layer_inserts_into_the_chain_and_shifts_downstream():
    g = parse_graph(small_cnn())
    for i, n in enumerate(g.nodes):
        n.position = {"x": 0.0, "y": 100.0 * i}
    g2, nid = add_layer(g, "Dropout", "relu1")
    assert g2.inputs_of(nid) == ["relu1"] and g2.inputs_of("flat") == [nid]
    assert g2.node("flat").position["y"] > g.node("flat").position["y"]
    g3, nid3 = add_layer(g, "Add", "fc")  # a merge after the output: appended, not inserted
    assert g3.inputs_of(nid3) == ["fc"]
    g4, nid4 = add_layer(g, "Input", "conv1")  # an Input never takes an input
    assert g4.inputs_of(nid4) == []


def test_parse_text_helper():
    size = Param("kernel_size", "size", 3, "", length=2)
    assert parse_text(size, "3") == 3 and parse_text(size, "3, 5") == [3, 5] and parse_text(size, "(3 5)") == [3, 5]
    with pytest.raises(ValueError, match="kernel_size must be an integer or 2 integers separated by commas, got 'x'"):
        parse_text(size, "x")
    pad = Param("padding", "padding", 0, "", length=2)
    assert parse_text(pad, "same") == "same"
    assert parse_text(Param("shape", "ints", [1], ""), "7") == [7]
    assert parse_text(Param("stride", "size", None, "", optional=True), " ") is None


def _undo_depth_script():
    import streamlit as st

    from components import session

    graph = session.current_graph()
    for i in range(120):
        graph = graph.copy()
        graph.name = f"v{i}"
        session.set_current_graph(graph)
    steps = 0
    while session.undo():
        steps += 1
    st.write(f"undone {steps} back to {session.current_graph().name}")
    redone = 0
    while session.redo():
        redone += 1
    st.write(f"redone {redone} to {session.current_graph().name}")


def test_undo_keeps_at_least_fifty_steps(_workspace):
    at = AppTest.from_function(_undo_depth_script, default_timeout=60)
    run(at)
    assert at.markdown[0].value == "undone 100 back to v19"
    assert at.markdown[1].value == "redone 100 to v119"


def _refresh(workspace: Path, tab: str) -> AppTest:
    """A browser refresh of the tab whose URL carries `?tab=<tab>`."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["tab"] = tab
    at.run()
    at.switch_page("pages/1_Build.py")
    return run(at)


def test_two_tabs_keep_their_own_autosave_and_a_refresh_finds_its_own(_workspace):
    first = start(_workspace, small_cnn())
    tab_a = first.session_state["studio.session.tab"]
    browser(first, selected="fc")
    type_param(first, "fc", "out_features", "7")
    run(first)
    second = start(_workspace)  # another tab, opened later: it starts from the newest work
    assert second.session_state["studio.session.tab"] != tab_a
    assert current(second).node("fc").params["out_features"] == 7
    browser(second, selected="fc")
    type_param(second, "fc", "out_features", "5")
    run(second)
    again = _refresh(_workspace, tab_a)  # the first tab refreshed: its own graph, not the other tab's
    assert current(again).node("fc").params["out_features"] == 7
    # ... and it is told that another tab has newer work, and can take it (undoably).
    assert any("Another tab saved newer work" in m.value for m in again.markdown)
    again.button(key="studio.build.newer_open").click()
    run(again)
    assert current(again).node("fc").params["out_features"] == 5
    again.button(key="studio.build.undo").click()
    run(again)
    assert current(again).node("fc").params["out_features"] == 7


def test_a_replaced_graph_stays_one_undo_away_after_a_refresh(_workspace):
    at = start(_workspace, small_cnn())
    tab = at.session_state["studio.session.tab"]
    show_tab(at, "Templates")
    at.button(key="studio.build.template.lstm_classifier").click()
    run(at)
    assert current(at).has_node("lstm")
    again = _refresh(_workspace, tab)
    assert current(again).has_node("lstm")
    again.button(key="studio.build.undo").click()
    run(again)
    assert [n.id for n in current(again).nodes] == ["input", "conv1", "relu1", "flat", "fc"]


def test_undo_and_redo_survive_a_refresh(_workspace):
    at = start(_workspace, small_cnn())
    tab = at.session_state["studio.session.tab"]
    browser(at, selected="fc")
    for value in ("7", "8", "9"):
        type_param(at, "fc", "out_features", value)
        run(at)
    at.button(key="studio.build.undo").click()
    run(at)
    again = _refresh(_workspace, tab)  # the history went with the autosave (it was lost on refresh)
    assert current(again).node("fc").params["out_features"] == 8
    again.button(key="studio.build.redo").click()
    run(again)
    assert current(again).node("fc").params["out_features"] == 9
    for expected in (8, 7, 10):  # small_cnn's own 10
        again.button(key="studio.build.undo").click()
        run(again)
        assert current(again).node("fc").params["out_features"] == expected
    assert again.button(key="studio.build.undo").disabled


def test_an_unreadable_autosave_is_kept_aside_before_the_seed_graph_replaces_it(_workspace):
    doc = small_cnn()
    doc["nodes"][0]["position"] = {"x": float("nan"), "y": 0}  # written by an older studio, refused today
    at = start(_workspace, doc)
    assert not at.exception, [e.message for e in at.exception]
    kept = list((_workspace / "graphs").glob("unreadable-autosave-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text(), parse_constant=lambda c: c) == \
        json.loads(json.dumps(doc), parse_constant=lambda c: c)
    assert any(f"kept as graphs/{kept[0].name}" in w.value for w in [*at.warning, *at.info, *at.markdown, *at.caption])


@pytest.mark.parametrize("chosen, kept", [("fashion_mnist", True), ("digits", False)])
def test_opening_a_template_keeps_the_users_dataset_when_the_template_fits_it(_workspace, chosen, kept):
    """The mlp template (MNIST's 1x28x28 and 10 classes) fits Fashion-MNIST as it is: the user's choice
    stays. It does not fit digits (8x8): it takes MNIST back, and says so (it did that silently)."""
    meta = _workspace / "graphs" / "_autosave.meta.json"
    at = start(_workspace, {"format": "studio.graph/1", "name": "mine", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [4]}}], "edges": []})
    meta.write_text(json.dumps({"dataset_id": chosen}))
    at = start(_workspace)  # a session that starts on the user's dataset
    assert at.session_state["studio.session.dataset_id"] == chosen
    show_tab(at, "Templates")
    at.button(key="studio.build.template.mlp").click()
    run(at)
    (said,) = [s.value.replace("\\", "") for s in at.success]
    assert at.session_state["studio.session.dataset_id"] == (chosen if kept else "mnist")
    if kept:
        assert f"It fits your dataset {chosen}, which stays chosen." in said, said
    else:
        assert f"It does not fit your dataset {chosen}" in said and "so it uses its own, mnist" in said, said


def _commit_twice():
    import streamlit as st

    from components import session
    from studio.graph_edit import with_param

    graph = session.current_graph()
    node = next(n for n in graph.nodes if n.type == "Linear")
    if "done" not in st.session_state:
        st.session_state["done"] = True
        edited = with_param(graph, node.id, "out_features", 77)
        session.set_current_graph(edited)
        session.set_current_graph(with_param(edited, node.id, "out_features", 77))  # the same value again
    st.write(f"depth {session.undo_depth()}")


def test_an_edit_that_changes_nothing_is_no_undo_step(_workspace):
    at = AppTest.from_function(_commit_twice, default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.markdown[0].value == "depth 1"  # one Undo takes the edit back (the second step did nothing)
