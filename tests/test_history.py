"""Downsampled histories (studio.runs.history*) against the raw rows as the oracle: every group's exact
min and max and the range's last point, incremental writes equal to a rebuild, truncation on resume,
the backfill of older stores, steps per epoch, and the smoothing error bound."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from studio.runs import history, history_buckets, history_read, history_schema
from studio.runs.store import MetricWriter, Store


def make_store(tmp_path, y, *, key="train_loss", batch=37, epoch_len=700, run_id="r"):
    store = Store(tmp_path / "studio.db")
    store.create_run(run_id, name="r", graph={}, config={}, dataset_id="iris")
    rows = [(i + 1, i // epoch_len, "train", key, float(v), 1000.0 + 0.5 * i) for i, v in enumerate(y)]
    for a in range(0, len(rows), batch):  # odd batch sizes: buckets are completed across writes
        store.write_metrics(run_id, rows[a:a + batch])
    return store


def check_window(rec, y, lo, hi, groups):
    """Each record against the raw values of the steps it claims (steps are 1..len(y))."""
    steps = np.arange(1, len(y) + 1)
    n = len(rec["rows"])
    assert n <= groups
    assert rec["first_step"][0] >= lo and rec["last_step"][-1] == min(hi, len(y))
    assert np.all(rec["first_step"][1:] > rec["last_step"][:-1])  # in order, no overlap
    assert rec["rows"].sum() == ((steps >= lo) & (steps <= hi)).sum()  # no row lost or counted twice
    for i in range(n):
        inside = (steps >= rec["first_step"][i]) & (steps <= rec["last_step"][i])
        seg, seg_steps = y[inside], steps[inside]
        assert rec["rows"][i] == inside.sum()
        present = ~np.isnan(seg)
        if not present.any():
            assert np.isnan(rec["min_value"][i]) and np.isnan(rec["max_value"][i])
            continue
        lowest, highest = np.nanmin(seg), np.nanmax(seg)
        assert rec["min_value"][i] == lowest and rec["max_value"][i] == highest
        assert rec["min_step"][i] == seg_steps[present][seg[present] == lowest][0]  # the first of equal minima
        assert rec["max_step"][i] == seg_steps[present][seg[present] == highest][0]
        finite = np.isfinite(seg)
        assert rec["count"][i] == finite.sum()
        assert rec["sum"][i] == pytest.approx(seg[finite].sum(), abs=1e-9 * max(1.0, np.abs(seg[finite]).sum()))


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(0)
    y = np.round(rng.standard_normal(30_000).cumsum(), 1)  # rounding makes ties
    y[[5, 77, 78, 4000]] = np.nan
    y[9000:9100] = np.nan  # a stretch with no value at all
    y[12_345] = np.inf
    return y


@pytest.mark.parametrize("lo, hi, groups", [(1, 30_000, 499), (1, 30_000, 50), (5, 29_993, 77),
                                            (123, 4567, 100), (8950, 9150, 20), (1000, 1400, 499),
                                            (29_990, 40_000, 3)])
def test_a_window_holds_the_exact_min_max_and_last_point_of_each_group(tmp_path, series, lo, hi, groups):
    store = make_store(tmp_path, series)
    rec, gw = history_read.read_window(store.connect(), "r", "train_loss", lo, hi, groups=groups)
    check_window(rec, series, lo, hi, groups)
    points = history.drawn_points(rec)
    assert len(points["step"]) <= 2 * groups + 1
    last = min(hi, len(series))
    assert points["step"][-1] == last and points["value"][-1] == series[last - 1]  # the line ends where the data does
    if gw == 1:  # the rows fit: every raw point, nothing summarised
        np.testing.assert_array_equal(points["step"], np.arange(lo, last + 1))


@pytest.mark.parametrize("batch", [53, 5000])  # the writer's pure-Python path and the bulk numpy path
def test_incremental_buckets_equal_a_rebuild_and_survive_truncation(tmp_path, series, batch):
    store = make_store(tmp_path, series[:20_000], batch=batch)
    conn = store.connect()

    def table():
        rows = conn.execute("SELECT * FROM metric_buckets ORDER BY key, level, bucket").fetchall()
        return [tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in rows]

    incremental = table()
    with store.transaction():
        history_buckets.rebuild(conn, "r")
    assert table() == incremental
    store.truncate_metrics("r", 12_345)  # a resume from the checkpoint at step 12,345
    truncated = table()
    with store.transaction():
        history_buckets.rebuild(conn, "r")
    assert table() == truncated
    rec, _ = history_read.read_window(conn, "r", "train_loss", 1, 20_000, groups=100)
    check_window(rec, series[:12_345], 1, 12_345, 100)
    store.delete_run("r")
    assert conn.execute("SELECT COUNT(*) FROM metric_buckets").fetchone()[0] == 0


def test_the_metric_writer_fills_the_buckets(tmp_path):
    store = Store(tmp_path / "studio.db")
    store.create_run("r", name="r", graph={}, config={}, dataset_id="iris")
    writer = MetricWriter(store, "r", flush_steps=7)
    for step in range(1, 501):
        writer.log(step, 0, "train", {"train_loss": 1.0 / step, "lr": 0.1})
        writer.end_step(step)
    writer.close()
    found = history_read.summary(store.connect(), "r")
    assert found == {"lr": ("train", 1, 500, 500), "train_loss": ("train", 1, 500, 500)}


def test_an_older_store_is_backfilled_once(tmp_path, series):
    store = make_store(tmp_path, series[:5000])
    store.close()
    conn = sqlite3.connect(tmp_path / "studio.db")  # as a store written before the buckets existed
    conn.execute("DELETE FROM metric_buckets")
    conn.execute("DELETE FROM meta WHERE key=?", (history_schema.BUCKETS_BACKFILLED,))
    conn.commit()
    conn.close()
    store = Store(tmp_path / "studio.db")
    rec, _ = history_read.read_window(store.connect(), "r", "train_loss", 1, 5000, groups=40)
    check_window(rec, series[:5000], 1, 5000, 40)


def test_steps_per_epoch_is_the_last_step_of_epoch_zero(tmp_path):
    y = np.linspace(1, 0, 6000)
    store = make_store(tmp_path, y, epoch_len=1234)
    assert history_read.steps_per_epoch(store.connect(), "r", "train_loss") == 1234
    store = make_store(tmp_path / "one", y[:1000], epoch_len=1234)
    assert history_read.steps_per_epoch(store.connect(), "r", "train_loss") is None  # epoch 1 has not begun


@pytest.mark.parametrize("weight", [0.6, 0.9, 0.99])
def test_smoothing_on_buckets_stays_within_its_stated_error(tmp_path, weight):
    rng = np.random.default_rng(2)
    n = 40_000
    steps = np.arange(n)
    y = 2.0 * np.exp(-steps / 9000) + 0.1 * rng.standard_normal(n)  # a noisy, decaying loss
    y[[10, 20_000]] = [np.nan, np.inf]
    store = make_store(tmp_path, y)
    conn = store.connect()
    exact = history.ema(y, weight)  # smoothing every logged row, TensorBoard's way
    for lo, hi in [(1, n), (15_000, 17_000), (15_000, 15_400)]:
        rec, gw = history_read.read_window(conn, "r", "train_loss", lo, hi, groups=100)
        lead = None
        if lo > 1:  # what MetricHistory reads before a zoomed range
            lead, _ = history_read.read_window(conn, "r", "train_loss", max(1, lo - 4 * history.lead_rows(weight) - gw),
                                          lo - 1, groups=100, gw=gw)
        at, smoothed, bound = history.smooth(rec, weight, lead)
        want = exact[at.astype(int) - 1]
        ok = np.isfinite(want) & np.isfinite(bound)
        err = np.abs(smoothed[ok] - want[ok])
        assert np.all(err <= bound[ok] + 1e-6 * np.ptp(y[np.isfinite(y)]))
        if gw == 1:
            assert err.max() <= 1e-6  # raw points: the same curve
        else:
            assert bound[ok].max() <= 0.5  # at most the noise's spread, far below the loss's 2.0 range
        if lo <= 20_001 <= hi:
            assert np.isinf(bound[at >= 20_001]).all()  # after the inf the bound is unknown, and says so


def test_a_zoomed_view_smooths_like_the_whole_series(tmp_path):
    y = np.sin(np.arange(50_000) / 300.0) + 0.01 * np.arange(50_000) % 7
    store = make_store(tmp_path, y)
    view = history.MetricHistory("r", max_points=201)
    view.zoom((20_000, 20_150))
    view.update(store, smoothing=0.95)
    at, smoothed, bound = view.smoothed("train_loss", 0.95)
    np.testing.assert_array_equal(at, np.arange(20_000, 20_151))
    np.testing.assert_allclose(smoothed, history.ema(y, 0.95)[at.astype(int) - 1], atol=1e-6)
    assert np.all(bound == 0.0)
