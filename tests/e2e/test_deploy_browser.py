"""The Deploy page in headless Chromium on a finished run (the seed MLP on digits, trained by the worker's
code: conftest.train_here): measure every variant, read the table, see the chart and the download buttons.
Screenshot: tests/e2e/screenshots/deploy_01_table.png."""

from __future__ import annotations

import pytest

from tests.conftest import train_here
from tests.e2e.conftest import choose, screenshot, wait_idle

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run_id(studio_server):
    from studio.data import apply_dataset, get_info
    from studio.templates import load_template
    from studio.training import TrainConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(studio_server.workspace))  # the server's own store and run folders
        graph = apply_dataset(load_template("mlp"), get_info("digits"))
        return train_here(graph, "digits", TrainConfig(epochs=4, batch_size=64, probes=False), name="mlp-digits")


def test_deploy_page_measures_and_offers_downloads(studio_server, run_id, page):
    page.goto(f"{studio_server.url}/Deploy")
    page.locator('input[aria-label="Run"]').wait_for(timeout=60_000)
    wait_idle(page)
    choose(page, "Run", run_id)
    page.get_by_role("button", name="Measure variants").click()
    page.get_by_text("Downloads", exact=True).wait_for(timeout=240_000)
    wait_idle(page, timeout=120)
    assert page.get_by_text("Measuring failed").count() == 0
    # the verdict comes first: a recommendation within the default 1-point budget, above the table
    verdict = page.get_by_text("(budget 1)", exact=False).first
    verdict.wait_for(timeout=60_000)
    table = page.locator('[data-testid="stDataFrame"], [data-testid="stDataFrameResizable"]').first
    assert verdict.bounding_box()["y"] < table.bounding_box()["y"]
    page.locator('[data-testid="stDataFrame"], [data-testid="stDataFrameResizable"]').first.wait_for(
        state="attached", timeout=60_000)
    chart = page.locator(".js-plotly-plot").first
    chart.scroll_into_view_if_needed()
    chart.wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot").count() == 1
    buttons = page.locator('[data-testid="stDownloadButton"] button').all_inner_texts()
    assert any("int8-weight.pt2" in b for b in buttons) and any("prune state dict" in b for b in buttons)
    assert any("onnx-int8-static.onnx" in b for b in buttons)
    assert any("onnx-int8-static predict.py" in b for b in buttons)
    page.locator('[data-testid="stDownloadButton"] button').first.wait_for(timeout=60_000)
    page.wait_for_timeout(3000)
    screenshot(page, "deploy_01_table")
