"""Warm spare workers (studio.runs.spare): a launch handed to a spare trains exactly like a cold start,
a spare that does not answer never gets the run, and an idle spare leaves nothing behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from studio.runs import Store, keep_spare_ready, list_runs, start_run
from studio.runs import spare as protocol
from studio.runs.launcher import pid_alive
from studio.training import TrainConfig
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(600)
GRAPH = {"format": "studio.graph/1", "name": "spare-mlp",
         "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 8, 8]}}, {"id": "flat", "type": "Flatten"},
                   {"id": "fc1", "type": "Linear", "params": {"out_features": 16}}, {"id": "act", "type": "ReLU"},
                   {"id": "fc2", "type": "Linear", "params": {"out_features": 10}}],
         "edges": [{"source": a, "target": b} for a, b in (("input", "flat"), ("flat", "fc1"), ("fc1", "act"),
                                                           ("act", "fc2"))]}
CONFIG = TrainConfig(epochs=1, batch_size=32, seed=5)


@pytest.fixture
def spares(_workspace, monkeypatch):
    monkeypatch.setenv("STUDIO_SPARE_WORKER", "1")
    directory = Path(os.environ["STUDIO_WORKSPACE"]) / "spares"
    yield directory
    for pid_file in directory.glob(f"*/{protocol.PID}"):  # never leave a spare behind
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def finished(run_id: str):
    list_runs()  # reconcile
    run = Store().get_run(run_id)
    return run if run.status not in ("queued", "running") else None


def losses(run_id: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in Store().read_metrics(run_id, keys=["train_loss"])]


def test_a_launch_handed_to_a_warm_spare_trains_exactly_like_a_cold_start(spares, monkeypatch):
    keep_spare_ready()
    keep_spare_ready()  # one spare per workspace, however often the page asks
    assert len(list(spares.iterdir())) == 1
    spare = wait_until(lambda: next((d for d in spares.iterdir() if (d / protocol.READY).exists()), None),
                     "the spare to be ready")
    worker_pid = int((spare / protocol.READY).read_text())
    warm = start_run(GRAPH, "digits", CONFIG)
    run = wait_until(lambda: finished(warm), "the warm run to end")
    assert run.status == "completed" and run.pid == worker_pid
    events = [e.message for e in Store().read_events(warm)]
    assert any(m.startswith("worker started (warm spare") for m in events), events
    log = (Path(os.environ["STUDIO_WORKSPACE"]) / "runs" / warm / "log.txt").read_text()
    assert f"completed {run.step} steps" in log
    wait_until(lambda: not spare.exists(), "the used spare's folder to be removed")

    monkeypatch.setenv("STUDIO_SPARE_WORKER", "0")
    cold = start_run(GRAPH, "digits", CONFIG)
    wait_until(lambda: finished(cold), "the cold run to end")
    assert not any("warm spare" in e.message for e in Store().read_events(cold))
    assert losses(warm) == losses(cold) and len(losses(warm)) == run.step > 0  # bit for bit, every step


def test_a_spare_that_does_not_answer_never_gets_the_run(spares):
    silent = spares / "silent"  # says ready, but no supervisor of a spare is there to take a claim
    silent.mkdir(parents=True)
    (silent / protocol.READY).write_text(str(os.getpid()))
    (silent / protocol.PID).write_text(str(os.getpid()))
    run_id = start_run(GRAPH, "digits", CONFIG)
    assert (silent / protocol.REVOKED).exists() and not (silent / protocol.CLAIM).exists()
    run = wait_until(lambda: finished(run_id), "the run started the usual way to end")
    assert run.status == "completed"
    assert not any("warm spare" in e.message for e in Store().read_events(run_id))


def test_an_idle_spare_ends_and_leaves_nothing(spares, monkeypatch):
    monkeypatch.setenv("STUDIO_SPARE_IDLE_S", "1")
    keep_spare_ready()
    (spare,) = list(spares.iterdir())
    supervisor = int((spare / protocol.PID).read_text())
    wait_until(lambda: not spare.exists(), "the idle spare to remove its folder")
    wait_until(lambda: not pid_alive(supervisor), "the idle spare's supervisor to end", 30)


def test_no_spare_when_turned_off(_workspace, monkeypatch):
    monkeypatch.setenv("STUDIO_SPARE_WORKER", "0")
    keep_spare_ready()
    assert not (Path(os.environ["STUDIO_WORKSPACE"]) / "spares").exists()


def test_no_spare_warms_up_while_a_local_run_trains(spares):
    """The warm-up is seconds of CPU: on two cores it would be taken from the training run."""
    Store().create_run("busy", name="busy", graph=GRAPH, config={}, dataset_id="digits", status="running")
    keep_spare_ready()
    assert not spares.exists() or list(spares.iterdir()) == []
