"""Image augmentation for training batches, on tensors, the whole batch at once.

`Augment` is a config (a dataclass with a switch and a strength per transform) that is also the
callable `Dataset.batches` applies to training batches only. Its settings' schema (defaults,
bounds, help, validation) is `studio.augment_settings.AUGMENT_FIELDS`, shared with TrainConfig.
Randomness comes from the generator passed in, so a seeded run augments the same way every time.

    >>> aug = Augment(flip=True, crop=True, crop_padding=2)
    >>> x = torch.rand(16, 1, 28, 28)
    >>> aug(x, torch.Generator().manual_seed(0)).shape
    torch.Size([16, 1, 28, 28])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from studio.augment_settings import AUGMENT_FIELDS
from studio.errors import DataError

_DEFAULTS = {f.name: f.default for f in AUGMENT_FIELDS}


@dataclass
class Augment:
    # Defaults, bounds and help are the schema's (studio.augment_settings); the comments say how each applies.
    crop: bool = _DEFAULTS["crop"]
    crop_padding: int = _DEFAULTS["crop_padding"]  # zero padding around the image before a random crop of its size
    flip: bool = _DEFAULTS["flip"]
    flip_prob: float = _DEFAULTS["flip_prob"]  # chance of a horizontal flip (mirrors digits and text: off for those)
    affine: bool = _DEFAULTS["affine"]
    rotation_degrees: float = _DEFAULTS["rotation_degrees"]  # uniform in [-d, d]
    scale: float = _DEFAULTS["scale"]  # zoom uniform in [1 - s, 1 + s]
    translate: float = _DEFAULTS["translate"]  # shift uniform in [-t, t] as a fraction of the image size
    noise: bool = _DEFAULTS["noise"]
    noise_std: float = _DEFAULTS["noise_std"]  # Gaussian noise added to pixel values (images are in [0, 1])

    @property
    def enabled(self) -> bool:
        return self.crop or self.flip or self.affine or self.noise

    def validate(self) -> Augment:
        """Self, or DataError naming the first setting out of range (the schema's one validator)."""
        for spec in AUGMENT_FIELDS:
            problem = spec.problem(getattr(self, spec.name))
            if problem:
                raise DataError(f"augmentation {problem}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Augment:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"unknown augmentation setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}")
        return cls(**d).validate()

    def check_input(self, input_shape: tuple[int, ...], input_dtype: str) -> None:
        """Raise unless the dataset's samples are images (C, H, W) of float32."""
        if self.enabled and (len(input_shape) != 3 or input_dtype != "float32"):
            raise DataError(f"image augmentation needs image inputs (C, H, W) of float32, but the dataset's "
                            f"input is {tuple(input_shape)} {input_dtype}; turn augmentation off for this dataset")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch (B, C, H, W) of float images; returns a new tensor of the same shape."""
        if not self.enabled:
            return x
        if x.dim() != 4 or not x.is_floating_point():
            raise DataError(f"image augmentation needs a batch (B, C, H, W) of floats, got {tuple(x.shape)} {x.dtype}")
        if self.crop and self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            flip = torch.rand(len(x), generator=generator) < self.flip_prob
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if self.affine:
            x = random_affine(x, self.rotation_degrees, self.scale, self.translate, generator)
        if self.noise and self.noise_std:
            x = x + self.noise_std * torch.randn(x.shape, generator=generator)
        return x


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-pad by `padding` and cut a random window of the original size per sample (by gathering)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    rows = (top + torch.arange(h)).view(b, 1, h, 1).expand(b, c, h, w)  # (B, C, H, W)
    cols = (left + torch.arange(w)).view(b, 1, 1, w).expand(b, c, h, w)
    flat = padded.flatten(2)  # (B, C, Hp*Wp)
    index = (rows * (w + 2 * padding) + cols).flatten(2)
    return flat.gather(2, index).view(b, c, h, w)


def random_affine(x: torch.Tensor, degrees: float, scale: float, translate: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Random rotation, zoom and shift per sample, bilinear, zeros outside the image."""
    b = len(x)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    angle = uniform(-degrees, degrees) * (math.pi / 180.0)
    zoom = uniform(1.0 - scale, 1.0 + scale)
    shift = torch.stack([uniform(-translate, translate), uniform(-translate, translate)], 1) * 2  # grid units
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
