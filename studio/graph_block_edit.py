"""Editing blocks: pure operations on a graph's block definitions and instances (a copy is returned).

The Build page calls these from widget callbacks, like studio.graph_edit's layer edits:
`with_block` adds a definition (a built-in one from studio.block_library), `with_instance` places an
instance of a block, `with_repeat` sets how many chained copies it has, `inlined` replaces an instance
by its layers (ungroup), and `grouped` turns a selection of nodes into a block and one instance wired
the same way.
"""

from __future__ import annotations

import copy

from studio.errors import GraphError
from studio.graph import FORMAT_BLOCKS, Edge, Graph, Node, node_id_problem, parse_graph
from studio.graph_blocks import MAX_REPEAT, Block, block_name_problem, is_ref
from studio.graph_edit import new_node_id


def with_block(graph: Graph, name: str, definition: dict) -> Graph:
    """A copy holding block `name` (a `blocks` entry of a /2 document); unchanged when it already holds
    the same definition. ValueError when the name is taken by another definition or the definition is bad."""
    try:
        block = parse_graph({"format": FORMAT_BLOCKS, "name": "block", "blocks": {name: definition},
                             "nodes": []}).blocks[name]
    except GraphError as e:
        raise ValueError("; ".join(i.message for i in e.issues)) from None
    if name in graph.blocks:
        if graph.blocks[name].to_dict() == block.to_dict():
            return graph.copy()
        raise ValueError(f"the graph already has a different block named {name!r}; rename one of them")
    g = graph.copy()
    g.blocks[name] = block
    return g


def with_instance(graph: Graph, block_name: str, after: str | None = None) -> tuple[Graph, str]:
    """A copy with a new instance of `block_name` (its default params), fed by `after` and put between it
    and its only consumer when it has one (the palette's rule for layers); and the new node's id."""
    g = graph.copy()
    block = g.blocks[block_name]
    nid = new_node_id(g, block_name)
    anchor = g.node(after) if after and g.has_node(after) else None
    position = None
    if anchor is not None and len(block.input_ids) == 1:
        consumers = [e for e in g.edges if e.source == anchor.id]
        if len(consumers) == 1:
            e = consumers[0]
            g.edges[g.edges.index(e)] = Edge(nid, e.target, e.port)
        g.edges.append(Edge(anchor.id, nid))
        if anchor.position is not None:
            position = {"x": anchor.position["x"] + 60.0, "y": anchor.position["y"] + 55.0}
    g.nodes.append(Node(nid, block_name, {}, position))
    return g, nid


def with_repeat(graph: Graph, node_id: str, repeat: int | None) -> Graph:
    """A copy where instance `node_id` has `repeat` chained copies (None: one copy, not indexed)."""
    if repeat is not None and (not isinstance(repeat, int) or isinstance(repeat, bool)
                               or not 1 <= repeat <= MAX_REPEAT):
        raise ValueError(f"repeat must be an integer from 1 to {MAX_REPEAT}, got {repeat!r}")
    g = graph.copy()
    node = g.node(node_id)
    if node.type not in g.blocks:
        raise ValueError(f"{node_id!r} is a {node.type} layer; only a block instance repeats")
    node.repeat = repeat
    return g


def _free_id(wanted: str, taken: set[str], nested: bool = False) -> str:
    base = wanted[:56]
    nid, i = base, 1
    while nid in taken or node_id_problem(nid, nested=nested):
        nid, i = f"{base}_{i}", i + 1
    return nid


def inlined(graph: Graph, node_id: str) -> Graph:
    """A copy with instance `node_id` replaced by its layers (ids `layer1_0_conv1`), wired the same way."""
    from studio.graph_expand import expand

    node = graph.node(node_id)
    if node.type not in graph.blocks:
        raise ValueError(f"{node_id!r} is a {node.type} layer, not a block instance")
    ex = expand(graph)
    if node_id not in ex.instances or ex.fatal:
        raise ValueError(f"{node_id!r} cannot be expanded: " + "; ".join(str(i) for i in ex.issues[:3]))
    inst = ex.instances[node_id]
    members = set(inst.members)
    g = graph.copy()
    taken = {n.id for n in g.nodes} - {node_id}
    new_ids: dict[str, str] = {}
    base = node.position or {"x": 0.0, "y": 0.0}
    at = next(i for i, n in enumerate(g.nodes) if n.id == node_id)
    added = []
    for k, m in enumerate(inst.members):
        new_ids[m] = _free_id(m.replace(".", "_"), taken)
        taken.add(new_ids[m])
        flat = ex.graph.node(m)
        added.append(Node(new_ids[m], flat.type, copy.deepcopy(flat.params),
                          {"x": base["x"], "y": base["y"] + 80.0 * k}, flat.frozen))
    g.nodes[at:at + 1] = added
    edges = [e for e in g.edges if e.target != node_id and e.source != node_id]
    for e in ex.graph.edges:  # inside the instance, and from what fed it
        if e.target in members:
            edges.append(Edge(new_ids.get(e.source, e.source), new_ids[e.target], e.port))
    out = new_ids[inst.output]
    edges += [Edge(out, e.target, e.port) for e in g.edges if e.source == node_id]
    g.edges = edges
    return g


def grouped(graph: Graph, node_ids: list[str], block_name: str, instance_id: str | None = None) -> Graph:
    """A copy where the nodes `node_ids` become block `block_name` and one instance of it, wired the same way.

    What feeds the selection from outside becomes the block's Inputs (one per source node, in the order
    first met); the selection must have one node whose output leaves it (or is the model's output).
    Raises ValueError saying what is wrong."""
    from studio.graph_expand import palette_clash

    problem = block_name_problem(block_name) or palette_clash(block_name)
    if problem:
        raise ValueError(problem)
    if block_name in graph.blocks:
        raise ValueError(f"the graph already has a block named {block_name!r}; choose another name")
    chosen = [n for n in graph.nodes if n.id in set(node_ids)]
    if not chosen:
        raise ValueError("select at least one node to group")
    inside = {n.id for n in chosen}
    if any(n.type == "Input" for n in chosen):
        raise ValueError("the model's Input cannot go inside a block; leave it out of the selection")
    sources: list[str] = []
    for e in graph.edges:
        if e.target in inside and e.source not in inside and e.source not in sources:
            sources.append(e.source)
    leaving = sorted({e.source for e in graph.edges if e.source in inside and e.target not in inside})
    sinks = [n.id for n in chosen if not graph.outputs_of(n.id)]
    outputs = sorted(set(leaving) | set(sinks))
    if len(outputs) != 1:
        raise ValueError(f"a block has one output, but {', '.join(outputs) or 'no node'} of the selection "
                         f"{'feed' if len(outputs) > 1 else 'feeds'} the rest of the graph; select the nodes "
                         "up to one output")
    if not sources:
        raise ValueError("nothing feeds the selection; a block needs an input")
    input_ids = ["x"] if len(sources) == 1 else [f"x{i}" for i in range(len(sources))]
    input_ids = [_free_id(i, inside, nested=True) for i in input_ids]
    alias = dict(zip(sources, input_ids, strict=True))
    body_nodes = [Node(i, "Input") for i in input_ids]
    body_nodes += [Node(n.id, n.type, copy.deepcopy(n.params), None, n.frozen, n.repeat) for n in chosen]
    body_edges = [Edge(alias.get(e.source, e.source), e.target, e.port) for e in graph.edges if e.target in inside]
    block = Block(block_name, {}, Graph(block_name, body_nodes, body_edges), "")
    instance_id = instance_id or new_node_id(graph, block_name)
    problem = node_id_problem(instance_id)
    if problem:
        raise ValueError(problem)
    if instance_id not in inside and graph.has_node(instance_id):
        raise ValueError(f"id {instance_id!r} is already used by another node; choose another")
    g = graph.copy()
    first = next(i for i, n in enumerate(g.nodes) if n.id in inside)
    position = chosen[0].position
    g.blocks[block_name] = block
    kept = [n for n in g.nodes if n.id not in inside]
    kept.insert(min(first, len(kept)), Node(instance_id, block_name, {}, position))
    g.nodes = kept
    edges = [e for e in g.edges if e.source not in inside and e.target not in inside]
    edges += [Edge(s, instance_id, i if len(sources) > 1 else None) for i, s in enumerate(sources)]
    edges += [Edge(instance_id, e.target, e.port) for e in g.edges if e.source == outputs[0] and e.target not in inside]
    g.edges = edges
    try:
        g.copy()  # the document still parses
    except GraphError as e:
        raise ValueError(str(e)) from None
    return g


__all__ = ["grouped", "inlined", "with_block", "with_instance", "with_repeat"]


def with_block_node_param(graph: Graph, block_name: str, node_id: str, name: str, value) -> Graph:
    """A copy where layer `node_id` inside block `block_name` has param `name` = `value` (a value, or
    `"$param"` naming a block parameter; None removes it, so the layer's default applies). Every instance
    of the block follows."""
    g = graph.copy()
    node = g.blocks[block_name].body.node(node_id)
    if value is None:
        node.params.pop(name, None)
    else:
        node.params[name] = value
    return g


def with_block_param_declared(graph: Graph, block_name: str, name: str, default) -> Graph:
    """A copy where block `block_name` declares parameter `name` with `default` (added, or its default
    changed); ValueError when the name is not an identifier."""
    from studio.graph_ids import NODE_ID_RE

    if not isinstance(name, str) or not NODE_ID_RE.match(name):
        raise ValueError(f"parameter name {name!r} is not an identifier; use letters, digits and '_' (e.g. 'width')")
    g = graph.copy()
    g.blocks[block_name].params[name] = default
    return g


__all__ += ["with_block_node_param", "with_block_param_declared"]


def renamed_block(graph: Graph, old: str, new: str) -> Graph:
    """A copy where block `old` is called `new`, every instance of it too (in the graph and inside other
    blocks); ValueError with the reason for a bad or used name."""
    from studio.graph_expand import palette_clash

    if new == old:
        return graph.copy()
    problem = block_name_problem(new) or palette_clash(new)
    if problem:
        raise ValueError(problem)
    if new in graph.blocks:
        raise ValueError(f"the graph already has a block named {new!r}; choose another name")
    g = graph.copy()
    g.blocks = {(new if name == old else name): block for name, block in g.blocks.items()}
    block = g.blocks[new]
    block.name = block.body.name = new
    for node in [*g.nodes, *(n for b in g.blocks.values() for n in b.body.nodes)]:
        if node.type == old:
            node.type = new
    return g


__all__ += ["renamed_block"]


def _checked(g: Graph) -> Graph:
    """`g` read again as a whole document (a block body left without an output, or with a cycle, is
    refused with the reason: ValueError)."""
    try:
        return parse_graph(g.to_dict())
    except GraphError as e:
        raise ValueError("; ".join(i.message for i in e.issues)) from None


def with_block_layer_added(graph: Graph, block_name: str, after: str, type_name: str) -> tuple[Graph, str]:
    """A copy where block `block_name` has a new `type_name` layer after its layer `after` (between it and
    its only consumer when it has one: a chain grows by one), and the new layer's id. Every instance
    follows. ValueError for an unknown type or layer."""
    from studio.layers import REGISTRY

    if type_name not in REGISTRY or type_name == "Input":
        raise ValueError(f"{type_name!r} is not a palette layer; choose one of the palette's types")
    g = graph.copy()
    body = g.blocks[block_name].body
    if not body.has_node(after):
        raise ValueError(f"block {block_name!r} has no layer {after!r}")
    nid = new_node_id(body, type_name)
    consumers = [e for e in body.edges if e.source == after]
    if len(consumers) == 1 and REGISTRY[type_name].inputs == (1, 1):
        e = consumers[0]
        body.edges[body.edges.index(e)] = Edge(nid, e.target, e.port)
    body.edges.append(Edge(after, nid))
    body.nodes.insert(body.nodes.index(body.node(after)) + 1, Node(nid, type_name, {}, None))
    return _checked(g), nid


def without_block_layer(graph: Graph, block_name: str, node_id: str) -> Graph:
    """A copy where block `block_name` no longer has layer `node_id`; a layer with one input is bridged
    (what it fed now takes that input), so removing a layer from a chain keeps the chain. Every instance
    follows. ValueError for the block's input or a removal that leaves no valid block."""
    g = graph.copy()
    body = g.blocks[block_name].body
    if not body.has_node(node_id) or body.node(node_id).type == "Input":
        raise ValueError(f"{node_id!r} is not a layer of block {block_name!r} that can be removed (its inputs stay)")
    sources = [e.source for e in body.edges if e.target == node_id]
    bridged = []
    for e in body.edges:
        if e.target == node_id:
            continue
        if e.source == node_id:
            if len(sources) != 1:
                raise ValueError(f"{node_id!r} merges {len(sources)} inputs; remove what feeds it first, or "
                                 "ungroup an instance to edit its layers one by one")
            bridged.append(Edge(sources[0], e.target, e.port))
        else:
            bridged.append(e)
    body.edges = bridged
    body.nodes = [n for n in body.nodes if n.id != node_id]
    return _checked(g)


__all__ += ["with_block_layer_added", "without_block_layer"]


def renamed_block_layer(graph: Graph, block_name: str, old: str, new: str) -> Graph:
    """A copy where layer `old` of block `block_name` is called `new` (its edges follow); every instance
    follows, so its paths (and state-dict keys) become `instance.i.new`. ValueError for a bad or used id."""
    g = graph.copy()
    body = g.blocks[block_name].body
    if not body.has_node(old):
        raise ValueError(f"block {block_name!r} has no layer {old!r}")
    if new == old:
        return g
    problem = node_id_problem(new, nested=True)
    if problem:
        raise ValueError(problem)
    if body.has_node(new):
        raise ValueError(f"block {block_name!r} already has a layer {new!r}; choose another id")
    body.node(old).id = new
    body.edges = [Edge(new if e.source == old else e.source, new if e.target == old else e.target, e.port)
                  for e in body.edges]
    return _checked(g)


def without_block_param(graph: Graph, block_name: str, name: str) -> Graph:
    """A copy where block `block_name` no longer declares parameter `name`, and no instance sets it.
    ValueError while a layer of the block still takes it (`$name`), naming those layers."""
    block = graph.blocks[block_name]
    if name not in block.params:
        raise ValueError(f"block {block_name!r} declares no parameter {name!r}")
    users = [f"{n.id}.{k}" for n in block.body.nodes for k, v in n.params.items() if is_ref(v) and v[1:] == name]
    if users:
        raise ValueError(f"parameter {name!r} is used by {', '.join(users)}; give those a value first "
                         "(or another $parameter), then remove it")
    g = graph.copy()
    del g.blocks[block_name].params[name]
    for node in [*g.nodes, *(n for b in g.blocks.values() for n in b.body.nodes)]:
        if node.type == block_name:
            node.params.pop(name, None)
    return _checked(g)


__all__ += ["renamed_block_layer", "without_block_param"]
