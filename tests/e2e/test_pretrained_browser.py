"""Home's "Start from a pretrained model" in headless Chromium: a torchvision-layout checkpoint given by its
path imports as a run of status imported, and "Open in Inspect" opens that run, which says what an imported
run offers and runs it on an uploaded photo. Screenshots go to tests/e2e/screenshots/."""

from __future__ import annotations

import pytest
import torch

from tests.e2e.conftest import page_report, screenshot, scroll_to, wait_idle
from tests.pretrained_refs import random_resnet

pytestmark = pytest.mark.e2e


def test_import_by_path_then_open_in_inspect(studio_server, page, tmp_path):
    from playwright.sync_api import expect

    from studio.runs import Store

    torch.save(random_resnet(width=4).state_dict(), tmp_path / "tiny_resnet.pth")
    page.set_default_timeout(60_000)  # a loaded 2-core machine is slow, not broken
    page.goto(studio_server.url)
    page.get_by_text("Start from a pretrained model", exact=True).wait_for(timeout=180_000)  # cold server
    wait_idle(page, timeout=60)
    choice = page.get_by_text("Path on this machine", exact=True)
    scroll_to(choice)
    choice.click()
    wait_idle(page, timeout=60)
    path = page.get_by_label("Path", exact=True)
    path.fill(str(tmp_path / "tiny_resnet.pth"))
    path.press("Enter")
    wait_idle(page, timeout=60)
    button = page.get_by_test_id("stBaseButton-primary").filter(has_text="Import")
    expect(button).to_be_enabled()
    store = Store(studio_server.workspace / "studio.db")
    before = {r.id for r in store.list_runs()}  # the server is shared with other browser-test modules
    button.click()
    try:
        page.get_by_test_id("stAlertContentSuccess").wait_for(timeout=120_000)
        (run,) = [r for r in store.list_runs() if r.id not in before]
        assert run.status == "imported"
        assert f"as run {run.id}" in page.get_by_test_id("stAlertContentSuccess").inner_text()
    finally:
        screenshot(page, "pretrained_imported")
    inspect = page.get_by_role("button", name="Open in Inspect")
    scroll_to(inspect)
    inspect.click()
    page.wait_for_url("**/Inspect**", timeout=60_000)
    try:
        page.get_by_text("imported pretrained weights").wait_for(timeout=60_000)
        wait_idle(page, timeout=60)
        assert run.id in page.locator('input[role="combobox"][aria-label="Run"]').evaluate(
            "e => e.value + ' ' + e.closest('[data-testid=stSelectbox]').innerText"), page_report(page)
        assert page.locator('[data-testid="stException"]').count() == 0, page_report(page)
    finally:
        screenshot(page, "pretrained_inspect")

    # Live inference (the view it opens on; Why this prediction is beside it): an uploaded photo, the
    # prediction and the feature maps of that input.
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (48, 40), (200, 120, 30)).save(photo)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
    try:
        page.get_by_text("Prediction:").wait_for(timeout=120_000)
        page.get_by_text("Feature maps of this input").wait_for(timeout=60_000)
        wait_idle(page, timeout=60)
        assert page.locator('[data-testid="stException"]').count() == 0, page_report(page)
    finally:
        screenshot(page, "pretrained_inspect_upload")
