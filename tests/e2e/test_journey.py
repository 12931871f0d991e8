"""A new user's whole journey through the running app in headless Chromium, driven only by clicks,
fields and the sidebar's page links: open a template on Home, edit it in Build, pick its dataset in
Data, train in the background and watch the live chart in Train, look inside the run in Inspect, and
overlay two runs in Compare. Once for the padded seed CNN on `shapes`, once for the small Transformer
on `reverse` (attention labelled with the dataset's tokens). The server's test gate holds the run at
two steps while its live chart is read, so it is mid-flight on any machine (a fast one used to finish
it before the chart grew).

A screenshot is saved at every step: tests/e2e/screenshots/journey_cnn_*.png and journey_tf_*.png.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from components.build.panels import human_count
from studio.analysis import analyze
from studio.data import get_info
from studio.runs import list_runs
from studio.templates import load_template
from tests.e2e.conftest import (
    FLOW_IFRAME,
    choose,
    fresh,
    page_report,
    screenshot,
    scroll_to,
    select_node,
    stop_leftover_runs,
    wait_held,
    wait_idle,
)

pytestmark = pytest.mark.e2e

WAIT_MS = 60_000  # a loaded 2-core machine is slow, not broken
CHART_MS = 120_000  # the live chart shows a held run's rows at its next refresh; generous for a loaded machine
EARLY, LATE = 5, 40  # the steps the gate holds a run at while its live chart is read (both runs are far longer)
POINTS = "() => { const p = document.querySelector('.js-plotly-plot'); return p && p.data ? p.data[0].x.length : 0; }"
CAPTIONS = "() => [...document.querySelectorAll('[data-testid=\"stImageCaption\"]')].map(e => e.innerText)"


# ---- what a user does, one gesture each ----------------------------------------------------------------

def go(page, name: str) -> None:
    """Follow a page link in the sidebar (components/nav.py; the session, and so the current graph, carries over)."""
    link = page.locator('[data-testid="stSidebar"]').get_by_role("link", name=name, exact=True)
    url = re.compile(rf"/{name}(\?|$)")
    for _ in range(3):  # a click landing while the page's script reruns can be dropped: look, retry
        link.click()
        try:
            page.wait_for_url(url, timeout=15_000)
            break
        except PlaywrightTimeout:
            wait_idle(page, timeout=60)
    else:
        link.click()
        page.wait_for_url(url)
    wait_idle(page, timeout=60)


def selected(page, label: str) -> str:
    """The option shown in the selectbox labelled `label`."""
    return page.locator(f'input[role="combobox"][aria-label="{label}"]').input_value()


def node(page, node_id: str):
    """A canvas node (read it through expect(): the canvas may be redrawing when it is looked at)."""
    return page.frame_locator(FLOW_IFRAME).locator(f'.react-flow__node[data-id="{node_id}"]')


def wait_node_text(page, node_id: str, text: str) -> None:
    page.wait_for_function(
        """([nid, text]) => { const f = document.querySelector('iframe[title="streamlit_flow.streamlit_flow"]');
                              const n = f && f.contentDocument.querySelector(`.react-flow__node[data-id="${nid}"]`);
                              return n && n.innerText.includes(text); }""", arg=[node_id, text], timeout=WAIT_MS)


def edit_param(page, node_id: str, param: str, value: str) -> None:
    """Select a node on the canvas and type a new value for one param in the inspector."""
    select_node(page, node_id)
    field = fresh(page).get_by_label(param, exact=True)
    field.fill(value)
    field.press("Enter")


def build_caption(page) -> str:
    return page.locator('[data-testid="stCaptionContainer"]').filter(has_text=" params · output ").first.inner_text()


def open_new_run_form(page) -> None:
    """The "New run" expander starts folded once this graph has a run on this dataset: unfold it (after
    the page settles: it may be unfolding by itself, for a new graph)."""
    wait_idle(page, timeout=60)
    page.wait_for_timeout(500)
    epochs = page.get_by_label("Epochs", exact=True)
    for _ in range(4):  # a click that lands while the page unfolds it by itself folds it again: look, retry
        if epochs.is_visible():
            return
        page.locator('[data-testid="stExpander"] summary').filter(has_text="New run").click()
        try:
            epochs.wait_for(timeout=15_000)
            return
        except PlaywrightTimeout:
            wait_idle(page, timeout=60)
    epochs.wait_for(timeout=WAIT_MS)


def launch(page, settings: dict[str, str], name: str) -> str:
    """Fill the training form, launch, and return the new run's id from the confirmation."""
    open_new_run_form(page)
    for label, value in settings.items():
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
    page.get_by_label("Run name (optional)").fill(name)
    done = page.locator('[data-testid="stAlert"]').filter(has_text="it trains in the background")
    for _ in range(3):
        page.get_by_role("button", name="Launch run").click()
        try:
            done.wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            # On a loaded machine a click that lands while the page reruns can be dropped. Ask the store
            # (the server's, see walk()): a run of this name means the launch went through; none means
            # nothing was launched, so clicking again cannot start a second run.
            wait_idle(page, timeout=60)
            launched = [r.id for r in list_runs() if r.name == name]
            if launched:
                return launched[0]
    done.wait_for(timeout=WAIT_MS)
    return re.search(r"Launched (\S+):", done.inner_text()).group(1)


def watch_chart_grow(page, gate, run_id: str) -> tuple[int, int]:
    """The live loss chart's point count with the run held at step EARLY, then at step LATE: (earlier,
    later). The gate (the server's RunGate) must hold at EARLY before the launch, so the run cannot
    finish before the chart is read on any machine; it is left held at LATE (release the gate, or stop it)."""
    mid_flight = lambda: check_mid_flight(page, run_id)
    wait_held(page, gate, EARLY, f"run {run_id} held at step {EARLY}", run_id=run_id, check=mid_flight)
    scroll_to(page.get_by_text("Curves", exact=True))  # charts draw when seen
    first = wait_points(page, run_id, 2, f"the live chart to show >= 2 points with the run held at step {EARLY}")
    gate.hold(LATE)
    wait_held(page, gate, LATE, f"run {run_id} held at step {LATE}", run_id=run_id, check=mid_flight)
    later = wait_points(page, run_id, first + 1, f"the live chart to grow past {first} points, held at step {LATE}")
    return first, later


def wait_points(page, run_id: str, at_least: int, what: str) -> int:
    """The first live chart's point count once it is >= `at_least` (read in the same poll, so a chart
    being redrawn is never read as 0); on timeout, an AssertionError with what the chart and page showed."""
    try:
        return page.wait_for_function(f"() => {{ const n = ({POINTS})(); return n >= {at_least} ? n : 0; }}",
                                      timeout=CHART_MS).json_value()
    except PlaywrightTimeout:
        raise AssertionError(f"timed out after {CHART_MS // 1000} s waiting for {what}: the chart has "
                             f"{page.evaluate(POINTS)} points, run {run_id} is {status(page, run_id)}; "
                             f"{page_report(page)}") from None


STATUSES = ("queued", "running", "completed", "stopped", "failed", "diverged", "lost")


def status(page, run_id: str) -> str | None:
    """The status badge in the run's row of the runs table (None while the row is not drawn)."""
    texts = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text=run_id).all_inner_texts()
    return next((s for t in texts for s in STATUSES if t.startswith(s + " ")), None)


def check_mid_flight(page, run_id: str) -> None:
    """Fail at once, with the page's own row, when a run the gate should be holding has ended."""
    if status(page, run_id) == "completed":
        rows = page.locator('[data-testid="stHorizontalBlock"]').filter(has_text=run_id)
        raise AssertionError(f"run {run_id} completed although the gate holds it: {rows.last.inner_text()}")
    check_not_failed(page, run_id)


def check_not_failed(page, run_id: str) -> None:
    """Fail at once, with the page's own message, when the run ended in anything but success."""
    now = status(page, run_id)
    if now in ("stopped", "failed", "diverged", "lost"):
        rows = page.locator('[data-testid="stHorizontalBlock"]').filter(has_text=run_id)
        raise AssertionError(f"run {run_id} is {now}: {rows.last.inner_text()}")


def wait_completed(page, run_id: str, seconds: float = 300.0) -> None:
    """Wait until the runs table shows the run completed (a generous deadline for a loaded machine);
    fail at once when it ended otherwise, and with what the page showed when time runs out."""
    deadline = time.monotonic() + seconds
    while status(page, run_id) != "completed":
        check_not_failed(page, run_id)
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not complete in {seconds:.0f} s; it is {status(page, run_id)}; "
                                 f"{page_report(page)}")
        page.wait_for_timeout(500)
    wait_idle(page, timeout=60)


def open_in_inspect(page, run_id: str) -> None:
    page.locator(f".st-key-studio-train-run-{run_id}-inspect button").click()
    page.wait_for_url(re.compile(r"/Inspect(\?|$)"), timeout=WAIT_MS)
    page.locator('input[aria-label="Run"]').wait_for(timeout=WAIT_MS)  # the first Inspect run imports a lot
    wait_idle(page, timeout=60)
    assert run_id in selected(page, "Run")


def view(page, name: str) -> None:
    page.get_by_role("radiogroup", name="View").get_by_text(name, exact=True).click()
    wait_idle(page, timeout=60)


def first_plot(page, what: str) -> dict:
    """`what` (a JS expression over the first drawn Plotly chart `p`), after scrolling the chart into view."""
    scroll_to(page.locator('[data-testid="stPlotlyChart"]').first)
    page.wait_for_function("() => { const p = document.querySelector('.js-plotly-plot'); return p && p.data; }",
                           timeout=WAIT_MS)
    return page.evaluate(f"() => {{ const p = document.querySelector('.js-plotly-plot'); return {what}; }}")


def walk(studio_server, page, monkeypatch, prefix: str, journey) -> None:
    monkeypatch.setenv("STUDIO_WORKSPACE", str(studio_server.workspace))  # the server's store, for the cleanup
    page.set_default_timeout(WAIT_MS)
    try:
        journey(studio_server, page, lambda step: screenshot(page, f"{prefix}_{step}"))
    except Exception:
        screenshot(page, f"{prefix}_debug")
        raise
    finally:
        studio_server.gate.release()  # the next journey's runs must not wait at a step this one left held
        stop_leftover_runs()


def open_template_from_home(studio_server, page, name: str) -> None:
    page.goto(studio_server.url)
    page.get_by_role("heading", name="Neural Studio").wait_for()
    scroll_to(page.locator(f".st-key-studio-home-template-{name}"))
    wait_idle(page, timeout=60)


# ---- the journeys ------------------------------------------------------------------------------------------

def test_cnn_journey_on_shapes(studio_server, page, monkeypatch):
    walk(studio_server, page, monkeypatch, "journey_cnn", cnn_journey)


def cnn_journey(studio_server, page, shot) -> None:
    # Home: the template gallery; open the padded seed CNN.
    open_template_from_home(studio_server, page, "seed_cnn_padded")
    shot("01_home")
    page.locator(".st-key-studio-home-template-seed_cnn_padded button").click()

    # Build: the template on the canvas, every shape known.
    page.wait_for_url(re.compile(r"/Build(\?|$)"), timeout=WAIT_MS)
    wait_node_text(page, "fc2", "(10,)")
    wait_idle(page, timeout=60)
    expect(node(page, "conv1")).to_contain_text("Conv2d 32")
    expect(node(page, "conv1")).to_contain_text("(32, 28, 28)")
    expect(node(page, "pool2")).to_contain_text("(64, 7, 7)")
    before = build_caption(page)
    shot("02_build_template")

    # Halve conv1's channels in the inspector: the canvas and the summary follow.
    edit_param(page, "conv1", "out_channels", "16")
    wait_node_text(page, "pool1", "(16, 14, 14)")
    wait_idle(page, timeout=60)
    expect(node(page, "conv1")).to_contain_text("Conv2d 16")
    expect(node(page, "conv1")).to_contain_text("(16, 28, 28)")
    graph = load_template("seed_cnn_padded")
    graph.node("conv1").params["out_channels"] = 16
    expected = human_count(analyze(graph).total_params)
    after = build_caption(page)
    assert after != before and f"{expected} params" in after, (before, after, expected)
    page.get_by_role("tab", name="Summary").click()
    page.locator('[data-testid="stMetric"]').filter(has_text="Parameters").filter(has_text=expected).wait_for()
    wait_idle(page, timeout=60)
    shot("03_build_conv1_16_channels")
    scroll_to(page.locator('[data-testid="stDataFrame"]').first)
    shot("04_build_summary")

    # Data: pick `shapes`: the output (10 classes) does not fit its 5 classes. "Use with current graph" sets
    # the 1x32x32 input and the head's 5 classes in one edit.
    go(page, "Data")
    choose(page, "Dataset", "(shapes)")
    page.get_by_text("The first 32 training images", exact=False).wait_for(timeout=WAIT_MS)
    page.get_by_text("fc2: output (10,) does not fit dataset 'shapes' (5 classes)", exact=False).wait_for()
    page.get_by_role("button", name="Use with current graph").click()
    page.get_by_text("input is now (1, 32, 32) float32").wait_for(timeout=WAIT_MS)
    page.get_by_text("its output fits too: fc2.out_features 10 → 5").wait_for()
    page.get_by_text("fits", exact=True).wait_for()
    wait_idle(page, timeout=60)
    shot("05_data_shapes")

    # Build again: the input is (1, 32, 32) everywhere and fc2 gives the 5 classes.
    go(page, "Build")
    wait_node_text(page, "conv1", "(16, 32, 32)")
    wait_node_text(page, "fc2", "(5,)")
    wait_idle(page, timeout=60)
    expect(node(page, "pool2")).to_contain_text("(64, 8, 8)")
    shot("06_build_fitted")

    # Train: one short epoch (700 steps of 2 samples), the live chart grows while the gate holds the run
    # at step 5, then 40; released, the run completes.
    page.get_by_role("button", name="Train this graph").click()
    page.wait_for_url(re.compile(r"/Train(\?|$)"), timeout=WAIT_MS)
    wait_idle(page, timeout=60)
    assert "(shapes)" in selected(page, "Dataset")
    open_new_run_form(page)
    shot("07_train_form")
    studio_server.gate.hold(EARLY)
    first_run = launch(page, {"Epochs": "1", "Batch size": "2", "Learning rate": "0.001"}, "journey cnn lr 1e-3")
    shot("08_train_launched")
    first, later = watch_chart_grow(page, studio_server.gate, first_run)
    assert later > first >= 2, (first, later)
    scroll_to(page.locator(".js-plotly-plot").first)
    shot("09_train_live_chart")
    studio_server.gate.release()
    wait_completed(page, first_run)
    scroll_to(page.get_by_role("heading", name="Runs", exact=True))
    shot("10_train_completed")

    # Inspect: feature maps of conv1 as images, then the confusion matrix on the validation split.
    scroll_to(page.get_by_role("heading", name="Runs", exact=True))
    open_in_inspect(page, first_run)
    page.wait_for_function(f"({CAPTIONS})().some(c => c.startsWith('conv1 at step'))", timeout=WAIT_MS)
    page.wait_for_function("() => { const imgs = [...document.querySelectorAll('[data-testid=\"stImage\"] img')];"
                           " return imgs.length >= 2 && imgs.every(e => e.complete && e.naturalWidth > 0); }",
                           timeout=WAIT_MS)  # the input and the grid of conv1's channels, decoded
    wait_idle(page, timeout=60)
    shot("11_inspect_feature_maps")
    view(page, "Evaluation")
    page.get_by_text("Validation accuracy").wait_for(timeout=WAIT_MS)
    heatmap = first_plot(page, "{type: p.data[0].type, x: Array.from(p.data[0].x || []), n: p.data[0].z.length}")
    assert heatmap["type"] == "heatmap" and heatmap["n"] == 5, heatmap
    assert set(get_info("shapes").class_names) <= set(heatmap["x"]), heatmap
    wait_idle(page, timeout=60)
    shot("12_inspect_confusion_matrix")

    # Train a second run with another learning rate, then overlay both in Compare.
    go(page, "Train")
    second_run = launch(page, {"Epochs": "1", "Batch size": "2", "Learning rate": "0.003"}, "journey cnn lr 3e-3")
    shot("13_train_second_run")
    wait_completed(page, second_run)
    scroll_to(page.get_by_role("heading", name="Runs", exact=True))
    shot("14_train_two_runs")
    go(page, "Compare")
    page.get_by_text("Final and best metrics").wait_for(timeout=WAIT_MS)
    picked = page.locator('[data-testid="stMultiSelect"]').first.inner_text()
    assert first_run[-6:] in picked and second_run[-6:] in picked, picked
    names = first_plot(page, "p.data.map(t => t.name)")
    assert len(names) >= 2, names
    assert any("lr 1e-3" in n for n in names) and any("lr 3e-3" in n for n in names), names
    wait_idle(page, timeout=60)
    shot("15_compare_two_runs")


def test_transformer_journey_on_reverse(studio_server, page, monkeypatch):
    walk(studio_server, page, monkeypatch, "journey_tf", transformer_journey)


def transformer_journey(studio_server, page, shot) -> None:
    open_template_from_home(studio_server, page, "reverse_transformer")
    shot("01_home")
    page.locator(".st-key-studio-home-template-reverse_transformer button").click()

    # Build: tokens in, one prediction over the 10-token vocabulary per position out.
    page.wait_for_url(re.compile(r"/Build(\?|$)"), timeout=WAIT_MS)
    wait_node_text(page, "head", "(12, 10)")
    wait_idle(page, timeout=60)
    expect(node(page, "attn")).to_contain_text("(12, 64)")
    shot("02_build_template")
    edit_param(page, "embed", "embedding_dim", "32")
    wait_node_text(page, "attn", "(12, 32)")
    wait_idle(page, timeout=60)
    expect(node(page, "pos")).to_contain_text("(12, 32)")
    expect(node(page, "head")).to_contain_text("(12, 10)")
    shot("03_build_embedding_32")

    # Data: `reverse` (the template's own dataset) with the current graph: it fits as it is.
    go(page, "Data")
    choose(page, "Dataset", "(reverse)")
    page.get_by_role("button", name="Use with current graph").click()
    page.get_by_text("input is now (12,) int64").wait_for(timeout=WAIT_MS)
    page.get_by_text("fits", exact=True).wait_for()
    wait_idle(page, timeout=60)
    shot("04_data_reverse")

    # Train: one epoch of 2-sample batches (1,400 steps); the gate holds it at step 5, then 40, while the
    # live chart is read.
    go(page, "Train")
    assert "(reverse)" in selected(page, "Dataset")
    open_new_run_form(page)
    wait_idle(page, timeout=60)
    shot("05_train_form")
    studio_server.gate.hold(EARLY)
    run_id = launch(page, {"Epochs": "1", "Batch size": "2"}, "journey transformer")
    first, later = watch_chart_grow(page, studio_server.gate, run_id)
    assert later > first >= 2, (first, later)
    scroll_to(page.locator(".js-plotly-plot").first)
    shot("06_train_live_chart")
    studio_server.gate.release()
    wait_completed(page, run_id)
    scroll_to(page.get_by_role("heading", name="Runs", exact=True))
    shot("07_train_completed")

    # Inspect: the attention of `attn` on a probe sample, its axes labelled with the sample's tokens.
    open_in_inspect(page, run_id)
    view(page, "Attention")
    page.get_by_text("Input", exact=True).first.wait_for(timeout=WAIT_MS)
    trace = first_plot(page, "{type: p.data[0].type, x: Array.from(p.data[0].x), y: Array.from(p.data[0].y)}")
    assert trace["type"] == "heatmap", trace["type"]
    vocab = get_info("reverse").vocab
    assert len(trace["x"]) == 12 and trace["x"] == trace["y"], trace
    tokens, positions = zip(*(label.rsplit(" ", 1) for label in trace["x"]), strict=True)
    assert list(positions) == [f"({i})" for i in range(12)] and set(tokens) <= set(vocab), trace["x"]
    shown = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="target").locator("code").first
    assert shown.inner_text().strip() == "".join(tokens), (shown.inner_text(), tokens)
    wait_idle(page, timeout=60)
    shot("08_inspect_attention")
    page.get_by_text("overview: every layer and head", exact=True).click()
    wait_idle(page, timeout=60)
    page.wait_for_function(f"({CAPTIONS})().some(c => c.startsWith('Every layer'))", timeout=WAIT_MS)
    shot("09_inspect_attention_overview")

