"""Load: four runs train at once (STUDIO_MAX_RUNS=4) while the Train page refreshes again and again.

Every run completes with exactly the metric rows its config and dataset call for (steps x keys,
evaluations x keys), and the page keeps rendering: each refresh (`at.run()`, the whole page with
its live fragment, all four runs on the charts) is timed. The figures are printed; the only
assertion on time is a generous bound on the median, never on a single refresh.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.data import get_info
from studio.runs import Store
from studio.training import TrainConfig
from tests.reliability.helpers import POLL_S, kill_leftover_workers, mlp_doc, store_problems

ROOT = Path(__file__).resolve().parents[2]
GOAL_S = 1.0               # the goal for one refresh (server time)
MEDIAN_BOUND_S = 3 * GOAL_S  # generous: a 2-core machine shared with four workers and other jobs
IRIS = mlp_doc([4], 16, 3, name="iris-mlp")
CONFIGS = {  # four different shapes of run: per-epoch and per-N-step evaluation, clipping, probes
    "epochs": TrainConfig(epochs=30, batch_size=16, lr=1e-2, seed=1),
    "max steps": TrainConfig(max_steps=240, batch_size=8, lr=1e-2, eval_every=25, seed=2, probes=False),
    "clipped": TrainConfig(epochs=25, batch_size=12, lr=1e-2, grad_clip=1.0, seed=3, probes=False),
    "checkpoints": TrainConfig(max_steps=200, batch_size=32, lr=1e-2, eval_every=40, checkpoint_every=10, seed=4),
}


def expected_rows(cfg: TrainConfig, n_train: int) -> dict[str, int]:
    """Metric rows per key that a completed run must have, from its config and the dataset's size."""
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    if cfg.eval_every > 0:
        evals = {s for s in range(cfg.eval_every, total + 1, cfg.eval_every)} | {total}
    else:
        evals = {e * steps_per_epoch for e in range(1, total // steps_per_epoch + 1)} | {total}
    train_keys = ["train_loss", "lr", "samples_per_sec"] + (["grad_norm"] if cfg.grad_clip > 0 else [])
    return {**{k: total for k in train_keys}, "val_loss": len(evals), "val_accuracy": len(evals)}


@pytest.fixture()
def busy_page(_workspace, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_RUNS", "4")
    (_workspace / "graphs").mkdir(parents=True)
    (_workspace / "graphs" / "_autosave.json").write_text(json.dumps(IRIS))
    (_workspace / "graphs" / "_autosave.meta.json").write_text(json.dumps({"dataset_id": "iris"}))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/3_Train.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    store = Store(_workspace / "studio.db")
    yield at, store
    kill_leftover_workers(store)


def _launch(at: AppTest, name: str, cfg: TrainConfig) -> str:
    """Launch a run through the page's own form, as a user would."""
    for key, value in cfg.to_dict().items():
        widget_key = f"studio.train.cfg.{key}"
        if widget_key in at.session_state:
            at.session_state[widget_key] = ", ".join(map(str, value)) if isinstance(value, list) else value
    at.text_input(key="studio.train.run_name").set_value(name)
    next(b for b in at.button if b.label == "Launch run").click()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Launched" in s.value for s in at.success), [e.value for e in at.error]
    return at.session_state["studio.train.picked_runs"][0]


def test_four_runs_at_once_complete_exactly_while_the_train_page_refreshes(busy_page):
    at, store = busy_page
    run_ids = {name: _launch(at, name, cfg) for name, cfg in CONFIGS.items()}
    assert len(set(run_ids.values())) == 4
    at.session_state["studio.train.picked_runs"] = list(run_ids.values())  # all four on the charts

    timings, peak_running = [], 0
    deadline = time.monotonic() + POLL_S
    while True:
        t0 = time.perf_counter()
        at.run()
        timings.append(time.perf_counter() - t0)
        assert not at.exception, [e.message for e in at.exception]
        runs = {r.id: r for r in store.list_runs()}
        peak_running = max(peak_running, sum(r.status == "running" for r in runs.values()))
        if all(runs[i].status not in ("queued", "running") for i in run_ids.values()):
            break
        assert time.monotonic() < deadline, f"runs still going after {POLL_S} s: {[r.status for r in runs.values()]}"
        time.sleep(0.2)
    at.run()  # one more refresh: the page shows the finished runs
    assert not at.exception

    median = statistics.median(timings)
    print(f"\nTrain page refresh with 4 runs training, {len(timings)} refreshes: median {median:.3f} s, "
          f"min {min(timings):.3f} s, max {max(timings):.3f} s (goal {GOAL_S} s); peak running {peak_running}")

    n_train = get_info("iris").sizes["train"]
    for name, run_id in run_ids.items():
        run = store.get_run(run_id)
        assert run.status == "completed", (name, run.status, run.error)
        counts: dict[str, int] = {}
        for m in store.read_metrics(run_id):
            counts[m.key] = counts.get(m.key, 0) + 1
        assert counts == expected_rows(CONFIGS[name], n_train), name
        assert run.step == run.total_steps == expected_rows(CONFIGS[name], n_train)["train_loss"]
    assert store_problems(store.path) == []
    assert peak_running >= 2  # they did overlap (all four at once unless a worker finished before the last started)

    badges = " ".join(m.value for m in at.markdown)
    assert all(f":green-badge[completed] {name}" in badges for name in CONFIGS)
    loss = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["layout"]["title"]["text"] == "Loss")
    traces = [t.get("name") or "" for t in loss["data"]]
    assert all(any(t.startswith(f"{name} · ") for t in traces) for name in CONFIGS), traces  # all four drawn

    assert len(timings) >= 5
    assert median < MEDIAN_BOUND_S, f"median refresh {median:.2f} s"
