"""The graph canvas: the current graph drawn with streamlit-flow, and the browser's edits read back.

The component returns its whole state (nodes, edges, selection, timestamp) after every change, with
no event type, and it keeps returning its last value on every rerun. So (FIELD-NOTES.md):

- a browser state is adopted only when its timestamp is newer than the last one read, and then
  diffed against the graph (moved, deleted, connected, disconnected);
- Python pushes a new picture only when what it would draw differs from what the browser shows,
  with a timestamp just above the browser's last one (the component adopts `args.timestamp >=
  its own`); otherwise it sends timestamp 0, which the component ignores;
- the selected node is kept here, changed only when a node id comes back;
- a browser state is diffed only against the picture it was made from. Every push carries a
  generation number in each node's `data`, and the graph revision the canvas last drew is kept. A
  browser state from an older push (the component answers late, or it had not adopted the newest
  push yet) or one that arrives after Python replaced the graph (a template opened in a callback
  runs before the page reads the canvas) is not an edit of the current graph: it is ignored and the
  current picture is pushed again. Without this, the old picture's node ids read as deletions, and
  opening a template could leave only the one node id both graphs share (`input`).

Node labels are markdown rendered with raw HTML enabled in the component, so every string in them
is escaped (`md_escape`).
"""

from __future__ import annotations

import json

import streamlit as st
from streamlit_flow import StreamlitFlowEdge, StreamlitFlowNode, StreamlitFlowState, streamlit_flow
from streamlit_flow.layouts import ManualLayout

from components import session
from components.text import md_escape
from studio.analysis import Analysis
from studio.errors import GraphError
from studio.graph import Edge, Graph
from studio.layers import CATEGORY_COLORS, REGISTRY, fmt_shape

FLOW_KEY = "studio_build_flow"  # the component's own key: differs from every session-state key below
_SELECTED = "studio.build.selected"  # selected node id
_SELECTED_EDGE = "studio.build.selected_edge"  # (source, target) of the selected edge
_BROWSER_TS = "studio.build.browser_ts"  # timestamp of the last browser state read
_SHOWN = "studio.build.shown"  # signature of what the browser shows now
_DIRECTION = "studio.build.direction"  # "down" (top to bottom) or "right" (left to right)
_GEN = "studio.build.gen"  # generation of the last picture pushed to the browser
_BASE_REV = "studio.build.base_rev"  # graph revision the browser's picture shows (as far as Python knows)
GEN_KEY = "studio_gen"  # the key in each node's `data` that carries the push generation back

ISSUE_COLOR = "#dc2626"
WARNING_COLOR = "#d97706"
FROZEN_COLOR = "#64748b"  # the dashed border of a frozen node
BLOCK_COLOR = "#0f766e"  # a block instance (format /2): one node for the whole sub-graph
EXPANDED_KEY = "studio.build.expanded"  # ids of the instances whose inside the canvas shows
LAYER_GAP = {"down": 110.0, "right": 290.0}  # distance between layers
NODE_GAP = {"down": 290.0, "right": 95.0}  # distance between nodes of one layer
NODE_BOX = (200.0, 58.0)  # about a node's width and height at the default font (labels may widen it)
SKIP_STYLE = {"strokeWidth": 2, "stroke": "#7c3aed", "strokeDasharray": "6 4"}  # an edge drawn over nodes


# ---- selection and direction ---------------------------------------------------------------------

def selected_node(graph: Graph) -> str | None:
    nid = st.session_state.get(_SELECTED)
    return nid if nid is not None and graph.has_node(nid) else None


def select_node(node_id: str | None) -> None:
    st.session_state[_SELECTED] = node_id
    st.session_state[_SELECTED_EDGE] = None


def selected_edge(graph: Graph) -> tuple[str, str] | None:
    pair = st.session_state.get(_SELECTED_EDGE)
    if pair and any((e.source, e.target) == tuple(pair) for e in graph.edges):
        return tuple(pair)
    return None


def direction() -> str:
    return st.session_state.setdefault(_DIRECTION, "down")


def set_direction(value: str) -> None:
    st.session_state[_DIRECTION] = value


# ---- labels --------------------------------------------------------------------------------------

def node_label(graph: Graph, analysis: Analysis, node_id: str) -> str:
    """Plain label: type, key params and output shape, e.g. 'Conv2d 32@3x3 -> (32, 26, 26)'."""
    node = graph.node(node_id)
    spec = REGISTRY.get(node.type)
    info = analysis.info(node_id)  # an instance's totals for a block instance
    if spec is not None and spec.inputs[1] == 0:  # Input: its params are its output shape
        text = node.type + (f" {info.dtype}" if info is not None and info.dtype != "float32" else "")
    elif node.type in graph.blocks:
        text = f"▣ {node.type}" + (f" ×{node.repeat}" if node.repeat is not None else "")
    else:
        text = spec.describe(node.params) if spec else node.type
    shape = fmt_shape(info.output_shape) if info and info.output_shape is not None else "?"
    return f"{text} -> {shape}"


def _tint(color: str, amount: float = 0.88) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    mix = lambda c: round(c + (255 - c) * amount)  # noqa: E731
    return f"#{mix(r):02x}{mix(g):02x}{mix(b):02x}"


def _node_style(category: str | None, severity: str | None, selected: bool) -> dict:
    """Category colour; a red border for an error, amber for a warning; a blue halo when selected."""
    color = CATEGORY_COLORS.get(category or "", "#6b7280")
    flag = {"error": ISSUE_COLOR, "warning": WARNING_COLOR}.get(severity or "")
    style = {
        "background": "#fef2f2" if severity == "error" else _tint(color),
        "border": f"3px solid {flag}" if flag else f"2px solid {color}",
        "borderRadius": "8px", "padding": "2px 10px", "fontSize": "12px", "color": "#111827",
        "minWidth": "170px", "textAlign": "center", "width": "auto", "height": "auto",
    }
    if selected:
        style["boxShadow"] = "0 0 0 4px rgba(37, 99, 235, 0.45)"
    return style


# ---- layout --------------------------------------------------------------------------------------

def layer_step(direction: str) -> tuple[float, float]:
    """(dx, dy) from one layer to the next: down, or to the right."""
    return {"down": (0.0, LAYER_GAP["down"]), "right": (LAYER_GAP["right"], 0.0)}[direction]


def layered_positions(graph: Graph, direction: str = "down") -> dict[str, dict]:
    """A layered layout: each node one layer below its deepest input, ordered to follow its inputs.

    Deterministic and cheap (one pass plus a barycentre sweep); good for the chains and skip
    connections models are made of.
    """
    try:
        order = graph.topological_order()
    except GraphError:  # a cycle: fall back to document order so the user can still see and fix it
        order = [n.id for n in graph.nodes]
    inputs = graph.input_map()
    layer: dict[str, int] = {}
    for nid in order:
        layer[nid] = 1 + max((layer.get(s, 0) for s in inputs[nid]), default=-1)
    layers: dict[int, list[str]] = {}
    for nid in order:
        layers.setdefault(layer[nid], []).append(nid)
    rank: dict[str, float] = {}
    for depth in sorted(layers):
        ids = layers[depth]
        bary = {nid: (sum(rank[s] for s in inputs[nid] if s in rank) / max(1, sum(s in rank for s in inputs[nid]))
                      if any(s in rank for s in inputs[nid]) else i) for i, nid in enumerate(ids)}
        ids.sort(key=lambda n: bary[n])
        for i, nid in enumerate(ids):
            rank[nid] = i
    gap = NODE_GAP[direction]
    across = {nid: (i - (len(ids) - 1) / 2) * gap for ids in layers.values() for i, nid in enumerate(ids)}
    # A skip connection (an input more than one layer up) would run straight behind the nodes between its
    # ends: move those nodes aside (the main path of a residual block steps out, the skip stays straight).
    spans = [(layer[e.source], layer[e.target], e) for e in graph.edges if e.source in layer and e.target in layer]
    for lo, hi, e in sorted(spans, key=lambda s: s[0] - s[1]):  # the longest first: a nested skip steps further
        if hi - lo < 2:
            continue
        for depth in range(lo + 1, hi):
            t = (depth - lo) / (hi - lo)
            line = across[e.source] + t * (across[e.target] - across[e.source])
            for nid in layers[depth]:
                if abs(across[nid] - line) < gap * 0.6:
                    across[nid] = line + gap * 0.8
    positions = {}
    for nid, depth in layer.items():
        along = depth * LAYER_GAP[direction]
        x, y = (across[nid], along) if direction == "down" else (along, across[nid])
        positions[nid] = {"x": float(x), "y": float(y)}
    return positions


def behind_nodes(graph: Graph, source: str, target: str, direction: str) -> bool:
    """Whether the straight edge source -> target passes behind another node (by the nodes' positions
    and about their size): such an edge is drawn over the nodes, dashed, or it could not be seen."""
    w, h = NODE_BOX
    pos = {n.id: n.position for n in graph.nodes if n.position is not None}
    if source not in pos or target not in pos:
        return False
    if direction == "down":
        a = (pos[source]["x"] + w / 2, pos[source]["y"] + h)
        b = (pos[target]["x"] + w / 2, pos[target]["y"])
    else:
        a = (pos[source]["x"] + w, pos[source]["y"] + h / 2)
        b = (pos[target]["x"], pos[target]["y"] + h / 2)
    points = [(a[0] + (b[0] - a[0]) * k / 24, a[1] + (b[1] - a[1]) * k / 24) for k in range(1, 24)]
    for nid, p in pos.items():
        if nid in (source, target):
            continue
        if any(p["x"] < x < p["x"] + w and p["y"] < y < p["y"] + h for x, y in points):
            return True
    return False


def auto_layout(graph: Graph, direction: str = "down", only_missing: bool = False) -> Graph:
    """A copy of `graph` laid out in layers (only the nodes without a position when `only_missing`)."""
    out = graph.copy()
    positions = layered_positions(out, direction)
    for n in out.nodes:
        if not only_missing or n.position is None:
            n.position = positions[n.id]
    return out


# ---- drawing -------------------------------------------------------------------------------------

def flow_elements(graph: Graph, analysis: Analysis, selected: str | None, direction: str, gen: int = 0):
    """(nodes, edges) as the component's dicts; every node's data carries the push generation `gen`."""
    src_pos, tgt_pos = ("bottom", "top") if direction == "down" else ("right", "left")
    # An issue inside a block instance (`layer2.1.add`) marks the instance's node (`layer2`).
    flagged = {i.node_id.split(".", 1)[0] for i in analysis.issues if i.node_id and i.severity == "error"}
    warned = {i.node_id.split(".", 1)[0] for i in analysis.issues if i.node_id}
    nodes = []
    for n in graph.nodes:
        spec = REGISTRY.get(n.type)
        mark = "⚠ " if n.id in warned else ""
        content = f"**{md_escape(n.id)}**\n\n{mark}{md_escape(node_label(graph, analysis, n.id))}"
        if n.frozen:  # not trained: a dashed grey border and a snowflake
            content = f"❄ {content}"
        pos = n.position or {"x": 0.0, "y": 0.0}
        node = StreamlitFlowNode(
            n.id, (pos["x"], pos["y"]), {"content": content, GEN_KEY: gen},
            node_type="input" if spec is not None and spec.inputs[1] == 0 else "default",
            source_position=src_pos, target_position=tgt_pos, connectable=True, deletable=True,
            style=_node_style(spec.category if spec else None,
                              "error" if n.id in flagged else "warning" if n.id in warned else None,
                              n.id == selected))
        if n.frozen:
            node.style = {**node.style, "borderStyle": "dashed", "borderColor": FROZEN_COLOR}
        if n.type in graph.blocks and n.id not in flagged:
            node.style = {**node.style, "background": _tint(BLOCK_COLOR), "border": f"3px double {BLOCK_COLOR}"}
        nodes.append(node)
    inputs = graph.input_map()
    edges = []
    for e in graph.edges:
        multi = len(inputs.get(e.target, ())) > 1
        label = str(inputs[e.target].index(e.source)) if multi else ""
        hidden = behind_nodes(graph, e.source, e.target, direction)
        edges.append(StreamlitFlowEdge(
            f"st-flow-edge_{e.source}-{e.target}", e.source, e.target, edge_type="default",
            marker_end={"type": "arrowclosed"}, deletable=True, focusable=True, label=label,
            label_show_bg=bool(label), style=dict(SKIP_STYLE) if hidden else {"strokeWidth": 2},
            z_index=1000 if hidden else 0, label_style={}, label_bg_style={}))
    expanded = [nid for nid in st.session_state.get(EXPANDED_KEY, ()) if graph.has_node(nid)]
    if expanded:
        more_nodes, more_edges = inside_elements(graph, analysis, expanded, direction, gen)
        nodes += more_nodes
        edges += more_edges
    return nodes, edges


def inside_elements(graph: Graph, analysis: Analysis, instance_ids, direction: str, gen: int = 0):
    """(nodes, edges) showing the layers inside the expanded instances, by path, beside each instance: one
    column (row) per copy. They are a view: not in the graph, so moving them changes nothing, and they
    cannot be deleted or connected (edit the block's definition or ungroup the instance)."""
    ex = analysis.expansion
    nodes, edges = [], []
    if ex is None:
        return nodes, edges
    src_pos, tgt_pos = ("bottom", "top") if direction == "down" else ("right", "left")
    severity = {}
    for i in analysis.issues:
        if i.node_id and severity.get(i.node_id) != "error":
            severity[i.node_id] = i.severity
    for nid in instance_ids:
        inst = ex.instances.get(nid)
        if inst is None:
            continue
        base = graph.node(nid).position or {"x": 0.0, "y": 0.0}
        members = set(inst.members)
        for c, copy_members in enumerate(inst.copy_members):
            for k, path in enumerate(copy_members):
                info = analysis.nodes.get(path)
                flat = ex.graph.node(path)
                shape = fmt_shape(info.output_shape) if info and info.output_shape is not None else "?"
                spec = REGISTRY.get(flat.type)
                text = spec.describe(flat.params) if spec else flat.type
                along, across = k * 70.0, (c + 1) * 230.0
                x, y = (base["x"] + across, base["y"] + along) if direction == "down" else \
                    (base["x"] + along, base["y"] + across)
                style = _node_style(spec.category if spec else None, severity.get(path), False)
                style.update(borderStyle="dashed", opacity=0.92, fontSize="11px", minWidth="150px")
                nodes.append(StreamlitFlowNode(
                    path, (x, y), {"content": f"**{md_escape(path)}**\n\n{md_escape(text)} -> {shape}", GEN_KEY: gen},
                    node_type="default", source_position=src_pos, target_position=tgt_pos, connectable=False,
                    deletable=False, style=style))
        for e in ex.graph.edges:
            if e.target in members and e.source in members:
                edges.append(StreamlitFlowEdge(
                    f"st-flow-edge_{e.source}-{e.target}", e.source, e.target, edge_type="default",
                    marker_end={"type": "arrowclosed"}, deletable=False, focusable=False,
                    style={"strokeWidth": 1, "strokeDasharray": "4 3"}, label_style={}, label_bg_style={}))
    return nodes, edges


def _signature(nodes: list[dict], edges: list[dict]) -> str:
    """What the picture shows, comparable between our dicts and the browser's."""
    ns = sorted((n.get("id"), round(float(n.get("position", {}).get("x", 0))), round(float(n.get("position", {})
                 .get("y", 0))), n.get("data", {}).get("content"), n.get("type"), n.get("sourcePosition"),
                 json.dumps(n.get("style") or {}, sort_keys=True)) for n in nodes)
    es = sorted((e.get("source"), e.get("target"), e.get("label") or "") for e in edges)
    return json.dumps([ns, es])


MIN_ZOOM = 0.8  # fit-to-view never shrinks 12 px labels below about 10 px: pan (or use the minimap) for the rest
MAX_HEIGHT = 1400


def fit_height(graph: Graph) -> int:
    """A canvas tall enough that a long chain fits at a readable zoom (up to MAX_HEIGHT)."""
    span = 0.0
    if graph.nodes:
        axis = "y" if direction() == "down" else "x"
        values = [n.position[axis] for n in graph.nodes if n.position]
        span = (max(values) - min(values)) if values and axis == "y" else 0.0
    return int(min(MAX_HEIGHT, 140 + span * 0.8))


def render(graph: Graph, analysis: Analysis, *, height: int = 620) -> None:
    """Draw the canvas; the browser's edits come back through `absorb_browser_state` on the next run."""
    gen = st.session_state.get(_GEN, 0)
    nodes, edges = flow_elements(graph, analysis, selected_node(graph), direction(), gen)
    shown = _signature([n.asdict() for n in nodes], [e.asdict() for e in edges])
    if shown != st.session_state.get(_SHOWN):
        gen = st.session_state[_GEN] = gen + 1
        for n in nodes:
            n.data[GEN_KEY] = gen
        timestamp = st.session_state.get(_BROWSER_TS, 0) + 1  # the component adopts it: >= its own
        st.session_state[_SHOWN] = shown
    else:
        timestamp = 0  # nothing new: the component keeps what it shows (and the user's viewport)
    st.session_state[_BASE_REV] = session.graph_revision()  # the picture shows this graph (or will)
    height = max(height, fit_height(graph))
    streamlit_flow(FLOW_KEY, StreamlitFlowState(nodes, edges, timestamp=timestamp), height=height,
                   fit_view=True, show_controls=True, allow_new_edges=True, get_node_on_click=True,
                   get_edge_on_click=True, enable_node_menu=True, enable_edge_menu=True, min_zoom=MIN_ZOOM,
                   hide_watermark=True, show_minimap=True, layout=ManualLayout(), style={"background": "#fafafa"})


_HIDE_MENU_ITEMS = """<script>
// The component's context menus offer "Edit Edge" and "Edit Node" editors that the studio does not
// support (a node is edited in the inspector; an edge has nothing to edit): hide those entries.
const hide = () => {
  const frame = window.parent.document.querySelector('iframe[title="streamlit_flow.streamlit_flow"]');
  const doc = frame && frame.contentDocument;
  if (!doc || !doc.body || doc.body.dataset.studioMenus) return;
  doc.body.dataset.studioMenus = "1";
  new MutationObserver(() => doc.querySelectorAll("button").forEach(b => {
    if (/^\\s*Edit (Edge|Node)\\s*$/.test(b.textContent)) b.style.display = "none";
  })).observe(doc.body, {childList: true, subtree: true});
};
hide(); setInterval(hide, 1000);
</script>"""


def hide_unsupported_menu_items() -> None:
    """Hide the component's own edge and node editors (call once, at the end of the page: it draws an
    empty frame, as high as its content: nothing)."""
    st.iframe(_HIDE_MENU_ITEMS)


# ---- reading the browser's edits -----------------------------------------------------------------

def absorb_browser_state(graph: Graph) -> Graph | None:
    """Apply the browser's newest state: returns the edited graph, or None when the graph is unchanged.

    Also moves the selection when a node (or edge) id comes back. Call before anything is drawn, with
    the session's current graph; hand an edited graph to `apply_browser_edit`.
    """
    value = st.session_state.get(FLOW_KEY)
    if not isinstance(value, dict):
        return None
    ts = value.get("timestamp")
    if not isinstance(ts, (int, float)) or ts <= st.session_state.get(_BROWSER_TS, 0):
        return None
    st.session_state[_BROWSER_TS] = ts
    if not is_current_picture(value):
        st.session_state[_SHOWN] = None  # push the current picture again, above this answer's timestamp
        return None
    st.session_state[_SHOWN] = _signature(value.get("nodes") or [], value.get("edges") or [])
    edited = diff_browser_state(graph, value)
    chosen = value.get("selectedId")
    after = edited or graph
    if isinstance(chosen, str):
        if after.has_node(chosen):
            select_node(chosen)
        elif chosen.startswith("st-flow-edge_"):
            pair = next(((e.source, e.target) for e in after.edges
                         if f"st-flow-edge_{e.source}-{e.target}" == chosen), None)
            if pair:
                st.session_state[_SELECTED] = None  # an edge click moves the selection off the node
                st.session_state[_SELECTED_EDGE] = pair
    elif chosen is None and edited is None and _answers_for_this_picture() > _AUTOMATIC_ANSWERS:
        select_node(None)  # a click on the empty pane (nothing moved, no automatic answer): deselect
    return edited


_ANSWERS = "studio.build.answers"  # (generation, answers read for it)
_AUTOMATIC_ANSWERS = 2  # the component answers each picture twice by itself: on adopting it, after its layout pass


def _answers_for_this_picture() -> int:
    gen = st.session_state.get(_GEN)
    last_gen, count = st.session_state.get(_ANSWERS, (None, 0))
    count = count + 1 if last_gen == gen else 1
    st.session_state[_ANSWERS] = (gen, count)
    return count


def is_current_picture(value: dict) -> bool:
    """Whether a browser state was made from the newest push, with the graph unchanged since it was drawn.

    The component cannot add nodes, so every node it returns came from a push: all of them must carry
    the newest generation. The graph must still be the revision the canvas drew last: a callback
    (open a template, undo, add a layer) that ran before this read makes the browser's picture old.
    """
    gen = st.session_state.get(_GEN)
    if gen is None or st.session_state.get(_BASE_REV) != session.graph_revision():
        return False
    nodes = [n for n in value.get("nodes") or [] if isinstance(n, dict)]
    return all(isinstance(n.get("data"), dict) and n["data"].get(GEN_KEY) == gen for n in nodes)


def apply_browser_edit(edited: Graph) -> None:
    """Make a graph edited in the browser current (undoable); the browser already shows it."""
    session.set_current_graph(edited)
    st.session_state[_BASE_REV] = session.graph_revision()


def diff_browser_state(graph: Graph, value: dict) -> Graph | None:
    """The graph with the browser's moves, deletions and new or removed edges; None when none."""
    raw_nodes = {n["id"]: n for n in value.get("nodes") or [] if isinstance(n, dict) and isinstance(n.get("id"), str)}
    if not raw_nodes and graph.nodes and not value.get("edges"):
        return None  # an empty answer from a component that has not drawn yet is not "delete everything"
    g = graph.copy()
    changed = False
    kept = [n for n in g.nodes if n.id in raw_nodes]
    if len(kept) != len(g.nodes):
        ids = {n.id for n in kept}
        g.nodes = kept
        g.edges = [e for e in g.edges if e.source in ids and e.target in ids]
        changed = True
    for n in g.nodes:
        pos = raw_nodes[n.id].get("position") or {}
        x, y = pos.get("x"), pos.get("y")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)):
            continue
        if n.position is None or abs(n.position["x"] - x) > 0.5 or abs(n.position["y"] - y) > 0.5:
            n.position = {"x": round(float(x), 1), "y": round(float(y), 1)}
            changed = True
    pairs = []
    for e in value.get("edges") or []:
        if isinstance(e, dict) and g.has_node(str(e.get("source"))) and g.has_node(str(e.get("target"))):
            pair = (e["source"], e["target"])
            if pair[0] != pair[1] and pair not in pairs:
                pairs.append(pair)
    present = {(e.source, e.target) for e in g.edges}
    wanted = set(pairs)
    if present - wanted:
        g.edges = [e for e in g.edges if (e.source, e.target) in wanted]
        changed = True
    for pair in pairs:
        if pair not in present:
            g.edges.append(Edge(*pair))
            changed = True
    return g if changed else None
