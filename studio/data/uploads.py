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
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from studio.data import readers
from studio.data.budget import check_prepared_size
from studio.data.types import UPLOAD_ID_RE, DatasetInfo, make_dataset, split_indices, split_sizes
from studio.errors import DataError
from studio.oserrors import describe_os_error

META_FORMAT = "studio.upload/1"
MAX_AUTO_CLASSES = 20  # an integer target with at most this many values is read as classes
MAX_CLASSES = 200
MAX_CATEGORIES = 20  # a text feature column with more distinct values is refused, not one-hot encoded
MAX_VOCAB = 5000
MIN_SAMPLES = 10  # enough for non-empty train, validation and test splits
PAD, UNK = "<pad>", "<unk>"
CHUNK_VALUES = 1 << 20  # values per chunk when a large array is built and written piece by piece


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


def _info(folder: Path, meta: dict) -> DatasetInfo:
    """meta.json's dataset info; a missing or mistyped field is a DataError naming the upload."""
    try:
        return DatasetInfo.from_dict(meta["info"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"upload {folder.name!r} is damaged: meta.json's dataset info cannot be read "
                        f"({type(e).__name__}: {e}); delete it and upload the file again") from None


def upload_info(upload_id: str, workspace: str | Path | None = None) -> DatasetInfo:
    folder = _folder(upload_id, workspace)
    return _info(folder, _read_meta(folder))


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
    except (OSError, ValueError, EOFError) as e:  # EOFError: an emptied .npy
        raise DataError(f"upload {upload_id!r} is damaged: cannot read its arrays ({e}); delete it and upload "
                        "the file again") from None
    return make_dataset(_info(folder, meta), x, y, seed)


def _new_id(root: Path, name: str) -> str:
    base = "upload_" + readers.slug(name)
    upload_id, k = base, 2
    while (root / upload_id).exists():
        upload_id, k = f"{base}_{k}", k + 1
    return upload_id


class NpyWriter:
    """Write one .npy array chunk by chunk (header first, then rows), so a large dataset is built with
    a chunk in memory rather than the whole array. Plain file writes, not a memory map: a full disk
    is an OSError to report, never a SIGBUS."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype):
        self.shape, self.dtype, self.rows = tuple(shape), np.dtype(dtype), 0
        self._file = open(path, "wb")  # noqa: SIM115 (closed by __exit__, also on error)
        np.lib.format.write_array_header_1_0(
            self._file, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                         "shape": self.shape})

    def write(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        if chunk.shape[1:] != self.shape[1:] or self.rows + len(chunk) > self.shape[0]:
            raise ValueError(f"chunk {chunk.shape} does not fit the array {self.shape} after {self.rows} rows")
        self._file.write(chunk.tobytes())
        self.rows += len(chunk)

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, kind, error, tb) -> None:
        self._file.close()
        if kind is None and self.rows != self.shape[0]:
            raise ValueError(f"wrote {self.rows} rows of an array of {self.shape[0]}")


@contextmanager
def _staging(workspace):
    """A temp folder under uploads/ to build an upload in; removed if anything fails (nothing half-made
    stays behind), and OS failures (disk full, read-only workspace) become DataErrors saying what to do."""
    root = uploads_dir(workspace)
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        yield tmp
    except OSError as e:
        raise DataError(describe_os_error(e, "save the upload", root)
                        + "; datasets uploaded before are unchanged") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _commit(tmp: Path, kind: str, filename: str, name: str | None, workspace, make_info, options: dict,
            preprocessing: dict | None = None, skipped: list[str] | None = None) -> DatasetInfo:
    """Write meta.json next to the arrays in `tmp`, then rename the folder into place (all or nothing)."""
    root = uploads_dir(workspace)
    upload_id = _new_id(root, name or filename)
    info = make_info(upload_id)
    meta = {"format": META_FORMAT, "kind": kind, "filename": filename, "options": options,
            "preprocessing": preprocessing or {}, "skipped": skipped or [], "info": info.to_dict()}
    with open(tmp / "meta.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, indent=1))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, root / upload_id)
    return info


def _store(kind: str, filename: str, name: str | None, workspace, x: np.ndarray, y: np.ndarray,
           make_info, options: dict, preprocessing: dict | None = None, skipped: list[str] | None = None
           ) -> DatasetInfo:
    """Write arrays already in memory and meta.json into a temp folder, then rename it into place."""
    with _staging(workspace) as tmp:
        np.save(tmp / "x.npy", x, allow_pickle=False)
        np.save(tmp / "y.npy", y, allow_pickle=False)
        return _commit(tmp, kind, filename, name, workspace, make_info, options, preprocessing, skipped)


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

    # Plan the columns first (numbers, or one-hot categories), so the prepared size is known before
    # anything is allocated; then fill one float32 array column by column.
    plan, feature_names, encoding = [], [], {}
    for col in table.columns:
        if col == target or col in drop_columns:
            continue
        readers.check_no_missing(table, col, filename)
        values = table.cells[col]
        numbers = readers.as_numbers(values)
        if numbers is not None:
            plan.append((col, None))
            feature_names.append(col)
            continue
        categories = sorted(set(values))
        if len(categories) > MAX_CATEGORIES:
            raise DataError(f"{filename}: column {col!r} is text with {len(categories)} distinct values (e.g. "
                            f"{values[0]!r}); one-hot encoding allows at most {MAX_CATEGORIES}; drop the column "
                            "(drop_columns) or upload it as a text+label CSV")
        encoding[col] = categories
        plan.append((col, categories))
        feature_names += [f"{col}={c}" for c in categories]
    if not plan:
        raise DataError(f"{filename}: no feature columns left besides the target {target!r}")
    width = len(feature_names)
    check_prepared_size(table.rows * width * 4 + y.nbytes, f"{table.rows:,} rows x {width:,} features x 4 bytes",
                        filename, "drop columns (drop_columns) or upload fewer rows")
    # Standardised with the training split's statistics, one float64 column at a time.
    train = split_indices(table.rows, 0)["train"].numpy()
    x = np.empty((table.rows, width), dtype=np.float32)
    mean, std = np.zeros(width), np.ones(width)
    j = 0
    for col, categories in plan:
        values = table.cells[col]
        if categories is None:
            columns = [readers.as_numbers(values)]
        else:
            index = {c: k for k, c in enumerate(categories)}
            codes = np.array([index[v] for v in values])
            columns = [(codes == k).astype(np.float64) for k in range(len(categories))]
        for column in columns:
            mean[j], sd = column[train].mean(), column[train].std()
            std[j] = sd if sd != 0 else 1.0
            x[:, j] = (column - mean[j]) / std[j]
            j += 1

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
    images = readers.open_image_zip(data, filename)
    _need_samples(len(images), filename, "images")
    n, c = len(images), 1 if color == "grayscale" else 3
    check_prepared_size(n * c * image_size * image_size, f"{n:,} images x {c} x {image_size} x {image_size} bytes",
                        filename, "choose a smaller image size or upload fewer images")

    def make_info(upload_id: str) -> DatasetInfo:
        skipped = f"; {len(images.skipped)} non-image files skipped" if images.skipped else ""
        return DatasetInfo(upload_id, name or filename, "classification", (c, image_size, image_size), "float32",
                           (), len(images.class_names), images.class_names, None,
                           f"{n} {color} images {image_size}x{image_size} in {len(images.class_names)} classes"
                           f"{skipped}; uploaded zip {filename}", "upload", split_sizes(n))

    options = {"image_size": image_size, "color": color}
    with _staging(workspace) as tmp:
        with NpyWriter(tmp / "x.npy", (n, c, image_size, image_size), np.uint8) as x:
            for chunk in images.chunks(image_size, "L" if color == "grayscale" else "RGB"):
                x.write(chunk)
        np.save(tmp / "y.npy", images.labels, allow_pickle=False)
        return _commit(tmp, "image_zip", filename, name, workspace, make_info, options, skipped=images.skipped)


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
    n = (len(text) - 1) // seq_len  # non-overlapping windows (builtin.char_windows), next-char targets
    if n < MIN_SAMPLES:
        raise DataError(f"{filename} has {len(text):,} characters: with seq_len={seq_len} that makes {n} "
                        f"sequences, at least {MIN_SAMPLES} are needed; upload more text or lower seq_len")
    check_prepared_size(2 * n * seq_len * 8, f"inputs and targets: 2 x {n:,} windows x {seq_len} ids x 8 bytes",
                        filename, "upload less text")

    def make_info(upload_id: str) -> DatasetInfo:
        return DatasetInfo(upload_id, name or filename, "language_model", (seq_len,), "int64", (seq_len,),
                           len(vocab), None, vocab, f"Next-character prediction on {len(text):,} characters; "
                           f"uploaded text {filename}", "upload", split_sizes(n))

    lookup = {ch: i for i, ch in enumerate(vocab)}
    rows = max(1, CHUNK_VALUES // seq_len)  # windows per chunk
    with _staging(workspace) as tmp:
        with (NpyWriter(tmp / "x.npy", (n, seq_len), np.int64) as x,
              NpyWriter(tmp / "y.npy", (n, seq_len), np.int64) as y):
            for start in range(0, n, rows):
                stop = min(n, start + rows)
                piece = text[start * seq_len: stop * seq_len + 1]
                ids = np.fromiter((lookup[ch] for ch in piece), dtype=np.int64, count=len(piece))
                x.write(ids[:-1].reshape(-1, seq_len))
                y.write(ids[1:].reshape(-1, seq_len))
        return _commit(tmp, "text", filename, name, workspace, make_info, {"seq_len": seq_len})


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
    n = table.rows
    check_prepared_size(n * max_len * 8 + y.nbytes, f"{n:,} texts x max_len {max_len:,} ids x 8 bytes", filename,
                        "lower max_len or upload fewer rows")
    counts: Counter = Counter()
    for text in texts:  # text by text: no joined copy of the whole column
        counts.update(text)
    vocab = [PAD, UNK] + sorted(ch for ch, _ in counts.most_common(max(1, min(max_vocab, MAX_VOCAB))))
    lookup = {ch: i for i, ch in enumerate(vocab)}
    truncated = sum(len(t) > max_len for t in texts)
    def make_info(upload_id: str) -> DatasetInfo:
        cut = f", {truncated} cut to {max_len} characters" if truncated else ""
        return DatasetInfo(upload_id, name or filename, "classification", (max_len,), "int64", (), len(class_names),
                           class_names, vocab, f"{table.rows} texts -> {label_column!r} ({len(class_names)} "
                           f"classes){cut}; uploaded CSV {filename}", "upload", split_sizes(n))

    options = {"text_column": text_column, "label_column": label_column, "max_len": max_len,
               "max_vocab": max_vocab, "delimiter": delimiter}
    rows = max(1, CHUNK_VALUES // max_len)  # texts per chunk
    with _staging(workspace) as tmp:
        with NpyWriter(tmp / "x.npy", (n, max_len), np.int64) as x:
            for start in range(0, n, rows):
                chunk = np.zeros((min(rows, n - start), max_len), dtype=np.int64)  # PAD is id 0
                for i, text in enumerate(texts[start:start + rows]):
                    ids = [lookup.get(ch, 1) for ch in text[:max_len]]
                    chunk[i, :len(ids)] = ids
                x.write(chunk)
        np.save(tmp / "y.npy", y, allow_pickle=False)
        return _commit(tmp, "text_csv", filename, name, workspace, make_info, options)


def csv_columns(data: bytes, filename: str, *, delimiter: str = ",") -> list[dict]:
    """Column summaries for choosing a target: name, kind (number/text), distinct values, an example."""
    table = readers.read_csv(data, filename, delimiter=delimiter)
    return [{"name": c, "kind": "number" if readers.as_numbers(table.cells[c]) is not None else "text",
             "distinct": len(set(table.cells[c])), "example": table.cells[c][0]} for c in table.columns]
