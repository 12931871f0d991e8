"""Dataset descriptions, in-memory datasets and the registry of dataset ids.

A `Dataset` holds three `Split`s of tensors already shaped the way a model takes them (per-sample
shapes follow DESIGN.md) and serves batches by tensor indexing. `DatasetInfo` describes a dataset
without loading it, so the UI can list every dataset cheaply. Loading lives in builtin.py,
downloads.py and uploads.py; this module only knows how to find the right loader for an id.

    >>> ds = get_dataset("iris", seed=0)
    >>> ds.info.input_shape, ds.info.num_classes
    ((4,), 3)
    >>> x, y = next(ds.batches("train", 16, shuffle=True))
    >>> tuple(x.shape), y.dtype
    ((16, 4), torch.int64)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from studio.errors import DataError

TASKS = ("classification", "regression", "sequence", "language_model")
SPLITS = ("train", "val", "test")
# What the training side reports for each task (the loss follows from the task as well:
# cross-entropy, MSE, per-token cross-entropy).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy",),
    "regression": ("mae",),
    "sequence": ("token_accuracy", "perplexity"),
    "language_model": ("token_accuracy", "perplexity"),
}


@dataclass(frozen=True)
class DatasetInfo:
    """Everything known about a dataset before loading it."""

    id: str
    name: str
    task: str  # one of TASKS
    input_shape: tuple[int, ...]  # per sample: images (C, H, W), sequences (T, F), token ids (T,)
    input_dtype: str  # "float32" or "int64" (token ids)
    target_shape: tuple[int, ...]  # per sample: () for a class index, (T,) per token, (H,) regression
    num_classes: int | None  # classes, or vocabulary size for token tasks; None for regression
    class_names: list[str] | None
    vocab: list[str] | None  # id -> token string, for token inputs/outputs (attention-map labels)
    description: str  # one line, ending with where the data comes from
    source: str  # "builtin", "download" or "upload"
    sizes: dict[str, int]  # split name -> number of samples
    metrics: tuple[str, ...] = ()

    def __post_init__(self):
        if self.task not in TASKS:
            raise DataError(f"dataset {self.id!r}: task {self.task!r} is not one of {TASKS}")
        if not self.metrics:
            object.__setattr__(self, "metrics", TASK_METRICS[self.task])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The per-sample output a model must produce for this dataset."""
        if self.task == "classification":
            return (self.num_classes,)
        if self.task == "regression":
            return tuple(self.target_shape)
        return (self.input_shape[0], self.num_classes)  # (T, V)

    @property
    def is_image(self) -> bool:
        return self.input_dtype == "float32" and len(self.input_shape) == 3

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["target_shape"] = list(self.target_shape)
        d["metrics"] = list(self.metrics)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DatasetInfo:
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        d["target_shape"] = tuple(d["target_shape"])
        d["metrics"] = tuple(d.get("metrics", ()))
        return cls(**d)


class Split:
    """Inputs and targets of one split: `x` (N, *input_shape) and `y` (N, *target_shape).

    Large image sets are kept as uint8 (a quarter of the memory) and turned into float32 in
    [0, 1] per batch by `take`; `.x` always gives the model-ready tensor (built once on first use).
    """

    target_is_input = False  # True for InputAsTarget: the target follows the (augmented) input

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise DataError(f"a split needs as many inputs as targets, got {len(x)} and {len(y)}")
        self._raw = x
        self._x: torch.Tensor | None = None if x.dtype == torch.uint8 else x
        self.y = y

    @property
    def x(self) -> torch.Tensor:
        if self._x is None:
            self._x = self._raw.float().div_(255.0)
        return self._x

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-ready (x, y) for the given sample indices, by tensor indexing."""
        if self._x is not None:
            return self._x[index], self.y[index]
        return self._raw[index].float().div_(255.0), self.y[index]

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return f"Split(x={tuple(self._raw.shape)} {self._raw.dtype}, y={tuple(self.y.shape)} {self.y.dtype})"


class InputAsTarget(Split):
    """A split whose target is its own model-ready input: the reconstruction form of `split`.

    It shares the input tensor with `split` (no copy of the data); `y` is the float input and
    `take` returns (x, x.clone()), so a model that writes into its input cannot alter its target.
    """

    target_is_input = True

    def __init__(self, split: Split):  # not super().__init__: that would store a separate y
        self._raw, self._x = split._raw, split._x

    @property
    def y(self) -> torch.Tensor:
        return self.x

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._x[index] if self._x is not None else self._raw[index].float().div_(255.0)
        return x, x.clone()

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"InputAsTarget(x={tuple(self._raw.shape)} {self._raw.dtype}, y=x)"


class Dataset:
    """A dataset in memory: `info` plus `train`, `val` and `test` splits."""

    def __init__(self, info: DatasetInfo, train: Split, val: Split, test: Split):
        self.info = info
        self.train, self.val, self.test = train, val, test

    def split(self, split_name: str) -> Split:
        if split_name not in SPLITS:
            raise DataError(f"unknown split {split_name!r}; use one of {SPLITS}")
        return getattr(self, split_name)

    def num_batches(self, split_name: str, batch_size: int, *, drop_last: bool = False) -> int:
        n = len(self.split(split_name))
        return n // batch_size if drop_last else math.ceil(n / batch_size)

    def batches(
        self,
        split_name: str,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        augment: Callable | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) batches covering the split once.

        `augment(x, generator) -> x` is applied to training batches only: validation and test
        data are never augmented, whatever is passed.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        split = self.split(split_name)
        n = len(split)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        use_augment = augment is not None and split_name == "train"
        for start in range(0, stop, batch_size):
            x, y = split.take(order[start:start + batch_size])
            if use_augment:
                x = augment(x, generator)
                if split.target_is_input:  # reconstruction: the model reproduces what it was shown
                    y = x.clone()
            yield x, y

    def probe_batch(self, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed small batch of validation samples for training probes.

        For classification it takes one sample of each class first, so feature maps and
        predictions of the probe show different classes.
        """
        y = self.val.y
        n = min(n, len(y))
        if self.info.task == "classification":
            picked: list[int] = []
            seen: set[int] = set()
            for i, label in enumerate(y.tolist()):
                if label not in seen:
                    seen.add(label)
                    picked.append(i)
                if len(picked) == n:
                    break
            rest = [i for i in range(len(y)) if i not in set(picked)]
            index = torch.tensor((picked + rest)[:n], dtype=torch.long)
        else:
            index = torch.arange(n)
        return self.val.take(index)

    def __repr__(self) -> str:
        return f"Dataset({self.info.id!r}, train={len(self.train)}, val={len(self.val)}, test={len(self.test)})"


# ---- splitting ------------------------------------------------------------------------------------

VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


def split_sizes(n: int, *, has_test: bool = False) -> dict[str, int]:
    """Sizes of the three splits of `n` samples (val/test carved from `n` unless `has_test`)."""
    n_val = max(1, round(n * VAL_FRACTION))
    n_test = 0 if has_test else max(1, round(n * TEST_FRACTION))
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def split_indices(n: int, seed: int, *, has_test: bool = False) -> dict[str, torch.Tensor]:
    """Disjoint index sets for train/val(/test); the same for the same (n, seed)."""
    sizes = split_sizes(n, has_test=has_test)
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    a, b = sizes["train"], sizes["train"] + sizes["val"]
    out = {"train": perm[:a].sort().values, "val": perm[a:b].sort().values}
    if not has_test:
        out["test"] = perm[b:].sort().values
    return out


def make_dataset(info: DatasetInfo, x: torch.Tensor, y: torch.Tensor, seed: int,
                 test: tuple[torch.Tensor, torch.Tensor] | None = None) -> Dataset:
    """Split (x, y) for `seed` into a Dataset; `test` is an official test set when one exists."""
    idx = split_indices(len(y), seed, has_test=test is not None)
    train = Split(x[idx["train"]], y[idx["train"]])
    val = Split(x[idx["val"]], y[idx["val"]])
    test_split = Split(*test) if test is not None else Split(x[idx["test"]], y[idx["test"]])
    return Dataset(info, train, val, test_split)


# ---- the registry -------------------------------------------------------------------------------

@dataclass
class Entry:
    """A dataset id with its static description and its loader."""

    info: Callable[[], DatasetInfo]
    load: Callable[..., Dataset]  # load(seed=..., workspace=..., **options)
    options: dict = field(default_factory=dict)  # option -> default, for the loader


_REGISTRY: dict[str, Entry] = {}


def register(dataset_id: str, info: Callable[[], DatasetInfo], options: dict | None = None):
    """Decorator registering `load(seed, workspace, **options) -> Dataset` under `dataset_id`."""

    def wrap(load: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _REGISTRY[dataset_id] = Entry(info, load, dict(options or {}))
        return load

    return wrap


def registered_ids() -> list[str]:
    _ensure_loaded()
    return list(_REGISTRY)


def dataset_options(dataset_id: str) -> dict:
    """The options a built-in dataset takes, with their defaults (e.g. shapes: num_samples)."""
    _ensure_loaded()
    entry = _REGISTRY.get(dataset_id)
    return dict(entry.options) if entry else {}


def _ensure_loaded() -> None:
    # Importing the modules runs their @register decorators.
    from studio.data import builtin, downloads  # noqa: F401


UPLOAD_ID_RE = re.compile(r"upload_[a-z0-9_]{1,64}\Z")


def _workspace(workspace: str | Path | None) -> Path:
    from studio.workspace import workspace_dir

    return Path(workspace).resolve() if workspace is not None else workspace_dir()


def list_datasets(workspace: str | Path | None = None) -> list[DatasetInfo]:
    """Every dataset: built-ins, downloadable ones (cached or not), then this workspace's uploads."""
    from studio.data.uploads import list_uploads

    _ensure_loaded()
    return [e.info() for e in _REGISTRY.values()] + list_uploads(workspace)


# ---- the reconstruction form: {"target": "input"} ------------------------------------------------

TARGET_OPTION = "target"  # accepted by every dataset with float32 inputs, on top of its own options
RECONSTRUCTION = {TARGET_OPTION: "input"}  # the options that give a dataset's reconstruction form


def _pop_target(dataset_id: str, options: dict | None) -> tuple[dict, bool]:
    """(the dataset's own options, whether the reconstruction form was asked for)."""
    opts = dict(options or {})
    if TARGET_OPTION not in opts:
        return opts, False
    target = opts.pop(TARGET_OPTION)
    if target != "input":
        raise DataError(f"dataset {dataset_id!r}: option target={target!r} is not known; use target='input' "
                        "for the reconstruction form (the input is the target), or leave the option out for "
                        "the dataset's own targets")
    return opts, True


def reconstruction_info(info: DatasetInfo) -> DatasetInfo:
    """The DatasetInfo of `info`'s reconstruction form: regression, target = input, metric MAE."""
    if info.input_dtype != "float32":
        raise DataError(f"dataset {info.id!r} has {info.input_dtype} inputs of shape {tuple(info.input_shape)}, "
                        "which cannot be a regression target; the reconstruction form (target='input') needs "
                        "float32 inputs such as images (digits, shapes, mnist, fashion_mnist, cifar10)")
    return replace(info, name=f"{info.name} (reconstruction)", task="regression",
                   target_shape=tuple(info.input_shape), num_classes=None, class_names=None,
                   metrics=TASK_METRICS["regression"],
                   description=f"Reconstruction form, the target is the input itself: {info.description}")


def reconstruction_form(data: Dataset) -> Dataset:
    """`data` with each sample's input as its target; the same samples in the same splits, no copy."""
    info = reconstruction_info(data.info)
    return Dataset(info, *(InputAsTarget(s) for s in (data.train, data.val, data.test)))


from studio.data.resize import pop_resize, resized_dataset, resized_info  # noqa: E402  (uses Split, Dataset)


def _checked_options(dataset_id: str, entry: Entry, opts: dict) -> dict:
    unknown = sorted(set(opts) - set(entry.options))
    if unknown:
        allowed = ", ".join([*entry.options, TARGET_OPTION])
        raise DataError(f"dataset {dataset_id!r} has no option {unknown[0]!r}; its options are: {allowed}")
    return opts


def get_info(dataset_id: str, workspace: str | Path | None = None, *, options: dict | None = None) -> DatasetInfo:
    """The DatasetInfo of one id without loading the data, for the same `options` as `get_dataset`.

        >>> get_info("shapes", options={"image_size": 28, "target": "input"}).target_shape
        (1, 28, 28)
    """
    from studio.data.uploads import upload_info

    _ensure_loaded()
    opts, reconstruct = _pop_target(dataset_id, options)
    if dataset_id in _REGISTRY:
        entry = _REGISTRY[dataset_id]
        opts, size, channels = pop_resize(dataset_id, entry.options, opts)  # image_size/channels: any image set
        info = entry.info(**_checked_options(dataset_id, entry, opts)) if opts else entry.info()
        info = resized_info(info, size, channels)
    elif isinstance(dataset_id, str) and UPLOAD_ID_RE.match(dataset_id):
        _no_upload_options(dataset_id, opts)
        info = upload_info(dataset_id, workspace)
    else:
        raise DataError(_unknown_message(dataset_id))
    return reconstruction_info(info) if reconstruct else info


def get_dataset(dataset_id: str, *, workspace: str | Path | None = None, seed: int = 0,
                options: dict | None = None, progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Load a dataset by id, split for `seed`.

    `options` tune a built-in (see `dataset_options`, e.g. {"num_samples": 500} for shapes); on top of
    those, {"target": "input"} gives the reconstruction form of any dataset with float32 inputs (an
    autoencoder's data: regression, y = x, the same splits as the plain dataset).
    `progress(done_bytes, total_bytes)` is called while a downloadable dataset is fetched.
    """
    from studio.data.uploads import load_upload

    _ensure_loaded()
    opts, reconstruct = _pop_target(dataset_id, options)
    if dataset_id in _REGISTRY:
        entry = _REGISTRY[dataset_id]
        opts, size, channels = pop_resize(dataset_id, entry.options, opts)  # image_size/channels: any image set
        data = entry.load(seed=seed, workspace=_workspace(workspace), progress=progress,
                          **_checked_options(dataset_id, entry, opts))
        data = resized_dataset(data, size, channels)
    elif isinstance(dataset_id, str) and UPLOAD_ID_RE.match(dataset_id):
        _no_upload_options(dataset_id, opts)
        data = load_upload(dataset_id, workspace, seed=seed)
    else:
        raise DataError(_unknown_message(dataset_id))
    return reconstruction_form(data) if reconstruct else data


def _no_upload_options(dataset_id: str, opts: dict) -> None:
    if opts:
        raise DataError(f"uploaded dataset {dataset_id!r} takes no option {sorted(opts)[0]!r}; its settings were "
                        "fixed at upload (only target='input', the reconstruction form, applies to it)")


def _unknown_message(dataset_id: object) -> str:
    return (f"unknown dataset {dataset_id!r}; use one of {', '.join(_REGISTRY)} "
            "or the id of an upload (upload_...)")
