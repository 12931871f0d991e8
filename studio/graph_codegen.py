"""Exported code for a graph with blocks: one class per block, as torchvision's and nanoGPT's model code reads.

Each block used becomes an `nn.Module` class; its `__init__` takes the block parameters its layers need
(and any size that differs between its uses, named `<node>_<arg>`), its `forward` is the code torch.fx
generates for the block's own graph, with each value's shape as a comment when every use agrees. An
instance is `self.layer2 = Basic(channels=128)`; one written with `repeat` an `nn.Sequential` of copies,
so the file's state-dict keys are the compiled model's dotted paths (`layer1.0.conv1.weight`) and it
loads the studio's weights with `strict=True`.
"""

from __future__ import annotations

import torch
import torch.fx

from studio.analysis import INFERRED_PARAMS
from studio.codegen_text import (
    INDENT,
    MAX_LINE,
    ModelCode,
    _call,
    _constructor_args,
    class_ref,
    default_class_name,
    docstring_text,
    forward_source,
    literal,
    shape_comment,
)
from studio.compile import INPUT_NAME
from studio.errors import ExportError
from studio.graph import Graph
from studio.graph_blocks import is_ref
from studio.layers import REGISTRY
from studio.layers import modules as studio_modules


class _Arg:
    """A constructor argument written as a name (a parameter of the enclosing class), not a literal."""

    def __init__(self, name: str):
        self.name = name


def _same(values: list) -> bool:
    return all(type(v) is type(values[0]) and v == values[0] for v in values[1:])


def _write(value) -> str:
    return value.name if isinstance(value, _Arg) else literal(value)


def _layer_args(cls: type, kwargs: dict) -> list[str]:
    """codegen's `_constructor_args` for kwargs that may hold `_Arg`s (a block parameter, written by name;
    never equal to a torch.nn default, so never left out)."""
    return _constructor_args(cls, kwargs, write=_write)


class _Scope:
    """The class written for the document (one use, prefix "") or for one block (every copy of it)."""

    def __init__(self, body: Graph, uses: list[str], values: list[dict], declared: list[str]):
        self.body = body
        self.uses = uses  # flat-path prefix of each use: "" or "layer1.0."
        self.values = values  # block parameter values of each use
        self.declared = declared  # block parameters in declaration order
        self.signature: list[str] = []  # __init__ arguments
        self.args_of: list[dict] = [{} for _ in uses]  # per use: argument -> value

    def slot(self, name_hint: str, per_use: list, written=None, inferred: bool = False):
        """The block parameter the definition names (`written` is "$channels") when it holds the value in
        every use; else a literal when every use agrees; else the block parameter equal to it in every use;
        else a new __init__ argument."""
        if is_ref(written) and self._holds(written[1:], per_use):
            return self._arg(written[1:], per_use)
        if inferred:  # a size from the input (in_channels) that a parameter holds reads as that parameter
            for p in self.declared:
                if self._holds(p, per_use):
                    return self._arg(p, per_use)
        if _same(per_use):
            return per_use[0]
        for p in self.declared:
            if self._holds(p, per_use):
                return self._arg(p, per_use)
        name = name_hint
        while name in self.declared or (name in self.signature and
                                        [a.get(name) for a in self.args_of] != per_use):
            name += "_"
        return self._arg(name, per_use)

    def _holds(self, param: str, per_use: list) -> bool:
        return param in self.declared and all(param in vals and type(vals[param]) is type(v) and vals[param] == v
                                              for vals, v in zip(self.values, per_use, strict=True))

    def _arg(self, name: str, per_use: list) -> _Arg:
        if name not in self.signature:
            self.signature.append(name)
            for args, v in zip(self.args_of, per_use, strict=True):
                args[name] = v
        return _Arg(name)


def block_code(graph: Graph, analysis, class_name: str) -> tuple[list[str], list[str], list[str], set[str],
                                                                   list[str], tuple, str]:
    """(block class sources, main __init__ lines, main forward lines, modules.py names used, alias lines,
    input shape, input dtype) of a valid graph with blocks."""
    ex, flat = analysis.expansion, analysis.flat
    flat_nodes = {n.id: n for n in flat.nodes}
    names = _class_names(graph, class_name)
    custom: set[str] = set()
    aliases: list[str] = []
    sources: list[str] = []
    args_by_copy: dict[str, dict] = {}  # copy path -> its class's constructor arguments
    for block_name in _inner_first(graph):
        block = graph.blocks[block_name]
        copies = [(c, inst.values[i]) for inst in ex.instances.values() if inst.block == block_name
                  for i, c in enumerate(inst.copies)]
        if not copies:
            continue  # defined but not used: no class
        scope = _Scope(block.body, [c + "." for c, _ in copies], [v for _, v in copies], list(block.params))
        init, fwd, used, al = _scope_code(scope, graph, analysis, flat_nodes, names, args_by_copy, top=False)
        custom |= used
        aliases += [a for a in al if a not in aliases]
        for (c, _), args in zip(copies, scope.args_of, strict=True):
            args_by_copy[c] = args
        sources.append(_class_source(names[block_name], block, scope.signature, init, fwd))
    top = _Scope(graph, [""], [{}], [])
    init, fwd, used, al = _scope_code(top, graph, analysis, flat_nodes, names, args_by_copy, top=True)
    custom |= used
    aliases += [a for a in al if a not in aliases]
    return sources, init, fwd, custom, aliases, tuple(analysis.input_shape), analysis.input_dtype


def _inner_first(graph: Graph) -> list[str]:
    """Block names, each after the blocks it uses (a class is defined before the classes that build it)."""
    done: list[str] = []

    def visit(name: str, stack: tuple) -> None:
        if name in done or name in stack:
            return
        for t in graph.blocks[name].uses():
            if t in graph.blocks:
                visit(t, (*stack, name))
        done.append(name)

    for name in graph.blocks:
        visit(name, ())
    return done


def _class_names(graph: Graph, main: str) -> dict[str, str]:
    taken = {main}
    out = {}
    for name in graph.blocks:
        cls = default_class_name(name)
        while cls in taken or hasattr(studio_modules, cls) or hasattr(torch.nn, cls):
            cls += "Block"
        taken.add(cls)
        out[name] = cls
    return out


def _scope_code(scope: _Scope, graph: Graph, analysis, flat_nodes: dict, names: dict, args_by_copy: dict,
                *, top: bool):
    body = scope.body
    order = body.topological_order()
    by_id = {n.id: n for n in body.nodes}
    input_map = body.input_map()
    ex = analysis.expansion
    init: list[str] = []
    custom: set[str] = set()
    fx_graph = torch.fx.Graph()
    values: dict[str, torch.fx.Node] = {}
    for nid in order:
        n = by_id[nid]
        shapes = []
        if n.type == "Input":
            fx_node = fx_graph.placeholder(INPUT_NAME if top else nid)
            for u in scope.uses:
                if top:
                    shapes.append(analysis.nodes[nid].output_shape)
                else:  # what feeds this input of the copy
                    inst, _ = ex.instance_of_copy(u[:-1])
                    idx = graph.blocks[inst.block].input_ids.index(nid)
                    src = _copy_inputs(inst, u[:-1])[idx]
                    shapes.append(analysis.nodes[src].output_shape if src in analysis.nodes else None)
        else:
            args = tuple(values[s] for s in input_map[nid])
            if n.type in graph.blocks:
                init += _instance_line(scope, n, names[n.type], ex, args_by_copy)
                fx_node = fx_graph.create_node("call_module", nid, args, name=nid)
                shapes = [analysis.instances[u + nid].output_shape for u in scope.uses]
            else:
                spec = REGISTRY[n.type]
                flat = [flat_nodes[u + nid] for u in scope.uses]
                if spec.function is not None:
                    calls = [spec.function(spec.resolve(f.params)) for f in flat]
                    if not all(c[0] is calls[0][0] and c[1] == calls[0][1] for c in calls):
                        raise ExportError(f"block node {nid!r} ({n.type}) has different settings in different uses "
                                          f"({', '.join(u[:-1] for u in scope.uses)}); the exported class needs one")
                    fn, kwargs = calls[0]
                    fx_node = fx_graph.create_node("call_function", fn, args, kwargs, name=nid)
                else:
                    made = [spec.make(spec.resolve(f.params), list(analysis.nodes[f.id].inputs)) for f in flat]
                    cls = made[0][0]
                    if any(m[0] is not cls for m in made):
                        raise ExportError(f"block node {nid!r} ({n.type}) builds different layer classes in different "
                                          "uses; the exported class needs one")
                    # A size inferred from the input is named by its kwarg (`in_channels`), shared by every
                    # layer that takes the same value in each use; any other varying value by node and kwarg.
                    kwargs = {k: scope.slot(k if k in INFERRED_PARAMS else f"{nid}_{k}",
                                            [dict(m[1]).get(k) for m in made], n.params.get(k),
                                            inferred=k in INFERRED_PARAMS) for k in made[0][1]}
                    ref = class_ref(cls)
                    if not ref.startswith("nn."):
                        custom.add(ref)
                    init += _call(f"self.{nid} = {ref}", _layer_args(cls, kwargs), INDENT * 2)
                    fx_node = fx_graph.create_node("call_module", nid, args, name=nid)
                shapes = [analysis.nodes[f.id].output_shape for f in flat]
        if shapes and all(s is not None for s in shapes) and _same([tuple(s) for s in shapes]):
            fx_node.meta["shape"] = tuple(shapes[0])
        values[nid] = fx_node
    out_id = body.sinks()[0] if len(body.sinks()) == 1 else None
    fx_graph.output(values[out_id])
    fwd, used, aliases = forward_source(ModelCode(fx_graph, {}, tuple(analysis.input_shape), analysis.input_dtype))
    if not top:  # forward_source comments the model's input `x`; a block's inputs are its placeholders
        comments = [f"{INDENT * 2}# {p.name}: {shape_comment(p.meta['shape'])}" for p in fx_graph.nodes
                    if p.op == "placeholder" and p.meta.get("shape") is not None]
        fwd = [fwd[0], *comments, *fwd[2:]]
    return init, fwd, custom | used, aliases


def _copy_inputs(inst, copy_path: str) -> list[str]:
    i = inst.copies.index(copy_path)
    return inst.inputs if i == 0 else [inst.copy_outputs[i - 1]]


def _instance_line(scope: _Scope, n, cls: str, ex, args_by_copy: dict) -> list[str]:
    insts = [ex.instances[u + n.id] for u in scope.uses]
    per_copy = []
    for i in range(len(insts[0].copies)):
        per_arg = {}
        for arg in args_by_copy[insts[0].copies[i]]:
            label = f"{n.id}_{arg}" if n.repeat is None else f"{n.id}_{i}_{arg}"
            per_arg[arg] = scope.slot(label, [args_by_copy[inst.copies[i]][arg] for inst in insts], n.params.get(arg))
        per_copy.append([f"{k}={_write(v)}" for k, v in per_arg.items()])
    if n.repeat is None:
        return _call(f"self.{n.id} = {cls}", per_copy[0], INDENT * 2)
    if all(c == per_copy[0] for c in per_copy):
        one = f"{cls}({', '.join(per_copy[0])})"
        return [f"{INDENT * 2}self.{n.id} = nn.Sequential(*[{one} for _ in range({len(per_copy)})])"]
    lines = [f"{INDENT * 2}self.{n.id} = nn.Sequential("]
    for c in per_copy:
        lines.append(f"{INDENT * 3}{cls}({', '.join(c)}),")
    return lines + [f"{INDENT * 2})"]


def _class_source(cls: str, block, signature: list[str], init: list[str], fwd: list[str]) -> str:
    doc = docstring_text(f"Block {block.name!r}" + (f": {block.description}" if block.description else "."))
    doc_lines = doc.split("\n")
    head = [f'{INDENT}"""{doc_lines[0]}'] + [f"{INDENT}{ln}" if ln else "" for ln in doc_lines[1:]]
    if len(doc_lines) == 1:
        head[0] += '"""'
    else:
        head.append(f'{INDENT}"""')
    def_line = f"{INDENT}def __init__({', '.join(['self', *signature])}):"
    if len(def_line) > MAX_LINE:
        def_lines = [f"{INDENT}def __init__(", *[f"{INDENT * 2}{a}," for a in ["self", *signature]], f"{INDENT}):"]
    else:
        def_lines = [def_line]
    return "\n".join([f"class {cls}(nn.Module):", *head, "", *def_lines, f"{INDENT * 2}super().__init__()", *init,
                      "", *fwd])


__all__ = ["block_code"]
