"""The Deploy page's table and figure: pure functions of a studio.deploy.DeployReport."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from components.text import safe_figure


def _kib(n) -> float | None:
    return None if n is None else round(n / 1024, 1)


def _ratio(a, b) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def table(report) -> pd.DataFrame:
    """One row per variant: metric and its change, size, weights, latency (and ratios to fp32), notes."""
    fp32 = report.row("fp32")
    name = report.metric_name
    rows = []
    for r in report.rows:
        if not r.ok:
            rows.append({"variant": r.method, "what": r.description, "notes": f"not supported: {r.message}"})
            continue
        rows.append({
            "variant": r.method, "what": r.description, name: r.metric,
            "change": None if r.delta is None else round(r.delta * (100 if "accuracy" in name else 1), 3),
            "val_loss": r.loss, "size KiB": _kib(r.bytes), "size ×": _ratio(r.bytes, fp32.bytes),
            "weights KiB": _kib(r.weight_bytes), "params": r.params, "non-zero": r.nonzero_params,
            "ms/sample @1": r.latency_ms_batch1, "latency ×": _ratio(r.latency_ms_batch1, fp32.latency_ms_batch1),
            f"ms/sample @{report.batch_size}": r.latency_ms_batch, "notes": "; ".join(r.notes),
        })
    return pd.DataFrame(rows)


def tradeoff_figure(report, height: int = 380) -> go.Figure:
    """Size and latency of each variant against fp32 (bars, left axis) with the task metric (dots, right)."""
    rows = [r for r in report.rows if r.ok]
    fp32 = report.row("fp32")
    names = [r.method for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=names, y=[_ratio(r.bytes, fp32.bytes) for r in rows], name="size × fp32",
                marker_color="#4C78A8")
    fig.add_bar(x=names, y=[_ratio(r.weight_bytes, fp32.weight_bytes) for r in rows], name="weights × fp32",
                marker_color="#9ECAE9")
    fig.add_bar(x=names, y=[_ratio(r.latency_ms_batch1, fp32.latency_ms_batch1) for r in rows],
                name="latency @1 × fp32", marker_color="#F58518")
    fig.add_scatter(x=names, y=[r.metric for r in rows], name=report.metric_name, mode="markers+lines",
                    marker={"size": 11, "color": "#54A24B"}, secondary_y=True)
    fig.update_layout(barmode="group", height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      title={"text": f"Size and latency (× fp32) against {report.metric_name}", "font": {"size": 14}},
                      legend={"orientation": "h", "y": -0.15})
    fig.update_yaxes(title_text="× fp32 (log)", type="log", secondary_y=False)
    fig.update_yaxes(title_text=report.metric_name, secondary_y=True, nticks=6, tickformat=".3f", showgrid=False)
    return safe_figure(fig)
