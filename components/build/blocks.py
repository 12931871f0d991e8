"""The Build page's blocks: the "Blocks" palette section, the inspector of a block instance, grouping.

The palette lists the graph's own blocks and the built-in ones (studio.block_library); adding a built-in
one copies its definition into the graph. The instance inspector edits `repeat` and the block's
parameters, shows each copy's shape and parameters, expands the instance on the canvas (its layers by
path, read-only) and ungroups it. "Group into block" turns chosen nodes into a block and one instance.
Every edit goes through session.set_current_graph, so undo and redo cover it.
"""

from __future__ import annotations

import hashlib
import json

import streamlit as st

from components import session
from components.build import canvas
from components.text import st_escape
from studio.analysis import Analysis
from studio.block_library import BLOCKS, builtin_block
from studio.graph import Graph
from studio.graph_block_edit import grouped, inlined, with_block, with_instance, with_repeat
from studio.graph_edit import with_param
from studio.layers import fmt_shape

_ERRORS = "studio.build.block_errors"  # widget key -> why the edit was refused


def _error(key: str, message: str | None) -> None:
    errors = st.session_state.setdefault(_ERRORS, {})
    if message:
        errors[key] = message
    else:
        errors.pop(key, None)


def _show_error(key: str) -> None:
    message = st.session_state.get(_ERRORS, {}).get(key)
    if message:
        st.error(message, icon=":material/error:")


# ---- palette ----------------------------------------------------------------------------------------

def _on_add_block(name: str) -> None:
    graph = session.current_graph()
    try:
        g = graph if name in graph.blocks else with_block(graph, name, builtin_block(name))
    except ValueError as e:
        _error("studio.build.blocks.add", str(e))
        return
    _error("studio.build.blocks.add", None)
    g, nid = with_instance(g, name, canvas.selected_node(g))
    session.set_current_graph(g)
    canvas.select_node(nid)


def _matches(query: str, name: str, description: str) -> bool:
    text = f"{name} block {description}".lower()
    return all(w in text for w in query.lower().split())


def render_block_palette(query: str = "") -> None:
    """The "Blocks" section: the graph's blocks, then the built-in ones it does not hold yet; with a
    palette search, only those whose name or description holds every word."""
    graph = session.current_graph()
    own = [b for b in graph.blocks if _matches(query, b, graph.blocks[b].description)]
    builtin = [b for b in BLOCKS if b not in graph.blocks and _matches(query, b, BLOCKS[b]["description"])]
    if query and not own and not builtin:
        return
    st.markdown("### Blocks")
    with st.expander(f"blocks ({len(own) + len(builtin)})", expanded=bool(own) or bool(query)):
        if own:
            st.caption("This graph's blocks")
        cols = st.columns(2)
        for i, name in enumerate(own):
            cols[i % 2].button(name, key=f"studio.build.add_block.{name}", on_click=_on_add_block, args=(name,),
                               help=graph.blocks[name].description or f"an instance of block {name!r}",
                               width="stretch", icon=":material/view_module:")
        if builtin:
            st.caption("Built in")
        cols = st.columns(2)
        for i, name in enumerate(builtin):
            cols[i % 2].button(name, key=f"studio.build.add_block.{name}", on_click=_on_add_block, args=(name,),
                               help=BLOCKS[name]["description"], width="stretch")
        _show_error("studio.build.blocks.add")
    if not query:
        with st.expander("Group nodes into a block"):
            render_group_form(graph)


# ---- group into block --------------------------------------------------------------------------------

def _on_group() -> None:
    chosen = st.session_state.get("studio.build.group.nodes") or []
    name = (st.session_state.get("studio.build.group.name") or "").strip()
    instance = (st.session_state.get("studio.build.group.instance") or "").strip() or None
    try:
        g = grouped(session.current_graph(), list(chosen), name, instance)
    except ValueError as e:
        _error("studio.build.group", str(e))
        return
    _error("studio.build.group", None)
    session.set_current_graph(g)
    new = next(n.id for n in g.nodes if n.type == name)
    canvas.select_node(new)
    st.session_state["studio.build.group.nodes"] = []


def render_group_form(graph: Graph) -> None:
    options = [n.id for n in graph.nodes if n.type != "Input"]
    st.multiselect("Nodes", options, key="studio.build.group.nodes", placeholder="the nodes to group",
                   help="Connected nodes with one output; what feeds them becomes the block's inputs.")
    st.text_input("Block name", key="studio.build.group.name", placeholder="e.g. res_block")
    st.text_input("Instance id", key="studio.build.group.instance", placeholder="optional, e.g. stage1")
    st.button("Group into block", key="studio.build.group.go", on_click=_on_group, icon=":material/select_all:")
    _show_error("studio.build.group")


# ---- the instance inspector --------------------------------------------------------------------------

def _value_key(node_id: str, name: str, value) -> str:
    marker = json.dumps(value, sort_keys=True, default=str)
    return f"studio.build.block_param.{node_id}.{name}.{hashlib.sha1(marker.encode()).hexdigest()[:10]}"


def _on_block_param(node_id: str, name: str, key: str) -> None:
    raw = st.session_state[key]
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare word is a string value (a choice such as "gelu")
    _error(key, None)
    graph = session.current_graph()
    if graph.has_node(node_id):
        session.set_current_graph(with_param(graph, node_id, name, value))


def _on_repeat(node_id: str, key: str) -> None:
    try:
        g = with_repeat(session.current_graph(), node_id, int(st.session_state[key]))
    except ValueError as e:
        _error(key, str(e))
        return
    _error(key, None)
    session.set_current_graph(g)


def _on_expand(node_id: str, key: str) -> None:
    shown = [n for n in st.session_state.get(canvas.EXPANDED_KEY, []) if n != node_id]
    if st.session_state[key]:
        shown.append(node_id)
    st.session_state[canvas.EXPANDED_KEY] = shown


def _on_ungroup(node_id: str) -> None:
    try:
        g = inlined(session.current_graph(), node_id)
    except ValueError as e:
        _error(f"studio.build.ungroup.{node_id}", str(e))
        return
    session.set_current_graph(g)
    canvas.select_node(None)


def render_instance(graph: Graph, analysis: Analysis, node_id: str) -> None:
    """Repeat, the block's parameters, each copy's figures, expand on the canvas, ungroup."""
    node = graph.node(node_id)
    block = graph.blocks[node.type]
    st.caption(block.description or f"An instance of block {node.type!r}.")
    inner = [i for i in analysis.issues_within(node_id) if i.node_id != node_id]
    for issue in inner[:8]:
        (st.error if issue.severity == "error" else st.warning)(st_escape(str(issue)), icon="⚠️")

    repeat_key = f"studio.build.repeat.{node_id}.{node.repeat}"
    st.number_input("Repeat ×N", min_value=1, max_value=1000, value=node.repeat or 1, step=1, key=repeat_key,
                    on_change=_on_repeat, args=(node_id, repeat_key),
                    help="Chained copies, each with its own weights (named layer1.0, layer1.1, ...).")
    _show_error(repeat_key)
    for name, default in block.params.items():
        value = node.params.get(name, default)
        key = _value_key(node_id, name, value)
        st.text_input(name, json.dumps(value), key=key, on_change=_on_block_param, args=(node_id, name, key),
                      help=f"Block parameter (default {json.dumps(default)}); JSON: 64, 0.1, true, \"gelu\".")
        _show_error(key)

    if analysis.expansion is not None and node_id in analysis.expansion.instances:
        inst = analysis.expansion.instances[node_id]
        rows = []
        for copy_path in inst.copies:
            info = analysis.instances.get(copy_path) or analysis.instances.get(node_id)
            shape = fmt_shape(info.output_shape) if info and info.output_shape is not None else "?"
            rows.append(f"| {st_escape(copy_path)} | {shape} | {info.params if info else 0:,} |")
        st.markdown("| copy | output | params |\n|---|---|---|\n" + "\n".join(rows))
    shown = node_id in st.session_state.get(canvas.EXPANDED_KEY, [])
    expand_key = f"studio.build.expand.{node_id}.{shown}"
    st.toggle("Show inside on the canvas", shown, key=expand_key, on_change=_on_expand, args=(node_id, expand_key),
              help="Draw the layers of every copy beside the instance, by path (a view: ungroup the instance to "
                   "edit them one by one).")
    st.button("Ungroup", key=f"studio.build.ungroup_btn.{node_id}", on_click=_on_ungroup, args=(node_id,),
              icon=":material/call_split:", help="Replace the instance by its layers (ids such as layer1_0_conv1).")
    _show_error(f"studio.build.ungroup.{node_id}")
