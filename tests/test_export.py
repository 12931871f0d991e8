"""PyTorch 2 (.pt2), ONNX, TorchScript and state-dict exports, checked by running them against PyTorch;
exports of a trained run, run in a fresh interpreter, score like the run."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from studio.__main__ import main as cli
from studio.compile import compile_graph
from studio.errors import ExportError
from studio.export import state_dict_bytes, to_onnx, to_pt2, to_torchscript
from studio.graph import save_graph
from studio.templates import load_template

# A CNN, an LSTM, a causal Transformer and a ResNet (residual Add, batch norm).
REPRESENTATIVE = ["seed_cnn_padded", "lstm_classifier", "char_transformer_lm", "resnet_small"]


def _model_and_input(name: str, batch: int = 5):
    model = compile_graph(load_template(name), seed=0).eval()
    g = torch.Generator().manual_seed(2)
    if model.input_dtype == torch.int64:
        x = torch.randint(0, 50, (batch, *model.input_shape), generator=g)
    else:
        x = torch.randn((batch, *model.input_shape), generator=g)
    return model, x


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_onnx_runs_in_onnxruntime_like_pytorch_with_a_dynamic_batch(name):
    model, x = _model_and_input(name, batch=5)  # exported with batch 2: the batch axis must be dynamic
    session = ort.InferenceSession(to_onnx(load_template(name)), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    (out,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_torchscript_loads_and_runs_like_pytorch(name):
    model, x = _model_and_input(name, batch=3)
    loaded = torch.jit.load(io.BytesIO(to_torchscript(model)))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-6)


def test_exports_of_a_training_model_use_eval_mode_and_leave_it_training():
    model, x = _model_and_input("char_transformer_lm", batch=2)  # dropout 0.1
    model.train()
    loaded = torch.jit.load(io.BytesIO(to_torchscript(model)))
    assert model.training
    with torch.no_grad():
        expected = model.eval()(x)
        torch.testing.assert_close(loaded(x), expected)


def test_state_dict_loads_with_weights_only_into_a_fresh_model():
    model, x = _model_and_input("resnet_small", batch=2)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
        model.train()(x)  # updates batch-norm running statistics, which must travel too
    model.eval()
    state = torch.load(io.BytesIO(state_dict_bytes(model)), weights_only=True)
    fresh = compile_graph(load_template("resnet_small"), seed=1).eval()
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_bad_sources_are_export_errors():
    with pytest.raises(ExportError, match="can only export a graph or an nn.Module"):
        to_torchscript("model.json")
    with pytest.raises(ExportError, match="pass input_shape"):
        to_onnx(torch.nn.Linear(3, 2))
    assert len(to_onnx(torch.nn.Linear(3, 2), input_shape=(3,))) > 0
    with pytest.raises(ExportError, match="needs an nn.Module"):
        state_dict_bytes({"w": 1})


def test_cli_exports_torchscript_and_onnx(tmp_path):
    graph_path = tmp_path / "mlp.json"
    save_graph(load_template("mlp"), graph_path)
    x = torch.randn(4, 1, 28, 28)
    model = compile_graph(load_template("mlp"), seed=0).eval()
    assert cli(["export", str(graph_path), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 0
    assert cli(["export", str(graph_path), "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 0
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.pt"))(x), expected)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected.numpy(), rtol=1e-4, atol=1e-5)


# ---- PyTorch 2 programs ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_pt2_loads_with_torch_export_load_and_runs_like_pytorch_with_a_dynamic_batch(name):
    model, x = _model_and_input(name, batch=5)  # exported with batch 2
    program = torch.export.load(io.BytesIO(to_pt2(load_template(name))))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-6)
        one = x[:1]
        torch.testing.assert_close(program.module()(one), model(one), rtol=1e-5, atol=1e-6)


def test_exports_show_warnings_other_than_known_pytorch_noise():
    class Loud(torch.nn.Module):
        def forward(self, x):
            warnings.warn("the user's own warning", UserWarning, stacklevel=1)
            return x * 2

    for export in (to_pt2, to_onnx):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            export(Loud(), input_shape=(3,))
        assert "the user's own warning" in [str(w.message) for w in seen], export.__name__


def test_onnx_has_no_legacy_fallback():
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # control flow on data: the torch.export-based exporter refuses it

    import studio.export as export_module

    source = Path(export_module.__file__).read_text()
    assert "dynamo=False" not in source and "dynamic_axes" not in source
    with pytest.raises(ExportError, match="ONNX export failed"):
        to_onnx(DataDependent(), input_shape=(3,))


def test_cli_exports_pt2_of_a_graph_as_untrained(tmp_path, capsys):
    graph_path = tmp_path / "mlp.json"
    save_graph(load_template("mlp"), graph_path)
    assert cli(["export", str(graph_path), "--format", "pt2", "-o", str(tmp_path / "m.pt2")]) == 0
    assert "untrained" in capsys.readouterr().out
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = compile_graph(load_template("mlp"), seed=0).eval()(x)
        torch.testing.assert_close(torch.export.load(str(tmp_path / "m.pt2")).module()(x), expected)
    assert cli(["export", "--format", "pt2", "-o", str(tmp_path / "n.pt2")]) == 2  # neither graph nor --run
    assert cli(["export", str(graph_path), "--weights", "best", "--format", "pt2", "-o", str(tmp_path / "n.pt2")]) == 2


# ---- a trained run's exports, in a fresh interpreter -------------------------------------------------

MLP = {"format": "studio.graph/1", "name": "digits mlp",
       "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 8, 8]}},
                 {"id": "flat", "type": "Flatten"},
                 {"id": "fc1", "type": "Linear", "params": {"out_features": 32}},
                 {"id": "relu1", "type": "ReLU"},
                 {"id": "fc2", "type": "Linear", "params": {"out_features": 10}}],
       "edges": [{"source": a, "target": b} for a, b in (("input", "flat"), ("flat", "fc1"), ("fc1", "relu1"),
                                                        ("relu1", "fc2"))]}

# Runs the four exports of a run with nothing of the studio importable, on the saved validation inputs.
FRESH = textwrap.dedent("""
    import importlib.util, json, sys
    import numpy as np, onnxruntime as ort, torch
    folder = sys.argv[1]
    data = torch.load(folder + "/val.pt", weights_only=True)
    x, y = data["x"], data["y"]
    assert "studio" not in sys.modules
    preds = {}
    with torch.no_grad():
        preds["pt2"] = torch.export.load(folder + "/run.pt2").module()(x).argmax(-1)
        preds["torchscript"] = torch.jit.load(folder + "/run.pt")(x).argmax(-1)
        session = ort.InferenceSession(folder + "/run.onnx", providers=["CPUExecutionProvider"])
        preds["onnx"] = torch.from_numpy(session.run(None, {"x": x.numpy()})[0]).argmax(-1)
        spec = importlib.util.spec_from_file_location("exported", folder + "/run.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cls = next(v for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, torch.nn.Module)
                   and v.__module__ == "exported")
        model = cls()
        model.load_state_dict(torch.load(folder + "/run.weights.pt", weights_only=True))
        preds["code"] = model.eval()(x).argmax(-1)
    print(json.dumps({k: {"accuracy": (p == y).sum().item() / len(y), "predictions": p.tolist()}
                      for k, p in preds.items()}))
""")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One run trained through the real CLI and worker on digits: (workspace, run_id)."""
    ws = tmp_path_factory.mktemp("workspace")
    graph_path = ws / "mlp.json"
    graph_path.write_text(json.dumps(MLP))
    env = {**os.environ, "STUDIO_WORKSPACE": str(ws), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "studio", "train", str(graph_path), "--data", "digits",
                           "--epochs", "3", "--batch-size", "32", "--lr", "0.01", "--json"],
                          capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    return ws, json.loads(done.stdout)


def test_exports_of_a_trained_run_score_like_the_run_in_a_fresh_interpreter(trained_run, tmp_path, monkeypatch):
    from studio import inspection as ins

    ws, summary = trained_run
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    run_id = summary["run_id"]
    assert summary["best_metric_name"] == "val_accuracy" and summary["best_metric"] > 0.8
    for fmt, name in (("pt2", "run.pt2"), ("onnx", "run.onnx"), ("torchscript", "run.pt"), ("code", "run.py")):
        assert cli(["export", "--run", run_id, "--weights", "best", "--format", fmt, "-o", str(tmp_path / name)]) == 0
    assert (tmp_path / "run.weights.pt").exists()  # code exports write the weights beside the .py

    run = ins.load_run(run_id)
    dataset = ins.load_run_dataset(run)
    x, y = dataset.val.x, dataset.val.y
    torch.save({"x": x, "y": y}, tmp_path / "val.pt")
    with torch.no_grad():
        expected = ins.load_model(run, "best")(x).argmax(-1)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert set(results) == {"pt2", "onnx", "torchscript", "code"}
    for fmt, r in results.items():
        assert r["predictions"] == expected.tolist(), fmt
        assert r["accuracy"] == pytest.approx(summary["best_metric"], abs=1e-9), fmt  # the run's, not 10 %


def test_run_export_weights_choice_and_errors(trained_run, tmp_path, monkeypatch, capsys):
    from studio.export import checkpoint_weights_bytes, run_exports
    from studio.training.callbacks import load_checkpoint

    ws, summary = trained_run
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    run_id = summary["run_id"]
    files = run_exports(run_id, "code", "last")
    assert sorted(files) == [f"{run_id}-last.py", f"{run_id}-last.weights.pt"]
    last = ws / "runs" / run_id / "checkpoints" / "last.pt"
    state = torch.load(io.BytesIO(files[f"{run_id}-last.weights.pt"]), weights_only=True)
    ckpt = load_checkpoint(last)
    assert state.keys() == ckpt["model"].keys()
    assert all(torch.equal(state[k], ckpt["model"][k]) for k in state)
    beside = torch.load(io.BytesIO(checkpoint_weights_bytes(last)), weights_only=True)
    assert all(torch.equal(beside[k], ckpt["model"][k]) for k in state)

    assert cli(["export", "--run", "no-such-run", "--format", "pt2", "-o", str(tmp_path / "x.pt2")]) == 1
    assert "no-such-run" in capsys.readouterr().err
    (ws / "runs" / run_id / "checkpoints" / "best.pt").rename(tmp_path / "best.pt")
    try:
        out = str(tmp_path / "x.pt2")
        assert cli(["export", "--run", run_id, "--weights", "best", "--format", "pt2", "-o", out]) == 1
        assert "use --weights last" in capsys.readouterr().err
        assert cli(["export", "--run", run_id, "--format", "pt2", "-o", str(tmp_path / "x.pt2")]) == 0
        assert "last.pt weights" in capsys.readouterr().out
    finally:
        (tmp_path / "best.pt").rename(ws / "runs" / run_id / "checkpoints" / "best.pt")


def test_inspect_page_builds_a_pt2_of_the_run_that_gives_its_predictions(trained_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from studio import inspection as ins

    ws, summary = trained_run
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "4_Inspect.py"), default_timeout=90)
    at.run()
    assert not at.exception
    key = "studio.inspect.exports"
    assert at.radio(key=f"{key}.weights").value == "best"
    at.button(key=f"{key}.make.pt2.best").click().run()
    assert not at.exception and not at.error
    built = at.session_state["studio.run_exports.built"]
    ((files),) = [v for k, v in built.items() if k[2] == "pt2"]
    run_id = summary["run_id"]
    run = ins.load_run(run_id)
    x = ins.load_run_dataset(run).val.x[:16]
    with torch.no_grad():
        program = torch.export.load(io.BytesIO(files[f"{run_id}-best.pt2"]))
        assert torch.equal(program.module()(x).argmax(-1), ins.load_model(run, "best")(x).argmax(-1))
