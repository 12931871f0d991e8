"""One input through a trained model: its output and probabilities with the feature maps and attention
of that input, and an uploaded image turned into a model input. Attributions (saliency maps, Grad-CAM,
integrated gradients, ...) are studio.explain's, computed by Captum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from studio.errors import DataError, StudioError


@dataclass
class Inference:
    """One input through the model: its output, class probabilities (classification) or per-position
    token probabilities (sequences), and the feature maps and attention of that input (batch of 1)."""

    output: np.ndarray
    probabilities: np.ndarray | None
    features: dict[str, np.ndarray]
    attention: dict[str, np.ndarray]


def feature_nodes(model) -> tuple[list[str], list[str]]:
    """(feature-map node ids, attention node ids) of a compiled model, in graph order."""
    from studio.training.probes import probe_targets

    return probe_targets(model)


def infer(model, x: torch.Tensor, task: str, *, node_ids: list[str] | None = None) -> Inference:
    """Run one input `x` (per-sample shape, no batch dimension) and capture what the pages show."""
    from studio.compile import capture

    fmap_ids, _ = feature_nodes(model)
    with torch.no_grad():
        out, feats, attns = capture(model, x.unsqueeze(0), fmap_ids if node_ids is None else node_ids)
    out = out.float()[0]
    probs = out.softmax(dim=-1).numpy() if task in ("classification", "sequence", "language_model") else None
    return Inference(out.numpy(), probs, {k: v[0].float().numpy() for k, v in feats.items()},
                     {k: v[0].float().numpy() for k, v in attns.items()})


def open_image(file):
    """A PIL image from an uploaded file, decoded; a damaged file or one that declares more pixels than
    MAX_IMAGE_PIXELS (a decompression bomb: a tiny PNG that says 20000x20000) is a DataError."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from studio.data.readers import MAX_IMAGE_PIXELS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(file)
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DataError(f"the image is {w}x{h} pixels, more than the {MAX_IMAGE_PIXELS:,} allowed; "
                                "upload a smaller image")
            img.load()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"that file could not be read as an image ({str(e)[:200]}); upload a PNG or JPEG") from None
    return img


def image_to_input(image, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A PIL image as a model input of per-sample shape (C, H, W) in [0, 1]: resized (bilinear) to
    (H, W), converted to grayscale for C=1 or RGB for C=3."""
    from PIL import Image

    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise StudioError(f"an image can only feed a model whose input is (1, H, W) or (3, H, W), but this one "
                          f"takes {tuple(input_shape)}; use a dataset sample instead")
    c, h, w = input_shape
    img = image.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = a[None] if c == 1 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def supports_saliency(model, task: str) -> bool:
    """Saliency maps (studio.explain, Captum) are offered for image classifiers (float (C, H, W) input,
    class scores out)."""
    return task == "classification" and len(model.input_shape) == 3 and model.input_dtype == torch.float32
