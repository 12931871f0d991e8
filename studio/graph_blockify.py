"""Blocks from an imported model: the identical, chained children of a container become one block instance.

`python -m studio import` traces a module into a flat graph (studio.fximport); a model built the way
torchvision and nanoGPT build theirs holds its repeated stages as containers of copies (`layer1.0`,
`layer1.1`, `h.0` ... `h.11`). `blockify` turns each container whose children have the same layers, params
and wiring, each fed only by the previous one, into one block (named after the children's class) and one
instance with `repeat`; its copies are named as the module's were (`layer1.0.conv1`). Children that differ
(a ResNet stage whose first block downsamples) stay flat. `blockify_import` keeps the result only when the
block graph, given the module's weights, computes the module's output.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from studio.graph import Edge, Graph, Node, node_id_problem
from studio.graph_blocks import Block


def _containers(origin: dict[str, str]) -> dict[str, set[int]]:
    """Module paths followed by a copy index somewhere in the nodes' origins: `layer1` -> {0, 1}."""
    found: dict[str, set[int]] = {}
    for path in origin.values():
        parts = path.split(".")
        for j in range(1, len(parts) - 1):
            if parts[j].isdigit():
                found.setdefault(".".join(parts[:j]), set()).add(int(parts[j]))
    return {s: idx for s, idx in found.items() if len(idx) > 1 and idx == set(range(len(idx)))}


def _copy_members(graph: Graph, origin: dict[str, str], container: str, count: int) -> list[list[str]] | None:
    members = [[n.id for n in graph.nodes if origin.get(n.id, "").startswith(f"{container}.{i}.")]
               for i in range(count)]
    return members if all(members) else None


def _signature(graph: Graph, members: list[str], origin: dict[str, str], prefix: str, input_map: dict,
               layers: set[str]):
    """(type, params, frozen, inputs by position, local id of a layer) per member (a function's name differs
    between copies: fx numbers them, `add`, `add_1`); None unless one input and one output."""
    inside = set(members)
    outside_sources = {s for m in members for s in input_map[m] if s not in inside}
    outputs = [m for m in members if any(t not in inside for t in graph.outputs_of(m)) or not graph.outputs_of(m)]
    if len(outside_sources) != 1 or len(outputs) != 1:
        return None
    position = {m: k for k, m in enumerate(members)}
    rows = []
    for m in members:
        n = graph.node(m)
        local = origin[m][len(prefix):].replace(".", "_") if m in layers else None
        rows.append((n.type, json.dumps(n.params, sort_keys=True), n.frozen,
                     tuple(position.get(s, -1) for s in input_map[m]), local))
    return tuple(rows), next(iter(outside_sources)), outputs[0]


def blockify(graph: Graph, origin: dict[str, str], module: nn.Module,
             layers: set[str]) -> tuple[Graph, dict[str, str]] | None:
    """(the graph with repeated containers as block instances, {new path: flat id}) or None when nothing
    repeats. `origin` maps each flat node id to its module path (`layer1.0.conv1`; a function's is its
    module's path and its own name: `layer1.0.add`); `layers` are the ids of the nodes that are modules."""
    input_map = graph.input_map()
    chosen: list[tuple[str, list[list[str]], tuple, str, str]] = []
    for container in sorted(_containers(origin), key=len):
        if any(container.startswith(c + ".") for c, *_ in chosen):
            continue
        count = len(_containers(origin)[container])
        members = _copy_members(graph, origin, container, count)
        if members is None:
            continue
        sigs = [_signature(graph, ms, origin, f"{container}.{i}.", input_map, layers) for i, ms in enumerate(members)]
        if any(s is None for s in sigs) or any(s[0] != sigs[0][0] for s in sigs):
            continue
        chained = all(sigs[i][1] == sigs[i - 1][2] and set(graph.outputs_of(sigs[i - 1][2])) <= set(members[i])
                      for i in range(1, count))
        if chained:
            chosen.append((container, members, sigs[0][0], sigs[0][1], sigs[-1][2]))
    if not chosen:
        return None
    g = Graph(graph.name, [], [], graph.description)
    paths: dict[str, str] = {}  # new path -> flat id
    member_of = {m: c for c, members, *_ in chosen for ms in members for m in ms}
    taken = {n.id for n in graph.nodes if n.id not in member_of}
    instance_of: dict[str, str] = {}
    block_of: dict[str, str] = {}
    for container, members, rows, _source, _output in chosen:
        inst = container.replace(".", "_")
        if inst in taken or node_id_problem(inst):
            return None
        taken.add(inst)
        first = f"{container}.0."
        local_ids = ["x", *[origin[m][len(first):].replace(".", "_") for m in members[0]]]
        if len(set(local_ids)) != len(local_ids) or any(node_id_problem(i, nested=True) for i in local_ids[1:]):
            return None
        name = _block_name(module, container, g)
        body_nodes = [Node("x", "Input")] + [Node(local, r[0], json.loads(r[1]), None, r[2])
                                             for local, r in zip(local_ids[1:], rows, strict=True)]
        body_edges = []
        for local, r in zip(local_ids[1:], rows, strict=True):
            ported = len(r[3]) > 1
            for port, s in enumerate(r[3]):
                body_edges.append(Edge(local_ids[s + 1] if s >= 0 else "x", local, port if ported else None))
        g.blocks[name] = Block(name, {}, Graph(name, body_nodes, body_edges), "")
        instance_of[container], block_of[container] = inst, name
        for i, ms in enumerate(members):
            for m, local in zip(ms, local_ids[1:], strict=True):
                paths[f"{inst}.{i}.{local}"] = m
    placed: set[str] = set()
    for n in graph.nodes:
        container = member_of.get(n.id)
        if container is None:
            g.nodes.append(n)
            paths[n.id] = n.id
        elif container not in placed:
            placed.add(container)
            copies = len(next(c for c in chosen if c[0] == container)[1])
            g.nodes.append(Node(instance_of[container], block_of[container], {}, None, False, copies))
    ends = {c: (source, output) for c, _, _, source, output in chosen}
    for e in graph.edges:
        s_c, t_c = member_of.get(e.source), member_of.get(e.target)
        if s_c is None and t_c is None:
            g.edges.append(e)
        elif t_c is not None and s_c != t_c and e.source == ends[t_c][0]:
            g.edges.append(Edge(instance_of[s_c] if s_c else e.source, instance_of[t_c], None))
        elif s_c is not None and t_c is None and e.source == ends[s_c][1]:
            g.edges.append(Edge(instance_of[s_c], e.target, e.port))
    g.edges = list({(e.source, e.target): e for e in g.edges}.values())
    return g, paths


def _block_name(module: nn.Module, container: str, g: Graph) -> str:
    from studio.graph_expand import palette_clash

    try:
        base = type(module.get_submodule(f"{container}.0")).__name__
    except AttributeError:
        base = container.replace(".", "_") + "_block"
    if not base.isidentifier() or palette_clash(base) or node_id_problem(base):
        base = container.replace(".", "_") + "_block"
    name, k = base, 2
    while name in g.blocks:
        name, k = f"{base}_{k}", k + 1
    return name


def blockify_import(graph: Graph, origin: dict[str, str], targets: dict[str, str], module: nn.Module,
                    example: torch.Tensor) -> Graph | None:
    """`blockify`, kept only when the block graph with the module's weights (`targets`: flat id -> module
    path of each layer) computes the module's output on `example`; None otherwise or when nothing repeats."""
    from studio.analysis import analyze
    from studio.compile import compile_graph

    done = blockify(graph, origin, module, set(targets))
    if done is None:
        return None
    blocks, paths = done
    try:
        if analyze(blocks).errors:
            return None
        model = compile_graph(blocks, seed=0).eval()
        for path, flat_id in paths.items():
            if flat_id in targets and path in model.node_types:
                model.get_submodule(path).load_state_dict(module.get_submodule(targets[flat_id]).state_dict(),
                                                          strict=True)
        with torch.no_grad():
            expected, got = module(example), model(example)
    except (RuntimeError, AttributeError, KeyError, ValueError):
        return None
    if expected.shape != got.shape or not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        return None
    return blocks


__all__ = ["blockify", "blockify_import"]
