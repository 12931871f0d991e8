"""The layer palette: every registered type, grouped by category, with a search box.

A new layer lands after the selected node when it can take an input: between the selected node and
its only consumer when there is one (the rest of the chain moves along), at the end of the chain
otherwise. It takes the params of the nearest node of its type (upstream of where it lands first), so
a second TransformerEncoderLayer gets its neighbour's sizes, not PyTorch's defaults; the message says
what it costs in parameters. Everything comes from the registry; no per-layer code.
"""

from __future__ import annotations

import streamlit as st

from components import session
from components.build import canvas
from studio.graph import Edge, Graph, Node
from studio.graph_edit import move_downstream, new_node_id
from studio.layers import CATEGORIES, REGISTRY

SEARCH_KEY = "studio.build.palette_search"
ADDED = "studio.build.palette_added"


def add_layer(graph: Graph, type_name: str, after: str | None, direction: str = "down") -> tuple[Graph, str]:
    """A copy of `graph` with a new `type_name` node (the params of the nearest node of that type, else
    the defaults), and the new node's id."""
    spec = REGISTRY[type_name]
    g = graph.copy()
    nid = new_node_id(g, type_name)
    step = canvas.layer_step(direction)
    anchor = g.node(after) if after and g.has_node(after) else None
    takes_input = spec.inputs[1] != 0
    if anchor is not None and takes_input:
        base = anchor.position or {"x": 0.0, "y": 0.0}
        position = {"x": base["x"] + step[0], "y": base["y"] + step[1]}
        consumers = [e for e in g.edges if e.source == anchor.id]
        if len(consumers) == 1 and spec.inputs == (1, 1):
            # Insert into the chain: anchor -> new -> consumer, and move everything downstream along.
            e = consumers[0]
            g.edges[g.edges.index(e)] = Edge(nid, e.target, e.port)
            move_downstream(g, e.target, step)
        g.edges.append(Edge(anchor.id, nid))
    else:
        placed = [n.position for n in g.nodes if n.position is not None]
        if direction == "down":
            position = {"x": 0.0, "y": max((p["y"] for p in placed), default=-step[1]) + step[1]}
        else:
            position = {"x": max((p["x"] for p in placed), default=-step[0]) + step[0], "y": 0.0}
    like = nearest_of_type(graph, type_name, anchor.id if anchor is not None else None)
    g.nodes.append(Node(nid, type_name, dict(graph.node(like).params) if like else {}, position))
    return g, nid


def nearest_of_type(graph: Graph, type_name: str, start: str | None) -> str | None:
    """The node of `type_name` nearest upstream of `start` (itself first), else the nearest downstream,
    else the first in the graph; None when the graph has none."""
    if start is not None and graph.has_node(start):
        for walk in (graph.inputs_of, graph.outputs_of):
            todo, seen = [start], {start}
            while todo:  # breadth first: the nearest wins
                nid = todo.pop(0)
                if graph.node(nid).type == type_name:
                    return nid
                for nxt in walk(nid):
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
    return next((n.id for n in graph.nodes if n.type == type_name), None)


def matching_types(query: str) -> dict[str, list[str]]:
    """Types per category whose name, category or doc contains every word of `query`."""
    words = query.lower().split()
    out: dict[str, list[str]] = {}
    for spec in REGISTRY.values():
        text = f"{spec.type} {spec.category} {spec.doc}".lower()
        if all(w in text for w in words):
            out.setdefault(spec.category, []).append(spec.type)
    return {c: out[c] for c in CATEGORIES if c in out}


def _on_add(type_name: str) -> None:
    from components.build import block_canvas

    if block_canvas.add_layer(type_name):  # a block is open on the canvas: the layer goes into it
        return
    graph = session.current_graph()
    after = canvas.selected_node(graph)
    g, nid = add_layer(graph, type_name, after, canvas.direction())
    like = nearest_of_type(graph, type_name, after)
    before_params = session.current_analysis().total_params
    session.set_current_graph(g)
    canvas.select_node(nid)
    change = session.current_analysis().total_params - before_params
    st.session_state[ADDED] = (f"Added {nid} ({type_name}" + (f", sizes from {like}" if like else ", defaults")
                               + f"): {change:+,} parameters.")


def render_added() -> None:
    """What the last layer added from the palette took and cost, shown once."""
    said = st.session_state.pop(ADDED, None)
    if said:
        st.caption(said)


def render_palette() -> None:
    """Search box and one expander per category with a button per layer type."""
    graph = session.current_graph()
    after = canvas.selected_node(graph)
    from components.build import block_canvas

    block = block_canvas.opened(graph)
    if block:  # a block is open on the canvas: the palette adds into it
        view, _ = block_canvas.current_view(graph)
        inner = canvas.selected_node(view.graph)
        st.caption(f"Adds into block **{block}** after **{inner or 'its output'}**")
    else:
        st.caption(f"Adds after **{after}**" if after else "Select a node on the canvas to add after it")
    render_added()
    query = st.text_input("Search layers", key=SEARCH_KEY, placeholder="conv, attention, norm...",
                          label_visibility="collapsed")
    groups = matching_types(query or "")
    if not groups:
        st.caption("No layer matches; try another word.")
    for category, types in groups.items():
        with st.expander(f"{category} ({len(types)})", expanded=bool(query)):
            cols = st.columns(2)
            for i, type_name in enumerate(types):
                cols[i % 2].button(type_name, key=f"studio.build.add.{type_name}", help=REGISTRY[type_name].doc,
                                   on_click=_on_add, args=(type_name,), width="stretch")
