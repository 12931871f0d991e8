"""Downsampled metric histories: min/max buckets kept next to the raw metric rows.

A run may log millions of rows; a chart draws about a thousand points. The store keeps, per run and
metric key, summaries of aligned step buckets at `LEVELS` resolutions (level L covers steps
[b * 8**L, (b + 1) * 8**L)): row count, finite count and sum, the first, smallest, largest and last
point (step, epoch, wall time, value). They are written in the same transaction as the raw rows
(`add_rows`, called by `Store.write_metrics`), so they never disagree with them, and a resumed run's
truncation rebuilds only the buckets it cut (`truncate`).

`read_window` answers "this series, this step range, at most N points" from a few thousand bucket
rows whatever the history's length: each returned group holds the exact min and max of its rows and
the last group ends with the range's last point. `MetricHistory` is a session's bounded view of one
run: at most `max_points` drawn points per key, updated incrementally, zoomable to a step range.
Raw rows stay the truth (CSV export, final and best metrics); this module only summarises them.

    >>> store = Store(path)                                       # doctest: +SKIP
    >>> window = read_window(store.connect(), run_id, "train_loss", 0, 999_999, groups=499)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from studio.runs.store import BUCKET_LEVELS, BUCKETS_BACKFILLED

BASE = 8        # each level's buckets are 8x wider than the level below
LEVELS = BUCKET_LEVELS  # widths 8 .. 8**8 (16.8M) steps; level 0 is the raw rows
MAX_POINTS = 1000
# Smoothing reads this many times the EMA's memory before a zoomed range, so what is cut off weighs < 1e-6.
LEAD_EPSILON = 1e-6
_NUMPY_ROWS = 2000  # a write with more rows of one key than this aggregates them with numpy

# The bucket table's DDL lives with the store's schema (studio.runs.store), which opens without numpy.
BACKFILL_FLAG = BUCKETS_BACKFILLED

# The columns of a summary record, in table order after (run_id, key, level, bucket, split).
COLUMNS = ("rows", "count", "sum", "first_step", "first_epoch", "first_wall",
           "min_value", "min_step", "min_epoch", "min_wall", "max_value", "max_step", "max_epoch", "max_wall",
           "last_step", "last_epoch", "last_wall", "last_value")
_POINT = ("step", "epoch", "wall", "value")
_INSERT = (f"INSERT INTO metric_buckets (run_id, key, level, bucket, split, {', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' * (5 + len(COLUMNS)))})")
# Appending rows to a bucket that already holds earlier ones: ties keep the earlier point (as argmin does).
_NEW_MIN = "min_value IS NULL OR excluded.min_value < min_value"
_NEW_MAX = "max_value IS NULL OR excluded.max_value > max_value"
_UPSERT = _INSERT + f""" ON CONFLICT (run_id, key, level, bucket) DO UPDATE SET
    rows = rows + excluded.rows, count = count + excluded.count, sum = sum + excluded.sum,
    min_step = CASE WHEN {_NEW_MIN} THEN excluded.min_step ELSE min_step END,
    min_epoch = CASE WHEN {_NEW_MIN} THEN excluded.min_epoch ELSE min_epoch END,
    min_wall = CASE WHEN {_NEW_MIN} THEN excluded.min_wall ELSE min_wall END,
    min_value = CASE WHEN {_NEW_MIN} THEN excluded.min_value ELSE min_value END,
    max_step = CASE WHEN {_NEW_MAX} THEN excluded.max_step ELSE max_step END,
    max_epoch = CASE WHEN {_NEW_MAX} THEN excluded.max_epoch ELSE max_epoch END,
    max_wall = CASE WHEN {_NEW_MAX} THEN excluded.max_wall ELSE max_wall END,
    max_value = CASE WHEN {_NEW_MAX} THEN excluded.max_value ELSE max_value END,
    last_step = excluded.last_step, last_epoch = excluded.last_epoch, last_wall = excluded.last_wall,
    last_value = excluded.last_value"""
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM metric_buckets"


def width(level: int) -> int:
    return BASE ** level


# ---- summary records: a dict of equal-length numpy columns ------------------------------------------

def _empty() -> dict:
    return {c: np.zeros(0) for c in COLUMNS}


def records_from_points(step, epoch, wall, value) -> dict:
    """One record per raw point (a bucket of one row)."""
    step, epoch, wall = (np.asarray(a, dtype=np.float64) for a in (step, epoch, wall))
    value = np.asarray(value, dtype=np.float64)
    finite = np.isfinite(value)
    shown = ~np.isnan(value)  # +-inf is drawn (at the axis edge); NaN is a gap
    rec = {"rows": np.ones(len(step)), "count": finite.astype(np.float64), "sum": np.where(finite, value, 0.0),
           "last_value": value}
    for prefix in ("first", "last", "min", "max"):
        for name, col in zip(("step", "epoch", "wall"), (step, epoch, wall), strict=True):
            rec[f"{prefix}_{name}"] = col if prefix in ("first", "last") else np.where(shown, col, np.nan)
    rec["min_value"] = rec["max_value"] = value
    return rec


def _starts(group: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))


def merge(rec: dict, group) -> dict:
    """Records (in step order) merged per run of equal `group` ids: sums add, min/max keep the first
    extreme (earliest step on ties), first/last come from the ends."""
    group = np.asarray(group)
    n = len(group)
    if n == 0:
        return _empty()
    starts = _starts(group)
    ends = np.append(starts[1:], n) - 1
    out = {c: np.add.reduceat(rec[c], starts) for c in ("rows", "count", "sum")}
    for c in ("first_step", "first_epoch", "first_wall"):
        out[c] = rec[c][starts]
    for c in ("last_step", "last_epoch", "last_wall", "last_value"):
        out[c] = rec[c][ends]
    order_in = np.arange(n)
    for kind, sign in (("min", 1.0), ("max", -1.0)):
        v = rec[f"{kind}_value"]
        missing = np.isnan(v)
        # Sort key per group: present values first, then by value (max: descending), then earlier step.
        group_index = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))
        pick = np.lexsort((order_in, np.where(missing, 0.0, sign * v), missing, group_index))
        first = pick[starts]  # sorted by group first, so each group's best is at its start offset
        for name in ("value", "step", "epoch", "wall"):
            out[f"{kind}_{name}"] = rec[f"{kind}_{name}"][first]
    return out


def concat(parts: list[dict]) -> dict:
    parts = [p for p in parts if len(p["rows"])]
    if not parts:
        return _empty()
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


def _size(rec: dict) -> int:
    return len(rec["rows"])


# ---- writing ------------------------------------------------------------------------------------------

def _bucket_rows(run_id: str, key: str, split: str, level: int, buckets: np.ndarray, rec: dict) -> list[tuple]:
    cols = [rec[c] for c in COLUMNS]
    out = []
    for i, b in enumerate(buckets.tolist()):
        values = []
        for c, col in zip(COLUMNS, cols, strict=True):
            v = float(col[i])
            if math.isnan(v):
                values.append(None)
            elif c in ("rows", "count") or c.endswith(("_step", "_epoch")):
                values.append(int(v))
            else:
                values.append(v)
        out.append((run_id, key, level, int(b), split, *values))
    return out


def _levels(rec: dict, steps) -> list[tuple[int, np.ndarray, dict]]:
    """(level, bucket ids, records) for every level, each built from the one below."""
    out = []
    ids = np.asarray(steps, dtype=np.int64)
    for level in range(1, LEVELS + 1):
        ids = ids // BASE
        rec = merge(rec, ids)
        ids = ids[_starts(ids)]
        out.append((level, ids, rec))
    return out


def _point(step: int, epoch: int, wall: float, value: float | None) -> list:
    """A one-row record as a list in COLUMNS order (the writer's pure-Python path: a flush holds a
    few dozen rows, too few for numpy to pay off)."""
    if value is None or value != value:  # NaN: a row, but no min, max or smoothing weight
        return [1, 0, 0.0, step, epoch, wall, None, None, None, None, None, None, None, None, step, epoch, wall, None]
    finite = value not in (math.inf, -math.inf)
    return [1, int(finite), value if finite else 0.0, step, epoch, wall, value, step, epoch, wall,
            value, step, epoch, wall, step, epoch, wall, value]


def _fold(acc: list, rec: list) -> None:
    """Add a later record to an accumulated one, in place (ties keep the earlier extreme)."""
    acc[0] += rec[0]
    acc[1] += rec[1]
    acc[2] += rec[2]
    if rec[6] is not None and (acc[6] is None or rec[6] < acc[6]):
        acc[6:10] = rec[6:10]
    if rec[10] is not None and (acc[10] is None or rec[10] > acc[10]):
        acc[10:14] = rec[10:14]
    acc[14:18] = rec[14:18]


def add_rows(conn, run_id: str, rows: list[tuple]) -> None:
    """Fold new (step, epoch, split, key, value, wall_time) rows into the run's buckets. Called inside
    the transaction that inserts them; rows of one key come after the ones already stored."""
    by_key: dict[str, list] = {}
    for r in rows:
        by_key.setdefault(r[3], []).append(r)
    statements = []
    for key, part in by_key.items():
        part.sort(key=lambda r: r[0])  # stable: same-step rows keep their order
        split = part[0][2]
        if len(part) > _NUMPY_ROWS:  # a bulk write (an import, a benchmark): numpy per level
            step = np.array([r[0] for r in part], dtype=np.int64)
            rec = records_from_points(step, [r[1] for r in part], [r[5] for r in part],
                                      [np.nan if r[4] is None else r[4] for r in part])
            for level, ids, merged in _levels(rec, step):
                statements += _bucket_rows(run_id, key, split, level, ids, merged)
            continue
        level_rows: dict[int, list] = {}  # bucket -> record, built from the rows, then from the level below
        for step, epoch, _, _, value, wall in part:
            rec = _point(step, epoch, wall, value)
            acc = level_rows.get(step // BASE)
            if acc is None:
                level_rows[step // BASE] = rec
            else:
                _fold(acc, rec)
        for level in range(1, LEVELS + 1):
            statements += [(run_id, key, level, b, split, *rec) for b, rec in level_rows.items()]
            upper: dict[int, list] = {}
            for b, rec in level_rows.items():
                acc = upper.get(b // BASE)
                if acc is None:
                    upper[b // BASE] = list(rec)
                else:
                    _fold(acc, rec)
            level_rows = upper
    conn.executemany(_UPSERT, statements)


def rebuild(conn, run_id: str) -> None:
    """Recompute every bucket of a run from its raw rows (the backfill of runs stored before the
    buckets existed)."""
    conn.execute("DELETE FROM metric_buckets WHERE run_id=?", (run_id,))
    cur = conn.cursor()
    cur.row_factory = None
    keys = [k for (k,) in cur.execute("SELECT DISTINCT key FROM metrics WHERE run_id=?", (run_id,))]
    for key in keys:
        rows = cur.execute("SELECT step, epoch, split, value, wall_time FROM metrics WHERE run_id=? AND key=? "
                           "ORDER BY step, rowid", (run_id, key)).fetchall()
        step = np.array([r[0] for r in rows], dtype=np.int64)
        rec = records_from_points(step, [r[1] for r in rows], [r[4] for r in rows],
                                  [np.nan if r[3] is None else r[3] for r in rows])
        statements = []
        for level, ids, merged in _levels(rec, step):
            statements += _bucket_rows(run_id, key, rows[0][2], level, ids, merged)
        conn.executemany(_INSERT, statements)


def truncate(conn, run_id: str, after_step: int) -> None:
    """Drop what steps > after_step contributed, once their raw rows are deleted. Each level's cut
    bucket is rebuilt from the whole buckets below it plus the rebuilt cut bucket of the level below
    (at most 8 records a level), so a resume costs the same at step 100 or 10,000,000."""
    cur = conn.cursor()
    cur.row_factory = None
    splits = dict(cur.execute(f"SELECT key, MIN(split) FROM metric_buckets INDEXED BY metric_buckets_top "
                              f"WHERE run_id=? AND level={LEVELS} "
                              "GROUP BY key", (run_id,)).fetchall())
    cut_at = after_step + 1  # the first step that goes
    for level in range(1, LEVELS + 1):
        conn.execute("DELETE FROM metric_buckets WHERE run_id=? AND level=? AND bucket>=?",
                     (run_id, level, cut_at // width(level)))
    for key, split in splits.items():
        partial = _empty()  # what is left of the cut bucket of the level below
        for level in range(1, LEVELS + 1):
            w, below = width(level), width(level - 1)
            start = cut_at // w * w
            if level == 1:
                part = _raw(conn, run_id, key, start, after_step)
            else:
                whole = _select(conn, run_id, key, level - 1, start // below, cut_at // below - 1)
                part = concat([whole, partial])
            partial = merge(part, np.zeros(_size(part), dtype=np.int64))
            if _size(partial):
                conn.executemany(_INSERT, _bucket_rows(run_id, key, split, level, np.array([cut_at // w]), partial))


def backfill(conn) -> int:
    """Build the buckets of every run that has raw rows but none (a store from before they existed)."""
    cur = conn.cursor()
    cur.row_factory = None
    runs = [r for (r,) in cur.execute("SELECT id FROM runs WHERE EXISTS (SELECT 1 FROM metrics WHERE run_id=runs.id) "
                                      "AND NOT EXISTS (SELECT 1 FROM metric_buckets WHERE run_id=runs.id)")]
    for run_id in runs:
        rebuild(conn, run_id)
    return len(runs)


# ---- reading ------------------------------------------------------------------------------------------

def _select(conn, run_id: str, key: str, level: int, b0: int, b1: int) -> dict:
    cur = conn.cursor()
    cur.row_factory = None
    rows = cur.execute(f"{_SELECT} WHERE run_id=? AND key=? AND level=? AND bucket BETWEEN ? AND ? ORDER BY bucket",
                       (run_id, key, level, b0, b1)).fetchall()
    if not rows:
        return _empty()
    a = np.array(rows, dtype=np.float64).reshape(-1, len(COLUMNS))  # None -> NaN
    return {c: a[:, i] for i, c in enumerate(COLUMNS)}


def _raw(conn, run_id: str, key: str, s0: int, s1: int) -> dict:
    cur = conn.cursor()
    cur.row_factory = None
    rows = cur.execute("SELECT step, epoch, wall_time, value FROM metrics WHERE run_id=? AND step BETWEEN ? AND ? "
                       "AND key=? ORDER BY step, rowid", (run_id, s0, s1, key)).fetchall()
    if not rows:
        return _empty()
    a = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return records_from_points(a[:, 0], a[:, 1], a[:, 2], a[:, 3])


def cover(conn, run_id: str, key: str, lo: int, hi: int, level: int = LEVELS) -> dict:
    """Records covering steps [lo, hi] exactly: the widest aligned buckets that fit, narrower ones
    towards both ends, raw rows for what is left (at most 7 buckets per level and side)."""
    if lo > hi:
        return _empty()
    if level == 0:
        return _raw(conn, run_id, key, lo, hi)
    w = width(level)
    first, last = -(-lo // w), (hi + 1) // w - 1  # the whole buckets inside [lo, hi]
    if first > last:
        return cover(conn, run_id, key, lo, hi, level - 1)
    return concat([cover(conn, run_id, key, lo, first * w - 1, level - 1),
                   _select(conn, run_id, key, level, first, last),
                   cover(conn, run_id, key, (last + 1) * w, hi, level - 1)])


def total(conn, run_id: str, key: str, lo: int, hi: int) -> dict:
    """One record summarising every row of `key` with lo <= step <= hi (exact, from a few buckets)."""
    rec = cover(conn, run_id, key, lo, hi)
    return merge(rec, np.zeros(_size(rec), dtype=np.int64))


def group_width(lo: int, hi: int, groups: int) -> int:
    """The smallest power of two whose aligned groups overlapping [lo, hi] number at most `groups`."""
    gw = 1
    while hi // gw - lo // gw + 1 > groups:
        gw *= 2
    return gw


def read_window(conn, run_id: str, key: str, lo: int, hi: int, *, groups: int = (MAX_POINTS - 1) // 2,
                gw: int | None = None) -> tuple[dict, int]:
    """Steps [lo, hi] of one key as at most `groups` records (exact min, max, sums of their rows) and
    the group width used (1: every raw row is its own record, when they fit in 2 * groups + 1 points).

    Groups are aligned to multiples of the width, so the same step always falls in the same group;
    the first and last groups are cut at lo and hi and summarised exactly from narrower buckets.
    """
    if lo > hi:
        return _empty(), 1
    if gw is None:
        if total(conn, run_id, key, lo, hi)["rows"].sum() <= 2 * groups + 1:
            return _raw(conn, run_id, key, lo, hi), 1
        gw = group_width(lo, hi, groups)
    if gw == 1:
        return _raw(conn, run_id, key, lo, hi), 1
    level = min(LEVELS, int(math.log(gw, BASE) + 1e-9))
    w = width(level)
    g0, g1 = -(-lo // gw), (hi + 1) // gw - 1  # whole groups inside [lo, hi]
    if g0 > g1:
        return total(conn, run_id, key, lo, hi), gw
    if level == 0:
        inner = _raw(conn, run_id, key, g0 * gw, (g1 + 1) * gw - 1)
    else:
        inner = _select(conn, run_id, key, level, g0 * gw // w, (g1 + 1) * gw // w - 1)
    inner = merge(inner, (inner["first_step"] // gw).astype(np.int64))
    return concat([total(conn, run_id, key, lo, g0 * gw - 1), inner, total(conn, run_id, key, (g1 + 1) * gw, hi)]), gw


def summary(conn, run_id: str) -> dict[str, tuple[str, int, int, int]]:
    """key -> (split, first step, last step, rows) of every metric of a run, from the widest buckets."""
    cur = conn.cursor()
    cur.row_factory = None
    rows = cur.execute("SELECT key, MIN(split), MIN(first_step), MAX(last_step), SUM(rows) FROM metric_buckets "
                       f"INDEXED BY metric_buckets_top WHERE run_id=? AND level={LEVELS} "
                       "GROUP BY key ORDER BY MIN(first_step), key",
                       (run_id,)).fetchall()
    return {k: (s, int(a), int(b), int(n)) for k, s, a, b, n in rows}


def steps_per_epoch(conn, run_id: str, key: str) -> int | None:
    """The last step logged in epoch 0 once epoch 1 has begun (None before), found by descending from
    the widest bucket to the raw rows: about one small query per level."""
    cur = conn.cursor()
    cur.row_factory = None
    lo, hi = 0, width(LEVELS + 1)
    for level in range(LEVELS, 0, -1):
        w = width(level)
        rows = cur.execute("SELECT bucket, first_epoch, last_epoch FROM metric_buckets WHERE run_id=? AND key=? "
                           "AND level=? AND bucket BETWEEN ? AND ? ORDER BY bucket",
                           (run_id, key, level, lo // w, hi // w)).fetchall()
        if level == LEVELS and (not rows or rows[0][1] != 0 or max(r[2] for r in rows) < 1):
            return None
        in_zero = [b for b, first_epoch, _ in rows if first_epoch == 0]
        if not in_zero:
            return None
        lo, hi = max(lo, in_zero[-1] * w), min(hi, (in_zero[-1] + 1) * w - 1)
    row = cur.execute("SELECT MAX(step) FROM metrics WHERE run_id=? AND key=? AND step BETWEEN ? AND ? AND epoch=0",
                      (run_id, key, lo, hi)).fetchone()
    return None if row[0] is None else int(row[0])


# ---- drawing ------------------------------------------------------------------------------------------

def drawn_points(rec: dict) -> dict[str, np.ndarray]:
    """The points a chart draws for these records: each one's min and max (in step order) and the
    last point, as columns step, epoch, wall, value. A record of one row gives one point."""
    cols = {}
    for name in _POINT:
        parts = [rec[f"min_{name}"], rec[f"max_{name}"], rec[f"last_{name}"][-1:]]
        cols[name] = np.concatenate(parts) if _size(rec) else np.zeros(0)
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
    lead = lead if lead is not None and _size(lead) else _empty()
    both = concat([lead, rec])
    n_lead = _size(lead)
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
    lead: dict = field(default_factory=_empty)
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
            return Window(lo, hi, 1, _empty())
        if (old is not None and old.lo == lo and hi >= old.hi and old.gw > 1
                and hi // old.gw - lo // old.gw + 1 <= self.groups):
            # Same groups: re-read from the last group on (it may have grown), keep the others.
            if hi == old.hi:
                window = old
            else:
                records = old.records
                n = _size(records)
                start = max(lo, int(records["first_step"][-1]) // old.gw * old.gw) if n else lo
                keep = {c: v[:-1] for c, v in records.items()} if n else _empty()
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
            return _empty()
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
        return sum(_size(w.records) + _size(w.lead) for w in self.windows.values())

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
        if window is None or not _size(window.records):
            return np.zeros(0), np.zeros(0), np.zeros(0) if bound else None
        lead = window.lead if window.lead_weight == weight else None
        steps, values, bound = smooth(window.records, weight, lead, bound=bound)
        r = window.records
        return self.to_x(steps, r["last_epoch"], r["last_wall"], x_axis, steps_per_epoch), values, bound


# ---- from the raw rows ------------------------------------------------------------------------------------

_FINITE = "value BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"


def final_and_best(conn, run_id: str, keys: list[str]) -> dict[str, tuple[float, float, float]]:
    """key -> (last value, smallest finite, largest finite) of each key, read from the raw rows (the
    truth: the buckets are only a summary of them). One pass over the run's rows in SQL, no Python
    object per row; slow for a run of millions of rows, so pages run it in the background."""
    if not keys:
        return {}
    marks = ",".join("?" * len(keys))
    cur = conn.cursor()
    cur.row_factory = None
    extremes = cur.execute(f"SELECT key, MIN(CASE WHEN {_FINITE} THEN value END), "
                           f"MAX(CASE WHEN {_FINITE} THEN value END) FROM metrics WHERE run_id=? AND key IN ({marks}) "
                           "GROUP BY key", (run_id, *keys)).fetchall()
    last = dict(cur.execute(f"SELECT key, value FROM metrics WHERE rowid IN (SELECT MAX(rowid) FROM metrics "
                            f"WHERE run_id=? AND key IN ({marks}) GROUP BY key)", (run_id, *keys)).fetchall())
    nan = float("nan")
    return {k: (nan if last.get(k) is None else last[k], nan if lo is None else lo, nan if hi is None else hi)
            for k, lo, hi in extremes}
