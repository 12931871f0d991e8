"""`explain(model, x, ...)`: one sample's attributions by any registered method, with the method's own
check. What it is not: a run's files, datasets or caches (studio.explain.runs does those).

    >>> result = explain(model, x, method="integrated-gradients", task="classification")  # doctest: +SKIP
    >>> result.attributions.shape == tuple(x.shape), result.check.relative_error          # doctest: +SKIP

The model's output is read as scores: class logits (B, K) as they are; per-position outputs (B, T, V)
of sequence and language models at one `position` (default the last); anything else flattened. Every
forward the method runs goes through one wrapper that counts rows, reports progress and stops the
computation when `cancel()` turns true. The model's parameters, their gradients and its train/eval
mode are left as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from studio.errors import StudioError
from studio.explain import baselines as bl
from studio.explain.methods import METHODS, Problem, get_method

MAX_ROWS = 20_000          # forward rows one explanation may cost (the page's bound; the CLI's too)
MAX_STEPS = 1024


class ExplainError(StudioError):
    """An explanation that cannot be computed for this model, sample, target or setting."""


class Cancelled(ExplainError):
    """The user cancelled a running explanation (raised from inside the model's forward)."""


@dataclass(frozen=True)
class Settings:
    """How to explain; every field has a default that fits the input (None: chosen from its shape)."""

    baseline: str | None = None       # zeros | blurred | mean | pad; None: zeros, or pad for token ids
    n_steps: int = 64                 # integrated gradients: points on the path (Gauss-Legendre)
    n_samples: int = 64               # GradientSHAP points; LIME / KernelSHAP perturbed samples
    window: tuple[int, ...] | None = None  # occlusion window over the sample's dims; None: from the shape
    stride: tuple[int, ...] | None = None
    internal_batch_size: int = 32     # rows per forward: bounds memory (IG, GradientSHAP, occlusion, LIME)
    layer: str | None = None          # attribute to this layer's output, by path (`layer3.1`): Grad-CAM's
    # layer, the token models' embedding, or any layer for the gradient methods (attributions then have
    # the layer's output shape)
    position: int | None = None       # sequence and language models: the output position explained
    pad_token: int | None = None      # the 'pad' baseline's token id; None: <pad>, else the commonest token
    seed: int = 0                     # GradientSHAP, LIME and KernelSHAP draw random samples

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class Check:
    """A method's own check. Completeness: the attributions' sum against f(x) - f(baseline)."""

    name: str
    attribution_sum: float
    output: float                  # f(x), the target's score
    baseline_output: float         # f(baseline)
    delta: float | None = None     # Captum's convergence delta (IG, GradientSHAP), when the method gives one

    @property
    def difference(self) -> float:
        return self.output - self.baseline_output

    @property
    def relative_error(self) -> float:
        """|sum - (f(x) - f(baseline))| / |f(x) - f(baseline)| (0 when both are 0)."""
        gap = abs(self.attribution_sum - self.difference)
        return gap / abs(self.difference) if abs(self.difference) > 1e-12 else (0.0 if gap < 1e-9 else float("inf"))

    def to_dict(self) -> dict:
        return {**asdict(self), "difference": self.difference, "relative_error": self.relative_error}

    def sentence(self) -> str:
        text = (f"sum of attributions {self.attribution_sum:.4g} vs f(x) - f(baseline) = {self.output:.4g} - "
                f"{self.baseline_output:.4g} = {self.difference:.4g} (off by {self.relative_error:.2%})")
        return text + (f"; convergence delta {self.delta:.3g}" if self.delta is not None else "")


@dataclass
class Explanation:
    """One sample's attributions for one target by one method. `input` and `baseline` are shaped like the
    sample; `attributions` too, except for token models (one value per token) and for an attribution to
    a layer (`notes["layer"]` with float inputs: the layer's output shape)."""

    method: str
    target: int
    input: np.ndarray
    baseline: np.ndarray | None
    attributions: np.ndarray
    scores: np.ndarray                 # the model's scores on the input (K,)
    check: Check | None
    settings: Settings
    position: int | None = None
    notes: dict = field(default_factory=dict)

    @property
    def predicted(self) -> int:
        return int(self.scores.argmax())

    def to_dict(self) -> dict:
        """The CLI's --json document (DESIGN.md): method, target, input, baseline, attributions, plus the
        check and the settings used."""
        return {"method": self.method, "target": self.target, "input": self.input.tolist(),
                "baseline": None if self.baseline is None else self.baseline.tolist(),
                "attributions": self.attributions.tolist(), "predicted": self.predicted,
                "position": self.position, "check": None if self.check is None else self.check.to_dict(),
                "settings": self.settings.to_dict(), **({"notes": self.notes} if self.notes else {})}


class _Rows:
    """Counts the rows every forward evaluates: progress, cancellation, and the cost bound."""

    def __init__(self, total: int, progress: Callable[[float], None] | None, cancel: Callable[[], bool] | None):
        self.total, self.done, self.progress, self.cancel = max(1, total), 0, progress, cancel

    def __call__(self, rows: int) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("the explanation was cancelled; nothing was cached")
        self.done += rows
        if self.progress is not None:
            self.progress(min(1.0, self.done / self.total))


def is_token_model(model) -> bool:
    return getattr(model, "input_dtype", torch.float32) == torch.int64


def _layers_with(model, fact: str) -> list[str]:
    """Paths of the model's layers whose LayerSpec has `fact` set, in registration order: top-level
    nodes, layers inside block instances (`layer3.1.conv2`) and imported runs alike."""
    from studio.layers.base import spec_for_module

    found = []
    for path, module in model.named_modules():
        spec = spec_for_module(type(module)) if path else None
        if spec is not None and getattr(spec, fact):
            found.append(path)
    return found


def token_layer(model, path: str | None = None) -> tuple[str, torch.nn.Module]:
    """(path, module) where token models are attributed: `path`, or the first layer whose spec has a
    vocabulary (the Embedding)."""
    if path is None:
        found = _layers_with(model, "vocab_param")
        if not found:
            raise ExplainError("this model takes token ids but has no embedding layer to attribute at; "
                               "name a layer with layer=<path>")
        path = found[0]
    return path, _submodule(model, path)


def gradcam_layer(model, path: str | None = None) -> tuple[str, torch.nn.Module]:
    """(path, module) of Grad-CAM's layer: `path`, or the last layer whose spec makes maps of learned
    filters (a Conv2d)."""
    if path is None:
        convs = _layers_with(model, "gradcam")
        if not convs:
            raise ExplainError("Grad-CAM needs a convolutional layer (Conv2d) and this model has none; use "
                               "integrated-gradients, occlusion or saliency instead")
        path = convs[-1]
    return path, _submodule(model, path)


def _submodule(model, path: str) -> torch.nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n and "." not in n]
        raise ExplainError(f"layer {path!r} is not in this model; use a layer path such as "
                           f"{', '.join(repr(n) for n in names[:8])}") from None


def default_window(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Occlusion's (window, stride) from a sample's shape: about an eighth of the short side for images
    (all channels at once); an eighth of each side for 2-D inputs, which may be (C, L) signals or (T, F)
    sequences, so neither axis is taken for channels; one column of a row or one token; half-overlapping.

    >>> default_window((1, 16, 16)), default_window((3, 224, 224)), default_window((4,))
    (((1, 2, 2), (1, 1, 1)), ((3, 28, 28), (3, 14, 14)), ((1,), (1,)))
    >>> default_window((32, 1)), default_window((2, 50))
    (((4, 1), (2, 1)), ((1, 6), (1, 3)))
    """
    if len(shape) == 3:
        k = max(1, round(min(shape[1:]) / 8))
        s = max(1, k // 2)
        return (shape[0], k, k), (shape[0], s, s)
    if len(shape) == 2:
        k = tuple(max(1, round(n / 8)) for n in shape)
        return k, tuple(max(1, w // 2) for w in k)
    return (1,) * len(shape), (1,) * len(shape)


def _check_window(name: str, value: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    value = tuple(int(v) for v in value)
    if len(value) != len(shape) or any(v < 1 or v > s for v, s in zip(value, shape, strict=True)):
        raise ExplainError(f"occlusion {name} {value} does not fit a sample of shape {shape}; give one size per "
                           f"dimension, each from 1 to that dimension (e.g. {default_window(shape)[0]})")
    return value


def scores_function(model, task: str, position: int | None, tokens: bool, rows: _Rows,
                    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """forward(x) -> (B, K) scores: logits, one position's logits of a sequence model, or the output flattened.
    `preprocess` (an imported ResNet's normalisation) runs on the batch before the model."""
    per_position = task in ("sequence", "language_model")

    def forward(x: torch.Tensor) -> torch.Tensor:
        rows(x.shape[0])
        if tokens and x.is_floating_point():  # perturbation methods mix ids and baselines in float
            x = x.round().long()
        out = model(x if preprocess is None else preprocess(x))
        if per_position and out.dim() == 3:
            return out[:, position]
        return out if out.dim() == 2 else out.reshape(out.shape[0], -1)

    return forward


def explain(model, x: torch.Tensor, *, method: str = "integrated-gradients", target: int | None = None,
            task: str = "classification", settings: Settings | None = None, train_mean: torch.Tensor | None = None,
            class_names: list[str] | None = None, progress: Callable[[float], None] | None = None,
            cancel: Callable[[], bool] | None = None,
            preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Explanation:
    """Attributions of `x` (one sample, per-sample shape) for the score of class `target` (default: the
    predicted one) by `method` (a name in METHODS). `preprocess` maps a batch of inputs to what the model
    takes (part of the explained function: the attributions are over `x` as given). Raises ExplainError
    with the reason and the fix for a target that does not exist, a method that does not fit the model, or
    settings out of range."""
    spec = get_method(method)
    s = settings or Settings()
    tokens = is_token_model(model)
    sample = tuple(x.shape)
    expected = tuple(getattr(model, "input_shape", sample))
    if sample != expected:
        raise ExplainError(f"the sample has shape {sample} but the model takes {expected}")
    if tokens and spec.not_for_tokens:
        raise ExplainError(f"{spec.label} cannot explain this model, which takes token ids: {spec.not_for_tokens}; "
                           f"use {', '.join(n for n, m in METHODS.items() if not m.not_for_tokens)}")
    if not 1 <= s.n_steps <= MAX_STEPS or not 1 <= s.n_samples <= MAX_ROWS or s.internal_batch_size < 1:
        raise ExplainError(f"n_steps={s.n_steps}, n_samples={s.n_samples}, internal_batch_size="
                           f"{s.internal_batch_size}: expected 1 <= n_steps <= {MAX_STEPS}, 1 <= n_samples <= "
                           f"{MAX_ROWS} and internal_batch_size >= 1")
    per_position = task in ("sequence", "language_model")
    position = None
    if per_position:
        length = sample[0]
        position = length - 1 if s.position is None else int(s.position)
        if not 0 <= position < length:
            raise ExplainError(f"position {position} is out of range: this model predicts {length} positions "
                               f"(0 to {length - 1})")
    window, stride = default_window(sample)
    if spec.uses_window:
        window = _check_window("window", s.window, sample) if s.window else window
        stride = _check_window("stride", s.stride, sample) if s.stride else stride

    baseline_kind = s.baseline or ("pad" if tokens else "zeros")
    base = bl.make_baseline(baseline_kind, x, is_tokens=tokens, train_mean=train_mean, pad_token=s.pad_token) \
        if spec.uses_baseline or spec.completeness else None
    at_layer = layer = None
    notes: dict = {}
    if tokens:
        layer_path, at_layer = token_layer(model, s.layer)
        if not spec.uses_window:  # perturbation methods swap whole tokens; gradients are taken at the layer
            notes["layer"] = layer_path
    elif s.layer and not spec.needs_layer:
        if spec.uses_window:
            gradient = ", ".join(n for n, m in METHODS.items() if not (m.uses_window or m.needs_layer))
            raise ExplainError(f"{spec.label} perturbs the input, so it cannot attribute to layer {s.layer!r}; use "
                               f"{gradient} for a layer")
        at_layer = _submodule(model, s.layer)
        notes["layer"] = s.layer  # the attributions are shaped like that layer's output, not the sample
    if spec.needs_layer:
        if len(sample) != 3:
            raise ExplainError(f"{spec.label} needs image inputs (C, H, W) and feature maps; this model takes "
                               f"{sample}: use integrated-gradients or occlusion")
        notes["layer"], layer = gradcam_layer(model, s.layer)

    was_training = model.training
    grads_before = [p.grad for p in model.parameters()]
    model.eval()
    counter = _Rows(1, None, cancel)  # progress starts with the method, after the two scores below
    forward = scores_function(model, task, position, tokens, counter, preprocess)
    try:
        with torch.no_grad():
            scores = forward(x.unsqueeze(0))[0].float()
            base_score = forward(base.unsqueeze(0))[0].float() if base is not None else None
        k = scores.shape[0]
        if target is None:
            target = int(scores.argmax())
        elif not 0 <= int(target) < k:
            names = f" ({', '.join(class_names[:12])})" if class_names else ""
            raise ExplainError(f"target class {target} does not exist: this model scores {k} classes, 0 to {k - 1}"
                               f"{names}; pass --target from 0 to {k - 1} or leave it out for the predicted class")
        target = int(target)
        problem = Problem(forward, x.unsqueeze(0), (base if base is not None else torch.zeros_like(x)).unsqueeze(0),
                          target, tokens, at_layer, layer, s.n_steps, s.n_samples, window, stride,
                          s.internal_batch_size, s.seed)
        if spec.name == "occlusion":
            notes.update(window=list(window), stride=list(stride))
        counter.total = spec.rows(problem)
        if counter.total > MAX_ROWS:
            raise ExplainError(f"{spec.label} would evaluate the model on {counter.total:,} inputs, more than the "
                               f"{MAX_ROWS:,} allowed; use a larger stride or window, or fewer samples or steps")
        counter.done, counter.progress = 0, progress
        with torch.enable_grad():
            attr, delta = spec.run(problem)
    finally:  # the model as it was, cancelled or not: mode, and the parameters' .grad
        model.train(was_training)
        for p, g in zip(model.parameters(), grads_before, strict=True):
            p.grad = g
    attr = attr.detach().float()[0]
    check = None
    if spec.completeness:
        check = Check("completeness", float(attr.sum()), float(scores[target]), float(base_score[target]), delta)
    return Explanation(method, target, x.detach().cpu().numpy(), None if base is None else base.cpu().numpy(),
                       attr.cpu().numpy(), scores.cpu().numpy(), check, s, position, notes)


def method_names() -> list[str]:
    return list(METHODS)
