"""Diagnostics: plain-language hints from what a run recorded, each with the evidence behind it.

Every rule is a pure function of numbers a run already logs (loss series, the run's status, the
probes' dead-ReLU fractions and per-layer gradient norms) returning `Hint`s or nothing. The rules
are deliberately conservative: a hint names the numbers it saw, so a user can judge it.

    >>> hints = overfitting([0, 1, 2, 3, 4], [1.0, .8, .6, .4, .2], [0, 1, 2, 3, 4], [1.0, .9, 1.0, 1.1, 1.2])
    >>> hints[0].kind
    'overfitting'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEAD_WARN = 0.5        # fraction of dead ReLU units that earns a warning
VANISHING_NORM = 1e-6  # a layer gradient norm below this is vanishing
VANISHING_RATIO = 1e-3  # first-layer / last-layer gradient norm below this is vanishing
EXPLODING_NORM = 1e3   # a layer gradient norm above this is exploding
PLATEAU_REL = 0.01     # the smoothed loss moved less than 1% over the last third of training


@dataclass(frozen=True)
class Hint:
    kind: str       # overfitting | lr_too_high | dead_relu | vanishing_gradients | exploding_gradients | plateau
    severity: str   # "warning" or "info"
    title: str      # a short headline
    message: str    # what it likely means and what to try
    evidence: str   # the numbers the rule saw


def _finite(steps, values) -> tuple[np.ndarray, np.ndarray]:
    s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v)
    return s[keep], v[keep]


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred-free trailing mean over `window` points (the first points average what exists)."""
    if window <= 1 or len(values) < 2:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def overfitting(train_steps, train_loss, val_steps, val_loss, *, min_evals: int = 3, rise: float = 0.05) -> list[Hint]:
    """Validation loss rising (at least `rise` relative above its best, over the last evaluations)
    while the training loss keeps falling over the same steps."""
    vs, vl = _finite(val_steps, val_loss)
    ts, tl = _finite(train_steps, train_loss)
    if len(vl) < min_evals or len(tl) < 4:
        return []
    best_i = int(np.argmin(vl))
    if best_i >= len(vl) - 1 or vl[-1] < vl[best_i] * (1 + rise):
        return []
    after = vl[best_i:]
    if not np.all(np.diff(after[-min(3, len(after)):]) >= -1e-12 * abs(after[-1])) and len(after) > 2:
        return []  # not rising at the end: noise, not a trend
    t_best = tl[ts <= vs[best_i]]
    t_end = tl[ts > vs[best_i]]
    if len(t_best) == 0 or len(t_end) == 0:
        return []
    train_then = float(np.mean(t_best[-max(1, len(t_best) // 5):]))
    train_now = float(np.mean(t_end[-max(1, len(t_end) // 5):]))
    if train_now >= train_then:
        return []
    return [Hint("overfitting", "warning", "Overfitting",
                 "The model keeps fitting the training data while getting worse on the validation data. Use the "
                 "best checkpoint, stop earlier (patience), add regularisation (weight decay, dropout, "
                 "augmentation) or get more data.",
                 f"val_loss was lowest at step {int(vs[best_i])} ({vl[best_i]:.4g}) and is {vl[-1]:.4g} at step "
                 f"{int(vs[-1])} (+{(vl[-1] / vl[best_i] - 1) * 100:.0f}%), while train_loss fell from "
                 f"{train_then:.4g} to {train_now:.4g}.")]


def learning_rate(steps, train_loss, *, status: str | None = None, error: str | None = None,
                  lr: float | None = None) -> list[Hint]:
    """A learning rate too high: the run diverged (NaN/Inf loss), the loss ended far above where it
    started, or it oscillates without going down (large step-to-step swings, no downward trend)."""
    s_all = np.asarray(steps, dtype=np.float64)
    v_all = np.asarray(train_loss, dtype=np.float64)
    lr_text = f" (lr={lr:.3g})" if lr else ""
    bad = np.flatnonzero(~np.isfinite(v_all))
    if status == "diverged" or len(bad):
        where = f"the training loss became {v_all[bad[0]]} at step {int(s_all[bad[0]])}" if len(bad) else \
            (error or "the run ended as diverged")
        return [Hint("lr_too_high", "warning", "Training diverged",
                     f"The loss blew up{lr_text}. Lower the learning rate (try 3-10x lower), set grad_clip "
                     "(e.g. 1.0), add normalisation layers, or warm the learning rate up.", where + ".")]
    s, v = _finite(s_all, v_all)
    if len(v) < 20:
        return []
    k = max(1, len(v) // 10)
    start, end = float(np.mean(v[:k])), float(np.mean(v[-k:]))
    if end > 1.5 * start and end > start + 1e-3:
        return [Hint("lr_too_high", "warning", "Loss went up",
                     f"The training loss ended well above where it started{lr_text}: the steps are too large. "
                     "Lower the learning rate or add a warmup.",
                     f"mean train_loss of the first {k} steps {start:.4g}, of the last {k} steps {end:.4g}.")]
    tail = v[len(v) // 2:]
    swings = float(np.median(np.abs(np.diff(tail))))
    level = float(np.median(np.abs(tail)))
    trend = float(np.mean(tail[: len(tail) // 2]) - np.mean(tail[len(tail) // 2:]))
    if level > 0 and swings > 0.5 * level and trend < 0.05 * level:
        return [Hint("lr_too_high", "warning", "Loss oscillates",
                     f"The training loss jumps around without going down{lr_text}. A lower learning rate or a "
                     "larger batch usually calms it; a decaying schedule (cosine) helps late in training.",
                     f"over the second half, the median step-to-step change {swings:.3g} is "
                     f"{swings / level * 100:.0f}% of the median loss {level:.3g}.")]
    return []


def plateau(steps, train_loss, *, rel: float = PLATEAU_REL, min_points: int = 30) -> list[Hint]:
    """The smoothed training loss has stopped moving over the last third of training."""
    s, v = _finite(steps, train_loss)
    if len(v) < min_points:
        return []
    sm = _smooth(v, max(2, len(v) // 20))
    third = len(sm) // 3
    a, b = float(sm[-third]), float(sm[-1])
    first = float(sm[0])
    if abs(a) < 1e-12 or abs(a - b) / abs(a) >= rel:
        return []
    if first > 0 and b < 0.05 * first:
        return []  # converged to a small loss: that is the goal, not a plateau
    return [Hint("plateau", "info", "Loss plateau",
                 "The training loss has stopped improving. If the metrics are not good enough yet, try a larger "
                 "learning rate or a schedule with warm restarts, a bigger model, or check that the inputs are "
                 "normalised; if they are good, training longer will not help.",
                 f"the smoothed train_loss went from {a:.4g} at step {int(s[-third])} to {b:.4g} at step "
                 f"{int(s[-1])} ({(b - a) / abs(a) * 100:+.2f}%), from {first:.4g} at the start.")]


def dead_relus(dead_fraction: dict[str, float], *, threshold: float = DEAD_WARN, step: int | None = None) -> list[Hint]:
    """ReLU layers where more than `threshold` of the units never fire on the probe batch."""
    bad = {k: v for k, v in dead_fraction.items() if v is not None and math.isfinite(v) and v > threshold}
    if not bad:
        return []
    shown = ", ".join(f"{k} {v * 100:.0f}%" for k, v in sorted(bad.items(), key=lambda kv: -kv[1]))
    at = f" at step {step}" if step is not None else ""
    return [Hint("dead_relu", "warning", "Dead ReLUs",
                 "Many ReLU units output zero for every probe sample, so they pass no gradient and stop learning. "
                 "Lower the learning rate, use LeakyReLU/GELU, add BatchNorm before the ReLU, or use Kaiming "
                 "initialisation.",
                 f"dead units{at}: {shown} (threshold {threshold * 100:.0f}%).")]


def gradients(grad_norms: dict[str, float], layer_order: list[str] | None = None, *, step: int | None = None,
              vanishing: float = VANISHING_NORM, ratio: float = VANISHING_RATIO,
              exploding: float = EXPLODING_NORM) -> list[Hint]:
    """Vanishing gradients (a layer's norm near zero, or the first layer's far below the last's) and
    exploding ones (a layer's norm above `exploding`), from one snapshot's per-layer gradient norms."""
    norms = {k: v for k, v in grad_norms.items() if v is not None and math.isfinite(v)}
    if not norms:
        bad = [k for k, v in grad_norms.items() if v is not None and not math.isfinite(v)]
        if bad:
            return [Hint("exploding_gradients", "warning", "Exploding gradients",
                         "Gradients overflowed. Lower the learning rate and set grad_clip (e.g. 1.0).",
                         f"non-finite gradient norms in {', '.join(bad)}.")]
        return []
    at = f" at step {step}" if step is not None else ""
    order = [k for k in (layer_order or []) if k in norms] or list(norms)
    hints = []
    big = {k: v for k, v in norms.items() if v > exploding}
    if big:
        hints.append(Hint("exploding_gradients", "warning", "Exploding gradients",
                          "Some layers get very large gradients, which makes training unstable. Set grad_clip "
                          "(e.g. 1.0), lower the learning rate, or add normalisation.",
                          f"gradient norms{at}: " + ", ".join(f"{k} {v:.3g}" for k, v in big.items())
                          + f" (above {exploding:g})."))
    tiny = {k: v for k, v in norms.items() if v < vanishing}
    first, last = norms[order[0]], norms[order[-1]]
    if tiny or (len(order) > 1 and last > 0 and first / last < ratio):
        detail = ", ".join(f"{k} {v:.3g}" for k, v in tiny.items()) if tiny else \
            f"{order[0]} {first:.3g} vs {order[-1]} {last:.3g} (ratio {first / last:.2g})"
        hints.append(Hint("vanishing_gradients", "warning", "Vanishing gradients",
                          "The early layers get almost no gradient, so they barely learn. Add residual (Add) "
                          "connections or normalisation, use ReLU/GELU instead of Sigmoid/Tanh, or Kaiming "
                          "initialisation.",
                          f"gradient norms{at}: {detail}."))
    return hints


def diagnose(*, train_steps=(), train_loss=(), val_steps=(), val_loss=(), status: str | None = None,
             error: str | None = None, lr: float | None = None, dead_fraction: dict | None = None,
             grad_norms: dict | None = None, layer_order: list[str] | None = None,
             probe_step: int | None = None) -> list[Hint]:
    """Every rule over what a run recorded; warnings first."""
    hints = learning_rate(train_steps, train_loss, status=status, error=error, lr=lr)
    hints += overfitting(train_steps, train_loss, val_steps, val_loss)
    hints += dead_relus(dead_fraction or {}, step=probe_step)
    hints += gradients(grad_norms or {}, layer_order, step=probe_step)
    if not any(h.kind == "lr_too_high" for h in hints):
        hints += plateau(train_steps, train_loss)
    return sorted(hints, key=lambda h: h.severity != "warning")


CHECKS = ("overfitting", "a learning rate too high (divergence, rising or oscillating loss)", "dead ReLUs",
          "vanishing or exploding gradients", "a loss plateau")
