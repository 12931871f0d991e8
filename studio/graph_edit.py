"""Editing a graph: pure operations that return an edited copy and never change their argument.

The Build page's inspector and palette call these from widget callbacks; they hold no UI state and
import no Streamlit, so they are tested here like any other part of the core.

>>> from studio.graph import parse_graph
>>> g = parse_graph({"format": "studio.graph/1", "name": "g", "nodes": [
...     {"id": "input", "type": "Input", "params": {"shape": [4]}},
...     {"id": "fc1", "type": "Linear", "params": {"out_features": 8}}],
...     "edges": [{"source": "input", "target": "fc1"}]})
>>> g2 = renamed(with_param(g, "fc1", "out_features", 3), "fc1", "head")
>>> [(n.id, n.params) for n in g2.nodes], [(e.source, e.target) for e in g2.edges]
([('input', {'shape': [4]}), ('head', {'out_features': 3})], [('input', 'head')])
>>> g.node("fc1").params  # the argument is unchanged
{'out_features': 8}
"""

from __future__ import annotations

import json

from studio.graph import Edge, Graph, node_id_problem
from studio.layers import REGISTRY


def new_node_id(graph: Graph, type_name: str) -> str:
    """A free id from the type, e.g. 'conv2d1', 'relu3'.

    >>> from studio.graph import Graph, Node
    >>> new_node_id(Graph("g", [Node("relu1", "ReLU")]), "ReLU")
    'relu2'
    """
    base = "".join(ch for ch in type_name.lower() if ch.isalnum()) or "layer"
    taken = {n.id for n in graph.nodes}
    i = 1
    while f"{base}{i}" in taken or node_id_problem(f"{base}{i}"):
        i += 1
    return f"{base}{i}"


def move_downstream(graph: Graph, start: str, step: tuple[float, float]) -> None:
    """Move `start` and every node it feeds (directly or not) by `step`, in place: what follows a layer
    inserted into a chain makes room for it. Nodes without a position stay unplaced."""
    todo, seen = [start], {start}
    while todo:
        node = graph.node(todo.pop())
        if node.position is not None:
            node.position = {"x": node.position["x"] + step[0], "y": node.position["y"] + step[1]}
        for t in graph.outputs_of(node.id):
            if t not in seen:
                seen.add(t)
                todo.append(t)


def with_param(graph: Graph, node_id: str, name: str, value) -> Graph:
    """A copy with `name` set; a value equal to the documented default is omitted, as in DESIGN.md."""
    g = graph.copy()
    node = g.node(node_id)
    spec = REGISTRY.get(node.type)
    try:
        default = spec.param(name).default if spec else object()
    except KeyError:
        default = object()
    if value == default and type(value) is type(default):
        node.params.pop(name, None)
    else:
        node.params[name] = value
    return g


def with_frozen(graph: Graph, node_id: str, frozen: bool) -> Graph:
    """A copy with the node's `frozen` flag set (its parameters are then not trained)."""
    g = graph.copy()
    g.node(node_id).frozen = bool(frozen)
    return g


def renamed(graph: Graph, old: str, new: str) -> Graph:
    """A copy with node `old` called `new` (edges follow); raises ValueError with the reason."""
    problem = node_id_problem(new)
    if problem:
        raise ValueError(problem)
    if new != old and graph.has_node(new):
        raise ValueError(f"id {new!r} is already used by another node; choose another")
    g = graph.copy()
    g.node(old).id = new
    g.edges = [Edge(new if e.source == old else e.source, new if e.target == old else e.target, e.port)
               for e in g.edges]
    return g


def without_node(graph: Graph, node_id: str) -> Graph:
    """A copy without the node and every edge that touches it."""
    g = graph.copy()
    g.nodes = [n for n in g.nodes if n.id != node_id]
    g.edges = [e for e in g.edges if node_id not in (e.source, e.target)]
    return g


def without_edge(graph: Graph, source: str, target: str) -> Graph:
    """A copy without the edges from `source` to `target`."""
    g = graph.copy()
    g.edges = [e for e in g.edges if (e.source, e.target) != (source, target)]
    return g


def duplicated(graph: Graph, node_id: str) -> tuple[Graph, str]:
    """A copy with a twin of `node_id` (same type and params, fed by the same inputs), and its id."""
    g = graph.copy()
    node = g.node(node_id)
    nid = new_node_id(g, node.type)
    pos = node.position or {"x": 0.0, "y": 0.0}
    g.nodes.insert(g.nodes.index(node) + 1,
                   type(node)(nid, node.type, json.loads(json.dumps(node.params)),
                              {"x": pos["x"] + 60.0, "y": pos["y"] + 40.0}, repeat=node.repeat))
    g.edges += [Edge(src, nid) for src in g.inputs_of(node_id)]
    return g, nid


def with_input_moved_up(graph: Graph, node_id: str, index: int) -> Graph:
    """A copy where input `index` of a multi-input node comes one place earlier (explicit ports)."""
    order = graph.inputs_of(node_id)
    order[index - 1], order[index] = order[index], order[index - 1]
    g = graph.copy()
    rank = {src: i for i, src in enumerate(order)}
    g.edges = [Edge(e.source, e.target, rank[e.source]) if e.target == node_id else e for e in g.edges]
    return g
