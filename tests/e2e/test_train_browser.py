"""The Train page in headless Chromium: launch a run from the form, watch the live loss chart gain
points while the server's test gate holds the run at step 5 and then at step 40, stop the run from the
runs table while it is held (so it cannot have completed on any machine) and see `stopped`.
Screenshots go to tests/e2e/screenshots/."""

from __future__ import annotations

import json
import re

import pytest

from studio.runs import list_runs
from tests.conftest import chain
from tests.e2e.conftest import screenshot, scroll_to, stop_leftover_runs, wait_idle
from tests.e2e.test_journey import EARLY, LATE, watch_chart_grow

pytestmark = pytest.mark.e2e

# 500 epochs of digits: thousands of steps, far past the step the gate holds it at, where the chart
# (one point per step) is still under its 1,000-point downsampling cap.
CNN = chain(("input", "Input", {"shape": [1, 8, 8]}),
            ("conv1", "Conv2d", {"out_channels": 64, "kernel_size": 3, "padding": 1}), ("relu1", "ReLU", None),
            ("conv2", "Conv2d", {"out_channels": 64, "kernel_size": 3, "padding": 1}), ("relu2", "ReLU", None),
            ("flat", "Flatten", None), ("fc", "Linear", {"out_features": 10}), name="e2e-cnn")


def test_launch_watch_and_stop(studio_server, page, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(studio_server.workspace))
    try:
        journey(studio_server, page)
    except Exception:
        screenshot(page, "train_debug")
        raise
    finally:
        studio_server.gate.release()
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
    for label, value in (("Epochs", "500"), ("Batch size", "128")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
    page.get_by_label("Run name (optional)").fill("browser run")
    studio_server.gate.hold(EARLY)  # the run waits at step EARLY (then LATE) until the test moves on: no race
    page.get_by_role("button", name="Launch run").click()
    page.get_by_text("it trains in the background").wait_for()
    done = page.locator('[data-testid="stAlert"]').filter(has_text="it trains in the background")
    run_id = re.search(r"Launched (\S+):", done.inner_text()).group(1)
    screenshot(page, "train_01_launched")

    first, second = watch_chart_grow(page, studio_server.gate, run_id)  # held at EARLY, then at LATE
    assert second > first, (first, second)
    assert second < 1000  # still below the downsampling cap, so more steps mean more points
    scroll_to(page.locator(".js-plotly-plot").first)
    screenshot(page, "train_02_live")

    # Stopped while the gate still holds it at LATE: it cannot have completed, on any machine.
    assert studio_server.gate.held().get(run_id) == LATE, studio_server.gate.held()
    scroll_to(page.get_by_role("heading", name="Runs", exact=True))
    page.get_by_role("button", name="Stop").first.click()
    page.get_by_text("stopped", exact=True).first.wait_for(timeout=120_000)
    wait_idle(page)
    assert page.get_by_role("button", name="Resume").count() == 1
    run = next(r for r in list_runs() if r.id == run_id)
    assert (run.status, run.step) == ("stopped", LATE), (run.status, run.step)
    scroll_to(page.get_by_role("heading", name="Runs", exact=True))
    screenshot(page, "train_03_stopped")
