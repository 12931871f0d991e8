"""Chart figures: TensorBoard's debiased EMA (pandas ewm), downsampled traces, log scale, overlay; the
bounded, incremental history view the charts draw from; class-balance and series previews."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from components.figures.charts import (
    Curve,
    MetricHistory,
    chart_layout,
    class_balance_figure,
    ema,
    metric_figure,
    plain_values,
    run_figures,
    series_preview_figure,
)
from studio.runs.store import Store


def tensorboard_smooth(values, weight):
    """TensorBoard's own loop (tensorboard/webapp/widgets/line_chart_v2/lib/utils.ts), the oracle."""
    out, last, count = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last = last * weight + (1 - weight) * v
        count += 1
        out.append(last / (1 - weight ** count))
    return out


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.9, 0.99])
def test_ema_matches_tensorboard(weight):
    rng = np.random.default_rng(0)
    y = rng.standard_normal(500).cumsum()
    y[[7, 100, 101]] = [np.nan, np.inf, -np.inf]
    np.testing.assert_allclose(ema(y, weight), tensorboard_smooth(y, weight), rtol=1e-10, atol=1e-12)


def test_ema_is_debiased_and_rejects_bad_weights():
    assert ema([5.0, 5.0, 5.0], 0.95).tolist() == pytest.approx([5.0, 5.0, 5.0])
    assert ema([], 0.5).tolist() == []
    with pytest.raises(ValueError, match="smoothing weight must be in"):
        ema([1.0], 1.0)


def test_metric_figure_downsamples_every_trace_and_keeps_the_last_point():
    n = 200_000
    x = np.arange(1, n + 1)
    y = np.exp(-x / 5e4) + 0.01 * np.sin(x)
    curves = [Curve("a", "train", x, y, 0), Curve("a", "val", x[::1000], y[::1000], 0)]
    fig = metric_figure(curves, title="Loss", smoothing=0.6, max_points=1000)
    assert [t.name for t in fig.data] == ["train (raw)", "train", "val"]
    for t in fig.data:
        assert len(t.x) <= 1000
    assert fig.data[0].x[-1] == n and fig.data[1].x[-1] == n
    assert fig.data[1].y[-1] == pytest.approx(ema(y, 0.6)[-1])
    payload = json.loads(fig.to_json())
    assert all(isinstance(t["x"], list) and len(t["x"]) <= 1000 for t in payload["data"])  # plain lists:
    assert payload["data"][0]["x"][-1] == n  # the browser can read trace.x.length (no base64 'bdata')


def test_overlay_log_scale_and_no_smoothing():
    x = np.arange(10)
    curves = [Curve("run-a", "train", x, np.linspace(1, 0.1, 10), 0),
              Curve("run-b", "train", x, np.linspace(2, -1, 10), 1)]
    fig = metric_figure(curves, title="Loss", smoothing=0.0, log_y=True, x_axis="epoch")
    assert [t.name for t in fig.data] == ["run-a · train", "run-b · train"]
    assert fig.data[0].line.color != fig.data[1].line.color
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.title.text == "epoch"
    assert np.isnan(fig.data[1].y[-1])  # values <= 0 cannot be drawn on a log axis: gaps, not errors


def test_a_constant_series_is_centred_not_drawn_at_zero():
    fig = metric_figure([Curve("a", "train", np.arange(50), np.full(50, 1e-3))], title="Learning rate", smoothing=0)
    assert fig.layout.yaxis.range == (0.0, 2e-3)


def test_one_evaluation_gets_whole_step_ticks_and_an_accuracy_stays_inside_0_1():
    fig = metric_figure([Curve("a", "val", np.array([700]), np.array([1.0]))], title="Accuracy", bounds=(0.0, 1.0))
    assert (fig.layout.xaxis.dtick, fig.layout.xaxis.tick0, fig.layout.xaxis.tickformat) == (1, 0, "d")
    assert fig.layout.yaxis.range == pytest.approx((0.95, 1.0))  # not the constant's (0, 2)
    assert fig.data[0].cliponaxis is False  # the marker on the top edge is drawn whole
    fig = metric_figure([Curve("a", "val", np.array([350, 700]), np.array([0.1, 0.7]))], title="Accuracy",
                        bounds=(0.0, 1.0))
    assert fig.layout.yaxis.range == pytest.approx((0.05, 0.75))
    fig = metric_figure([Curve("a", "val", np.array([1, 2]), np.array([3.0, 50.0]))], title="x", bounds=(0.0, 1.0))
    assert fig.layout.yaxis.range is None  # values outside the bounds (a percentage): plain autorange


def test_the_legend_sits_below_the_axis_title_and_titles_are_capitalised():
    fig = metric_figure([Curve("a", "train", np.arange(50), np.ones(50))], title="Loss")
    assert (fig.layout.legend.yref, fig.layout.legend.y, fig.layout.legend.yanchor) == ("container", 0, "bottom")
    titles = [t for t, _ in chart_layout(["train_loss", "val_loss", "val_accuracy", "val_token_accuracy", "lr"])]
    assert titles == ["Loss", "Accuracy", "Token accuracy", "Learning rate"]


def test_metric_history_reads_only_new_rows(tmp_path):
    store = Store(tmp_path / "studio.db")
    store.create_run("r1", name="r", graph={}, config={}, dataset_id="iris")
    store.write_metrics("r1", [(s, (s - 1) // 10, "train", "train_loss", 1.0 / s, 100.0 + s) for s in range(1, 26)])
    store.write_metrics("r1", [(10, 0, "val", "val_loss", 0.5, 110.5), (20, 1, "val", "val_loss", 0.4, 120.5)])
    h = MetricHistory("r1")
    assert h.update(store) == 27 and h.last_step == 25
    assert h.update(store) == 0
    store.write_metrics("r1", [(26, 2, "train", "train_loss", 0.01, 126.0)])
    assert h.update(store) == 1
    assert h.points("train_loss") == 26 and h.points("val_loss") == 2
    steps, values = h.series("train_loss")
    assert steps[-1] == 26 and values[-1] == 0.01
    assert h.steps_per_epoch() == 10
    x, _ = h.series("val_loss", "epoch")
    assert x.tolist() == [1.0, 2.0]
    x, _ = h.series("train_loss", "wall")
    assert x[0] == 0.0 and x[-1] == 25.0
    with pytest.raises(ValueError, match="x_axis='time'"):
        h.series("train_loss", "time")


def test_metric_history_holds_at_most_the_drawn_points(tmp_path):
    store = Store(tmp_path / "studio.db")
    store.create_run("r1", name="r", graph={}, config={}, dataset_id="iris")
    h = MetricHistory("r1", max_points=101)
    for start in range(1, 20_001, 5000):
        rows = [(s, 0, "train", "train_loss", float(s % 977), 0.0) for s in range(start, start + 5000)]
        store.write_metrics("r1", rows)
        h.update(store, smoothing=0.6)
        assert h.held_points() <= 50
    steps, values = h.series("train_loss")
    assert len(steps) <= 101 and steps[-1] == 20_000 and values.max() == 976 and values.min() == 0
    h.zoom((1000, 1080))  # a range whose rows fit: every raw point
    h.update(store, smoothing=0.6)
    steps, values = h.series("train_loss")
    np.testing.assert_array_equal(steps, np.arange(1000, 1081))
    np.testing.assert_array_equal(values, np.arange(1000, 1081) % 977)


def test_run_figures_draw_the_history_and_its_bucket_smoothing(tmp_path):
    store = Store(tmp_path / "studio.db")
    store.create_run("r1", name="r", graph={}, config={}, dataset_id="iris")
    rng = np.random.default_rng(1)
    y = np.exp(-np.arange(30_000) / 8000) + 0.05 * rng.standard_normal(30_000)
    store.write_metrics("r1", [(s + 1, 0, "train", "train_loss", float(y[s]), 0.0) for s in range(30_000)])
    h = MetricHistory("r1")
    h.update(store, smoothing=0.9)
    (title, fig), = run_figures([("r", h, None)], smoothing=0.9)
    assert title == "Loss" and [t.name for t in fig.data] == ["train (raw)", "train"]
    assert all(len(t.x) <= 1000 for t in fig.data) and fig.data[0].x[-1] == 30_000
    sx, sy, bound = h.smoothed("train_loss", 0.9)
    exact = ema(y, 0.9)[sx.astype(int) - 1]
    assert np.all(np.abs(sy - exact) <= bound + 1e-12)
    assert fig.data[1].y[-1] == pytest.approx(sy[-1], rel=1e-6)


def test_plain_values_are_short_and_exact_enough():
    assert plain_values(np.array([1.0, 2.0, 3.0])) == [1, 2, 3]
    values = plain_values(np.array([0.123456789123, 12345.678912, -3.3e-9, np.nan, 0.0]))
    assert values[:3] == [0.1234568, 12345.68, -3.3e-9] and np.isnan(values[3]) and values[4] == 0.0
    assert all(len(repr(v)) <= 10 for v in values)


def test_class_balance_and_series_preview():
    fig = class_balance_figure(["cat", "dog"], {"train": [3, 5], "val": [1, 2]})
    assert [t.name for t in fig.data] == ["train", "val"] and list(fig.data[0].y) == [3, 5]
    assert list(fig.data[1].x) == ["cat", "dog"]
    fig = series_preview_figure([np.zeros((8, 2)), np.ones(8)], ["a", "b"])
    assert [t.name for t in fig.data] == ["a · f0", "a · f1", "b"]
