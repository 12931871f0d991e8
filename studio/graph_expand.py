"""Expansion of a graph with block instances into the flat graph the analysis and the compiler use.

Every node inside an instance becomes a node of the flat graph whose id is its dotted path:
`layer1.0.conv1` (instance `layer1`, written with `repeat`, copy 0, node `conv1` of the block), or
`layer4_0.conv1` for an instance without `repeat` (DESIGN.md, "Blocks"). A block's `Input` nodes
vanish: what fed the instance feeds their consumers, and the block's output node stands for the
instance downstream. Problems that only show on expansion (a `"$name"` no block declares, an unknown
instance parameter, a block that contains itself, `repeat` < 1, a wrong number of inputs) are issues
named by the full path; nothing here raises.

    >>> from studio.graph import parse_graph
    >>> g = parse_graph({"format": "studio.graph/2", "name": "t",
    ...     "blocks": {"mlp": {"params": {"width": 8}, "nodes": [
    ...         {"id": "x", "type": "Input"}, {"id": "fc", "type": "Linear", "params": {"out_features": "$width"}},
    ...         {"id": "act", "type": "ReLU"}],
    ...         "edges": [{"source": "x", "target": "fc"}, {"source": "fc", "target": "act"}]}},
    ...     "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
    ...               {"id": "body", "type": "mlp", "repeat": 2, "params": {"width": 16}}],
    ...     "edges": [{"source": "input", "target": "body"}]})
    >>> flat = expand(g).graph
    >>> [n.id for n in flat.nodes]
    ['input', 'body.0.fc', 'body.0.act', 'body.1.fc', 'body.1.act']
    >>> flat.node("body.1.fc").params, flat.inputs_of("body.1.fc")
    ({'out_features': 16}, ['body.0.act'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.errors import GraphError, Issue
from studio.graph import MAX_NODES, Edge, Graph, Node
from studio.graph_blocks import MAX_REPEAT, Block, is_ref, substitute

# Nodes of an expanded graph: a GPT-2-sized model of 12 blocks is about 130, a ResNet-152 about 520.
MAX_FLAT_NODES = 4 * MAX_NODES


@dataclass
class Instance:
    """One block instance in the expanded graph."""

    path: str  # "layer1", or "layer2_0.down" when nested
    block: str
    repeat: int | None  # as written; None: one copy, not indexed
    copies: list[str] = field(default_factory=list)  # "layer1.0", "layer1.1" (or ["layer4_0"])
    inputs: list[str] = field(default_factory=list)  # flat ids that feed it, by port
    copy_outputs: list[str] = field(default_factory=list)  # flat id of each copy's output
    copy_members: list[list[str]] = field(default_factory=list)  # flat node ids inside each copy (nested too)
    values: list[dict] = field(default_factory=list)  # each copy's block parameter values

    @property
    def output(self) -> str | None:
        return self.copy_outputs[-1] if self.copy_outputs else None

    @property
    def members(self) -> list[str]:
        return [m for ms in self.copy_members for m in ms]


@dataclass
class Expansion:
    """The flat graph of a graph with blocks, its instances and what went wrong."""

    graph: Graph  # flat: no blocks, dotted ids
    instances: dict[str, Instance] = field(default_factory=dict)  # by path, outer before inner
    issues: list[Issue] = field(default_factory=list)
    fatal: bool = False  # the structure is broken (the flat graph is incomplete): analyse no further
    flagged: set = field(default_factory=set)  # (path, param) already reported here

    def top_level(self, path: str) -> str:
        """The top-level node a path belongs to ('layer1.0.conv1' -> 'layer1')."""
        return path.split(".", 1)[0]

    def instance_of_copy(self, copy_path: str) -> tuple[Instance, int] | None:
        for inst in self.instances.values():
            if copy_path in inst.copies:
                return inst, inst.copies.index(copy_path)
        return None


class _TooLarge(Exception):
    pass


class _Expander:
    def __init__(self, graph: Graph):
        self.blocks: dict[str, Block] = graph.blocks
        self.ex = Expansion(Graph(graph.name, [], [], graph.description))

    def issue(self, path: str | None, message: str, param: str | None = None, *, fatal: bool = False) -> None:
        self.ex.issues.append(Issue(path, message, param))
        self.ex.flagged.add((path, param))
        if fatal:
            self.ex.fatal = True

    def add_node(self, node: Node) -> None:
        if len(self.ex.graph.nodes) >= MAX_FLAT_NODES:
            raise _TooLarge
        self.ex.graph.nodes.append(node)

    def scope(self, body: Graph, prefix: str, values: dict | None, stack: tuple[str, ...],
              input_alias: dict[str, str] | None, frozen: bool) -> str | None:
        """Expand one graph (the document's, or a block's body for one copy); the flat id of its output."""
        try:
            order = body.topological_order()
        except GraphError as e:
            where = f"block {stack[-1]!r}: " if stack else ""
            for i in e.issues:
                self.issue(prefix + i.node_id if i.node_id else None, where + i.message, fatal=True)
            return None
        by_id = {n.id: n for n in body.nodes}
        input_map = body.input_map()
        alias: dict[str, str] = {}
        for nid in order:
            n = by_id[nid]
            path = prefix + nid
            if input_alias is not None and n.type == "Input":
                if nid in input_alias:
                    alias[nid] = input_alias[nid]
                continue
            srcs = [alias[s] for s in input_map[nid] if s in alias]
            if len(srcs) < len(input_map[nid]):
                continue  # downstream of a part that could not be expanded (already reported)
            params = self.params_of(n, path, values, stack)
            if n.type in self.blocks:
                out = self.instance(n, path, params, srcs, stack, frozen or n.frozen)
                if out is not None:
                    alias[nid] = out
                continue
            if n.repeat is not None:
                self.issue(path, f"repeat={n.repeat} is set on a {n.type} layer; repeat chains copies of a block "
                                 "instance only: group the layers into a block, or remove repeat", fatal=True)
            self.add_node(Node(path, n.type, params, n.position if not prefix else None, frozen or n.frozen))
            ported = len(srcs) > 1
            for i, s in enumerate(srcs):
                self.ex.graph.edges.append(Edge(s, path, i if ported else None))
            alias[nid] = path
        if input_alias is None:
            return None
        block = self.blocks[stack[-1]]
        out_id = block.output_id()
        if out_id is None:
            self.issue(prefix.rstrip(".") or None, f"block {block.name!r} has no single output node; "
                                                   "connect its branches into one", fatal=True)
            return None
        return alias.get(out_id)

    def params_of(self, n: Node, path: str, values: dict | None, stack: tuple[str, ...]) -> dict:
        if values is None:  # the document's own nodes: no block parameter to take
            for k, v in n.params.items():
                if is_ref(v):
                    self.issue(path, f"{k}={v!r} refers to a block parameter, but {path!r} is not inside a block; "
                                     "write a value", k)
            return dict(n.params)
        params, missing = substitute(n.params, values)
        block = self.blocks[stack[-1]]
        for param, ref in missing:
            declared = ", ".join(sorted(block.params)) or "none"
            self.issue(path, f"{param}='${ref}' names no parameter of block {block.name!r} (its parameters: "
                             f"{declared}); declare {ref!r} in the block's params or use one of those", param)
        return params

    def instance(self, n: Node, path: str, params: dict, srcs: list[str], stack: tuple[str, ...],
                 frozen: bool) -> str | None:
        block = self.blocks[n.type]
        if n.type in stack:
            chain = " -> ".join((*stack[stack.index(n.type):], n.type))
            self.issue(path, f"block {n.type!r} contains itself ({chain}); a block cannot use itself, directly "
                             "or through other blocks: remove that instance from the definition", fatal=True)
            return None
        for k in params:
            if k not in block.params:
                declared = ", ".join(sorted(block.params)) or "none"
                self.issue(path, f"unknown parameter {k!r} for block {block.name!r} (its parameters: {declared}); "
                                 f"remove it or declare it in the block", k)
        values = {**block.params, **{k: v for k, v in params.items() if k in block.params}}
        if n.repeat is not None and not 1 <= n.repeat <= MAX_REPEAT:
            self.issue(path, f"repeat={n.repeat}; expected an integer from 1 to {MAX_REPEAT} (the number of chained "
                             "copies): use repeat 1 for one indexed copy, or remove repeat", "repeat", fatal=True)
            return None
        inputs = block.input_ids
        if len(srcs) != len(inputs):
            want = f"{len(inputs)} input{'s' * (len(inputs) != 1)} ({', '.join(inputs)})"
            fix = ("connect a layer into it" if len(srcs) < len(inputs)
                   else "merge the branches first with Add or Concat")
            self.issue(path, f"block {block.name!r} takes {want} but has {len(srcs)}; {fix}", fatal=True)
            return None
        count = n.repeat or 1
        if count > 1 and len(inputs) != 1:
            self.issue(path, f"repeat={count} chains copies (each copy's output feeds the next), so only a block "
                             f"with one input can repeat; {block.name!r} takes {len(inputs)}", "repeat", fatal=True)
            return None
        inst = Instance(path, block.name, n.repeat, inputs=list(srcs))
        self.ex.instances[path] = inst
        copies = [f"{path}.{i}" for i in range(count)] if n.repeat is not None else [path]
        current = srcs
        for copy_path in copies:
            start = len(self.ex.graph.nodes)
            out = self.scope(block.body, copy_path + ".", values, (*stack, block.name),
                             dict(zip(inputs, current, strict=True)), frozen)
            if out is None:
                return None
            inst.copies.append(copy_path)
            inst.copy_outputs.append(out)
            inst.copy_members.append([x.id for x in self.ex.graph.nodes[start:]])
            inst.values.append(dict(values))
            current = [out]
        return current[0]


def palette_clash(name: str) -> str | None:
    """Why a block may not be called `name` (a palette type's name), or None."""
    from studio.layers import REGISTRY

    if name in REGISTRY:
        return f"block name {name!r} is a palette type; choose another (e.g. '{name.lower()}_block')"
    return None


def expand(graph: Graph) -> Expansion:
    """The flat graph of `graph` (itself, copied, when it has no instances) with every instance and issue."""
    ex = _Expander(graph)
    for name in graph.blocks:
        problem = palette_clash(name)
        if problem:
            ex.issue(None, f"blocks: {problem}", fatal=True)
    if ex.ex.fatal:
        return ex.ex
    try:
        ex.scope(graph, "", None, (), None, False)
    except _TooLarge:
        ex.issue(None, f"expanding the blocks gives more than {MAX_FLAT_NODES:,} nodes; use fewer copies "
                       "(a lower repeat) or smaller blocks", fatal=True)
    return ex.ex


def uses_blocks(graph: Graph) -> bool:
    return graph.uses_blocks


__all__ = ["Expansion", "Instance", "MAX_FLAT_NODES", "expand", "uses_blocks"]
