"""Runs through real worker processes and the store: learning, determinism, stop/resume, SIGKILL,
divergence, failures, concurrency with a queue, and the CLI.

One scenario drives five runs at once (limit 3, so two wait as `queued`) to keep the file fast:
A is the reference, B is stopped and resumed, C is SIGKILLed and resumed, D diverges, E fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

import pytest
import torch

from studio.errors import TrainError
from studio.runs import Store, list_runs, reconcile, resume_run, run_dir, start_run, stop_run
from studio.runs.launcher import pid_alive
from studio.training import TrainConfig
from studio.training.callbacks import load_checkpoint
from studio.training.cli import cmd_resume, cmd_runs, cmd_stop, cmd_train
from studio.training.gate import GATE_ENV
from studio.training.probes import load_snapshot, read_index
from studio.training.worker import human_message
from tests.conftest import RunGate

DEADLINE_S = 240


def mlp(width: int, classes: int = 10) -> dict:
    chain = [("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
             ("fc1", "Linear", {"out_features": width}), ("relu1", "ReLU", None),
             ("fc2", "Linear", {"out_features": width}), ("relu2", "ReLU", None),
             ("fc3", "Linear", {"out_features": classes})]
    return {"format": "studio.graph/1", "name": f"mlp{width}",
            "nodes": [{"id": i, "type": t, **({"params": p} if p else {})} for i, t, p in chain],
            "edges": [{"source": a[0], "target": b[0]} for a, b in zip(chain, chain[1:], strict=False)]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    ws = tmp_path_factory.mktemp("workspace")
    mp.setenv("STUDIO_WORKSPACE", str(ws))
    mp.setenv("STUDIO_MAX_RUNS", "3")
    mp.setenv(GATE_ENV, str(ws.parent / "gate"))
    yield ws
    for run in Store().list_runs(("running",)):  # never leave a worker behind
        if run.pid and pid_alive(run.pid):
            os.kill(run.pid, signal.SIGKILL)
    mp.undo()


@pytest.fixture(autouse=True)
def _workspace(workspace):  # overrides conftest's per-test workspace: these tests share one
    return workspace


def wait_for(predicate, what: str):
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        reconcile()
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; runs: {[(r.id, r.status, r.step) for r in list_runs()]}")


def losses(store: Store, run_id: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in store.read_metrics(run_id, keys=["train_loss"])]


@pytest.fixture(scope="module")
def scenario(workspace):
    store = Store()
    cfg = TrainConfig(max_steps=300, batch_size=32, lr=1e-3, eval_every=50, checkpoint_every=25, seed=7)
    a, b, c = (start_run(mlp(1024), "digits", cfg, name=n) for n in ("reference", "stopped", "killed"))
    d = start_run(mlp(32), "digits", TrainConfig(max_steps=100, optimizer="sgd", lr=1e12, checkpoint_every=1),
                  name="diverges")
    e = start_run(mlp(32, classes=7), "digits", TrainConfig(max_steps=10), name="wrong output")
    out = {"a": a, "b": b, "c": c, "d": d, "e": e, "store": store}
    out["queued_at_start"] = sorted(r.name for r in store.list_runs("queued"))
    out["max_running"] = 0

    gate = RunGate(os.environ[GATE_ENV])

    def held_at(run_id, step):  # every run reaching `step` waits there until the test moves the gate
        out["max_running"] = max(out["max_running"], len(store.list_runs("running")))
        return gate.held().get(run_id) == step

    gate.hold(30)
    wait_for(lambda: held_at(b, 30), "run B held at step 30")
    stop_run(b)
    wait_for(lambda: store.get_run(b).status == "stopped", "run B to stop")
    gate.hold(60)
    wait_for(lambda: held_at(c, 60) and (run_dir(c) / "checkpoints" / "last.pt").exists(), "run C held at step 60")
    out["c_before_kill"] = store.read_metrics(c)
    os.kill(store.get_run(c).pid, signal.SIGKILL)
    wait_for(lambda: store.get_run(c).status == "lost", "run C to be marked lost")
    out["c_after_kill"] = store.read_metrics(c)
    out["c_checkpoint"] = load_checkpoint(run_dir(c) / "checkpoints" / "last.pt")
    gate.release()
    out["b_stopped"] = store.get_run(b)
    out["b_checkpoint_step"] = load_checkpoint(run_dir(b) / "checkpoints" / "last.pt")["position"]["step"]
    resume_run(b)
    resume_run(c)
    wait_for(lambda: all(store.get_run(r).status not in ("queued", "running") for r in (a, b, c, d, e)),
             "all runs to end")
    return out


def test_queue_and_concurrency(scenario):
    assert scenario["queued_at_start"] == ["diverges", "wrong output"]
    assert scenario["max_running"] == 3


def test_reference_run_learns_and_records(scenario):
    store, a = scenario["store"], scenario["a"]
    run = store.get_run(a)
    assert run.status == "completed" and run.step == run.total_steps == 300
    final = store.latest_metrics(a)
    assert final["val_accuracy"] >= 0.90
    assert run.best_metric_name == "val_accuracy" and run.best_metric >= final["val_accuracy"]
    assert [s for s, _ in losses(store, a)] == list(range(1, 301))
    assert [m.step for m in store.read_metrics(a, keys=["val_accuracy"])] == [50, 100, 150, 200, 250, 300]
    best = load_checkpoint(run_dir(a) / "checkpoints" / "best.pt")
    assert set(best["model"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}
    confusion = [json.loads(line) for line in (run_dir(a) / "confusion.jsonl").read_text().splitlines()]
    assert [c["step"] for c in confusion] == [50, 100, 150, 200, 250, 300]
    index = read_index(run_dir(a) / "probes")
    assert index[0]["step"] == 0 and index[-1]["step"] == 300
    entry = index[-1]
    assert set(entry["feature_maps"]) == {"relu1", "relu2"} and entry["feature_maps"]["relu1"]["shape"] == [8, 1024]
    arrays = load_snapshot(run_dir(a) / "probes", entry)
    assert arrays["fmap/relu2"].shape == (8, 1024) and arrays["whist/fc1.weight"].sum() == 1024 * 64
    assert set(entry["grad_norms"]) == {"fc1", "fc2", "fc3"}
    assert "completed 300 steps" in (run_dir(a) / "log.txt").read_text()


def test_identical_runs_give_identical_losses_and_stop_resume_keeps_the_step_count(scenario):
    store, a, b = scenario["store"], scenario["a"], scenario["b"]
    stopped = scenario["b_stopped"]
    assert stopped.step == 30 and scenario["b_checkpoint_step"] == stopped.step
    run = store.get_run(b)
    assert run.status == "completed" and run.step == run.total_steps == 300
    assert losses(store, b) == losses(store, a)  # same seed: bit-identical, across the stop too
    assert any("stop requested" == e.message for e in store.read_events(b))


def test_sigkilled_worker_is_lost_keeps_its_metrics_and_resumes(scenario):
    store, a, c = scenario["store"], scenario["a"], scenario["c"]
    before, after = scenario["c_before_kill"], scenario["c_after_kill"]
    assert len(before) > 0 and after[:len(before)] == before  # every committed row survived the kill
    ckpt = scenario["c_checkpoint"]
    assert ckpt["position"]["step"] % 25 == 0 and ckpt["position"]["step"] >= 50
    assert isinstance(ckpt["model"]["fc1.weight"], torch.Tensor)
    events = [e.message for e in store.read_events(c)]
    assert any(m.startswith("marked lost: its worker (pid") for m in events)
    assert any(m.startswith("resumed from the checkpoint at step") for m in events)
    run = store.get_run(c)
    assert run.status == "completed" and run.step == 300
    assert losses(store, c) == losses(store, a)  # rows after the checkpoint were recomputed, not duplicated


def test_absurd_learning_rate_is_diverged(scenario):
    store, d = scenario["store"], scenario["d"]
    run = store.get_run(d)
    assert run.status == "diverged"
    assert f"at step {run.step}" in run.error or "the training loss became nan" in run.error
    assert "lower the learning rate" in run.error and "the last good checkpoint is at step" in run.error
    ckpt = load_checkpoint(run_dir(d) / "checkpoints" / "last.pt")
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_a_graph_that_does_not_fit_fails_with_a_message_and_traceback(scenario):
    run = scenario["store"].get_run(scenario["e"])
    assert run.status == "failed"
    assert run.error.startswith("fc3:") and "10 classes" in run.error
    assert "GraphError" in run.traceback and "GraphError" in (run_dir(scenario["e"]) / "log.txt").read_text()


def test_launcher_errors(scenario):
    with pytest.raises(TrainError, match=r"run '.*' is completed; only queued or running runs can be stopped"):
        stop_run(scenario["a"])
    with pytest.raises(TrainError, match=r"is completed; only stopped, failed, diverged, lost runs can be resumed"):
        resume_run(scenario["a"])
    with pytest.raises(TrainError, match="no run with id 'nope'"):
        resume_run("nope")


def test_out_of_memory_message_suggests_a_smaller_batch():
    msg = human_message(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 256)
    assert msg == ("ran out of memory; try a smaller batch size (e.g. batch_size=128 instead of 256) "
                   "or a smaller model")


def test_cli_train_runs_stop_resume(scenario, tmp_path, capsys):
    graph_path = tmp_path / "mlp.json"
    graph_path.write_text(json.dumps(mlp(64)))
    code = cmd_train(argparse.Namespace(graph=str(graph_path), data="digits", epochs=4, batch_size=32, lr=3e-3,
                                        seed=1, name=None, json=True))
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and summary["status"] == "completed" and summary["val_accuracy"] >= 0.9
    assert {"run_id", "status", "step", "val_loss", "train_loss"} <= set(summary)
    assert "step 160/160" in err
    assert cmd_runs(argparse.Namespace(json=True)) == 0
    listed = json.loads(capsys.readouterr().out)
    assert summary["run_id"] in [r["id"] for r in listed]
    with pytest.raises(TrainError, match="only queued or running runs can be stopped"):
        cmd_stop(argparse.Namespace(run_id=summary["run_id"], json=False))
    with pytest.raises(TrainError, match="only stopped, failed, diverged, lost runs can be resumed"):
        cmd_resume(argparse.Namespace(run_id=summary["run_id"], json=False))


def test_cli_data_options_are_parsed_checked_and_reach_the_run(tmp_path, capsys):
    from studio.__main__ import build_parser
    from studio.errors import DataError

    graph_path = tmp_path / "autoencoder.json"
    graph_path.write_text(json.dumps({
        "format": "studio.graph/1", "name": "tiny-autoencoder",
        "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 16, 16]}},
                  {"id": "conv", "type": "Conv2d", "params": {"out_channels": 1, "kernel_size": 3, "padding": 1}},
                  {"id": "out", "type": "Sigmoid"}],
        "edges": [{"source": "input", "target": "conv"}, {"source": "conv", "target": "out"}]}))
    argv = ["train", str(graph_path), "--data", "shapes", "--epochs", "1", "--batch-size", "32", "--json",
            "--data-option", "target=input", "--data-option", "image_size=16", "--data-option", "num_samples=200"]
    args = build_parser().parse_args(argv)
    assert args.data_option == [("target", "input"), ("image_size", 16), ("num_samples", 200)]  # JSON, else text
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--data-option", "target"])
    assert "--data-option 'target' is not KEY=VALUE" in capsys.readouterr().err

    before = len(list_runs())
    with pytest.raises(DataError, match="dataset 'shapes' has no option 'colour'"):
        cmd_train(argparse.Namespace(**{**vars(args), "data_option": [("colour", "red")]}))
    assert len(list_runs()) == before  # refused before any run was made

    assert cmd_train(args) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed" and "val_mae" in summary  # regression: the image is the target
    assert "on shapes target=input image_size=16 num_samples=200" in err
    run_json = json.loads((run_dir(summary["run_id"]) / "run.json").read_text())
    assert run_json["dataset_options"] == {"target": "input", "image_size": 16, "num_samples": 200}
