"""A graph's head: the last layer with weights that feeds the output, and replacing it for a new task.

Transfer learning keeps a trained backbone and swaps the head for the user's classes. `with_new_head` only
changes the head's size param (Linear's `out_features`); a warm start (`init_from`) then leaves that node
with fresh weights because its shapes differ from the source run's, and `match_weights` says so.
This is not `studio.data.fit.fit_head`, which fits a graph to a dataset's output shape; this one sets the
number of classes of the head the user picked, whatever the dataset.

    >>> from studio.templates import load_template
    >>> g = load_template("resnet_small")
    >>> head_of(g)
    'fc'
    >>> with_new_head(g, 3).node("fc").params["out_features"]
    3
"""

from __future__ import annotations

from studio.errors import GraphError
from studio.graph import Graph
from studio.graph_edit import with_param
from studio.layers import REGISTRY


def head_of(graph: Graph, analysis=None) -> str | None:
    """The id of the last node (in topological order) with parameters among the output node and the nodes
    feeding it (a block instance counts by its totals); None when the graph has no single output, a cycle,
    or no such node. `analysis` is `studio.analysis.analyze(graph)` when the caller has it."""
    sinks = graph.sinks()
    if len(sinks) != 1:
        return None
    try:
        order = graph.topological_order()
    except GraphError:
        return None
    if analysis is None:
        from studio.analysis import analyze

        analysis = analyze(graph)
    feeding, todo = set(), [sinks[0]]
    while todo:  # the output and everything upstream of it
        node_id = todo.pop()
        if node_id not in feeding:
            feeding.add(node_id)
            todo.extend(graph.inputs_of(node_id))
    for node_id in reversed(order):
        info = analysis.info(node_id) if node_id in feeding else None
        if info is not None and info.params:
            return node_id
    return None


def head_size(graph: Graph, head: str) -> tuple[str, int] | None:
    """(param, value) of the head's output size when it is its last dimension (Linear's out_features);
    None for a head without one (a block instance, a convolution, a norm layer)."""
    node = graph.node(head)
    spec = REGISTRY.get(node.type)
    if spec is None or spec.size_param is None or spec.size_param[1] != -1:
        return None
    name = spec.size_param[0]
    return name, node.params.get(name, spec.param(name).default)


def with_new_head(graph: Graph, num_classes: int, analysis=None) -> Graph:
    """A copy of `graph` whose head (`head_of`) outputs `num_classes` values. ValueError with the reason when
    the graph has no head or its head's size is not a last-dimension param (then edit the graph by hand)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    head = head_of(graph, analysis)
    if head is None:
        raise ValueError(f"graph {graph.name!r} has no head: no node with parameters feeds its single output; "
                         "end the model with a Linear layer")
    size = head_size(graph, head)
    if size is None:
        raise ValueError(f"the head {head!r} is a {graph.node(head).type}, whose output size is not its last "
                         "dimension; only a head such as Linear (out_features) can be replaced for a number of "
                         "classes: end the model with a Linear layer")
    return with_param(graph, head, size[0], num_classes)


__all__ = ["head_of", "head_size", "with_new_head"]
