"""The workspace's run store for pages: one Store per database for the whole server (it opens one
SQLite connection per thread), and a damaged database shown as its clear message, not a crash.
A store that fails later (a full disk, an I/O error: a StorageError from any read or write) is shown
the same way where it happened: `read_or_stop` for a page's reads, `shows_store_errors` around a
section or a live fragment (which tries again on its next tick). Slow reads of raw rows (final and
best metrics of long runs) run on a server thread, once per key."""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor

import streamlit as st

from components.text import st_escape
from studio.errors import StorageError, StudioError
from studio.runs.store import Store
from studio.workspace import workspace_dir

_KEPT_RESULTS = 256  # finished background reads kept for later reruns (oldest dropped first)
_RETRY_FAILED_S = 5.0  # a background read that failed is started again when asked after this long


@st.cache_resource
def _store_for(db_path: str) -> Store:
    return Store(db_path)


def open_store() -> Store:
    """The run store; when it cannot be opened the page shows why and how to recover, then stops."""
    try:
        return _store_for(str(workspace_dir() / "studio.db"))
    except StudioError as e:
        st.error(f"The run store cannot be opened. {e}")
        st.stop()


def show_store_error(error: StorageError) -> None:
    text = str(error)
    st.error(st_escape(text[:1].upper() + text[1:]), icon=":material/database:")


def read_or_stop(read, *args, **kwargs):
    """`read(*args, **kwargs)`; when the run store fails, the page shows why and stops there (what is
    drawn above stays)."""
    try:
        return read(*args, **kwargs)
    except StorageError as e:
        show_store_error(e)
        st.stop()


def shows_store_errors(render):
    """`render` (a page section, a fragment) showing a run-store failure as its message instead of a crash;
    the rest of the page still renders, and a live fragment tries again on its next tick."""
    @functools.wraps(render)
    def guarded(*args, **kwargs):
        try:
            return render(*args, **kwargs)
        except StorageError as e:
            show_store_error(e)

    return guarded


@st.cache_resource
def _background() -> tuple[ThreadPoolExecutor, dict]:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="studio-read"), {}


def in_background(key, fn, *args) -> Future:
    """`fn(*args)` on a server thread, started once per `key` (shared by every session): a page shows
    `future.result()` once `future.done()`, and a placeholder until then. `fn` must not call `st.*`."""
    executor, futures = _background()
    future, started = futures.get(key, (None, 0.0))
    if future is None or (future.done() and future.exception() is not None
                          and time.monotonic() - started > _RETRY_FAILED_S):  # a full disk may have been freed
        future, started = executor.submit(fn, *args), time.monotonic()
        futures[key] = (future, started)
        while len(futures) > _KEPT_RESULTS:
            futures.pop(next(iter(futures)))
    return future
