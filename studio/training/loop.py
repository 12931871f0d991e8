"""The training loop: generic over tasks, silent on its own, and firing events for everything else.

Logging, checkpoints, probes, early stopping, stop requests and divergence handling are callbacks
(see callbacks.py). The loop only trains, evaluates when due, and keeps `TrainState` honest, so a
checkpoint taken at any event is enough to resume bit-for-bit on the CPU.

Order of events for one step:  train step -> [evaluate -> on_eval_end] -> on_step_end
                               -> at an epoch's last batch: on_epoch_end.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from studio.errors import TrainError
from studio.training.config import TrainConfig
from studio.training.optim import LRSchedule, autocast_dtype, build_optimizer

TASKS = ("classification", "regression", "sequence", "language_model")


class Task:
    """Loss and metrics of one task kind.

    classification: output (B, C), y (B,) int64 -> cross-entropy (+ label smoothing when training),
        accuracy, confusion matrix.
    regression: output (B, *out), y (B, *out) float -> MSE loss, MAE.
    sequence / language_model: output (B, T, V), y (B, T) int64 -> per-token cross-entropy,
        token_accuracy, perplexity.
    """

    def __init__(self, kind: str, *, num_classes: int | None = None, label_smoothing: float = 0.0):
        if kind not in TASKS:
            raise TrainError(f"unknown task {kind!r}; expected one of {', '.join(TASKS)}")
        self.kind, self.num_classes, self.label_smoothing = kind, num_classes, label_smoothing

    def loss(self, out: torch.Tensor, y: torch.Tensor, *, train: bool) -> torch.Tensor:
        smoothing = self.label_smoothing if train else 0.0
        if self.kind == "classification":
            return F.cross_entropy(out, y, label_smoothing=smoothing)
        if self.kind == "regression":
            return F.mse_loss(out, _match(out, y))
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), label_smoothing=smoothing)

    def evaluate(self, model: nn.Module, batches, device: torch.device, autocast) -> dict:
        """Mean loss and task metrics over `batches`; classification adds "confusion" (C, C) as a list."""
        # The sums stay on the device (float64 where it has it: the same bits as summing Python floats)
        # and are read once at the end, not once per batch.
        acc = torch.float32 if device.type == "mps" else torch.float64
        total_loss, count, tokens = torch.zeros((), dtype=acc, device=device), 0, 0
        correct = torch.zeros((), dtype=torch.int64, device=device)
        abs_err = torch.zeros((), dtype=acc, device=device)
        confusion = None
        if self.kind == "classification" and self.num_classes:
            confusion = torch.zeros(self.num_classes * self.num_classes, dtype=torch.int64, device=device)
        with torch.no_grad():
            for x, y in batches:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast():
                    out = model(x)
                out = out.float()
                n = y.shape[0]
                weight = n if self.kind in ("classification", "regression") else y.numel()  # mean per sample/token
                total_loss += self.loss(out, y, train=False).to(acc) * weight
                if self.kind == "classification":
                    pred = out.argmax(dim=-1)
                    correct += (pred == y).sum()
                    count += n
                    if confusion is not None:
                        confusion += torch.bincount(y * self.num_classes + pred, minlength=self.num_classes ** 2)
                elif self.kind == "regression":
                    abs_err += (out - _match(out, y)).abs().sum().to(acc)
                    count += n
                    tokens += y.numel()
                else:
                    correct += (out.argmax(dim=-1) == y).sum()
                    count += y.numel()
        if count == 0:
            return {}
        total_loss, correct, abs_err = total_loss.item(), correct.item(), abs_err.item()  # the one read
        loss = total_loss / count
        if self.kind == "classification":
            metrics = {"loss": loss, "accuracy": correct / count}
            if confusion is not None:
                metrics["confusion"] = confusion.view(self.num_classes, self.num_classes).tolist()
            return metrics
        if self.kind == "regression":
            return {"loss": loss, "mae": abs_err / tokens}
        return {"loss": loss, "token_accuracy": correct / count, "perplexity": math.exp(min(loss, 50.0))}


def _match(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if out.shape == y.shape:
        return y.to(out.dtype)
    if out.numel() == y.numel():
        return y.reshape(out.shape).to(out.dtype)
    raise TrainError(f"the model's output {tuple(out.shape[1:])} does not match the regression target "
                     f"{tuple(y.shape[1:])} (per sample); make the last layer output {tuple(y.shape[1:])}")


@dataclass
class TrainState:
    """Where the run is. Checkpoints save it; callbacks read it and may set `stop_reason`."""

    total_steps: int
    steps_per_epoch: int
    step: int = 0                  # optimizer steps done (global, survives resume)
    epoch: int = 0                 # current epoch index = epochs completed
    batch_in_epoch: int = 0        # batches of the current epoch already trained on
    loss: float = float("nan")     # training loss of the last step
    lr: float = 0.0                # learning rate used by the last step
    samples_per_sec: float = 0.0
    grad_norm: float | None = None  # global gradient norm before clipping (only when grad_clip > 0)
    eval_due: bool = False         # this step ends with an evaluation
    last_eval: dict = field(default_factory=dict)  # "val_loss", "val_accuracy", ... of the last evaluation
    stop_reason: str | None = None  # completed | stopped | early_stopped | diverged
    message: str = ""              # one line explaining stop_reason

    def position(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}


class Callback:
    """Base class: override the events you need. Each receives the Trainer."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer) -> None: ...
    def on_eval_end(self, trainer: Trainer, metrics: dict) -> None: ...
    def on_epoch_end(self, trainer: Trainer) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


def _handles(cb, event: str) -> bool:
    """Whether `cb` does something on `event`: its class overrides Callback's no-op, or the instance sets it."""
    return getattr(type(cb), event, None) is not getattr(Callback, event) or event in getattr(cb, "__dict__", ())


class Trainer:
    """Trains `model` on `data` (anything with `.batches(split, batch_size, shuffle=, generator=)`,
    `.train` and `.val` splits) as `config` says, firing events to `callbacks` in order."""

    def __init__(self, model: nn.Module, data, config: TrainConfig, *, task: Task,
                 callbacks: list[Callback] = (), device: torch.device | str = "cpu", distill=None):
        self.model, self.data, self.config, self.task = model, data, config, task
        # distill(out, x, task_loss) -> loss: a teacher's soft targets blended in (studio.training.transfer)
        self.distill = distill
        # Frozen nodes (studio.training.transfer.freeze_nodes) run in eval mode while the rest trains.
        self.frozen_modules = [m for m in model.modules() if getattr(m, "studio_frozen", False)]
        self.device = torch.device(device)
        # True: state.loss / grad_norm are read as floats every step (free on the CPU). False (accelerators):
        # they stay device tensors, read once per metric flush (training/deferred.py), so no step waits.
        self.sync_every_step = self.device.type == "cpu"
        self.callbacks = list(callbacks)
        self._handlers_of: list[Callback] = []
        self._handlers: dict[str, list] = {}
        augment = config.augmentation()
        if augment.enabled and getattr(data, "info", None) is not None:
            augment.check_input(data.info.input_shape, data.info.input_dtype)  # a clear DataError otherwise
        self.augment = augment if augment.enabled else None
        n_train = len(data.train)
        if n_train == 0:
            raise TrainError("the training split is empty; choose a dataset with training samples")
        steps_per_epoch = math.ceil(n_train / config.batch_size)
        total = config.max_steps if config.max_steps > 0 else config.epochs * steps_per_epoch
        self.state = TrainState(total_steps=total, steps_per_epoch=steps_per_epoch)
        self.model.to(self.device)
        self.optimizer = build_optimizer(model, config)
        self.schedule = LRSchedule(config, total)
        self._amp_dtype = autocast_dtype(config.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self._amp_dtype == torch.float16)
        self.monitor, self.monitor_mode = config.resolved_monitor(task.kind)
        self.has_val = len(data.val) > 0
        self.notes: list[tuple[str, str]] = []  # (level, message) for the run's event log; MetricLogger drains it
        # Set by a callback that knows a stop may just have been asked (the test gate after a hold): the
        # StopRequest callback then looks for the stop file at this step instead of at its next poll.
        self.stop_check_due = False
        # What the training forward goes through: the model itself, torch.compile of it when
        # config.compile_model (torch.compile imported only then), or a rank's DistributedDataParallel
        # wrapper (studio.training.shard: a rank trains on its rows of each global batch). self.model
        # stays the plain module, so checkpoints, evaluation and probes see the same names.
        self.shard = None
        self.step_model: nn.Module = torch.compile(model) if config.compile_model else model

    def note(self, message: str, level: str = "info") -> None:
        self.notes.append((level, message))

    # ---- events -------------------------------------------------------------------------------
    def fire(self, event: str, *args) -> None:
        if self.callbacks != self._handlers_of:  # callbacks added or removed since the last event
            self._handlers_of, self._handlers = list(self.callbacks), {}
        handlers = self._handlers.get(event)
        if handlers is None:  # the callbacks that override the event, bound once (not a no-op call each step)
            handlers = self._handlers[event] = [getattr(cb, event) for cb in self.callbacks
                                                if _handles(cb, event)]
        for handler in handlers:
            handler(self, *args)

    def autocast(self):
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._amp_dtype)

    def epoch_generator(self, epoch: int) -> torch.Generator:
        """Data order and augmentation of `epoch`: a function of (seed, epoch) only, so resume mid-epoch
        replays the same order."""
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self) -> TrainState:
        s, cfg = self.state, self.config
        self.fire("on_train_start")
        while s.stop_reason is None and s.step < s.total_steps:
            batches = self.data.batches("train", cfg.batch_size, shuffle=True,
                                        generator=self.epoch_generator(s.epoch), augment=self.augment)
            for _ in range(s.batch_in_epoch):  # resuming mid-epoch: replay the consumed batches' RNG
                next(batches)
            t0 = time.perf_counter()
            for x, y in batches:
                s.loss = self.train_step(x, y)
                s.step += 1
                s.batch_in_epoch += 1
                now = time.perf_counter()
                s.samples_per_sec, t0 = x.shape[0] / max(now - t0, 1e-9), now
                epoch_done = s.batch_in_epoch >= s.steps_per_epoch
                s.eval_due = self.has_val and (
                    (cfg.eval_every > 0 and s.step % cfg.eval_every == 0)
                    or (cfg.eval_every == 0 and epoch_done) or s.step == s.total_steps) and math.isfinite(s.loss)
                if s.eval_due:
                    metrics = self.evaluate()
                    self.fire("on_eval_end", metrics)
                self.fire("on_step_end")
                if epoch_done:
                    s.epoch, s.batch_in_epoch = s.epoch + 1, 0
                    self.fire("on_epoch_end")
                if s.stop_reason is not None or s.step >= s.total_steps:
                    break
                t0 = time.perf_counter()
            else:
                if s.batch_in_epoch:  # the split yielded fewer batches than expected
                    s.epoch, s.batch_in_epoch = s.epoch + 1, 0
                    self.fire("on_epoch_end")
        if s.stop_reason is None:
            s.stop_reason, s.message = "completed", f"completed {s.step} steps"
        self.fire("on_train_end")
        return s

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float | torch.Tensor:
        """One optimizer step; the loss as a float, or as a device tensor when not sync_every_step."""
        s, cfg = self.state, self.config
        if self.device.type != "cpu":  # the batches are made on the CPU
            if self.device.type == "cuda":  # from pinned memory the copies below run asynchronously
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.shard is not None:  # this rank's rows of the global batch
            x, y = self.shard.take(x, y)
        s.lr = self.schedule.lr_at(s.step)
        groups = self.optimizer.param_groups
        if groups[0]["lr"] != s.lr * groups[0].get("lr_scale", 1.0):  # a constant rate is set once, not every step
            for group in groups:
                group["lr"] = s.lr * group.get("lr_scale", 1.0)  # per-group LR (optim.param_groups)
        if not self.model.training or (self.frozen_modules and any(m.training for m in self.frozen_modules)):
            # Module.train() walks every submodule (microseconds a step): only after an evaluation or a
            # probe changed the mode (both go through the root module).
            self.model.train()
            for m in self.frozen_modules:
                m.eval()
        self.optimizer.zero_grad(set_to_none=True)
        if self._amp_dtype is None:
            out = self.step_model(x)
        else:
            with self.autocast():
                out = self.step_model(x)
        if out.dtype != torch.float32:
            out = out.float()
        loss = self.task.loss(out, y, train=True)
        if self.distill is not None:
            loss = self.distill(out, x, loss)
        if self.shard is not None:  # weighted by its share: the averaged gradient is the full batch's
            loss = self.shard.weigh(loss)
        scaled = self.scaler.is_enabled()  # fp16 only; a disabled GradScaler's calls are skipped, not made
        if scaled:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # clipping and probes read true gradients
        else:
            loss.backward()
        if cfg.grad_clip > 0:
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            s.grad_norm = float(norm) if self.sync_every_step else norm.detach()
        if scaled:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.shard is not None:  # the full batch's loss, all-reduced over the ranks
            return self.shard.logged_loss(loss)
        return loss.item() if self.sync_every_step else loss.detach()

    def evaluate(self, split: str = "val") -> dict:
        """Task metrics on `split`, named "val_loss", "val_accuracy", ...; also stored in state.last_eval."""
        self.model.eval()
        batches = self.data.batches(split, self.config.batch_size, shuffle=False, generator=None)
        raw = self.task.evaluate(self.model, batches, self.device, self.autocast)
        metrics = {f"{split}_{k}": v for k, v in raw.items()}
        self.state.last_eval = metrics
        if self.monitor in metrics:
            if self.schedule.on_eval(metrics[self.monitor], self.monitor_mode):
                self.note(f"{self.monitor} stopped improving at step {self.state.step}; learning rate scaled by "
                          f"{self.config.plateau_factor} (now {self.schedule.lr_at(self.state.step):.3g})")
        return metrics
