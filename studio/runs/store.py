"""The run store: one SQLite database (WAL) at workspace/studio.db holding runs, metrics and events.

It is the only thing the pages, the CLI and the workers share besides the run directories. Every
method opens (or reuses, per thread) its own connection, so Streamlit fragments running on other
threads can read safely while a worker writes. Metric writes go through a `MetricWriter` that
buffers rows and commits them in batches; reads are incremental ("run R since step S") and hit the
(run_id, step) index.

    >>> store = Store()                                   # doctest: +SKIP
    >>> rows = store.read_metrics(run_id, since_step=120, keys=["train_loss"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import StorageError, TrainError
from studio.runs import history_schema, timing
from studio.runs.guarded import GuardedConnection, passes_through
from studio.workspace import workspace_dir

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 10_000
STATUSES = ("queued", "running", "completed", "stopped", "failed", "diverged", "lost", "pruned", "imported")
# Final statuses; `pruned` is a sweep trial ended early by its pruner (it keeps what it logged); `imported` holds
# pretrained weights and no training (studio.pretrained).
FINAL_STATUSES = ("completed", "stopped", "failed", "diverged", "lost", "pruned", "imported")
ACTIVE_STATUSES = ("queued", "running")
RESUMABLE_STATUSES = ("stopped", "failed", "diverged", "lost")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    pid INTEGER,
    heartbeat REAL,
    graph TEXT NOT NULL,              -- the graph document (studio.graph/1 JSON)
    config TEXT NOT NULL,             -- TrainConfig.to_dict() as JSON
    dataset_id TEXT NOT NULL,
    error TEXT,                       -- one human sentence when failed / diverged
    traceback TEXT,
    best_metric REAL,
    best_metric_name TEXT,
    step INTEGER NOT NULL DEFAULT 0,  -- last step whose metrics were committed
    total_steps INTEGER,
    backend TEXT NOT NULL DEFAULT 'local',  -- local | ray (schema 2)
    workers INTEGER NOT NULL DEFAULT 1,     -- data-parallel ranks (schema 2)
    sweep_id TEXT,                    -- the sweep this run is a trial of (schema 2)
    parent_id TEXT,                   -- the run this one derives from: fine-tune, warm start (schema 2)
    tags TEXT NOT NULL DEFAULT '{}'   -- JSON object: trial params and other labels (schema 2)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    split TEXT NOT NULL,              -- train | val | probe
    key TEXT NOT NULL,
    value REAL,                       -- NULL stands for NaN (SQLite cannot store NaN)
    wall_time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run_step ON metrics (run_id, step);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    time REAL NOT NULL,
    level TEXT NOT NULL,              -- info | warning | error
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, time);
"""

_RUN_COLUMNS = (
    "id", "name", "status", "created", "started", "ended", "pid", "heartbeat", "graph", "config",
    "dataset_id", "error", "traceback", "best_metric", "best_metric_name", "step", "total_steps",
    "backend", "workers", "sweep_id", "parent_id", "tags",
)
# Columns added after schema 1, with their definitions: an older store gains them on open.
_ADDED_COLUMNS = {
    "backend": "TEXT NOT NULL DEFAULT 'local'",
    "workers": "INTEGER NOT NULL DEFAULT 1",
    "sweep_id": "TEXT",
    "parent_id": "TEXT",
    "tags": "TEXT NOT NULL DEFAULT '{}'",
}
_UPDATABLE = frozenset(_RUN_COLUMNS) - {"id", "created"}


@dataclass(frozen=True)
class Metric:
    step: int
    epoch: int
    split: str
    key: str
    value: float
    wall_time: float


@dataclass(frozen=True)
class Event:
    time: float
    level: str
    message: str


@dataclass
class RunRecord:
    """One row of `runs`; `graph` and `config` decoded from JSON."""

    id: str
    name: str
    status: str
    created: float
    started: float | None
    ended: float | None
    pid: int | None
    heartbeat: float | None
    graph: dict
    config: dict
    dataset_id: str
    error: str | None
    traceback: str | None
    best_metric: float | None
    best_metric_name: str | None
    step: int
    total_steps: int | None
    backend: str = "local"
    workers: int = 1
    sweep_id: str | None = None
    parent_id: str | None = None
    tags: dict = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        """The record of one row. A JSON column that no longer parses as an object (a row edited by hand, a
        bad copy) reads as empty, and the record's error says so: one damaged run does not hide the others."""
        d, damaged = dict(row), []
        for k in ("graph", "config", "tags"):
            try:
                d[k] = json.loads(d[k])
            except (TypeError, ValueError):
                d[k] = None
            if not isinstance(d[k], dict):
                damaged.append(k)
                d[k] = {}
        if damaged:
            note = (f"the run store's row for this run has a damaged {' and '.join(damaged)} value (not a JSON "
                    f"object); its files in runs/{d['id']}/ are unchanged")
            d["error"] = f"{note}; {d['error']}" if d["error"] else note
        return cls(**d)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES


def default_db_path() -> Path:
    return workspace_dir() / "studio.db"


def storage_message(error: Exception, action: str, path) -> str:
    """What an OS or SQLite failure on the store means for the user and what to do about it."""
    from studio.oserrors import describe_os_error, describe_sqlite_error

    describe = describe_os_error if isinstance(error, OSError) else describe_sqlite_error
    return describe(error, action, path) + "; runs saved before are unchanged"


def store_failure(error: Exception, path, *, opening: bool = False) -> str:
    """`storage_message` for the store at `path`, or, when SQLite cannot read the file as a database (not a
    database, malformed pages), how to set it aside and start a new one."""
    if type(error) is not sqlite3.DatabaseError:
        return storage_message(error, "open the run store" if opening else "read or write the run store", path)
    return (
        f"the run store {str(path)!r} is damaged and cannot be {'opened' if opening else 'read'} (SQLite says: "
        f"{error}); move it aside (rename it to {Path(path).name}.damaged, with its -wal and -shm files if any) and "
        "a new, empty store is created (the run directories under runs/ keep their checkpoints and files)"
    )


class Store:
    """Access to studio.db. Cheap to create; safe to share between threads (one connection each)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        self._local = threading.local()
        self._ensure_schema()

    # ---- connections --------------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use). Autocommit mode; use `transaction()`."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Every failure of this connection, now or later, is a StorageError saying what to do (guarded.py).
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                raw = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            except OSError as e:
                raise StorageError(storage_message(e, "open the run store", self.path)) from e
            except sqlite3.Error as e:
                if passes_through(e):
                    raise
                raise StorageError(store_failure(e, self.path, opening=True)) from e
            raw.row_factory = sqlite3.Row
            conn = GuardedConnection(raw, lambda e: store_failure(e, self.path))
            try:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
            except BaseException:
                raw.close()
                raise
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (other threads close theirs when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def transaction(self, immediate: bool = False) -> _Transaction:
        return _Transaction(self.connect(), immediate)

    def _ensure_schema(self) -> None:
        try:
            self._create_schema()
        except StorageError as e:  # read-only, a directory, disk full, I/O error, damaged: worded as opening
            self.close()
            cause = e.__cause__
            raise StorageError(store_failure(cause, self.path, opening=True) if cause is not None else str(e)) from None

    def _create_schema(self) -> None:
        conn = self.connect()
        with self.transaction(immediate=True):
            # executescript() would commit on its own; run statement by statement inside the transaction
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None or int(row["value"]) < SCHEMA_VERSION:
                have = {r["name"] for r in conn.execute("PRAGMA table_info(runs)")}
                for name, definition in _ADDED_COLUMNS.items():
                    if name not in have:
                        conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {definition}")
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
            elif int(row["value"]) > SCHEMA_VERSION:
                raise TrainError(
                    f"the run store {str(self.path)!r} has schema version {row['value']}, newer than this "
                    f"studio's {SCHEMA_VERSION}; upgrade Neural Studio or point STUDIO_WORKSPACE elsewhere"
                )
            # The downsampled histories (studio.runs.history_schema): the table, and once per store the
            # buckets of the runs it held before the table existed.
            conn.execute(history_schema.BUCKETS_SCHEMA)
            conn.execute(history_schema.BUCKETS_TOP_INDEX)
            conn.execute(timing.TIMING_SCHEMA)  # each run's training time, kept as rows are written
            if conn.execute("SELECT 1 FROM meta WHERE key=?", (timing.TIMING_BACKFILLED,)).fetchone() is None:
                timing.backfill(conn)
                conn.execute("INSERT INTO meta (key, value) VALUES (?, '1')", (timing.TIMING_BACKFILLED,))
            if conn.execute("SELECT 1 FROM meta WHERE key=?", (history_schema.BUCKETS_BACKFILLED,)).fetchone() is None:
                if conn.execute("SELECT 1 FROM metrics LIMIT 1").fetchone() is not None:
                    from studio.runs import history_buckets  # numpy: only for a store older than the buckets

                    history_buckets.backfill(conn)
                conn.execute("INSERT INTO meta (key, value) VALUES (?, '1')", (history_schema.BUCKETS_BACKFILLED,))

    # ---- runs ---------------------------------------------------------------------------------
    def create_run(self, run_id: str, *, name: str, graph: dict, config: dict, dataset_id: str,
                   status: str = "queued", total_steps: int | None = None, backend: str = "local",
                   workers: int = 1, sweep_id: str | None = None, parent_id: str | None = None,
                   tags: dict | None = None) -> None:
        self.connect().execute(
            "INSERT INTO runs (id, name, status, created, graph, config, dataset_id, total_steps, backend, workers, "
            "sweep_id, parent_id, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, name, status, time.time(), json.dumps(graph), json.dumps(config), dataset_id, total_steps,
             backend, workers, sweep_id, parent_id, json.dumps(tags or {})),
        )

    def get_run(self, run_id: str) -> RunRecord:
        row = self.connect().execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise TrainError(f"no run with id {run_id!r}; list the runs with `python -m studio runs`")
        return RunRecord.from_row(row)

    def has_run(self, run_id: str) -> bool:
        return self.connect().execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is not None

    def list_runs(self, status: str | tuple[str, ...] | None = None) -> list[RunRecord]:
        """Runs, newest first, optionally only those with the given status(es)."""
        if status is None:
            rows = self.connect().execute("SELECT * FROM runs ORDER BY created DESC, id DESC").fetchall()
        else:
            wanted = (status,) if isinstance(status, str) else tuple(status)
            marks = ",".join("?" * len(wanted))
            rows = self.connect().execute(
                f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY created DESC, id DESC", wanted
            ).fetchall()
        return [RunRecord.from_row(r) for r in rows]

    def update_run(self, run_id: str, **fields) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TrainError(f"cannot update run fields {sorted(unknown)}; updatable: {sorted(_UPDATABLE)}")
        for k in ("graph", "config", "tags"):
            if k in fields and not isinstance(fields[k], str):
                fields[k] = json.dumps(fields[k])
        cols = ", ".join(f"{k}=?" for k in fields)
        self.connect().execute(f"UPDATE runs SET {cols} WHERE id=?", (*fields.values(), run_id))

    def set_status(self, run_id: str, status: str, *, error: str | None = None,
                   traceback: str | None = None) -> None:
        if status not in STATUSES:
            raise TrainError(f"unknown run status {status!r}; expected one of {', '.join(STATUSES)}")
        now = time.time()
        fields: dict = {"status": status}
        if status == "running":
            fields.update(started=now, ended=None, error=None, traceback=None, heartbeat=now)
        elif status != "queued":
            fields.update(ended=now, error=error, traceback=traceback)
        self.update_run(run_id, **fields)

    def heartbeat(self, run_id: str) -> None:
        self.connect().execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time(), run_id))

    def delete_run(self, run_id: str) -> None:
        with self.transaction():
            conn = self.connect()
            conn.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            conn.execute("DELETE FROM events WHERE run_id=?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id=?", (run_id,))
            conn.execute("DELETE FROM metric_buckets WHERE run_id=?", (run_id,))
            conn.execute("DELETE FROM run_timing WHERE run_id=?", (run_id,))

    # ---- metrics ------------------------------------------------------------------------------
    def write_metrics(self, run_id: str, rows: list[tuple[int, int, str, str, float, float]]) -> None:
        """Insert (step, epoch, split, key, value, wall_time) rows in one transaction; moves runs.step."""
        if not rows:
            return
        from studio.runs import history_buckets  # numpy: only where metrics are written (a worker)

        with self.transaction():
            conn = self.connect()
            conn.executemany(
                "INSERT INTO metrics (run_id, step, epoch, split, key, value, wall_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *r) for r in rows],
            )
            conn.execute("UPDATE runs SET step=MAX(step, ?) WHERE id=?", (max(r[0] for r in rows), run_id))
            history_buckets.add_rows(conn, run_id, rows)  # the min/max buckets, in the same transaction
            timing.add_rows(conn, run_id, rows)  # and the training time

    def read_metrics(self, run_id: str, *, since_step: int = -1, keys: list[str] | None = None,
                     split: str | None = None) -> list[Metric]:
        """Rows with step > since_step (optionally only `keys` / `split`), ordered by step.

        A step's rows are committed together once the step is complete (see MetricWriter), so a
        reader that remembers the last step it saw never misses a row.
        """
        sql = "SELECT step, epoch, split, key, value, wall_time FROM metrics WHERE run_id=? AND step>?"
        params: list = [run_id, since_step]
        if keys is not None:
            if not keys:
                return []
            sql += f" AND key IN ({','.join('?' * len(keys))})"
            params += list(keys)
        if split is not None:
            sql += " AND split=?"
            params.append(split)
        sql += " ORDER BY step, rowid"
        return [Metric(r[0], r[1], r[2], r[3], _nan_if_null(r[4]), r[5])
                for r in self.connect().execute(sql, params).fetchall()]

    def read_metric_table(self, run_id: str, *, since_step: int = -1):
        """Rows with step > since_step as one float array, for readers of long histories.

        Returns (keys, table, last_step): keys is [(key, split)], table is (N, 5) float64 with
        columns [step, epoch, value, wall_time, key index] (NaN for a NULL value), last_step the
        highest step included (rows committed meanwhile wait for the next read). A million rows
        convert without a Python object per row. None when nothing is new.
        """
        import numpy as np

        cur = self.connect().cursor()
        cur.row_factory = None  # plain tuples
        found = cur.execute("SELECT key, MIN(split), MAX(step) FROM metrics WHERE run_id=? AND step>? GROUP BY key",
                            (run_id, since_step)).fetchall()
        if not found:
            return None
        keys = [k for k, _, _ in found]
        upto = max(m for _, _, m in found)
        # Keys become numbers in SQL, so the rows convert to one float array without a Python loop.
        case = "CASE key " + " ".join("WHEN ? THEN ?" for _ in keys) + " ELSE -1 END"
        params = [v for i, k in enumerate(keys) for v in (k, i)]
        rows = cur.execute(f"SELECT step, epoch, value, wall_time, {case} FROM metrics WHERE run_id=? AND step>? "
                           "AND step<=? ORDER BY step, rowid", (*params, run_id, since_step, upto)).fetchall()
        table = np.array(rows, dtype=np.float64).reshape(-1, 5)
        return [(k, split) for k, split, _ in found], table, int(upto)

    def metric_rows(self, run_id: str):
        """Every metric row of a run as (step, epoch, split, key, value, wall_time) tuples, in order."""
        return self.connect().execute(
            "SELECT step, epoch, split, key, value, wall_time FROM metrics WHERE run_id=? ORDER BY step, rowid",
            (run_id,))

    def training_time(self, run_id: str) -> tuple[float | None, list[tuple[int, float]]]:
        """(seconds spent training, summed over stops and resumes; None before the first logged step,
        the latest logged steps as (step, wall time) for the recent rate), in constant time."""
        return timing.read(self.connect(), run_id)

    def metric_series(self, run_id: str, key: str) -> tuple[list[int], list[float]]:
        rows = self.read_metrics(run_id, keys=[key])
        return [m.step for m in rows], [m.value for m in rows]

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        """The last value of every key (the run's final metrics once it has ended)."""
        rows = self.connect().execute(
            "SELECT key, value FROM metrics WHERE rowid IN "
            "(SELECT MAX(rowid) FROM metrics WHERE run_id=? GROUP BY key)", (run_id,)
        ).fetchall()
        return {r["key"]: _nan_if_null(r["value"]) for r in rows}

    def metric_keys(self, run_id: str) -> list[str]:
        rows = self.connect().execute("SELECT DISTINCT key FROM metrics WHERE run_id=? ORDER BY key", (run_id,))
        return [r["key"] for r in rows]

    def truncate_metrics(self, run_id: str, after_step: int) -> int:
        """Delete rows with step > after_step (a resumed run recomputes them); returns the count."""
        from studio.runs import history_buckets

        with self.transaction():
            cur = self.connect().execute("DELETE FROM metrics WHERE run_id=? AND step>?", (run_id, after_step))
            self.connect().execute("UPDATE runs SET step=? WHERE id=?", (after_step, run_id))
            history_buckets.truncate(self.connect(), run_id, after_step)
        return cur.rowcount

    # ---- events -------------------------------------------------------------------------------
    def log_event(self, run_id: str, message: str, level: str = "info") -> None:
        self.connect().execute(
            "INSERT INTO events (run_id, time, level, message) VALUES (?, ?, ?, ?)",
            (run_id, time.time(), level, message),
        )

    def read_events(self, run_id: str, *, since_time: float = 0.0) -> list[Event]:
        rows = self.connect().execute(
            "SELECT time, level, message FROM events WHERE run_id=? AND time>? ORDER BY time, rowid",
            (run_id, since_time),
        ).fetchall()
        return [Event(*r) for r in rows]


def _nan_if_null(value: float | None) -> float:
    return float("nan") if value is None else value


class _Transaction:
    """`with store.transaction():` BEGIN ... COMMIT, ROLLBACK on error (IMMEDIATE takes the write lock)."""

    def __init__(self, conn: sqlite3.Connection, immediate: bool):
        self.conn, self.immediate = conn, immediate

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._rollback()
            return
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()  # a failed COMMIT (a full disk) must not leave this thread's connection in a transaction
            raise

    def _rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except (StorageError, sqlite3.Error):
            pass  # the error already on its way says what failed (SQLite rolls back itself after a full disk)


class MetricWriter:
    """Buffers metric rows and commits them in batches: every `flush_steps` steps or `flush_seconds`.

    Only *complete* steps are flushed: `end_step(step)` declares that nothing more will be logged
    at `step`, so readers using `since_step` never see half a step.
    """

    def __init__(self, store: Store, run_id: str, *, flush_steps: int = 50, flush_seconds: float = 0.5):
        self.store, self.run_id = store, run_id
        self.flush_steps, self.flush_seconds = flush_steps, flush_seconds
        self._rows: list[tuple[int, int, str, str, float, float]] = []
        self._complete_upto = -1
        self._steps_pending = 0
        self._last_flush = time.monotonic()

    def log(self, step: int, epoch: int, split: str, metrics: dict[str, float]) -> None:
        now = time.time()
        for k, v in metrics.items():
            self._rows.append((step, epoch, split, k, float(v), now))

    def end_step(self, step: int) -> None:
        """Everything for `step` has been logged; commit if a batch is due."""
        self._complete_upto = step
        self._steps_pending += 1
        if self._steps_pending >= self.flush_steps or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self, *, everything: bool = False) -> None:
        """Commit the rows of complete steps (all rows with `everything=True`)."""
        if everything:
            ready, self._rows = self._rows, []
        else:
            ready = [r for r in self._rows if r[0] <= self._complete_upto]
            self._rows = [r for r in self._rows if r[0] > self._complete_upto]
        self.store.write_metrics(self.run_id, ready)
        self._steps_pending = 0
        self._last_flush = time.monotonic()

    def flush_and_wait(self) -> None:
        """flush(), with every row committed on return (here flush() already is synchronous)."""
        self.flush()

    def close(self) -> None:
        self.flush(everything=True)
