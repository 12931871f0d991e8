"""The Build page's blocks: the "Blocks" palette section, the inspector of a block instance, grouping.

The palette lists the graph's own blocks and the built-in ones (studio.block_library); adding a built-in
one copies its definition into the graph. The instance inspector edits `repeat` and the block's
parameters, shows each copy's shape and parameters, expands the instance on the canvas (its layers by
path, read-only) and ungroups it. "Group into block" turns chosen nodes into a block and one instance.
Every edit goes through session.set_current_graph, so undo and redo cover it.
"""

from __future__ import annotations

import json

import streamlit as st

from components import schema_form, session, widget_keys
from components.build import canvas
from components.text import st_escape
from studio.analysis import Analysis
from studio.block_library import BLOCKS, builtin_block
from studio.graph import Graph
from studio.graph_block_edit import (
    grouped,
    inlined,
    renamed_block,
    renamed_block_layer,
    with_block,
    with_block_layer_added,
    with_block_node_param,
    with_block_param_declared,
    with_instance,
    with_repeat,
    without_block_layer,
    without_block_param,
)
from studio.graph_edit import with_param
from studio.layers import REGISTRY, fmt_shape

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

def _on_block_param(node_id: str, name: str, key: str) -> None:
    graph = session.current_graph()
    if not graph.has_node(node_id) or graph.node(node_id).type not in graph.blocks:
        return
    default = graph.blocks[graph.node(node_id).type].params.get(name)
    if not widget_keys.still_shows(key, graph.node(node_id).params.get(name, default)):
        return  # a late echo of a box the graph has moved past (an undo): not the user's edit
    raw = st.session_state[key]
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare word is a string value (a choice such as "gelu")
    _error(key, None)
    # Against the value the box showed (the default when unset): a box mounted again sends what it showed
    # (widget_keys), and that echo of an unset parameter must not become an invisible undo step.
    if graph.node(node_id).params.get(name, default) != value:
        session.set_current_graph(with_param(graph, node_id, name, value))


def _on_repeat(node_id: str, key: str) -> None:
    graph = session.current_graph()
    value = int(st.session_state[key])
    if not graph.has_node(node_id) or not widget_keys.still_shows(key, graph.node(node_id).repeat):
        return  # a late echo of a box the graph has moved past (an undo): not the user's edit
    if value == (graph.node(node_id).repeat or 1):
        return  # what the box shows already (its 1 stands for "not repeated" too)
    try:
        g = with_repeat(graph, node_id, value)
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

    repeat_key = widget_keys.for_value(f"studio.build.repeat.{node_id}", node.repeat)
    st.number_input("Repeat ×N", min_value=1, max_value=1000, value=node.repeat or 1, step=1, key=repeat_key,
                    on_change=_on_repeat, args=(node_id, repeat_key),
                    help="Chained copies, each with its own weights (named layer1.0, layer1.1, ...).")
    _show_error(repeat_key)
    for name, default in block.params.items():
        value = node.params.get(name, default)
        key = widget_keys.for_value(f"studio.build.block_param.{node_id}.{name}", value)
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
    expand_key = widget_keys.for_value(f"studio.build.expand.{node_id}", shown)
    st.toggle("Show inside on the canvas", shown, key=expand_key, on_change=_on_expand, args=(node_id, expand_key),
              help="Draw the layers of every copy beside the instance, by path (a view: ungroup the instance to "
                   "edit them one by one).")
    st.button("Ungroup", key=f"studio.build.ungroup_btn.{node_id}", on_click=_on_ungroup, args=(node_id,),
              icon=":material/call_split:", help="Replace the instance by its layers (ids such as layer1_0_conv1).")
    _show_error(f"studio.build.ungroup.{node_id}")
    from components.build import block_canvas

    block_canvas.render_open_button(node.type, node_id)  # edit the definition on the canvas
    # Open or closed is the server's state (keyed, tracked): a rerun that draws the inspector again, even
    # as a new element, keeps it open; its label holds no block name, so a rename inside keeps it open too.
    with st.expander("Edit the block's definition (every instance follows)", key=f"studio.build.edit_block.{node_id}",
                     on_change="rerun"):
        render_definition(graph, node.type)


# ---- the block's definition ------------------------------------------------------------------------

def _parse_value(p, raw: str):
    """Typed text as a layer param value inside a block: `$name` refers to a block parameter; empty
    text removes the param (its default applies); anything else is read by the param's own parser."""
    text = raw.strip()
    if not text:
        return None
    if text.startswith("$"):
        return text
    return p.parse_text(text)


def _on_definition_param(block_name: str, node_id: str, p, key: str) -> None:
    graph = session.current_graph()
    body = graph.blocks[block_name].body if block_name in graph.blocks else None
    if body is None or not body.has_node(node_id):
        return
    if not widget_keys.still_shows(key, body.node(node_id).params.get(p.name)):
        return  # a late echo of a box the graph has moved past (an undo): not the user's edit
    try:
        value = _parse_value(p, st.session_state[key])
    except ValueError as e:
        _error(key, str(e))
        return
    _error(key, None)
    session.set_current_graph(with_block_node_param(graph, block_name, node_id, p.name, value))


def _on_declare(block_name: str, key: str) -> None:
    name, sep, raw = (st.session_state.get(key) or "").partition("=")
    try:
        if not sep:
            raise ValueError("write name=default, e.g. width=64")
        try:
            default = json.loads(raw)
        except ValueError:
            default = raw.strip()
        g = with_block_param_declared(session.current_graph(), block_name, name.strip(), default)
    except ValueError as e:
        _error(key, str(e))
        return
    _error(key, None)
    session.set_current_graph(g)


def _on_undeclare(block_name: str, key: str) -> None:
    name = st.session_state.get(key)
    if not name:
        _error(key, "choose the parameter to remove first")
        return
    try:
        g = without_block_param(session.current_graph(), block_name, name)
    except (ValueError, KeyError) as e:
        _error(key, str(e))
        return
    _error(key, None)
    session.set_current_graph(g)


def _on_rename_layer(block_name: str, old: str, key: str) -> None:
    graph = session.current_graph()
    if block_name not in graph.blocks or not widget_keys.still_shows(key, old):
        return
    new = (st.session_state.get(key) or "").strip()
    try:
        g = renamed_block_layer(graph, block_name, old, new)
    except ValueError as e:
        _error(key, str(e))
        return
    _error(key, None)
    session.set_current_graph(g)
    pick_key = f"studio.build.block_layer.{block_name}"
    if st.session_state.get(pick_key) == old:
        st.session_state[pick_key] = new  # the inspector keeps showing the renamed layer
    from components.build import block_canvas

    if block_canvas.opened(g) == block_name and st.session_state.get(canvas._SELECTED) == old:
        canvas.select_node(new)  # the block opened on the canvas keeps the renamed layer selected


def _on_rename_block(block_name: str, key: str) -> None:
    graph = session.current_graph()
    if block_name not in graph.blocks or not widget_keys.still_shows(key, block_name):
        return
    try:
        g = renamed_block(graph, block_name, (st.session_state.get(key) or "").strip())
    except ValueError as e:
        _error(key, str(e))
        return
    _error(key, None)
    session.set_current_graph(g)


def _on_add_inner(block_name: str, after: str, type_key: str) -> None:
    type_name = st.session_state.get(type_key)
    where = f"studio.build.block_structure.{block_name}"
    if not type_name:
        _error(where, "choose the layer to add first")
        return
    try:
        g, nid = with_block_layer_added(session.current_graph(), block_name, after, type_name)
    except (ValueError, KeyError) as e:
        _error(where, str(e))
        return
    _error(where, None)
    session.set_current_graph(g)
    st.session_state[f"studio.build.block_layer.{block_name}"] = nid  # edit the new layer next


def _on_remove_inner(block_name: str, node_id: str) -> None:
    where = f"studio.build.block_structure.{block_name}"
    try:
        g = without_block_layer(session.current_graph(), block_name, node_id)
    except (ValueError, KeyError) as e:
        _error(where, str(e))
        return
    _error(where, None)
    session.set_current_graph(g)


def render_definition(graph: Graph, block_name: str) -> None:
    """The block's name, one layer of its definition at a time with its params in the generated form's
    order (typed as text; `$name` takes a block parameter), and the block's declared parameters."""
    block = graph.blocks[block_name]
    name_key = widget_keys.for_value("studio.build.block_name", block_name)
    st.text_input("Block name", block_name, key=name_key, on_change=_on_rename_block, args=(block_name, name_key),
                  help="A Python identifier, not a palette type; every instance follows (it becomes the class "
                       "name in exported code).")
    _show_error(name_key)
    layers = [n.id for n in block.body.nodes if n.type in REGISTRY and n.type != "Input"]
    if not layers:
        st.caption("This block holds no layer to edit.")
        return
    pick_key = f"studio.build.block_layer.{block_name}"
    if st.session_state.get(pick_key) not in layers:
        st.session_state[pick_key] = layers[0]
    inner_id = st.selectbox("Layer", layers, key=pick_key,
                            format_func=lambda i: f"{i} ({block.body.node(i).type})")
    render_layer_form(block, inner_id, "studio.build.block_param")
    add_key = f"studio.build.block_add_type.{block_name}"
    cols = st.columns([3, 2], vertical_alignment="bottom")
    cols[0].selectbox(f"Add a layer after {inner_id}", [t for t in REGISTRY if t != "Input"], key=add_key,
                      index=None, placeholder="a palette layer")
    cols[1].button("Add", key=f"studio.build.block_add.{block_name}", on_click=_on_add_inner,
                   args=(block_name, inner_id, add_key), icon=":material/add:", width="stretch")
    st.button(f"Remove {inner_id} from the block", key=f"studio.build.block_remove.{block_name}",
              on_click=_on_remove_inner, args=(block_name, inner_id), icon=":material/remove:",
              help="What it fed takes its input: a chain stays a chain. Every instance follows; Undo brings it back.")
    _show_error(f"studio.build.block_structure.{block_name}")
    st.caption("Block parameters: " + (", ".join(f"{k}={json.dumps(v)}" for k, v in block.params.items())
                                       or "none"))
    declare_key = f"studio.build.declare.{block_name}"
    st.text_input("Declare a parameter", key=declare_key, placeholder="name=default, e.g. width=64",
                  on_change=_on_declare, args=(block_name, declare_key))
    _show_error(declare_key)
    if block.params:
        drop_key = f"studio.build.undeclare.{block_name}"
        cols = st.columns([3, 2], vertical_alignment="bottom")
        cols[0].selectbox("Remove a parameter", list(block.params), key=drop_key, index=None,
                          placeholder="a parameter no layer takes")
        cols[1].button("Remove", key=f"studio.build.undeclare_btn.{block_name}", on_click=_on_undeclare,
                       args=(block_name, drop_key), icon=":material/remove:", width="stretch")
        _show_error(drop_key)


def render_layer_form(block, inner_id: str, place: str) -> None:
    """One layer of a block's definition: its id and its params in the generated form's order, typed as
    text (`$name` takes a block parameter). `place` prefixes the widget keys (the instance inspector and
    the block opened on the canvas each have their own)."""
    inner = block.body.node(inner_id)
    id_key = widget_keys.for_value(f"{place}_id.{block.name}", inner_id)
    st.text_input("Layer id", inner_id, key=id_key, on_change=_on_rename_layer, args=(block.name, inner_id, id_key),
                  help="Its name inside the block: every copy's path follows (layer1.0.<id>), and so do the "
                       "state-dict keys of runs trained from now on.")
    _show_error(id_key)
    spec = REGISTRY[inner.type]
    shown_params = [p for p in spec.params if not p.advanced or p.name in inner.params]
    if not shown_params:
        st.caption(f"{inner.type} has no basic params to set here.")
    for p in shown_params:
        value = inner.params.get(p.name)
        shown = value if isinstance(value, str) and value.startswith("$") else (
            "" if value is None else schema_form.to_text(value))
        key = widget_keys.for_value(f"{place}.{block.name}.{inner_id}.{p.name}", value)
        st.text_input(p.name, shown, key=key, placeholder=f"default: {schema_form.to_text(p.default)}",
                      on_change=_on_definition_param, args=(block.name, inner_id, p, key),
                      help=f"{p.help} Type $name to take the block parameter `name`; empty: the default.")
        _show_error(key)
