"""The data model: dataset descriptions, in-memory datasets and splits, and the table of dataset ids.

A `Dataset` holds three `Split`s of tensors already shaped the way a model takes them (per-sample
shapes follow DESIGN.md) and serves batches by tensor indexing. `DatasetInfo` describes a dataset
without loading it, so the UI can list every dataset cheaply. The loaders (builtin.py, downloads.py,
uploads.py) build on this module and fill `ENTRIES` with `@register`; registry.py, the catalogue,
finds the right loader for an id. Nothing here imports a loader.

    >>> split_sizes(100)
    {'train': 70, 'val': 15, 'test': 15}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

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


# ---- the table of dataset ids ------------------------------------------------------------------

@dataclass
class Entry:
    """A dataset id with its static description and its loader."""

    info: Callable[[], DatasetInfo]
    load: Callable[..., Dataset]  # load(seed=..., workspace=..., **options)
    options: dict = field(default_factory=dict)  # option -> default, for the loader


ENTRIES: dict[str, Entry] = {}


def register(dataset_id: str, info: Callable[[], DatasetInfo], options: dict | None = None):
    """Decorator registering `load(seed, workspace, **options) -> Dataset` under `dataset_id`."""

    def wrap(load: Callable[..., Dataset]) -> Callable[..., Dataset]:
        ENTRIES[dataset_id] = Entry(info, load, dict(options or {}))
        return load

    return wrap


from studio.dataset_ids import UPLOAD_ID_RE  # noqa: E402,F401  (one pattern; checked without torch by the CLI)
