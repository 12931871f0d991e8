"""Training from other runs (studio.training.transfer): distillation, warm start, frozen nodes and
pruned fine-tuning, with plain PyTorch as the oracle; and the graph's `frozen` key.

In-process Trainer runs check the loss and the bit-for-bit claims; one source run and one student
run (teacher + warm start + a frozen node) go through the worker's code (conftest.train_here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from studio.compile import compile_graph
from studio.data import apply_dataset, get_dataset, get_info
from studio.errors import GraphError, TrainError
from studio.graph import parse_graph
from studio.training import TrainConfig
from studio.training.config import ConfigError
from studio.training.loop import Task, Trainer
from studio.training.transfer import Distiller, freeze_nodes, match_graph, trainable_params, warm_start
from tests.conftest import train_here

ROOT = Path(__file__).resolve().parents[1]


def graph_doc(hidden: int = 32, frozen: tuple = ()) -> dict:
    chain = [("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
             ("fc1", "Linear", {"out_features": hidden}), ("bn1", "BatchNorm1d", None), ("relu1", "ReLU", None),
             ("fc2", "Linear", {"out_features": 10})]
    return {"format": "studio.graph/1", "name": f"mlp{hidden}",
            "nodes": [{"id": i, "type": t, **({"params": p} if p else {}), **({"frozen": True} if i in frozen else {})}
                      for i, t, p in chain],
            "edges": [{"source": a[0], "target": b[0]} for a, b in zip(chain, chain[1:], strict=False)]}


@pytest.fixture(scope="module")
def digits():
    return get_dataset("digits", seed=0)


def train(model, data, distill=None, steps: int = 8):
    cfg = TrainConfig(max_steps=steps, batch_size=32, probes=False, seed=0)
    trainer = Trainer(model, data, cfg, task=Task("classification", num_classes=10), distill=distill)
    trainer.fit()
    return trainer


# ---- distillation -----------------------------------------------------------------------------------------

def test_a_student_with_distill_weight_0_trains_bit_for_bit_like_a_plain_run(digits):
    g = parse_graph(graph_doc())
    teacher = compile_graph(parse_graph(graph_doc(64)), seed=5)
    plain = train(compile_graph(g, seed=1), digits).model
    student = train(compile_graph(g, seed=1), digits, Distiller(teacher, 4.0, 0.0)).model
    for (k, a), b in zip(plain.state_dict().items(), student.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    taught = train(compile_graph(g, seed=1), digits, Distiller(teacher, 4.0, 0.7)).model
    assert not torch.equal(taught.fc1.weight, plain.fc1.weight)


def test_the_distillation_loss_is_the_weighted_kl_of_softened_outputs_times_t_squared():
    torch.manual_seed(0)
    teacher = torch.nn.Linear(6, 5)
    x, out, task_loss = torch.randn(4, 6), torch.randn(4, 5, requires_grad=True), torch.tensor(1.25)
    loss = Distiller(teacher, 3.0, 0.6)(out, x, task_loss)
    p_t = (teacher(x) / 3.0).softmax(-1).detach()
    kl = (p_t * (p_t.log() - (out / 3.0).log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(loss, 0.6 * kl * 9.0 + 0.4 * task_loss)
    assert teacher.training is False and not any(p.requires_grad for p in teacher.parameters())
    loss.backward()
    assert out.grad is not None and teacher.weight.grad is None


# ---- frozen nodes -----------------------------------------------------------------------------------------

def test_frozen_nodes_do_not_change_while_the_rest_trains(digits):
    g = parse_graph(graph_doc(frozen=("fc1", "bn1")))
    model = compile_graph(g, seed=2)
    assert freeze_nodes(model, g) == ["fc1", "bn1"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trainable_params(model) == 32 * 10 + 10
    trained = train(model, digits).model
    after = trained.state_dict()
    for k in before:
        if k.startswith(("fc1.", "bn1.")):
            assert torch.equal(before[k], after[k]), k  # weights and batch-norm statistics alike
    assert not torch.equal(before["fc2.weight"], after["fc2.weight"])


def test_the_frozen_key_round_trips_and_must_be_a_boolean():
    g = parse_graph(graph_doc(frozen=("fc1",)))
    assert g.node("fc1").frozen and not g.node("fc2").frozen
    assert g.to_dict()["nodes"][2]["frozen"] is True and "frozen" not in g.to_dict()["nodes"][5]
    doc = graph_doc()
    doc["nodes"][2]["frozen"] = "yes"
    with pytest.raises(GraphError, match="fc1: frozen must be true or false, got str 'yes'"):
        parse_graph(doc)
    doc["nodes"][2] = {**doc["nodes"][2], "frozen": True, "locked": True}
    with pytest.raises(GraphError, match="unknown key 'locked'"):
        parse_graph(doc)


def test_config_checks_run_ids_and_pruning_without_a_source():
    with pytest.raises(ConfigError, match=r"teacher='\.\./x' is not a run id"):
        TrainConfig(teacher="../x").validate()
    with pytest.raises(ConfigError, match="prune_method='prune' prunes the weights of init_from, which is empty"):
        TrainConfig(prune_method="prune").validate()
    assert TrainConfig.from_dict(TrainConfig(teacher="r1", distill_weight=0.3).to_dict()).teacher == "r1"


# ---- through the worker's code (conftest.train_here): a source run, then a student starting from it ----

@pytest.fixture(scope="module")
def source(tmp_path_factory):
    ws = tmp_path_factory.mktemp("distill-ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(ws))
        run_id = train_here(graph_doc(), "digits", TrainConfig(max_steps=30, batch_size=32, probes=False))
    return ws, run_id


def test_warm_start_copies_matched_nodes_exactly_and_lists_the_others(source, monkeypatch):
    from studio.training.transfer import load_trained

    ws, run_id = source
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    doc = graph_doc()
    doc["nodes"][5]["params"]["out_features"] = 10
    doc["nodes"][2]["params"]["out_features"] = 32
    doc["nodes"].insert(5, {"id": "fc_extra", "type": "Linear", "params": {"out_features": 16}})
    doc["edges"] = [e for e in doc["edges"] if e["source"] != "relu1"] + [
        {"source": "relu1", "target": "fc_extra"}, {"source": "fc_extra", "target": "fc2"}]
    g = parse_graph(doc)
    match = match_graph(g, run_id)
    assert match.matched == ["fc1", "bn1"]
    text = "\n".join(match.lines())
    assert "fc_extra: run" in text and "has no node 'fc_extra'" in text
    assert "fc2: weight (10, 16) vs (10, 32) (here vs there)" in text
    model = compile_graph(g, seed=9)
    fresh_fc2 = model.fc2.weight.clone()
    warm_start(model, run_id)
    _, src = load_trained(run_id)
    for k, v in src.state_dict().items():
        if k.startswith(("fc1.", "bn1.")):
            assert torch.equal(model.state_dict()[k], v), k
    assert torch.equal(model.fc2.weight, fresh_fc2)


def test_a_student_run_with_teacher_warm_start_and_a_frozen_node(source, monkeypatch):
    from studio.runs import Store
    from studio.training.transfer import load_trained

    ws, run_id = source
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    cfg = TrainConfig(max_steps=20, batch_size=32, probes=False, teacher=run_id, init_from=run_id,
                      temperature=2.0, distill_weight=0.5)
    student = train_here(graph_doc(frozen=("fc1",)), "digits", cfg, parent_id=run_id)
    _, src = load_trained(run_id)
    _, out = load_trained(student)
    assert torch.equal(out.fc1.weight, src.fc1.weight) and torch.equal(out.fc1.bias, src.fc1.bias)
    assert not torch.equal(out.fc2.weight, src.fc2.weight)
    messages = [e.message for e in Store().read_events(student)]
    copied = f"warm start from run {run_id}: 3 node(s) copied (fc1, bn1, fc2)"
    assert any(m.startswith(copied) for m in messages), messages
    assert any("distilling from run" in m for m in messages)
    assert any("frozen nodes: fc1" in m for m in messages)

    # Compare shows the teacher and the student side by side
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["studio.session.run_id"] = student
    at.switch_page("pages/5_Compare.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    pair = next(d.value for d in at.dataframe if "role" in d.value.columns)
    assert pair["role"].tolist() == ["teacher", "student"] and pair["run"].tolist() == [run_id, student]
    assert pair["params"].tolist() == [2474, 2474] and "val_accuracy" in pair.columns


def test_pruned_fine_tuning_keeps_the_pruned_weights_at_zero(source, monkeypatch):
    from studio.deploy.variants import prunable
    from studio.training.transfer import load_trained

    ws, run_id = source
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    cfg = TrainConfig(max_steps=20, batch_size=32, probes=False, init_from=run_id, prune_method="prune",
                      prune_sparsity=0.6, optimizer="adamw", weight_decay=0.01)
    child = train_here(graph_doc(), "digits", cfg, parent_id=run_id)
    _, model = load_trained(child)
    layers = prunable(model)
    total = sum(m.weight.numel() for _, m in layers)
    assert sum(int((m.weight == 0).sum()) for _, m in layers) == round(0.6 * total)


def test_train_cli_refuses_an_unknown_teacher_before_a_run_exists(tmp_path, capsys):
    from studio.__main__ import main
    from studio.runs import list_runs

    path = tmp_path / "g.json"
    path.write_text(json.dumps(graph_doc()))
    assert main(["train", str(path), "--data", "digits", "--teacher", "nope", "--temperature", "2",
                 "--distill-weight", "0.5"]) == 1
    assert "error: run 'nope' has no run directory" in capsys.readouterr().err
    assert list_runs() == []
    with pytest.raises(TrainError, match="outputs"):
        from studio.training.transfer import load_teacher

        student = compile_graph(apply_dataset(parse_graph(graph_doc()), get_info("digits")))
        teacher_doc = graph_doc()
        teacher_doc["nodes"][5]["params"]["out_features"] = 4
        load_teacher_for_test(load_teacher, student, teacher_doc, tmp_path)


def load_teacher_for_test(load_teacher, student, teacher_doc, tmp_path):
    """A teacher run directory made by hand (the formats of run.json, graph.json, config.json, best.pt)."""
    from studio.training.callbacks import CHECKPOINT_FORMAT

    d = tmp_path / "workspace" / "runs" / "t1"
    (d / "checkpoints").mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"run_id": "t1", "dataset_id": "digits"}))
    (d / "graph.json").write_text(json.dumps(teacher_doc))
    (d / "config.json").write_text(json.dumps(TrainConfig().to_dict()))
    model = compile_graph(parse_graph(teacher_doc), seed=0)
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict()}, d / "checkpoints" / "best.pt")
    load_teacher("t1", student, "classification")
