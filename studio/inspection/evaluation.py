"""A model's predictions on one split (`evaluate`), the per-class precision and recall of a confusion
matrix, and the confusion matrices a run's worker logged at each evaluation.

    >>> ev = evaluate(model, load_run_dataset(run))               # doctest: +SKIP
    >>> int(ev.confusion.sum()) == len(ev.targets)                # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from studio.errors import TrainError
from studio.inspection.runfiles import RunFiles

EVAL_BATCH = 256
MISCLASSIFIED_LIMIT = 64


@dataclass
class Evaluation:
    """A model's predictions on one split. Arrays are numpy; fields not used by a task are None.

    classification: predictions (N,), probabilities (N, C), confusion (C, C) rows = true class.
    regression: predictions (N, *out) against targets (N, *out).
    sequence / language_model: predictions (N, T) token ids against targets (N, T).
    """

    task: str
    split: str
    targets: np.ndarray
    predictions: np.ndarray
    loss: float
    probabilities: np.ndarray | None = None
    confusion: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.targets)

    @property
    def accuracy(self) -> float | None:
        """Accuracy per sample (classification) or per token (sequence tasks)."""
        if self.task == "regression":
            return None
        return float((self.predictions == self.targets).mean())

    @property
    def mae(self) -> float | None:
        if self.task != "regression":
            return None
        return float(np.abs(self.predictions - self.targets.reshape(self.predictions.shape)).mean())

    def misclassified(self, limit: int = MISCLASSIFIED_LIMIT) -> np.ndarray:
        """Indices of the wrong samples (a sample with any wrong token, for sequences), most confident first."""
        if self.task == "regression":
            return np.zeros(0, np.int64)
        wrong = self.predictions != self.targets
        if wrong.ndim > 1:
            wrong = wrong.any(axis=tuple(range(1, wrong.ndim)))
        idx = np.flatnonzero(wrong)
        if self.probabilities is not None and len(idx):
            idx = idx[np.argsort(-self.probabilities[idx].max(axis=1), kind="stable")]
        return idx[:limit]


def precision_recall(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, support) per class of a confusion matrix whose rows are the true classes.
    A class never predicted has precision NaN; a class absent from the split has recall NaN."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    predicted, support = c.sum(axis=0), c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
    return precision, recall, support.astype(np.int64)


def evaluate(model, dataset, split: str = "val", *, batch_size: int = EVAL_BATCH) -> Evaluation:
    """Run `model` over a split of `dataset` and collect predictions, the loss and the confusion matrix."""
    info = dataset.info
    data = dataset.split(split)
    if len(data) == 0:
        raise TrainError(f"the {split} split of {info.id!r} is empty; evaluate another split")
    preds, probs, targets, loss_sum = [], [], [], 0.0
    model.eval()
    with torch.no_grad():
        for x, y in dataset.batches(split, batch_size, shuffle=False):
            out = model(x).float()
            if info.task == "classification":
                loss_sum += F.cross_entropy(out, y, reduction="sum").item()
                p = out.softmax(dim=-1)
                probs.append(p.numpy())
                preds.append(p.argmax(dim=-1).numpy())
            elif info.task == "regression":
                yy = y.reshape(out.shape).to(out.dtype)
                loss_sum += F.mse_loss(out, yy, reduction="sum").item() / max(1, out[0].numel())
                preds.append(out.numpy())
            else:
                loss_sum += F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum").item() \
                    / y.shape[1]
                preds.append(out.argmax(dim=-1).numpy())
            targets.append(y.numpy())
    n = len(data)
    ev = Evaluation(info.task, split, np.concatenate(targets), np.concatenate(preds), loss_sum / n)
    if info.task == "classification":
        ev.probabilities = np.concatenate(probs)
        k = info.num_classes or ev.probabilities.shape[1]
        ev.confusion = np.bincount(ev.targets * k + ev.predictions, minlength=k * k).reshape(k, k)
    return ev


def read_confusions(run: RunFiles) -> list[dict]:
    """Every evaluation's confusion matrix the worker logged: [{"step", "epoch", "matrix"}], oldest first."""
    path = run.rundir.confusion_file
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return out
