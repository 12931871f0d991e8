"""Uploads through the Data page in headless Chromium, one per kind (CSV table, image-folder zip, text,
text+label CSV): the file goes through the real file uploader, the page reruns, the new dataset is
the one selected, its success message shows, and no error box or exception appears.

Screenshots go to tests/e2e/screenshots/."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from tests.e2e.conftest import screenshot, scroll_to, wait_idle

pytestmark = pytest.mark.e2e


def table_csv() -> bytes:
    rng = np.random.default_rng(0)
    lines = ["a,b,label"] + [f"{rng.normal():.3f},{rng.normal():.3f},{'cat' if i % 2 else 'dog'}" for i in range(60)]
    return ("\n".join(lines) + "\n").encode()


def image_zip() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, cls in enumerate(("circles", "squares")):
            for i in range(8):
                img = io.BytesIO()
                Image.new("L", (10, 10), 40 + 150 * k + i).save(img, format="PNG")
                zf.writestr(f"{cls}/{i}.png", img.getvalue())
    return buf.getvalue()


def text_file() -> bytes:
    return ("the quick brown fox jumps over the lazy dog. " * 40).encode()


def text_label_csv() -> bytes:
    lines = ["text,label"] + [f"{'good fun' if i % 2 else 'bad day'} number {i},{'pos' if i % 2 else 'neg'}"
                              for i in range(40)]
    return ("\n".join(lines) + "\n").encode()


KINDS = [  # (radio label, file name, bytes, dataset name typed in, expected upload id)
    ("CSV table", "table.csv", table_csv, "browser table", "upload_browser_table"),
    ("Image folders (zip)", "shapes.zip", image_zip, "browser images", "upload_browser_images"),
    ("Text (.txt)", "fox.txt", text_file, "browser text", "upload_browser_text"),
    ("Text + label CSV", "reviews.csv", text_label_csv, "browser reviews", "upload_browser_reviews"),
]


@pytest.mark.parametrize(("kind", "filename", "make", "name", "upload_id"), KINDS, ids=[k[0] for k in KINDS])
def test_upload_selects_the_new_dataset_without_an_error(studio_server, page, kind, filename, make, name, upload_id):
    from playwright.sync_api import expect

    page.set_default_timeout(60_000)  # a loaded 2-core machine is slow, not broken
    page.goto(f"{studio_server.url}/Data")
    page.get_by_text("Your data", exact=True).wait_for(timeout=180_000)  # a cold server imports torch first
    wait_idle(page, timeout=60)
    expander = page.get_by_text("Upload a dataset", exact=True)
    scroll_to(expander)
    # Open on a workspace without uploads, closed once there are some: read the state, not the rendering.
    details = page.locator("details").filter(has=expander)
    if details.get_attribute("open") is None:
        expander.click()
    page.get_by_text("Kind", exact=True).wait_for()
    wait_idle(page, timeout=60)
    page.get_by_text(kind, exact=True).click()
    wait_idle(page, timeout=60)
    upload = page.get_by_test_id("stBaseButton-primary").filter(has_text="Upload")
    file = {"name": filename, "mimeType": "application/octet-stream", "buffer": make()}
    for attempt in range(3):
        # The kind's rerun swaps in that kind's own file uploader; a file given to the previous kind's
        # uploader before the swap is dropped with it, so give it again until the page keeps it.
        uploader = page.get_by_test_id("stFileUploaderDropzoneInput")
        expect(uploader).to_have_count(1, timeout=60_000)
        uploader.set_input_files(files=[file])
        wait_idle(page, timeout=60)
        page.get_by_label("Name (optional)").fill(name)
        page.get_by_label("Name (optional)").press("Tab")
        wait_idle(page, timeout=60)
        try:
            expect(upload).to_be_enabled(timeout=60_000)  # once the file has reached the server
            break
        except AssertionError:
            if attempt == 2:
                screenshot(page, f"upload_{upload_id}_not_ready")
                raise
    scroll_to(upload)
    upload.click()
    page.get_by_text(f"as {upload_id}:").first.wait_for()
    wait_idle(page, timeout=60)
    try:
        box = page.locator('input[role="combobox"][aria-label="Dataset"]')
        shown = box.evaluate("e => e.value + ' ' + e.closest('[data-testid=stSelectbox]').innerText")
        assert f"({upload_id})" in shown, shown
        assert page.locator('[data-testid="stException"]').count() == 0
        # Error boxes other than the graph-vs-dataset fit (the current graph need not fit a new upload).
        errors = [t for t in page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
                  if "upload_browser" not in t]
        assert not errors, errors
        assert "This app has encountered an error" not in page.content()
    finally:
        screenshot(page, f"upload_{upload_id}")
    assert (studio_server.workspace / "datasets" / "uploads" / upload_id / "meta.json").is_file()
