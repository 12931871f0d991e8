"""A run's training time and recent speed, from the wall times of its logged training steps.

Training time is summed over stretches: the logged steps cut where training stopped, i.e. where a step
goes back (a resume restarts from its checkpoint) or a pause is longer than RESUME_GAP_S. It is kept
incrementally, one row per run in `run_timing`, updated in the transaction that writes the metric rows,
so a page reads it in constant time however long the history (reading 1M raw rows took seconds). The
recent rate needs only the last few steps, read through the (run_id, step) index.

    >>> pts = [(1, 0.0), (2, 1.0), (3, 2.5), (2, 400.0), (3, 401.0)]   # stopped at 3, resumed from 1
    >>> training_seconds(pts), recent_rate(pts)
    (3.5, 1.0)
"""

from __future__ import annotations

RESUME_GAP_S = 120.0  # a pause between two logged steps longer than this is not training time (a stop)
RECENT_STEPS = 50  # the ETA uses the rate over this many recent steps of the current stretch

TIMING_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_timing (
    run_id TEXT PRIMARY KEY,
    seconds REAL NOT NULL,            -- training time so far, summed over stretches
    last_step INTEGER NOT NULL,       -- the newest logged training step and its wall time
    last_wall REAL NOT NULL
)
"""
TIMING_BACKFILLED = "run_timing"  # meta key set once the runs a store held before the table were counted

Point = tuple[int, float]


def train_points(rows) -> list[Point]:
    """(step, wall time) of each logged training step, once, in time order, from (step, epoch, split,
    key, value, wall_time) rows; a step's keys share one wall time."""
    seen, out = set(), []
    for step, _epoch, split, _key, _value, wall in rows:
        if split == "train" and wall is not None:
            once = (step, round(wall, 3))
            if once not in seen:
                seen.add(once)
                out.append((int(step), float(wall)))
    return sorted(out, key=lambda p: (p[1], p[0]))


def _continues(prev: Point, p: Point) -> bool:
    return p[0] >= prev[0] and p[1] - prev[1] <= RESUME_GAP_S


def fold(points: list[Point], seconds: float = 0.0, last: Point | None = None) -> tuple[float, Point | None]:
    """Training time after `points`, continuing from `seconds` with `last` the newest point before."""
    for p in points:
        if last is not None and _continues(last, p):
            seconds += p[1] - last[1]
        last = p
    return seconds, last


def training_seconds(points: list[Point]) -> float | None:
    """Seconds spent training (None: nothing logged)."""
    return fold(points)[0] if points else None


def recent_rate(points: list[Point]) -> float | None:
    """Steps per second over the last RECENT_STEPS steps of the current stretch (None: too few)."""
    if not points:
        return None
    start = len(points) - 1
    while start > 0 and _continues(points[start - 1], points[start]):
        start -= 1
    last = points[start:][-RECENT_STEPS:]
    if len(last) < 2 or last[-1][1] <= last[0][1]:
        return None
    return (last[-1][0] - last[0][0]) / (last[-1][1] - last[0][1])


# ---- in the store (the connection is the store's; these run inside its transactions) -----------------

def add_rows(conn, run_id: str, rows) -> None:
    """Count newly written metric rows into the run's training time."""
    points = train_points(rows)
    if not points:
        return
    row = conn.execute("SELECT seconds, last_step, last_wall FROM run_timing WHERE run_id=?", (run_id,)).fetchone()
    seconds, last = (row[0], (row[1], row[2])) if row is not None else (0.0, None)
    seconds, last = fold(points, seconds, last)
    conn.execute("INSERT OR REPLACE INTO run_timing (run_id, seconds, last_step, last_wall) VALUES (?, ?, ?, ?)",
                 (run_id, seconds, last[0], last[1]))


def backfill(conn) -> None:
    """Count every run's rows once (a store from before the table existed)."""
    for (run_id,) in conn.execute("SELECT id FROM runs").fetchall():
        rows = conn.execute("SELECT step, epoch, split, key, value, wall_time FROM metrics "
                            "WHERE run_id=? AND split='train'", (run_id,))
        conn.execute("DELETE FROM run_timing WHERE run_id=?", (run_id,))
        add_rows(conn, run_id, rows)


def read(conn, run_id: str) -> tuple[float | None, list[Point]]:
    """(training seconds or None, the recent points the rate is measured on)."""
    row = conn.execute("SELECT seconds FROM run_timing WHERE run_id=?", (run_id,)).fetchone()
    recent = conn.execute("SELECT step, epoch, split, key, value, wall_time FROM metrics WHERE run_id=? AND "
                          "split='train' ORDER BY step DESC LIMIT ?", (run_id, 16 * RECENT_STEPS))
    return (row[0] if row is not None else None), train_points(recent)
