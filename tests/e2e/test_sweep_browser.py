"""The Sweep tab of the Train page in headless Chromium: start a small sweep from the form, watch its
trials finish in the live table, and see the objective chart, the parallel coordinates and the best
trial. Screenshots go to tests/e2e/screenshots/ (sweep_*.png)."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import chain
from tests.e2e.conftest import screenshot, scroll_to, stop_leftover_runs, wait_idle

pytestmark = pytest.mark.e2e

MLP = chain(("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
            ("fc1", "Linear", {"out_features": 16}), ("relu", "ReLU", None), ("fc2", "Linear", {"out_features": 10}),
            name="sweep-mlp")
CONFIG = {"max_steps": 60, "eval_every": 10, "seed": 0, "probes": False, "batch_size": 64}
SPACE = {"lr": {"log_uniform": [0.001, 0.3]}, "fc1.out_features": {"choice": [8, 32]}}


def test_start_and_watch_a_sweep(studio_server, page, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(studio_server.workspace))
    try:
        journey(studio_server, page)
    except Exception:
        screenshot(page, "sweep_debug")
        raise
    finally:
        stop_leftover_sweeps()
        stop_leftover_runs()


def journey(studio_server, page) -> None:
    page.set_default_timeout(60_000)  # a loaded 2-core machine is slow, not broken
    graphs = studio_server.workspace / "graphs"
    graphs.mkdir(exist_ok=True)
    (graphs / "_autosave.json").write_text(json.dumps(MLP))
    (graphs / "_autosave.meta.json").write_text(json.dumps({"dataset_id": "digits"}))
    page.goto(f"{studio_server.url}/Train")
    page.get_by_text("Training settings").wait_for(timeout=240_000)  # a cold server on a loaded machine
    wait_idle(page, timeout=120)
    tab = page.get_by_role("tab", name="Sweep")
    box = tab.bounding_box()  # a locator click waits forever for the tab to be "stable" (it has transition: all)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_role("button", name="Start sweep").wait_for()
    wait_idle(page)
    page.get_by_role("textbox", name="Base training settings (JSON: TrainConfig fields shared by every trial)").fill(
        json.dumps(CONFIG))
    page.get_by_role("textbox", name="Search space (JSON)").fill(json.dumps(SPACE))
    trials = page.get_by_role("spinbutton", name="Trials", exact=True)
    trials.fill("3")
    trials.press("Tab")
    page.get_by_role("textbox", name="Sweep name (optional)").fill("browser sweep")
    screenshot(page, "sweep_01_form")
    page.get_by_role("button", name="Start sweep").click()
    page.get_by_text("its trials run in the background").wait_for()

    page.get_by_text("3 of 3 trials done").wait_for(timeout=420_000)
    wait_idle(page, timeout=60)
    scroll_to(page.get_by_text("Parameters against the objective").first)
    page.get_by_text("Best trial").first.wait_for()
    page.wait_for_timeout(1500)  # plotly draws when seen
    path = screenshot(page, "sweep_02_done")
    assert path.exists()
    assert page.locator(".js-plotly-plot").count() >= 2
    assert page.get_by_role("button", name="Open the best trial in Build").count() == 1


def stop_leftover_sweeps() -> None:
    from studio.sweeps import list_sweeps, stop_sweep

    for sweep in list_sweeps():
        if sweep.status in ("starting", "running"):
            stop_sweep(sweep.id)
    deadline = time.monotonic() + 60
    while any(s.status in ("starting", "running") for s in list_sweeps()) and time.monotonic() < deadline:
        time.sleep(0.5)
