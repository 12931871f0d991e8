"""The Build page in headless Chromium: add a layer from the palette, connect it by dragging on the
canvas, and see its shape. Screenshots go to tests/e2e/screenshots/."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from studio.templates import list_templates, load_template
from tests.e2e.conftest import (
    FLOW_IFRAME,
    LIVE,
    TIMEOUT_MS,
    click_until,
    commit_text,
    connect,
    fresh,
    page_report,
    screenshot,
    select_node,
    wait_idle,
)

pytestmark = pytest.mark.e2e

START = {"format": "studio.graph/1", "name": "e2e-mlp",
         "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 28, 28]}},
                   {"id": "flat", "type": "Flatten"},
                   {"id": "fc", "type": "Linear", "params": {"out_features": 10}}],
         "edges": [{"source": "input", "target": "flat"}, {"source": "flat", "target": "fc"}]}


def test_add_connect_and_see_the_shape(studio_server, page):
    (studio_server.workspace / "graphs").mkdir(exist_ok=True)
    (studio_server.workspace / "graphs" / "_autosave.json").write_text(json.dumps(START))
    page.goto(f"{studio_server.url}/Build")
    flow = page.frame_locator(FLOW_IFRAME)
    fc = flow.locator('.react-flow__node[data-id="fc"]')
    fc.wait_for()
    expect(fc).to_contain_text("Linear 10 -> (10,)")  # expect() retries: the canvas may be redrawing
    wait_idle(page)
    screenshot(page, "build_01_opened")

    # Add a layer from the palette (nothing selected: it lands unconnected, flagged).
    page.get_by_placeholder("conv, attention, norm...").fill("dropout")
    page.keyboard.press("Enter")
    wait_idle(page)
    page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Dropout", exact=True).click()
    new = flow.locator('.react-flow__node[data-id="dropout1"]')
    new.wait_for()
    wait_idle(page)
    expect(new).to_contain_text("⚠")
    expect(new).to_contain_text("?")
    screenshot(page, "build_02_added")

    # Connect fc -> dropout1 by dragging from fc's source handle to dropout1's target handle.
    connect(page, fc, new)
    _wait_node_text(page, "dropout1", "(10,)")
    wait_idle(page)
    expect(new).to_contain_text(re.compile(r"Dropout.*->\s*\(10,\)", re.S))
    expect(new).not_to_contain_text("⚠")
    expect(flow.locator(".react-flow__edge")).to_have_count(3)

    # Select it: the inspector shows its params, as the graph holds them.
    select_node(page, "dropout1")
    expect(page.get_by_label("p", exact=True)).to_have_value("0.5")  # retried: the form may still be redrawing
    expect(new).to_contain_text("Dropout 0.5")
    screenshot(page, "build_03_connected_and_selected")
    saved = json.loads((studio_server.workspace / "graphs" / "_autosave.json").read_text())
    assert {"source": "fc", "target": "dropout1"} in saved["edges"]

    # Edit a param in the inspector: the shapes downstream change at once.
    select_node(page, "fc")
    expect(fresh(page).get_by_label("out_features", exact=True)).to_have_value("10")
    commit_text(page, "out_features", "12", lambda ms: expect(fc).to_contain_text("Linear 12 -> (12,)", timeout=ms))
    _wait_node_text(page, "dropout1", "(12,)")
    page.get_by_role("tab", name="Summary").click()
    page.get_by_text("Parameters").first.wait_for()
    wait_idle(page)
    screenshot(page, "build_04_param_edited_summary")

    # Another edit, then two Undos clicked faster than the page answers. Streamlit merges a click that
    # arrives before the previous click's run has started, so one or two steps go back; what must never
    # happen is the undone edit coming back by itself (the box made for 14 sending 14 again) or Redo lost.
    commit_text(page, "out_features", "14", lambda ms: expect(fc).to_contain_text("Linear 14 -> (14,)", timeout=ms))
    wait_idle(page)
    page.get_by_role("button", name="Undo").click()
    page.get_by_role("button", name="Undo").click()
    expect(fc).to_contain_text(re.compile(r"Linear 1[02] -> "), timeout=TIMEOUT_MS)  # at least one went back
    wait_idle(page)
    shown = _settled_out_features(page)  # the canvas and the one live box agree
    assert shown in ("10", "12"), f"after two Undos fc shows {shown}: an undone edit came back"
    expect(page.get_by_role("button", name="Redo")).to_be_enabled()
    if shown == "12":  # the second click was merged into the first
        click_until(page, "Undo", lambda ms: expect(fc).to_contain_text("Linear 10 -> (10,)", timeout=ms))
    expect(fc).to_contain_text("Linear 10 -> (10,)", timeout=TIMEOUT_MS)
    wait_idle(page)
    expect(fresh(page).get_by_label("out_features", exact=True)).to_have_value("10", timeout=TIMEOUT_MS)
    expect(fc).to_contain_text("Linear 10 -> (10,)")
    # both edits are still there to redo, in order
    click_until(page, "Redo", lambda ms: expect(fc).to_contain_text("Linear 12 -> (12,)", timeout=ms))
    wait_idle(page)
    click_until(page, "Redo", lambda ms: expect(fc).to_contain_text("Linear 14 -> (14,)", timeout=ms))
    wait_idle(page)
    saved = json.loads((studio_server.workspace / "graphs" / "_autosave.json").read_text())
    assert next(n for n in saved["nodes"] if n["id"] == "fc")["params"]["out_features"] == 14

    # Right-click a node: its menu offers Delete (the component's own "Edit Node" editor is hidden: a node is
    # edited in the inspector); the node and its edge go, and Undo brings both back.
    new.click(button="right")
    delete = flow.get_by_role("button", name=re.compile(r"Delete Node"))
    expect(delete).to_be_visible()
    expect(flow.get_by_role("button", name=re.compile(r"Edit Node"))).to_be_hidden()
    screenshot(page, "build_05_node_menu")
    delete.click()
    expect(new).to_have_count(0, timeout=TIMEOUT_MS)
    expect(flow.locator(".react-flow__edge")).to_have_count(2, timeout=TIMEOUT_MS)
    caption = fresh(page).locator('[data-testid="stCaptionContainer"]').filter(has_text=" params · output ")
    expect(caption).to_contain_text("3 nodes", timeout=TIMEOUT_MS)  # the server has the edit (and saved it)
    wait_idle(page)
    saved = json.loads((studio_server.workspace / "graphs" / "_autosave.json").read_text())
    assert "dropout1" not in [n["id"] for n in saved["nodes"]] and len(saved["edges"]) == 2
    page.get_by_role("button", name="Undo").click()
    expect(new).to_contain_text(re.compile(r"Dropout.*->\s*\(14,\)", re.S), timeout=TIMEOUT_MS)
    expect(flow.locator(".react-flow__edge")).to_have_count(3, timeout=TIMEOUT_MS)


def _settled_out_features(page) -> str:
    """fc's out_features once the canvas label and the inspector's one live box show the same number."""
    return page.wait_for_function(f"""() => {{
        const f = document.querySelector('{FLOW_IFRAME}');
        const n = f && f.contentDocument && f.contentDocument.querySelector('.react-flow__node[data-id="fc"]');
        const live = '{LIVE} input[aria-label="out_features"]';
        const boxes = [...document.querySelectorAll(live)];
        const m = n && boxes.length === 1 && n.innerText.match(/Linear (\\d+) ->/);
        return m && m[1] === boxes[0].value ? m[1] : null; }}""", timeout=TIMEOUT_MS).json_value()


def _canvas_texts(page) -> dict:
    """{node id: its text} of every node on the canvas, and the number of edges, for a failure message."""
    return page.evaluate("""() => { const f = document.querySelector('iframe[title="streamlit_flow.streamlit_flow"]');
        const d = f && f.contentDocument; if (!d) return {};
        const nodes = [...d.querySelectorAll('.react-flow__node')];
        const out = Object.fromEntries(nodes.map(n => [n.dataset.id, n.innerText]));
        out.edges = d.querySelectorAll('.react-flow__edge').length; return out; }""")


def _wait_node_text(page, node_id: str, text: str) -> None:
    """Wait until the canvas node shows `text`; on timeout say what the canvas and the page showed."""
    try:
        page.wait_for_function(
            """([nid, text]) => { const f = document.querySelector('iframe[title="streamlit_flow.streamlit_flow"]');
                                  const n = f && f.contentDocument.querySelector(`.react-flow__node[data-id="${nid}"]`);
                                  return n && n.innerText.includes(text); }""", arg=[node_id, text], timeout=TIMEOUT_MS)
    except PlaywrightTimeout:
        raise AssertionError(f"node {node_id} did not show {text!r} in {TIMEOUT_MS // 1000} s; canvas: "
                             f"{_canvas_texts(page)}; {page_report(page)}") from None


def test_home_page_renders(studio_server, page):
    page.goto(studio_server.url)
    page.get_by_role("heading", name="Neural Studio").wait_for()
    page.get_by_text("Quick start").wait_for()
    wait_idle(page)
    screenshot(page, "home")
    assert page.locator('[data-testid="stException"]').count() == 0


def test_templates_gallery_opens_a_residual_model(studio_server, page):
    merge = next(t for t in list_templates() if any(n.type == "Add" for n in load_template(t.name).nodes))
    page.goto(f"{studio_server.url}/Build")
    flow = page.frame_locator(FLOW_IFRAME)
    flow.locator(".react-flow__node").first.wait_for()
    page.get_by_role("tab", name="Templates").click()
    page.get_by_text(merge.title, exact=True).wait_for()
    page.locator(f'.st-key-studio-build-template-{merge.name} button').click()
    graph = load_template(merge.name)
    add = next(n.id for n in graph.nodes if n.type == "Add")
    flow.locator(f'.react-flow__node[data-id="{add}"]').wait_for()
    wait_idle(page)
    assert flow.locator(".react-flow__node").count() == len(graph.nodes)
    assert flow.locator(".react-flow__edge").count() == len(graph.edges)
    expect(flow.locator(f'.react-flow__node[data-id="{add}"]')).not_to_contain_text("?")
    page.locator(FLOW_IFRAME).scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    screenshot(page, "build_05_template_residual")
