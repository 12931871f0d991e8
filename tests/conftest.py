"""Shared fixtures: every test gets its own workspace, so nothing touches ./workspace."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from studio.graph import atomic_write_bytes

# No warm spare workers (studio.runs.spare) unless a test asks for them: spares outlive the page that
# started them, and every other test counts its own processes. Servers the browser tests start inherit this.
os.environ.setdefault("STUDIO_SPARE_WORKER", "0")


def _scan_installed_components_once() -> None:
    """Each new AppTest has Streamlit read the metadata of every installed distribution, looking for
    components (streamlit.components.v2.manifest_scanner): 0.1 to 0.3 s of CPU each time here, about 15 s
    over the suite's AppTests. What is installed does not change during a test session: scan once."""
    import functools

    try:
        from streamlit.components.v2 import manifest_scanner
    except ImportError:  # another Streamlit: its AppTest does whatever it does
        return
    if hasattr(manifest_scanner, "scan_component_manifests"):
        manifest_scanner.scan_component_manifests = functools.cache(manifest_scanner.scan_component_manifests)


_scan_installed_components_once()


@pytest.fixture(autouse=True)
def _workspace(tmp_path, monkeypatch):
    ws = tmp_path / "workspace"
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    return ws


def chain(*nodes, name="t"):
    """A graph document whose nodes (id, type, params) are connected in a line."""
    doc_nodes = [{"id": nid, "type": t, **({"params": p} if p else {})} for nid, t, p in nodes]
    edges = [{"source": a[0], "target": b[0]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return {"format": "studio.graph/1", "name": name, "nodes": doc_nodes, "edges": edges}


def wait_until(predicate, what: str, seconds: float = 240.0, poll: float = 0.05):
    """predicate()'s first truthy value, polled until `seconds` pass (then AssertionError naming `what`).
    For processes the test does not control (workers, spares, sweeps); never a measure of speed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def train_here(graph, dataset_id: str, config=None, *, expect: str = "completed", **start_run_kwargs) -> str:
    """A run made by `start_run(graph, dataset_id, config, ...)` and trained to its end in this process by
    the worker's own code; returns its run id (see run_here)."""
    from studio.runs import start_run

    return run_here(lambda: start_run(graph, dataset_id, config, **start_run_kwargs), expect=expect)


def run_here(start, *, expect: str = "completed") -> str:
    """The run that `start()` creates (start_run, start_finetune...), trained to its end in this process by
    the worker's own code (`studio.training.worker.run`, one torch thread as in the worker process); its id.

    For tests that read a trained run (Inspect, Compare, Deploy, Explain...) and do not test the worker
    process: that process costs about 2.7 s of CPU before its first step (importing torch and the
    torch._dynamo every optimizer step pulls in), which this process has paid already. The worker process
    itself (launch, stop, kill, resume, queue) is tested in test_worker, tests/reliability and the browser
    tests. Bit-for-bit claims compare tensors made in one process."""
    from studio.runs import Store, launcher

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launcher, "reconcile", lambda store=None: {})  # create the run; this process is its worker
        run_id = start()
    status = _work_here(run_id)
    assert status == expect, (status, [e.message for e in Store().read_events(run_id)])
    return run_id


@contextlib.contextmanager
def workers_here():
    """While open, a run the launcher starts (start_run, the CLI's `train`...) trains to its end at once, in
    this process, by the worker's own code (see run_here) instead of in a worker process."""
    from studio.runs import launcher

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launcher, "_spawn", lambda store, run_id: _work_here(run_id))
        yield


def _work_here(run_id: str) -> str:
    import signal

    import torch

    from studio.runs import run_dir
    from studio.training import worker

    sigterm, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return worker.run(run_dir(run_id))
    finally:  # the worker makes SIGTERM ask its run to stop: give this process its own handler back
        signal.signal(signal.SIGTERM, sigterm)
        torch.set_num_threads(threads)


class RunGate:
    """Holds runs at a step (studio.training.gate), so a test stops, kills or resumes a run mid-flight
    on any machine: the run waits for the test, never the other way round."""

    def __init__(self, directory):
        from pathlib import Path

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def hold(self, step: int) -> None:
        """Every run reaching the end of a step >= `step` waits there (the file is replaced whole)."""
        atomic_write_bytes(self.dir / "hold", str(step).encode())

    def release(self) -> None:
        (self.dir / "hold").unlink(missing_ok=True)
        for point in self.dir.glob("hold-*"):  # the holds of other loops (studio.training.gate.hold_point)
            point.unlink(missing_ok=True)

    def hold_point(self, point: str, index: int) -> None:
        """Hold a loop that is not a run (e.g. "generate": Inspect's generation after token `index`)."""
        atomic_write_bytes(self.dir / f"hold-{point}", str(index).encode())

    def held_at(self, point: str) -> int | None:
        """The index the loop `point` waits at now, or None."""
        try:
            return int((self.dir / f"{point}.at").read_text())
        except (OSError, ValueError):
            return None

    def held(self) -> dict[str, int]:
        """{run_id: step} of the runs waiting now."""
        found = {}
        for p in self.dir.glob("*.at"):
            try:
                found[p.stem] = int(p.read_text())
            except (OSError, ValueError):  # removed or being replaced just now
                pass
        return found

    def wait_held(self, what: str, run_id: str | None = None, seconds: float = 600.0) -> tuple[str, int]:
        """(run_id, step) of a run held at the gate (`run_id`'s when given)."""
        def one():
            found = {r: s for r, s in self.held().items() if run_id in (None, r)}
            return next(iter(found.items()), None)
        return wait_until(one, what, seconds=seconds)


@pytest.fixture
def gate(tmp_path, monkeypatch) -> RunGate:
    """A RunGate for the processes this test starts (they inherit the environment)."""
    from studio.training.gate import GATE_ENV

    g = RunGate(tmp_path / "gate")
    monkeypatch.setenv(GATE_ENV, str(g.dir))
    return g


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> tuple:
    """(workspace, {name: run_id}): the three short runs of tests/test_inspect.py's `make_runs`, trained
    once per session (per xdist worker); the Inspect, Inspect page, Compare page and Explain tests read them."""
    from tests.test_inspect import make_runs

    ws = tmp_path_factory.mktemp("trained_runs") / "workspace"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(ws))
        return ws, make_runs()


# Under pytest-xdist (`-n 2 --dist loadfile`, pyproject's default) every test file stays on one worker, so
# a module's fixtures (a Ray cluster, a set of runs, a Streamlit server) are made once. (`loadgroup` would
# let several files share a worker, but with pytest 9.2 its group marks are silently ignored: xdist 3.8
# renames `item._nodeid`, which pytest no longer reads.) The files that take longest go first, since the
# scheduler hands files out in this order: neither worker is left with a long file at the end.
LONGEST_FIRST = ["test_ray.py", "test_sweeps.py", "test_journey.py", "test_template_switch.py", "test_tracking.py",
                 "test_blocks_browser.py", "test_sweep_browser.py", "test_crash_safety.py", "test_upload_browser.py",
                 "test_worker.py", "test_export.py", "test_build_browser.py", "test_inspect_browser.py",
                 "test_deploy_browser.py", "test_deploy_onnx.py", "test_templates.py", "test_corrupt_files.py",
                 "test_spare.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order
