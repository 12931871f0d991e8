"""A SQLite connection whose failures reach its callers as the studio's `StorageError`.

The run store is read and written by pages, the CLI, workers and supervisors, and a "disk I/O error",
"database or disk is full" or a damaged page can come from any statement, fetch or commit long after
the store was opened. Rather than every caller catching sqlite3 errors, the connection the Store hands
out turns each failure into a StorageError worded by the store (what happened, what to do), once.

Two kinds pass through unchanged: a busy or locked database (callers wait and retry those: SQLite's
busy_timeout, the worker's heartbeat), and the program's own mistakes (a constraint, wrong bindings, a
closed connection), which are bugs whose traceback is what fixes them.

    >>> conn = GuardedConnection(sqlite3.connect(":memory:"), lambda e: f"the store failed: {e}")
    >>> conn.execute("SELECT 1").fetchone()
    (1,)
    >>> conn.execute("SELECT * FROM missing")
    Traceback (most recent call last):
    studio.errors.StorageError: the store failed: no such table: missing
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from studio.errors import StorageError

_RETRIED = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_BUGS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


def passes_through(error: sqlite3.Error) -> bool:
    """True for a busy or locked database (retried) and for the program's own mistakes (bugs)."""
    if isinstance(error, _BUGS):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _RETRIED
    text = str(error)
    return "locked" in text or "busy" in text


class _Guard:
    """What a guarded connection and its cursors share: how to word a failure."""

    __slots__ = ("_message",)

    def __init__(self, message: Callable[[sqlite3.Error], str]):
        self._message = message

    def failed(self, error: sqlite3.Error) -> None:
        """Raise the StorageError for `error`; return (the caller re-raises it) when it passes through."""
        if not passes_through(error):
            raise StorageError(self._message(error)) from error

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        """`with self:` around a sqlite3 call: its failure leaves as StorageError, or unchanged if it passes through."""
        if isinstance(error, sqlite3.Error):
            self.failed(error)
        return False


class GuardedCursor(_Guard):
    """A sqlite3 cursor (execute, fetch, iterate) raising StorageError; other attributes are the cursor's."""

    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Cursor, message: Callable[[sqlite3.Error], str]):
        super().__init__(message)
        self.raw = raw

    def execute(self, sql: str, parameters=()) -> GuardedCursor:
        with self:
            self.raw.execute(sql, parameters)
        return self

    def executemany(self, sql: str, rows) -> GuardedCursor:
        with self:
            self.raw.executemany(sql, rows)
        return self

    def fetchone(self):
        with self:
            return self.raw.fetchone()

    def fetchmany(self, size: int | None = None):
        with self:
            return self.raw.fetchmany() if size is None else self.raw.fetchmany(size)

    def fetchall(self):
        with self:
            return self.raw.fetchall()

    def __iter__(self):
        with self:  # one generator over the raw cursor: no Python call per row
            yield from self.raw

    def __next__(self):
        with self:  # rows are read from disk as they are stepped through
            return next(self.raw)

    @property
    def row_factory(self):
        return self.raw.row_factory

    @row_factory.setter
    def row_factory(self, factory) -> None:
        self.raw.row_factory = factory

    def __getattr__(self, name: str):  # rowcount, lastrowid, description, close...
        return getattr(self.raw, name)


class GuardedConnection(_Guard):
    """A sqlite3 connection raising StorageError from execute, cursors, commit and rollback."""

    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Connection, message: Callable[[sqlite3.Error], str]):
        super().__init__(message)
        self.raw = raw

    def cursor(self) -> GuardedCursor:
        with self:
            return GuardedCursor(self.raw.cursor(), self._message)

    def execute(self, sql: str, parameters=()) -> GuardedCursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, rows) -> GuardedCursor:
        return self.cursor().executemany(sql, rows)

    def commit(self) -> None:
        with self:
            self.raw.commit()

    def rollback(self) -> None:
        with self:
            self.raw.rollback()

    def close(self) -> None:
        self.raw.close()

    def __getattr__(self, name: str):  # row_factory, in_transaction, total_changes...
        return getattr(self.raw, name)
