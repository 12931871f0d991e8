"""Code export: for every template the exported file, run in a fresh interpreter without the studio,
loads the studio model's state dict (strict) and gives identical outputs; it compiles, passes ruff,
and nothing in a graph can inject code."""

from __future__ import annotations

import ast
import json
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio.__main__ import main as cli
from studio.codegen import default_class_name, docstring_text, export_graph, literal, to_code
from studio.compile import compile_graph
from studio.errors import DataError, ExportError, GraphError
from studio.graph import parse_graph, save_graph
from studio.templates import get_template, list_templates, load_template

ROOT = Path(__file__).resolve().parents[1]
RUFF = ROOT / ".venv" / "bin" / "ruff"
TEMPLATES = list_templates()

# Runs in a fresh interpreter (-I: the repository is not on sys.path, so `studio` cannot be imported).
CHECK_SCRIPT = r"""
import importlib.util, json, sys
import torch
results = {}
for case in json.load(open(sys.argv[1])):
    spec = importlib.util.spec_from_file_location(case["name"], case["code"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, case["class_name"])()
    model.load_state_dict(torch.load(case["state"], weights_only=True), strict=True)
    model.eval()
    saved = torch.load(case["io"], weights_only=True)
    with torch.no_grad():
        out = model(saved["x"])
    results[case["name"]] = bool(torch.equal(out, saved["y"]))
results["studio_imported"] = any(m == "studio" or m.startswith("studio.") for m in sys.modules)
print(json.dumps(results))
"""


def _example(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if model.input_dtype == torch.int64:
        return torch.randint(0, 10, (3, *model.input_shape), generator=g)
    return torch.randn((3, *model.input_shape), generator=g)


def test_every_template_exports_to_code_that_reproduces_the_studio_model(tmp_path):
    cases = []
    for t in TEMPLATES:
        graph = load_template(t.name)
        model = compile_graph(graph, seed=0)
        with torch.no_grad():  # a step of "training" so the weights are not just the default init
            for p in model.parameters():
                p.add_(0.01)
        model.eval()
        x = _example(model)
        with torch.no_grad():
            y = model(x)
        code_path = tmp_path / f"{t.name}.py"
        code_path.write_text(to_code(graph, training_script=t.dataset is not None, dataset_id=t.dataset,
                                     config=t.config, dataset_options=t.dataset_options))
        torch.save(model.state_dict(), tmp_path / f"{t.name}.pt")
        torch.save({"x": x, "y": y}, tmp_path / f"{t.name}.io.pt")
        py_compile.compile(str(code_path), doraise=True)
        cases.append({"name": t.name, "code": str(code_path), "class_name": default_class_name(graph.name),
                      "state": str(tmp_path / f"{t.name}.pt"), "io": str(tmp_path / f"{t.name}.io.pt")})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "check.py").write_text(CHECK_SCRIPT)
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / "check.py"), str(tmp_path / "cases.json")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results.pop("studio_imported") is False
    assert results == {t.name: True for t in TEMPLATES}

    lint = subprocess.run([str(RUFF), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                           *[case["code"] for case in cases]], capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout[-3000:]


def test_code_reads_like_hand_written_pytorch():
    code = to_code(load_template("seed_cnn"))
    assert "class SeedCnn(nn.Module):" in code
    assert "self.conv1 = nn.Conv2d(1, 32, kernel_size=3)" in code
    assert "self.pool1 = nn.MaxPool2d(kernel_size=2)" in code or "self.pool1 = nn.MaxPool2d(2)" in code
    assert "self.fc1 = nn.Linear(1600, 128)" in code
    assert "conv1 = self.conv1(x)  # (B, 32, 26, 26)" in code
    assert "flatten = self.flatten(pool2)  # (B, 1600)" in code
    assert "return fc2" in code
    assert "import math" not in code and "\nclass " not in code.split("class SeedCnn")[0]  # nothing custom needed
    assert '"""seed_cnn\n\n    The CNN of the seed articles' in code


def test_only_the_needed_studio_classes_and_their_helpers_are_copied():
    lm = to_code(load_template("char_transformer_lm"))
    for needed in ("class PositionalEncoding(", "class EncoderLayer(", "def causal_mask(", "def attention_weights("):
        assert needed in lm
    assert "class SelfAttention(" not in lm and "class Reshape(" not in lm
    rnn = to_code(load_template("seed_rnn"))
    assert "class ReturnSequences:" in rnn and "class RNNLayer(ReturnSequences, nn.RNN):" in rnn
    assert "class LSTMLayer(" not in rnn and "import math" not in rnn
    resnet = to_code(load_template("resnet_small"))
    assert "def add(*xs):" in resnet and "b1_add = add(b1_bn2, stem_relu)  # (B, 16, 32, 32)" in resnet


HOSTILE = [
    'x"""\nimport os\nos.system("echo pwned")\n"""',
    "'''; __import__('os').system('echo pwned'); '''",
    "\\\"\"\" + __import__('os').system('echo pwned') + \"\"\"\\",
    "line one\r\nline two\x00\x1b[31m\u2028 end \\",
    "# comment\n    def forward(self, x): return __import__('os').system('echo pwned')",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_and_descriptions_stay_inside_the_docstring(hostile, tmp_path):
    graph = load_template("mlp")
    graph.name, graph.description = hostile, hostile * 3
    code = to_code(graph)
    tree = ast.parse(code)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in ("__import__", "os")]
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "system"]
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    doc = ast.get_docstring(cls, clean=False)
    assert ("system(" in doc) == ("system(" in hostile)  # the text is there, as text
    assert [type(n).__name__ for n in cls.body] == ["Expr", "FunctionDef", "FunctionDef"]
    path = tmp_path / "hostile.py"
    path.write_text(code)
    lint = subprocess.run([str(RUFF), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(path)],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout[-2000:]


def test_docstring_text_round_trips_through_the_parser():
    text = 'a "quoted" \\ back\\slash """ triple\nsecond line\x07'
    parsed = ast.literal_eval('"""' + docstring_text(text) + '"""')
    assert parsed == 'a "quoted" \\ back\\slash """ triple\nsecond line\x07'


def test_string_params_are_written_with_repr_and_hostile_ones_never_reach_the_code():
    for s in ["relu'); __import__('os').system('x", 'a"b\\c\n', "\u2028"]:
        assert ast.literal_eval(literal(s)) == s
        assert ast.literal_eval(literal([s, 1, 2.5, None, True])) == [s, 1, 2.5, None, True]
    graph = load_template("char_transformer_lm")
    graph.node("block1").params["activation"] = "gelu'); __import__('os').system('echo pwned'); ('"
    with pytest.raises(GraphError, match="activation="):
        to_code(graph)
    with pytest.raises(ExportError, match="cannot write a value of type"):
        literal(object())
    with pytest.raises(ExportError, match="non-finite"):
        literal(float("nan"))


def test_class_names_and_node_ids_that_would_break_the_file_are_refused():
    graph = load_template("mlp")
    assert default_class_name("3 layers!") == "Model3Layers"
    assert default_class_name("reshape") == "ReshapeModel"  # the studio's Reshape class keeps its name
    assert "class Net(nn.Module):" in to_code(graph, class_name="Net")
    for bad in ("my model", "class", "nn", "Reshape", "x;import os"):
        with pytest.raises(ExportError, match="class_name="):
            to_code(graph, class_name=bad)
    graph.node("fc1").id = "eval"  # built in code, past parse_graph: `self.eval` is nn.Module's method
    for e in graph.edges:
        e.source, e.target = ("eval" if v == "fc1" else v for v in (e.source, e.target))
    with pytest.raises(GraphError, match="id 'eval' is reserved"):
        to_code(graph)


def test_invalid_graph_is_a_graph_error():
    graph = load_template("mlp")
    graph.node("fc1").params["out_features"] = 0
    with pytest.raises(GraphError, match="out_features"):
        to_code(graph)


def test_training_scripts_run_in_plain_pytorch(tmp_path, _workspace):
    """One subprocess runs the generated main() of a classification, a regression, an autoencoder (the
    reconstruction form of shapes, through the template's dataset options) and a sequence template."""
    runner = ["import importlib.util, sys"]
    for name in ("seed_rnn", "gru_forecaster", "conv_autoencoder", "reverse_transformer"):
        t = get_template(name)
        config = {**t.config, "max_steps": 3, "schedule": "cosine", "warmup_steps": 1, "init": "xavier",
                  "grad_clip": 1.0}
        (tmp_path / f"{name}.py").write_text(to_code(load_template(name), training_script=True, dataset_id=t.dataset,
                                                     config=config, dataset_options=t.dataset_options))
        runner += [f"spec = importlib.util.spec_from_file_location({name!r}, {str(tmp_path / (name + '.py'))!r})",
                   "m = importlib.util.module_from_spec(spec)", "spec.loader.exec_module(m)",
                   f"print({name!r})", "m.main()"]
    (tmp_path / "run.py").write_text("\n".join(runner) + "\n")
    proc = subprocess.run([sys.executable, str(tmp_path / "run.py")], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300, env={"PYTHONPATH": str(ROOT), "STUDIO_WORKSPACE": str(_workspace),
                                            "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("step 3:") == 4
    assert "val accuracy" in proc.stdout and "val mae" in proc.stdout and "val token_accuracy" in proc.stdout
    assert proc.stdout.split("conv_autoencoder")[1].split("reverse_transformer")[0].count("val mae") == 1
    state = torch.load(tmp_path / "model_state_dict.pt", weights_only=True)  # the last one: reverse_transformer
    compile_graph(load_template("reverse_transformer")).load_state_dict(state, strict=True)


def test_training_script_needs_a_dataset_and_a_valid_config():
    graph = load_template("mlp")
    with pytest.raises(ExportError, match="needs a dataset id"):
        to_code(graph, training_script=True)
    with pytest.raises(Exception, match="unknown setting 'learning_rate'"):
        to_code(graph, training_script=True, dataset_id="digits", config={"learning_rate": 0.1})
    code = to_code(graph, training_script=True, dataset_id="digits",
                   config={"optimizer": "sgd", "lr": 0.1, "schedule": "plateau"})
    assert "    'optimizer': 'sgd',\n    'lr': 0.1," in code and "    'schedule': 'plateau'," in code
    assert "MONITOR, MODE = 'val_accuracy', 'max'" in code
    # One source: the schedule, optimizer, init and per-task loss are the worker's code, copied.
    import inspect

    from studio.training import loop, optim
    for obj in (optim.LRSchedule, optim.build_optimizer, optim.init_weights, loop.Task):
        assert inspect.getsource(obj) in code
    assert code.count("def loss(") == 1 and "F.cross_entropy(" in code
    compile(code, "mlp.py", "exec")


def test_training_script_loads_the_dataset_with_its_options(tmp_path):
    t = get_template("conv_autoencoder")
    code = to_code(load_template(t.name), training_script=True, dataset_id=t.dataset, config=t.config,
                   dataset_options=t.dataset_options)
    assert "DATASET_OPTIONS = {'image_size': 28, 'target': 'input'}" in code
    assert "data = get_dataset(DATASET, seed=CONFIG.seed, options=DATASET_OPTIONS)" in code
    plain = to_code(load_template("mlp"), training_script=True, dataset_id="digits")
    assert "DATASET_OPTIONS = {}" in plain
    with pytest.raises(DataError, match="has no option 'colour'"):
        to_code(load_template("mlp"), training_script=True, dataset_id="digits", dataset_options={"colour": "red"})
    path = export_graph(load_template(t.name), "code", tmp_path / "ae.py", dataset_id=t.dataset,
                        dataset_options=t.dataset_options)
    assert "DATASET_OPTIONS = {'image_size': 28, 'target': 'input'}" in path.read_text()


def test_cli_export_code(tmp_path, capsys):
    graph_path = tmp_path / "g.json"
    save_graph(load_template("lenet5"), graph_path)
    out = tmp_path / "lenet.py"
    assert cli(["export", str(graph_path), "--format", "code", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert "class Lenet5(nn.Module):" in out.read_text()
    py_compile.compile(str(out), doraise=True)


def test_training_script_applies_the_configs_augmentation():
    from studio.training import TrainConfig

    plain = to_code(load_template("seed_cnn_padded"), training_script=True, dataset_id="shapes", config=TrainConfig())
    assert "AUGMENT = None" in plain
    src = to_code(load_template("seed_cnn_padded"), training_script=True, dataset_id="shapes",
                  config=TrainConfig(augment_flip=True, augment_noise=True, augment_noise_std=0.1))
    assert "'flip': True" in src and "'noise': True, 'noise_std': 0.1" in src
    assert "                x = augment(x, generator)" in src
    compile(src, "exported.py", "exec")


def test_forward_is_the_fx_code_and_a_node_named_like_a_merge_function_still_runs():
    from tests.conftest import chain

    doc = chain(("input", "Input", {"shape": [6]}), ("a", "Linear", {"out_features": 6}))
    doc["nodes"] += [{"id": "add", "type": "Add"}, {"id": "concat", "type": "Concat"}]
    doc["edges"] += [{"source": "input", "target": "add"}, {"source": "a", "target": "add"},
                     {"source": "add", "target": "concat"}, {"source": "a", "target": "concat"}]
    graph = parse_graph(doc)
    code = to_code(graph, class_name="Net")
    assert "studio_layers_modules_add = add  # a value in forward is called 'add'" in code
    assert "concat = studio_layers_modules_concat(add, a, dim=1)  # (B, 12)" in code
    namespace: dict = {}
    exec(compile(code, "exported.py", "exec"), namespace)
    model = compile_graph(graph, seed=0).eval()
    exported = namespace["Net"]()
    exported.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(3, 6)
    assert torch.equal(exported(x), model(x))


@pytest.mark.parametrize("schedule", ["none", "step", "multistep", "exponential", "cosine", "onecycle", "plateau"])
def test_exported_schedule_matches_lr_schedule(schedule):
    """The script's LRSchedule, built from its own CONFIG, gives the worker's lr at every step (plateau included)."""
    from studio.training import TrainConfig
    from studio.training.optim import LRSchedule

    cfg = TrainConfig(lr=0.05, schedule=schedule, warmup_steps=7, step_size=9, milestones=[5, 20], gamma=0.7,
                      min_lr=0.001, plateau_patience=1, plateau_factor=0.5, max_steps=60)
    code = to_code(load_template("mlp"), training_script=True, dataset_id="digits", config=cfg)
    namespace: dict = {"__name__": "exported"}
    exec(compile(code, "exported.py", "exec"), namespace)
    ours, theirs = LRSchedule(cfg, 60), namespace["LRSchedule"](namespace["CONFIG"], 60)
    for step in range(60):
        if step % 10 == 9:  # a validation every 10 steps; worse from the second on: the plateau rule fires
            value = 1.0 + step
            assert ours.on_eval(value, "min") == theirs.on_eval(value, "min")
        assert ours.lr_at(step) == theirs.lr_at(step), step
    assert (schedule == "plateau") == (ours.plateau_scale < 1.0)


def test_model_only_file_runs_one_batch_and_prints_a_summary(tmp_path):
    path = tmp_path / "lenet.py"
    path.write_text(to_code(load_template("lenet5")))
    proc = subprocess.run([sys.executable, "-I", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Lenet5: " in proc.stdout and "-> output (2, 10)" in proc.stdout
    assert 'model.load_state_dict(ckpt["model"])' in path.read_text()
