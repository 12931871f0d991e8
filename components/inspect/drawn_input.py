"""A hand-drawn image as a model input: the size and brush of the drawing canvas for a model's
(C, H, W) input, and the canvas's RGBA pixels turned into that input.

Pure functions (numpy, PIL, torch; no Streamlit): the Inspect page puts the canvas on screen
(streamlit-drawable-canvas) and feeds what these return to the model. The drawing is light strokes
on a dark background, like the built-in image datasets (digits, MNIST, shapes: values in [0, 1],
background 0); a 3-channel model gets the grayscale drawing on all three channels.

    >>> rgba = np.zeros((280, 280, 4), np.uint8); rgba[..., 3] = 255
    >>> rgba[40:240, 130:150, :3] = 255                      # a white vertical bar on black
    >>> x = drawn_input(rgba, (1, 28, 28))
    >>> tuple(x.shape), bool(x[0, 14, 14] > 0.8), float(x[0, 14, 2])
    ((1, 28, 28), True, 0.0)
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from studio import inspection as ins
from studio.errors import StudioError

CANVAS_PX = 280          # the canvas's longer side on screen, pixels
BRUSH_INPUT_PX = 2.0     # stroke width in the model's input pixels at 28 px wide (MNIST strokes: about 2 px)
BRUSH_MIN_INPUT_PX = 1.0  # a small input (digits, 8x8) gets strokes of one of its pixels: a drawn 0 keeps its hole
BRUSH_RANGE = (8, 56)    # on-screen stroke width bounds, pixels
LIT = 8                  # a canvas whose brightest pixel is below this (of 255) holds no drawing


def canvas_size(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) of the canvas for a (C, H, W) input: CANVAS_PX on the longer side, the input's
    aspect ratio kept so the drawing is not stretched when it is resized to (H, W)."""
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise StudioError(f"a drawing can only feed a model whose input is (1, H, W) or (3, H, W), but this one "
                          f"takes {tuple(input_shape)}; use a dataset sample instead")
    _, h, w = input_shape
    if w >= h:
        return CANVAS_PX, max(1, round(CANVAS_PX * h / w))
    return max(1, round(CANVAS_PX * w / h)), CANVAS_PX


def brush_width(input_shape: tuple[int, ...]) -> int:
    """On-screen stroke width: about 2 input pixels on a 28-pixel-wide input, scaled with the input's width
    and never under one input pixel (8x8 digits: one pixel, 35 px on screen)."""
    width, _ = canvas_size(input_shape)
    input_px = max(BRUSH_MIN_INPUT_PX, BRUSH_INPUT_PX * input_shape[2] / 28)  # strokes scale with the input
    px = input_px * width / input_shape[2]
    return int(min(BRUSH_RANGE[1], max(BRUSH_RANGE[0], round(px))))


def canvas_image(rgba: np.ndarray | None) -> Image.Image | None:
    """The canvas's pixels (H, W, 4) uint8 RGBA, (H, W, 3) or (H, W) as a grayscale image, transparent
    parts counted as black background; None when nothing is drawn on it."""
    if rgba is None:
        return None
    a = np.asarray(rgba)
    if a.ndim == 2:
        gray = a.astype(np.float32)
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = a[..., :3].astype(np.float32)
        gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as PIL's "L"
        if a.shape[2] == 4:
            gray *= a[..., 3].astype(np.float32) / 255.0  # composite over the black background
    else:
        raise ValueError(f"canvas pixels must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if gray.size == 0 or gray.max() < LIT:
        return None
    return Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8))  # 2-D uint8: mode "L"


def drawn_input(rgba: np.ndarray | None, input_shape: tuple[int, ...]) -> torch.Tensor | None:
    """The drawing as the model's input (C, H, W) float32 in [0, 1], through the same conversion as an
    uploaded image (studio.inspection.image_to_input); None for an empty canvas."""
    image = canvas_image(rgba)
    return None if image is None else ins.image_to_input(image, tuple(input_shape))

