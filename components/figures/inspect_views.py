"""Images for the Inspect page, as pure functions: numpy arrays in, PNG bytes out.

A feature-map grid, an attention overview or a saliency overlay is one PNG (tens of KB), never
dozens of chart traces: FIELD-NOTES measured a 12-head 128x128 attention figure at 2.5 MB of Plotly
JSON per redraw against about 60 KB for a 64-channel grid as an image. The colormap is viridis,
built from its published anchor colours (no matplotlib needed).

    >>> png = feature_grid_png(np.random.rand(16, 8, 8).astype(np.float32))
    >>> png[:4] == b"\\x89PNG"
    True
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# viridis at 0, 1/8, ..., 1 (matplotlib's _viridis_data sampled), interpolated to 256 colours
_VIRIDIS_ANCHORS = np.array([
    [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]], dtype=np.float64)
_xs = np.linspace(0.0, 1.0, len(_VIRIDIS_ANCHORS))
VIRIDIS = np.stack([np.interp(np.linspace(0, 1, 256), _xs, _VIRIDIS_ANCHORS[:, c]) for c in range(3)],
                   axis=1).round().astype(np.uint8)  # (256, 3)
MASKED_RGB = (214, 214, 214)   # attention cells a causal mask forbids
LABEL_H = 13
TEXT = "#111827"
PNG_LEVEL = 3                  # zlib level: level 9 costs ~3x the time for ~10% fewer bytes


def colorize(a: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Values -> viridis RGB uint8 (..., 3), scaled linearly from [lo, hi] (default: the array's range)."""
    a = np.asarray(a, dtype=np.float32)
    finite = np.isfinite(a)
    if lo is None or hi is None:
        vals = a[finite]
        lo = float(vals.min()) if vals.size else 0.0
        hi = float(vals.max()) if vals.size else 1.0
    span = hi - lo if hi > lo else 1.0
    idx = np.clip((np.where(finite, a, lo) - lo) / span * 255.0, 0, 255).astype(np.uint8)
    return VIRIDIS[idx]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def _font():
    return ImageFont.load_default()


def as_channel_maps(maps: np.ndarray) -> np.ndarray:
    """A per-sample feature map as (C, H, W): images stay, (C, L) signals become (C, 1, L), vectors
    (F,) become (F, 1, 1) so each feature is one cell."""
    a = np.asarray(maps, dtype=np.float32)
    if a.ndim == 3:
        return a
    if a.ndim == 2:
        return a[:, None, :]
    if a.ndim == 1:
        return a[:, None, None]
    return a.reshape(a.shape[0], a.shape[1], -1)


def channel_order(maps: np.ndarray, sort: str = "index") -> np.ndarray:
    """Channel indices in display order: "index", or "mean" / "max" activation, strongest first."""
    a = as_channel_maps(maps)
    if sort == "index":
        return np.arange(a.shape[0])
    flat = a.reshape(a.shape[0], -1)
    score = flat.mean(axis=1) if sort == "mean" else flat.max(axis=1)
    return np.argsort(-score, kind="stable")


def _tile_scale(h: int, w: int, target: int) -> tuple[int, int]:
    """Integer (nearest-neighbour) upscale of an h x w map towards `target` pixels on its long side."""
    sy = max(1, target // max(h, 1)) if w > 1 or h > 1 else target
    sx = max(1, target // max(w, 1))
    if h == 1 and w > 1:  # a 1-D signal: a strip, taller than one pixel
        sy = max(6, target // 6)
    if h == 1 and w == 1:
        sy = sx = max(12, target // 3)
    return sy, sx


def tile_for(channels: int) -> int:
    """Tile size in pixels for a grid of `channels` maps: few channels get bigger tiles."""
    return 128 if channels <= 8 else 96 if channels <= 32 else 64


def feature_grid_png(maps: np.ndarray, *, order: np.ndarray | None = None, columns: int | None = None,
                     tile: int = 64, normalize: str = "channel", labels: list[str] | None = None) -> bytes:
    """Every channel of one sample's feature map as a viridis tile in one PNG, labelled with its index.

    `maps` is (C, H, W), (C, L) or (F,); `order` picks and orders channels (see channel_order);
    `normalize` "channel" scales each tile to its own range (structure), "layer" shares one range
    (which channels are strong).
    """
    a = as_channel_maps(maps)
    order = np.arange(a.shape[0]) if order is None else np.asarray(order)
    a = a[order]
    c, h, w = a.shape
    if c == 0:
        raise ValueError("no channels to show")
    sy, sx = _tile_scale(h, w, tile)
    th, tw = h * sy, w * sx
    if columns is None:
        if h > 1:
            columns = int(np.ceil(np.sqrt(c)))   # images: a square-ish grid
        elif w > 1:
            columns = 1                           # 1-D signals: one strip per row
        else:
            columns = max(1, min(c, 16))          # vectors: one cell per feature
    rows = -(-c // columns)
    cell_w, cell_h = max(tw, 30) + 4, th + LABEL_H + 4
    if normalize == "layer":
        colored = colorize(a)
    else:
        flat = a.reshape(c, -1)
        lo, hi = flat.min(axis=1)[:, None, None], flat.max(axis=1)[:, None, None]
        colored = colorize((a - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)  # (C, h, w, 3)
    tiles = colored.repeat(sy, axis=1).repeat(sx, axis=2)  # (C, th, tw, 3)
    canvas = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for i in range(c):
        top = (i // columns) * cell_h + 2
        left = (i % columns) * cell_w + 2 + (cell_w - 4 - tw) // 2
        canvas[top:top + th, left:left + tw] = tiles[i]
    img = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(img)
    font = _font()
    names = labels if labels is not None else [f"ch {int(k)}" for k in order]
    for i in range(c):
        text = str(names[i])[:14]
        x0 = (i % columns) * cell_w + (cell_w - draw.textlength(text, font=font)) / 2
        draw.text((x0, (i // columns) * cell_h + 2 + th + 1), text, fill=TEXT, font=font)
    return _png(img)


def input_png(x: np.ndarray, *, size: int = 192) -> bytes | None:
    """A model input shown as an image: (1|3, H, W) in [0, 1] upscaled to about `size` px; a (C, L)
    or (T, F) input as a heat strip. None for token ids (the pages write them out as text)."""
    a = np.asarray(x)
    if a.dtype.kind in "iu":
        return None
    a = a.astype(np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:  # standardised images: stretch to the visible range
            a = (a - lo) / (hi - lo if hi > lo else 1.0)
        px = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
        img = Image.fromarray(px[0], "L") if a.shape[0] == 1 else Image.fromarray(px.transpose(1, 2, 0), "RGB")
        scale = max(1, size // max(a.shape[1:]))
        return _png(img.resize((a.shape[2] * scale, a.shape[1] * scale), Image.NEAREST))
    if a.ndim == 2 and a.shape[0] > a.shape[1]:
        a = a.T  # a (T, F) sequence: one strip per feature over time, like a (C, L) signal
    return feature_grid_png(as_channel_maps(a), normalize="layer", tile=size // 2)


def attention_grid_png(maps: list[tuple[str, np.ndarray]], *, causal: dict[str, bool] | None = None,
                       cell: int = 120, columns: int | None = None) -> bytes:
    """The BertViz "model view" as one PNG: one tile per (layer, head), each a T x T query-by-key map.

    `maps` is [(node_id, attention (heads, T, T))] in layer order: one row per layer, one column per
    head. Cells a causal mask forbids are drawn grey, so the mask is visible.
    """
    if not maps:
        raise ValueError("no attention maps to show")
    heads = max(m.shape[0] for _, m in maps)
    columns = columns or heads
    t = max(m.shape[-1] for _, m in maps)
    scale = max(1, cell // t)
    side = t * scale
    label_w = 0
    cell_w, cell_h = side + 8, side + LABEL_H + 8
    rows = len(maps)
    canvas = np.full((rows * cell_h, label_w + columns * cell_w, 3), 255, np.uint8)
    labels = []
    for r, (node_id, m) in enumerate(maps):
        tt = m.shape[-1]
        forbid = np.triu(np.ones((tt, tt), bool), 1) if (causal or {}).get(node_id) else np.zeros((tt, tt), bool)
        for h in range(m.shape[0]):
            rgb = colorize(m[h], 0.0, float(max(m[h].max(), 1e-6)))
            rgb[forbid] = MASKED_RGB
            tile = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
            top, left = r * cell_h + LABEL_H + 4, label_w + h * cell_w + 4
            canvas[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
            labels.append((left, r * cell_h + 2, f"{node_id} · head {h}"))
    img = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(img)
    font = _font()
    for left, top, text in labels:
        draw.text((left, top), text[: max(6, side // 6)], fill=TEXT, font=font)
    return _png(img)


def saliency_png(x: np.ndarray, sal: np.ndarray, *, size: int = 192, alpha: float = 0.55) -> bytes:
    """Three panels in one PNG: the input image, the saliency map (viridis) and the map over the input."""
    a = np.asarray(x, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if (lo < 0 or hi > 1) and hi > lo else np.clip(a, 0, 1)
    base = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a[:3]
    base = (base.transpose(1, 2, 0) * 255).astype(np.float32)  # (H, W, 3)
    heat = colorize(sal, 0.0, 1.0).astype(np.float32)
    weight = alpha * np.asarray(sal, np.float32)[..., None]
    over = base * (1 - weight) + heat * weight
    h, w = base.shape[:2]
    scale = max(1, size // max(h, w))
    panels = [p.clip(0, 255).astype(np.uint8).repeat(scale, 0).repeat(scale, 1) for p in (base, heat, over)]
    gap = 8
    ph, pw = panels[0].shape[:2]
    canvas = np.full((ph + LABEL_H + 4, 3 * pw + 2 * gap, 3), 255, np.uint8)
    for i, p in enumerate(panels):
        canvas[LABEL_H + 2:LABEL_H + 2 + ph, i * (pw + gap):i * (pw + gap) + pw] = p
    img = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(("input", "saliency", "overlay")):
        draw.text((i * (pw + gap) + 2, 1), text, fill=TEXT, font=_font())
    return _png(img)
