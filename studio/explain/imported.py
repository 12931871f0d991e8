"""Explaining runs that have no studio dataset (imported pretrained weights: an ImageNet ResNet, a GPT-2),
and samples given from outside a dataset (an image or tensor file, typed text through the run's tokenizer).

An imported run's dataset id (`imagenet`, `webtext`) names what its weights were trained on, not a
dataset the studio can load: its DatasetInfo comes from the graph (studio.pretrained.info.imported_info),
the 'mean' baseline (the training split's mean input) does not exist, and a text model's padding token
comes from its tokenizer (`<pad>`, else GPT-2's `<|endoftext|>`). An ImageNet ResNet sees its input
through torchvision's normalisation (`input_transform`), applied inside the explained function, so the
attributions lie over the image as the user gave it ([0, 1] pixels) and f(x) is the model's own output.

    >>> transform = input_transform(run)              # doctest: +SKIP
    >>> x, source = file_input("cat.png", (3, 224, 224), torch.float32)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from studio.explain.core import ExplainError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TENSOR_SUFFIXES = (".npy", ".pt", ".pth")
END_OF_TEXT = "<|endoftext|>"  # GPT-2's one special token: its padding when the vocabulary has no <pad>


def has_studio_dataset(run) -> bool:
    """False for an imported run, whose dataset id names the weights' own training data."""
    from studio.pretrained.importer import SOURCE_DATASETS

    return run.dataset_id not in SOURCE_DATASETS.values()


def run_info(run, dataset=None):
    """The DatasetInfo explanations read: the dataset's, or the imported graph's (no samples; the class
    names stored with the run, if any)."""
    if dataset is not None:
        return dataset.info
    from studio.pretrained.info import imported_info

    return imported_info(run.graph, run.dataset_id, run.directory)


def no_dataset_message(run) -> str:
    return (f"run {run.run_id!r} has no studio dataset (its weights were trained on {run.dataset_id!r}, which the "
            "studio does not hold): give --input FILE (an image, or a .npy / .pt tensor of the model's input "
            "shape) or --text \"...\"")


def input_transform(run) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The preprocessing between the user's input and the model, on batches (B, C, H, W): for an imported
    ImageNet ResNet, the normalisation Live inference applies (studio.pretrained.info.preprocess); None for
    every other run."""
    from studio.pretrained.info import preprocess

    if run.dataset_id != "imagenet":
        return None
    return lambda x: preprocess(x, run.dataset_id)


def run_tokenizer_or_none(run, info):
    """The run's tokenizer (its tokenizer.json, its upload's, or the dataset's vocabulary), or None."""
    from studio.errors import DataError
    from studio.inspection.tokenize import run_tokenizer

    try:
        return run_tokenizer(run.directory, info.vocab, dataset_id=run.dataset_id)
    except DataError:
        return None


def tokenizer_pad(tokenizer) -> int:
    """A tokenizer.json's padding id: `<pad>`, else `<|endoftext|>` (GPT-2 has no <pad>), else 0."""
    tok = getattr(tokenizer, "_tok", None)
    if tok is not None:
        for name in ("<pad>", END_OF_TEXT):
            found = tok.token_to_id(name)
            if found is not None:
                return int(found)
    return 0


def text_tokens(run, info, text: str, seq_len: int, *,
                pad_token: int | None = None) -> tuple[torch.Tensor, int, int] | None:
    """(typed text as `seq_len` token ids through the run's own tokenizer.json, how many were typed, the
    padding id used); None when the run has no tokenizer.json (a character vocabulary takes
    runs.text_to_tokens). The count says where the text ends: a causal model is explained at its last token."""
    from studio.inspection.tokenize import FileTokenizer

    tok = run_tokenizer_or_none(run, info)
    if not isinstance(tok, FileTokenizer):
        return None
    pad = tokenizer_pad(tok) if pad_token is None else int(pad_token)
    ids = tok.encode(text)[:seq_len]
    if not ids:
        raise ExplainError("the text is empty; type at least one token")
    return torch.tensor(ids + [pad] * (seq_len - len(ids)), dtype=torch.int64), len(ids), pad


def file_input(path: str | Path, input_shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, str]:
    """(one input read from a file, where it came from): an image (decoded, resized to the model's (C, H, W),
    pixels in [0, 1], as the page's upload) or a tensor of exactly the model's input shape (.npy without
    pickles, or .pt loaded with weights_only)."""
    from studio.inspection import image_to_input, open_image

    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ExplainError(f"--input {str(path)!r} is not a file; give an image ({', '.join(IMAGE_SUFFIXES)}) or a "
                           f"tensor ({', '.join(TENSOR_SUFFIXES)}) of shape {tuple(input_shape)}")
    if suffix in IMAGE_SUFFIXES:
        with path.open("rb") as f:
            x = image_to_input(open_image(f), tuple(input_shape))
        return x, f"image {path.name}"
    if suffix not in TENSOR_SUFFIXES:
        raise ExplainError(f"--input {path.name!r}: unknown kind {suffix or '(no suffix)'!r}; give an image "
                           f"({', '.join(IMAGE_SUFFIXES)}) or a tensor ({', '.join(TENSOR_SUFFIXES)})")
    try:
        if suffix == ".npy":
            x = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            x = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise ExplainError(f"--input {path.name!r} cannot be read as a tensor ({str(e)[:200]})") from None
    if not isinstance(x, torch.Tensor):
        raise ExplainError(f"--input {path.name!r} holds a {type(x).__name__}, not one tensor")
    if tuple(x.shape) == (1, *input_shape):
        x = x[0]
    if tuple(x.shape) != tuple(input_shape):
        raise ExplainError(f"--input {path.name!r} has shape {tuple(x.shape)} but the model takes "
                           f"{tuple(input_shape)} (one sample, optionally with a batch dimension of 1)")
    if dtype == torch.int64:
        if x.is_floating_point() and not torch.equal(x, x.round()):
            raise ExplainError(f"--input {path.name!r} holds fractions but this model takes token ids (integers)")
        x = x.long()
    else:
        x = x.float()
    return x.contiguous(), f"file {path.name}"


def layer_paths(model) -> list[str]:
    """Paths a gradient method can attribute to, in the order they run: the modules that run in one
    forward and give per-position (tokens) or spatial (images) outputs, the output layer left out. A block
    of a compiled graph (an imported ResNet's `layer2_1`, a GPT-2's `h.0`) is not itself called: its layers
    are (`layer2_1.relu2` is that ResNet block's output, after the residual sum)."""
    x = torch.zeros((1, *model.input_shape), dtype=model.input_dtype)
    seen: dict[str, tuple[int, ...]] = {}
    hooks = []

    def keep(path: str):
        def hook(_module, _inputs, out) -> None:
            if isinstance(out, torch.Tensor):
                seen.setdefault(path, tuple(out.shape))
        return hook

    for path, module in model.named_modules():
        if path:
            hooks.append(module.register_forward_hook(keep(path)))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            final = tuple(model(x).shape)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    want = 3 if model.input_dtype == torch.int64 else 4
    return [p for p, shape in seen.items() if len(shape) == want and shape != final]


def check_layer(model, path: str) -> None:
    """ExplainError when `path` names a module that no forward calls (a block of a compiled graph),
    naming the layers inside it that do run."""
    if path in layer_paths(model) or path not in dict(model.named_modules()):
        return  # a layer that runs, or one the method's own lookup refuses with its message
    inside = [p for p in layer_paths(model) if p.startswith(path + ".")]
    hint = f"; use a layer inside it, e.g. {inside[-1]!r} (its last), or {', '.join(map(repr, inside[:4]))}" \
        if inside else ""
    raise ExplainError(f"layer {path!r} is a block of this graph, which runs its layers one by one, so it has no "
                       f"output of its own to attribute to{hint}")
