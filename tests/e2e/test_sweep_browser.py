"""The Sweep tab of the Train page in headless Chromium: start a small sweep from the form, watch its
trials finish in the live table, and see the objective chart, the parallel coordinates and the best
trial. Screenshots go to tests/e2e/screenshots/ (sweep_*.png)."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from tests.conftest import chain
from tests.e2e.conftest import FLOW_IFRAME, screenshot, scroll_to, stop_leftover_runs, wait_idle

pytestmark = pytest.mark.e2e

MLP = chain(("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
            ("fc1", "Linear", {"out_features": 16}), ("relu", "ReLU", None), ("fc2", "Linear", {"out_features": 10}),
            name="sweep-mlp")
CONFIG = {"max_steps": 60, "eval_every": 10, "probes": False, "batch_size": 64}  # seed: its own box (0)
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
    open_sweep_tab(page)
    page.get_by_role("button", name="Start sweep").wait_for()
    wait_idle(page)
    page.get_by_role("textbox", name="More settings (optional, JSON)").fill(json.dumps(CONFIG))
    # The space is a table (the grid draws on a canvas); its JSON view is edited here and the table follows.
    page.get_by_text("The space as JSON").click()
    space_box = page.get_by_role("textbox", name="Search space (JSON)")
    space_box.fill(json.dumps(SPACE))
    space_box.press("Tab")
    wait_idle(page)
    expect(page.get_by_role("textbox", name="Search space (JSON)")).to_have_value(json.dumps(SPACE))
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
    # expect() retries: the live fragment redraws every second and a redrawn button briefly shows twice
    expect(page.get_by_role("button", name="Open the best trial in Build")).to_have_count(1)

    # The best trial's buttons leave the Sweep tab for another page. Both crashed ("Cannot clear query
    # parameters - the following are bound to widgets: 'studio.train.tab'"): st.switch_page refused to
    # drop the tab's bound query parameter.
    best_run = summary_best_run()
    page.get_by_role("button", name="Inspect it").click()
    page.wait_for_url(re.compile(r"/Inspect(\?|$)"))
    page.locator('input[aria-label="Run"]').wait_for(timeout=120_000)
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    shown = page.locator('input[role="combobox"][aria-label="Run"]').input_value()
    assert best_run in shown, (best_run, shown)  # Inspect opens on the best trial's run
    screenshot(page, "sweep_03_best_in_inspect")

    back_to_the_sweep_tab(page)
    page.get_by_role("button", name="Open the best trial in Build").click()
    page.wait_for_url(re.compile(r"/Build(\?|$)"))
    page.frame_locator(FLOW_IFRAME).locator('.react-flow__node[data-id="fc1"]').wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    screenshot(page, "sweep_04_best_in_build")

    # "Use its settings in Train" turns to the Runs tab, where the form is, and says what changed.
    back_to_the_sweep_tab(page)
    page.get_by_role("button", name="Use its settings in Train").click()
    page.get_by_text("The run form now holds the settings of trial run").wait_for()
    expect(page.get_by_role("tab", name="Runs")).to_have_attribute("aria-selected", "true")
    wait_idle(page)
    screenshot(page, "sweep_05_settings_in_train")


def back_to_the_sweep_tab(page) -> None:
    page.locator('[data-testid="stSidebar"]').get_by_role("link", name="Train").click()
    page.wait_for_url(re.compile(r"/Train(\?|$)"))
    wait_idle(page)
    open_sweep_tab(page)


def open_sweep_tab(page) -> None:
    tab = page.get_by_role("tab", name="Sweep")
    box = tab.bounding_box()  # a locator click waits forever for the tab to be "stable" (it has transition: all)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_text("New sweep").wait_for()  # the tab's form (folded once a sweep exists)


def summary_best_run() -> str:
    """The run id of the best trial of the one sweep in the store."""
    from studio.sweeps import list_sweeps, sweep_summary

    (sweep,) = list_sweeps()
    return sweep_summary(sweep.id)["best"]["run_id"]


def stop_leftover_sweeps() -> None:
    from studio.sweeps import list_sweeps, stop_sweep

    for sweep in list_sweeps():
        if sweep.status in ("starting", "running"):
            stop_sweep(sweep.id)
    deadline = time.monotonic() + 60
    while any(s.status in ("starting", "running") for s in list_sweeps()) and time.monotonic() < deadline:
        time.sleep(0.5)
