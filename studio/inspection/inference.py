"""One input through a trained model: its output and probabilities with the feature maps and attention
of that input, an uploaded image turned into a model input, and saliency maps (Grad-CAM, gradient x input).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from studio.errors import DataError, StudioError
from studio.layers import REGISTRY


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


def saliency(model, x: torch.Tensor, target: int, *, method: str = "gradcam", layer: str | None = None) -> np.ndarray:
    """A (H, W) map in [0, 1] of where image `x` (C, H, W) drives the score of class `target`.

    "gradient_x_input": |d score / d x * x| summed over channels (Shrikumar et al.).
    "gradcam": ReLU(sum_c mean(d score / d A_c) * A_c) of a convolutional layer's output A, upsampled
    (Selvaraju et al.); `layer` defaults to the last Conv2d.
    """
    model.eval()
    if method == "gradient_x_input":
        xg = x.unsqueeze(0).clone().requires_grad_(True)
        with torch.enable_grad():
            score = model(xg)[0, target]
        (grad,) = torch.autograd.grad(score, xg)  # leaves the parameters' .grad alone
        s = (grad[0] * xg[0]).abs().sum(dim=0)
    elif method == "gradcam":
        convs = [n for n in model.order if REGISTRY[model.node_types[n]].gradcam]
        layer = layer or (convs[-1] if convs else None)
        if layer is None:
            raise StudioError("Grad-CAM needs a Conv2d layer and this model has none; use gradient_x_input")
        kept: dict = {}
        handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: kept.update(a=out))
        try:
            with torch.enable_grad():
                out = model(x.unsqueeze(0))
        finally:
            handle.remove()
        (grad,) = torch.autograd.grad(out[0, target], kept["a"])
        a, g = kept["a"][0], grad[0]  # (C, h, w)
        cam = F.relu((g.mean(dim=(1, 2), keepdim=True) * a).sum(dim=0))
        s = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    else:
        raise StudioError(f"unknown saliency method {method!r}; use 'gradcam' or 'gradient_x_input'")
    s = s.detach().float()
    span = float(s.max() - s.min())
    return ((s - s.min()) / span).numpy() if span > 0 else np.zeros(tuple(s.shape), np.float32)


def supports_saliency(model, task: str) -> bool:
    """Saliency is offered for image classifiers (float (C, H, W) input, class scores out)."""
    return task == "classification" and len(model.input_shape) == 3 and model.input_dtype == torch.float32
