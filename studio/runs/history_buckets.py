"""The min/max bucket records of the metric histories, and keeping the table in step with the raw rows.

A record is a dict of equal-length numpy columns (`COLUMNS`), one entry per bucket: row count, finite
count and sum, the first, smallest, largest and last point (step, epoch, wall time, value). The store
calls `add_rows` in the transaction that inserts the raw rows (`Store.write_metrics`), so the buckets
never disagree with them; a resumed run's truncation rebuilds only the buckets it cut (`truncate`);
a store from before the table existed is filled once (`backfill`). What reads the buckets back is
`studio.runs.history_read`; this module writes them and builds the records both use.

    >>> rec = records_from_points([1, 2, 9], [0, 0, 0], [0.0, 0.5, 4.0], [3.0, 1.0, 2.0])
    >>> merge(rec, [0, 0, 1])["min_value"].tolist()   # steps 1 and 2 share bucket 0 of level 1
    [1.0, 2.0]
"""

from __future__ import annotations

import math

import numpy as np

from studio.runs.history_schema import BASE, COLUMNS, LEVELS, width

_NUMPY_ROWS = 2000  # a write with more rows of one key than this aggregates them with numpy

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


# ---- summary records: a dict of equal-length numpy columns ------------------------------------------

def empty_records() -> dict:
    """No records (every column empty)."""
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


def run_starts(group: np.ndarray) -> np.ndarray:
    """Where each run of equal ids in `group` starts."""
    return np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))


def merge(rec: dict, group) -> dict:
    """Records (in step order) merged per run of equal `group` ids: sums add, min/max keep the first
    extreme (earliest step on ties), first/last come from the ends."""
    group = np.asarray(group)
    n = len(group)
    if n == 0:
        return empty_records()
    starts = run_starts(group)
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
        return empty_records()
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


def n_records(rec: dict) -> int:
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
        ids = ids[run_starts(ids)]
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
        partial = empty_records()  # what is left of the cut bucket of the level below
        for level in range(1, LEVELS + 1):
            w, below = width(level), width(level - 1)
            start = cut_at // w * w
            if level == 1:
                part = raw_records(conn, run_id, key, start, after_step)
            else:
                whole = level_records(conn, run_id, key, level - 1, start // below, cut_at // below - 1)
                part = concat([whole, partial])
            partial = merge(part, np.zeros(n_records(part), dtype=np.int64))
            if n_records(partial):
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


# ---- reading one level -------------------------------------------------------------------------------

def level_records(conn, run_id: str, key: str, level: int, b0: int, b1: int) -> dict:
    """The stored buckets b0..b1 of one level, in order (NULL values come back as NaN)."""
    cur = conn.cursor()
    cur.row_factory = None
    rows = cur.execute(f"{_SELECT} WHERE run_id=? AND key=? AND level=? AND bucket BETWEEN ? AND ? ORDER BY bucket",
                       (run_id, key, level, b0, b1)).fetchall()
    if not rows:
        return empty_records()
    a = np.array(rows, dtype=np.float64).reshape(-1, len(COLUMNS))  # None -> NaN
    return {c: a[:, i] for i, c in enumerate(COLUMNS)}


def raw_records(conn, run_id: str, key: str, s0: int, s1: int) -> dict:
    """One record per raw metric row with s0 <= step <= s1."""
    cur = conn.cursor()
    cur.row_factory = None
    rows = cur.execute("SELECT step, epoch, wall_time, value FROM metrics WHERE run_id=? AND step BETWEEN ? AND ? "
                       "AND key=? ORDER BY step, rowid", (run_id, s0, s1, key)).fetchall()
    if not rows:
        return empty_records()
    a = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return records_from_points(a[:, 0], a[:, 1], a[:, 2], a[:, 3])
