"""The workspace's run store for pages: one Store per database for the whole server (it opens one
SQLite connection per thread), and a damaged database shown as its clear message, not a crash."""

from __future__ import annotations

import streamlit as st

from studio.errors import StudioError
from studio.runs.store import Store
from studio.workspace import workspace_dir


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
