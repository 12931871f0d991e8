"""Fine-tuning (studio.training.finetune, studio.graph_head): the head, its replacement, freezing all but the
last N blocks, the per-group learning rate and what the event log says.

Runs go through the real worker code in this process (conftest.train_here), so each run costs only its
few training steps. Bit-for-bit claims compare tensors of one process.
"""

from __future__ import annotations

import pytest
import torch

from studio.compile import compile_graph
from studio.data import get_dataset
from studio.graph import parse_graph
from studio.graph_head import head_of, head_size, with_new_head
from studio.templates import load_template
from studio.training import TrainConfig
from studio.training.config import FIELDS, ConfigError
from studio.training.finetune import block_units, freeze_all_but_last, freeze_plan, group_lines
from studio.training.loop import Task, Trainer
from studio.training.optim import WARM_ATTR, build_optimizer, param_groups
from studio.training.transfer import FROZEN_ATTR
from tests.conftest import train_here

SHAPES16 = {"image_size": 16, "num_samples": 400}  # 1x16x16 shapes (5 classes): the source task
DIGITS16 = {"image_size": 16}  # the fine-tuning task: digits (10 classes) at the same size


def cnn_doc(classes: int) -> dict:
    chain = [("input", "Input", {"shape": [1, 16, 16]}),
             ("conv1", "Conv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1}), ("bn1", "BatchNorm2d", None),
             ("relu1", "ReLU", None), ("conv2", "Conv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1}),
             ("bn2", "BatchNorm2d", None), ("relu2", "ReLU", None), ("flat", "Flatten", None),
             ("fc", "Linear", {"out_features": classes}), ("act", "Identity", None)]
    return {"format": "studio.graph/1", "name": "tiny-cnn",
            "nodes": [{"id": i, "type": t, **({"params": p} if p else {})} for i, t, p in chain],
            "edges": [{"source": a[0], "target": b[0]} for a, b in zip(chain, chain[1:], strict=False)]}


# ---- the head --------------------------------------------------------------------------------------------

def test_the_head_is_the_last_node_with_weights_feeding_the_output():
    g = parse_graph(cnn_doc(5))
    assert head_of(g) == "fc"  # the Identity after it has no weights
    assert head_size(g, "fc") == ("out_features", 5)
    assert head_of(load_template("resnet20")) == "fc"
    new = with_new_head(g, 10)
    assert new.node("fc").params["out_features"] == 10 and g.node("fc").params["out_features"] == 5
    conv_head = parse_graph({**cnn_doc(5), "nodes": cnn_doc(5)["nodes"][:3],
                             "edges": cnn_doc(5)["edges"][:2]})
    assert head_of(conv_head) == "bn1"
    with pytest.raises(ValueError, match="the head 'bn1' is a BatchNorm2d, whose output size is not its last"):
        with_new_head(conv_head, 3)
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        with_new_head(g, 0)


# ---- units, freezing and groups on a compiled model ------------------------------------------------------

def test_units_are_block_copies_and_top_level_layers_with_weights_and_freezing_keeps_the_last_n():
    g = load_template("resnet20")
    model = compile_graph(g, seed=0)
    assert block_units(model, g) == ["stem", "stem_bn", "stage1.0", "stage1.1", "stage1.2", "stage2_down",
                                     "stage2.0", "stage2.1", "stage3_down", "stage3.0", "stage3.1", "fc"]
    frozen, trained = freeze_all_but_last(model, g, 2, "fc", frozen_attr=FROZEN_ATTR)
    assert trained == ["stage3.0", "stage3.1", "fc"]
    assert frozen[0] == "stem" and frozen[-1] == "stage3_down"
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    assert all(v == name.startswith(("stage3.", "fc.")) for name, v in grads.items()), grads
    assert model.get_submodule("stage2.1").studio_frozen is True
    assert freeze_plan(g, 2) == ("train_last_blocks=2 freezes 9 unit(s) (stem, stem_bn, stage1.0, stage1.1, stage1.2, "
                                 "stage2_down, stage2.0, stage2.1, stage3_down) and trains stage3.0, stage3.1, fc "
                                 "(head: fc)")


def test_a_frozen_block_copy_keeps_its_weights_and_batch_norm_statistics_while_the_last_copy_trains():
    doc = {"format": "studio.graph/2", "name": "blocks",
           "blocks": {"unit": {"params": {"channels": 4},
                               "nodes": [{"id": "x", "type": "Input"},
                                         {"id": "conv", "type": "Conv2d",
                                          "params": {"out_channels": "$channels", "kernel_size": 3, "padding": 1}},
                                         {"id": "bn", "type": "BatchNorm2d"}, {"id": "relu", "type": "ReLU"}],
                               "edges": [{"source": "x", "target": "conv"}, {"source": "conv", "target": "bn"},
                                         {"source": "bn", "target": "relu"}]}},
           "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 16, 16]}},
                     {"id": "layer", "type": "unit", "repeat": 2}, {"id": "flat", "type": "Flatten"},
                     {"id": "fc", "type": "Linear", "params": {"out_features": 5}}],
           "edges": [{"source": "input", "target": "layer"}, {"source": "layer", "target": "flat"},
                     {"source": "flat", "target": "fc"}]}
    g = parse_graph(doc)
    model = compile_graph(g, seed=0)
    assert freeze_all_but_last(model, g, 1, head_of(g), frozen_attr=FROZEN_ATTR) == (["layer.0"], ["layer.1", "fc"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(max_steps=3, batch_size=16, probes=False)
    data = get_dataset("shapes", seed=0, options=SHAPES16)
    Trainer(model, data, cfg, task=Task("classification", num_classes=5)).fit()
    after = model.state_dict()
    for key in before:
        if key.startswith("layer.0."):
            assert torch.equal(after[key], before[key]), key  # frozen: weights and running statistics
        elif not key.endswith("num_batches_tracked"):
            assert not torch.equal(after[key], before[key]), key  # the last copy (its statistics too) and fc


def test_param_groups_hold_the_warm_started_params_at_lr_times_the_scale():
    g = parse_graph(cnn_doc(5))
    model = compile_graph(g, seed=0)
    for node_id in ("conv1", "bn1", "conv2", "bn2"):
        setattr(model.get_submodule(node_id), WARM_ATTR, True)
    cfg = TrainConfig(lr=0.01, backbone_lr_scale=0.1, init_from="r1", optimizer="sgd")
    opt = build_optimizer(model, cfg)
    backbone, new = opt.param_groups
    want = [p for n in ("conv1", "bn1", "conv2", "bn2") for p in model.get_submodule(n).parameters()]
    assert [id(p) for p in backbone["params"]] == [id(p) for p in want]
    assert [id(p) for p in new["params"]] == [id(model.fc.weight), id(model.fc.bias)]
    assert backbone["lr"] == pytest.approx(0.001) and new["lr"] == 0.01
    assert (backbone["name"], new["name"]) == ("backbone", "new")
    lines = group_lines(model, cfg)
    assert "group 'backbone'" in lines[0] and "lr 0.01 x 0.1 = 0.001" in lines[0] and "conv1, bn1" in lines[0]
    assert "group 'new'" in lines[1] and "(new or re-initialised nodes, 5,125 parameters: fc)" in lines[1]
    setattr(model.fc, WARM_ATTR, True)  # everything that trains was loaded: one group, at lr x scale
    (only,) = param_groups(model, cfg)
    assert only["name"] == "backbone" and only["lr"] == pytest.approx(0.001)
    assert group_lines(model, cfg)[0].startswith("learning rate of group 'backbone' (warm-started nodes, ")
    setattr(model.fc, WARM_ATTR, False)
    # scale 1 (or no warm start) is one group, as before
    assert len(param_groups(model, TrainConfig(lr=0.01))) == 1
    # the loop applies the scale after the schedule at every step
    data = get_dataset("shapes", seed=0, options=SHAPES16)
    trainer = Trainer(model, data, cfg.replace(max_steps=2, batch_size=16, probes=False, warmup_steps=1),
                      task=Task("classification", num_classes=5))
    trainer.fit()
    assert [gr["lr"] for gr in trainer.optimizer.param_groups] == pytest.approx([0.001, 0.01])


def test_config_fields_labels_and_checks():
    assert FIELDS["backbone_lr_scale"].label == "Backbone LR multiplier"
    assert FIELDS["train_last_blocks"].group == "transfer" and FIELDS["train_last_blocks"].default == -1
    with pytest.raises(ConfigError, match="backbone_lr_scale=0.1 scales the learning rate of the weights init_from"):
        TrainConfig(backbone_lr_scale=0.1).validate()
    with pytest.raises(ConfigError, match="train_last_blocks"):
        TrainConfig(train_last_blocks=-2).validate()
    TrainConfig(train_last_blocks=0).validate()  # freezing needs no warm start


def test_the_train_cli_takes_the_fine_tuning_flags(tmp_path, monkeypatch):
    import json

    from studio.__main__ import build_parser
    from studio.training.cli import prepare_train

    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "ws"))
    path = tmp_path / "g.json"
    path.write_text(json.dumps(cnn_doc(10)))
    args = build_parser().parse_args(["train", str(path), "--data", "digits", "--init-from", "r1",
                                      "--backbone-lr-scale", "0.1", "--train-last-blocks", "2"])
    _, _, config = prepare_train(args)
    assert (config.init_from, config.backbone_lr_scale, config.train_last_blocks) == ("r1", 0.1, 2)


# ---- through the worker: a source run, then fine-tunes from it -------------------------------------------

@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished run of the tiny CNN on 16x16 shapes (5 classes), trained by the worker in this process."""
    ws = tmp_path_factory.mktemp("finetune-ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(ws))
        run_id = train_here(cnn_doc(5), "shapes", TrainConfig(max_steps=6, batch_size=32, probes=False),
                            dataset_options=SHAPES16)
    return ws, run_id


def events(run_id) -> list[str]:
    from studio.runs import Store

    return [e.message for e in Store().read_events(run_id)]


def test_a_new_head_with_backbone_lr_0_keeps_the_backbone_weights_and_trains_the_head(source, monkeypatch):
    from studio.training.transfer import load_trained

    ws, src_id = source
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    graph = with_new_head(parse_graph(cnn_doc(5)), 10)  # digits: 10 classes
    cfg = TrainConfig(max_steps=5, batch_size=32, probes=False, init_from=src_id, backbone_lr_scale=0.0,
                      optimizer="adamw", weight_decay=0.1)
    run_id = train_here(graph.to_dict(), "digits", cfg, dataset_options=DIGITS16)
    _, src = load_trained(src_id)
    _, out = load_trained(run_id)
    for name, p in src.named_parameters():
        if not name.startswith("fc."):
            assert torch.equal(out.get_parameter(name), p), name  # lr 0 (weight decay too): bit for bit
    fresh = compile_graph(graph, seed=0).fc.weight  # the worker's seed-0 initialisation of the new head
    assert out.fc.weight.shape == (10, 1024) and not torch.equal(out.fc.weight, fresh)
    log = events(run_id)
    assert f"loaded 14 tensors from run {src_id} into 4 node(s)" in log, log
    assert f"re-initialised (fresh weights, not loaded from run {src_id}): fc" in log
    groups = [m for m in log if m.startswith("learning rate of group")]
    assert len(groups) == 2 and "lr 0.001 x 0 = 0" in groups[0] and "conv1, bn1, conv2, bn2" in groups[0]
    assert "'new'" in groups[1] and "10,250 parameters: fc): lr 0.001" in groups[1]


def test_train_last_blocks_freezes_weights_and_batch_norm_statistics(source, monkeypatch):
    from studio.training.transfer import load_trained

    ws, src_id = source
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    cfg = TrainConfig(max_steps=5, batch_size=32, probes=False, init_from=src_id, train_last_blocks=1)
    run_id = train_here(cnn_doc(5), "shapes", cfg, dataset_options=SHAPES16)
    _, src = load_trained(src_id)
    _, out = load_trained(run_id)
    before, after = src.state_dict(), out.state_dict()
    for key in before:
        if key.startswith(("conv1.", "bn1.", "conv2.")):
            assert torch.equal(after[key], before[key]), key  # running_mean/var and num_batches_tracked too
        elif not key.endswith("num_batches_tracked"):
            assert not torch.equal(after[key], before[key]), key  # bn2 and fc train
    log = events(run_id)
    assert any(m.startswith("frozen by train_last_blocks=1: conv1, bn1, conv2; trained: bn2, fc (head: fc)")
               for m in log), log
    assert any(m.startswith("learning rate: one group, ") and "at lr 0.001" in m for m in log), log
