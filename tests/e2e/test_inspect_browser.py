"""The Inspect and Compare pages in headless Chromium on short finished runs (test_inspect.make_runs): feature
maps of a conv layer with the step slider, attention with token labels, the confusion matrix, live
inference on a dataset sample and on a stroke drawn with the mouse, and the graph diff of two runs.
Screenshots go to tests/e2e/screenshots/inspect_*.png."""

from __future__ import annotations

import math

import pytest

from tests.e2e.conftest import choose, screenshot, scroll_to, wait_idle
from tests.test_inspect import make_runs

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runs(studio_server):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(studio_server.workspace))  # the server's own store and run folders
        return make_runs()


def view(page, name: str) -> None:
    page.get_by_role("radiogroup", name="View").get_by_text(name, exact=True).click()
    wait_idle(page)


def image_captions(page) -> list[str]:
    return page.locator('[data-testid="stImageCaption"]').all_inner_texts()


def draw_ring(page, box: dict, radius_fraction: float = 0.3) -> None:
    """One closed freehand stroke around the centre of the canvas whose bounding box is `box` (page px)."""
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    r = radius_fraction * box["width"]
    page.mouse.move(cx + r, cy)
    page.mouse.down()
    for i in range(1, 41):
        a = 2 * math.pi * i / 40
        page.mouse.move(cx + r * math.cos(a), cy + r * math.sin(a))
    page.mouse.up()


def test_inspect_and_compare_pages(studio_server, runs, page):
    page.goto(f"{studio_server.url}/Inspect")
    page.locator('input[aria-label="Run"]').wait_for(timeout=60_000)  # the first page run imports torch
    wait_idle(page)
    choose(page, "Run", runs["cnn-a"])
    choose(page, "Layer", "conv1")
    page.wait_for_function("[...document.querySelectorAll('[data-testid=\"stImageCaption\"]')]"
                           ".some(e => e.innerText.startsWith('conv1 at step 40'))")
    # Both images drawn (decoded: an <img> reports naturalWidth 0 until its bytes have arrived).
    page.wait_for_function("() => { const imgs = [...document.querySelectorAll('[data-testid=\"stImage\"] img')];"
                           " return imgs.length === 2 && imgs.every(e => e.complete && e.naturalWidth > 0); }")
    screenshot(page, "inspect_01_feature_maps")

    page.locator('input[type="range"][aria-label="Probe step"]').focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("[...document.querySelectorAll('[data-testid=\"stImageCaption\"]')]"
                           ".some(e => e.innerText.startsWith('conv1 at step 30'))")
    screenshot(page, "inspect_02_feature_maps_step_30")

    view(page, "Evaluation")
    page.locator(".js-plotly-plot").first.wait_for()
    total = page.evaluate("() => { const z = document.querySelector('.js-plotly-plot').data[0].z;"
                          " return Array.from(z, r => Array.from(r).reduce((a, b) => a + b, 0))"
                          ".reduce((a, b) => a + b, 0); }")
    assert total == 60
    screenshot(page, "inspect_03_evaluation")
    page.get_by_text("Misclassified samples").scroll_into_view_if_needed()
    screenshot(page, "inspect_03b_misclassified")

    view(page, "Live inference")
    page.get_by_text("Saliency", exact=False).first.wait_for()
    wait_idle(page)
    screenshot(page, "inspect_04_live_inference")
    page.get_by_text("Saliency", exact=False).first.scroll_into_view_if_needed()
    page.wait_for_function("[...document.querySelectorAll('[data-testid=\"stImageCaption\"]')]"
                           ".some(e => e.innerText.startsWith('gradcam for class'))")
    screenshot(page, "inspect_05_saliency")

    page.get_by_role("radiogroup", name="Input").get_by_text("drawn image", exact=True).click()
    wait_idle(page)
    page.get_by_text("Draw on the black canvas").wait_for()  # empty canvas: a hint, no prediction
    assert page.get_by_text("Prediction:").count() == 0
    canvas = page.locator("canvas.upper-canvas")  # Fabric.js draws on its upper canvas (in a shadow root)
    scroll_to(canvas)
    box = canvas.bounding_box()
    assert (round(box["width"]), round(box["height"])) == (280, 280)
    draw_ring(page, box)
    page.get_by_text("Drawn at 280x280, resized to the model's input (1, 16, 16).").wait_for()
    page.get_by_text("Prediction:").first.wait_for()
    wait_idle(page)
    page.wait_for_function("[...document.querySelectorAll('[data-testid=\"stImageCaption\"]')]"
                           ".some(e => e.innerText.startsWith('gradcam for class'))")
    # The first image, the drawing at the model's resolution, decoded (naturalWidth 0 until it is).
    page.wait_for_function("() => { const e = document.querySelector('[data-testid=\"stImage\"] img');"
                           " return !!e && e.complete && e.naturalWidth > 0; }")
    scroll_to(canvas)
    page.mouse.move(box["x"] + 10, box["y"] + 10)  # hovering shows the canvas toolbar (undo, clear)
    page.get_by_role("button", name="Reset canvas & history").wait_for()
    screenshot(page, "inspect_05b_drawn_input")
    page.get_by_role("button", name="Reset canvas & history").click()
    page.get_by_text("Draw on the black canvas").wait_for()  # cleared: back to the hint
    wait_idle(page)
    assert page.get_by_text("Prediction:").count() == 0

    choose(page, "Run", runs["rev"])
    view(page, "Attention")
    page.locator(".js-plotly-plot").first.wait_for()
    labels = page.evaluate("() => Array.from(document.querySelector('.js-plotly-plot').data[0].x)")
    assert len(labels) == 12 and all(lbl.split(" ")[0] in "0123456789" for lbl in labels)
    screenshot(page, "inspect_06_attention")
    page.get_by_text("overview: every layer and head", exact=True).click()
    wait_idle(page)
    screenshot(page, "inspect_07_attention_overview")

    page.goto(f"{studio_server.url}/Compare")
    label = "Runs to compare (the first is the reference for the differences)"
    page.locator(f'input[aria-label="{label}"]').wait_for(timeout=60_000)
    wait_idle(page)
    page.locator('[data-testid="stMultiSelect"] button[aria-label="Clear all"]').click()
    wait_idle(page)
    wanted = [runs["cnn-a"], runs["cnn-b"]]
    for run_id in wanted:
        choose(page, label, run_id[-6:])
    picker = page.locator('[data-testid="stMultiSelect"]').filter(has=page.locator(f'input[aria-label="{label}"]'))
    for _ in range(3):  # a pick that landed while the page reran can be dropped: pick what is missing again
        wait_idle(page)
        shown = picker.inner_text()  # the picked runs' labels, "cnn-a (703afe)"
        missing = [r for r in wanted if r[-6:] not in shown]
        if not missing:
            break
        page.keyboard.press("Escape")
        wait_idle(page)
        for run_id in missing:
            choose(page, label, run_id[-6:])
    page.get_by_text("conv1: out_channels 8 -> 12").wait_for()
    page.keyboard.press("Escape")
    wait_idle(page)
    screenshot(page, "compare_01_two_runs")
    page.get_by_text("conv1: out_channels 8 -> 12").scroll_into_view_if_needed()
    screenshot(page, "compare_02_differences")
