"""A block opened on the canvas: its body as a plain graph to draw and analyse, and the way back.

`block_view(graph, "basic")` gives the body of block `basic` as a `Graph` of its own: its layers and
edges (positions kept; a missing one stays None for the canvas to lay out), its `Input` nodes given the
shapes and dtypes that feed one instance of the block (the first one, or the one asked for), and every
`"$name"` param replaced by that instance's value. So `analyze(view.graph)` shows that instance's
shapes and errors, layer by layer. The other blocks come along, so a block used inside it stays one node.

A body id that a document may not use (a block's Input is often `x`) is `x_1` in the view (`view_ids`).

`with_block_body_from_view(graph, "basic", edited)` takes the edited view's structure back into the
block's definition: which layers it keeps, its edges, the positions, the layers added in it. A layer
that was already in the block keeps its own params (its `$refs` intact), so substituted values never
leak into the definition. A result that is not a block (a cycle, two outputs, an Input removed) is
refused with a GraphError saying why; the graph is unchanged. Every instance of the block follows.

    >>> from studio.graph import parse_graph
    >>> g = parse_graph({"format": "studio.graph/2", "name": "t",
    ...     "blocks": {"mlp": {"params": {"width": 8}, "nodes": [
    ...         {"id": "x", "type": "Input"}, {"id": "fc", "type": "Linear", "params": {"out_features": "$width"}}],
    ...         "edges": [{"source": "x", "target": "fc"}]}},
    ...     "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
    ...               {"id": "body", "type": "mlp", "params": {"width": 16}}],
    ...     "edges": [{"source": "input", "target": "body"}]})
    >>> v = block_view(g, "mlp")
    >>> v.instance, v.ids, v.graph.node("x_1").params, v.graph.node("fc").params
    ('body', {'x': 'x_1', 'fc': 'fc'}, {'shape': [4]}, {'out_features': 16})
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from studio.analysis import Analysis, analyze
from studio.errors import GraphError, Issue
from studio.graph import Edge, Graph, Node, parse_graph
from studio.graph_ids import node_id_problem


@dataclass
class BlockView:
    """Block `block` drawn as a graph: `graph` (its body with the instance's shapes and values),
    `instance` the path of the instance whose shapes it shows (None: the block is not used, so its
    inputs have no shape) and `values` that instance's block parameters."""

    block: str
    graph: Graph
    instance: str | None = None
    values: dict = field(default_factory=dict)
    ids: dict = field(default_factory=dict)  # body id -> view id (they differ only for `x` and the like)


def view_ids(block) -> dict[str, str]:
    """Each body node's id in the view. A block's nodes may take ids a document's own nodes may not (its
    Input is often `x`): those get a free id (`x_1`), the others keep theirs."""
    taken = {n.id for n in block.body.nodes}
    out = {}
    for n in block.body.nodes:
        nid, i = n.id, 1
        while node_id_problem(nid) or (nid != n.id and nid in taken):
            nid, i = f"{n.id}_{i}", i + 1
        taken.add(nid)
        out[n.id] = nid
    return out


def body_id(block, view_id: str) -> str:
    """The body id of a view node (a new node's id is its own)."""
    back = {v: k for k, v in view_ids(block).items()}
    return back.get(view_id, view_id)


def instances_of(graph: Graph, block_name: str, analysis: Analysis | None = None) -> list[str]:
    """Paths of every instance of `block_name` in the expanded graph, outer before inner (`layer1`,
    `stage2.0.down`); empty when it is not used or the graph cannot be expanded."""
    analysis = analysis if analysis is not None else analyze(graph)
    ex = analysis.expansion
    if ex is None:
        return []
    return [path for path, inst in ex.instances.items() if inst.block == block_name]


def block_view(graph: Graph, block_name: str, analysis: Analysis | None = None,
               instance: str | None = None) -> BlockView:
    """Block `block_name`'s body as a plain graph with the shapes and values of `instance` (a path), or of
    its first instance when that is None or not one of its instances. KeyError for an unknown block."""
    block = graph.blocks[block_name]
    analysis = analysis if analysis is not None else analyze(graph)
    paths = instances_of(graph, block_name, analysis)
    path = instance if instance in paths else (paths[0] if paths else None)
    if path is not None and not _inputs_known(analysis, path):
        # What feeds it has an error upstream (often an edit of this very block in an earlier copy): show
        # the first instance whose inputs have shapes instead, rather than none.
        path = next((p for p in [path, *paths] if _inputs_known(analysis, p)), path)
    inst = analysis.expansion.instances[path] if path is not None else None
    values = dict(inst.values[0]) if inst is not None and inst.values else dict(block.params)
    feeds = dict(zip(block.input_ids, inst.inputs, strict=False)) if inst is not None else {}
    ids = view_ids(block)
    nodes = []
    for n in block.body.nodes:
        if n.type == "Input":
            params = {}
            info = analysis.nodes.get(feeds.get(n.id, ""))
            if info is not None and info.output_shape is not None:
                params["shape"] = list(info.output_shape)
                if info.dtype and info.dtype != "float32":
                    params["dtype"] = info.dtype
        else:
            params = {k: _value(v, values) for k, v in n.params.items()}
        nodes.append(Node(ids[n.id], n.type, params, copy.deepcopy(n.position), n.frozen, n.repeat))
    edges = [Edge(ids[e.source], ids[e.target], e.port) for e in block.body.edges]
    others = {name: b for name, b in graph.blocks.items() if name != block_name}
    view = Graph(block_name, nodes, edges, block.description, copy.deepcopy(others))
    return BlockView(block_name, view, path, values, ids)


def _inputs_known(analysis: Analysis, path: str) -> bool:
    inst = analysis.expansion.instances[path]
    infos = [analysis.nodes.get(i) for i in inst.inputs]
    return bool(infos) and all(i is not None and i.output_shape is not None for i in infos)


def inputs_known(view: BlockView) -> bool:
    """Whether every Input of the view has its instance's shape (False: the block is unused, or what
    feeds every instance has an error, and analysis shows the Input's default shape)."""
    return all("shape" in n.params for n in view.graph.nodes if n.type == "Input")


def _value(v, values: dict):
    from studio.graph_blocks import is_ref

    return copy.deepcopy(values[v[1:]]) if is_ref(v) and v[1:] in values else v


def with_block_body_from_view(graph: Graph, block_name: str, view: Graph) -> Graph:
    """A copy of `graph` whose block `block_name` has the edited view's structure: its layers (kept, removed
    or new), its edges and positions. A layer the block already had keeps its own params; a new one takes
    the view's. GraphError naming the cause when the result is not a valid block (nothing is changed)."""
    if block_name not in graph.blocks:
        raise GraphError(f"the graph has no block named {block_name!r}; it was renamed or removed "
                         "(go back to the graph)")
    block = graph.blocks[block_name]
    where = f"block {block_name!r}: "
    back = {v: k for k, v in view_ids(block).items()}
    kept_ids = {back.get(n.id, n.id) for n in view.nodes}
    lost = [i for i in block.input_ids if i not in kept_ids]
    if lost:
        raise GraphError([Issue(None, f"{where}its Input {', '.join(map(repr, lost))} cannot be removed: every "
                                     "instance feeds it; remove the layers after it instead")])
    nodes = []
    for v in view.nodes:
        if v.id in back:
            old = block.body.node(back[v.id])
            nodes.append(Node(old.id, old.type, copy.deepcopy(old.params), copy.deepcopy(v.position),
                              old.frozen, old.repeat))
        elif v.type == "Input":
            raise GraphError([Issue(None, f"{where}a new Input {v.id!r} would change what every instance "
                                         "takes; a block's inputs are set when it is grouped")])
        else:
            nodes.append(Node(v.id, v.type, copy.deepcopy(v.params), copy.deepcopy(v.position), v.frozen, v.repeat))
    ids = {n.id for n in nodes}
    edges = [Edge(back.get(e.source, e.source), back.get(e.target, e.target), e.port) for e in view.edges]
    edges = [e for e in edges if e.source in ids and e.target in ids]
    body = Graph(block_name, nodes, edges, block.description)
    try:
        body.topological_order()
    except GraphError as e:
        stuck = [i.node_id for i in e.issues]
        raise GraphError([Issue(None, f"{where}the edit makes a cycle through {', '.join(stuck[:6])}; a block "
                                     "must not loop back: remove one of those edges")]) from None
    sinks = body.sinks()
    if len(nodes) > 1 and len(sinks) != 1:
        raise GraphError([Issue(None, f"{where}the edit leaves {len(sinks)} nodes without an outgoing edge "
                                     f"({', '.join(sinks[:6])}); a block has a single output: connect "
                                     "all but one of them to a later layer, or remove them")])
    g = graph.copy()
    g.blocks[block_name].body = body
    return parse_graph(g.to_dict())  # the document as a whole still reads (GraphError naming the cause)



def view_with_layer(view: Graph, type_name: str, after: str, params: dict | None = None,
                    step: tuple[float, float] = (0.0, 110.0)) -> tuple[Graph, str]:
    """A copy of the view with a new `type_name` layer fed by `after`, and its id. When `after` has one
    consumer the new layer goes between them (a merge layer such as Add too: drag the skip into it next),
    and what follows moves one `step` along; a block cannot hold a second output, so a new layer never
    dangles beside the chain. ValueError for an unknown type or node."""
    from studio.graph_edit import move_downstream, new_node_id
    from studio.layers import REGISTRY

    if type_name not in REGISTRY or REGISTRY[type_name].inputs[1] == 0:
        raise ValueError(f"{type_name!r} is not a palette layer that takes an input; a block's inputs are "
                         "set when it is grouped")
    if not view.has_node(after):
        raise ValueError(f"the block has no node {after!r} to add after")
    g = view.copy()
    nid = new_node_id(g, type_name)
    anchor = g.node(after)
    consumers = [e for e in g.edges if e.source == after]
    if len(consumers) == 1:
        e = consumers[0]
        g.edges[g.edges.index(e)] = Edge(nid, e.target, e.port)
        move_downstream(g, e.target, step)
    g.edges.append(Edge(after, nid))
    position = None
    if anchor.position is not None:
        position = {"x": anchor.position["x"] + step[0], "y": anchor.position["y"] + step[1]}
    g.nodes.insert(g.nodes.index(anchor) + 1, Node(nid, type_name, copy.deepcopy(params or {}), position))
    return g, nid


def bridged(before: Graph, after: Graph) -> Graph:
    """`after` (a view the canvas edited) where each node deleted from a chain is bridged: a removed node
    that had one input hands it to what it fed (the canvas deletes a node with its edges), so deleting a
    layer in the middle of a block keeps it one chain, as `without_block_layer` does."""
    kept = {n.id for n in after.nodes}
    removed = [n.id for n in before.nodes if n.id not in kept]
    if not removed:
        return after
    g = after.copy()
    ins = before.input_map()
    present = {(e.source, e.target) for e in g.edges}

    def source_of(nid: str) -> str | None:  # the nearest kept node upstream of a chain of removed ones
        while nid not in kept:
            if len(ins[nid]) != 1:
                return None
            nid = ins[nid][0]
        return nid

    for e in before.edges:
        if e.source in removed and e.target in kept:
            src = source_of(e.source)
            if src is not None and (src, e.target) not in present:
                g.edges.append(Edge(src, e.target, e.port))
                present.add((src, e.target))
    return g


__all__ = ["BlockView", "block_view", "body_id", "bridged", "inputs_known", "instances_of", "view_ids",
           "view_with_layer", "with_block_body_from_view"]
