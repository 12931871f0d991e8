"""The model's head on the Build page: replacing it for the dataset's (or any number of) classes.

Two places offer it, each one click and one Undo step:
- above the canvas, when the graph's output does not fit the current dataset and one param of the head makes
  it fit (`studio.data.fit.fit_head`, the same fix as the Data page's "Use with current graph");
- in the inspector of the head node itself (`studio.graph_head.head_of`), for a number of classes the user
  types (`studio.graph_head.with_new_head`).
A warm start (Train page, "Warm start from run") then leaves the replaced head with fresh weights.
"""

from __future__ import annotations

import streamlit as st

from components import session
from components.text import st_escape
from studio.errors import StudioError
from studio.graph_head import head_of, head_size, with_new_head

CLASSES_KEY = "studio.build.head_classes."  # + node id: the inspector's number of classes


def _dataset_info():
    """The current dataset's DatasetInfo, or None (none chosen, or it cannot be described here)."""
    dataset_id = session.current_dataset_id()
    if not dataset_id:
        return None
    from studio.data import get_info

    try:
        return get_info(dataset_id, options=session.current_dataset_options() or None)
    except StudioError:
        return None  # an upload that is gone, bad options: the Data page says why


def _fit(graph, analysis, info):
    from studio.data.fit import fit_head

    try:
        return fit_head(graph, analysis, info)
    except StudioError:
        return None  # the graph's own errors: the Issues tab lists them


def _on_fit() -> None:
    info = _dataset_info()
    fix = _fit(session.current_graph(), session.current_analysis(), info) if info is not None else None
    if fix is not None:  # computed again on the graph of this moment: an edit made since is kept
        session.set_current_graph(fix[0])
        st.toast(f"Head replaced: {fix[1]} (Undo takes it back)")


def render_fit_offer(graph, analysis) -> None:
    """'Replace the head for N classes' when the output does not fit the current dataset by one param."""
    info = _dataset_info()
    fix = _fit(graph, analysis, info) if info is not None and analysis.output_shape is not None else None
    if fix is None:
        return
    what = (f"Replace the head for {info.num_classes} classes" if info.task == "classification"
            else "Fit the output to the dataset")
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.warning(f"The output {tuple(analysis.output_shape)} does not fit {st_escape(info.name)} "
                 f"(expected {tuple(info.output_shape)}). One click changes {st_escape(fix[1])}.",
                 icon=":material/swap_horiz:")
    right.button(what, key="studio.build.fit_head", on_click=_on_fit, icon=":material/swap_horiz:",
                 help="Sets the head's size for this dataset. With a warm start the head then starts from fresh "
                      "weights (its shapes differ from the source run's). Undo takes it back.")


def _on_replace(node_id: str, key: str) -> None:
    graph = session.current_graph()
    if head_of(graph, session.current_analysis()) != node_id:
        return  # the graph moved on (an undo, another edit): this node is no longer the head
    try:
        session.set_current_graph(with_new_head(graph, int(st.session_state[key]), session.current_analysis()))
    except ValueError as e:
        st.toast(f"The head was not replaced: {e}")
        return
    st.toast(f"{node_id} now outputs {int(st.session_state[key])} classes (Undo takes it back)")


def render_head_tools(graph, analysis, node_id: str) -> None:
    """In the inspector of the head node: what the head is, and 'Replace the head for N classes'."""
    if head_of(graph, analysis) != node_id:
        return
    size = head_size(graph, node_id)
    st.markdown("**Head of the model** (the last layer with weights before the output)")
    if size is None:
        st.caption("Its output size is not a number of classes (not a Linear's out_features): replace it by hand.")
        return
    info = _dataset_info()
    start = info.num_classes if info is not None and info.task == "classification" and info.num_classes else size[1]
    key = CLASSES_KEY + node_id
    n = st.number_input("Classes", min_value=1, max_value=1_000_000, value=int(start), step=1, key=key,
                        help="How many classes the new head predicts.")
    st.button(f"Replace the head for {int(n)} classes", key="studio.build.replace_head", on_click=_on_replace,
              args=(node_id, key), disabled=int(n) == size[1], icon=":material/swap_horiz:",
              help=f"Sets {node_id}.{size[0]} = {int(n)} (now {size[1]}). A warm start then re-initialises this node "
                   "(its shapes differ from the source run's) and loads the rest. Undo takes it back."
              if int(n) != size[1] else f"{node_id} outputs {size[1]} values already.")
