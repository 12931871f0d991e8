"""The Train page in headless Chromium: launch a run from the form, watch the live loss chart gain
points between two reads a few seconds apart, stop the run from the runs table and see `stopped`.
Screenshots go to tests/e2e/screenshots/."""

from __future__ import annotations

import json

import pytest

from tests.conftest import chain
from tests.e2e.conftest import screenshot, scroll_to, stop_leftover_runs, wait_idle

pytestmark = pytest.mark.e2e

# Heavy enough per step (two 64-channel convolutions) that the chart stays under the 1,000-point
# downsampling cap while the test watches it grow.
CNN = chain(("input", "Input", {"shape": [1, 8, 8]}),
            ("conv1", "Conv2d", {"out_channels": 64, "kernel_size": 3, "padding": 1}), ("relu1", "ReLU", None),
            ("conv2", "Conv2d", {"out_channels": 64, "kernel_size": 3, "padding": 1}), ("relu2", "ReLU", None),
            ("flat", "Flatten", None), ("fc", "Linear", {"out_features": 10}), name="e2e-cnn")
POINTS = "() => { const p = document.querySelector('.js-plotly-plot'); return p && p.data ? p.data[0].x.length : 0; }"


def test_launch_watch_and_stop(studio_server, page, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(studio_server.workspace))
    try:
        journey(studio_server, page)
    except Exception:
        screenshot(page, "train_debug")
        raise
    finally:
        stop_leftover_runs()


def journey(studio_server, page) -> None:
    page.set_default_timeout(60_000)  # a loaded 2-core machine is slow, not broken
    graphs = studio_server.workspace / "graphs"
    graphs.mkdir(exist_ok=True)
    (graphs / "_autosave.json").write_text(json.dumps(CNN))
    (graphs / "_autosave.meta.json").write_text(json.dumps({"dataset_id": "digits"}))
    page.goto(f"{studio_server.url}/Train")
    page.get_by_text("Training settings").wait_for()
    wait_idle(page)
    for label, value in (("epochs", "500"), ("batch_size", "128")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
    page.get_by_label("Run name (optional)").fill("browser run")
    page.get_by_role("button", name="Launch run").click()
    page.get_by_text("it trains in the background").wait_for()
    screenshot(page, "train_01_launched")

    scroll_to(page.get_by_text("Curves", exact=True))  # charts draw when seen
    page.wait_for_function(f"({POINTS})() >= 2", timeout=60_000)
    first = page.evaluate(POINTS)
    page.wait_for_timeout(4000)
    second = page.evaluate(POINTS)
    assert second > first, (first, second)
    assert second < 1000  # still below the downsampling cap, so more steps mean more points
    scroll_to(page.locator(".js-plotly-plot").first)
    screenshot(page, "train_02_live")

    scroll_to(page.get_by_role("heading", name="Runs", exact=True))
    page.get_by_role("button", name="Stop").first.click()
    page.get_by_text("stopped", exact=True).first.wait_for(timeout=60_000)
    wait_idle(page)
    assert page.get_by_role("button", name="Resume").count() == 1
    scroll_to(page.get_by_role("heading", name="Runs", exact=True))
    screenshot(page, "train_03_stopped")
