"""The compiler against PyTorch as the oracle: the seed articles' models, hand-written, must give
identical outputs to the same architecture built as a graph once the weights are copied."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from studio.compile import compile_graph
from studio.errors import GraphError
from studio.graph import parse_graph
from tests.conftest import chain


class SeedCNN(nn.Module):  # the articles' CNN, with padding 1 on 1x28x28
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 64 * 7 * 7)
        return self.fc2(F.relu(self.fc1(x)))


SEED_CNN = chain(("input", "Input", {"shape": [1, 28, 28]}),
                 ("conv1", "Conv2d", {"out_channels": 32, "kernel_size": 3, "padding": 1}), ("relu1", "ReLU", None),
                 ("pool1", "MaxPool2d", {"kernel_size": 2, "stride": 2}),
                 ("conv2", "Conv2d", {"out_channels": 64, "kernel_size": 3, "padding": 1}), ("relu2", "ReLU", None),
                 ("pool2", "MaxPool2d", {"kernel_size": 2, "stride": 2}), ("flat", "Flatten", None),
                 ("fc1", "Linear", {"out_features": 128}), ("relu3", "ReLU", None),
                 ("fc2", "Linear", {"out_features": 10}))


class SeedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 256), nn.Linear(256, 128)
        self.fc3, self.fc4 = nn.Linear(128, 64), nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(-1, 784)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = F.relu(self.fc3(x))
        return self.fc4(x)


SEED_MLP = chain(("input", "Input", {"shape": [1, 28, 28]}), ("flat", "Flatten", None),
                 ("fc1", "Linear", {"out_features": 256}), ("r1", "ReLU", None),
                 ("fc2", "Linear", {"out_features": 128}), ("r2", "ReLU", None),
                 ("fc3", "Linear", {"out_features": 64}), ("r3", "ReLU", None), ("fc4", "Linear", {"out_features": 10}))


class SeedRNN(nn.Module):  # 2-layer RNN, input 5, hidden 8, 3 classes, last step
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(5, 8, num_layers=2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1, :])


SEED_RNN = chain(("input", "Input", {"shape": [12, 5]}),
                 ("rnn", "RNN", {"hidden_size": 8, "num_layers": 2, "return_sequences": False}),
                 ("fc", "Linear", {"out_features": 3}))


class SeedLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(10, 32, batch_first=True)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :])


SEED_LSTM = chain(("input", "Input", {"shape": [15, 10]}),
                  ("lstm", "LSTM", {"hidden_size": 32, "return_sequences": False}),
                  ("fc", "Linear", {"out_features": 4}))


def copy_by_order(src: nn.Module, dst: nn.Module) -> None:
    """Copy weights tensor by tensor, in registration order (names differ, shapes must not)."""
    src_t, dst_t = list(src.state_dict().values()), dst.state_dict()
    assert [t.shape for t in src_t] == [t.shape for t in dst_t.values()]
    dst.load_state_dict(dict(zip(dst_t, src_t, strict=False)), strict=True)


@pytest.mark.parametrize("hand_written, doc, x_shape", [
    (SeedCNN, SEED_CNN, (4, 1, 28, 28)), (SeedMLP, SEED_MLP, (4, 1, 28, 28)),
    (SeedRNN, SEED_RNN, (4, 12, 5)), (SeedLSTM, SEED_LSTM, (4, 15, 10)),
], ids=["cnn", "mlp", "rnn", "lstm"])
def test_seed_models_match_hand_written(hand_written, doc, x_shape):
    torch.manual_seed(0)
    ref = hand_written().eval()
    model = compile_graph(parse_graph(doc), seed=1).eval()
    copy_by_order(ref, model)
    x = torch.randn(x_shape)
    assert torch.equal(model(x), ref(x))
    # and gradients agree too, so training behaves the same
    model(x).sum().backward()
    ref(x).sum().backward()
    for (n1, p1), p2 in zip(model.named_parameters(), ref.parameters(), strict=False):
        assert torch.equal(p1.grad, p2.grad), n1


def test_state_dict_keys_are_node_ids():
    model = compile_graph(parse_graph(SEED_LSTM), seed=0)
    assert list(model.state_dict())[:2] == ["lstm.weight_ih_l0", "lstm.weight_hh_l0"]
    assert "conv1.weight" in compile_graph(parse_graph(SEED_CNN), seed=0).state_dict()


def test_seed_makes_init_deterministic_without_touching_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = compile_graph(parse_graph(SEED_CNN), seed=7)
    assert torch.equal(torch.rand(1), before), "compile_graph must not consume the global RNG"
    b = compile_graph(parse_graph(SEED_CNN), seed=7)
    c = compile_graph(parse_graph(SEED_CNN), seed=8)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=False))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_skip_connection_and_concat_ports():
    doc = chain(("input", "Input", {"shape": [6]}), ("a", "Linear", {"out_features": 6}))
    doc["nodes"] += [{"id": "add", "type": "Add"}, {"id": "cat", "type": "Concat"}]
    doc["edges"] += [{"source": "input", "target": "add"}, {"source": "a", "target": "add"},
                     {"source": "add", "target": "cat", "port": 1}, {"source": "input", "target": "cat", "port": 0}]
    model = compile_graph(parse_graph(doc), seed=0)
    x = torch.randn(2, 6)
    s = x + model.a(x)
    assert torch.equal(model(x), torch.cat([x, s], dim=1))


def test_invalid_graph_raises_with_every_error():
    with pytest.raises(GraphError, match="Conv2d expects a") as e:
        compile_graph(parse_graph(chain(("input", "Input", {"shape": [4]}), ("conv", "Conv2d", None))))
    assert e.value.issues[0].node_id == "conv"


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_accelerator_devices(device):
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if not available:
        pytest.skip(f"no {device} device on this machine")
    model = compile_graph(parse_graph(SEED_CNN), seed=0, device=device)
    assert model(torch.randn(2, 1, 28, 28, device=device)).device.type == device


# ---- the fx graph ---------------------------------------------------------------------------------------

def test_one_fx_node_per_graph_node_modules_for_layers_functions_for_merges():
    doc = chain(("input", "Input", {"shape": [6]}), ("a", "Linear", {"out_features": 6}))
    doc["nodes"] += [{"id": "add", "type": "Add"}, {"id": "cat", "type": "Concat"}]
    doc["edges"] += [{"source": "input", "target": "add"}, {"source": "a", "target": "add"},
                     {"source": "add", "target": "cat"}, {"source": "a", "target": "cat"}]
    model = compile_graph(parse_graph(doc), seed=0)
    assert isinstance(model, torch.fx.GraphModule)
    ops = [(n.op, n.meta.get("node_id")) for n in model.graph.nodes]
    assert ops == [("placeholder", "input"), ("call_module", "a"), ("call_function", "add"),
                   ("call_function", "cat"), ("output", None)]
    assert [n.meta["shape"] for n in model.graph.nodes if n.op != "output"] == [(6,), (6,), (6,), (12,)]
    assert (model.input_id, model.output_id, model.order) == ("input", "cat", ["a", "add", "cat"])
    assert "x = None" in model.code  # fx's forward drops each value after its last use


def test_attributes_survive_deepcopy():
    import copy

    model = compile_graph(parse_graph(SEED_CNN), seed=0)
    twin = copy.deepcopy(model)
    for name in ("input_id", "output_id", "order", "input_shape", "input_dtype", "node_types"):
        assert getattr(twin, name) == getattr(model, name), name
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(twin(x), model(x))


@pytest.mark.parametrize("name", ["tiny_res", "tiny_seq"])
def test_checkpoints_written_before_fx_load_and_give_the_same_outputs(name):
    """tests/data/pre_fx_checkpoints.pt was written by the hand-planned compiler (tests/data/make_*.py)."""
    import json
    from pathlib import Path

    saved = torch.load(Path(__file__).parent / "data" / "pre_fx_checkpoints.pt", weights_only=True)[name]
    model = compile_graph(parse_graph(json.loads(saved["graph"])), seed=1).eval()
    model.load_state_dict(saved["model"], strict=True)
    with torch.no_grad():
        # saved["y"] was computed on another CPU: fp32 conv/matmul kernels differ by instruction set (AVX2,
        # AVX-512, AMX) in summation order, so outputs agree to ~1e-6 relative, not bit for bit. A wrong
        # weight mapping (the bug this guards against) changes outputs by orders of magnitude more.
        torch.testing.assert_close(model(saved["x"]), saved["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("doc, x", [(SEED_CNN, torch.randn(2, 1, 28, 28)), (SEED_LSTM, torch.randn(2, 15, 10))],
                         ids=["cnn", "lstm"])
def test_torch_export_works_on_the_compiled_model(doc, x):
    model = compile_graph(parse_graph(doc), seed=0).eval()
    exported = torch.export.export(model, (x,))
    assert torch.equal(exported.module()(x), model(x))
    assert set(exported.state_dict) == set(model.state_dict())
