"""Figures of attributions, as pure functions: arrays in, PNG bytes, a Plotly figure or HTML out.

Attributions are signed (integrated gradients, SHAP, occlusion): red pushes the target's score up,
blue pushes it down, white is neutral, on a scale symmetric around 0 (the largest magnitude, or a limit
shared by panels shown side by side so their colours compare). Images get three panels in one PNG: the
input, the attribution, and the attribution over the input (its opacity set by the user and by the
attribution's magnitude). Tabular rows get bars with the feature names; token sequences get coloured
tokens.

    >>> png = attribution_png(np.random.rand(1, 8, 8), np.random.randn(1, 8, 8))
    >>> png[:4] == b"\\x89PNG"
    True
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from components.figures.inspect_views import LABEL_H, TEXT, _font, _png

# a diverging scale: blue (-1) -> white (0) -> red (+1), ColorBrewer RdBu's ends
_NEG = np.array([33, 102, 172], np.float32)
_POS = np.array([178, 24, 43], np.float32)
_MID = np.array([247, 247, 247], np.float32)
POSITIVE, NEGATIVE = "#b2182b", "#2166ac"


def attribution_map(attr: np.ndarray) -> np.ndarray:
    """A per-sample attribution as a 2-D map: images (C, H, W) summed over channels, (C, L) signals
    kept as C rows, rows (F,) as one row."""
    a = np.asarray(attr, np.float32)
    if a.ndim == 3:
        return a.sum(axis=0)
    return a if a.ndim == 2 else a.reshape(1, -1)


def signed_limit(*maps: np.ndarray) -> float:
    """The colour scale's half-width shared by several maps: their largest magnitude (1 when all are 0)."""
    m = max((float(np.abs(a).max()) for a in maps if np.asarray(a).size), default=0.0)
    return m if m > 0 else 1.0


def signed_colorize(a: np.ndarray, limit: float) -> np.ndarray:
    """Values in [-limit, limit] -> RGB uint8 (..., 3) on the blue-white-red scale."""
    t = np.clip(np.asarray(a, np.float32) / limit, -1.0, 1.0)[..., None]
    rgb = np.where(t >= 0, _MID + (_POS - _MID) * t, _MID + (_NEG - _MID) * (-t))
    return rgb.round().astype(np.uint8)


def _base_image(x: np.ndarray) -> np.ndarray:
    """The input as an (H, W, 3) float image in [0, 255] (grayscale repeated; other ranges rescaled)."""
    a = np.asarray(x, np.float32)
    if a.ndim == 1:
        a = a.reshape(1, 1, -1)
    elif a.ndim == 2:
        a = a[None]
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if (lo < 0 or hi > 1) and hi > lo else np.clip(a, 0, 1)
    base = np.repeat(a[:1], 3, axis=0) if a.shape[0] != 3 else a
    return base.transpose(1, 2, 0) * 255.0


def attribution_png(x: np.ndarray, attr: np.ndarray, *, opacity: float = 0.6, limit: float | None = None,
                    size: int = 192, title: str = "") -> bytes:
    """Input, signed attribution and overlay side by side in one PNG, with a colour bar from -limit to
    +limit under them. `opacity` scales the overlay (0: the input alone, 1: the attribution where it is
    strongest)."""
    m = attribution_map(attr)
    limit = limit or signed_limit(m)
    base = _base_image(x)
    if base.shape[:2] != m.shape:  # Grad-CAM and friends are already at input size; anything else is stretched
        m = np.asarray(Image.fromarray(m.astype(np.float32)).resize((base.shape[1], base.shape[0]), Image.NEAREST))
    heat = signed_colorize(m, limit).astype(np.float32)
    weight = opacity * np.clip(np.abs(m) / limit, 0, 1)[..., None]
    over = base * (1 - weight) + heat * weight
    h, w = base.shape[:2]
    scale = max(1, size // max(h, w))
    panels = [p.clip(0, 255).astype(np.uint8).repeat(scale, 0).repeat(scale, 1) for p in (base, heat, over)]
    gap, bar_h = 8, 10
    ph, pw = panels[0].shape[:2]
    width = 3 * pw + 2 * gap
    top = LABEL_H + 4 if title else 0
    canvas = np.full((top + LABEL_H + 2 + ph + 6 + bar_h + LABEL_H + 2, width, 3), 255, np.uint8)
    y0 = top + LABEL_H + 2
    for i, p in enumerate(panels):
        canvas[y0:y0 + ph, i * (pw + gap):i * (pw + gap) + pw] = p
    bar = signed_colorize(np.linspace(-limit, limit, width)[None, :].repeat(bar_h, 0), limit)
    yb = y0 + ph + 6
    canvas[yb:yb + bar_h] = bar
    img = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(img)
    font = _font()
    if title:
        draw.text((2, 1), title[: width // 6], fill=TEXT, font=font)
    for i, text in enumerate(("input", "attribution", "overlay")):
        draw.text((i * (pw + gap) + 2, top + 1), text, fill=TEXT, font=font)
    right = f"+{limit:.3g}"
    for text, xpos in ((f"-{limit:.3g}", 2), ("0", width // 2 - 3), (right, width - 6 * len(right) - 2)):
        draw.text((xpos, yb + bar_h + 2), text, fill=TEXT, font=font)
    return _png(img)


def saliency_map(attr: np.ndarray) -> np.ndarray:
    """A (H, W) map in [0, 1] from an image attribution: |attribution| summed over channels, min-max
    scaled (the Live inference view's quick Grad-CAM and gradient x input)."""
    a = np.abs(np.asarray(attr, np.float32))
    s = a.sum(axis=0) if a.ndim == 3 else a
    span = float(s.max() - s.min())
    return (s - s.min()) / span if span > 0 else np.zeros_like(s)


def feature_bars_figure(values: np.ndarray, names: list[str], *, title: str = "", limit: float | None = None,
                        top: int = 30) -> go.Figure:
    """Horizontal bars, one per feature (the `top` largest magnitudes, largest on top), red up / blue down."""
    v = np.asarray(values, np.float32).reshape(-1)
    order = np.argsort(-np.abs(v), kind="stable")[:top][::-1]
    fig = go.Figure(go.Bar(x=v[order], y=[names[i] for i in order], orientation="h",
                           marker_color=[POSITIVE if v[i] >= 0 else NEGATIVE for i in order],
                           hovertemplate="%{y}: %{x:.4g}<extra></extra>"))
    limit = limit or signed_limit(v)
    fig.update_layout(title=title or None, height=max(220, 26 * len(order) + 90), margin=dict(l=10, r=10, t=40, b=30),
                      xaxis=dict(range=[-1.05 * limit, 1.05 * limit], zeroline=True, title="attribution"),
                      yaxis=dict(automargin=True))
    return fig


def token_html(tokens: list[str], values: np.ndarray, *, limit: float | None = None,
               highlight: int | None = None) -> str:
    """Tokens as coloured chips (background from the signed scale, the value in the tooltip); the
    explained output position, if any, is underlined."""
    v = np.asarray(values, np.float32).reshape(-1)
    limit = limit or signed_limit(v)
    chips = []
    for i, (tok, val) in enumerate(zip(tokens, v, strict=True)):
        r, g, b = signed_colorize(np.array(val), limit).tolist()
        dark = abs(val) / limit > 0.6
        shown = html.escape(tok if tok.strip() else repr(tok)[1:-1] or "·")
        border = "border-bottom:3px solid #111827;" if i == highlight else ""
        chips.append(f'<span title="{i}: {html.escape(tok)} {val:+.4g}" style="background:rgb({r},{g},{b});'
                     f'color:{"#fff" if dark else "#111827"};padding:3px 5px;margin:2px;border-radius:4px;'
                     f'font-family:monospace;display:inline-block;{border}">{shown}</span>')
    return '<div style="line-height:2.1">' + "".join(chips) + "</div>"
