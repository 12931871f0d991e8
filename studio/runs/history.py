"""What a chart draws of a run: `MetricHistory`, a session's bounded view of one run's metrics.

A run may log millions of rows; a chart draws about a thousand points. The view holds at most
`max_points` drawn points per key (min/max groups read by `studio.runs.history_read`), updated
incrementally and zoomable to a step range; `drawn_points` turns records into the points drawn and
`smooth` gives TensorBoard's smoothing of them with a stated error bound (`ema` on the raw values).
The buckets themselves are written by `studio.runs.history_buckets`, in the store's transactions.

    >>> view = MetricHistory(run_id)                     # doctest: +SKIP
    >>> view.update(store); x, y = view.series("train_loss")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from studio.runs.history_buckets import concat, empty_records, n_records
from studio.runs.history_read import MAX_POINTS, read_window, steps_per_epoch, summary
from studio.runs.history_schema import LEVELS

# Smoothing reads this many times the EMA's memory before a zoomed range, so what is cut off weighs < 1e-6.
LEAD_EPSILON = 1e-6
_POINT = ("step", "epoch", "wall", "value")


# ---- drawing ------------------------------------------------------------------------------------------

def drawn_points(rec: dict) -> dict[str, np.ndarray]:
    """The points a chart draws for these records: each one's min and max (in step order) and the
    last point, as columns step, epoch, wall, value. A record of one row gives one point."""
    cols = {}
    for name in _POINT:
        parts = [rec[f"min_{name}"], rec[f"max_{name}"], rec[f"last_{name}"][-1:]]
        cols[name] = np.concatenate(parts) if n_records(rec) else np.zeros(0)
    if not len(cols["step"]):
        return cols
    present = ~np.isnan(cols["step"])
    # An all-NaN record draws a gap at its last step (min and max are missing).
    gaps = np.flatnonzero(np.isnan(rec["min_value"]))
    for name in _POINT:
        cols[name] = np.concatenate([cols[name][present], rec[f"last_{name}"][gaps] if name != "value"
                                     else np.full(len(gaps), np.nan)])
    order = np.lexsort((cols["value"], cols["step"]))
    step = cols["step"][order]
    keep = np.r_[True, step[1:] != step[:-1]]  # min == max == last of a one-row record: one point
    return {name: cols[name][order][keep] for name in _POINT}


def ema(values, weight: float, counts=None) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average debiased by 1 - weight**n, non-finite
    values passed through without counting. With `counts`, each value is the mean of that many
    consecutive points and weighs as many (the smoothing of buckets, see `smooth`).

    >>> ema([1.0, 1.0, 1.0], 0.9).round(12).tolist()
    [1.0, 1.0, 1.0]
    """
    import pandas as pd

    y = np.asarray(values, dtype=np.float64)
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    finite = np.isfinite(y)
    if weight == 0.0 or not finite.any():
        return y.copy()
    if counts is None:
        # adjust=True divides by the sum of the weights: exactly TensorBoard's 1 - w**n debiasing.
        smoothed = pd.Series(np.where(finite, y, np.nan)).ewm(alpha=1.0 - weight, adjust=True,
                                                              ignore_na=True).mean().to_numpy()
        return np.where(finite, smoothed, y)
    c = np.asarray(counts, dtype=np.float64)
    use = finite & (c > 0)
    out = y.copy()
    if not use.any():
        return out
    # A bucket of c points, all equal to their mean m, adds (1 - w**c) * m after decaying the past by
    # w**c. pandas' time-aware ewm gives that decay when a bucket's time is its cumulative count; the
    # (1 - w**c) factor goes into the values and, divided out, into the weights (which then sum to the
    # debiasing 1 - w**n). Times are in nanoseconds, scaled so the half-life is resolved to 1e-6.
    cum = np.cumsum(c[use])
    scale = 1e6
    times = pd.to_datetime((cum * scale).astype(np.int64), unit="ns")
    halflife = pd.Timedelta(math.log(0.5) / math.log(weight) * scale, unit="ns")
    gain = -np.expm1(c[use] * math.log(weight))  # 1 - w**c
    both = pd.DataFrame({"num": gain * y[use], "den": gain}).ewm(halflife=halflife, times=times).mean().to_numpy()
    out[use] = both[:, 0] / both[:, 1]
    return out


def smooth(rec: dict, weight: float, lead: dict | None = None, *, bound: bool = True,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The smoothed line over these records, one point at each record's last step: (steps, values,
    error bound, or None with bound=False). `lead` holds records just before the range, read so the
    line enters it as the full series' smoothing would.

    Stated error: against TensorBoard's smoothing of every raw row, at each record's last step the
    value differs by at most the smoothed spread max(mean - min, max - mean) of the records (0 where
    a record is one raw row), plus weight**n * (max - min) for the n rows of `lead` when the lead
    does not reach the run's first row (under 1e-6 of the range with the lead `MetricHistory` reads).
    From a bucket holding +-inf on, the bound is unknown and given as inf.
    Proof sketch: a bucket's exact contribution is (1 - w) * sum w**j * y_j, its mean's is
    (1 - w**c) * m; the difference lies within (1 - w**c) * [min - m, max - m], and both recurrences
    decay the past by w**c per bucket.
    """
    lead = lead if lead is not None and n_records(lead) else empty_records()
    both = concat([lead, rec])
    n_lead = n_records(lead)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(both["count"] > 0, both["sum"] / np.maximum(both["count"], 1), np.nan)
    if not bound:
        return rec["last_step"], ema(mean, weight, both["count"])[n_lead:], None
    with np.errstate(invalid="ignore"):
        spread = np.fmax(mean - both["min_value"], both["max_value"] - mean)
    has_mean = np.isfinite(mean)
    # A bucket holding +-inf has no finite spread on record: from there on the bound is unknown (inf).
    unknown = has_mean & ~np.isfinite(spread)
    values = ema(mean, weight, both["count"])[n_lead:]
    bound = ema(np.where(has_mean & ~unknown, spread, np.nan), weight, both["count"])
    bound = np.where(np.isfinite(bound), bound, 0.0)
    if unknown.any():
        bound[np.argmax(unknown):] = np.inf
    return rec["last_step"], values, bound[n_lead:]


def lead_rows(weight: float) -> int:
    """Rows of history before a zoomed range whose smoothing weight still exceeds LEAD_EPSILON."""
    if weight <= 0.0:
        return 0
    return int(math.ceil(math.log(LEAD_EPSILON) / math.log(weight)))


# ---- a session's view of one run ------------------------------------------------------------------------

@dataclass
class Window:
    """What a session holds of one key: at most `groups` records for steps [lo, hi], groups `gw` wide."""

    lo: int
    hi: int
    gw: int
    records: dict
    lead: dict = field(default_factory=empty_records)
    lead_weight: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.records.values()) + sum(a.nbytes for a in self.lead.values())


@dataclass
class MetricHistory:
    """A bounded, incremental view of one run's metrics for charts: per key at most `max_points`
    drawn points (min/max groups), whatever the number of logged steps.

    `update(store)` reads, in one snapshot, what changed since the last call: the groups at the end
    that grew and any new ones; when the run outgrows the groups, their width doubles and the window
    is read again (a few thousand bucket rows). `zoom(lo, hi)` narrows the view to a step range, read
    at full detail when its rows fit; `zoom(None)` follows the whole run again. `started` is the run's
    start time when read: a resumed run may rewrite steps, so pages drop a view whose run restarted.
    """

    run_id: str
    started: float | None = None
    max_points: int = MAX_POINTS
    x_range: tuple[int, int] | None = None   # steps shown; None follows the whole run
    last_step: int = -1
    rows: dict = field(default_factory=dict)       # key -> rows logged (all of them, not just drawn)
    split_of: dict = field(default_factory=dict)   # key -> "train" | "val" | ...
    windows: dict = field(default_factory=dict)    # key -> Window
    first_step: dict = field(default_factory=dict)  # key -> first logged step
    _spe: int | None = None
    _origin: float | None = None

    @property
    def groups(self) -> int:
        return (self.max_points - 1) // 2

    def zoom(self, x_range: tuple[int, int] | None) -> None:
        x_range = None if x_range is None else (int(x_range[0]), int(x_range[1]))
        if x_range != self.x_range:
            self.x_range = x_range
            self.windows.clear()

    def update(self, store, smoothing: float = 0.0) -> int:
        """Bring the view up to date; returns how many rows were logged since the last call."""
        with store.transaction() as conn:  # one snapshot: buckets and raw rows agree
            found = summary(conn, self.run_id)
            new = sum(n for _, _, _, n in found.values()) - sum(self.rows.values())
            for key, (split, first, last, n) in found.items():
                self.split_of.setdefault(key, split)
                self.first_step[key] = first
                self.rows[key] = n
                lo, hi = (first, last) if self.x_range is None else (max(first, self.x_range[0]),
                                                                     min(last, self.x_range[1]))
                self.windows[key] = self._refresh(conn, key, lo, hi, self.windows.get(key),
                                                  smoothing if split != "val" else 0.0)
            if found:
                self.last_step = max(last for _, _, last, _ in found.values())
                if self._origin is None:
                    self._origin = conn.execute(
                        "SELECT MIN(first_wall) FROM metric_buckets INDEXED BY metric_buckets_top WHERE run_id=? "
                        f"AND level={LEVELS}", (self.run_id,)).fetchone()[0]
                if self._spe is None:
                    key = max(found, key=lambda k: found[k][3])
                    self._spe = steps_per_epoch(conn, self.run_id, key)
        return max(new, 0)

    def _refresh(self, conn, key: str, lo: int, hi: int, old: Window | None, smoothing: float) -> Window:
        if lo > hi:
            return Window(lo, hi, 1, empty_records())
        if (old is not None and old.lo == lo and hi >= old.hi and old.gw > 1
                and hi // old.gw - lo // old.gw + 1 <= self.groups):
            # Same groups: re-read from the last group on (it may have grown), keep the others.
            if hi == old.hi:
                window = old
            else:
                records = old.records
                n = n_records(records)
                start = max(lo, int(records["first_step"][-1]) // old.gw * old.gw) if n else lo
                keep = {c: v[:-1] for c, v in records.items()} if n else empty_records()
                tail, _ = read_window(conn, self.run_id, key, start, hi, groups=self.groups, gw=old.gw)
                window = Window(lo, hi, old.gw, concat([keep, tail]), old.lead, old.lead_weight)
        elif old is not None and old.lo == lo and old.hi == hi:
            window = old
        else:
            records, gw = read_window(conn, self.run_id, key, lo, hi, groups=self.groups)
            window = Window(lo, hi, gw, records)
        if window.lead_weight != smoothing:
            window.lead, window.lead_weight = self._lead(conn, key, window, smoothing), smoothing
        return window

    def _lead(self, conn, key: str, window: Window, smoothing: float) -> dict:
        """Records before the window, enough that smoothing enters it as the whole series' would."""
        first = self.first_step.get(key, window.lo)
        need = lead_rows(smoothing)
        if need == 0 or window.lo <= first:
            return empty_records()
        rows = max(1.0, window.records["rows"].sum())
        span_per_row = (window.hi - window.lo + 1) / rows
        lo = max(first, window.lo - int(math.ceil(need * span_per_row * 2)) - window.gw)
        # At the window's own resolution: a window of raw rows gets a raw lead (at most ~2 * 1375 rows
        # for the heaviest smoothing, 0.99), so its smoothed line is the full series' to 1e-6.
        records, _ = read_window(conn, self.run_id, key, lo, window.lo - 1, groups=self.groups, gw=window.gw)
        return records

    # ---- what the charts draw -----------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self.rows)

    def points(self, key: str) -> int:
        """Rows logged for `key` (not what is drawn: see `drawn`)."""
        return self.rows.get(key, 0)

    def drawn(self, key: str) -> dict[str, np.ndarray]:
        window = self.windows.get(key)
        return drawn_points(window.records) if window is not None else {n: np.zeros(0) for n in _POINT}

    def held_points(self) -> int:
        """Records held over every key: the session's memory is this times a few dozen bytes."""
        return sum(n_records(w.records) + n_records(w.lead) for w in self.windows.values())

    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.windows.values())

    def steps_per_epoch(self) -> float | None:
        return float(self._spe) if self._spe else None

    def to_x(self, step, epoch, wall, x_axis: str = "step", steps_per_epoch: float | None = None) -> np.ndarray:
        if x_axis == "step":
            return np.asarray(step)
        if x_axis == "epoch":
            spe = steps_per_epoch or self.steps_per_epoch()
            return np.asarray(step) / spe if spe else np.asarray(epoch)
        if x_axis == "wall":
            return np.asarray(wall) - (self._origin or 0.0)
        raise ValueError(f"x_axis={x_axis!r}; use one of step, epoch, wall")

    def series(self, key: str, x_axis: str = "step", steps_per_epoch: float | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the drawn points of one key (at most `max_points`), x by step, fractional epoch
        or seconds since the run's first logged row."""
        p = self.drawn(key)
        return self.to_x(p["step"], p["epoch"], p["wall"], x_axis, steps_per_epoch), p["value"]

    def smoothed(self, key: str, weight: float, x_axis: str = "step", steps_per_epoch: float | None = None, *,
                 bound: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(x, smoothed y, error bound or None) at each drawn group's last point; see `smooth`."""
        window = self.windows.get(key)
        if window is None or not n_records(window.records):
            return np.zeros(0), np.zeros(0), np.zeros(0) if bound else None
        lead = window.lead if window.lead_weight == weight else None
        steps, values, bound = smooth(window.records, weight, lead, bound=bound)
        r = window.records
        return self.to_x(steps, r["last_epoch"], r["last_wall"], x_axis, steps_per_epoch), values, bound
