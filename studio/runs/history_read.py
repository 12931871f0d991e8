"""Reading the metric histories back: a step range of one key as at most N exact min/max groups.

`read_window` answers "this series, this step range, at most N points" from a few thousand bucket
rows whatever the history's length: each returned group holds the exact min and max of its rows and
the last group ends with the range's last point. `summary` and `steps_per_epoch` read what a view
needs to know of a run from the widest buckets. Raw rows stay the truth (CSV export, final and best
metrics: `final_and_best`); the buckets only summarise them. Writing them is
`studio.runs.history_buckets`; a session's view of a run is `studio.runs.history.MetricHistory`.

    >>> store = Store(path)                                       # doctest: +SKIP
    >>> window = read_window(store.connect(), run_id, "train_loss", 0, 999_999, groups=499)  # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np

from studio.runs.history_buckets import concat, empty_records, level_records, merge, n_records, raw_records
from studio.runs.history_schema import BASE, LEVELS, width

MAX_POINTS = 1000  # a chart draws about this many points of a series, whatever its length


# ---- from the buckets ---------------------------------------------------------------------------------

def cover(conn, run_id: str, key: str, lo: int, hi: int, level: int = LEVELS) -> dict:
    """Records covering steps [lo, hi] exactly: the widest aligned buckets that fit, narrower ones
    towards both ends, raw rows for what is left (at most 7 buckets per level and side)."""
    if lo > hi:
        return empty_records()
    if level == 0:
        return raw_records(conn, run_id, key, lo, hi)
    w = width(level)
    first, last = -(-lo // w), (hi + 1) // w - 1  # the whole buckets inside [lo, hi]
    if first > last:
        return cover(conn, run_id, key, lo, hi, level - 1)
    return concat([cover(conn, run_id, key, lo, first * w - 1, level - 1),
                   level_records(conn, run_id, key, level, first, last),
                   cover(conn, run_id, key, (last + 1) * w, hi, level - 1)])


def total(conn, run_id: str, key: str, lo: int, hi: int) -> dict:
    """One record summarising every row of `key` with lo <= step <= hi (exact, from a few buckets)."""
    rec = cover(conn, run_id, key, lo, hi)
    return merge(rec, np.zeros(n_records(rec), dtype=np.int64))


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
        return empty_records(), 1
    if gw is None:
        if total(conn, run_id, key, lo, hi)["rows"].sum() <= 2 * groups + 1:
            return raw_records(conn, run_id, key, lo, hi), 1
        gw = group_width(lo, hi, groups)
    if gw == 1:
        return raw_records(conn, run_id, key, lo, hi), 1
    level = min(LEVELS, int(math.log(gw, BASE) + 1e-9))
    w = width(level)
    g0, g1 = -(-lo // gw), (hi + 1) // gw - 1  # whole groups inside [lo, hi]
    if g0 > g1:
        return total(conn, run_id, key, lo, hi), gw
    if level == 0:
        inner = raw_records(conn, run_id, key, g0 * gw, (g1 + 1) * gw - 1)
    else:
        inner = level_records(conn, run_id, key, level, g0 * gw // w, (g1 + 1) * gw // w - 1)
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
