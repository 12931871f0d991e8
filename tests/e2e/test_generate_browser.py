"""The Inspect page's Generate view in headless Chromium on a tiny character-level LM trained by the real worker:
a typed prompt sampled at the default temperature and top-k with seed 0, the text growing token by token in the
page, then the attention heatmap of prompt + generated tokens with the characters on its axes. Screenshots go to
tests/e2e/screenshots/generate_*.png."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from components.inspect.inspect_generate import TEXT_KEY
from tests.conftest import wait_until
from tests.e2e.conftest import choose, screenshot, scroll_to, wait_idle
from tests.test_generate_page import make_lm_run

pytestmark = pytest.mark.e2e

TEXT = f'.st-key-{TEXT_KEY} [data-testid="stMarkdownContainer"]'


@pytest.fixture(scope="module")
def lm_run(studio_server):
    mp = pytest.MonkeyPatch()
    mp.setenv("STUDIO_WORKSPACE", str(studio_server.workspace))  # the server's own store and run folders
    run_id = make_lm_run()
    mp.undo()
    return run_id


def set_number(page, label: str, value) -> None:
    box = page.locator(f'input[aria-label="{label}"]')
    scroll_to(box)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def test_generate_streams_text_and_shows_its_attention(studio_server, lm_run, page):
    page.goto(f"{studio_server.url}/Inspect")
    page.locator('input[aria-label="Run"]').wait_for(timeout=60_000)  # the first page run imports torch
    wait_idle(page)
    choose(page, "Run", lm_run)
    page.get_by_role("radiogroup", name="View").get_by_text("Generate", exact=True).click()
    wait_idle(page)
    prompt = page.get_by_label("Prompt")
    prompt.fill("The ")
    prompt.press("Control+Enter")  # a text area commits its value on Ctrl+Enter or blur
    wait_idle(page)
    set_number(page, "Max new tokens", 40)

    # Streaming, seen without racing it: the gate holds the generation after its 10th token (the text
    # drawn so far has reached the page), the test reads it, then lets it finish.
    studio_server.gate.hold_point("generate", 10)
    try:
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function("""(sel) => { const el = document.querySelector(sel);
            return el && el.innerText.startsWith("The ") && el.innerText.length === 14; }""", arg=TEXT,
                               timeout=120_000)
        partial = page.locator(TEXT).inner_text()
        # the page can draw token 10 a moment before the generation says it waits there: wait for that too
        wait_until(lambda: studio_server.gate.held_at("generate") == 10, "the generation held after token 10",
                   seconds=120)
    finally:
        studio_server.gate.release()
    page.wait_for_function("[...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
                           ".some(e => e.innerText.includes('40 new tokens after a prompt of 4'))", timeout=120_000)
    wait_idle(page)
    # The block is drawn anew by each rerun (a moment empty): wait for the whole text, then read it.
    page.wait_for_function("""(sel) => { const el = document.querySelector(sel);
        return el && el.innerText.startsWith("The ") && el.innerText.length === 44; }""", arg=TEXT, timeout=60_000)
    final = page.locator(TEXT).inner_text()
    assert final.startswith(partial) and len(partial) == 14, (partial, final)  # it grew from what was shown
    screenshot(page, "generate_01_text")

    chart = page.locator(".js-plotly-plot").first
    scroll_to(chart)
    labels = page.evaluate("() => document.querySelector('.js-plotly-plot').data[0].x")
    assert len(labels) == 16 and labels[-1].endswith("(15)")  # the context's last 16 characters, by position
    window = final[-16:]
    assert [lab.rsplit(" (", 1)[0] for lab in labels] == [c.replace("\n", "\\n").replace(" ", "␣") for c in window]
    page.get_by_role("radiogroup", name="Attention head").get_by_text("head 1", exact=True).click()
    wait_idle(page)
    page.wait_for_function("document.querySelector('.js-plotly-plot').layout.title.text.includes('head 1')")
    expect(page.locator(TEXT)).to_have_text(final)  # a rerun keeps the generation (expect() retries)
    screenshot(page, "generate_02_attention")
