"""The Deploy page's table and figure: pure functions of a studio.deploy.DeployReport and its
studio.deploy.recommend.Recommendation."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from components.text import safe_figure

RATIO_TICKS = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300)


def _kib(n) -> float | None:
    return None if n is None else round(n / 1024, 1)


def _ratio(a, b) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def table(report, rec=None) -> pd.DataFrame:
    """One row per variant, decision columns first: the row's verdict, variant, runtime, metric change, file size
    and latency at batch 1 and 64 as ratios to fp32 in PyTorch eager; then the absolute figures, what each
    download needs, notes and what the variant is."""
    fp32 = report.row("fp32")
    name = report.metric_name
    labels = rec.labels if rec is not None else {}
    rows = []
    for r in report.rows:
        if not r.ok:
            rows.append({"verdict": labels.get(r.method, "not available"), "variant": r.method, "runtime": r.runtime,
                         "notes": f"not supported: {r.message}", "what": r.description})
            continue
        rows.append({
            "verdict": labels.get(r.method, ""), "variant": r.method, "runtime": r.runtime,
            "change": None if r.delta is None else round(r.delta * (100 if "accuracy" in name else 1), 3),
            "size ×": _ratio(r.bytes, fp32.bytes),
            "latency @1 ×": _ratio(r.latency_ms_batch1, fp32.latency_ms_batch1),
            f"latency @{report.latency_batch} ×": _ratio(r.latency_ms_batch, fp32.latency_ms_batch),
            name: r.metric, "size KiB": _kib(r.bytes), "tensor KiB": _kib(r.weight_bytes),
            "ms/sample @1": r.latency_ms_batch1, f"ms/sample @{report.latency_batch}": r.latency_ms_batch,
            "params": r.params, "non-zero": r.nonzero_params, "loads with": r.loads_with,
            "notes": "; ".join(r.notes), "what": r.description,
        })
    return pd.DataFrame(rows)


def tradeoff_figure(report, budget: float = 1.0, height: int = 360) -> go.Figure:
    """Four panels, one bar per variant: accuracy change in points (an axis of at least +-5 points, the budget
    drawn, so a 1-point loss looks like one), file size, and latency at batch 1 and 64, each × fp32 eager
    (log axes, 1 = fp32)."""
    rows = [r for r in report.rows if r.ok]
    fp32 = report.row("fp32")
    names = [f"{r.method}" for r in rows]
    accuracy = "accuracy" in report.metric_name
    change = [None if r.delta is None else r.delta * (100 if accuracy else 1) for r in rows]
    unit = "points" if accuracy else report.metric_name
    title = f"change, {unit}" + (f" (budget -{budget:g} dashed)" if accuracy else "")
    fig = make_subplots(rows=1, cols=4, shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=(title, "file size × fp32",
                                        "latency @1 × fp32", f"latency @{report.latency_batch} × fp32"))
    fig.add_bar(y=names, x=change, orientation="h", marker_color="#54A24B", name="change", row=1, col=1)
    panels = ((lambda r: _ratio(r.bytes, fp32.bytes), "#4C78A8"),
              (lambda r: _ratio(r.latency_ms_batch1, fp32.latency_ms_batch1), "#F58518"),
              (lambda r: _ratio(r.latency_ms_batch, fp32.latency_ms_batch), "#E45756"))
    for col, (value, color) in enumerate(panels, start=2):
        values = [value(r) for r in rows]
        fig.add_bar(y=names, x=values, orientation="h", marker_color=color, row=1, col=col,
                    text=[None if v is None else f"{v:.2f}×" for v in values], textposition="outside",
                    cliponaxis=False)
        fig.add_vline(x=1, line_dash="dot", line_color="#666", row=1, col=col)
        shown = [v for v in values if v] + [1.0]
        ticks = [t for t in RATIO_TICKS if min(shown) / 1.5 <= t <= max(shown) * 1.5]
        fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}×" for t in ticks],
                         range=[math.log10(min(shown) / 1.6), math.log10(max(shown) * 2.5)], row=1, col=col)
    if accuracy:
        worst = min([c for c in change if c is not None] + [0.0])
        best = max([c for c in change if c is not None] + [0.0])
        low, high = min(-5.0, math.floor(worst) - 1), max(5.0, math.ceil(best) + 1)
        step = next(s for s in (1, 2, 5, 10, 20, 50) if (high - low) / s <= 6)
        fig.update_xaxes(range=[low, high], dtick=step, tick0=0, row=1, col=1)
        fig.add_vline(x=-budget, line_dash="dash", line_color="#B22222", row=1, col=1)

    fig.add_vline(x=0, line_color="#666", row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_annotations(font_size=12)  # the subplot titles
    fig.update_layout(height=height, showlegend=False, margin={"l": 10, "r": 10, "t": 60, "b": 30},
                      bargap=0.3)
    return safe_figure(fig)
