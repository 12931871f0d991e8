"""Crash safety: real workers SIGKILLed at seeded random moments, ten times, then resumed to the end.

Two victim runs are killed five times each while a reference run with the same graph, data, config
and seed trains undisturbed next to them. Half the kills land a random delay after the worker's
process appears (start-up: imports, data, restore), half a random delay after the life's first
committed metric (mid-training, around checkpoints and metric commits). After every kill:

- reconcile marks the run `lost`, and the store is consistent (integrity_check, no duplicate
  (run, step, key) row, steps strictly increasing per key, runs.step = last committed step);
- every metric row committed before the kill is still there, unchanged;
- every checkpoint left behind loads with weights_only=True.

Resumed to completion, each victim has exactly the reference's steps, metric rows and losses.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from studio.runs import Store, reconcile, resume_run, run_dir, start_run
from studio.runs.launcher import pid_alive
from studio.training import TrainConfig
from studio.training.callbacks import load_checkpoint
from tests.reliability.helpers import kill_leftover_workers, mlp_doc, store_problems, wait_for

SEED = 20261124
KILLS_PER_VICTIM = 5
TOTAL_STEPS = 4000  # enough that five kills always land before the end, at ~1,500 steps/s here
EVAL_EVERY = 100
CONFIG = TrainConfig(max_steps=TOTAL_STEPS, batch_size=16, lr=1e-3, eval_every=EVAL_EVERY, checkpoint_every=20,
                     seed=3, probes=False, device="cpu")
# Metrics whose values depend only on the seed (samples_per_sec and wall_time depend on the clock).
DETERMINISTIC = ("train_loss", "lr", "val_loss", "val_accuracy")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    ws = tmp_path_factory.mktemp("crash-workspace")
    mp.setenv("STUDIO_WORKSPACE", str(ws))
    mp.setenv("STUDIO_MAX_RUNS", "3")
    yield ws
    kill_leftover_workers(Store())
    mp.undo()


@pytest.fixture(autouse=True)
def _workspace(workspace):  # overrides conftest's per-test workspace: these tests share one
    return workspace


def _checkpoint_report(run_id: str) -> dict:
    """Every .pt file of the run loaded with weights_only=True: {file name: step} (or the error)."""
    out = {}
    for path in sorted((run_dir(run_id) / "checkpoints").glob("*.pt")):
        try:
            out[path.name] = load_checkpoint(path)["position"]["step"]
        except Exception as e:  # recorded, asserted on below
            out[path.name] = f"{type(e).__name__}: {e}"
    return out


def _kill(store: Store, run_id: str, pid: int, moment: str) -> dict:
    before = store.read_metrics(run_id)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), f"pid {pid} to die", timeout=30)
    reconcile(store)
    run = store.get_run(run_id)
    return {"moment": moment, "pid": pid, "step": run.step, "status": run.status, "error": run.error, "before": before,
            "after": store.read_metrics(run_id), "problems": store_problems(store.path),
            "checkpoints": _checkpoint_report(run_id), "leftover_tmp": sorted(
                p.name for p in (run_dir(run_id) / "checkpoints").glob("*.tmp"))}


@pytest.fixture(scope="module")
def scenario(workspace):
    store = Store()
    graph = mlp_doc([1, 8, 8], 32, 10, name="crash-mlp")
    reference = start_run(graph, "digits", CONFIG, name="reference")
    victims = [start_run(graph, "digits", CONFIG, name=f"victim {i}") for i in (1, 2)]
    rng = random.Random(SEED)
    state = {v: {"kills": [], "stage": "wait_pid", "last_pid": None} for v in victims}
    deadline = time.monotonic() + 600
    while any(len(s["kills"]) < KILLS_PER_VICTIM and s["stage"] != "ended" for s in state.values()):
        assert time.monotonic() < deadline, f"the kill loop did not finish: {state}"
        reconcile(store)
        now = time.monotonic()
        for v, s in state.items():
            if len(s["kills"]) >= KILLS_PER_VICTIM or s["stage"] == "ended":
                continue
            run = store.get_run(v)
            if run.status not in ("queued", "running"):
                s["stage"] = "ended"  # finished before all its kills: reported by the tests below
                continue
            if s["stage"] == "wait_pid":
                if run.status == "running" and run.pid and run.pid != s["last_pid"] and pid_alive(run.pid):
                    s["pid"] = run.pid
                    if rng.random() < 0.5:
                        s["moment"], s["at"], s["stage"] = "start-up", now + rng.uniform(0.0, 1.5), "armed"
                    else:
                        s["moment"], s["base_step"], s["stage"] = "training", run.step, "wait_progress"
            elif s["stage"] == "wait_progress":
                if run.step > s["base_step"]:
                    s["at"], s["stage"] = now + rng.uniform(0.0, 0.3), "armed"
            elif s["stage"] == "armed" and now >= s["at"]:
                s["kills"].append(_kill(store, v, s["pid"], s["moment"]))
                s["last_pid"], s["stage"] = s["pid"], "wait_pid"
                resume_run(v, store=store)
        time.sleep(0.01)
    wait_for(lambda: all(store.get_run(r).status not in ("queued", "running") for r in (reference, *victims)),
             "every run to end")
    return {"store": store, "reference": reference, "victims": victims, "state": state}


def _kills(scenario) -> list[dict]:
    return [k for s in scenario["state"].values() for k in s["kills"]]


def test_ten_kills_at_random_moments_each_leave_the_run_lost(scenario):
    kills = _kills(scenario)
    print("kills (moment, committed step, checkpoints):",
          [(k["moment"], k["step"], k["checkpoints"]) for k in kills], "leftover temp files:",
          [k["leftover_tmp"] for k in kills if k["leftover_tmp"]])
    assert len(kills) == 2 * KILLS_PER_VICTIM, {v: s["stage"] for v, s in scenario["state"].items()}
    assert {k["moment"] for k in kills} == {"start-up", "training"}
    for k in kills:
        assert k["status"] == "lost", k["status"]
        assert k["error"].startswith(f"lost: its worker (pid {k['pid']}) ended without reporting a result")
        assert "resume it to continue from the last checkpoint" in k["error"]


def test_store_stays_consistent_after_every_kill(scenario):
    for k in _kills(scenario):
        assert k["problems"] == [], k["problems"]
    assert store_problems(scenario["store"].path) == []


def test_no_metric_committed_before_a_kill_is_lost(scenario):
    killed_mid_training = 0
    for k in _kills(scenario):
        before, after = k["before"], k["after"]
        assert after[:len(before)] == before  # same rows, same order, same values and wall times
        killed_mid_training += bool(before) and k["moment"] == "training"
    assert killed_mid_training >= 1
    # and once resumed: what was committed before each kill is in the final store, with the same values
    store = scenario["store"]
    for v, s in scenario["state"].items():
        final = {(m.step, m.key): m.value for m in store.read_metrics(v) if m.key in DETERMINISTIC}
        for k in s["kills"]:
            for m in k["before"]:
                if m.key in DETERMINISTIC:
                    assert final[(m.step, m.key)] == m.value, (m, final.get((m.step, m.key)))


def test_every_checkpoint_left_behind_loads_with_weights_only(scenario):
    seen = 0
    for k in _kills(scenario):
        for name, step in k["checkpoints"].items():
            assert isinstance(step, int), f"{name}: {step}"
            assert 0 < step <= TOTAL_STEPS
            seen += 1
        assert set(k["checkpoints"]) <= {"last.pt", "best.pt"}
    assert seen >= 1


def test_resume_completes_with_the_uninterrupted_runs_steps_and_losses(scenario):
    store, reference = scenario["store"], scenario["reference"]
    ref = store.get_run(reference)
    assert ref.status == "completed" and ref.step == ref.total_steps == TOTAL_STEPS
    eval_steps = list(range(EVAL_EVERY, TOTAL_STEPS + 1, EVAL_EVERY))
    expected_rows = 3 * TOTAL_STEPS + 2 * len(eval_steps)  # train_loss, lr, samples_per_sec; val_loss, val_accuracy
    ref_rows = store.read_metrics(reference)
    assert len(ref_rows) == expected_rows
    ref_values = [(m.step, m.key, m.value) for m in ref_rows if m.key in DETERMINISTIC]
    for v in scenario["victims"]:
        run = store.get_run(v)
        assert run.status == "completed", (run.status, run.error)
        assert run.step == run.total_steps == TOTAL_STEPS
        rows = store.read_metrics(v)
        assert [m.step for m in rows if m.key == "train_loss"] == list(range(1, TOTAL_STEPS + 1))
        assert [m.step for m in rows if m.key == "val_accuracy"] == eval_steps
        assert len(rows) == expected_rows
        # bit-identical to the undisturbed run: every kill resumed from an exact checkpoint
        assert sorted((m.step, m.key, m.value) for m in rows if m.key in DETERMINISTIC) == sorted(ref_values)
        assert load_checkpoint(run_dir(v) / "checkpoints" / "last.pt")["position"]["step"] == TOTAL_STEPS
        assert not list((run_dir(v) / "checkpoints").glob(".*.tmp")), "a resumed run clears cut-short writes"
        events = [e.message for e in store.read_events(v)]
        assert sum(m.startswith("marked lost: its worker (pid") for m in events) == KILLS_PER_VICTIM


def test_a_run_killed_before_its_first_checkpoint_starts_over_without_duplicate_rows(scenario):
    """With checkpoints only at epoch ends, a kill inside the first epoch leaves metrics but no last.pt."""
    store = scenario["store"]
    cfg = TrainConfig(max_steps=300, batch_size=4, lr=1e-3, eval_every=100, checkpoint_every=0, seed=5,
                      probes=False, device="cpu")  # 315 steps per epoch: no last.pt before step 315
    run_id = start_run(mlp_doc([1, 8, 8], 16, 10, name="early-kill"), "digits", cfg, name="early kill")
    run = wait_for(lambda: (r := store.get_run(run_id)).step > 0 and r.pid and r, "the first committed metrics")
    assert not (run_dir(run_id) / "checkpoints" / "last.pt").exists()
    before = store.read_metrics(run_id)
    os.kill(run.pid, signal.SIGKILL)
    wait_for(lambda: store.get_run(run_id).status == "lost", "the run to be marked lost")
    assert store.read_metrics(run_id)[:len(before)] == before
    resume_run(run_id, store=store)
    wait_for(lambda: store.get_run(run_id).status not in ("queued", "running"), "the resumed run to end")
    run = store.get_run(run_id)
    assert run.status == "completed" and run.step == 300
    assert [m.step for m in store.read_metrics(run_id, keys=["train_loss"])] == list(range(1, 301))
    assert store_problems(store.path) == []
    assert any(e.message == "no checkpoint to resume from: training starts over from step 0"
               for e in store.read_events(run_id))
