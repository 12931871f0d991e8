"""What Inspect knows of an imported run's data: its dataset (`imagenet`, `webtext`) is not one of the
studio's, so its shapes, task and classes come from the graph the import built.

An ImageNet ResNet expects torchvision's preprocessing: pixels in [0, 1], then per channel
(x - mean) / std with ImageNet's statistics (`IMAGENET_MEAN`, `IMAGENET_STD`, torchvision's
`transforms.Normalize` values in its reference scripts); `preprocess` applies it to an image input.
"""

from __future__ import annotations

import json

import torch

from studio.data.types import DatasetInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imported_info(graph, dataset_id: str, run_dir=None) -> DatasetInfo:
    """A DatasetInfo for an imported run, read from its graph (no samples: `sizes` is empty); with `run_dir`,
    a classifier's `class_names` are the names stored with the run (studio.pretrained.labels), if any."""
    from studio.analysis import analyze

    a = analyze(graph)
    inp = next(n for n in graph.nodes if n.type == "Input")
    shape = tuple(inp.params.get("shape") or ())
    dtype = inp.params.get("dtype", "float32")
    out = tuple(a.output_shape or ())
    if dtype == "int64" and len(out) == 2:  # token ids in, next-token logits out
        return DatasetInfo(id=dataset_id, name=f"{dataset_id} (imported)", task="language_model", input_shape=shape,
                           input_dtype=dtype, target_shape=shape, num_classes=out[-1], class_names=None, vocab=None,
                           description="The text the imported weights were trained on; not a studio dataset.",
                           source="download", sizes={})
    names = None
    if run_dir is not None and out:
        names = stored_labels(run_dir)
        names = names if names and len(names) == out[-1] else None  # a file edited by hand to another count
    return DatasetInfo(id=dataset_id, name=f"{dataset_id} (imported)", task="classification", input_shape=shape,
                       input_dtype=dtype, target_shape=(), num_classes=out[-1] if out else None,
                       class_names=names, vocab=None,
                       description="The images the imported weights were trained on; not a studio dataset.",
                       source="download", sizes={})


def preprocess(x: torch.Tensor, dataset_id: str) -> torch.Tensor:
    """An image input ([C, H, W] in [0, 1], or a batch of them) as the imported weights expect it (ImageNet's
    normalisation); any other input, or a run of another dataset, unchanged."""
    if dataset_id != "imagenet" or not x.is_floating_point() or x.dim() < 3 or x.shape[-3] != 3:
        return x
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def stored_labels(run_dir) -> list[str] | None:
    """The class names stored with a run, or None (no file, or one that cannot be read)."""
    from studio.runs.rundir import RunDir

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    try:
        names = json.loads(rd.class_names_file.read_text())["names"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) and names else None
