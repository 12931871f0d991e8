"""Dotted paths (`layer1.0.conv1`) for the parts downstream of the graph: checkpoints, frozen nodes, sweeps.

A graph with blocks names every layer by its path; state-dict keys are `<path>.<tensor>`, and a tensor
name may itself hold dots (`attn.out_proj.weight`), so a key's node is the longest node path that
prefixes it, never its first name alone.
"""

from __future__ import annotations

from torch import nn

from studio.graph import Graph, Node


def node_of_key(key: str, node_ids: set[str]) -> str:
    """The node a state-dict key belongs to: the longest of `node_ids` prefixing it (`layer1.0.conv1` for
    `layer1.0.conv1.weight`); without one, the key's first name (a graph without blocks)."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in node_ids:
            return prefix
    return parts[0]


def flat_nodes(graph: Graph) -> list[Node]:
    """The graph's nodes by path: its expansion's for a graph with blocks (an instance's `frozen` flag
    is on every node inside it), else its own."""
    if not graph.uses_blocks:
        return graph.nodes
    from studio.graph_expand import expand

    return expand(graph).graph.nodes


def flat_graph(graph: Graph) -> Graph:
    """The graph whose node ids are what a compiled model, its probes and checkpoints name: the expansion of a
    graph with blocks (ids are paths), else the graph itself."""
    if not graph.uses_blocks:
        return graph
    from studio.graph_expand import expand

    return expand(graph).graph


def has_submodule(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


__all__ = ["flat_graph", "flat_nodes", "has_submodule", "node_of_key"]


def searched_param(graph: Graph, name: str):
    """For a sweep's `NODE_ID.PARAM` (studio.sweeps.spec): (node_id, param, problem_of(value) -> str | None,
    kind) when NODE_ID is a block instance and PARAM one of its block's parameters or `repeat`; a str saying
    what is wrong; or None when NODE_ID is no instance (a layer: the sweep's own checks apply)."""
    from studio.graph_blocks import MAX_REPEAT

    if not graph.uses_blocks:
        return None
    node_path, _, param = name.rpartition(".")
    if "." in node_path:
        top = node_path.split(".", 1)[0]
        return (f"{node_path!r} is inside block instance {top!r}: every copy of a block shares its definition, "
                f"so search a parameter of the instance instead (e.g. '{top}.repeat' or '{top}.<block param>')")
    if not graph.has_node(node_path) or graph.node(node_path).type not in graph.blocks:
        return None
    node = graph.node(node_path)
    block = graph.blocks[node.type]
    if param == "repeat":
        def repeat_problem(value):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_REPEAT:
                return f"repeat must be an integer from 1 to {MAX_REPEAT} (copies of the block), got {value!r}"
            return None
        return node_path, param, repeat_problem, "int"
    if param not in block.params:
        return (f"unknown parameter {param!r} for block instance {node_path!r} (block {block.name!r}); its "
                f"parameters are {', '.join(['repeat', *block.params])}")
    default = block.params[param]
    kind = ("bool" if isinstance(default, bool) else "int" if isinstance(default, int)
            else "float" if isinstance(default, float) else "choice")

    def problem(value):
        if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            return f"{param} of block {block.name!r} is an integer (default {default!r}), got {value!r}"
        if kind == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            return f"{param} of block {block.name!r} is a number (default {default!r}), got {value!r}"
        if kind == "bool" and not isinstance(value, bool):
            return f"{param} of block {block.name!r} is true or false, got {value!r}"
        return None
    return node_path, param, problem, kind


def with_searched_value(graph: Graph, name: str, value) -> None:
    """Set a sweep's `NODE_ID.PARAM` on `graph` in place: an instance's `repeat` or a param."""
    node_id, _, param = name.rpartition(".")
    node = graph.node(node_id)
    if param == "repeat" and node.type in graph.blocks:
        node.repeat = value
    else:
        node.params = {**node.params, param: value}


__all__ += ["searched_param", "with_searched_value"]
