"""Figures for the Data and Train pages, as pure functions: data in, `plotly.graph_objects.Figure` out.

Training curves come from `MetricHistory` (studio.runs.history), a session's bounded view of a run:
at most about a thousand drawn points per series (exact min/max buckets read from the store), and a
smoothed line computed on those buckets, within a stated error of smoothing every logged step. A run
with ten million steps costs a page what one with ten thousand does. Figures are assembled from plain
dicts without Plotly's per-property validation (`go.Figure(..., _validate=False)`), which was most of
a refresh's cost; the data is plain numbers and the layout a handful of fixed keys.

    >>> fig = metric_figure([Curve("run-a", "train", np.arange(5), np.ones(5))], title="loss")
    >>> len(fig.data)  # the raw curve (faint) and its smoothed line
    2
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from components.figures.downsample import MAX_POINTS, downsample
from components.text import figure_text, safe_figure
from studio.runs.history import MetricHistory, ema  # noqa: F401  (MetricHistory lives next to the store)

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d",
           "#475569", "#b45309")
X_AXES = {"step": "step", "epoch": "epoch", "wall": "wall time (s)"}  # axis titles
X_AXIS_CHOICES = {"step": "step", "epoch": "epoch", "wall": "wall time"}  # the pages' x axis control
CHART_HEIGHT = 300
MARGIN = {"l": 50, "r": 10, "t": 40, "b": 40}
# Anchored to the bottom of the whole figure (not the plot), so plotly reserves room for the legend
# below the x axis title instead of drawing it on top of that title.
LEGEND_BELOW = {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0, "xanchor": "left"}


class PlainFigure(go.Figure):
    """A Figure assembled from plain dicts: built without validation (`_validate=False`), and handed to
    Streamlit without the deep copy and per-element base64 scan of `Figure.to_dict` (its traces hold
    plain lists of Python numbers, nothing to convert). Those three passes were most of a live
    refresh's cost; the figure is otherwise a normal `go.Figure` (tests read `fig.data`, `fig.layout`).

    Plotly's own constructor (trace objects, a deep copy of the default template: half of a refresh's
    remaining cost) runs only when something other than `to_dict` is asked of the figure: Streamlit's
    `st.plotly_chart` asks only `to_dict`, which then answers from the plain dicts with the same
    result (the default template included, as Plotly's constructor would add it)."""

    def __init__(self, data: list[dict], layout: dict):
        self.__dict__["_plain"] = (data, layout)  # go.Figure.__init__ deferred to _build

    def _build(self) -> None:
        data, layout = self.__dict__.pop("_plain")
        super().__init__(data=data, layout=layout, _validate=False)

    def __getattr__(self, name: str):
        # Reached only when an attribute is missing: before _build, every Plotly attribute is.
        if "_plain" in self.__dict__:
            self._build()
            return getattr(self, name)
        raise AttributeError(name)

    def to_dict(self) -> dict:
        # Traces hold numpy arrays while the figure is built (Plotly's constructor deep-copies them in
        # one memcpy instead of one call per number) and go out as plain lists (see plain_values).
        if "_plain" in self.__dict__:
            data, layout = self.__dict__["_plain"]
            # In Plotly's order: its properties sorted by name, then the template it adds.
            layout = {k: layout[k] for k in sorted(layout)}
            layout.setdefault("template", _default_template())
        else:
            data, layout = self._data, dict(self._layout)
        return {"data": [{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in t.items()} for t in data],
                "layout": layout}


@functools.lru_cache(maxsize=1)
def _default_template() -> dict:
    """The default template's JSON as Plotly's constructor puts it into a figure's layout (built once;
    serialised, never mutated)."""
    return go.Figure(layout={"height": 1}, _validate=False)._layout["template"]


# ---- training curves -------------------------------------------------------------------------------

@dataclass
class Curve:
    """One series of one run: `run` names the run (legend and colour), `split` is train or val."""

    run: str
    split: str
    x: np.ndarray
    y: np.ndarray
    color_index: int = 0
    # The smoothed line when it was computed on buckets (MetricHistory.smoothed); None: smooth y here.
    smooth_x: np.ndarray | None = None
    smooth_y: np.ndarray | None = None


def plain_values(a, digits: int = 7) -> list:
    """A short JSON-friendly list: integers stay integers, floats keep `digits` significant digits.

    Plain lists (not numpy arrays, which plotly would send as base64 'bdata') keep `trace.x.length`
    readable in the browser, and the rounding keeps each number a few characters long.
    """
    return _plain_array(a, digits).tolist()


def _plain_array(a, digits: int = 7) -> np.ndarray:
    """plain_values as an array: int64 for whole numbers, else float64 rounded to `digits` digits."""
    a = np.asarray(a)
    if a.dtype.kind in "iub" or (a.dtype.kind == "f" and len(a) and np.all(a == np.round(a))
                                 and np.all(np.abs(a) < 2**53)):
        return a.astype(np.int64)
    a = a.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log10(np.abs(a)))
        scale = 10.0 ** np.where(np.isfinite(exponent), digits - 1 - exponent, 0)
        rounded = np.round(a * scale) / scale
    return np.where(np.isfinite(rounded), rounded, a)


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def metric_figure(curves: list[Curve], *, title: str, smoothing: float = 0.6, log_y: bool = False,
                  x_axis: str = "step", max_points: int = MAX_POINTS, height: int = CHART_HEIGHT,
                  bounds: tuple[float, float] | None = None, legend: bool = True) -> go.Figure:
    """A line chart of curves (without a legend of its own when `legend` is False: see `shared_legend`).
    Train curves draw the raw values faintly and the smoothed line on top;
    validation curves (a point per evaluation) draw as lines with markers, unsmoothed.

    Every trace holds at most `max_points` points (min/max buckets, the last point kept). `bounds` is
    the metric's own range (an accuracy lives in (0, 1)): the y axis never reaches past it while the
    values stay inside it. Traces and layout are plain dicts, so Plotly validates nothing.
    """
    traces = []
    show_run = len({c.run for c in curves}) > 1
    finite_parts = []
    for c in curves:
        color = PALETTE[c.color_index % len(PALETTE)]
        x, y = np.asarray(c.x), np.asarray(c.y, dtype=np.float64)
        if log_y:  # a log axis cannot show values <= 0; they become gaps, not errors
            y = np.where(y > 0, y, np.nan)
        finite_parts.append(np.asarray(c.y, dtype=np.float64))
        name = figure_text(f"{c.run} · {c.split}" if show_run else c.split)  # a run's name is text, not markup
        xs, ys = downsample(x, y, max_points)
        if c.split == "val" or len(y) < 3:
            traces.append({"type": "scatter", "x": _plain_array(xs), "y": _plain_array(ys), "name": name,
                           "mode": "lines+markers", "legendgroup": name, "line": {"color": color, "dash": "dash"},
                           "marker": {"size": 5}})
            continue
        if smoothing > 0:
            traces.append({"type": "scatter", "x": _plain_array(xs), "y": _plain_array(ys), "name": f"{name} (raw)",
                           "mode": "lines", "legendgroup": name, "showlegend": False, "hoverinfo": "skip",
                           "line": {"color": _rgba(color, 0.25), "width": 1}})
            if c.smooth_y is not None:
                sy = np.asarray(c.smooth_y, dtype=np.float64)
                xs, ys = downsample(np.asarray(c.smooth_x), np.where(sy > 0, sy, np.nan) if log_y else sy, max_points)
            else:
                xs, ys = downsample(x, ema(y, smoothing), max_points)
        traces.append({"type": "scatter", "x": _plain_array(xs), "y": _plain_array(ys), "name": name, "mode": "lines",
                       "legendgroup": name, "line": {"color": color, "width": 2}})
    xaxis = {"title": {"text": X_AXES.get(x_axis, x_axis)}}
    if x_axis == "step":
        xaxis.update(_integer_ticks([c.x for c in curves]))
    yaxis = {"tickformat": "~g"}
    finite = np.concatenate(finite_parts or [np.zeros(0)])
    finite = finite[np.isfinite(finite)]
    if log_y:
        yaxis["type"] = "log"
    elif bounds is not None and len(finite) and bounds[0] <= finite.min() and finite.max() <= bounds[1]:
        lo, hi = finite.min(), finite.max()
        pad = 0.05 * (bounds[1] - bounds[0])
        yaxis["range"] = [max(bounds[0], lo - pad), min(bounds[1], hi + pad)]
        for t in traces:  # a marker at exactly 1.0 sits on the edge: draw all of it
            t["cliponaxis"] = False
    elif len(finite) and finite.min() == finite.max() != 0:  # a constant (e.g. the lr): centre it
        c = abs(finite[0])
        yaxis["range"] = [finite[0] - c, finite[0] + c]
    layout = {"title": {"text": figure_text(title), "font": {"size": 14}}, "height": height, "margin": MARGIN,
              "hovermode": "x unified", "legend": LEGEND_BELOW, "uirevision": title, "xaxis": xaxis, "yaxis": yaxis}
    if not legend:
        layout["showlegend"] = False
    return PlainFigure(traces, layout)


def shared_legend(names: list[str]) -> str:
    """One legend for a grid of charts (HTML for `st.html`): each run's colour and name as
    `run_figures` draws them, then what solid and dashed lines are. Many runs' legends under every
    chart took half of each chart's height."""
    import html

    chips = "".join(
        f'<span style="margin-right:1.2em;white-space:nowrap"><span style="display:inline-block;width:1.6em;'
        f'height:0.3em;vertical-align:middle;background:{PALETTE[i % len(PALETTE)]}"></span> {html.escape(name)}</span>'
        for i, name in enumerate(names))
    return (f'<div style="font-size:0.9em;line-height:1.9">{chips}<span style="color:#6b7280">solid: train '
            "(smoothed over the faint raw values) · dashed with markers: validation</span></div>")


def _integer_ticks(xs: list) -> dict:
    """Axis settings that keep step ticks on whole numbers: with a few steps (one evaluation) plotly
    would otherwise label 349.5 and 350.5."""
    values = np.concatenate([np.asarray(x, dtype=np.float64) for x in xs] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    if len(values) and values.max() - values.min() < 10:
        return {"tickmode": "linear", "tick0": 0, "dtick": 1, "tickformat": "d"}
    return {"tickformat": "d"}


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
                smoothing: float = 0.6, log_y: bool = False, max_points: int = MAX_POINTS,
                legend: bool = True) -> list[tuple[str, go.Figure]]:
    """The live charts for runs overlaid: `runs` holds (display name, history, steps per epoch or None).
    Only the drawn points of each history are used; smoothing is computed on its buckets."""
    keys = list(dict.fromkeys(k for _, h, _ in runs for k in h.keys()))
    figures = []
    for title, chart_keys in chart_layout(keys):
        smooth = 0.0 if chart_keys == ["lr"] else smoothing  # a schedule is exact: nothing to smooth
        curves = []
        for i, (name, history, spe) in enumerate(runs):
            for key in chart_keys:
                if history.points(key):
                    x, y = history.series(key, x_axis, spe)
                    split = "val" if key.startswith("val_") else "train"
                    sx = sy = None
                    if smooth > 0 and split == "train":
                        sx, sy, _ = history.smoothed(key, smooth, x_axis, spe, bound=False)
                    curves.append(Curve(name, split, x, y, color_index=i, smooth_x=sx, smooth_y=sy))
        bounds = (0.0, 1.0) if all("accuracy" in k for k in chart_keys) else None
        figures.append((title, metric_figure(curves, title=title, smoothing=smooth, log_y=log_y, x_axis=x_axis,
                                             max_points=max_points, bounds=bounds, legend=legend)))
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
