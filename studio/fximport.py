"""Import a PyTorch nn.Module as a graph document by tracing it with torch.fx.

Modules and functions that have a palette equivalent (nn.Conv2d, nn.Linear, F.relu, torch.flatten,
`x.view(x.size(0), -1)`, `a + b`, torch.cat, x.permute, nn.LSTM followed by `[0]` and `[:, -1, :]`,
the studio's own layer classes and merge functions as copied into exported code, ...) become nodes.
A module's params are read back by its LayerSpec's `from_module`, a call of one of a spec's
`functions` or `methods` (F.gelu, F.max_pool2d, x.relu()) by its `from_call`; this file traces, and
maps the shape and merge idioms itself. Params are left out where they equal the palette's default;
shapes come from fx's `ShapeProp`. Whatever does not map is listed, one clear line each, and no graph
is returned then. A graph that is returned was checked: compiled with the module's own weights, it
reproduces the module's output.

`import_from_file` EXECUTES the Python file it is given (that is how a class in it can be
instantiated): only import files you trust. The studio never does it implicitly for an upload.

    >>> from torch import nn
    >>> graph, unmapped = import_module(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 28, 28))
    >>> [n.type for n in graph.nodes], unmapped
    (['Input', 'Flatten', 'Linear'], [])
"""

from __future__ import annotations

import builtins
import importlib.util
import inspect
import operator
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from studio.errors import GraphError
from studio.graph import Edge, Graph, Node, node_id_problem
from studio.layers import REGISTRY, LayerSpec
from studio.layers import modules as studio_modules
from studio.layers.base import NoEquivalent, call_arg, module_dim, spec_for_module

_DTYPES = {"float32": torch.float32, "int64": torch.int64}
_STUDIO_CLASSES = {name for name, obj in vars(studio_modules).items()
                   if inspect.isclass(obj) and obj.__module__ == studio_modules.__name__}


# ---- which modules are layers (leaves) -----------------------------------------------------------------

def _studio_class(cls: type) -> str | None:
    """The studio class `cls` is (itself, or a verbatim copy as in exported code), or None."""
    name = cls.__name__
    if name not in _STUDIO_CLASSES:
        return None
    if getattr(studio_modules, name) is cls:
        return name
    for klass in cls.__mro__:
        if klass is object or klass.__module__.startswith("torch"):
            continue
        original = getattr(studio_modules, klass.__name__, None)
        if original is None or klass.__name__ not in _STUDIO_CLASSES:
            return None
        try:
            if inspect.getsource(klass) != inspect.getsource(original):
                return None
        except (OSError, TypeError):
            return None
    return name


# The studio's merge functions (modules.py) and the palette type each one is (LayerSpec.function).
_STUDIO_FUNCTIONS = {spec.function(spec.resolve({}))[0]: spec.type for spec in REGISTRY.values()
                     if spec.function is not None}
# The torch functions and Tensor methods a spec reads back with `from_call` (LayerSpec.functions, .methods).
_FUNCTION_SPECS = {fn: spec for spec in REGISTRY.values() for fn in spec.functions}
_METHOD_SPECS = {name: spec for spec in REGISTRY.values() for name in spec.methods}


def _studio_function(fn) -> str | None:
    """The palette type of a studio merge function (itself, or a verbatim copy as in exported code)."""
    if fn in _STUDIO_FUNCTIONS:
        return _STUDIO_FUNCTIONS[fn]
    for original, type_name in _STUDIO_FUNCTIONS.items():
        if inspect.isfunction(fn) and fn.__name__ == original.__name__:
            try:
                if inspect.getsource(fn) == inspect.getsource(original):
                    return type_name
            except (OSError, TypeError):
                return None
    return None


class _Tracer(torch.fx.Tracer):
    """Keeps the studio's classes and merge functions whole: one node each, as the compiler wrote them."""

    def __init__(self, module: nn.Module):
        forward_globals = getattr(type(module).forward, "__globals__", {})
        merges = tuple({id(f): f for f in [*_STUDIO_FUNCTIONS, *forward_globals.values()]
                        if callable(f) and _studio_function(f)}.values())
        super().__init__(autowrap_functions=merges)
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _studio_class(type(m)) is not None or super().is_leaf_module(m, qualname)


# ---- values --------------------------------------------------------------------------------------------

def _plain(v):
    """Module attribute -> JSON-able param value (tuples become lists)."""
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


_Unmapped = NoEquivalent  # one node that has no palette equivalent; the message says what and why


# ---- the mapping -----------------------------------------------------------------------------------------

@dataclass
class _Out:
    type: str | None  # palette type; None: an alias of its first input (x.contiguous(), tuple[0], ...)
    params: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)  # fx nodes feeding it, in order
    module: nn.Module | None = None  # whose weights the node takes
    name: str | None = None  # the node id to prefer (the variable a merge function's result is assigned to)


def _module_params(m: nn.Module) -> tuple[str, dict]:
    """(palette type, params) of a leaf module, read back by its spec's `from_module`, or raise _Unmapped."""
    cls = type(m)
    studio = _studio_class(cls)
    spec = spec_for_module(getattr(studio_modules, studio) if studio is not None else cls)
    if spec is None:
        raise _Unmapped(f"{cls.__module__}.{cls.__qualname__} has no palette equivalent")
    return spec.type, spec.from_module(m)


def _qualname(fn) -> str:
    module = getattr(fn, "__module__", None) or ""
    if fn in (F.relu, F.gelu, F.silu, F.leaky_relu, F.elu, F.softmax, F.dropout, F.max_pool1d, F.max_pool2d,
              F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.log_softmax, F.tanh,
              F.sigmoid, F.linear, F.conv2d):
        module = "torch.nn.functional"
    elif module in ("_operator", "operator"):
        module = "operator"
    elif module.startswith("torch") or module == "" or fn.__module__ is None:
        module = "torch"
    return f"{module}.{getattr(fn, '__name__', repr(fn))}"


_ALIASES = {"contiguous", "clone", "detach"}


def _arg(node: torch.fx.Node, i: int, name: str, default):
    return call_arg(node.args, node.kwargs, i, name, default)


def _call_params(spec: LayerSpec, node: torch.fx.Node) -> dict:
    """The params of a traced call that `spec` reads back (LayerSpec.from_call; None: it has none to read)."""
    return spec.from_call(node.args, node.kwargs) if spec.from_call is not None else {}


class _Importer:
    def __init__(self, gm: torch.fx.GraphModule, shapes: dict[str, tuple]):
        self.gm, self.shapes = gm, shapes
        self.out: dict[torch.fx.Node, _Out] = {}
        self.shape_nodes: set[torch.fx.Node] = set()  # x.size(0), x.shape[0]: batch-size bookkeeping
        self.modules = dict(gm.named_modules())

    def shape(self, node) -> tuple | None:
        return self.shapes.get(node.name) if isinstance(node, torch.fx.Node) else None

    def tensor_arg(self, node: torch.fx.Node, value, what: str) -> torch.fx.Node:
        if not isinstance(value, torch.fx.Node) or value in self.shape_nodes:
            raise _Unmapped(f"{what} with a constant operand ({value!r:.40}) has no palette equivalent; the merge "
                            "layers take tensors from other layers")
        return value

    def map(self, node: torch.fx.Node) -> _Out | None:
        op, target = node.op, node.target
        if op == "call_module":
            m = self.modules[target]
            type_name, params = _module_params(m)
            inputs = [a for a in node.args if isinstance(a, torch.fx.Node)]
            if len(node.args) != 1 or node.kwargs or len(inputs) != 1:
                raise _Unmapped(f"{type(m).__name__} called with extra arguments (e.g. a mask or a hidden "
                                "state) has no palette equivalent")
            return _Out(type_name, params, inputs, m)
        if op == "call_function":
            return self.map_function(node, target)
        if op == "call_method":
            return self.map_method(node, target)
        raise _Unmapped(f"{op} {target} has no palette equivalent")

    def map_function(self, node, fn) -> _Out | None:
        x = node.args[0] if node.args else None
        if fn in _FUNCTION_SPECS:
            spec = _FUNCTION_SPECS[fn]
            return _Out(spec.type, _call_params(spec, node), [x])
        if fn in (operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul):
            kind = "Add" if fn in (operator.add, operator.iadd, torch.add) else "Multiply"
            if fn is torch.add and node.kwargs.get("alpha", 1) != 1:
                raise _Unmapped("torch.add with alpha has no palette equivalent")
            a = self.tensor_arg(node, node.args[0], kind)
            b = self.tensor_arg(node, node.args[1], kind)
            return _Out(kind, {}, [a, b])
        merge = _studio_function(fn)
        if merge is not None:
            params = _call_params(REGISTRY[merge], node)
            return _Out(merge, params, [self.tensor_arg(node, a, merge) for a in node.args], name=_assigned_name(node))
        if fn is torch.cat:
            tensors = list(_arg(node, 0, "tensors", []))
            dim = _arg(node, 1, "dim", 0)
            return _Out("Concat", {"dim": module_dim(dim, "torch.cat")},
                        [self.tensor_arg(node, t, "torch.cat") for t in tensors])
        if fn is torch.flatten:
            return self.flatten(node, x, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
        if fn is torch.reshape:
            return self.reshape(node, x, list(_arg(node, 1, "shape", [])))
        if fn is torch.permute:
            return self.permute(node, x, list(_arg(node, 1, "dims", [])))
        if fn is torch.transpose:
            return self.transpose(node, x, _arg(node, 1, "dim0", 0), _arg(node, 2, "dim1", 1))
        if fn is torch.mean:
            return self.seq_reduce(node, x, _arg(node, 1, "dim", None), "mean", node.kwargs.get("keepdim", False))
        if fn is operator.getitem:
            return self.getitem(node, x, node.args[1])
        if fn is getattr and node.args[1] == "shape":
            self.shape_nodes.add(node)
            return None
        raise _Unmapped(f"{_qualname(fn)} has no palette equivalent")

    def map_method(self, node, name: str) -> _Out | None:
        x = node.args[0]
        rest = list(node.args[1:])
        if name in _METHOD_SPECS:
            spec = _METHOD_SPECS[name]
            return _Out(spec.type, _call_params(spec, node), [x])
        if name in _ALIASES:
            return _Out(None, {}, [x])
        if name == "size":
            self.shape_nodes.add(node)
            return None
        if name in ("view", "reshape"):
            shape = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
            return self.reshape(node, x, list(shape))
        if name == "flatten":
            return self.flatten(node, x, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
        if name == "permute":
            dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
            return self.permute(node, x, list(dims))
        if name == "transpose":
            return self.transpose(node, x, rest[0], rest[1])
        if name in ("add", "mul"):
            return _Out("Add" if name == "add" else "Multiply", {},
                        [x, self.tensor_arg(node, rest[0] if rest else None, f"x.{name}")])
        if name in ("mean", "amax"):
            return self.seq_reduce(node, x, _arg(node, 1, "dim", None), "mean" if name == "mean" else "max",
                                   node.kwargs.get("keepdim", False))
        raise _Unmapped(f"the tensor method .{name}() has no palette equivalent")

    # ---- shape operations ----
    def flatten(self, node, x, start: int, end: int) -> _Out:
        return _Out("Flatten", {"start_dim": module_dim(start, "flatten"), "end_dim": module_dim(end, "flatten")},
                    [x])

    def reshape(self, node, x, shape: list) -> _Out:
        if not shape:
            raise _Unmapped("reshape without a shape has no palette equivalent")
        first, rest = shape[0], shape[1:]
        in_shape = self.shape(x)
        if not (first in self.shape_nodes or first == -1) or not all(isinstance(s, int) for s in rest):
            raise _Unmapped(f"reshape to {shape!r:.60} does not keep the batch dimension first; write "
                            "x.view(x.size(0), ...) or x.reshape(x.shape[0], ...)")
        if first == -1 and in_shape is not None:
            numel = 1
            for s in in_shape[1:]:
                numel *= s
            known = 1
            for s in rest:
                known *= s
            if -1 in rest or known != numel:
                raise _Unmapped(f"reshape to {shape!r:.60} moves values across samples; keep the batch first")
        if rest == [-1] or (in_shape is not None and len(rest) == 1 and rest[0] == _numel(in_shape[1:])):
            return _Out("Flatten", {}, [x])
        return _Out("Reshape", {"shape": rest}, [x])

    def permute(self, node, x, dims: list) -> _Out:
        rank = len(dims)
        dims = [d % rank if isinstance(d, int) else d for d in dims]
        if not dims or dims[0] != 0 or not all(isinstance(d, int) for d in dims):
            raise _Unmapped(f"permute {dims!r} moves the batch dimension; the palette's Permute keeps it first")
        return _Out("Permute", {"dims": [d - 1 for d in dims[1:]]}, [x])

    def transpose(self, node, x, a: int, b: int) -> _Out:
        in_shape = self.shape(x)
        if in_shape is None:
            raise _Unmapped("transpose of a value of unknown shape")
        rank = len(in_shape)
        a, b = a % rank, b % rank
        dims = list(range(rank))
        dims[a], dims[b] = dims[b], dims[a]
        return self.permute(node, x, dims)

    def seq_reduce(self, node, x, dim, mode: str, keepdim: bool) -> _Out:
        in_shape = self.shape(x)
        if dim not in (1, -2) or keepdim or in_shape is None or len(in_shape) != 3:
            raise _Unmapped(f"{mode} over dim={dim!r} has no palette equivalent; SequencePool reduces dim 1 of "
                            "(B, T, F)")
        return _Out("SequencePool", {"mode": mode}, [x])

    def getitem(self, node, x, index) -> _Out | None:
        if x in self.shape_nodes:
            self.shape_nodes.add(node)
            return None
        src = self.out.get(x)
        if index == 0 and src is not None and src.module is not None and _recurrent(src):
            return _Out(None, {}, [x])  # out, _ = lstm(x): the output sequence
        in_shape = self.shape(x)
        if isinstance(index, tuple) and in_shape is not None and len(in_shape) == 3:
            full = slice(None)
            if index[0] == full and index[1] in (-1, 0) and all(i == full for i in index[2:]) and len(index) <= 3:
                return _Out("SequencePool", {"mode": "last" if index[1] == -1 else "first"}, [x])
        raise _Unmapped(f"indexing with [{_show_index(index)}] has no palette equivalent (x[:, -1] and x[:, 0] "
                        "on a (B, T, F) sequence map to SequencePool)")


def _recurrent(out: _Out) -> bool:
    """A recurrent layer (LayerSpec.category): torch's return (output, state); each has return_sequences."""
    return out.type is not None and REGISTRY[out.type].category == "recurrent"


def _show_index(index) -> str:
    items = index if isinstance(index, tuple) else (index,)
    out = []
    for i in items:
        if isinstance(i, slice):
            out.append(":" if i == slice(None) else f"{i.start or ''}:{i.stop or ''}")
        else:
            out.append(repr(i) if not isinstance(i, torch.fx.Node) else i.name)
    return ", ".join(out)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


_TORCH_DIR = os.path.dirname(torch.__file__)


def _where(node: torch.fx.Node) -> str:
    """"line 12 / node 'relu_1'": the line in the user's code (not in torch) that made the node."""
    frames = [(f, line) for f, line in re.findall(r'File "([^"]+)", line (\d+)', node.stack_trace or "")
              if not f.startswith(_TORCH_DIR)]
    if frames:
        return f"line {frames[-1][1]} / node '{node.name}'"
    return f"node '{node.name}'"


def _assigned_name(node: torch.fx.Node) -> str | None:
    """`b1_add` for a node made by the line `b1_add = add(b1_bn2, stem_relu)` (exported or compiled code)."""
    lines = [line for f, line in re.findall(r'File "([^"]+)", line \d+, in \w+\n\s+(.*)', node.stack_trace or "")
             if not f.startswith(_TORCH_DIR)]
    m = re.match(r"(\w+) = \w+\(", lines[-1].strip()) if lines else None
    return m.group(1) if m else None


# ---- ids and the graph -----------------------------------------------------------------------------------

def _node_id(wanted: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", wanted).lstrip("_") or "node"
    if base[0].isdigit():
        base = "n" + base
    base = base[:60]
    candidate, k = base, 1
    while node_id_problem(candidate) or candidate in taken or hasattr(nn.Module, candidate) or \
            candidate in builtins.__dict__ and candidate != "input":
        candidate = f"{base}_{k}"
        k += 1
    taken.add(candidate)
    return candidate


def _drop_defaults(type_name: str, params: dict) -> dict:
    spec = REGISTRY[type_name]
    out = {}
    for p in spec.params:
        if p.name not in params:
            continue
        v = _plain(params[p.name])
        if p.kind == "float" and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if type(v) is type(p.default) and v == p.default:
            continue
        if v is None and p.default is None:
            continue
        out[p.name] = v
    return out


def import_module(module: nn.Module, input_shape, input_dtype: str = "float32",
                  name: str | None = None) -> tuple[Graph | None, list[str]]:
    """Trace `module` with torch.fx and map it onto the palette.

    Returns (graph, []) when everything maps, else (None, one line per node that does not map,
    e.g. "line 12 / node 'log_softmax': torch.nn.functional.log_softmax has no palette equivalent").
    `input_shape` is per sample (no batch dimension).
    """
    if not isinstance(module, nn.Module):
        raise GraphError(f"import_module needs an nn.Module instance, got {type(module).__name__}")
    if input_dtype not in _DTYPES:
        raise GraphError(f"input_dtype={input_dtype!r} is not supported; use 'float32' or 'int64'")
    shape = [int(s) for s in input_shape]
    if not shape or any(s < 1 for s in shape):
        raise GraphError(f"input_shape={list(input_shape)} must be one or more positive sizes per sample, e.g. "
                         "[1, 28, 28]")
    name = name or type(module).__name__
    was_training = module.training
    module.eval()
    try:
        return _import(module, shape, input_dtype, name)
    finally:
        module.train(was_training)


def _example(shape: list[int], dtype: str) -> torch.Tensor:
    if dtype == "int64":
        return torch.zeros((2, *shape), dtype=torch.int64)
    return torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))


def _import(module: nn.Module, shape: list[int], dtype: str, name: str) -> tuple[Graph | None, list[str]]:
    try:
        tracer = _Tracer(module)
        fx_graph = tracer.trace(module)
        gm = torch.fx.GraphModule(tracer.root, fx_graph)
        gm.graph.eliminate_dead_code()  # e.g. the `_` of `out, _ = self.lstm(x)`
    except Exception as e:  # fx raises many types for code it cannot trace
        return None, [f"torch.fx cannot trace {type(module).__name__}: {str(e).strip().splitlines()[0][:300]}"
                      " (data-dependent control flow, e.g. `if x.sum() > 0`, cannot be traced)"]
    example = _example(shape, dtype)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as e:  # the module rejects the given input
        return None, [f"running {type(module).__name__} on an input of shape {tuple(example.shape)} {dtype} "
                      f"failed: {str(e).strip().splitlines()[0][:300]}; check input_shape and input_dtype"]

    shapes = {n.name: tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes
              if isinstance(n.meta.get("tensor_meta"), TensorMetadata)}
    imp = _Importer(gm, shapes)
    unmapped: list[str] = []
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None, [f"forward takes {len(placeholders)} inputs; a graph has exactly one Input"]
    failed: set = set()  # nodes that did not map; what depends on them is not reported again
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if any(n in failed for n in node.all_input_nodes):
            failed.add(node)
            continue
        try:
            out = imp.map(node)
        except _Unmapped as e:
            unmapped.append(f"{_where(node)}: {e}")
            failed.add(node)
            continue
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            unmapped.append(f"{_where(node)}: {node.op} {node.target} could not be read ({e})")
            failed.add(node)
            continue
        if out is not None:
            imp.out[node] = out
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    result = output_node.args[0]
    if not isinstance(result, torch.fx.Node):
        unmapped.append(f"{_where(output_node)}: forward returns {type(result).__name__}; a graph has one tensor "
                        "output")
    if unmapped:
        return None, unmapped
    return _build(imp, placeholders[0], result, shape, dtype, name, module, example)


def _fold_last_step(imp: _Importer, users: dict) -> None:
    """RNN(return_sequences) -> SequencePool(last) with no other consumer: one RNN with return_sequences=False."""
    for out in list(imp.out.values()):
        if out.type != "SequencePool" or out.params.get("mode") != "last":
            continue
        src = _resolve(imp, out.inputs[0])
        src_out = imp.out.get(src)
        if (src_out is not None and _recurrent(src_out) and src_out.params["return_sequences"]
                and users.get(src, 0) == 1 and users.get(out.inputs[0], 0) == 1):
            src_out.params["return_sequences"] = False
            out.type, out.params, out.inputs = None, {}, [out.inputs[0]]


def _resolve(imp: _Importer, node):
    """Follow aliases (x.contiguous(), lstm(x)[0]) back to the node that computes the value."""
    while node in imp.out and imp.out[node].type is None:
        node = imp.out[node].inputs[0]
    return node


def _build(imp, placeholder, result, shape, dtype, name, module, example) -> tuple[Graph | None, list[str]]:
    users: dict = {}
    for out in imp.out.values():
        for src in out.inputs:
            users[src] = users.get(src, 0) + 1
    _fold_last_step(imp, users)
    taken: set[str] = set()
    ids: dict = {}
    for node, out in imp.out.items():
        if out.type is not None and out.module is not None:
            ids[node] = _node_id(node.target, taken)
    input_id = _node_id("input", taken)
    ids[placeholder] = input_id
    nodes = [Node(input_id, "Input", {"shape": list(shape), "dtype": dtype})]
    edges: list[Edge] = []
    unmapped: list[str] = []
    for node, out in imp.out.items():
        if out.type is None:
            continue
        node_id = ids.get(node) or _node_id(out.name or node.name, taken)
        ids[node] = node_id
        nodes.append(Node(node_id, out.type, _drop_defaults(out.type, out.params)))
        sources = []
        for src in out.inputs:
            src = _resolve(imp, src)
            if src not in ids:
                unmapped.append(f"{_where(node)}: its input {getattr(src, 'name', src)!r} does not map onto the "
                                "palette")
                continue
            sources.append(ids[src])
        if len(set(sources)) != len(sources):
            unmapped.append(f"{_where(node)}: {out.type} takes the same value twice; the graph connects each pair "
                            "of layers once")
        edges += [Edge(s, node_id) for s in dict.fromkeys(sources)]
    final = _resolve(imp, result)
    if final not in ids:
        unmapped.append(f"{_where(result)}: the output does not map onto the palette")
    if unmapped:
        return None, unmapped
    graph = Graph(name=name, nodes=nodes, edges=edges,
                  description=f"Imported from the PyTorch module {type(module).__name__} with torch.fx.")
    # Anything not on the path to the output (e.g. an unused branch) is left out.
    keep = _ancestors(graph, ids[final])
    graph.nodes = [n for n in graph.nodes if n.id in keep]
    graph.edges = [e for e in graph.edges if e.source in keep and e.target in keep]
    graph, problems = _verify(graph, imp, ids, module, example)
    if graph is not None:  # repeated children of a container (layer1.0, layer1.1) become a block with repeat
        from studio.graph_blockify import blockify_import

        origin = {node_id: _origin(node) for node, node_id in ids.items() if node is not placeholder}
        targets = {node_id: node.target for node, node_id in ids.items() if node.op == "call_module"}
        graph = blockify_import(graph, origin, targets, module, example) or graph
    return graph, problems


def _origin(node: torch.fx.Node) -> str:
    """The module path a traced node comes from: a layer's own (`layer1.0.conv1`), a function's module's and
    its name (`layer1.0.add`)."""
    if node.op == "call_module":
        return str(node.target)
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    owner = stack[-1][0] if stack else ""
    return f"{owner}.{node.name}" if owner else node.name


def _ancestors(graph: Graph, node_id: str) -> set[str]:
    seen, todo = set(), [node_id]
    input_map = graph.input_map()
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(input_map[n])
    return seen


def _verify(graph: Graph, imp: _Importer, ids: dict, module: nn.Module, example) -> tuple[Graph | None, list[str]]:
    """Compile the graph, give it the module's weights, and check it computes the module's output."""
    from studio.analysis import analyze
    from studio.compile import compile_graph

    analysis = analyze(graph)
    if analysis.errors:
        return None, [f"the imported graph is not valid: {i}" for i in analysis.errors]
    model = compile_graph(graph, seed=0).eval()
    for node, out in imp.out.items():
        if out.module is not None and ids.get(node) in model.node_types:
            try:
                model._modules[ids[node]].load_state_dict(out.module.state_dict(), strict=True)
            except RuntimeError as e:
                return None, [f"{_where(node)}: its weights do not fit the imported layer: "
                              f"{str(e).strip().splitlines()[0][:200]}"]
    with torch.no_grad():
        expected = module(example)
        got = model(example)
    if not isinstance(expected, torch.Tensor) or expected.shape != got.shape or \
            not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        return None, ["the imported graph does not reproduce the module's output on a test input (a layer's "
                      "behaviour differs from its palette equivalent); please report this module"]
    return graph, []


def import_from_file(path: str | os.PathLike, class_name: str, input_shape, input_dtype: str = "float32"
                     ) -> tuple[Graph | None, list[str]]:
    """EXECUTE the Python file at `path`, instantiate `class_name()` from it and import that module.

    Running the file runs any code in it, as `python file.py` would (minus its `__main__` block):
    only import files you trust. The class must be constructible without arguments.
    """
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"cannot import from {str(path)!r}: no such file")
    module_name = f"studio_import_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise GraphError(f"cannot import {str(path)!r}: it is not a Python source file")
    user_module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = user_module  # so inspect.getsource finds the classes while importing
    try:
        try:
            spec.loader.exec_module(user_module)
        except Exception as e:  # the user's code can raise anything
            raise GraphError(f"running {path.name} failed: {type(e).__name__}: {str(e)[:300]}") from None
        cls = getattr(user_module, class_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
            found = sorted(k for k, v in vars(user_module).items()
                           if inspect.isclass(v) and issubclass(v, nn.Module) and v.__module__ == module_name)
            raise GraphError(f"{path.name} has no nn.Module class named {class_name!r}; its nn.Module classes are: "
                             f"{', '.join(found) or 'none'}")
        try:
            instance = cls()
        except Exception as e:  # a constructor that needs arguments, or fails
            raise GraphError(f"{class_name}() failed: {type(e).__name__}: {str(e)[:300]}; the class must be "
                             "constructible without arguments") from None
        return import_module(instance, input_shape, input_dtype, name=class_name)
    finally:
        sys.modules.pop(module_name, None)


__all__ = ["import_from_file", "import_module"]
