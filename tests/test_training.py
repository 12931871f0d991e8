"""Training engine in-process: TrainConfig, schedules against torch's, losses, the loop, checkpoints, probes."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from studio.compile import compile_graph
from studio.data import get_dataset
from studio.errors import TrainError
from studio.graph import parse_graph
from studio.training import Callback, ConfigError, Task, TrainConfig, Trainer, config_schema
from studio.training.callbacks import (
    Checkpointer,
    DivergenceGuard,
    EarlyStopping,
    StopRequest,
    load_checkpoint,
    restore_checkpoint,
)
from studio.training.optim import LRSchedule, autocast_dtype, init_weights
from studio.training.probes import Prober, fit_to_cap, histogram, load_snapshot, read_index

# ---- TrainConfig ----------------------------------------------------------------------------------


def test_default_config_is_valid_and_round_trips():
    cfg = TrainConfig()
    assert cfg.validate() == []
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict({"lr": 0.1, "betas": (0.8, 0.9)}).betas == [0.8, 0.9]


@pytest.mark.parametrize("changes, match", [
    ({"optimizer": "lbfgs"},
     r"optimizer: optimizer='lbfgs' is not one of 'sgd', 'adam', 'adamw', 'rmsprop', 'adagrad'"),
    ({"lr": 0.0}, r"lr: lr=0.0 is out of range; expected lr > 0"),
    ({"lr": "fast"}, r"lr: lr must be a number, got 'fast'"),
    ({"batch_size": 0}, r"batch_size: batch_size=0 is out of range; expected batch_size >= 1"),
    ({"batch_size": 8.0}, r"batch_size: batch_size must be an integer, got 8.0"),
    ({"betas": [0.9, 1.0]}, r"betas: betas=\[0.9, 1.0\] has the entry 1.0, which is out of range; expected betas < 1"),
    ({"betas": [0.9]}, r"betas: betas must be a list of 2 numbers, got \[0.9\]"),
    ({"nesterov": True}, r"nesterov: nesterov=True needs optimizer='sgd' with momentum > 0, got optimizer='adam'"),
    ({"schedule": "multistep"}, r"milestones: schedule='multistep' needs at least one milestone step"),
    ({"schedule": "multistep", "milestones": [30, 10]}, r"milestones must be strictly increasing, got \[30, 10\]"),
    ({"schedule": "cosine", "min_lr": 0.01, "lr": 0.001}, r"min_lr=0.01 must be below lr=0.001"),
    ({"max_steps": 10, "warmup_steps": 10}, r"warmup_steps=10 covers the whole run \(max_steps=10\)"),
    ({"device": "cpu", "precision": "fp16"}, r"precision='fp16' needs a CUDA device \(loss scaling\); on the CPU"),
    ({"device": "tpu"}, r"device='tpu' is not one of 'auto', 'cpu', 'cuda', 'mps'"),
    ({"monitor": "loss"}, r"monitor='loss' is not a metric name; use 'auto' or a validation metric"),
    ({"label_smoothing": 1.5}, r"label_smoothing=1.5 is out of range; expected label_smoothing <= 1"),
    ({"grad_clip": float("nan")}, r"grad_clip must be a finite number, got nan"),
])
def test_validate_messages(changes, match):
    cfg = TrainConfig(**changes)
    with pytest.raises(ConfigError, match=match):
        cfg.validate()
    assert cfg.validate(raise_on_error=False)


def test_validate_reports_every_problem_and_survives_pickling():
    with pytest.raises(ConfigError) as info:
        TrainConfig(lr=-1.0, epochs=0, optimizer="x").validate()
    assert [f for f, _ in info.value.problems] == ["optimizer", "lr", "epochs"]
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, TrainError) and again.problems == info.value.problems


def test_from_dict_rejects_unknown_keys_and_newer_versions():
    with pytest.raises(ConfigError, match=r"learning_rate: unknown setting 'learning_rate'; known settings are"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match=r"config version 2 is newer than this studio's 1"):
        TrainConfig.from_dict({"version": 2})


def test_schema_describes_every_field():
    schema = config_schema()
    assert [s["name"] for s in schema] == list(TrainConfig().to_dict())
    for s in schema:
        assert s["kind"] in {"int", "float", "bool", "choice", "str", "floats", "ints", "run"} and s["help"]
        if s["kind"] == "choice":
            assert s["default"] in s["choices"]
    by_name = {s["name"]: s for s in schema}
    assert by_name["optimizer"]["choices"] == ("sgd", "adam", "adamw", "rmsprop", "adagrad")
    assert by_name["schedule"]["choices"] == ("none", "step", "multistep", "exponential", "cosine", "onecycle",
                                              "plateau")
    assert by_name["batch_size"]["min"] == 1 and by_name["batch_size"]["default"] == 64


# ---- schedules and optimizers, torch as the oracle ------------------------------------------------

def _torch_lrs(make, steps: int, lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("cfg, make", [
    (dict(schedule="step", step_size=7, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
    (dict(schedule="multistep", milestones=[5, 20], gamma=0.1),
     lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [5, 20], 0.1)),
    (dict(schedule="exponential", gamma=0.95), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.95)),
    (dict(schedule="cosine", min_lr=0.001), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 40, 0.001)),
    (dict(schedule="onecycle"), lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.1, total_steps=40,
                                                                               cycle_momentum=False)),
])
def test_schedules_match_torch(cfg, make):
    ours = LRSchedule(TrainConfig(lr=0.1, **cfg), total_steps=40)
    np.testing.assert_allclose([ours.lr_at(t) for t in range(40)], _torch_lrs(make, 40), rtol=1e-6, atol=1e-9)


def test_warmup_then_plateau():
    s = LRSchedule(TrainConfig(lr=0.1, schedule="plateau", warmup_steps=4, plateau_patience=1, plateau_factor=0.5), 100)
    assert [s.lr_at(t) for t in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    assert [s.on_eval(v, "min") for v in (1.0, 0.9, 0.95, 0.95)] == [False, False, False, True]
    assert s.lr_at(50) == pytest.approx(0.05)
    restored = LRSchedule(s.cfg, 100)
    restored.load_state_dict(s.state_dict())
    assert restored.lr_at(50) == s.lr_at(50)


def test_init_schemes_and_precision_errors():
    model = torch.nn.Sequential(torch.nn.Linear(50, 40), torch.nn.LayerNorm(40))
    torch.manual_seed(0)
    init_weights(model, "normal")
    assert abs(model[0].weight.std().item() - 0.02) < 0.004 and model[0].bias.abs().sum() == 0
    assert torch.equal(model[1].weight, torch.ones(40))  # norm layers keep their init
    init_weights(model, "xavier")
    bound = math.sqrt(6 / (50 + 40))
    assert model[0].weight.abs().max() <= bound
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(TrainError, match="precision='fp16' needs a CUDA device"):
        autocast_dtype("fp16", torch.device("cpu"))


# ---- task losses ----------------------------------------------------------------------------------

def test_task_losses_match_torch():
    torch.manual_seed(0)
    out, y = torch.randn(4, 5, 7), torch.randint(0, 7, (4, 5))
    seq = Task("sequence")
    expected = F.cross_entropy(out.permute(0, 2, 1), y)
    assert torch.allclose(seq.loss(out, y, train=True), expected)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    smooth = Task("classification", num_classes=3, label_smoothing=0.1)
    assert torch.allclose(smooth.loss(logits, labels, train=True), F.cross_entropy(logits, labels, label_smoothing=0.1))
    assert torch.allclose(smooth.loss(logits, labels, train=False), F.cross_entropy(logits, labels))
    reg = Task("regression")
    pred, target = torch.randn(5, 1), torch.randn(5)
    assert torch.allclose(reg.loss(pred, target, train=True), F.mse_loss(pred.squeeze(1), target))
    with pytest.raises(TrainError, match=r"the model's output \(3,\) does not match the regression target \(2,\)"):
        reg.loss(torch.randn(5, 3), torch.randn(5, 2), train=True)


# ---- the loop on digits ---------------------------------------------------------------------------

MLP = {"format": "studio.graph/1", "name": "mlp",
       "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 8, 8]}},
                 {"id": "flat", "type": "Flatten"},
                 {"id": "fc1", "type": "Linear", "params": {"out_features": 32}},
                 {"id": "relu1", "type": "ReLU"},
                 {"id": "drop", "type": "Dropout", "params": {"p": 0.1}},
                 {"id": "fc2", "type": "Linear", "params": {"out_features": 10}}],
       "edges": [{"source": a, "target": b} for a, b in
                 [("input", "flat"), ("flat", "fc1"), ("fc1", "relu1"), ("relu1", "drop"), ("drop", "fc2")]]}


@pytest.fixture(scope="module")
def digits():
    return get_dataset("digits", seed=0)


class Recorder(Callback):
    def __init__(self):
        self.losses: list[float] = []
        self.evals: list[tuple[int, dict]] = []
        self.epochs: list[int] = []

    def on_step_end(self, trainer):
        self.losses.append(trainer.state.loss)

    def on_eval_end(self, trainer, metrics):
        self.evals.append((trainer.state.step, metrics))

    def on_epoch_end(self, trainer):
        self.epochs.append(trainer.state.step)


def make_trainer(data, cfg, callbacks=(), graph=MLP):
    torch.manual_seed(cfg.seed)
    model = compile_graph(parse_graph(graph), seed=cfg.seed)
    init_weights(model, cfg.init)
    task = Task(data.info.task, num_classes=data.info.num_classes, label_smoothing=cfg.label_smoothing)
    return Trainer(model, data, cfg, task=task, callbacks=list(callbacks))


def test_loop_learns_and_fires_events_in_order(digits):
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.01, eval_every=0)
    rec = Recorder()
    state = make_trainer(digits, cfg, [rec]).fit()
    spe = math.ceil(len(digits.train) / 64)
    assert state.stop_reason == "completed" and state.step == 3 * spe == len(rec.losses)
    assert rec.epochs == [spe, 2 * spe, 3 * spe] and [s for s, _ in rec.evals] == rec.epochs
    final = rec.evals[-1][1]
    assert final["val_accuracy"] > 0.85 and final["val_loss"] < rec.evals[0][1]["val_loss"]
    confusion = np.array(final["val_confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == len(digits.val)
    assert np.trace(confusion) / confusion.sum() == pytest.approx(final["val_accuracy"])


def test_same_seed_same_losses_and_different_seed_differs(digits):
    def losses(seed):
        rec = Recorder()
        make_trainer(digits, TrainConfig(max_steps=30, batch_size=32, seed=seed, optimizer="sgd", lr=0.05), [rec]).fit()
        return rec.losses
    first = losses(1)
    assert first == losses(1)
    assert first != losses(2)


def test_stop_checkpoint_and_resume_equals_uninterrupted(digits, tmp_path):
    cfg = TrainConfig(max_steps=50, batch_size=32, lr=0.01, schedule="cosine", warmup_steps=5, eval_every=10,
                      patience=100, seed=3)
    full = Recorder()
    make_trainer(digits, cfg, [full]).fit()

    class StopAt(Callback):
        def on_step_end(self, trainer):
            if trainer.state.step == 23:  # mid-epoch (40 steps per epoch at batch 32)
                (tmp_path / "stop").touch()

    ckpt_dir = tmp_path / "checkpoints"
    first = Recorder()
    es = EarlyStopping("val_accuracy", "max", patience=100)
    ck = Checkpointer(ckpt_dir, extra_state=lambda: {"early_stopping": es.state_dict()})
    state = make_trainer(digits, cfg, [StopAt(), StopRequest(tmp_path / "stop"), es, ck, first]).fit()
    assert state.stop_reason == "stopped" and state.step == 23
    ckpt = load_checkpoint(ckpt_dir / "last.pt")  # weights_only=True inside
    assert ckpt["position"] == {"step": 23, "epoch": 0, "batch_in_epoch": 23}

    (tmp_path / "stop").unlink()
    second = Recorder()
    es2 = EarlyStopping("val_accuracy", "max", patience=100)
    trainer = make_trainer(digits, cfg, [es2, second])
    restore_checkpoint(trainer, ckpt, {"early_stopping": es2})
    assert es2.best == es.best
    state = trainer.fit()
    assert state.step == 50 and state.stop_reason == "completed"
    assert first.losses + second.losses == full.losses  # bit-identical on CPU


def test_absurd_learning_rate_diverges_without_saving(digits, tmp_path):
    ck = Checkpointer(tmp_path, every=1)
    guard = DivergenceGuard(ck)
    cfg = TrainConfig(max_steps=200, batch_size=32, optimizer="sgd", lr=1e12)
    state = make_trainer(digits, cfg, [guard, ck]).fit()
    assert state.stop_reason == "diverged" and state.step < 200
    assert f"at step {state.step}" in state.message and "lower the learning rate" in state.message
    assert ck.last_step == state.step - 1
    saved = load_checkpoint(tmp_path / "last.pt")
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_early_stopping_stops(digits):
    cfg = TrainConfig(max_steps=400, batch_size=64, lr=1e-9, eval_every=5, patience=2, min_delta=0.5,
                      monitor="val_loss")
    es = EarlyStopping("val_loss", "min", patience=2, min_delta=0.5)
    state = make_trainer(digits, cfg, [es]).fit()
    assert state.stop_reason == "early_stopped" and state.step == 15
    assert "val_loss has not improved" in state.message


# ---- probes ---------------------------------------------------------------------------------------

CNN = {"format": "studio.graph/1", "name": "cnn",
       "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 8, 8]}},
                 {"id": "conv1", "type": "Conv2d", "params": {"out_channels": 6, "kernel_size": 3, "padding": 1}},
                 {"id": "bn1", "type": "BatchNorm2d"},
                 {"id": "relu1", "type": "ReLU"},
                 {"id": "pool1", "type": "MaxPool2d", "params": {"kernel_size": 2}},
                 {"id": "flat", "type": "Flatten"},
                 {"id": "fc", "type": "Linear", "params": {"out_features": 10}}],
       "edges": [{"source": a, "target": b} for a, b in
                 [("input", "conv1"), ("conv1", "bn1"), ("bn1", "relu1"), ("relu1", "pool1"), ("pool1", "flat"),
                  ("flat", "fc")]]}


def test_probes_write_snapshots_with_expected_shapes(digits, tmp_path):
    probe_x, _ = digits.probe_batch(8)
    rec = Recorder()
    prober = Prober(tmp_path, (probe_x, None), every=10)
    cfg = TrainConfig(max_steps=25, batch_size=64)
    trainer = make_trainer(digits, cfg, [prober, rec], graph=CNN)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    index = read_index(tmp_path)
    spe = math.ceil(len(digits.train) / 64)
    assert [e["step"] for e in index] == sorted({0, 10, 20, spe, 25})  # start, every 10, epoch end, last
    entry = index[-1]
    assert set(entry["feature_maps"]) == {"conv1", "bn1", "relu1", "pool1"}
    assert entry["feature_maps"]["conv1"]["shape"] == [8, 6, 8, 8]
    assert entry["feature_maps"]["pool1"]["shape"] == [8, 6, 4, 4]
    assert 0.0 <= entry["dead_fraction"]["relu1"] <= 1.0 and set(entry["dead_fraction"]) == {"relu1"}
    assert set(entry["grad_norms"]) == {"conv1", "bn1", "fc"} and all(v > 0 for v in entry["grad_norms"].values())
    arrays = load_snapshot(tmp_path, entry)
    assert arrays["fmap/conv1"].dtype == np.float16 and arrays["fmap/conv1"].shape == (8, 6, 8, 8)
    assert arrays["whist/conv1.weight"].sum() == 6 * 9 and arrays["ghist/fc.weight"].sum() == 10 * 96
    assert "ghist/conv1.weight" not in load_snapshot(tmp_path, index[0])  # no gradient before the first step
    # The snapshot equals the model's own activations (up to float16).
    with torch.no_grad():
        trainer.model.eval()
        expected = trainer.model._modules["conv1"](probe_x)
    np.testing.assert_allclose(arrays["fmap/conv1"].astype(np.float32), expected.numpy(), rtol=1e-2, atol=1e-2)
    # Probing never changes training: same losses without the prober.
    plain = Recorder()
    make_trainer(digits, cfg, [plain], graph=CNN).fit()
    assert plain.losses == rec.losses
    assert before.keys() == trainer.model.state_dict().keys()


def test_size_cap_subsamples_and_says_so():
    arrays = {"fmap/a": torch.ones(8, 64, 32, 32), "attn/b": torch.ones(8, 4, 16, 16)}
    kept, cut = fit_to_cap(arrays, 100_000)
    assert sum(a.numel() for a in kept.values()) * 2 <= 100_000
    assert cut["samples"] == 1 and kept["fmap/a"].shape[0] == 1
    assert cut["channels"] == {"fmap/a": 48, "attn/b": 3} and kept["attn/b"].shape == (1, 3, 16, 16)
    assert fit_to_cap(arrays, 10**9)[1] == {"samples": None, "channels": {}}
    counts, edges = histogram(torch.tensor([0.0, 1.0, 1.0, float("nan")]), bins=4)
    assert counts.tolist() == [1, 0, 0, 2] and edges.tolist() == [0.0, 1.0]


def test_probe_cap_in_index(digits, tmp_path):
    prober = Prober(tmp_path, digits.probe_batch(8), cap_bytes=4000)
    make_trainer(digits, TrainConfig(max_steps=1, batch_size=64), [prober], graph=CNN).fit()
    entry = read_index(tmp_path)[-1]
    info = entry["feature_maps"]["conv1"]
    assert info["full_shape"] == [8, 6, 8, 8] and info["shape"][0] < 8
    assert "to stay under 3 KiB" in info["subsampled"]


ATTN = {"format": "studio.graph/1", "name": "attn",
        "nodes": [{"id": "input", "type": "Input", "params": {"shape": [12], "dtype": "int64"}},
                  {"id": "emb", "type": "Embedding", "params": {"num_embeddings": 10, "embedding_dim": 16}},
                  {"id": "pos", "type": "PositionalEncoding", "params": {"kind": "learned", "max_len": 12}},
                  {"id": "attn", "type": "MultiheadAttention", "params": {"num_heads": 2}},
                  {"id": "act", "type": "GELU"},
                  {"id": "head", "type": "Linear", "params": {"out_features": 10}}],
        "edges": [{"source": a, "target": b} for a, b in
                  [("input", "emb"), ("emb", "pos"), ("pos", "attn"), ("attn", "act"), ("act", "head")]]}


def test_sequence_task_metrics_and_attention_probes(tmp_path):
    data = get_dataset("reverse", seed=0, options={"num_samples": 400})
    rec = Recorder()
    prober = Prober(tmp_path, data.probe_batch(4))
    make_trainer(data, TrainConfig(max_steps=6, batch_size=32, eval_every=3), [prober, rec], graph=ATTN).fit()
    step, metrics = rec.evals[-1]
    assert step == 6 and set(metrics) == {"val_loss", "val_token_accuracy", "val_perplexity"}
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    entry = read_index(tmp_path)[-1]
    assert entry["attention"]["attn"]["shape"] == [4, 2, 12, 12] and set(entry["feature_maps"]) == {"act"}
    weights = load_snapshot(tmp_path, entry)["attn/attn"].astype(np.float32)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-2)  # each query's weights sum to one


def test_augmentation_settings_reach_training_batches_only():
    """TrainConfig's augment_* switches become the data layer's Augment, applied to train batches."""
    from studio.data import get_dataset
    from studio.data.augment import Augment
    from studio.errors import DataError
    from studio.training.config import TrainConfig

    cfg = TrainConfig(augment_flip=True, augment_flip_prob=1.0, augment_noise=True, augment_noise_std=0.0)
    assert cfg.augmentation() == Augment(flip=True, flip_prob=1.0, noise=True, noise_std=0.0)
    assert not TrainConfig().augmentation().enabled
    ds = get_dataset("shapes", options={"num_samples": 64, "image_size": 16})
    g = torch.Generator().manual_seed(0)
    plain = next(ds.batches("train", 8, shuffle=False))[0]
    flipped = next(ds.batches("train", 8, shuffle=False, generator=g, augment=cfg.augmentation()))[0]
    assert torch.equal(flipped, plain.flip(-1))  # p=1 flip, zero-strength noise: exactly the mirror
    val = next(ds.batches("val", 8, shuffle=False, augment=cfg.augmentation()))[0]
    assert torch.equal(val, next(ds.batches("val", 8, shuffle=False))[0])
    with pytest.raises(DataError, match=r"image augmentation needs image inputs \(C, H, W\)"):
        cfg.augmentation().check_input((4,), "float32")
    problems = dict(TrainConfig(augment_rotation=400.0).validate(raise_on_error=False))
    assert "augment_rotation" in problems


# ---- no per-step device syncs ------------------------------------------------------------------------

def _logged_rows(digits, tmp_path, *, sync: bool, name: str):
    from studio.runs.store import MetricWriter, Store
    from studio.training.callbacks import MetricLogger
    from studio.training.deferred import DeferredMetricWriter

    store = Store(tmp_path / f"{name}.db")
    store.create_run("r", name=name, graph={}, config={}, dataset_id="digits")
    writer = MetricWriter(store, "r") if sync else DeferredMetricWriter(store, "r")
    cfg = TrainConfig(max_steps=45, batch_size=32, optimizer="sgd", lr=0.05, grad_clip=1.0, eval_every=20, seed=4)
    rec = Recorder()
    trainer = make_trainer(digits, cfg, [DivergenceGuard(), MetricLogger(writer), rec])
    trainer.sync_every_step = sync
    reads = []
    real_item = torch.Tensor.item

    def counting_item(self):
        reads.append(1)
        return real_item(self)

    torch.Tensor.item = counting_item
    try:
        trainer.fit()
    finally:
        torch.Tensor.item = real_item
    rows = [(m.step, m.split, m.key, m.value) for m in store.read_metrics("r") if m.key != "samples_per_sec"]
    return rows, rec.losses, len(reads)


def test_loss_kept_on_the_device_logs_todays_losses_to_the_last_bit_on_cpu(digits, tmp_path):
    today, today_losses, today_reads = _logged_rows(digits, tmp_path, sync=True, name="today")
    kept, kept_losses, kept_reads = _logged_rows(digits, tmp_path, sync=False, name="kept")
    assert all(isinstance(v, torch.Tensor) for v in kept_losses)  # never read per step
    assert [float(v) for v in kept_losses] == today_losses
    assert {k for _, _, k, _ in kept} >= {"train_loss", "grad_norm", "lr", "val_loss", "val_accuracy"}
    assert kept == today  # every logged value, bit for bit (floats compare exactly)
    # .item(): once per step before; now only the evaluations' three sums (3 evaluations)
    assert today_reads >= 45 and kept_reads <= 3 * 3, (today_reads, kept_reads)


def test_divergence_is_caught_when_the_loss_stays_on_the_device(digits):
    cfg = TrainConfig(max_steps=200, batch_size=32, optimizer="sgd", lr=1e12)
    trainer = make_trainer(digits, cfg, [DivergenceGuard()])
    trainer.sync_every_step = False
    state = trainer.fit()
    assert state.stop_reason == "diverged" and state.step < 200
    assert "lower the learning rate" in state.message and "became nan" in state.message
