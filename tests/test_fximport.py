"""Import from PyTorch: exported code round-trips to the same graph; hand-written modules map onto the
palette (functional ops included); what does not map is listed with its line."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from studio.__main__ import main as cli
from studio.codegen import default_class_name, to_code
from studio.compile import compile_graph
from studio.errors import GraphError
from studio.fximport import import_from_file, import_module
from studio.graph import load_graph
from studio.layers import REGISTRY
from studio.templates import list_templates, load_template


def canonical(graph) -> dict:
    """node id -> (type, params with defaults filled, ordered input ids)."""
    inputs = graph.input_map()
    return {n.id: (n.type, REGISTRY[n.type].resolve(n.params), inputs[n.id]) for n in graph.nodes}


@pytest.mark.parametrize("name", [t.name for t in list_templates()])
def test_exported_code_imports_back_to_the_same_graph(name, tmp_path):
    graph = load_template(name)
    path = tmp_path / f"{name}.py"
    path.write_text(to_code(graph))
    model = compile_graph(graph)
    dtype = "int64" if model.input_dtype == torch.int64 else "float32"
    imported, unmapped = import_from_file(path, default_class_name(graph.name), list(model.input_shape), dtype)
    assert unmapped == []
    if graph.uses_blocks:  # one class per block imports back with its repeated copies as blocks (block and
        # merge names are the code's: GptBlock, add_1): expanded, the same layers, params and wiring
        from studio.graph_expand import expand

        assert structure(expand(imported).graph) == structure(expand(graph).graph)
        return
    assert canonical(imported) == canonical(graph)


def structure(graph) -> list[int]:
    """Every node as a hash of its type, params and (recursively) its inputs, whatever the ids: two graphs
    with the same layers wired the same way give the same sorted list."""
    import json

    inputs, digest = graph.input_map(), {}
    for nid in graph.topological_order():
        n = graph.node(nid)
        params = json.dumps(REGISTRY[n.type].resolve(n.params), sort_keys=True, default=str)
        digest[nid] = hash((n.type, params, tuple(digest[s] for s in inputs[nid])))
    return sorted(digest.values())


def test_a_compiled_studio_model_imports_back_too():
    graph = load_template("resnet_small")
    imported, unmapped = import_module(compile_graph(graph, seed=0), (3, 32, 32), name="resnet")
    assert unmapped == [] and imported.name == "resnet"
    assert canonical(imported) == canonical(graph)


class ArticleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=(3, 3), padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), kernel_size=2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def test_functional_style_cnn_maps_onto_the_palette():
    graph, unmapped = import_module(ArticleCNN(), (1, 28, 28))
    assert unmapped == []
    assert [n.type for n in graph.nodes] == ["Input", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d",
                                             "Flatten", "Linear", "ReLU", "Linear"]
    assert graph.node("conv2").params == {"out_channels": 64, "padding": 1}  # kernel (3, 3) is the default 3
    assert graph.node("fc2").params == {"out_features": 10}
    template = canonical(load_template("seed_cnn_padded"))
    assert [v[:2] for v in canonical(graph).values()] == [v[:2] for v in template.values()]


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = x.reshape(x.shape[0], 28, 28)
        out, (h, c) = self.lstm(x)
        return self.head(out[:, -1, :])


def test_lstm_with_tuple_output_and_last_step_becomes_one_lstm_node():
    model = LSTMNet()
    graph, unmapped = import_module(model, (1, 28, 28))
    assert unmapped == []
    assert [(n.type, n.params) for n in graph.nodes[1:]] == [
        ("Reshape", {"shape": [28, 28]}),
        ("LSTM", {"hidden_size": 32, "num_layers": 2, "return_sequences": False}),
        ("Linear", {"out_features": 10})]
    studio = compile_graph(graph)
    studio.load_state_dict(model.state_dict(), strict=True)  # same parameter names
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(studio(x), model.eval()(x))


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(8, 16)
        self.features = nn.Sequential(nn.Linear(32, 32), nn.GELU())
        self.out = nn.Linear(32, 3)

    def forward(self, x):
        h = torch.cat([self.a(x), self.b(x)], dim=1)
        h = self.features(h) + h
        return self.out(h.contiguous())


def test_concat_residual_add_and_nested_modules():
    graph, unmapped = import_module(Branches(), (8,))
    assert unmapped == []
    types = {n.id: n.type for n in graph.nodes}
    assert types == {"input": "Input", "a": "Linear", "b": "Linear", "cat": "Concat", "features_0": "Linear",
                     "features_1": "GELU", "add": "Add", "out": "Linear"}
    assert graph.inputs_of("cat") == ["a", "b"] and graph.inputs_of("add") == ["features_1", "cat"]


class Unmappable(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 8)  # batch_first=False
        self.fc = nn.Linear(4, 8)

    def forward(self, x):
        h = self.fc(x.mean(dim=1))
        return F.log_softmax(h, dim=-1) + self.rnn(x)[0][:, -1]


def test_what_does_not_map_is_listed_with_line_and_node():
    graph, unmapped = import_module(Unmappable(), (5, 4))
    assert graph is None
    assert len(unmapped) == 2  # nothing is reported twice downstream of a failure
    assert any(line.endswith("torch.nn.functional.log_softmax has no palette equivalent") and "node 'log_softmax'"
               in line for line in unmapped)
    assert any("node 'rnn': GRU with batch_first=False" in line for line in unmapped)
    assert all(line.startswith("line ") for line in unmapped)


def test_import_from_file_executes_the_file_and_reports_problems(tmp_path):
    path = tmp_path / "user.py"
    path.write_text(textwrap.dedent("""
        from torch import nn

        EXECUTED = []


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                return self.fc(x).softmax(dim=-1)


        class NeedsArgs(nn.Module):
            def __init__(self, width):
                super().__init__()
    """))
    graph, unmapped = import_from_file(path, "Net", [4])
    assert unmapped == [] and [n.type for n in graph.nodes] == ["Input", "Linear", "Softmax"]
    with pytest.raises(GraphError, match=r"no nn.Module class named 'Nett'; its nn.Module classes are: NeedsArgs, Net"):
        import_from_file(path, "Nett", [4])
    with pytest.raises(GraphError, match=r"NeedsArgs\(\) failed: TypeError"):
        import_from_file(path, "NeedsArgs", [4])
    with pytest.raises(GraphError, match="no such file"):
        import_from_file(tmp_path / "missing.py", "Net", [4])
    graph, unmapped = import_from_file(path, "Net", [5])  # wrong input shape: said plainly
    assert graph is None and "check input_shape" in unmapped[0]


def test_cli_import_writes_a_graph_or_lists_what_does_not_map(tmp_path, capsys):
    src = tmp_path / "lenet.py"
    src.write_text(to_code(load_template("lenet5")))
    out = tmp_path / "lenet.json"
    assert cli(["import", str(src), "--class", "Lenet5", "--input-shape", "1,28,28", "-o", str(out)]) == 0
    assert canonical(load_graph(out)) == canonical(load_template("lenet5"))
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom torch import nn\n\n\nclass M(nn.Module):\n    def forward(self, x):\n"
                   "        return torch.log_softmax(x, dim=-1)\n")
    assert cli(["import", str(bad), "--class", "M", "--input-shape", "4", "-o", str(tmp_path / "m.json")]) == 1
    err = capsys.readouterr().err
    assert "do not map onto the palette" in err and "line 7 / node 'log_softmax'" in err
    assert not (tmp_path / "m.json").exists()


CALLS = [(t, fn) for t, spec in sorted(REGISTRY.items()) for fn in (*spec.functions, *spec.methods)]


@pytest.mark.parametrize(("type_name", "fn"), CALLS, ids=[f"{t}-{getattr(f, '__name__', f)}" for t, f in CALLS])
def test_every_function_and_method_a_spec_names_imports_as_that_layer(type_name, fn):
    """LayerSpec.functions / .methods and from_call: a call at the palette's defaults (they are PyTorch's
    argument names) is one node of that type with default params."""
    spec = REGISTRY[type_name]
    kwargs = {p.name: p.default for p in spec.params}
    if fn is F.dropout:
        kwargs["training"] = False  # F.dropout drops even in eval mode unless told

    class Call(nn.Module):
        def forward(self, x):
            return getattr(x, fn)(**kwargs) if isinstance(fn, str) else fn(x, **kwargs)

    graph, unmapped = import_module(Call(), spec.example[0].shape, spec.example[0].dtype)
    assert unmapped == []
    assert [(n.type, n.params) for n in graph.nodes if n.type != "Input"] == [(type_name, {})]

