"""Sweeps: the studio.sweep/1 file, the detached sweep process and its trials (real worker runs).

- the grid oracle: a grid sweep over 3 learning rates (through the CLI) gives 3 runs whose configs
  hold those values and whose final metrics equal those of the same 3 runs launched by hand;
- a TPE sweep of 8 trials with a median pruner prunes trials on a space with a hopeless lr (10), and
  its best trial is the best completed one;
- a width sweep, stopped, resumed, killed mid-way and resumed again: every trial once, the param
  counts those of PyTorch's own modules and of `summary`, and a kernel size that breaks the graph
  fails its trial with the analysis message while the sweep goes on;
- bad sweep files: errors naming the field;
- the Sweep tab of the Train page under AppTest.

Tiny configs (a 16-unit MLP on digits, tens of steps) keep it fast; most of the time is worker
start-up. Waits are bounded polls, never wall-clock assertions.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from studio.__main__ import main as cli
from studio.runs import Store, run_dir
from studio.sweeps import (
    SweepError,
    get_sweep,
    load_sweep,
    parse_sweep,
    resume_sweep,
    start_sweep,
    stop_sweep,
    sweep_summary,
    wait_sweep_process,
)
from studio.sweeps.control import read_state, sweep_dir
from studio.sweeps.study import load_study, open_study
from studio.training import TrainConfig
from tests.conftest import chain, train_here
from tests.conftest import wait_until as conftest_wait_until

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 600  # bound on waits: a loaded 2-core machine is slow, not broken
MLP = chain(("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
            ("fc1", "Linear", {"out_features": 16}), ("relu", "ReLU", None), ("fc2", "Linear", {"out_features": 10}),
            name="tiny-mlp")
CNN = chain(("input", "Input", {"shape": [1, 8, 8]}), ("conv", "Conv2d", {"out_channels": 2, "kernel_size": 3}),
            ("act", "ReLU", None), ("flat", "Flatten", None), ("fc1", "Linear", {"out_features": 16}),
            ("relu", "ReLU", None), ("fc2", "Linear", {"out_features": 10}), name="tiny-cnn")
BASE = {"max_steps": 20, "seed": 0, "probes": False, "eval_every": 5, "batch_size": 64}


@pytest.fixture(autouse=True)
def _two_slots(monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_RUNS", "2")


def write_sweep(directory: Path, graph_doc: dict = MLP, **fields) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "graph.json").write_text(json.dumps(graph_doc))
    doc = {"format": "studio.sweep/1", "graph": "graph.json", "data": "digits", "config": dict(BASE),
           "space": {"lr": {"log_uniform": [1e-3, 1e-1]}}, "objective": "val_accuracy", "direction": "maximize",
           "trials": 2, "parallel": 2, "sampler": "tpe", "pruner": "none", "backend": "local", **fields}
    path = directory / "sweep.json"
    path.write_text(json.dumps(doc))
    return path


def wait_until(predicate, what: str):
    return conftest_wait_until(predicate, what, POLL_S, poll=0.3)


def run_to_end(path: Path) -> dict:
    sweep_id = start_sweep(load_sweep(path))
    assert wait_sweep_process(sweep_id, timeout=POLL_S) == 0, (sweep_dir(sweep_id) / "log.txt").read_text()
    return sweep_summary(sweep_id)


def final_metrics(store: Store, run_id: str) -> dict:
    return {k: v for k, v in store.latest_metrics(run_id).items() if k not in ("samples_per_sec",)}


# ---- the grid oracle ------------------------------------------------------------------------------

def test_grid_sweep_equals_the_same_runs_launched_by_hand(tmp_path, capsys):
    rates = [0.003, 0.03, 0.3]
    path = write_sweep(tmp_path / "s", space={"lr": {"grid": rates}}, sampler="grid", trials=3)
    assert cli(["sweep", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    assert sorted(t["params"]["lr"] for t in summary["trials"]) == rates
    assert [t["status"] for t in summary["trials"]] == ["completed"] * 3

    store = Store()  # the same runs by hand, trained here by the worker's code (conftest.train_here)
    by_hand = {lr: train_here(MLP, "digits", TrainConfig(**BASE, lr=lr), store=store) for lr in rates}
    for trial in summary["trials"]:
        run = store.get_run(trial["run_id"])
        lr = trial["params"]["lr"]
        assert run.sweep_id == summary["sweep_id"] and run.tags == {"trial": trial["number"], "lr": lr}
        assert run.config["lr"] == lr
        assert store.get_run(by_hand[lr]).status == "completed"
        assert final_metrics(store, run.id) == final_metrics(store, by_hand[lr])
        assert trial["objective"] == store.latest_metrics(by_hand[lr])["val_accuracy"]
    assert summary["best"]["objective"] == max(t["objective"] for t in summary["trials"])

    assert cli(["runs", "--json"]) == 0
    listed = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert {t["run_id"] for t in summary["trials"]} | set(by_hand.values()) == set(listed)
    for trial in summary["trials"]:  # trials carry their sweep and parameters in the listing
        row = listed[trial["run_id"]]
        assert (row["sweep_id"], row["tags"]["lr"]) == (summary["sweep_id"], trial["params"]["lr"])
    assert all(listed[r]["sweep_id"] is None for r in by_hand.values())


# ---- TPE with a median pruner ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tpe_sweep(tmp_path_factory):
    """An 8-trial TPE sweep with a median pruner over a space where lr 10 is hopeless (run once).

    One trial at a time: the seeded TPE then draws the same trials on every machine (two at a time, what
    it drew depended on which trial finished first). Long enough by construction for the pruner: its
    decisions come at early evaluations, and a trial runs 600 steps, so its stop lands with most of the
    run still ahead. At 200 steps a trial often completed before the stop arrived (once the training
    step got faster), and nothing was pruned."""
    base = tmp_path_factory.mktemp("tpe")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(base / "workspace"))
        mp.setenv("STUDIO_MAX_RUNS", "2")
        path = write_sweep(base / "s", trials=8, parallel=1, pruner="median",
                           config={**BASE, "max_steps": 600, "eval_every": 10, "optimizer": "adam"},
                           space={"lr": {"choice": [0.003, 0.03, 10.0]}, "fc1.out_features": {"choice": [8, 16]}})
        summary = run_to_end(path)
    return base / "workspace", summary


def test_a_reader_following_a_new_sweep_never_breaks_its_study(tmp_path):
    """The CLI and the Sweeps page read a study while the sweep process makes it. Opening Optuna's
    storage on a half-made study.db stamps its schema version too, and the two stamps collided
    ("UNIQUE constraint failed: alembic_version.version_num", a CI failure of the test above)."""
    spec = load_sweep(write_sweep(tmp_path / "s"))
    directories = [tmp_path / f"sweep{i}" for i in range(5)]
    for d in directories:
        d.mkdir()
    errors, made = [], threading.Event()

    def follow():
        while not made.is_set():
            for i, d in enumerate(directories):
                try:
                    load_study(d, f"sweep{i}")
                except Exception as e:  # noqa: BLE001 - any error at all is the failure
                    errors.append(e)

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        studies = [open_study(d, spec, sweep_id=f"sweep{i}") for i, d in enumerate(directories)]
    finally:
        made.set()
        reader.join()
    assert not errors, errors[:2]
    assert [s.study_name for s in studies] == [f"sweep{i}" for i in range(5)]
    assert [load_study(d, f"sweep{i}").direction for i, d in enumerate(directories)] == [studies[0].direction] * 5


def test_tpe_sweep_prunes_hopeless_trials_and_reports_the_best(tpe_sweep, monkeypatch):
    workspace, summary = tpe_sweep
    monkeypatch.setenv("STUDIO_WORKSPACE", str(workspace))
    trials = summary["trials"]
    assert summary["status"] == "completed" and len(trials) == 8
    assert sorted(t["number"] for t in trials) == list(range(8))
    store = Store()
    runs = [r for r in store.list_runs() if r.sweep_id == summary["sweep_id"]]
    assert len(runs) == 8 and {r.tags["trial"] for r in runs} == set(range(8))
    pruned = [t for t in trials if t["status"] == "pruned"]
    assert pruned, [(t["params"], t["status"], t["objective"]) for t in trials]
    for t in pruned:  # ended early, keeping what it logged
        run = store.get_run(t["run_id"])
        assert run.step < run.total_steps
        assert store.read_metrics(run.id, keys=["val_accuracy"])
        assert (run_dir(run.id) / "checkpoints" / "last.pt").exists()
    completed = [t for t in trials if t["status"] == "completed"]
    assert completed and summary["best"]["objective"] == max(t["objective"] for t in completed)
    assert summary["best"]["run_id"] in {t["run_id"] for t in completed}


# ---- width sweep, killed mid-way and resumed ------------------------------------------------------

def torch_param_count(width: int, kernel: int) -> int:
    side = 8 - kernel + 1
    modules = [nn.Conv2d(1, 2, kernel), nn.Linear(2 * side * side, width), nn.Linear(width, 10)]
    return sum(p.numel() for m in modules for p in m.parameters())


def test_width_sweep_stopped_killed_and_resumed_runs_every_trial_once(tmp_path, capsys, gate):
    path = write_sweep(tmp_path / "s", graph_doc=CNN, sampler="grid", trials=4, parallel=1,
                       config={**BASE, "max_steps": 300, "eval_every": 50},
                       space={"fc1.out_features": {"grid": [8, 24]}, "conv.kernel_size": {"grid": [3, 9]}})
    gate.hold(10)  # every trial waits at step 10 until the test lets it go: mid-flight on any machine
    sweep_id = start_sweep(load_sweep(path))
    store = Store()

    # A stop: the trial held mid-flight stops there with a checkpoint and the sweep ends `stopped`.
    run_id, step = gate.wait_held("a trial held at step 10")
    assert step == 10
    stop_sweep(sweep_id)
    assert wait_sweep_process(sweep_id, timeout=POLL_S) == 0
    stopped = store.get_run(run_id)
    assert get_sweep(sweep_id).status == "stopped" and stopped.status == "stopped" and stopped.step == 10
    # Resumed (the trial goes on from its checkpoint and is held at the next step), then killed outright
    # while the trial is under way: the sweep shows `lost`.
    assert resume_sweep(sweep_id) == "starting"
    assert gate.wait_held("the resumed trial under way again", run_id) == (run_id, 11)
    os.kill(read_state(sweep_dir(sweep_id))["pid"], signal.SIGKILL)  # no goodbye: the worst case
    wait_sweep_process(sweep_id, timeout=60)
    assert get_sweep(sweep_id).status == "lost"
    gate.release()
    assert resume_sweep(sweep_id) == "starting"
    assert wait_sweep_process(sweep_id, timeout=POLL_S) == 0, (sweep_dir(sweep_id) / "log.txt").read_text()

    summary = sweep_summary(sweep_id)
    assert summary["status"] == "completed"
    assert sorted(t["number"] for t in summary["trials"]) == [0, 1, 2, 3]
    runs = [r for r in store.list_runs() if r.sweep_id == sweep_id]
    assert len(runs) == 2 and len({r.tags["trial"] for r in runs}) == 2  # no trial launched twice
    assert "resumed from the checkpoint at step 10" in (run_dir(run_id) / "log.txt").read_text()
    by_status = {}
    for t in summary["trials"]:
        by_status.setdefault(t["status"], []).append(t)
    assert len(by_status["completed"]) == 2 and len(by_status["failed"]) == 2
    for t in by_status["failed"]:  # kernel 9 on an 8x8 image: the analysis message, and no run
        assert t["params"]["conv.kernel_size"] == 9 and t["run_id"] is None
        assert "conv" in t["error"] and "kernel_size" in t["error"], t["error"]
    counts = {}
    for t in by_status["completed"]:
        width = t["params"]["fc1.out_features"]
        assert t["params"]["conv.kernel_size"] == 3
        graph_path = run_dir(t["run_id"]) / "graph.json"
        assert cli(["summary", str(graph_path), "--json"]) == 0
        said = json.loads(capsys.readouterr().out)["total_params"]
        ckpt = torch.load(run_dir(t["run_id"]) / "checkpoints" / "last.pt", weights_only=True)
        assert said == torch_param_count(width, 3) == sum(v.numel() for v in ckpt["model"].values())
        counts[width] = said
    assert counts[24] > counts[8]


# ---- bad sweep files ------------------------------------------------------------------------------

@pytest.mark.parametrize("change, field, message", [
    ({"space": {"fc9.out_features": {"choice": [8]}}}, "space.fc9.out_features", "unknown node 'fc9'"),
    ({"space": {"fc1.out_channels": {"choice": [8]}}}, "space.fc1.out_channels", "unknown param 'out_channels'"),
    ({"space": {"learning_rate": {"uniform": [0.1, 0.2]}}}, "space.learning_rate", "unknown param 'learning_rate'"),
    ({"space": {"lr": {"uniform": [0.1, 0.1]}}}, "space.lr", r"range \[0.1, 0.1\] is empty"),
    ({"space": {"batch_size": {"choice": []}}}, "space.batch_size", "choice is empty"),
    ({"space": {"lr": {"log_uniform": [0, 0.1]}}}, "space.lr", "log_uniform needs low > 0"),
    ({"space": {"batch_size": {"choice": [32, "64"]}}}, "space.batch_size", "must be an integer, got '64'"),
    ({"space": {"optimizer": {"uniform": [0, 1]}}}, "space.optimizer", "use {\"choice\""),
    ({"space": {"lr": {"normal": [0, 1]}}}, "space.lr", "must be one of"),
    ({"space": {"fc1.out_features": {"choice": [0]}}}, "space.fc1.out_features", "out of range"),
    ({"space": {"lr": {"grid": [0.1]}}}, "space.lr", "set \"sampler\": \"grid\""),
    ({"sampler": "grid"}, "space.lr", "the grid sampler needs the values"),
    ({"trials": "8"}, "trials", "whole number of trials"),
    ({"trials": 0}, "trials", "out of range"),
    ({"sampler": "bayes"}, "sampler", "must be one of 'tpe', 'random', 'grid'"),
    ({"pruner": "hyperband"}, "pruner", "'none', 'median', 'halving'"),
    ({"objective": "accuracy"}, "objective", "logged metric"),
    ({"config": {"epochs": 0}}, "config.epochs", "out of range"),
    ({"data": "nope"}, "data", "nope"),
    ({"graph": "missing.json"}, "graph", "missing.json"),
    ({"format": "studio.sweep/2"}, "format", "studio.sweep/1"),
    ({"extra": 1}, "extra", "unknown field 'extra'"),
    ({"sampler": "grid", "space": {"lr": {"grid": [0.1, 0.2]}}, "trials": 3}, "trials", "grid's 2 points"),
])
def test_bad_sweep_files_name_the_field(tmp_path, change, field, message):
    path = write_sweep(tmp_path, **change)
    with pytest.raises(SweepError, match=message) as info:
        load_sweep(path)
    assert field in [f for f, _ in info.value.problems], info.value.problems
    assert f"{field}: " in str(info.value)


def test_a_good_sweep_file_parses_with_its_defaults(tmp_path):
    doc = json.loads(write_sweep(tmp_path).read_text())
    for key in ("direction", "parallel", "sampler", "pruner", "backend"):
        del doc[key]
    spec = parse_sweep(doc, base_dir=tmp_path)
    assert (spec.direction, spec.parallel, spec.sampler, spec.pruner, spec.backend) == (
        "maximize", 1, "tpe", "none", "local")
    assert spec.space["lr"].kind == "log_uniform" and spec.graph.name == "tiny-mlp"


def test_a_ray_sweep_hands_its_ray_settings_to_every_trial(tmp_path):
    from studio.runs.ray_backend import RaySettings

    spec = load_sweep(write_sweep(tmp_path, backend="ray", ray={"workers": 2, "address": "auto"}))
    assert spec.backend_settings() == RaySettings(workers=2, address="auto").to_dict()
    assert load_sweep(write_sweep(tmp_path)).backend_settings() is None  # local trials
    with pytest.raises(SweepError) as e:
        load_sweep(write_sweep(tmp_path, backend="ray", ray={"workers": 0}))
    assert [f for f, _ in e.value.problems] == ["ray"] and "workers=0" in e.value.problems[0][1]
    with pytest.raises(SweepError, match="backend"):
        load_sweep(write_sweep(tmp_path, ray={"workers": 2}))


# ---- the Sweep tab under AppTest ------------------------------------------------------------------

def test_sweep_view_renders_under_apptest(tpe_sweep, monkeypatch):
    from streamlit.testing.v1 import AppTest

    workspace, summary = tpe_sweep
    monkeypatch.setenv("STUDIO_WORKSPACE", str(workspace))
    (workspace / "graphs").mkdir(parents=True, exist_ok=True)
    (workspace / "graphs" / "_autosave.json").write_text(json.dumps(MLP))
    (workspace / "graphs" / "_autosave.meta.json").write_text(json.dumps({"dataset_id": "digits"}))
    at = AppTest.from_file(str(ROOT / "pages" / "3_Train.py"), default_timeout=60)
    at.query_params["studio.train.tab"] = "Sweep"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(b.label == "Start sweep" for b in at.button)
    frames = [f for f in at.dataframe if "status" in f.value.columns]  # not the form's search-space table
    assert frames, "the trial table"
    table = frames[0].value
    assert len(table) == 8 and set(table["status"]) >= {"pruned", "completed"}
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any("best so far" in t for t in titles) and any("Parameters" in t for t in titles)
    assert any("importance" in t.lower() for t in titles), titles
    completed = int((table["status"] == "completed").sum())  # fewer than 20: the chart says how loosely to read it
    assert completed < 20 and f"fitted on {completed} completed trial" in " ".join(c.value for c in at.caption)
    assert any(b.label == "Open the best trial in Build" for b in at.button)
