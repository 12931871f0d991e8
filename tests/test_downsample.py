"""Min/max bucket downsampling: bounded size, extremes and the last point kept, order preserved."""

from __future__ import annotations

import numpy as np
import pytest

from components.figures.downsample import downsample, minmax_indices


def reference_indices(y: np.ndarray, max_points: int) -> np.ndarray:
    """The same buckets computed point by point in plain Python (the oracle)."""
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    buckets = (max_points - 1) // 2
    size = -(-(n - 1) // buckets)
    keep = {n - 1}
    for start in range(0, n - 1, size):
        chunk = [(v if not np.isnan(v) else None, i) for i, v in enumerate(y[start:min(start + size, n - 1)], start)]
        finite = [(v, i) for v, i in chunk if v is not None]
        if finite:
            keep.add(min(finite, key=lambda t: (t[0], t[1]))[1])
            keep.add(max(finite, key=lambda t: (t[0], -t[1]))[1])
        else:
            keep.add(chunk[0][1])
    return np.array(sorted(keep))


@pytest.mark.parametrize("n", [0, 1, 5, 1000, 1001, 1002, 2999, 10_007, 123_457])
@pytest.mark.parametrize("max_points", [3, 7, 1000])
def test_matches_reference_and_stays_bounded(n, max_points):
    rng = np.random.default_rng(n + max_points)
    y = rng.standard_normal(n).cumsum()
    idx = minmax_indices(y, max_points)
    assert len(idx) == n if n <= max_points else len(idx) <= max_points
    np.testing.assert_array_equal(idx, reference_indices(y, max_points))
    if n:
        assert idx[-1] == n - 1
        assert np.all(np.diff(idx) > 0)  # original order, no duplicates


def test_short_series_are_returned_whole():
    x, y = np.arange(10), np.arange(10.0) ** 2
    xs, ys = downsample(x, y, 1000)
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys, y)


def test_spikes_survive_and_global_extremes_are_kept():
    y = np.zeros(1_000_000)
    y[123_456] = 50.0   # one spike, lost by stride or random sampling
    y[654_321] = -7.0
    y[-1] = 3.0
    xs, ys = downsample(np.arange(len(y)), y, 1000)
    assert len(xs) <= 1000
    assert 123_456 in xs and 654_321 in xs and xs[-1] == len(y) - 1
    assert ys.max() == 50.0 and ys.min() == -7.0 and ys[-1] == 3.0


def test_nan_is_ignored_within_a_bucket():
    y = np.arange(5000.0)
    y[10:20] = np.nan
    idx = minmax_indices(y, 101)
    assert not np.isnan(y[idx]).any()
    assert idx[0] == 0 and idx[-1] == 4999


def test_errors():
    with pytest.raises(ValueError, match="max_points=2 is too small"):
        minmax_indices(np.arange(10.0), 2)
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        downsample([1, 2, 3], [1.0, 2.0])
