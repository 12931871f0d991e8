"""Graph -> torch.fx GraphModule.

The compiler writes one fx node per graph node: a `call_module` for each layer, whose submodule is
named by its node id (`conv1.weight` in the state dict), and a `call_function` for each weightless
merge (`add(conv2, skip)`, `concat(a, b, dim=1)`). fx generates the forward from that graph, and
its code drops every value after its last use, so the model runs as a hand-written module of the same
architecture would. fx tooling (`torch.export`, `ShapeProp`, `Interpreter`, graph passes) works
on the compiled model directly; each fx node carries its graph node id in `node.meta["node_id"]`.

    >>> from studio.graph import parse_graph
    >>> g = parse_graph({"format": "studio.graph/1", "name": "t",
    ...     "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
    ...               {"id": "fc", "type": "Linear", "params": {"out_features": 2}}],
    ...     "edges": [{"source": "input", "target": "fc"}]})
    >>> model = compile_graph(g, seed=0)
    >>> model(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
    >>> print(model.code.strip())
    def forward(self, x):
        fc = self.fc(x);  x = None
        return fc
"""

from __future__ import annotations

import contextlib

import torch
import torch.fx
from torch import nn
from torch.fx.graph_module import _USER_PRESERVED_ATTRIBUTES_KEY

from studio.analysis import _DTYPES, Analysis, analyze
from studio.errors import GraphError
from studio.graph import Graph
from studio.layers import REGISTRY

INPUT_NAME = "x"  # the forward's argument, whatever the Input node is called


class GraphModule(torch.fx.GraphModule):
    """A compiled graph: an fx.GraphModule with submodules by node id and what the studio knows of it.

    `.input_id`, `.output_id`, `.order` (node ids, topological, without the Input), `.input_shape`
    (per sample), `.input_dtype` (torch dtype), `.node_types {node_id: type}`. These survive
    `copy.deepcopy` (fx's preserved attributes).
    """

    input_id: str
    output_id: str
    order: list[str]
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    node_types: dict[str, str]

    def recompile(self):
        code = super().recompile()
        _bind_submodules(self)
        return code


    def __deepcopy__(self, memo):
        # fx's deepcopy rebuilds the submodule tree from the call_module paths with plain nn.Modules as
        # containers; a block graph's containers (studio.graph_compile) are put back, their copies.
        copied = super().__deepcopy__(memo)
        for name, child in self.named_children():
            if id(child) in memo:
                setattr(copied, name, memo[id(child)])
        return copied


def _bind_submodules(model: torch.fx.GraphModule) -> None:
    """The host time fx adds to a forward, taken out: submodule lookups (below) and the call wrapper.

    fx wraps the instance class's `__call__` in `_WrappedCall` (about 0.6 us a call), which on an
    error prints the generated code's lines to stderr and re-raises; a model called in a training
    step pays it every step. The compiled graph is called as any nn.Module is (hooks included), and
    its errors keep their traceback, which names the generated forward's line. Only the instance's
    own class (fx's GraphModuleImpl) changes, never GraphModule itself.
    """
    cls = type(model)
    if not cls.__qualname__.endswith("GraphModuleImpl") or cls is GraphModule:  # never the shared class
        return
    cls.__call__ = nn.Module.__call__
    _bind_submodule_properties(model)


def _bind_submodule_properties(model: torch.fx.GraphModule) -> None:
    """Let the generated forward's `self.<node_id>` find its submodule without nn.Module.__getattr__.

    A submodule lives in `_modules`, so plain attribute lookup misses it, raises AttributeError inside
    and lands in `Module.__getattr__`: about 0.7 us per node per forward, which an nn.Sequential (it
    iterates `_modules`) never pays. fx gives each GraphModule instance a class of its own; a property
    on that class per called submodule reads `_modules` directly. It always reads the live `_modules`
    (a submodule replaced with setattr, `add_module` or `_modules[name] = m` is the one found), and a
    name that is no longer a submodule falls back to `Module.__getattr__` as before.
    """
    cls = type(model)
    for node in model.graph.nodes:
        name = node.target
        if node.op != "call_module" or "." in name or any(name in k.__dict__ for k in cls.__mro__):
            continue
        setattr(cls, name, property(_submodule_getter(name)))


def _submodule_getter(name: str):
    def get(self):
        try:
            return self._modules[name]
        except KeyError:  # not a submodule (any more): Module.__getattr__ looks further or says so
            raise AttributeError(name) from None

    return get


def build_fx_graph(graph: Graph, analysis: Analysis) -> tuple[torch.fx.Graph, dict[str, nn.Module]]:
    """(fx graph, {node_id: module}) of a valid graph; the modules are freshly initialised.

    Each fx node's meta holds `node_id` and, from the analysis, `shape` (per sample) and `dtype`.
    """
    fx_graph = torch.fx.Graph()
    input_map = graph.input_map()
    by_id = {n.id: n for n in graph.nodes}
    values: dict[str, torch.fx.Node] = {}
    modules: dict[str, nn.Module] = {}
    for node_id in analysis.order:
        node, info = by_id[node_id], analysis.nodes[node_id]
        spec = REGISTRY[node.type]
        if node.type == "Input":
            fx_node = fx_graph.placeholder(INPUT_NAME)
        else:
            args = tuple(values[s] for s in input_map[node_id])
            if spec.function is not None:
                fn, kwargs = spec.function(spec.resolve(node.params))
                fx_node = fx_graph.create_node("call_function", fn, args, kwargs, name=node_id)
            else:
                modules[node_id] = spec.build(node.params, list(info.inputs))
                fx_node = fx_graph.create_node("call_module", node_id, args, name=node_id)
        fx_node.meta.update(node_id=node_id, shape=info.output_shape, dtype=info.dtype)
        values[node_id] = fx_node
    fx_graph.output(values[analysis.output_id])
    return fx_graph, modules


def compile_graph(graph: Graph, *, seed: int | None = None, device: str | torch.device = "cpu") -> GraphModule:
    """Build the graph's GraphModule; raises GraphError listing every error when the graph is invalid.

    With a seed, initial weights are the same on every call (the global RNG is left untouched).
    """
    analysis = analyze(graph)
    if analysis.errors:
        raise GraphError(analysis.errors)
    flat = analysis.flat  # a graph with blocks compiles as its expansion, layers by dotted path
    if flat is not None:
        graph = flat
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        fx_graph, modules = build_fx_graph(graph, analysis)
    if flat is not None:
        from studio.graph_compile import adopt_tree, module_root

        root = module_root(analysis.expansion, modules)
    else:
        root = nn.Module()
        for node_id, module in modules.items():
            root.add_module(node_id, module)
    model = GraphModule(root, fx_graph, class_name="GraphModule")
    if flat is not None:
        adopt_tree(model, root)
    attributes = {
        "input_id": analysis.input_id, "output_id": analysis.output_id,
        "order": [nid for nid in analysis.order if nid != analysis.input_id],
        "input_shape": tuple(analysis.input_shape), "input_dtype": _DTYPES[analysis.input_dtype],
        "node_types": {n.id: n.type for n in graph.nodes},
    }
    model.meta[_USER_PRESERVED_ATTRIBUTES_KEY] = attributes
    for name, value in attributes.items():
        setattr(model, name, value)
    return model.to(device)


class _Recorder(torch.fx.Interpreter):
    """Runs a GraphModule node by node and keeps the outputs of the wanted node ids."""

    def __init__(self, model: torch.fx.GraphModule, node_ids):
        super().__init__(model)
        self.wanted = set(node_ids)
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, n: torch.fx.Node):
        out = super().run_node(n)
        node_id = n.meta.get("node_id")
        if node_id in self.wanted:
            self.values[node_id] = out.detach()
        return out


def capture(model: GraphModule, x: torch.Tensor, node_ids, attention: bool = True):
    """Run one forward; return (output, {node_id: output tensor}, {node_id: attention (B, heads, T, T)}).

    Node outputs come from running the fx graph node by node (layers and merges alike); attention
    from the attention modules' recording switch, which never changes their output. Run it under
    torch.no_grad() when no gradient is wanted.
    """
    recorders = [(nid, m) for nid, m in model.named_modules() if hasattr(m, "record_attention")] if attention else []
    for _, m in recorders:
        m.record_attention = True
    try:
        if node_ids:
            interpreter = _Recorder(model, node_ids)
            out = interpreter.run(x)
            features = interpreter.values
        else:
            out, features = model(x), {}
    finally:
        for _, m in recorders:
            m.record_attention = False
    attentions = {nid: m.last_attention for nid, m in recorders if m.last_attention is not None}
    for _, m in recorders:
        m.last_attention = None
    return out, features, attentions


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Evaluation mode (no dropout, batch-norm statistics fixed) for the duration; a model that was training
    is put back into training mode. Exports and text generation run in it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
