"""A block opened on the Build page's canvas: its definition drawn and edited in place, every instance following.

"Open on the canvas" (in an instance's inspector) makes the canvas draw block B's body
(studio.block_view: one instance's shapes and `$param` values, so every layer shows that instance's
shape and errors) under a header "Editing block 'B' · every instance follows · shapes of instance X" with
"Back to the graph". The canvas is the same component with the same rules (canvas.py); only the graph it
draws is the view, and what comes back is taken into B's definition (`with_block_body_from_view`): a new
edge (a skip), a node or edge deleted from its context menu (a layer deleted from a chain is bridged), a
move. Each is one undo step through session.set_current_graph; an edit that leaves no valid block (two
outputs, a cycle, its Input removed) is refused with the reason and the canvas shows the block again.
The palette adds into the open block, after the selected layer; the inspector edits the selected layer's
params (a value, or `$name` for a block parameter). After an Undo that removes or renames B, the canvas
shows the graph again.

Which block is open lives in the session only: a page refresh shows the graph.
"""

from __future__ import annotations

import streamlit as st

from components import session, widget_keys
from components.build import canvas
from components.text import st_escape
from studio.analysis import Analysis, analyze
from studio.block_view import (
    BlockView,
    block_view,
    body_id,
    bridged,
    inputs_known,
    instances_of,
    view_with_layer,
    with_block_body_from_view,
)
from studio.errors import GraphError
from studio.graph import Graph
from studio.layers import fmt_shape

OPEN_KEY = "studio.build.open_block"  # (block name, instance path or None) drawn on the canvas
_VIEW = "studio.build.open_block_view"  # (graph revision, block, instance, direction) -> (BlockView, Analysis)
_REFUSED = "studio.build.open_block_refused"  # why the canvas's last edit of the block was refused


# ---- which block is open ----------------------------------------------------------------------------

def opened(graph: Graph) -> str | None:
    """The block open on the canvas, or None (also when an undo or a rename took it out of the graph)."""
    chosen = st.session_state.get(OPEN_KEY)
    if not chosen:
        return None
    if chosen[0] not in graph.blocks:
        st.session_state.pop(OPEN_KEY, None)
        canvas.select_node(None)
        _new_subject()
        return None
    return chosen[0]


def _new_subject() -> None:
    """The canvas is to draw another graph (the block, or the graph again): until it has, no browser
    answer is an edit of it. An answer to the old picture, read as an edit of the new one, would delete
    every node the two do not share (canvas.is_current_picture compares this revision)."""
    st.session_state[canvas._BASE_REV] = None


def open_block(block: str, instance: str | None = None) -> None:
    st.session_state[OPEN_KEY] = (block, instance)
    st.session_state.pop(_REFUSED, None)
    canvas.select_node(None)
    _new_subject()


def close() -> None:
    """Back to the graph, with the instance the block was opened from selected."""
    chosen = st.session_state.pop(OPEN_KEY, None)
    st.session_state.pop(_REFUSED, None)
    _new_subject()
    instance = chosen[1] if chosen else None
    graph = session.current_graph()
    canvas.select_node(instance if instance and graph.has_node(instance) else None)


def _on_instance(key: str) -> None:
    chosen = st.session_state.get(OPEN_KEY)
    if chosen:
        st.session_state[OPEN_KEY] = (chosen[0], st.session_state.get(key))
        _new_subject()


def current_view(graph: Graph) -> tuple[BlockView, Analysis]:
    """The open block's view (laid out where its body has no positions) and its analysis, once per graph
    revision."""
    block, instance = st.session_state[OPEN_KEY]
    key = (session.graph_revision(), block, instance, canvas.direction())
    cached = st.session_state.get(_VIEW)
    if cached is None or cached[0] != key:
        view = block_view(graph, block, session.current_analysis(), instance)
        if any(n.position is None for n in view.graph.nodes):
            view.graph = canvas.auto_layout(view.graph, canvas.direction(), only_missing=True)
        cached = st.session_state[_VIEW] = (key, (view, analyze(view.graph)))
    return cached[1]


# ---- the canvas's edits -----------------------------------------------------------------------------

def absorb(graph: Graph) -> None:
    """Read the browser's newest state as an edit of the open block (call instead of
    canvas.absorb_browser_state while a block is open)."""
    block = opened(graph)
    view, _ = current_view(graph)
    edited = canvas.absorb_browser_state(view.graph)
    if edited is None:
        return
    try:
        g = with_block_body_from_view(graph, block, bridged(view.graph, edited))
    except GraphError as e:
        st.session_state[_REFUSED] = "; ".join(i.message for i in e.issues)
        st.session_state[canvas._SHOWN] = None  # draw the block as it is again, over the refused picture
        return
    st.session_state.pop(_REFUSED, None)
    canvas.apply_browser_edit(g)


def add_layer(type_name: str) -> bool:
    """The palette's add while a block is open: a new layer in the block after the selected one (after its
    output when none is selected), with the params of the nearest layer of its type in the block (its
    `$refs` too). False when no block is open (the palette adds to the graph)."""
    graph = session.current_graph()
    block = opened(graph)
    if block is None:
        return False
    from components.build.palette import nearest_of_type

    view, _ = current_view(graph)
    after = canvas.selected_node(view.graph) or view.ids.get(graph.blocks[block].output_id() or "")
    if after is None:
        st.session_state[_REFUSED] = "select the layer to add after (the block has no single output)"
        return True
    like = nearest_of_type(view.graph, type_name, after)
    body = graph.blocks[block].body
    params = dict(body.node(body_id(graph.blocks[block], like)).params) if like else {}
    step = canvas.layer_step(canvas.direction())
    try:
        edited, nid = view_with_layer(view.graph, type_name, after, params, step)
        g = with_block_body_from_view(graph, block, edited)
    except (ValueError, GraphError) as e:
        st.session_state[_REFUSED] = "; ".join(i.message for i in e.issues) if isinstance(e, GraphError) else str(e)
        return True
    st.session_state.pop(_REFUSED, None)
    session.set_current_graph(g)
    canvas.select_node(nid)
    return True


def relayout(direction: str) -> bool:
    """Layout ↓ / → while a block is open: lay out the block's layers (one undo step). False when none is open."""
    graph = session.current_graph()
    block = opened(graph)
    if block is None:
        return False
    canvas.set_direction(direction)
    view, _ = current_view(graph)
    session.set_current_graph(with_block_body_from_view(graph, block, canvas.auto_layout(view.graph, direction)))
    return True


def _on_delete_edge(source: str, target: str) -> None:
    graph = session.current_graph()
    block = opened(graph)
    if block is None:
        return
    view, _ = current_view(graph)
    edited = view.graph.copy()
    edited.edges = [e for e in edited.edges if (e.source, e.target) != (source, target)]
    try:
        g = with_block_body_from_view(graph, block, edited)
    except GraphError as e:
        st.session_state[_REFUSED] = "; ".join(i.message for i in e.issues)
        return
    st.session_state.pop(_REFUSED, None)
    session.set_current_graph(g)
    st.session_state["studio.build.selected_edge"] = None


# ---- drawing ----------------------------------------------------------------------------------------

def render_open_button(block: str, instance: str) -> None:
    """The instance inspector's "Open on the canvas" (edit block `block` there, with this instance's shapes)."""
    st.button("Open on the canvas", key=f"studio.build.open_block_btn.{instance}", on_click=open_block,
              args=(block, instance), icon=":material/open_in_full:",
              help=f"Edit block {block!r} on the canvas: add, remove and rewire its layers (every instance "
                   "follows), with this instance's shapes.")


def render_header(graph: Graph, view: BlockView) -> None:
    """What the canvas shows: the block, that every instance follows, whose shapes; Back; a refused edit."""
    instances = instances_of(graph, view.block, session.current_analysis())
    cols = st.columns([4.5, 1.8, 2.4], vertical_alignment="center")
    whose = f"shapes of instance **{st_escape(view.instance)}**" if view.instance else \
        "not used yet: its input has no shape"
    asked = st.session_state.get(OPEN_KEY, (None, None))[1]
    if view.instance and asked and asked != view.instance and asked in instances:
        whose += f" (instance {st_escape(asked)} gets no shape: what feeds it has an error)"
    if view.instance and not inputs_known(view):
        whose += " · its input shape is unknown (what feeds it has an error): shapes below are a guess"
    cols[0].markdown(f"**Editing block '{st_escape(view.block)}'** · every instance follows · {whose}")
    if len(instances) > 1:
        key = widget_keys.for_value("studio.build.open_block_instance", view.instance)
        cols[1].selectbox("Shapes of", instances, index=instances.index(view.instance), key=key,
                          on_change=_on_instance, args=(key,), label_visibility="collapsed",
                          help="Whose shapes the canvas shows (each instance has its own inputs and parameters)")
    cols[2].button("Back to the graph", key="studio.build.open_block_back", on_click=close,
                   icon=":material/arrow_back:", width="stretch")
    refused = st.session_state.get(_REFUSED)
    if refused:
        st.error(f"Not applied: {st_escape(refused)}", icon=":material/block:")


def render_inspector(graph: Graph, view: BlockView, analysis: Analysis) -> None:
    """The selected layer of the open block: its shape for the shown instance and its params as the
    definition holds them (a value, or `$name`); remove it. An edge: delete it."""
    from components.build import blocks

    block = graph.blocks[view.block]
    vid = canvas.selected_node(view.graph)
    if vid is None:
        edge = canvas.selected_edge(view.graph)
        if edge:
            st.markdown(f"**Edge** {st_escape(edge[0])} → {st_escape(edge[1])} (in block '{st_escape(view.block)}')")
            st.button("Delete edge", key="studio.build.open_block_delete_edge", on_click=_on_delete_edge, args=edge,
                      icon=":material/delete:")
            return
        st.info(f"Block '{view.block}': click a layer to edit it; the palette adds a layer after the selected "
                "one (after the block's output when none is). Drag from a node's bottom handle to another to "
                "connect them (a skip: into an Add).")
        st.caption("Block parameters: " + (", ".join(f"{k}={v!r} (here {view.values.get(k)!r})"
                                                     for k, v in block.params.items()) or "none"))
        return
    nid = body_id(block, vid)
    inner = block.body.node(nid)
    info = analysis.info(vid)
    st.markdown(f"#### {st_escape(vid)} · {st_escape(inner.type)}")
    st.caption(f"In block '{view.block}'" + (f" (its id there: {nid})" if nid != vid else "")
               + (f"; shapes of instance {view.instance}" if view.instance else ""))
    if info is not None and info.output_shape is not None:
        st.markdown(f"Output **{fmt_shape(info.output_shape)}** {info.dtype} · {info.params:,} params")
    for issue in analysis.issues_within(vid):
        (st.error if issue.severity == "error" else st.warning)(st_escape(str(issue)), icon="⚠️")
    if inner.type == "Input":
        st.caption("The block's input: its shape comes from what feeds each instance.")
        return
    if inner.type in graph.blocks:
        st.caption(f"An instance of block '{inner.type}' inside this one.")
        st.button(f"Open block '{inner.type}'", key="studio.build.open_block_inner", on_click=open_block,
                  args=(inner.type, None), icon=":material/open_in_full:")
    else:
        blocks.render_layer_form(block, nid, "studio.build.open_block_param")
    st.button("Remove from the block", key="studio.build.open_block_remove", on_click=blocks._on_remove_inner,
              args=(view.block, nid), icon=":material/remove:",
              help="What it fed takes its input: a chain stays a chain. Every instance follows; Undo brings it back.")
    blocks._show_error(f"studio.build.block_structure.{view.block}")
