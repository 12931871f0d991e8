"""Blocks on the Build page in headless Chromium: group a node into a block, repeat the instance, see
its shape, edit the block's definition, undo, refresh: the graph and its block survive. Screenshots go to
tests/e2e/screenshots/."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import (
    FLOW_IFRAME,
    TIMEOUT_MS,
    choose,
    commit_text,
    connect,
    screenshot,
    scroll_to,
    select_node,
    wait_idle,
)

pytestmark = pytest.mark.e2e

START = {"format": "studio.graph/1", "name": "e2e-blocks",
         "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 28, 28]}},
                   {"id": "flat", "type": "Flatten"},
                   {"id": "fc", "type": "Linear", "params": {"out_features": 10}}],
         "edges": [{"source": "input", "target": "flat"}, {"source": "flat", "target": "fc"}]}


def test_group_repeat_undo_and_refresh(studio_server, page):
    (studio_server.workspace / "graphs").mkdir(exist_ok=True)
    (studio_server.workspace / "graphs" / "_autosave.json").write_text(json.dumps(START))
    page.goto(f"{studio_server.url}/Build")
    flow = page.frame_locator(FLOW_IFRAME)
    flow.locator('.react-flow__node[data-id="fc"]').wait_for()
    wait_idle(page)

    # Group fc into block "dense", instance "head".
    sidebar = page.locator('[data-testid="stSidebar"]')
    scroll_to(sidebar.get_by_text("Group nodes into a block"))
    sidebar.get_by_text("Group nodes into a block").click()
    choose(page, "Nodes", "fc")
    sidebar.get_by_label("Block name").fill("dense")
    sidebar.get_by_label("Instance id").fill("head")
    sidebar.get_by_label("Instance id").press("Enter")
    wait_idle(page)
    sidebar.get_by_role("button", name="Group into block").click()
    head = flow.locator('.react-flow__node[data-id="head"]')
    expect(head).to_contain_text("▣ dense -> (10,)", timeout=TIMEOUT_MS)
    wait_idle(page)
    screenshot(page, "blocks_01_grouped")

    # Repeat it three times: one node, its shape, each copy listed in the inspector.
    head.click()
    box = page.locator('input[aria-label="Repeat ×N"]')
    box.wait_for()
    box.click()
    box.press("Control+a")  # typed over the selection: the box is never empty, so one edit (repeat 3)
    box.type("3")
    box.press("Enter")
    expect(head).to_contain_text("▣ dense ×3 -> (10,)", timeout=TIMEOUT_MS)
    expect(page.get_by_text("head.2", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)
    screenshot(page, "blocks_02_repeated")

    saved = json.loads((studio_server.workspace / "graphs" / "_autosave.json").read_text())
    assert [n.get("repeat") for n in saved["nodes"]] == [None, None, 3]

    # Edit the definition in place: every copy follows (the instance's output shape changes).
    page.get_by_text("Edit the block's definition (every instance follows)").click()
    commit_text(page, "out_features", "12", lambda ms: expect(head).to_contain_text("▣ dense ×3 -> (12,)", timeout=ms))
    wait_idle(page)
    screenshot(page, "blocks_03_definition_edited")

    # Undo the definition edit, then the repeat, then refresh: the block and its instance come back from
    # the autosave.
    page.locator("h4").first.click()  # leave the box first: its blur must not ride on the Undo's rerun
    wait_idle(page)
    page.get_by_role("button", name="Undo").click()  # an on_click callback: not lost to a rerun
    expect(head).to_contain_text("▣ dense ×3 -> (10,)", timeout=TIMEOUT_MS)
    wait_idle(page)
    page.get_by_role("button", name="Undo").click()
    expect(head).to_contain_text("▣ dense -> (10,)", timeout=TIMEOUT_MS)
    wait_idle(page)
    page.reload()
    head = page.frame_locator(FLOW_IFRAME).locator('.react-flow__node[data-id="head"]')
    expect(head).to_contain_text("▣ dense -> (10,)", timeout=TIMEOUT_MS)
    saved = json.loads((studio_server.workspace / "graphs" / "_autosave.json").read_text())
    assert saved["format"] == "studio.graph/2" and list(saved["blocks"]) == ["dense"]
    assert [n["id"] for n in saved["nodes"]] == ["input", "flat", "head"] and "repeat" not in saved["nodes"][2]
    screenshot(page, "blocks_04_after_refresh")


CAT_BLOCK = {"format": "studio.graph/2", "name": "e2e-block-canvas",
             "blocks": {"cat2": {"params": {"width": 8}, "nodes": [
                 {"id": "x", "type": "Input"},
                 {"id": "fc1", "type": "Linear", "params": {"out_features": "$width"}},
                 {"id": "fc2", "type": "Linear", "params": {"out_features": "$width"}},
                 {"id": "cat", "type": "Concat"}],
                 "edges": [{"source": "x", "target": "fc1"}, {"source": "fc1", "target": "fc2"},
                           {"source": "fc2", "target": "cat"}, {"source": "fc1", "target": "cat"}]}},
             "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
                       {"id": "b", "type": "cat2"},
                       {"id": "head", "type": "Linear", "params": {"out_features": 3}}],
             "edges": [{"source": "input", "target": "b"}, {"source": "b", "target": "head"}]}


def test_open_a_block_on_the_canvas_draw_a_skip_into_it_go_back_and_undo(studio_server, page):
    (studio_server.workspace / "graphs").mkdir(exist_ok=True)
    (studio_server.workspace / "graphs" / "_autosave.json").write_text(json.dumps(CAT_BLOCK))
    page.goto(f"{studio_server.url}/Build")
    flow = page.frame_locator(FLOW_IFRAME)
    b = flow.locator('.react-flow__node[data-id="b"]')
    expect(b).to_contain_text("▣ cat2 -> (16,)", timeout=TIMEOUT_MS)  # fc2 (8) and fc1 (8) joined
    wait_idle(page)
    select_node(page, "b")
    page.get_by_role("button", name="Open on the canvas").click()

    # The canvas draws the block's layers with b's shapes under a header.
    cat = flow.locator('.react-flow__node[data-id="cat"]')
    expect(cat).to_contain_text("(16,)", timeout=TIMEOUT_MS)
    expect(page.get_by_text("Editing block 'cat2'")).to_be_visible()
    wait_idle(page)
    screenshot(page, "block_canvas_01_opened")

    # Drag from the block's input (x, drawn as x_1) to the Concat: a skip; the Concat now joins three.
    connect(page, flow.locator('.react-flow__node[data-id="x_1"]'), cat)
    expect(cat).to_contain_text("(20,)", timeout=TIMEOUT_MS)
    wait_idle(page)
    screenshot(page, "block_canvas_02_skip_added")
    saved = json.loads((studio_server.workspace / "graphs" / "_autosave.json").read_text())
    assert {"source": "x", "target": "cat"} in saved["blocks"]["cat2"]["edges"]

    # Back to the graph: the instance's shape follows, and so do the head's parameters (20*3+3).
    page.get_by_role("button", name="Back to the graph").click()
    expect(b).to_contain_text("▣ cat2 -> (20,)", timeout=TIMEOUT_MS)
    wait_idle(page)
    select_node(page, "head")
    expect(page.get_by_text("63 params")).to_be_visible(timeout=TIMEOUT_MS)
    screenshot(page, "block_canvas_03_back")

    page.get_by_role("button", name="Undo").click()
    expect(b).to_contain_text("▣ cat2 -> (16,)", timeout=TIMEOUT_MS)
    expect(page.get_by_text("51 params")).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)
    screenshot(page, "block_canvas_04_undone")
