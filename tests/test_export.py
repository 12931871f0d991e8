"""TorchScript, ONNX and state-dict exports, checked by running them against PyTorch."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from studio.__main__ import main as cli
from studio.compile import compile_graph
from studio.errors import ExportError
from studio.export import state_dict_bytes, to_onnx, to_torchscript
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
