"""The catalogue of dataset ids: find the loader for an id and load it, or describe it without loading.

The data model (Dataset, Split, DatasetInfo) is types.py; the loaders are builtin.py, downloads.py
(which register their ids in `types.ENTRIES`) and uploads.py. This module imports them all and
nothing imports it back.

    >>> ds = get_dataset("iris", seed=0)
    >>> ds.info.input_shape, ds.info.num_classes
    ((4,), 3)
    >>> x, y = next(ds.batches("train", 16, shuffle=True))
    >>> tuple(x.shape), y.dtype
    ((16, 4), torch.int64)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from studio.data import builtin, downloads  # noqa: F401  (importing them registers their ids)
from studio.data.types import ENTRIES, TASK_METRICS, UPLOAD_ID_RE, Dataset, DatasetInfo, Entry, InputAsTarget
from studio.data.uploads import list_uploads, load_upload, upload_info
from studio.dataset_ids import unknown_message
from studio.errors import DataError


def registered_ids() -> list[str]:
    return list(ENTRIES)


def dataset_options(dataset_id: str) -> dict:
    """The options a built-in dataset takes, with their defaults (e.g. shapes: num_samples)."""
    entry = ENTRIES.get(dataset_id)
    return dict(entry.options) if entry else {}


def _workspace(workspace: str | Path | None) -> Path:
    from studio.workspace import workspace_dir

    return Path(workspace).resolve() if workspace is not None else workspace_dir()


def list_datasets(workspace: str | Path | None = None) -> list[DatasetInfo]:
    """Every dataset: built-ins, downloadable ones (cached or not), then this workspace's uploads."""
    return [e.info() for e in ENTRIES.values()] + list_uploads(workspace)


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
    opts, reconstruct = _pop_target(dataset_id, options)
    if dataset_id in ENTRIES:
        entry = ENTRIES[dataset_id]
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
    opts, reconstruct = _pop_target(dataset_id, options)
    if dataset_id in ENTRIES:
        entry = ENTRIES[dataset_id]
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
    return unknown_message(dataset_id)
