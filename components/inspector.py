"""The inspector: one form, generated from the selected layer's params schema, for every layer type.

Each widget edits the graph through its `on_change` callback, so the canvas, the shapes and the
issues are recomputed in the same rerun. Widget values follow the graph (undo, redo, opening a
file): each widget is keyed by the value it shows and created from it (`param_key`).
"""

from __future__ import annotations

import hashlib
import json
import re

import streamlit as st

from components import canvas, session
from components.canvas import st_escape
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
# Numbers are typed as text: 1e-05 stays readable and exact, and (measured in Chromium with Streamlit
# 1.67) a number_input whose value comes from session state showed 0 and could write it back.
_TEXT_KINDS = {"ints", "size", "padding", "float", "int"}


# ---- widget values <-> param values --------------------------------------------------------------

def _fits_widget(p: Param, value) -> bool:
    if value is None:
        return p.optional and p.kind not in ("bool", "choice")
    if p.kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if p.kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if p.kind == "bool":
        return isinstance(value, bool)
    if p.kind == "choice":
        return value in p.choices
    if p.kind == "str":
        return isinstance(value, str)
    return True  # text kinds show anything


def to_text(value) -> str:
    """A param value as the inspector's text: '3', '3, 5', 'same', '' for None."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else json.dumps(value)


def parse_text(p: Param, text: str):
    """The typed text as a param value; raises ValueError saying what is expected."""
    text = text.strip()
    if not text:
        if p.optional:
            return None
        raise ValueError(f"{p.name} needs a value")
    if p.kind == "padding" and text in ("same", "valid"):
        return text
    if p.kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{p.name}: {text[:40]!r} is not a number (e.g. 0.5 or 1e-5)") from None
    if p.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{p.name}: {text[:40]!r} is not an integer (e.g. 32)") from None
    parts = [t for t in re.split(r"[,\s]+", text.strip("[]() ")) if t]
    try:
        ints = [int(t) for t in parts]
    except ValueError:
        expected = {"ints": "integers separated by commas, e.g. 1, 28, 28",
                    "size": f"an integer or {p.length} integers separated by commas",
                    "padding": f"an integer, {p.length} integers separated by commas, 'same' or 'valid'"}[p.kind]
        raise ValueError(f"{p.name}: {text[:40]!r} is not {expected}") from None
    if p.kind == "ints" or len(ints) > 1:
        return ints
    return ints[0]


def param_key(node_id: str, name: str, value) -> str:
    """The widget key of a param: it names the graph value it shows, so a new value (an edit, undo,
    a file opened) makes a new widget created from that value. A widget whose value comes from
    session state can show an empty box after an interrupted rerun (measured in Chromium with
    Streamlit 1.67: the browser mounts it from the next run's proto, which no longer carries it)."""
    marker = json.dumps(value, sort_keys=True, default=str)
    return f"studio.build.param.{node_id}.{name}.{hashlib.sha1(marker.encode()).hexdigest()[:10]}"


def _on_param(node_id: str, p: Param, key: str, mode: str) -> None:
    raw = st.session_state[key]
    errors = st.session_state.setdefault(_ERRORS, {})
    try:
        if mode == "text":
            value = parse_text(p, raw)
        elif mode == "json":
            value = json.loads(raw) if raw.strip() else None
        else:
            value = raw
    except ValueError as e:
        errors[key] = str(e) if mode == "text" else f"{p.name}: not valid JSON ({e})"
        return
    errors.pop(key, None)
    graph = session.current_graph()
    if graph.has_node(node_id):
        session.set_current_graph(with_param(graph, node_id, p.name, value))


def _param_widget(node_id: str, p: Param, value) -> None:
    key = param_key(node_id, p.name, value)
    errors = st.session_state.setdefault(_ERRORS, {})
    if key not in st.session_state:  # a new widget shows the graph's value: an old typing error is moot
        errors.pop(key, None)
    bounds = [f"min {p.min:g}" if p.min is not None else "", f"max {p.max:g}" if p.max is not None else ""]
    bounds_text = ", ".join(b for b in bounds if b)
    help_text = f"{p.help} Default: {to_text(p.default) or 'None'}." + (f" ({bounds_text})" if bounds_text else "")
    label = p.name
    if not _fits_widget(p, value):
        st.text_input(label, json.dumps(value), key=key, on_change=_on_param, args=(node_id, p, key, "json"),
                      help=help_text + " The current value has the wrong type; type JSON.")
    elif p.kind in _TEXT_KINDS:
        st.text_input(label, to_text(value), key=key, help=help_text, on_change=_on_param,
                      args=(node_id, p, key, "text"), placeholder="None (default)" if p.optional else None)
    elif p.kind == "bool":
        st.checkbox(label, value, key=key, help=help_text, on_change=_on_param, args=(node_id, p, key, "value"))
    elif p.kind == "choice":
        st.selectbox(label, list(p.choices), index=list(p.choices).index(value), key=key, help=help_text,
                     on_change=_on_param, args=(node_id, p, key, "value"))
    else:  # "str"
        st.text_input(label, value or "", key=key, help=help_text, on_change=_on_param,
                      args=(node_id, p, key, "value"))
    if errors.get(key):
        st.error(errors[key], icon=":material/error:")


# ---- actions -------------------------------------------------------------------------------------

def _on_rename(node_id: str, key: str) -> None:
    new = (st.session_state.get(key) or "").strip()
    errors = st.session_state.setdefault(_ERRORS, {})
    graph = session.current_graph()
    if new == node_id or not graph.has_node(node_id):
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
    session.set_current_graph(with_frozen(session.current_graph(), node_id, st.session_state[key]))


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
    info = analysis.nodes.get(node_id)
    st.markdown(f"#### {st_escape(node_id)} · {st_escape(node.type)}")
    if spec is not None:
        st.caption(spec.doc)
    if info is not None and info.output_shape is not None:
        st.markdown(f"Output **{fmt_shape(info.output_shape)}** {info.dtype} · {info.params:,} params")
    for issue in analysis.issues_for(node_id):
        where = f"**{issue.param}**: " if issue.param else ""
        (st.error if issue.severity == "error" else st.warning)(f"{where}{st_escape(issue.message)}", icon="⚠️")

    rename_key = f"studio.build.rename.{node_id}"  # a new id is a new widget: no value to keep in sync
    st.text_input("Node id", node_id, key=rename_key, on_change=_on_rename, args=(node_id, rename_key),
                  help="A Python identifier; it names the module in the compiled model and the exported code.")
    if st.session_state.get(_ERRORS, {}).get(rename_key):
        st.error(st.session_state[_ERRORS][rename_key], icon=":material/error:")

    if spec is None:
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
        frozen_key = f"studio.build.frozen.{node_id}.{node.frozen}"  # keyed by its value, created from it
        st.toggle("Frozen (not trained)", node.frozen, key=frozen_key, on_change=_on_frozen,
                  args=(node_id, frozen_key), help="Keep this node's weights as they are (e.g. after a warm start): "
                                                   "requires_grad False, and it runs in eval mode while training.")
        st.caption(f"Trainable parameters in the graph: {analysis.trainable_params:,} of {analysis.total_params:,}")
    c1, c2 = st.columns(2)
    c1.button("Duplicate", key="studio.build.duplicate", on_click=_on_duplicate, args=(node_id,),
              icon=":material/content_copy:", width="stretch")
    c2.button("Delete", key="studio.build.delete", on_click=_on_delete, args=(node_id,),
              icon=":material/delete:", width="stretch")
