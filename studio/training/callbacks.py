"""Callbacks: everything the loop does besides training.

Order matters and the worker's `build_trainer` gets it right: DivergenceGuard first (so nothing saves
a NaN model), then StopRequest, EarlyStopping, the MetricLogger (it ends each step, so the rows of a
step are committed before `last.pt` or `best.pt` records it), the Checkpointer, then the Prober.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import random
import time
from pathlib import Path

import numpy as np
import torch

from studio.errors import TrainError
from studio.graph import atomic_write_bytes
from studio.training.loop import Callback, Trainer

CHECKPOINT_FORMAT = "studio.checkpoint/1"
TRAIN_KEYS = ("train_loss", "lr", "samples_per_sec")  # a step's metric row, in this order
TRAIN_KEYS_CLIPPED = (*TRAIN_KEYS, "grad_norm")  # with grad_clip > 0


class MetricLogger(Callback):
    """Per step: train_loss, lr, samples_per_sec (and grad_norm when clipping); per evaluation the
    validation metrics; the confusion matrix of each evaluation goes to `confusion.jsonl`."""

    def __init__(self, writer, *, log=None, run_dir: str | Path | None = None, store=None, run_id: str | None = None):
        self.writer, self.log = writer, log or (lambda msg, level="info": None)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.store, self.run_id = store, run_id
        # A step's row in one append where the writer can (DeferredMetricWriter.log_values)
        self._log_values = getattr(writer, "log_values", None) or self._log_dict

    def on_train_start(self, trainer: Trainer) -> None:
        s = trainer.state
        self.log(f"training from step {s.step} to {s.total_steps} ({s.steps_per_epoch} steps per epoch, "
                 f"batch size {trainer.config.batch_size}, device {trainer.device.type})")

    def on_eval_end(self, trainer: Trainer, metrics: dict) -> None:
        s = trainer.state
        scalars = {k: v for k, v in metrics.items() if not isinstance(v, list)}
        self.writer.log(s.step, s.epoch, "val", scalars)
        confusion = next((v for k, v in metrics.items() if k.endswith("_confusion")), None)
        if confusion is not None and self.run_dir is not None:
            line = json.dumps({"step": s.step, "epoch": s.epoch, "matrix": confusion}) + "\n"
            with open(self.run_dir / "confusion.jsonl", "a") as f:
                f.write(line)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        self.log(f"step {s.step} epoch {s.epoch + 1}: {shown}")

    def on_step_end(self, trainer: Trainer) -> None:
        s = trainer.state
        if s.grad_norm is None:
            self._log_values(s.step, s.epoch, "train", TRAIN_KEYS, (s.loss, s.lr, s.samples_per_sec))
        else:
            self._log_values(s.step, s.epoch, "train", TRAIN_KEYS_CLIPPED,
                             (s.loss, s.lr, s.samples_per_sec, s.grad_norm))
        self.writer.end_step(s.step)
        if s.eval_due:  # evaluations are rare and awaited: committed before training goes on (a sweep's
            self.writer.flush_and_wait()  # pruner reads them while the trial runs; handed to the commit
            # thread only, a short trial often completed before they were visible, and was never pruned)
        if trainer.notes:
            self._drain_notes(trainer)

    def _log_dict(self, step: int, epoch: int, split: str, keys: tuple, values: tuple) -> None:
        """`log_values` for a writer without it (a MetricWriter): the row as a dict."""
        self.writer.log(step, epoch, split, dict(zip(keys, values, strict=True)))

    def on_train_end(self, trainer: Trainer) -> None:
        self.writer.close()
        self._drain_notes(trainer)

    def _drain_notes(self, trainer: Trainer) -> None:
        while trainer.notes:
            level, message = trainer.notes.pop(0)
            self.log(message, level)


class DivergenceGuard(Callback):
    """A NaN or Inf training loss ends the run as `diverged`, naming the step and the last good checkpoint."""

    READ_SECONDS = 0.5  # a loss kept on the device is checked this often (one read), and at evaluations/epoch ends

    def __init__(self, checkpointer: Checkpointer | None = None):
        self.checkpointer = checkpointer
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._last_read = time.monotonic()

    def on_step_end(self, trainer: Trainer) -> None:
        s = trainer.state
        if isinstance(s.loss, torch.Tensor):  # kept on the device (Trainer.sync_every_step False)
            self._check_deferred(trainer)
            return
        if math.isfinite(s.loss):
            return
        self._diverge(trainer, s.loss, s.step)

    def _check_deferred(self, trainer: Trainer) -> None:
        s = trainer.state
        self._pending.append((s.step, s.loss))
        due = (s.eval_due or s.batch_in_epoch >= s.steps_per_epoch or s.step >= s.total_steps
               or s.stop_reason is not None or time.monotonic() - self._last_read >= self.READ_SECONDS)
        if not due:
            return
        from studio.training.deferred import read_scalars

        values = read_scalars([loss for _, loss in self._pending])
        steps = [step for step, _ in self._pending]
        self._pending, self._last_read = [], time.monotonic()
        bad = next(((step, v) for step, v in zip(steps, values, strict=True) if not math.isfinite(v)), None)
        if bad is not None and s.stop_reason != "diverged":
            self._diverge(trainer, bad[1], bad[0])

    def _diverge(self, trainer: Trainer, loss: float, step: int) -> None:
        s = trainer.state
        last = self.checkpointer.last_step if self.checkpointer else None
        where = f"the last good checkpoint is at step {last}" if last is not None else "no checkpoint was saved yet"
        s.stop_reason = "diverged"
        s.message = (f"the training loss became {loss} at step {step} (lr={s.lr:.3g}); lower the learning "
                     f"rate, set grad_clip (e.g. 1.0) or add normalization; {where}")


class StopRequest(Callback):
    """Ends the run as `stopped` when the stop file appears (written by `stop_run`).

    The file is looked at every step with `poll_seconds=0`; otherwise at the first step, then once
    `poll_seconds` have passed since the last look (a stat is microseconds a step, a clock read is
    tens of nanoseconds), at every step that evaluated (a sweep's pruner decides after reading an
    evaluation, and its stop should land at the trial's next one, however fast the steps are), and
    at once at a step where a callback before this one set `trainer.stop_check_due` (the test gate
    does after a hold). A stop then ends the run within one step's time plus `poll_seconds`.
    """

    def __init__(self, path: str | Path, *, poll_seconds: float = 0.0):
        self.path, self.poll_seconds = str(path), poll_seconds
        self._next_look = -math.inf

    def on_step_end(self, trainer: Trainer) -> None:
        if self.poll_seconds > 0:
            now = time.monotonic()
            if now < self._next_look and not trainer.stop_check_due and not trainer.state.eval_due:
                return
            self._next_look = now + self.poll_seconds
            trainer.stop_check_due = False
        if trainer.state.stop_reason is None and os.path.exists(self.path):
            trainer.state.stop_reason = "stopped"
            trainer.state.message = f"stopped on request at step {trainer.state.step}"


class EarlyStopping(Callback):
    """Stops when the monitored validation metric has not improved by `min_delta` for `patience` evaluations."""

    def __init__(self, metric: str, mode: str, patience: int, min_delta: float = 0.0):
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, patience, min_delta
        self.best: float | None = None
        self.bad_evals = 0

    def on_eval_end(self, trainer: Trainer, metrics: dict) -> None:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        if self.best is None or _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.bad_evals = value, 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.patience and trainer.state.stop_reason is None:
            trainer.state.stop_reason = "early_stopped"
            trainer.state.message = (f"early stopping at step {trainer.state.step}: {self.metric} has not improved "
                                     f"on {self.best:.4g} for {self.bad_evals} evaluations")

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.bad_evals = d["best"], d["bad_evals"]


def _improved(value: float, best: float, mode: str, min_delta: float = 0.0) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


class Checkpointer(Callback):
    """Writes `last.pt` (every `every` steps, or each epoch end when 0, and when the run ends) and
    `best.pt` (at the end of a step whose evaluation improved the monitored metric). State dicts and
    plain numbers only, written atomically, loadable with `torch.load(path, weights_only=True)`."""

    def __init__(self, directory: str | Path, *, every: int = 0, extra_state=None, on_best=None, before_last=None,
                 before_best=None):
        self.dir = Path(directory)
        self.every = every
        self.extra_state = extra_state or (lambda: {})  # more state to save (other callbacks')
        self.on_best = on_best or (lambda name, value, step: None)
        # Called before last.pt / best.pt is written: the worker commits buffered metrics there, so a run
        # killed after this checkpoint and resumed from it (best.pt copied over a damaged last.pt, as
        # load_checkpoint's message advises) never skips the rows of the steps up to it.
        self.before_last = before_last or (lambda: None)
        self.before_best = before_best or (lambda: None)
        self.best: float | None = None
        self.new_best: float | None = None  # this step's evaluation improved on `best`: saved at the step's end
        self.last_step: int | None = None

    @property
    def last_path(self) -> Path:
        return self.dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.dir / "best.pt"

    def on_eval_end(self, trainer: Trainer, metrics: dict) -> None:
        value = metrics.get(trainer.monitor)
        if value is None or not math.isfinite(value) or not math.isfinite(trainer.state.loss):
            return
        if self.best is None or _improved(value, self.best, trainer.monitor_mode):
            self.new_best = value

    def on_step_end(self, trainer: Trainer) -> None:
        # best.pt is written here, not at on_eval_end: the step's own train row is logged at on_step_end
        # (by the MetricLogger, before this callback), so before_best commits every row up to the step
        # best.pt records. Nothing between the two events changes the model, optimizer or RNG state.
        if self.new_best is not None:
            value, self.new_best = self.new_best, None
            if trainer.state.stop_reason != "diverged":
                self.best = value
                self.before_best()
                self.save(trainer, self.best_path)
                self.on_best(trainer.monitor, value, trainer.state.step)
        if self.every > 0 and trainer.state.step % self.every == 0:
            self.save_last(trainer)

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.every == 0:
            self.save_last(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if trainer.state.stop_reason != "diverged" and self.last_step != trainer.state.step:
            self.save_last(trainer)

    def save_last(self, trainer: Trainer) -> None:
        if trainer.state.stop_reason == "diverged" or not math.isfinite(trainer.state.loss):
            return  # keep the last good checkpoint
        self.before_last()
        self.save(trainer, self.last_path)
        self.last_step = trainer.state.step

    def save(self, trainer: Trainer, path: Path) -> None:
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "schedule": trainer.schedule.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "position": trainer.state.position(),
            "rng": rng_state(),
            "best": self.best,
            "callbacks": self.extra_state(),
        }
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        atomic_write_bytes(path, buf.getvalue())

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, d: dict) -> None:
        self.best = d["best"]


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint written by Checkpointer; TrainError naming the file when it is damaged or foreign.

    Only `weights_only=True` loading: a file holding arbitrary Python objects is refused, never run.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise TrainError(f"checkpoint {str(path)!r} was refused: it is not made of tensors and plain values only "
                         "(a pickle of other Python objects, which could run code when loaded, or not a checkpoint "
                         "at all); use a best.pt or last.pt saved by a Neural Studio run") from None
    except FileNotFoundError:
        raise TrainError(f"checkpoint {str(path)!r} does not exist; the run has not saved it yet") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:  # torch reports a cut zip as any of these
        reason = str(e).split(". ")[0][:160] or type(e).__name__
        raise TrainError(f"checkpoint {str(path)!r} is damaged (cut short or overwritten: {reason}); delete it, "
                         "or replace it with the run's other checkpoint (best.pt or last.pt), and resume "
                         "again") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise TrainError(f"checkpoint {str(path)!r} is not a {CHECKPOINT_FORMAT} checkpoint (found {found!r}); "
                         "use a best.pt or last.pt saved by a Neural Studio run")
    weights = ckpt.get("model")
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in weights.items()):
        found = "missing" if weights is None else type(weights).__name__
        raise TrainError(f"checkpoint {str(path)!r} is damaged: its 'model' entry (the weights) is {found}, not a "
                         "dict of named tensors; replace it with the run's other checkpoint (best.pt or last.pt)")
    return ckpt


def load_trained_model(graph, path: str | Path, *, run_id: str, device="cpu"):
    """`graph` compiled with the weights of checkpoint `path` (a run's best.pt or last.pt), in eval mode."""
    from studio.compile import compile_graph

    ckpt = load_checkpoint(path, map_location=device)  # weights_only=True; TrainError when damaged
    model = compile_graph(graph, device=device)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise TrainError(f"checkpoint {path} does not fit run {run_id!r}'s graph ({str(e).splitlines()[0]}); "
                         "was graph.json edited after training?") from None
    return model.eval()


def restore_checkpoint(trainer: Trainer, ckpt: dict, callbacks: dict | None = None) -> None:
    """Put model, optimizer, schedule, scaler, RNG, position and callback state back as saved."""
    trainer.model.load_state_dict(ckpt["model"])
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    trainer.schedule.load_state_dict(ckpt["schedule"])
    trainer.scaler.load_state_dict(ckpt["scaler"])
    pos = ckpt["position"]
    s = trainer.state
    s.step, s.epoch, s.batch_in_epoch = pos["step"], pos["epoch"], pos["batch_in_epoch"]
    set_rng_state(ckpt["rng"])
    for name, cb in (callbacks or {}).items():
        if name in ckpt["callbacks"]:
            cb.load_state_dict(ckpt["callbacks"][name])


def rng_state() -> dict:
    """Every RNG the training touches, as tensors and plain lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(d: dict) -> None:
    torch.set_rng_state(d["torch"])
    if d["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(d["cuda"])
    name, keys, *rest = d["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = d["python"]
    random.setstate((version, tuple(internal), gauss))
