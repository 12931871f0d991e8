"""One schema (studio.schema.Field) for layer params, TrainConfig and augmentation settings: one
validator wording, one text parser shared by the inspector, the Train form and `train --set`, and one
set of default training settings for the Train page and the CLI."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.analysis import analyze
from studio.augment_settings import AUGMENT_FIELDS, CONFIG_NAMES
from studio.data import Augment, get_info
from studio.dataset_ids import REGISTERED_IDS, REGISTERED_TASKS
from studio.errors import DataError
from studio.graph import parse_graph
from studio.layers import REGISTRY, Param
from studio.runs import Store
from studio.schema import Field, SettingError
from studio.templates import list_templates, load_template
from studio.training.cli import prepare_train, train_config
from studio.training.config import FIELDS, SCHEMA, ConfigError, TrainConfig, parse_settings, training_defaults
from tests.conftest import chain
from tests.test_train_page import CFG, POLL_S, TINY_MLP, launch_button, open_train_page, rerun

ROOT = Path(__file__).resolve().parents[1]
VEC = ("input", "Input", {"shape": [4]})


# ---- one type, one validator, one wording ---------------------------------------------------------

def test_layer_params_training_settings_and_augmentation_are_one_field_type():
    assert Param is Field
    assert all(isinstance(p, Field) for spec in REGISTRY.values() for p in spec.params)
    assert all(isinstance(f, Field) for f in SCHEMA) and all(isinstance(f, Field) for f in AUGMENT_FIELDS)
    # TrainConfig's augment_* settings are the augmentation fields under their config names
    for f in AUGMENT_FIELDS:
        name = CONFIG_NAMES[f.name]
        assert FIELDS[name] == f.renamed(name, label=FIELDS[name].label)  # the run form's label is its own
        assert getattr(Augment(), f.name) == f.default == getattr(TrainConfig(), CONFIG_NAMES[f.name])


def _layer_message(node_type: str, params: dict, param: str) -> str:
    g = parse_graph(chain(VEC, ("n", node_type, params)))
    (issue,) = [i for i in analyze(g).issues if i.node_id == "n" and i.param == param]
    return issue.message


def _config_message(**changes) -> str:
    (problem,) = TrainConfig(**changes).validate(raise_on_error=False)
    return problem[1]


def _augment_message(**changes) -> str:
    with pytest.raises(DataError) as info:
        Augment(**changes).validate()
    return str(info.value).removeprefix("augmentation ")


@pytest.mark.parametrize("value, wording", [
    (0, "{name}=0 is out of range; expected {name} >= {lo}"),
    (-3, "{name}=-3 is out of range; expected {name} >= {lo}"),
    ("many", "{name} must be an integer, got 'many'"),
    (2.5, "{name} must be an integer, got 2.5"),
    (True, "{name} must be an integer, got True"),
    (None, "{name} must be set; it cannot be null"),
])
def test_the_same_bad_value_gets_the_same_words_in_a_layer_a_setting_and_an_augmentation(value, wording):
    """Linear's out_features (>= 1), TrainConfig's batch_size (>= 1) and Augment's crop_padding (>= 0):
    three integer fields, checked through their own paths (analysis, validate(), Augment.validate())."""
    got = {"out_features": _layer_message("Linear", {"out_features": value}, "out_features"),
           "batch_size": _config_message(batch_size=value),
           "crop_padding": _augment_message(crop_padding=value if value != 0 else -1)}
    lows = {"out_features": 1, "batch_size": 1, "crop_padding": 0}
    for name, message in got.items():
        expected = wording.format(name=name, lo=lows[name])
        if name == "crop_padding" and value == 0:
            expected = expected.replace("=0 ", "=-1 ")
        assert message == expected, (name, message)


def test_floats_get_the_same_words_everywhere():
    assert _layer_message("Dropout", {"p": 1.5}, "p") == "p=1.5 is out of range; expected p <= 1"
    assert _config_message(label_smoothing=1.5) == "label_smoothing=1.5 is out of range; expected label_smoothing <= 1"
    assert _augment_message(flip_prob=1.5) == "flip_prob=1.5 is out of range; expected flip_prob <= 1"
    assert _config_message(lr="fast") == "lr must be a number, got 'fast'"
    assert _augment_message(noise_std="x") == "noise_std must be a number, got 'x'"
    assert _layer_message("Dropout", {"p": "x"}, "p") == "p must be a number, got 'x'"


# ---- one text parser ------------------------------------------------------------------------------

def _all_fields():
    for spec in REGISTRY.values():
        for p in spec.params:
            yield f"{spec.type}.{p.name}", p
    for f in SCHEMA:
        yield f"TrainConfig.{f.name}", f


@pytest.mark.parametrize("where, f", list(_all_fields()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_default_survives_text_and_back(where, f):
    assert f.problem(f.default) is None, where
    assert f.parse_text(f.to_text(f.default)) == f.default


@pytest.mark.parametrize("f, text, value", [
    (FIELDS["betas"], "0.9, 0.99", [0.9, 0.99]),
    (FIELDS["betas"], "[0.9 0.99]", [0.9, 0.99]),
    (FIELDS["milestones"], "", []),
    (FIELDS["milestones"], "100;200", [100, 200]),
    (FIELDS["lr"], "3e-4", 3e-4),
    (FIELDS["nesterov"], "true", True),
    (FIELDS["teacher"], "", ""),
    (REGISTRY["Conv2d"].param("kernel_size"), "3, 5", [3, 5]),
    (REGISTRY["Conv2d"].param("padding"), "same", "same"),
])
def test_parse_text(f, text, value):
    assert f.parse_text(text) == value


@pytest.mark.parametrize("f, text, message", [
    (FIELDS["lr"], "fast", "lr must be a number, got 'fast' (e.g. 0.5 or 1e-5)"),
    (FIELDS["epochs"], "1.5", "epochs must be an integer, got '1.5' (e.g. 32)"),
    (FIELDS["betas"], "0.9, x", "betas must be a list of numbers separated by commas, got '0.9, x' (e.g. 0.9, 0.999)"),
    (FIELDS["nesterov"], "maybe", "nesterov must be true or false, got 'maybe'"),
    (FIELDS["epochs"], " ", "epochs must be set; it cannot be empty"),
])
def test_parse_text_refuses_with_the_validators_words(f, text, message):
    with pytest.raises(SettingError) as info:
        f.parse_text(text)
    assert str(info.value) == message


# ---- --set and --config ---------------------------------------------------------------------------

def test_parse_settings_reads_each_value_with_its_field():
    assert parse_settings(["betas=0.9,0.99", "schedule=cosine", "augment_flip=yes", "milestones=10, 20"]) == {
        "betas": [0.9, 0.99], "schedule": "cosine", "augment_flip": True, "milestones": [10, 20]}
    with pytest.raises(ConfigError) as info:
        parse_settings(["nope=1", "lr=fast", "lr"])
    (nope, nope_message), *rest = info.value.problems
    assert nope == "nope" and nope_message.startswith("unknown setting 'nope'; known settings are augment_affine, ")
    assert rest == [("lr", "lr must be a number, got 'fast' (e.g. 0.5 or 1e-5)"),
                    ("--set", "'lr' is not KEY=VALUE; write e.g. lr=0.01 or betas=0.9,0.99")]


def test_config_file_then_flags_then_sets(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lr": 0.5, "optimizer": "sgd", "epochs": 7}))
    cfg = train_config("resnet_small", "classification", config_file=str(path), flags={"epochs": 3},
                       sets=["lr=0.25", "betas=0.8,0.9"])
    base = training_defaults("resnet_small", "classification")
    assert cfg.to_dict() == {**base, "lr": 0.25, "optimizer": "sgd", "epochs": 3, "betas": [0.8, 0.9]}
    path.write_text(json.dumps({"lr": 0.5, "rate": 1}))
    with pytest.raises(ConfigError, match="rate: .*c.json: unknown setting 'rate'"):
        train_config("mlp", "classification", config_file=str(path))
    path.write_text("{")
    with pytest.raises(ConfigError, match=r"--config: .*c.json is not valid JSON"):
        train_config("mlp", "classification", config_file=str(path))
    with pytest.raises(ConfigError, match=r"lr: lr=0.0 is out of range; expected lr > 0"):
        train_config("mlp", "classification", sets=["lr=0"])


def _cli(tmp_path, *argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "STUDIO_WORKSPACE": str(tmp_path / "ws"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "studio", *argv], capture_output=True, text=True, env=env,
                          timeout=180)


def test_train_refuses_bad_settings_with_exit_2_and_no_run(tmp_path):
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps(TINY_MLP))
    done = _cli(tmp_path, "train", str(graph), "--data", "iris", "--set", "betas=0.9,1.5", "--set", "schedule=cos")
    assert done.returncode == 2, done.stderr
    assert "betas: betas=[0.9, 1.5] has the entry 1.5, which is out of range; expected betas < 1" in done.stderr
    assert "schedule: schedule='cos' is not one of 'none', 'step'" in done.stderr
    done = _cli(tmp_path, "train", str(graph), "--data", "iris", "--config", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and "--config: cannot read" in done.stderr
    assert not (tmp_path / "ws" / "runs").exists() or not any((tmp_path / "ws" / "runs").iterdir())


def test_train_with_config_and_set_trains_with_those_settings(tmp_path):
    graph, config = tmp_path / "g.json", tmp_path / "c.json"
    graph.write_text(json.dumps(TINY_MLP))
    config.write_text(json.dumps({"optimizer": "adamw", "lr": 0.02, "weight_decay": 0.01}))
    done = _cli(tmp_path, "train", str(graph), "--data", "iris", "--config", str(config), "--batch-size", "16",
                "--set", "betas=0.9,0.99", "--set", "schedule=cosine", "--set", "max_steps=3", "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    saved = json.loads((tmp_path / "ws" / "runs" / run_id / "config.json").read_text())
    assert saved == {**TrainConfig().to_dict(), "optimizer": "adamw", "lr": 0.02, "weight_decay": 0.01,
                     "batch_size": 16, "betas": [0.9, 0.99], "schedule": "cosine", "max_steps": 3}


# ---- one set of defaults for the page and the CLI --------------------------------------------------

def test_registered_tasks_without_torch_are_the_registrys():
    assert {i: get_info(i).task for i in REGISTERED_IDS} == REGISTERED_TASKS


@pytest.mark.parametrize("template", [t.name for t in list_templates()])
def test_cli_starts_every_template_from_the_pages_defaults(template, tmp_path, capsys):
    """The CLI's whole pre-launch path (default dataset, its task, the template) gives the config the
    Train page starts from: training_defaults(its template, its dataset's task)."""
    t = next(t for t in list_templates() if t.name == template)
    graph = load_template(template)
    assert graph.name == template  # the CLI knows a template by the graph's name, the page by its session
    path = tmp_path / "g.json"
    path.write_text(graph.to_json())
    args = argparse.Namespace(graph=str(path), data=None, data_option=None, config=None, set=None)
    if t.dataset is None:
        pytest.skip(f"{template} has no default dataset")
    _, options, config = prepare_train(args)
    task = get_info(args.data, options=options or None).task
    assert config.to_dict() == {**training_defaults(template, task), "version": TrainConfig().version}
    for key, value in t.config.items():
        assert config.to_dict()[key] == value


def _form_as_config(at: AppTest) -> dict:
    from components.schema_form import widget_value
    from components.train.train_form import FIELDS as FORM_FIELDS

    return {f.name: widget_value(f, at.session_state[CFG + f.name], "number") for f in FORM_FIELDS}


def test_the_train_page_shows_what_the_cli_would_train_for_resnet_small(_workspace):
    (_workspace / "graphs").mkdir(parents=True, exist_ok=True)
    (_workspace / "graphs" / "_autosave.json").write_text(load_template("resnet_small").to_json())
    (_workspace / "graphs" / "_autosave.meta.json").write_text(
        json.dumps({"template": "resnet_small", "dataset_id": "digits",
                    "dataset_options": {"image_size": 32, "channels": 3}}))  # cifar10's offline stand-in
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/3_Train.py")
    rerun(at)
    path = _workspace / "resnet_small.json"
    path.write_text(load_template("resnet_small").to_json())
    args = argparse.Namespace(graph=str(path), data="digits", data_option=[("image_size", 32), ("channels", 3)],
                              config=None, set=None)
    _, _, cli_config = prepare_train(args)
    assert {**_form_as_config(at), "version": 1} == cli_config.to_dict()
    assert cli_config.optimizer == "sgd" and cli_config.schedule == "cosine" and cli_config.lr == 0.1


# ---- the lr typed in the form reaches the optimizer ------------------------------------------------

def test_the_lr_typed_in_the_train_form_reaches_the_optimizer(_workspace):
    at = open_train_page(_workspace, TINY_MLP)
    at.number_input(key=f"{CFG}lr").set_value(0.0123)
    at.number_input(key=f"{CFG}max_steps").set_value(3)
    at.number_input(key=f"{CFG}batch_size").set_value(8)
    at.text_input(key=f"{CFG}betas").set_value("0.8 0.95")  # typed with a space: the one list parser
    launch_button(at).click()
    rerun(at)
    assert any("Launched" in s.value for s in at.success), [e.value for e in at.error]
    run_id = at.session_state["studio.train.picked_runs"][0]
    saved = json.loads((_workspace / "runs" / run_id / "config.json").read_text())
    assert (saved["lr"], saved["betas"]) == (0.0123, [0.8, 0.95])
    store = Store(_workspace / "studio.db")
    deadline = time.monotonic() + POLL_S
    while store.get_run(run_id).status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert store.get_run(run_id).status == "completed", store.get_run(run_id).error
    # the worker logs the optimizer's param-group lr each step (no schedule, no warmup: the lr itself)
    lrs = [m.value for m in store.read_metrics(run_id, since_step=-1) if m.key == "lr"]
    assert lrs and all(v == pytest.approx(0.0123) for v in lrs)


def test_every_integer_setting_refuses_a_value_no_store_or_json_reader_can_hold():
    """max_steps=10**30 used to pass validation and fail in the worker with SQLite's OverflowError."""
    ints = [f for f in FIELDS.values() if f.kind == "int" and f.name != "version"]
    assert {"max_steps", "eval_every", "warmup_steps"} <= {f.name for f in ints}
    for f in ints:
        problems = dict(TrainConfig(**{f.name: 10**30}).validate(raise_on_error=False))
        assert "out of range" in problems.get(f.name, ""), f.name
    assert TrainConfig(max_steps=2**53 - 1).validate(raise_on_error=False) == []
    with pytest.raises(ConfigError, match="max_steps"):
        TrainConfig(**parse_settings(["max_steps=1" + "0" * 30])).validate()


def test_every_setting_the_run_form_shows_has_a_label_a_person_reads():
    shown = [f for f in SCHEMA if f.group != "meta"]
    assert all(f.label and f.label != f.name for f in shown), [f.name for f in shown if not f.label]
    assert FIELDS["eval_every"].title == "Evaluate every N steps (0 = each epoch)"
    assert FIELDS["version"].title == "version"  # no label: the name
