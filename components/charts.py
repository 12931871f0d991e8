"""Figures for the Data and Train pages, as pure functions: data in, `plotly.graph_objects.Figure` out.

Training curves are smoothed with TensorBoard's debiased exponential moving average and downsampled
on the server (min/max buckets, components.downsample) before they are put in a figure, so a run
with a million logged steps still sends about a thousand points per trace to the browser.
`MetricHistory` is the incremental reader that feeds them: it keeps what it already read from the
run store and asks only for the steps after the last one it saw.

    >>> fig = metric_figure([Curve("run-a", "train", np.arange(5), np.ones(5))], title="loss")
    >>> len(fig.data)  # the raw curve (faint) and its smoothed line
    2
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
from scipy.signal import lfilter  # scipy ships with scikit-learn

from components.downsample import MAX_POINTS, downsample
from components.safe_text import safe_figure

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d",
           "#475569", "#b45309")
X_AXES = {"step": "step", "epoch": "epoch", "wall": "wall time (s)"}  # axis titles
X_AXIS_CHOICES = {"step": "step", "epoch": "epoch", "wall": "wall time"}  # the pages' x axis control
CHART_HEIGHT = 300
MARGIN = {"l": 50, "r": 10, "t": 40, "b": 40}
# Anchored to the bottom of the whole figure (not the plot), so plotly reserves room for the legend
# below the x axis title instead of drawing it on top of that title.
LEGEND_BELOW = {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0, "xanchor": "left"}


# ---- smoothing -------------------------------------------------------------------------------------

def ema(values, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average divided by (1 - weight**n) so the
    first points are not pulled towards zero. Non-finite values pass through and do not count.

    >>> ema([1.0, 1.0, 1.0], 0.9).tolist()
    [1.0, 1.0, 1.0]
    """
    y = np.asarray(values, dtype=np.float64)
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    if weight == 0.0 or len(y) == 0:
        return y.copy()
    finite = np.isfinite(y)
    all_finite = bool(finite.all())
    if not all_finite and not finite.any():
        return y.copy()
    acc = lfilter([1.0 - weight], [1.0, -weight], y if all_finite else y[finite])  # w * s[i-1] + (1 - w) * y[i]
    # Debias by 1 - w**count; past `k` points that factor is 1.0 in float64, so only the head is divided.
    k = min(len(acc), int(np.ceil(40.0 / -np.log(weight))) + 1)
    acc[:k] /= -np.expm1(np.arange(1, k + 1) * np.log(weight))
    if all_finite:
        return acc
    out = y.copy()
    out[finite] = acc
    return out


# ---- training curves -------------------------------------------------------------------------------

@dataclass
class Curve:
    """One series of one run: `run` names the run (legend and colour), `split` is train or val."""

    run: str
    split: str
    x: np.ndarray
    y: np.ndarray
    color_index: int = 0


def plain_values(a, digits: int = 7) -> list:
    """A short JSON-friendly list: integers stay integers, floats keep `digits` significant digits.

    Plain lists (not numpy arrays, which plotly would send as base64 'bdata') keep `trace.x.length`
    readable in the browser, and the rounding keeps each number a few characters long.
    """
    a = np.asarray(a)
    if a.dtype.kind in "iub" or (a.dtype.kind == "f" and len(a) and np.all(a == np.round(a))
                                 and np.all(np.abs(a) < 2**53)):
        return a.astype(np.int64).tolist()
    a = a.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log10(np.abs(a)))
        scale = 10.0 ** np.where(np.isfinite(exponent), digits - 1 - exponent, 0)
        rounded = np.round(a * scale) / scale
    return np.where(np.isfinite(rounded), rounded, a).tolist()


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def metric_figure(curves: list[Curve], *, title: str, smoothing: float = 0.6, log_y: bool = False,
                  x_axis: str = "step", max_points: int = MAX_POINTS, height: int = CHART_HEIGHT,
                  bounds: tuple[float, float] | None = None) -> go.Figure:
    """A line chart of curves. Train curves draw the raw values faintly and the smoothed line on top;
    validation curves (a point per evaluation) draw as lines with markers, unsmoothed.

    Every trace holds at most `max_points` points (min/max buckets, the last point kept). `bounds` is
    the metric's own range (an accuracy lives in (0, 1)): the y axis never reaches past it while the
    values stay inside it.
    """
    fig = go.Figure()
    show_run = len({c.run for c in curves}) > 1
    for c in curves:
        color = PALETTE[c.color_index % len(PALETTE)]
        x, y = np.asarray(c.x), np.asarray(c.y, dtype=np.float64)
        if log_y:  # a log axis cannot show values <= 0; they become gaps, not errors
            y = np.where(y > 0, y, np.nan)
        name = f"{c.run} · {c.split}" if show_run else c.split
        if c.split == "val" or len(y) < 3:
            xs, ys = downsample(x, y, max_points)
            fig.add_trace(go.Scatter(x=plain_values(xs), y=plain_values(ys), name=name, mode="lines+markers",
                                     legendgroup=name, line={"color": color, "dash": "dash"}, marker={"size": 5}))
            continue
        xs, ys = downsample(x, y, max_points)
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=plain_values(xs), y=plain_values(ys), name=f"{name} (raw)", mode="lines",
                                     legendgroup=name, showlegend=False, hoverinfo="skip",
                                     line={"color": _rgba(color, 0.25), "width": 1}))
            xs, ys = downsample(x, ema(y, smoothing), max_points)
        fig.add_trace(go.Scatter(x=plain_values(xs), y=plain_values(ys), name=name, mode="lines",
                                 legendgroup=name, line={"color": color, "width": 2}))
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height, margin=MARGIN,
                      hovermode="x unified", legend=LEGEND_BELOW, uirevision=title)
    fig.update_xaxes(title_text=X_AXES.get(x_axis, x_axis))
    if x_axis == "step":
        fig.update_xaxes(**_integer_ticks([c.x for c in curves]))
    fig.update_yaxes(tickformat="~g")
    finite = np.concatenate([np.asarray(c.y, dtype=np.float64) for c in curves] or [np.zeros(0)])
    finite = finite[np.isfinite(finite)]
    if log_y:
        fig.update_yaxes(type="log")
    elif bounds is not None and len(finite) and bounds[0] <= finite.min() and finite.max() <= bounds[1]:
        lo, hi = finite.min(), finite.max()
        pad = 0.05 * (bounds[1] - bounds[0])
        fig.update_yaxes(range=[max(bounds[0], lo - pad), min(bounds[1], hi + pad)])
        fig.update_traces(cliponaxis=False)  # a marker at exactly 1.0 sits on the edge: draw all of it
    elif len(finite) and finite.min() == finite.max() != 0:  # a constant (e.g. the lr): centre it
        c = abs(finite[0])
        fig.update_yaxes(range=[finite[0] - c, finite[0] + c])
    return safe_figure(fig)


def _integer_ticks(xs: list) -> dict:
    """Axis settings that keep step ticks on whole numbers: with a few steps (one evaluation) plotly
    would otherwise label 349.5 and 350.5."""
    values = np.concatenate([np.asarray(x, dtype=np.float64) for x in xs] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    if len(values) and values.max() - values.min() < 10:
        return {"tickmode": "linear", "tick0": 0, "dtick": 1, "tickformat": "d"}
    return {"tickformat": "d"}


# ---- reading the store incrementally ------------------------------------------------------------

class _Column:
    """A growable float64 array (amortised doubling), so appending new points is O(new)."""

    def __init__(self):
        self._data = np.empty(256)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.size + len(values)
        if need > len(self._data):
            grown = np.empty(max(need, 2 * len(self._data)))
            grown[:self.size] = self._data[:self.size]
            self._data = grown
        self._data[self.size:need] = values
        self.size = need

    @property
    def values(self) -> np.ndarray:
        return self._data[:self.size]


@dataclass
class MetricHistory:
    """Every metric of one run read so far, per key: step, epoch, wall time and value columns.

    `update(store)` reads only rows with step > `last_step` (the store commits whole steps, so this
    never misses a row). `started` is the run's start time when read: a resumed run restarts and
    may rewrite steps after its checkpoint, so the page drops a history whose run has a new start.
    """

    run_id: str
    started: float | None = None
    last_step: int = -1
    columns: dict = field(default_factory=dict)  # key -> {"step", "epoch", "wall", "value"}: _Column
    split_of: dict = field(default_factory=dict)  # key -> "train" | "val" | ...

    def update(self, store) -> int:
        """Append the rows logged since the last read; returns how many rows were new."""
        read = store.read_metric_table(self.run_id, since_step=self.last_step)
        if read is None:
            return 0
        found, table, upto = read
        for i, (key, split) in enumerate(found):
            part = table[table[:, 4] == i]
            cols = self.columns.setdefault(key, {c: _Column() for c in ("step", "epoch", "value", "wall")})
            for j, name in enumerate(("step", "epoch", "value", "wall")):
                cols[name].extend(part[:, j])
            self.split_of.setdefault(key, split)
        self.last_step = upto
        return len(table)

    def keys(self) -> list[str]:
        return list(self.columns)

    def points(self, key: str) -> int:
        return self.columns[key]["value"].size if key in self.columns else 0

    def steps_per_epoch(self) -> float | None:
        """Optimizer steps per epoch: the last step logged in epoch 0, once epoch 1 has begun."""
        for cols in self.columns.values():
            epoch, step = cols["epoch"].values, cols["step"].values
            if len(epoch) and epoch[0] == 0 and epoch[-1] > 0:
                return float(step[epoch == 0].max())
        return None

    def series(self, key: str, x_axis: str = "step", steps_per_epoch: float | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of one key, x by step, fractional epoch or seconds since the first logged row."""
        cols = self.columns[key]
        y = cols["value"].values
        if x_axis == "step":
            return cols["step"].values, y
        if x_axis == "epoch":
            spe = steps_per_epoch or self.steps_per_epoch()
            if spe:
                return cols["step"].values / spe, y
            return cols["epoch"].values, y
        if x_axis == "wall":
            origin = min(c["wall"].values[0] for c in self.columns.values() if c["wall"].size)
            return cols["wall"].values - origin, y
        raise ValueError(f"x_axis={x_axis!r}; use one of {', '.join(X_AXES)}")


def chart_layout(keys: list[str]) -> list[tuple[str, list[str]]]:
    """(title, metric keys) per chart of a run's keys: loss (train and val together), each other
    train/val metric, learning rate, throughput, gradient norm."""
    charts = [("Loss", [k for k in ("train_loss", "val_loss") if k in keys])]
    charts += [(_sentence_case(k.removeprefix("val_").replace("_", " ")), [k]) for k in keys
               if k.startswith(("val_", "train_")) and k not in ("train_loss", "val_loss")]
    charts += [(title, [k]) for k, title in (("lr", "Learning rate"), ("samples_per_sec", "Throughput (samples/s)"),
                                             ("grad_norm", "Gradient norm")) if k in keys]
    return [c for c in charts if c[1]]


def _sentence_case(text: str) -> str:
    """'token accuracy' -> 'Token accuracy' (str.capitalize would also lower 'MAE' to 'Mae')."""
    return text[:1].upper() + text[1:]


def run_figures(runs: list[tuple[str, MetricHistory, float | None]], *, x_axis: str = "step",
                smoothing: float = 0.6, log_y: bool = False,
                max_points: int = MAX_POINTS) -> list[tuple[str, go.Figure]]:
    """The live charts for runs overlaid: `runs` holds (display name, history, steps per epoch or None)."""
    keys = list(dict.fromkeys(k for _, h, _ in runs for k in h.keys()))
    figures = []
    for title, chart_keys in chart_layout(keys):
        curves = []
        for i, (name, history, spe) in enumerate(runs):
            for key in chart_keys:
                if history.points(key):
                    x, y = history.series(key, x_axis, spe)
                    curves.append(Curve(name, "val" if key.startswith("val_") else "train", x, y, color_index=i))
        smooth = 0.0 if chart_keys == ["lr"] else smoothing  # a schedule is exact: nothing to smooth
        bounds = (0.0, 1.0) if all("accuracy" in k for k in chart_keys) else None
        figures.append((title, metric_figure(curves, title=title, smoothing=smooth, log_y=log_y, x_axis=x_axis,
                                             max_points=max_points, bounds=bounds)))
    return figures


# ---- data previews ------------------------------------------------------------------------------------

def class_balance_figure(class_names: list[str], counts: dict[str, list[int]],
                         height: int = CHART_HEIGHT) -> go.Figure:
    """Grouped bars: samples per class in each split (`counts` maps split name -> count per class)."""
    fig = go.Figure()
    for i, (split, values) in enumerate(counts.items()):
        fig.add_trace(go.Bar(x=list(class_names), y=list(values), name=split,
                             marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(title={"text": "Class balance", "font": {"size": 14}}, barmode="group", height=height,
                      margin=MARGIN, legend=LEGEND_BELOW)
    fig.update_xaxes(type="category", title_text="class")
    fig.update_yaxes(title_text="samples")
    return safe_figure(fig)


def series_preview_figure(samples: list[np.ndarray], labels: list[str], *, title: str = "Samples",
                          height: int = CHART_HEIGHT) -> go.Figure:
    """A line per sample (and per feature when a sample has several): `samples[i]` is (T,) or (T, F)."""
    fig = go.Figure()
    for i, (sample, label) in enumerate(zip(samples, labels, strict=True)):
        a = np.asarray(sample, dtype=np.float64)
        a = a[:, None] if a.ndim == 1 else a
        color = PALETTE[i % len(PALETTE)]
        for f in range(a.shape[1]):
            dash = ("solid", "dot", "dash", "dashdot")[f % 4]
            fig.add_trace(go.Scatter(y=a[:, f], mode="lines", name=label if a.shape[1] == 1 else f"{label} · f{f}",
                                     line={"color": color, "dash": dash}))
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height,
                      margin=MARGIN, legend=LEGEND_BELOW)
    fig.update_xaxes(title_text="time step")
    return safe_figure(fig)
