"""The user's own data: CSV tables, zips of image folders, text for character models, text+label CSVs.

Each upload function takes the file's bytes, its name and options, and returns the new dataset's
DatasetInfo. The result is stored, preprocessed, under
`workspace/datasets/uploads/<upload_id>/` (meta.json + x.npy + y.npy, read back with
`allow_pickle=False`), with an id like `upload_iris_csv` that `get_dataset` accepts.

    >>> info = upload_csv(open("houses.csv", "rb").read(), "houses.csv", target="price")  # doctest: +SKIP
    >>> get_dataset(info.id).train.x.shape                                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from studio.data import readers
from studio.data.builtin import char_windows
from studio.data.types import UPLOAD_ID_RE, DatasetInfo, make_dataset, split_indices, split_sizes
from studio.errors import DataError

META_FORMAT = "studio.upload/1"
MAX_AUTO_CLASSES = 20  # an integer target with at most this many values is read as classes
MAX_CLASSES = 200
MAX_CATEGORIES = 20  # a text feature column with more distinct values is refused, not one-hot encoded
MAX_VOCAB = 5000
MIN_SAMPLES = 10  # enough for non-empty train, validation and test splits
PAD, UNK = "<pad>", "<unk>"


# ---- storage -----------------------------------------------------------------------------------------

def uploads_dir(workspace: str | Path | None = None) -> Path:
    from studio.workspace import workspace_dir

    root = Path(workspace).resolve() if workspace is not None else workspace_dir()
    return root / "datasets" / "uploads"


def _folder(upload_id: str, workspace) -> Path:
    if not isinstance(upload_id, str) or not UPLOAD_ID_RE.match(upload_id):
        raise DataError(f"{upload_id!r} is not an upload id; upload ids look like 'upload_my_data'")
    folder = uploads_dir(workspace) / upload_id
    if not (folder / "meta.json").is_file():
        raise DataError(f"no upload {upload_id!r} in {uploads_dir(workspace)}; upload the file again or pick "
                        "another dataset")
    return folder


def _read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "meta.json").read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"upload {folder.name!r} is damaged: cannot read meta.json ({e}); delete it and "
                        "upload the file again") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise DataError(f"upload {folder.name!r} has meta.json in an unknown format; delete it and upload again")
    return meta


def upload_info(upload_id: str, workspace: str | Path | None = None) -> DatasetInfo:
    return DatasetInfo.from_dict(_read_meta(_folder(upload_id, workspace))["info"])


def upload_details(upload_id: str, workspace: str | Path | None = None) -> dict:
    """The stored meta.json: kind, original file name, options, preprocessing (e.g. standardisation
    statistics and one-hot categories, to prepare new rows the same way) and skipped entries."""
    return _read_meta(_folder(upload_id, workspace))


def list_uploads(workspace: str | Path | None = None) -> list[DatasetInfo]:
    """Infos of this workspace's uploads, oldest first; damaged folders are left out."""
    root = uploads_dir(workspace)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if UPLOAD_ID_RE.match(folder.name) and (folder / "meta.json").is_file():
            try:
                found.append((folder.stat().st_mtime, DatasetInfo.from_dict(_read_meta(folder)["info"])))
            except (DataError, KeyError, TypeError):
                continue
    return [info for _, info in sorted(found, key=lambda t: (t[0], t[1].id))]


def delete_upload(upload_id: str, workspace: str | Path | None = None) -> None:
    shutil.rmtree(_folder(upload_id, workspace))


def load_upload(upload_id: str, workspace: str | Path | None = None, *, seed: int = 0):
    folder = _folder(upload_id, workspace)
    meta = _read_meta(folder)
    try:
        x = torch.from_numpy(np.load(folder / "x.npy", allow_pickle=False))
        y = torch.from_numpy(np.load(folder / "y.npy", allow_pickle=False))
    except (OSError, ValueError) as e:
        raise DataError(f"upload {upload_id!r} is damaged: cannot read its arrays ({e}); delete it and upload "
                        "the file again") from None
    return make_dataset(DatasetInfo.from_dict(meta["info"]), x, y, seed)


def _new_id(root: Path, name: str) -> str:
    base = "upload_" + readers.slug(name)
    upload_id, k = base, 2
    while (root / upload_id).exists():
        upload_id, k = f"{base}_{k}", k + 1
    return upload_id


def _store(kind: str, filename: str, name: str | None, workspace, x: np.ndarray, y: np.ndarray,
           make_info, options: dict, preprocessing: dict | None = None, skipped: list[str] | None = None
           ) -> DatasetInfo:
    """Write the arrays and meta.json into a temp folder, then rename it into place (all or nothing)."""
    root = uploads_dir(workspace)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        upload_id = _new_id(root, name or filename)
        info = make_info(upload_id)
        np.save(tmp / "x.npy", x, allow_pickle=False)
        np.save(tmp / "y.npy", y, allow_pickle=False)
        meta = {"format": META_FORMAT, "kind": kind, "filename": filename, "options": options,
                "preprocessing": preprocessing or {}, "skipped": skipped or [], "info": info.to_dict()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), "utf-8")
        os.rename(tmp, root / upload_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _need_samples(n: int, filename: str, what: str) -> None:
    if n < MIN_SAMPLES:
        raise DataError(f"{filename}: found {n} {what}; at least {MIN_SAMPLES} are needed to make train, "
                        "validation and test splits")


def _classes(values: list[str], column: str, filename: str) -> tuple[np.ndarray, list[str]]:
    """Class indices and names of a label column (numbers sorted numerically, text alphabetically)."""
    numbers = readers.as_numbers(values)
    if numbers is not None:  # "1" and "1.0" are one class; 2 sorts before 10
        keys = sorted(set(numbers.tolist()))
        names = [str(int(k)) if k == int(k) else repr(k) for k in keys]
        index = {k: i for i, k in enumerate(keys)}
        labels = np.array([index[v] for v in numbers.tolist()], dtype=np.int64)
    else:
        names = sorted(set(values))
        index = {v: i for i, v in enumerate(names)}
        labels = np.array([index[v] for v in values], dtype=np.int64)
    if len(names) < 2:
        raise DataError(f"{filename}: target column {column!r} has one class ({names[0]!r}) in all {len(values)} "
                        "rows; a classifier needs at least 2 classes")
    if len(names) > MAX_CLASSES:
        raise DataError(f"{filename}: target column {column!r} has {len(names)} distinct values, more than "
                        f"{MAX_CLASSES} classes; for a numeric target use task='regression'")
    return labels, names


# ---- CSV tables -----------------------------------------------------------------------------------------

def upload_csv(data: bytes, filename: str, *, target: str, task: str = "auto", drop_columns: tuple = (),
               name: str | None = None, delimiter: str = ",", workspace: str | Path | None = None) -> DatasetInfo:
    """A table: every column but `target` (and `drop_columns`) is a feature.

    Numeric features are standardised with the training split's statistics (seed 0, stored in
    meta.json); text features with at most MAX_CATEGORIES values are one-hot encoded. `task="auto"`
    reads text or small-integer targets as classes and other numbers as regression.
    """
    if task not in ("auto", "classification", "regression"):
        raise DataError(f"task={task!r}; use 'auto', 'classification' or 'regression'")
    table = readers.read_csv(data, filename, delimiter=delimiter)
    target_values = table.require(target, "target")
    for col in drop_columns:
        table.require(col, "dropped")
    readers.check_no_missing(table, target, filename)
    numeric_target = readers.as_numbers(target_values)
    _need_samples(table.rows, filename, "data rows")

    if task == "auto":
        integral = numeric_target is not None and np.all(numeric_target == np.round(numeric_target))
        few = len(set(target_values)) <= MAX_AUTO_CLASSES
        task = "classification" if numeric_target is None or (integral and few) else "regression"
    if task == "regression":
        if numeric_target is None:
            raise DataError(f"{filename}: target column {target!r} is not numeric (e.g. {target_values[0]!r}); "
                            "a regression target must be numbers, or use task='classification'")
        if np.ptp(numeric_target) == 0:
            raise DataError(f"{filename}: target column {target!r} is {target_values[0]} in every row; "
                            "there is nothing to learn")
        y, class_names = numeric_target.astype(np.float32).reshape(-1, 1), None
    else:
        y, class_names = _classes(target_values, target, filename)

    features, feature_names, encoding = [], [], {}
    for col in table.columns:
        if col == target or col in drop_columns:
            continue
        readers.check_no_missing(table, col, filename)
        values = table.cells[col]
        numbers = readers.as_numbers(values)
        if numbers is not None:
            features.append(numbers[:, None])
            feature_names.append(col)
            continue
        categories = sorted(set(values))
        if len(categories) > MAX_CATEGORIES:
            raise DataError(f"{filename}: column {col!r} is text with {len(categories)} distinct values (e.g. "
                            f"{values[0]!r}); one-hot encoding allows at most {MAX_CATEGORIES}; drop the column "
                            "(drop_columns) or upload it as a text+label CSV")
        encoding[col] = categories
        features.append((np.array(values)[:, None] == np.array(categories)[None, :]).astype(np.float64))
        feature_names += [f"{col}={c}" for c in categories]
    if not features:
        raise DataError(f"{filename}: no feature columns left besides the target {target!r}")
    x = np.concatenate(features, axis=1)
    train = split_indices(len(x), 0)["train"].numpy()
    mean, std = x[train].mean(0), x[train].std(0)
    std[std == 0] = 1.0
    x = ((x - mean) / std).astype(np.float32)

    def make_info(upload_id: str) -> DatasetInfo:
        what = f"{len(class_names)} classes" if class_names else "a number"
        return DatasetInfo(upload_id, name or filename, task, (x.shape[1],), "float32",
                           () if class_names else (1,), len(class_names) if class_names else None, class_names,
                           None, f"{table.rows} rows of {x.shape[1]} features -> {target!r} ({what}); "
                           f"uploaded CSV {filename}", "upload", split_sizes(len(x)))

    preprocessing = {"target": target, "features": feature_names, "mean": mean.tolist(), "std": std.tolist(),
                     "one_hot": encoding}
    options = {"target": target, "task": task, "drop_columns": list(drop_columns), "delimiter": delimiter}
    return _store("csv", filename, name, workspace, x, y, make_info, options, preprocessing)


# ---- zips of image folders ----------------------------------------------------------------------------------

def upload_image_zip(data: bytes, filename: str, *, image_size: int = 32, color: str = "grayscale",
                     name: str | None = None, workspace: str | Path | None = None) -> DatasetInfo:
    """A zip with one folder per class; images resized to image_size x image_size, grayscale or RGB.

    Files that are not images are skipped and counted (in the description and meta.json).
    """
    if color not in ("grayscale", "rgb"):
        raise DataError(f"color={color!r}; use 'grayscale' or 'rgb'")
    if not isinstance(image_size, int) or not 8 <= image_size <= 256:
        raise DataError(f"image_size={image_size!r}; use an integer from 8 to 256")
    folders = readers.read_image_zip(data, filename, image_size=image_size, mode="L" if color == "grayscale" else "RGB")
    _need_samples(len(folders.labels), filename, "images")
    n, c = folders.images.shape[:2]

    def make_info(upload_id: str) -> DatasetInfo:
        skipped = f"; {len(folders.skipped)} non-image files skipped" if folders.skipped else ""
        return DatasetInfo(upload_id, name or filename, "classification", (c, image_size, image_size), "float32",
                           (), len(folders.class_names), folders.class_names, None,
                           f"{n} {color} images {image_size}x{image_size} in {len(folders.class_names)} classes"
                           f"{skipped}; uploaded zip {filename}", "upload", split_sizes(n))

    options = {"image_size": image_size, "color": color}
    return _store("image_zip", filename, name, workspace, folders.images, folders.labels, make_info, options,
                  skipped=folders.skipped)


# ---- text ---------------------------------------------------------------------------------------------------

def upload_text(data: bytes, filename: str, *, seq_len: int = 64, name: str | None = None,
                workspace: str | Path | None = None) -> DatasetInfo:
    """A .txt for character-level language modelling: windows of seq_len characters, next-char targets."""
    if not isinstance(seq_len, int) or not 4 <= seq_len <= 4096:
        raise DataError(f"seq_len={seq_len!r}; use an integer from 4 to 4096")
    readers.check_size(data, filename)
    text = readers.decode_text(data, filename)
    vocab = sorted(set(text))
    if len(vocab) > MAX_VOCAB:
        raise DataError(f"{filename} uses {len(vocab)} distinct characters; the limit is {MAX_VOCAB}")
    x, y = char_windows(text, vocab, seq_len)
    if len(x) < MIN_SAMPLES:
        raise DataError(f"{filename} has {len(text):,} characters: with seq_len={seq_len} that makes {len(x)} "
                        f"sequences, at least {MIN_SAMPLES} are needed; upload more text or lower seq_len")

    def make_info(upload_id: str) -> DatasetInfo:
        return DatasetInfo(upload_id, name or filename, "language_model", (seq_len,), "int64", (seq_len,),
                           len(vocab), None, vocab, f"Next-character prediction on {len(text):,} characters; "
                           f"uploaded text {filename}", "upload", split_sizes(len(x)))

    return _store("text", filename, name, workspace, x.numpy(), y.numpy(), make_info, {"seq_len": seq_len})


def upload_text_csv(data: bytes, filename: str, *, text_column: str, label_column: str, max_len: int = 128,
                    max_vocab: int = 300, name: str | None = None, delimiter: str = ",",
                    workspace: str | Path | None = None) -> DatasetInfo:
    """A CSV of text and label for text classification: characters -> ids [max_len] (padded with
    `<pad>`, id 0; characters outside the `max_vocab` most frequent become `<unk>`, id 1)."""
    if not isinstance(max_len, int) or not 4 <= max_len <= 4096:
        raise DataError(f"max_len={max_len!r}; use an integer from 4 to 4096")
    table = readers.read_csv(data, filename, delimiter=delimiter)
    texts = table.require(text_column, "text")
    labels_raw = table.require(label_column, "label")
    readers.check_no_missing(table, label_column, filename)
    _need_samples(table.rows, filename, "data rows")
    y, class_names = _classes(labels_raw, label_column, filename)
    counts = Counter("".join(texts))
    vocab = [PAD, UNK] + sorted(ch for ch, _ in counts.most_common(max(1, min(max_vocab, MAX_VOCAB))))
    lookup = {ch: i for i, ch in enumerate(vocab)}
    x = np.zeros((len(texts), max_len), dtype=np.int64)  # PAD is id 0
    for i, text in enumerate(texts):
        ids = [lookup.get(ch, 1) for ch in text[:max_len]]
        x[i, :len(ids)] = ids
    truncated = sum(len(t) > max_len for t in texts)

    def make_info(upload_id: str) -> DatasetInfo:
        cut = f", {truncated} cut to {max_len} characters" if truncated else ""
        return DatasetInfo(upload_id, name or filename, "classification", (max_len,), "int64", (), len(class_names),
                           class_names, vocab, f"{table.rows} texts -> {label_column!r} ({len(class_names)} "
                           f"classes){cut}; uploaded CSV {filename}", "upload", split_sizes(len(x)))

    options = {"text_column": text_column, "label_column": label_column, "max_len": max_len,
               "max_vocab": max_vocab, "delimiter": delimiter}
    return _store("text_csv", filename, name, workspace, x, y, make_info, options)


def csv_columns(data: bytes, filename: str, *, delimiter: str = ",") -> list[dict]:
    """Column summaries for choosing a target: name, kind (number/text), distinct values, an example."""
    table = readers.read_csv(data, filename, delimiter=delimiter)
    return [{"name": c, "kind": "number" if readers.as_numbers(table.cells[c]) is not None else "text",
             "distinct": len(set(table.cells[c])), "example": table.cells[c][0]} for c in table.columns]
