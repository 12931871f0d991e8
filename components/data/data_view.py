"""Dataset previews as a user expects them for each kind of data: an image grid with labels (one PNG,
not hundreds of traces), the head of a table, token sequences written out through the vocabulary,
a plot of a few series; the per-class counts behind the class-balance chart; and the text and tables
the Data page shows around them (a dataset's label in the picker, its target, the kinds of upload).

Pure functions on a loaded `studio.data.Dataset` or its `DatasetInfo`; the Data page only lays the
results out.

    >>> kind = preview_kind(ds.info)                      # doctest: +SKIP
    >>> png = image_grid_png(ds.train.x[:32], labels)     # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont

from studio.data.downloads import is_downloaded
from studio.data.uploads import upload_csv, upload_image_zip, upload_text, upload_text_csv, uploads_dir

TILE = 64          # pixels per image tile: small images are scaled up (nearest) so they can be seen
LABEL_HEIGHT = 14  # pixels under each tile for each line of its caption
MAX_CAPTION = 16   # characters of a caption line shown
PAD_TOKENS = ("<pad>",)
SOURCES = {"builtin": "built in", "download": "download", "upload": "upload"}


def preview_kind(info) -> str:
    """How to show a dataset's samples: "image", "tokens", "series" or "table"."""
    if info.is_image:
        return "image"
    if info.input_dtype == "int64":
        return "tokens"
    if len(info.input_shape) == 2:
        return "series"
    return "table"


def dataset_label(dataset_id: str, options: dict | None = None) -> str:
    """A dataset id with the options it is loaded with, e.g. "shapes · target = input (reconstruction)
    · image_size = 28"; the bare id when there are none."""
    opts = dict(options or {})
    parts = [dataset_id]
    if "target" in opts:
        target = opts.pop("target")
        parts.append(f"target = {target}" + (" (reconstruction)" if target == "input" else ""))
    parts += [f"{k} = {v}" for k, v in opts.items()]
    return " · ".join(parts)


def choice_label(info, workspace: Path) -> str:
    """A dataset as the picker lists it: name, id, task and where it comes from (whether a download
    is already in `workspace`)."""
    where = SOURCES.get(info.source, info.source)
    if info.source == "download":
        where = "downloaded" if is_downloaded(info.id, workspace) else "download on first use"
    return f"{info.name} ({info.id}) · {info.task} · {where}"


def target_text(info) -> str:
    """What a dataset's target is, e.g. "10 classes", "(1, 28, 28) float" or "(64, 65)"."""
    if info.task == "classification":
        return f"{info.num_classes} classes"
    if info.task == "regression":
        return f"{tuple(info.target_shape)} float"
    return f"{tuple(info.output_shape)}"


def cache_version(info, workspace: Path) -> float:
    """A number that changes when the dataset's files do (an upload's folder time; 0 for the others), so a
    cache keyed by it never serves a deleted and re-uploaded dataset."""
    if info.source != "upload":
        return 0.0
    folder = uploads_dir(workspace) / info.id
    return folder.stat().st_mtime if folder.exists() else 0.0


def target_label(info, y) -> str:
    """A sample's target as text: the class name, the token text or the number(s)."""
    if info.task == "classification":
        k = int(y)
        return info.class_names[k] if info.class_names and 0 <= k < len(info.class_names) else str(k)
    if info.task in ("sequence", "language_model"):
        return token_text(y, info.vocab)
    values = np.asarray(y, dtype=np.float64).reshape(-1)
    return ", ".join(f"{v:.4g}" for v in values)


# ---- images ---------------------------------------------------------------------------------------

def image_grid_png(images, captions: list, *, columns: int = 8, tile: int = TILE) -> bytes:
    """One PNG with `images` (N, C, H, W) laid out in a grid, each with its caption under it.

    A caption is a string or a tuple of lines; lines after the first are drawn in red (e.g. the
    predicted class under the true one). Images in [0, 1] are drawn as they are, others scaled to
    their own range. One or three channels are drawn as grayscale or RGB; other counts show channel 0.
    """
    x = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError("no images to show")
    lines = [(str(cap),) if isinstance(cap, str) else tuple(map(str, cap)) for cap in captions[:n]]
    lines += [("",)] * (n - len(lines))
    depth = max(len(ln) for ln in lines)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    scale = max(1, tile // max(h, w))
    th, tw = h * scale, w * scale
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max(measure.textlength(t[:MAX_CAPTION], font=font) for ln in lines for t in ln)
    cell_w, cell_h = int(max(tw, widest, 48)) + 6, th + depth * LABEL_HEIGHT + 6
    sheet = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for i in range(n):
        img = x[i]
        lo, hi = float(img.min()), float(img.max())
        if lo < 0 or hi > 1:
            img = (img - lo) / (hi - lo if hi > lo else 1.0)
        rgb = img[:3] if c == 3 else np.repeat(img[:1], 3, axis=0)
        px = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0).repeat(scale, 0).repeat(scale, 1)
        top, left = (i // columns) * cell_h + 3, (i % columns) * cell_w + (cell_w - tw) // 2
        sheet[top:top + th, left:left + tw] = px
    out = Image.fromarray(sheet, "RGB")
    draw = ImageDraw.Draw(out)
    for i, caption in enumerate(lines):
        for j, text in enumerate(caption):
            text = text[:MAX_CAPTION]
            x0 = (i % columns) * cell_w + (cell_w - draw.textlength(text, font=font)) / 2
            draw.text((x0, (i // columns) * cell_h + 3 + th + 2 + j * LABEL_HEIGHT), text,
                      fill="#111827" if j == 0 else "#b91c1c", font=font)
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ---- tables -------------------------------------------------------------------------------------------

def table_head(x, y, info, *, n: int = 10, feature_names: list[str] | None = None) -> pd.DataFrame:
    """The first `n` samples of a tabular split, one column per feature, then the target."""
    xs = np.asarray(x[:n], dtype=np.float64).reshape(min(n, len(x)), -1)
    names = list(feature_names or [])
    if len(names) != xs.shape[1]:
        names = [f"x{i}" for i in range(xs.shape[1])]
    frame = pd.DataFrame(xs, columns=names)
    frame["target"] = [target_label(info, t) for t in y[:n]]
    return frame


# ---- tokens -----------------------------------------------------------------------------------------

def token_text(ids, vocab: list[str] | None) -> str:
    """Token ids as text: characters joined as they are, longer tokens separated by spaces; padding
    at the end is left out, and newlines are shown as ⏎ so a sequence stays on one line."""
    values = [int(v) for v in np.asarray(ids).reshape(-1)]
    if not vocab:
        return " ".join(map(str, values))
    tokens = [vocab[v] if 0 <= v < len(vocab) else f"<{v}?>" for v in values]
    while tokens and tokens[-1] in PAD_TOKENS:
        tokens.pop()
    single = all(len(t) == 1 for t in tokens if t not in PAD_TOKENS)
    text = ("" if single else " ").join(tokens)
    return text.replace("\n", "⏎")


def token_rows(x, y, info, *, n: int = 8) -> pd.DataFrame:
    """The first `n` samples of a token dataset as text: the input and the target side by side."""
    return pd.DataFrame({
        "input": [token_text(s, info.vocab) for s in x[:n]],
        "target": [target_label(info, t) for t in y[:n]],
    })


# ---- series -----------------------------------------------------------------------------------------

def series_samples(x, y, info, *, n: int = 4) -> tuple[list[np.ndarray], list[str]]:
    """The first `n` samples of a (T, F) dataset and their labels, for charts.series_preview_figure."""
    k = min(n, len(x))
    samples = [np.asarray(x[i], dtype=np.float64) for i in range(k)]
    labels = [f"#{i} → {target_label(info, y[i])}" for i in range(k)]
    return samples, labels


# ---- class balance ------------------------------------------------------------------------------------

def class_counts(dataset) -> dict[str, list[int]]:
    """Samples per class in each non-empty split of a classification dataset."""
    k = dataset.info.num_classes or 0
    out = {}
    for name in ("train", "val", "test"):
        y = dataset.split(name).y
        if len(y):
            out[name] = torch.bincount(y.reshape(-1).long(), minlength=k).tolist()
    return out


# ---- uploads ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UploadKind:
    """One kind of upload the Data page offers: the files it takes and the studio function that reads them."""

    files: tuple[str, ...]     # file name extensions the uploader accepts
    upload: Callable           # studio.data.uploads' function: (bytes, filename, *, name, **options) -> DatasetInfo
    needs_columns: bool = False  # a CSV: its columns are read first, to choose the target among them

    def default(self, option: str):
        """The upload function's own default for `option` (the form starts from it).

        >>> UPLOAD_KINDS["Text (.txt)"].default("seq_len")
        64
        """
        return inspect.signature(self.upload).parameters[option].default


UPLOAD_KINDS = {
    "CSV table": UploadKind(("csv",), upload_csv, needs_columns=True),
    "Image folders (zip)": UploadKind(("zip",), upload_image_zip),
    "Text (.txt)": UploadKind(("txt",), upload_text),
    "Text + label CSV": UploadKind(("csv",), upload_text_csv, needs_columns=True),
}


def tokenizer_runs() -> dict[str, str]:
    """{run id: its label} of the runs holding a tokenizer.json of their own (an imported GPT-2): a text upload
    can be tokenized with it, to fine-tune that run on the text."""
    from studio.runs import list_runs, run_dir

    return {r.id: f"{r.name} ({r.id})" for r in list_runs() if (run_dir(r.id) / "tokenizer.json").is_file()}


def text_upload(tokenizer_run: str | None) -> Callable:
    """The function that reads a .txt upload: by characters, or with `tokenizer_run`'s tokenizer.json."""
    if tokenizer_run is None:
        return upload_text
    from functools import partial

    from studio.data.token_upload import upload_tokenized_text
    from studio.runs import run_dir

    return partial(upload_tokenized_text, tokenizer=(run_dir(tokenizer_run) / "tokenizer.json").read_bytes())
