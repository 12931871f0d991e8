"""Graph -> nn.Module.

The compiled module keeps each layer as a submodule named by its node id (`conv1.weight` in the
state dict) and runs a precomputed topological plan, freeing each intermediate value after its
last use. It runs exactly as a hand-written module of the same architecture.

    >>> from studio.graph import parse_graph
    >>> g = parse_graph({"format": "studio.graph/1", "name": "t",
    ...     "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
    ...               {"id": "fc", "type": "Linear", "params": {"out_features": 2}}],
    ...     "edges": [{"source": "input", "target": "fc"}]})
    >>> model = compile_graph(g, seed=0)
    >>> model(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from studio.analysis import _DTYPES, analyze
from studio.errors import GraphError
from studio.graph import Graph
from studio.layers import REGISTRY


class GraphModule(nn.Module):
    """A compiled graph: submodules by node id, forward in topological order."""

    def __init__(self, layers: dict[str, nn.Module], plan: list[tuple[str, tuple[str, ...]]], input_id: str,
                 output_id: str, input_shape: tuple[int, ...], input_dtype: torch.dtype,
                 node_types: dict[str, str]):
        super().__init__()
        for node_id, module in layers.items():
            self.add_module(node_id, module)
        self.input_id = input_id
        self.output_id = output_id
        self.input_shape = input_shape
        self.input_dtype = input_dtype
        self.node_types = node_types
        self.order = [node_id for node_id, _ in plan]
        # For each step: (node_id, argument ids, ids whose last use this is and can be freed).
        last_use: dict[str, int] = {}
        for step, (_, args) in enumerate(plan):
            for a in args:
                last_use[a] = step
        self._plan = [(node_id, args, tuple(a for a in set(args) if last_use[a] == step and a != output_id))
                      for step, (node_id, args) in enumerate(plan)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input_id: x}
        modules = self._modules
        for node_id, args, free in self._plan:
            values[node_id] = modules[node_id](*[values[a] for a in args])
            for a in free:
                del values[a]
        return values[self.output_id]


def compile_graph(graph: Graph, *, seed: int | None = None, device: str | torch.device = "cpu") -> GraphModule:
    """Build the graph's nn.Module; raises GraphError listing every error when the graph is invalid.

    With a seed, initial weights are the same on every call (the global RNG is left untouched).
    """
    analysis = analyze(graph)
    if analysis.errors:
        raise GraphError(analysis.errors)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        layers = {}
        plan = []
        input_map = graph.input_map()
        by_id = {n.id: n for n in graph.nodes}
        for node_id in analysis.order:
            node = by_id[node_id]
            if node.type == "Input":
                continue
            info = analysis.nodes[node_id]
            layers[node_id] = REGISTRY[node.type].build(node.params, list(info.inputs))
            plan.append((node_id, tuple(input_map[node_id])))
    model = GraphModule(layers, plan, analysis.input_id, analysis.output_id, analysis.input_shape,
                        _DTYPES[analysis.input_dtype], {n.id: n.type for n in graph.nodes})
    return model.to(device)


def capture(model: GraphModule, x: torch.Tensor, node_ids, attention: bool = True):
    """Run one forward; return (output, {node_id: output tensor}, {node_id: attention (B, heads, T, T)}).

    Feature outputs come from forward hooks; attention from the attention modules' recording switch,
    which never changes their output. Run it under torch.no_grad() when no gradient is wanted.
    """
    features: dict[str, torch.Tensor] = {}
    handles = []
    for node_id in node_ids:
        module = model._modules[node_id]
        handles.append(module.register_forward_hook(
            lambda _m, _i, out, node_id=node_id: features.__setitem__(node_id, out.detach())))
    recorders = [(nid, m) for nid, m in model.named_children() if hasattr(m, "record_attention")] if attention else []
    for _, m in recorders:
        m.record_attention = True
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
        for _, m in recorders:
            m.record_attention = False
    attentions = {nid: m.last_attention for nid, m in recorders if m.last_attention is not None}
    for _, m in recorders:
        m.last_attention = None
    return out, features, attentions
