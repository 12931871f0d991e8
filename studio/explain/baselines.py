"""Reference inputs ("baselines") that attributions are measured against: the input a model would see
if the evidence were absent. Integrated gradients, GradientSHAP, occlusion, LIME and KernelSHAP all
replace the input by one; the result is read as "what moved the score from f(baseline) to f(x)".

- zeros: an all-black image or an all-zero row (for standardised tabular data: the training mean);
- blurred: the input under a Gaussian blur (images and 1-D signals), keeping colours and removing edges;
- mean: the training split's mean input;
- pad: for token ids, every position set to one token (the vocabulary's `<pad>`, else a chosen id).

Not for regression targets or anything without a natural "absent" input: the choice is the user's,
and the page shows the baseline next to the attribution.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from studio.errors import StudioError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the CLI's parser reads BASELINES without loading torch.

FLOAT_BASELINES = ("zeros", "blurred", "mean")
TOKEN_BASELINES = ("pad",)
BASELINES = FLOAT_BASELINES + TOKEN_BASELINES
PAD = "<pad>"


def baseline_choices(is_tokens: bool, ndim: int) -> tuple[str, ...]:
    """The baselines that fit an input: tokens take a padding token; rows (F,) cannot be blurred."""
    if is_tokens:
        return TOKEN_BASELINES
    return FLOAT_BASELINES if ndim >= 2 else ("zeros", "mean")


def default_pad_token(vocab: list[str] | None, train_x: torch.Tensor | None = None) -> int:
    """The vocabulary's `<pad>` id when it has one, else the most frequent token of the training
    split (a filler digit on `majority`, never a rare marker), else 0."""
    import torch

    if vocab and PAD in vocab:
        return vocab.index(PAD)
    if train_x is not None and train_x.numel():
        return int(torch.bincount(train_x.reshape(-1).long()).argmax())
    return 0


def gaussian_blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """`x` (C, H, W) or (C, L) blurred per channel with a Gaussian of `sigma` samples (default: a tenth
    of the longest side, at least 1), reflect-padded so the size is kept."""
    import torch
    import torch.nn.functional as F

    spatial = x.shape[1:]
    sigma = sigma if sigma is not None else max(1.0, max(spatial) / 10)
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[0]
    y = x.unsqueeze(0)
    for dim in range(len(spatial)):  # separable: one 1-D pass per spatial axis
        size = spatial[dim]
        r = min(radius, size - 1)
        kk = k[radius - r: radius + r + 1] / k[radius - r: radius + r + 1].sum()
        if len(spatial) == 2:
            weight = kk.view(1, 1, -1, 1) if dim == 0 else kk.view(1, 1, 1, -1)
            pad = (0, 0, r, r) if dim == 0 else (r, r, 0, 0)
            y = F.conv2d(F.pad(y, pad, mode="reflect" if r < size else "replicate"),
                         weight.expand(c, 1, *weight.shape[2:]), groups=c)
        else:
            y = F.conv1d(F.pad(y, (r, r), mode="reflect" if r < size else "replicate"),
                         kk.view(1, 1, -1).expand(c, 1, -1), groups=c)
    return y[0]


def make_baseline(kind: str, x: torch.Tensor, *, is_tokens: bool, train_mean: torch.Tensor | None = None,
                  pad_token: int | None = None) -> torch.Tensor:
    """The baseline of `kind` for one sample `x` (per-sample shape), shaped and typed like it.

    >>> import torch
    >>> make_baseline("zeros", torch.ones(1, 4, 4), is_tokens=False).sum().item()
    0.0
    """
    import torch

    allowed = baseline_choices(is_tokens, x.dim())
    if kind not in allowed:
        what = "token ids" if is_tokens else f"inputs of shape {tuple(x.shape)}"
        raise StudioError(f"baseline {kind!r} does not fit {what}; use one of {', '.join(allowed)}")
    if kind == "pad":
        if pad_token is None:
            raise StudioError("the 'pad' baseline needs a padding token id; pass pad_token=<id> "
                              "(the vocabulary's <pad>, or a neutral filler token)")
        return torch.full_like(x, int(pad_token))
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "blurred":
        return gaussian_blur(x.float()).to(x.dtype)
    if train_mean is None:
        raise StudioError("the 'mean' baseline needs the training split's mean input; explain a run (its dataset "
                          "gives it) or pass train_mean")
    if tuple(train_mean.shape) != tuple(x.shape):
        raise StudioError(f"the mean input has shape {tuple(train_mean.shape)} but the sample has {tuple(x.shape)}")
    return train_mean.to(x.dtype)
