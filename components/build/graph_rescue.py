"""What the Build page shows when the canvas cannot draw the current graph: the reason, a download of
the graph as it is (nothing is lost) and a way out (start again from the seed template), instead of a
crash that every new session would meet again through the autosave."""

from __future__ import annotations

import streamlit as st

from components import session
from components.text import st_escape
from studio.graph import Graph

# What drawing a graph the checks let through can raise (e.g. round() of a position that is not finite).
DRAW_ERRORS = (ValueError, TypeError, OverflowError, KeyError, IndexError, AttributeError)


def _discard() -> None:
    graph, _, dataset_id = session.seed_graph()
    session.set_current_graph(graph, undoable=False)
    session.set_current_dataset_id(dataset_id)


def render_undrawable(graph: Graph, error: Exception) -> None:
    st.error(f"The canvas cannot draw the graph {st_escape(graph.name)} ({type(error).__name__}: "
             f"{st_escape(str(error)[:300])}). Download it to keep it, then discard it to start again from the "
             "seed template.")
    with st.container(horizontal=True):
        st.download_button("Download the graph (JSON)", graph.to_json(), file_name=f"{graph.name or 'graph'}.json",
                           mime="application/json", key="studio.rescue.download", icon=":material/download:")
        st.button("Discard it and start from the seed template", key="studio.rescue.discard", on_click=_discard,
                  icon=":material/delete:")
