"""Fixtures for the real-browser tests: a `streamlit run app.py` server on a free port with its own
workspace and test gate, and headless Chromium (the system's /usr/bin/chromium; never `playwright install`).

Nothing here measures the machine's speed: a test waits on a condition with a generous deadline and
fails with what it saw, and one that needs a run mid-flight holds it with the server's gate
(`studio_server.gate`, studio.training.gate), never by racing it.

Without Chromium the tests skip, unless STUDIO_REQUIRE_E2E=1 makes that a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import RunGate

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FLOW_IFRAME = 'iframe[title="streamlit_flow.streamlit_flow"]'
LIVE = '[data-testid="stElementContainer"]:not([data-stale="true"]):not([data-retained="true"])'  # see fresh()
TIMEOUT_MS = 60_000  # a page's default wait: a loaded 2-core machine is slow, not broken


def _require_browser() -> None:
    missing = None
    if not Path(CHROMIUM).exists():
        missing = f"{CHROMIUM} is missing"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the Python playwright package is not installed"
    if missing:
        if os.environ.get("STUDIO_REQUIRE_E2E") == "1":
            pytest.fail(f"browser tests required (STUDIO_REQUIRE_E2E=1) but {missing}")
        pytest.skip(f"browser tests skipped: {missing} (set STUDIO_REQUIRE_E2E=1 to make this a failure)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StudioServer:
    """`streamlit run app.py` in its own process group, with STUDIO_WORKSPACE set to `workspace`.

    `gate` holds the runs this server launches at a step (they inherit STUDIO_TEST_GATE); nothing is
    held until a test calls `gate.hold(step)`."""

    def __init__(self, workspace: Path):
        from studio.training.gate import GATE_ENV

        self.workspace = workspace
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        self.log = workspace.parent / "streamlit.log"
        self.gate = RunGate(workspace.parent / "gate")
        env = dict(os.environ, STUDIO_WORKSPACE=str(workspace), PYTHONPATH=str(ROOT))
        env[GATE_ENV] = str(self.gate.dir)  # the runs it launches inherit it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
             "--server.headless", "true", "--server.address", "localhost"],
            cwd=ROOT, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"streamlit did not become healthy in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


    def start_again_if_dead(self) -> None:
        """A server that died (a crash in an earlier module) starts again on the same workspace, so one
        module's failure does not fail every later one; its log is kept beside the new one."""
        if self.proc.poll() is not None:
            self.log.rename(self.log.with_suffix(f".died-{int(time.time())}.log"))
            self.__init__(self.workspace)


@pytest.fixture(scope="session")
def _one_server(tmp_path_factory):
    _require_browser()
    workspace = tmp_path_factory.mktemp("e2e") / "workspace"
    workspace.mkdir()
    server = StudioServer(workspace)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def studio_server(_one_server, tmp_path_factory):
    """The Streamlit server the browser tests of this worker share (one start, not one per module: about 6 s
    of a 2-core machine each), handed to each module as a new server would be: no run held at the gate,
    no run training, and no autosaved graph or its undo history (a module starts from the seed graph
    or writes its own). Runs, datasets and sweeps of earlier modules stay; tests pick theirs by id."""
    server = _one_server
    server.start_again_if_dead()
    server.gate.release()
    for path in (server.workspace / "graphs").glob("_autosave*"):
        path.unlink()
    yield server
    server.gate.release()  # a failed module must not leave the next one's runs waiting at a step
    mp = pytest.MonkeyPatch()
    mp.setenv("STUDIO_WORKSPACE", str(server.workspace))
    try:
        stop_leftover_runs()
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    sockets: list[str] = []  # Streamlit's websockets: more than one per page load means it reconnected
    pg.on("websocket", lambda ws: sockets.append(f"{time.strftime('%H:%M:%S')} {ws.url}"))
    yield pg
    if request.node.stash.get(_FAILED, False):  # what the page showed when the test failed
        print(f"websockets the page opened: {sockets}")
        try:
            screenshot(pg, f"FAILED_{request.node.name}")
        except Exception as e:  # noqa: BLE001 - a failed test's own error matters more
            print(f"no failure screenshot: {e}")
    context.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_idle(page, timeout: float = 60.0) -> None:
    """Wait until Streamlit has finished rerunning; on timeout, an AssertionError with what the status
    widget and the page showed.

    Streamlit shows its "Running..." widget only once a run has lasted 500 ms (its StatusWidget), so that
    alone misses a short run; a run under way also marks the previous run's elements it has not drawn
    again `data-stale`. Idle is neither, seen on three polls in a row (a live fragment's reruns leave
    gaps of most of a second between them)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_timeout(300)
    page.evaluate("window.__studioQuiet = 0")
    widget = '[data-testid="stStatusWidget"]'
    try:
        page.wait_for_function(f"""() => {{
            const busy = document.querySelector('{widget}') || document.querySelector('[data-stale="true"]');
            window.__studioQuiet = busy ? 0 : (window.__studioQuiet || 0) + 1;
            return window.__studioQuiet >= 3; }}""", polling=100, timeout=timeout * 1000)
    except PlaywrightTimeout:
        shown = page.locator(widget).all_inner_texts()
        raise AssertionError(f"Streamlit still busy after {timeout:.0f} s (status widget: {shown}); "
                             f"{page_report(page)}") from None


def commit_text(page, label: str, value: str, done, attempts: int = 3, wait_ms: int = 20_000) -> None:
    """Type `value` into the live box labelled `label`, press Enter, and wait until `done(timeout_ms)` (an
    `expect(...)` of the edit's effect) holds. A rerun that draws the box again between the typing and the
    Enter drops the typed text (the canvas component answers each new picture by itself, seconds later on
    a loaded machine): then type it again. Typing the same value twice is one edit (the box made for the
    old value is no longer the newest once the edit landed, studio's widget_keys.still_shows)."""
    def type_it():
        box = fresh(page).get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
    act_until(page, type_it, done, attempts, wait_ms)


def click_until(page, name: str, done, attempts: int = 3, wait_ms: int = 20_000) -> None:
    """Click the button named `name` and wait until `done(timeout_ms)` (an `expect(...)` of its effect)
    holds. On a loaded machine a click that lands while its button is drawn again can be lost (seen: Redo
    focused, the graph unchanged, the page idle): then click again (see act_until). A repeated Undo or Redo
    would show as a step too far in the test's next check, never as a pass."""
    act_until(page, lambda: page.get_by_role("button", name=name).click(), done, attempts, wait_ms)


def act_until(page, act, done, attempts: int = 3, wait_ms: int = 20_000) -> None:
    """`act()`, then wait until `done(timeout_ms)` holds. When it does not, wait for the page to be idle and
    look once more; only a page idle without the effect is acted on again (an effect that came late is
    never acted twice)."""
    for attempt in range(attempts):
        act()
        try:
            done(wait_ms)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise
            wait_idle(page)
            try:
                done(2_000)
                return
            except AssertionError:
                continue


def fresh(page):
    """The page's elements of the newest run: while a rerun is under way (and Streamlit's "Running"
    widget shows only for runs longer than a moment) the previous run's elements stay, marked stale,
    so a widget made anew can briefly show twice. Streamlit also retains a widget that had the focus
    when a run replaced it, hidden (`data-retained`, display: none unless focused), until a later run: the
    box just typed in and pressed Enter on stays in the page beside its successor."""
    return page.locator(LIVE)


def scroll_to(locator, timeout: float = 60_000, attempts: int = 5) -> None:
    """Scroll a locator into view. A live fragment re-renders its elements every second, so one can
    be detached mid-scroll: look it up again and retry."""
    from playwright.sync_api import Error

    for attempt in range(attempts):
        try:
            locator.scroll_into_view_if_needed(timeout=timeout)
            return
        except Error as e:
            if "not attached" not in str(e) or attempt == attempts - 1:
                raise


def choose(page, label: str, option: str) -> None:
    """Pick the option containing `option` in the selectbox (or multiselect) labelled `label`."""
    box = page.locator(f'input[role="combobox"][aria-label="{label}"]')
    wanted = page.get_by_role("option").filter(has_text=option).first
    for _ in range(5):  # a rerun can redraw the box and close its list between the click and the pick
        scroll_to(box)
        box.click()
        try:
            wanted.wait_for(timeout=3_000)
        except Exception:  # the click focused the input without opening the list: open it from the keyboard
            page.keyboard.press("ArrowDown")
            try:
                wanted.wait_for(timeout=10_000)
            except Exception:
                page.keyboard.press("Escape")
                wait_idle(page, timeout=60)
                continue
        try:
            wanted.click(timeout=10_000)  # a live page can redraw the list under the pointer: open it again
        except Exception:
            page.keyboard.press("Escape")
            wait_idle(page, timeout=60)
            continue
        wait_idle(page, timeout=60)
        return
    raise AssertionError(f"the option {option!r} never showed in {label!r}; {page_report(page)}")


def page_report(page, limit: int = 1500) -> str:
    """What the page shows, for a failure message: its URL, error boxes and exceptions, then the start
    of its main text (never raises: the page may be navigating)."""
    try:
        return page.evaluate("""(limit) => {
            const texts = sel => [...document.querySelectorAll(sel)].map(e => e.innerText.trim()).filter(t => t);
            const main = document.querySelector('[data-testid="stMain"]') || document.body;
            const errors = texts('[data-testid="stException"], [data-testid="stAlertContentError"]');
            return location.href + (errors.length ? ' | errors: ' + errors.join(' / ') : '') + ' | page: '
                   + main.innerText.replace(/\\s+/g, ' ').slice(0, limit); }""", limit)
    except Exception as e:  # a report must not hide the failure it describes
        return f"(the page could not be read: {e})"


def connect(page, source, target) -> None:
    """Drag on the canvas from node `source`'s bottom handle to node `target`'s top handle (both node
    locators in the canvas's frame), as a user draws an edge."""
    def center(box: dict) -> tuple[float, float]:
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    page.mouse.move(*center(source.locator(".react-flow__handle.source").bounding_box()))
    page.mouse.down()
    page.mouse.move(*center(target.locator(".react-flow__handle.target").bounding_box()), steps=12)
    page.mouse.up()


def select_node(page, node_id: str) -> None:
    """Click a canvas node and wait until the inspector shows it with the page idle. On a loaded machine
    the canvas can drop a click that lands while the page reruns after the last edit (the inspector
    then still shows what was selected before), and a canvas answer to an earlier edit can arrive after
    the click (seen once: the edge just drawn came back selected): look again once the page is idle and
    click again while the inspector shows something else (selecting a node twice changes nothing)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    node = page.frame_locator(FLOW_IFRAME).locator(f'.react-flow__node[data-id="{node_id}"]')
    shows = """(nid) => [...document.querySelectorAll('[data-testid="stMarkdownContainer"] h4')]
                        .some(h => h.innerText.startsWith(nid + ' '))"""
    for _ in range(4):
        if not page.evaluate(shows, node_id):
            node.click()
        try:
            page.wait_for_function(shows, arg=node_id, timeout=20_000)
        except PlaywrightTimeout:
            wait_idle(page)
            continue
        wait_idle(page)
        page.wait_for_timeout(1000)
        wait_idle(page)
        if page.evaluate(shows, node_id):
            return
    raise AssertionError(f"the inspector did not open {node_id} after four clicks; {page_report(page)}")


def wait_held(page, gate: RunGate, step: int, what: str, *, run_id: str | None = None,
              check=lambda: None, seconds: float = 300.0) -> str:
    """The id of a run the gate holds at exactly `step` (`run_id`'s when given), polled while the page
    stays live. `check()` runs at every poll (it raises when the run ended some other way); after
    `seconds` an AssertionError says what the gate and the page showed. A generous deadline for a
    slow machine, never a measure of speed: a held run cannot finish before the test looks."""
    deadline = time.monotonic() + seconds
    while True:
        found = [r for r, s in gate.held().items() if s == step and run_id in (None, r)]
        if found:
            return found[0]
        check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}: the gate holds "
                                 f"{gate.held()} (hold file: {gate.dir / 'hold'}); {page_report(page)}")
        page.wait_for_timeout(200)


def stop_leftover_runs() -> None:
    """A failed step must not leave a worker training in the background (reads STUDIO_WORKSPACE)."""
    from studio.runs import list_runs, stop_run

    for run in list_runs():
        if run.active:
            stop_run(run.id)
    deadline = time.monotonic() + 60
    while any(r.active for r in list_runs()) and time.monotonic() < deadline:
        time.sleep(0.5)
