"""Inspect's "Why this prediction" view in headless Chromium, on three short runs trained by the worker's
code (conftest.train_here): an image CNN (`shapes`: integrated gradients and occlusion side by side, heatmaps over the
image, the completeness check), a tabular MLP (`iris`: bars with the measurement names) and a token
transformer (`majority`: one coloured chip per token). Screenshots go to tests/e2e/screenshots/explain_*.png.

Cancelling is not driven here: a click that lands while a computation runs would race it; the unit tests
cancel inside the model's forward (tests/test_explain.py)."""

from __future__ import annotations

import pytest

from tests.conftest import chain, train_here
from tests.e2e.conftest import choose, page_report, screenshot, scroll_to, wait_idle
from tests.test_inspect import SHAPES_OPTIONS, cnn

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runs(studio_server):
    from studio.templates import load_template
    from studio.training import TrainConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(studio_server.workspace))  # the server's own store and run folders
        iris = chain(("input", "Input", {"shape": [4]}), ("fc1", "Linear", {"out_features": 16}),
                     ("relu", "ReLU", None), ("fc2", "Linear", {"out_features": 3}), name="iris-mlp")
        return {
            "image": train_here(cnn(8), "shapes", TrainConfig(max_steps=40, batch_size=32, lr=3e-3, eval_every=20,
                                                              probe_every=20), dataset_options=SHAPES_OPTIONS,
                                name="image"),
            "tabular": train_here(iris, "iris", TrainConfig(max_steps=60, batch_size=16, lr=1e-2, eval_every=20,
                                                            probe_every=20), name="tabular"),
            "tokens": train_here(load_template("transformer_classifier"), "majority",
                                 TrainConfig(max_steps=100, batch_size=32, lr=3e-3, eval_every=50, probe_every=50),
                                 dataset_options={"num_samples": 600}, name="tokens"),
        }


def open_view(page, url: str, run_id: str) -> None:
    choose(page, "Run", run_id)
    page.get_by_role("radiogroup", name="View").get_by_text("Why this prediction", exact=True).click()
    wait_idle(page)


def explain(page) -> None:
    """Press Explain and wait for the answer (the check of integrated gradients, which every view shows)."""
    button = page.get_by_role("button", name="Explain")
    scroll_to(button)
    button.click()
    try:
        page.get_by_text("Check: sum of attributions").first.wait_for(timeout=180_000)
    except Exception:
        raise AssertionError(f"no explanation after Explain: {page_report(page)}") from None
    wait_idle(page)


def test_why_this_prediction_for_an_image_a_tabular_and_a_token_model(studio_server, runs, page):
    page.goto(f"{studio_server.url}/Inspect")
    page.locator('input[aria-label="Run"]').wait_for(timeout=60_000)  # the first page run imports torch
    wait_idle(page)

    open_view(page, studio_server.url, runs["image"])
    choose(page, "Methods (up to 3, side by side)", "Occlusion")
    page.keyboard.press("Escape")
    wait_idle(page)
    explain(page)
    captions = page.locator('[data-testid="stImageCaption"]')
    page.wait_for_function("[...document.querySelectorAll('[data-testid=\"stImageCaption\"]')]"
                           ".some(e => e.innerText.startsWith('occlusion for'))")
    texts = captions.all_inner_texts()
    assert any(t.startswith("integrated-gradients for") for t in texts), texts
    images = page.locator('[data-testid="stImage"] img')
    assert images.count() == 2  # input, attribution and overlay in one PNG per method, decoded by the browser:
    page.wait_for_function("[...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                           ".every(e => e.complete && e.naturalWidth >= 3 * 128)")
    check = page.get_by_text("Check: sum of attributions").first.inner_text()
    assert "off by" in check
    images.first.scroll_into_view_if_needed()
    screenshot(page, "explain_01_image")

    open_view(page, studio_server.url, runs["tabular"])
    explain(page)
    page.locator(".js-plotly-plot").first.wait_for()
    page.wait_for_function("document.querySelector('.js-plotly-plot').data !== undefined")
    names = page.evaluate("() => Array.from(document.querySelector('.js-plotly-plot').data[0].y)")
    assert sorted(names) == ["petal length (cm)", "petal width (cm)", "sepal length (cm)", "sepal width (cm)"]
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    screenshot(page, "explain_02_tabular")

    open_view(page, studio_server.url, runs["tokens"])
    explain(page)
    chips = page.locator('span[title^="0: "]')  # one chip per token, its index and value in the tooltip
    chips.first.wait_for()
    per_view = page.locator('[data-testid="stMarkdownContainer"] span[title]')
    assert per_view.count() == 32 * 2  # integrated gradients and occlusion, 32 tokens each
    assert page.get_by_text("attributed at layer").count() >= 1
    chips.first.scroll_into_view_if_needed()
    screenshot(page, "explain_03_tokens")
