"""The table of the downsampled metric histories, `metric_buckets`: its DDL, levels and columns.

Only the schema, like `studio.runs.timing`'s: the store creates the table when it opens (the CLI opens
the store without numpy, so this module imports nothing), `studio.runs.history_buckets` fills it and
`studio.runs.history_read` reads it. Level L holds the summaries of aligned step buckets
[b * 8**L, (b + 1) * 8**L); level 0 is the raw metric rows themselves.

    >>> width(LEVELS)
    16777216
"""

from __future__ import annotations

BASE = 8  # each level's buckets are 8x wider than the level below
LEVELS = 8  # widths 8 .. 8**8 (16.8M) steps; level 0 is the raw rows

BUCKETS_SCHEMA = """
CREATE TABLE IF NOT EXISTS metric_buckets (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    level INTEGER NOT NULL,           -- width 8**level steps
    bucket INTEGER NOT NULL,          -- covers steps [bucket * width, (bucket + 1) * width)
    split TEXT NOT NULL,
    rows INTEGER NOT NULL,            -- metric rows in the bucket (NaN included)
    count INTEGER NOT NULL,           -- finite values (what smoothing averages)
    sum REAL NOT NULL,                -- of the finite values
    first_step INTEGER NOT NULL, first_epoch INTEGER NOT NULL, first_wall REAL NOT NULL,
    min_value REAL, min_step INTEGER, min_epoch INTEGER, min_wall REAL,   -- NULL when every value is NaN
    max_value REAL, max_step INTEGER, max_epoch INTEGER, max_wall REAL,
    last_step INTEGER NOT NULL, last_epoch INTEGER NOT NULL, last_wall REAL NOT NULL, last_value REAL,
    PRIMARY KEY (run_id, key, level, bucket)
) WITHOUT ROWID
"""
# The widest buckets (a few per key) answer "which keys, from which step to which": a partial index keeps
# that query off the other levels' rows. (SQLite uses it only with the level written as a literal.)
BUCKETS_TOP_INDEX = ("CREATE INDEX IF NOT EXISTS metric_buckets_top ON metric_buckets (run_id, key) "
                     f"WHERE level = {LEVELS}")
BUCKETS_BACKFILLED = "metric_buckets"  # meta key set once every run's buckets were built from its raw rows

# The columns of a summary record, in table order after (run_id, key, level, bucket, split).
COLUMNS = ("rows", "count", "sum", "first_step", "first_epoch", "first_wall",
           "min_value", "min_step", "min_epoch", "min_wall", "max_value", "max_step", "max_epoch", "max_wall",
           "last_step", "last_epoch", "last_wall", "last_value")


def width(level: int) -> int:
    """Steps covered by one bucket of `level` (1 at level 0: a raw row)."""
    return BASE ** level
