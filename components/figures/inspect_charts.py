"""Plotly figures for the Inspect and Compare pages, as pure functions: data in, `go.Figure` out.

Only small matrices go to Plotly (one attention head, one enlarged channel, a confusion matrix, a
histogram heatmap of 64 bins by the saved steps); grids of many maps are PNGs (inspect_views).

    >>> fig = confusion_figure(np.eye(3, dtype=int) * 5, ["a", "b", "c"])
    >>> sum(map(sum, fig.data[0].z))
    15
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from components.figures.charts import PALETTE
from components.text import safe_figure

HEIGHT = 340
MASK_COLOR = "#d6d6d6"
_MARGIN = {"l": 50, "r": 10, "t": 40, "b": 40}


def token_labels(ids, vocab: list[str] | None) -> list[str]:
    """Axis labels for a token sequence: each token with its position, "a (0)", "b (1)", ... (the position
    keeps repeated tokens apart: Plotly merges equal category labels)."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    words = [vocab[i] if vocab and 0 <= i < len(vocab) else str(i) for i in ids]
    return [f"{w!s} ({p})".replace("\n", "\\n") for p, w in enumerate(words)]


def _masked(att: np.ndarray, causal: bool) -> np.ndarray:
    a = np.asarray(att, dtype=np.float64).copy()
    if causal:
        a[np.triu(np.ones(a.shape, bool), 1)] = np.nan  # drawn in the plot background: the mask shows
    return a


def attention_figure(att: np.ndarray, labels: list[str] | None = None, *, causal: bool = False,
                     title: str = "Attention", height: int = 420) -> go.Figure:
    """One head's query-by-key heatmap (T, T); rows are queries, columns keys, labelled by token."""
    t = att.shape[-1]
    labels = labels or [str(i) for i in range(t)]
    fig = go.Figure(go.Heatmap(z=_masked(att, causal), x=labels, y=labels, colorscale="Viridis", zmin=0,
                               hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>",
                               colorbar={"title": {"text": "weight"}}))
    fig.update_layout(title={"text": title + (" (grey: masked by the causal mask)" if causal else ""),
                             "font": {"size": 14}}, height=height, margin=_MARGIN, plot_bgcolor=MASK_COLOR)
    fig.update_yaxes(autorange="reversed", title_text="query", type="category")
    fig.update_xaxes(title_text="key", type="category", tickangle=-60 if t > 16 else 0)
    return safe_figure(fig)


def attention_heads_figure(att: np.ndarray, labels: list[str] | None = None, *, causal: bool = False,
                           title: str = "All heads", columns: int = 4) -> go.Figure:
    """Every head of one layer (heads, T, T) as small heatmaps on one shared colour scale."""
    heads, t = att.shape[0], att.shape[-1]
    labels = labels or [str(i) for i in range(t)]
    columns = min(columns, heads)
    rows = -(-heads // columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[f"head {h}" for h in range(heads)],
                        horizontal_spacing=0.04, vertical_spacing=0.08)
    zmax = float(np.nanmax(att)) if att.size else 1.0
    for h in range(heads):
        fig.add_trace(go.Heatmap(z=_masked(att[h], causal), x=labels, y=labels, colorscale="Viridis", zmin=0,
                                 zmax=zmax, showscale=h == 0,
                                 hovertemplate=f"head {h}<br>query %{{y}}<br>key %{{x}}<br>weight %{{z:.3f}}"
                                               "<extra></extra>"), row=h // columns + 1, col=h % columns + 1)
    fig.update_yaxes(autorange="reversed", type="category", showticklabels=t <= 24)
    fig.update_xaxes(type="category", showticklabels=t <= 24)
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=260 * rows + 60, margin=_MARGIN,
                      plot_bgcolor=MASK_COLOR)
    return safe_figure(fig)


def channel_figure(channel: np.ndarray, *, title: str) -> go.Figure:
    """One channel enlarged, with its values on hover: (H, W) as a heatmap, (L,) as a line."""
    a = np.asarray(channel, dtype=np.float64)
    if a.ndim == 1 or (a.ndim == 2 and a.shape[0] == 1):
        fig = go.Figure(go.Scatter(y=a.reshape(-1), mode="lines", line={"color": PALETTE[0]}))
    else:
        fig = go.Figure(go.Heatmap(z=a, colorscale="Viridis", hovertemplate="y %{y}, x %{x}: %{z:.4g}<extra></extra>"))
        fig.update_yaxes(autorange="reversed", scaleanchor="x")
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=HEIGHT, margin=_MARGIN)
    return safe_figure(fig)


def histogram_heatmap_figure(steps: np.ndarray, edges: np.ndarray, counts: np.ndarray, *, title: str) -> go.Figure:
    """A distribution over training: x = step, y = value, colour = log(1 + count) of that value bin."""
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(go.Heatmap(x=[str(int(s)) for s in steps], y=centres, z=np.log1p(counts).T,
                               colorscale="Viridis", customdata=counts.T,
                               hovertemplate="step %{x}<br>value %{y:.4g}<br>count %{customdata:.0f}<extra></extra>",
                               colorbar={"title": {"text": "log(1+n)"}}))
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=HEIGHT, margin=_MARGIN)
    fig.update_xaxes(title_text="step", type="category")
    fig.update_yaxes(title_text="value")
    return safe_figure(fig)


def lines_figure(steps: np.ndarray, series: dict[str, np.ndarray], *, title: str, y_title: str,
                 log_y: bool = False, percent: bool = False) -> go.Figure:
    """One line per named series over the probe steps (gradient norms per layer, dead-ReLU fractions)."""
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        y = np.asarray(values, dtype=np.float64)
        if log_y:
            y = np.where(y > 0, y, np.nan)
        fig.add_trace(go.Scatter(x=steps, y=y * (100 if percent else 1), name=name, mode="lines+markers",
                                 line={"color": PALETTE[i % len(PALETTE)]}, marker={"size": 5}))
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=HEIGHT, margin=_MARGIN,
                      legend={"orientation": "h", "y": -0.25}, hovermode="x unified")
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear")
    if percent:
        fig.update_yaxes(range=[0, 100])
    return safe_figure(fig)


def confusion_figure(confusion: np.ndarray, class_names: list[str] | None, *, title: str = "Confusion matrix"
                     ) -> go.Figure:
    """Counts with rows = true class, columns = predicted class; the count is written in each cell."""
    c = np.asarray(confusion)
    names = list(class_names or [str(i) for i in range(c.shape[0])])
    counts = c.astype(np.int64).tolist()  # plain ints: small, and exact in the browser
    fig = go.Figure(go.Heatmap(z=counts, x=names, y=names, colorscale="Blues", text=counts, texttemplate="%{text}",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z} samples<extra></extra>"))
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=max(HEIGHT, 34 * len(names) + 120),
                      margin=_MARGIN)
    fig.update_yaxes(autorange="reversed", title_text="true", type="category")
    fig.update_xaxes(title_text="predicted", type="category")
    return safe_figure(fig)


def per_class_frame(precision: np.ndarray, recall: np.ndarray, support: np.ndarray,
                    class_names: list[str] | None) -> pd.DataFrame:
    names = list(class_names or [str(i) for i in range(len(support))])
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return pd.DataFrame({"class": names, "precision": precision, "recall": recall, "f1": f1, "support": support})


def regression_figure(true: np.ndarray, pred: np.ndarray, *, title: str = "Predicted vs true") -> go.Figure:
    """A scatter of predicted against true values (all output dimensions) with the y = x line."""
    t, p = np.asarray(true, np.float64).reshape(-1), np.asarray(pred, np.float64).reshape(-1)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    fig = go.Figure([go.Scattergl(x=t, y=p, mode="markers", marker={"size": 4, "color": PALETTE[0], "opacity": 0.6},
                                  name="samples"),
                     go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                                line={"color": PALETTE[1], "dash": "dash"})])
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=HEIGHT + 60, margin=_MARGIN,
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="true")
    fig.update_yaxes(title_text="predicted")
    return safe_figure(fig)


def probabilities_figure(probs: np.ndarray, class_names: list[str] | None, *, top: int = 20) -> go.Figure:
    """Horizontal bars of the class probabilities, most likely first (at most `top`)."""
    p = np.asarray(probs, np.float64)
    names = list(class_names or [str(i) for i in range(len(p))])
    order = np.argsort(-p)[:top][::-1]
    fig = go.Figure(go.Bar(x=p[order], y=[names[i] for i in order], orientation="h", marker_color=PALETTE[0],
                           text=[f"{p[i]:.1%}" for i in order], textposition="outside"))
    fig.update_layout(title={"text": "Class probabilities", "font": {"size": 14}},
                      height=max(200, 26 * len(order) + 80), margin=_MARGIN)
    fig.update_xaxes(range=[0, 1.1], tickformat=".0%")
    fig.update_yaxes(type="category")
    return safe_figure(fig)


def token_frame(x_ids, y_ids, pred_ids, vocab: list[str] | None) -> pd.DataFrame:
    """Rows input / target / predicted / right, one column per position, all as text (one dtype per
    column, so it converts to Arrow)."""
    def word(i):
        return vocab[int(i)] if vocab and 0 <= int(i) < len(vocab) else str(int(i))
    x, y, p = (np.asarray(a).reshape(-1) for a in (x_ids, y_ids, pred_ids))
    columns = {str(t): [word(x[t]) if t < len(x) else "", word(y[t]), word(p[t]), "✓" if y[t] == p[t] else "✗"]
               for t in range(len(p))}
    return pd.DataFrame(columns, index=["input", "target", "predicted", "right"])
