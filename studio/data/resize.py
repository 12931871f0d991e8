"""The image-size options every built-in image dataset accepts on top of its own: `image_size`
(resample each image to S x S, bilinear) and `channels` (1 or 3; grey repeated to RGB, RGB averaged
to grey). They make a dataset on this machine stand in for one that must be downloaded, with the
right input shape: digits at 28x28 for MNIST, at 32x32 with 3 channels for CIFAR-10.

A dataset with an `image_size` option of its own (shapes draws at any size) keeps its own meaning.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from studio.errors import DataError

SIZE_OPTION, CHANNELS_OPTION = "image_size", "channels"


def pop_resize(dataset_id: str, own_options, opts: dict) -> tuple[dict, int | None, int | None]:
    """(the dataset's own options, size or None, channels or None): the generic options taken out."""
    opts = dict(opts)
    size = opts.pop(SIZE_OPTION, None) if SIZE_OPTION not in own_options else None
    channels = opts.pop(CHANNELS_OPTION, None) if CHANNELS_OPTION not in own_options else None
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 4 <= size <= 256):
        raise DataError(f"dataset {dataset_id!r}: option image_size={size!r} must be a whole number from 4 to 256 "
                        "(e.g. image_size=28)")
    if channels is not None and channels not in (1, 3):
        raise DataError(f"dataset {dataset_id!r}: option channels={channels!r} must be 1 (grey) or 3 (RGB)")
    return opts, size, channels


def resized_info(info, size: int | None, channels: int | None):
    if size is None and channels is None:
        return info
    if len(info.input_shape) != 3 or info.input_dtype != "float32":
        raise DataError(f"dataset {info.id!r} has inputs of shape {tuple(info.input_shape)} {info.input_dtype}, not "
                        "(C, H, W) images: the options image_size and channels apply to image datasets only")
    c, h, w = info.input_shape
    shape = (channels or c, size or h, size or w)
    return replace(info, input_shape=shape, name=f"{info.name} at {shape[1]}x{shape[2]}"
                   + (f"x{shape[0]}" if shape[0] != c else ""),
                   description=f"{info.description}; resampled to {shape}")


def _resample(x: torch.Tensor, size: int | None, channels: int | None) -> torch.Tensor:
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    if channels is not None and x.shape[1] != channels:
        x = x.repeat(1, channels, 1, 1) if x.shape[1] == 1 else x.mean(dim=1, keepdim=True)
    return x.contiguous()


def resized_dataset(data, size: int | None, channels: int | None):
    """`data` with every split's images resampled (a new dataset; the targets are shared)."""
    from studio.data.types import Dataset, Split

    if size is None and channels is None:
        return data
    info = resized_info(data.info, size, channels)
    splits = [Split(_resample(s.x, size, channels), s.y) for s in (data.train, data.val, data.test)]
    return Dataset(info, *splits)
