"""Min/max bucket downsampling of long series for charts.

A chart needs at most about 1,000 points per series; a run may log a million. Each bucket of
consecutive points keeps its smallest and its largest value (in their original order), so spikes
survive, unlike random or stride sampling. The last point is always kept, so the line ends where the
run is now. Pure numpy, no Python loop over points.

    >>> idx = minmax_indices(np.arange(10_000.0), max_points=1000)
    >>> len(idx) <= 1000, int(idx[-1])
    (True, 9999)
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 1000


def minmax_indices(y, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted indices of the points to keep: the min and max of each bucket, and the last point.

    NaN values are kept visible only when a whole bucket is NaN (they draw as gaps); otherwise a
    bucket's min and max ignore them. `max_points` must be at least 3.
    """
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if max_points < 3:
        raise ValueError(f"max_points={max_points} is too small; use at least 3 (a min, a max and the last point)")
    if n <= max_points:
        return np.arange(n)
    buckets = (max_points - 1) // 2  # two points per bucket plus the last point
    size = -(-(n - 1) // buckets)  # ceil: buckets cover points 0 .. n-2, the last point is added after
    body = n - 1
    full = body // size
    low = high = y[:body]
    nan = np.isnan(low)
    if nan.any():  # NaN would win every argmin/argmax: make it lose instead
        low, high = np.where(nan, np.inf, low), np.where(nan, -np.inf, high)
    offsets = np.arange(full) * size
    parts = [
        offsets + low[: full * size].reshape(full, size).argmin(axis=1),
        offsets + high[: full * size].reshape(full, size).argmax(axis=1),
    ]
    if full * size < body:  # the shorter tail bucket
        start = full * size
        parts.append(np.array([start + low[start:].argmin(), start + high[start:].argmax()]))
    parts.append(np.array([n - 1]))
    return np.unique(np.concatenate(parts))


def downsample(x, y, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) reduced to at most `max_points` points by min/max buckets over y, the last point kept."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    idx = minmax_indices(y, max_points)
    return x[idx], y[idx]
