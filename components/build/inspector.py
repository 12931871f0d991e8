"""The inspector: one form, generated from the selected layer's params schema, for every layer type.

Each widget edits the graph through its `on_change` callback, so the canvas, the shapes and the
issues are recomputed in the same rerun. Widget values follow the graph (undo, redo, opening a
file): each widget is created from the value it shows, under a key made anew when that value changes
(`components.widget_keys`).
"""

from __future__ import annotations

import json

import streamlit as st

from components import schema_form, session, widget_keys
from components.build import canvas
from components.text import st_escape
from studio.analysis import Analysis
from studio.graph import Graph
from studio.graph_edit import (
    duplicated,
    renamed,
    with_frozen,
    with_input_moved_up,
    with_param,
    without_edge,
    without_node,
)
from studio.layers import REGISTRY, Param, fmt_shape

ADVANCED_KEY = "studio.build.show_advanced"
_ERRORS = "studio.build.input_errors"  # widget key -> why the typed text was not applied
# Ints are number boxes bounded by the param's min and max; floats are typed as text: 1e-05 stays
# readable and exact. Both are created from the graph's value: (measured in Chromium with Streamlit 1.67)
# a number_input whose value comes from session state showed 0 and could write it back.


# ---- widget values <-> param values --------------------------------------------------------------

def to_text(value) -> str:
    """A param value as the inspector's text: '3', '3, 5', 'same', '' for None (the schema's to_text)."""
    return schema_form.to_text(value)


def parse_text(p: Param, text: str):
    """The typed text as a param value (the schema's one parser); raises ValueError saying what is expected."""
    return p.parse_text(text)


def _on_param(node_id: str, p: Param, key: str, mode: str) -> None:
    graph = session.current_graph()
    shown = graph.node(node_id).params.get(p.name, p.default) if graph.has_node(node_id) else None
    if not graph.has_node(node_id) or not widget_keys.still_shows(key, shown):
        return  # a late echo of a box the graph has moved past (an undo): not the user's edit
    raw = st.session_state[key]
    errors = st.session_state.setdefault(_ERRORS, {})
    try:
        if mode == "json":
            value = json.loads(raw) if raw.strip() else None
        else:
            value = schema_form.widget_value(p, raw)
    except ValueError as e:
        errors[key] = str(e) if mode != "json" else f"{p.name}: not valid JSON ({e})"
        return
    errors.pop(key, None)
    session.set_current_graph(with_param(graph, node_id, p.name, value))


def _param_widget(node_id: str, p: Param, value) -> None:
    key = widget_keys.for_value(f"studio.build.param.{node_id}.{p.name}", value)
    errors = st.session_state.setdefault(_ERRORS, {})
    if key not in st.session_state:  # a new widget shows the graph's value: an old typing error is moot
        errors.pop(key, None)
    if not schema_form.fits_widget(p, value):
        st.text_input(p.name, json.dumps(value), key=key, on_change=_on_param, args=(node_id, p, key, "json"),
                      help=schema_form.help_text(p) + " The current value has the wrong type; type JSON.")
    else:  # the one generated widget, created from the graph's value (numbers typed as text)
        schema_form.field_widget(p, key, value, numbers="ints", on_change=_on_param, args=(node_id, p, key, "value"))
    if errors.get(key):
        st.error(errors[key], icon=":material/error:")


# ---- actions -------------------------------------------------------------------------------------

def _on_rename(node_id: str, key: str) -> None:
    new = (st.session_state.get(key) or "").strip()
    errors = st.session_state.setdefault(_ERRORS, {})
    graph = session.current_graph()
    if new == node_id or not graph.has_node(node_id) or not widget_keys.still_shows(key, node_id):
        errors.pop(key, None)
        return
    try:
        g = renamed(graph, node_id, new)
    except ValueError as e:
        errors[key] = str(e)
        return
    errors.pop(key, None)
    session.set_current_graph(g)
    canvas.select_node(new)


def _on_frozen(node_id: str, key: str) -> None:
    graph = session.current_graph()
    if graph.has_node(node_id) and widget_keys.still_shows(key, graph.node(node_id).frozen):
        session.set_current_graph(with_frozen(graph, node_id, st.session_state[key]))


def _on_delete(node_id: str) -> None:
    session.set_current_graph(without_node(session.current_graph(), node_id))
    canvas.select_node(None)


def _on_duplicate(node_id: str) -> None:
    g, nid = duplicated(session.current_graph(), node_id)
    session.set_current_graph(g)
    canvas.select_node(nid)


def _on_delete_edge(source: str, target: str) -> None:
    session.set_current_graph(without_edge(session.current_graph(), source, target))
    st.session_state["studio.build.selected_edge"] = None


def _on_move_input(node_id: str, index: int) -> None:
    session.set_current_graph(with_input_moved_up(session.current_graph(), node_id, index))


# ---- the panel -----------------------------------------------------------------------------------

def render_inspector(graph: Graph, analysis: Analysis) -> None:
    node_id = canvas.selected_node(graph)
    if node_id is None:
        edge = canvas.selected_edge(graph)
        if edge:
            st.markdown(f"**Edge** {st_escape(edge[0])} → {st_escape(edge[1])}")
            st.button("Delete edge", key="studio.build.delete_edge", on_click=_on_delete_edge, args=edge,
                      icon=":material/delete:")
            return
        st.info("Click a node on the canvas to edit its parameters, or add a layer from the palette.")
        return
    node = graph.node(node_id)
    spec = REGISTRY.get(node.type)
    info = analysis.info(node_id)  # a block instance's totals too
    st.markdown(f"#### {st_escape(node_id)} · {st_escape(node.type)}")
    if spec is not None:
        st.caption(spec.doc)
    if info is not None and info.output_shape is not None:
        st.markdown(f"Output **{fmt_shape(info.output_shape)}** {info.dtype} · {info.params:,} params")
    for issue in analysis.issues_for(node_id):
        where = f"**{issue.param}**: " if issue.param else ""
        (st.error if issue.severity == "error" else st.warning)(f"{where}{st_escape(issue.message)}", icon="⚠️")

    rename_key = widget_keys.for_value("studio.build.rename", node_id)
    st.text_input("Node id", node_id, key=rename_key, on_change=_on_rename, args=(node_id, rename_key),
                  help="A Python identifier; it names the module in the compiled model and the exported code.")
    if st.session_state.get(_ERRORS, {}).get(rename_key):
        st.error(st.session_state[_ERRORS][rename_key], icon=":material/error:")

    if spec is None and node.type in graph.blocks:
        from components.build import blocks

        blocks.render_instance(graph, analysis, node_id)
    elif spec is None:
        st.warning(f"Unknown layer type {st_escape(repr(node.type))}: delete this node or fix the type in the "
                   "graph file.")
    else:
        basic = [p for p in spec.params if not p.advanced]
        advanced = [p for p in spec.params if p.advanced]
        for p in basic:
            _param_widget(node_id, p, node.params.get(p.name, p.default))
        if advanced:
            if st.toggle(f"Advanced ({len(advanced)})", key=ADVANCED_KEY):
                for p in advanced:
                    _param_widget(node_id, p, node.params.get(p.name, p.default))
        unknown = [k for k in node.params if k not in {p.name for p in spec.params}]
        for k in unknown:
            st.caption(f"Unknown param {st_escape(repr(k))} (see the issue above): remove it by editing the "
                       "graph file.")
        inputs = graph.inputs_of(node_id)
        if len(inputs) > 1:
            st.markdown("**Inputs, in order**")
            for i, src in enumerate(inputs):
                c1, c2 = st.columns([4, 1], vertical_alignment="center")
                c1.markdown(f"{i}\\. {st_escape(src)}")
                if i:
                    c2.button("↑", key=f"studio.build.input_up.{node_id}.{i}", on_click=_on_move_input,
                              args=(node_id, i), help="Move this input one place earlier")
    if info is not None and info.params:
        frozen_key = widget_keys.for_value(f"studio.build.frozen.{node_id}", node.frozen)
        st.toggle("Frozen (not trained)", node.frozen, key=frozen_key, on_change=_on_frozen,
                  args=(node_id, frozen_key), help="Keep this node's weights as they are (e.g. after a warm start): "
                                                   "requires_grad False, and it runs in eval mode while training.")
        st.caption(f"Trainable parameters in the graph: {analysis.trainable_params:,} of {analysis.total_params:,}")
    from components.build import head_panel

    head_panel.render_head_tools(graph, analysis, node_id)  # the head: "Replace the head for N classes"
    c1, c2 = st.columns(2)
    c1.button("Duplicate", key="studio.build.duplicate", on_click=_on_duplicate, args=(node_id,),
              icon=":material/content_copy:", width="stretch")
    c2.button("Delete", key="studio.build.delete", on_click=_on_delete, args=(node_id,),
              icon=":material/delete:", width="stretch")
