"""The workspace's run store for pages: one Store per database for the whole server (it opens one
SQLite connection per thread), and a damaged database shown as its clear message, not a crash.
Slow reads of raw rows (final and best metrics of long runs) run on a server thread, once per key."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import streamlit as st

from studio.errors import StudioError
from studio.runs.store import Store
from studio.workspace import workspace_dir

_KEPT_RESULTS = 256  # finished background reads kept for later reruns (oldest dropped first)


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


@st.cache_resource
def _background() -> tuple[ThreadPoolExecutor, dict]:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="studio-read"), {}


def in_background(key, fn, *args) -> Future:
    """`fn(*args)` on a server thread, started once per `key` (shared by every session): a page shows
    `future.result()` once `future.done()`, and a placeholder until then. `fn` must not call `st.*`."""
    executor, futures = _background()
    future = futures.get(key)
    if future is None:
        future = futures[key] = executor.submit(fn, *args)
        while len(futures) > _KEPT_RESULTS:
            futures.pop(next(iter(futures)))
    return future
