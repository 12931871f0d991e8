"""Validation and exact analysis of a graph: every issue, and per node its output shape, params,
FLOPs and activation memory.

Shapes, params and FLOPs come from PyTorch: the common layers (convolutions, pooling, Linear, norms,
RNN/LSTM/GRU, embeddings, reshapes, merges) through their spec's `shape_rule` (`studio.layers.rules`),
PyTorch's output-size formulas and FlopCounterMode's counting in closed form, held equal to PyTorch at
many random settings by tests/test_layer_rules.py; every other layer, and every input a rule does not
vouch for, is built and run on the `meta` device (no memory, no compute) under
`studio.flop_count.FlopCounter` (FlopCounterMode's count without importing `torch._dynamo`).
Element-wise layers without weights (activations, Dropout, Identity) pass their input's shape on
without the run; the layer tests hold that to PyTorch.
Validation runs ordered passes (structure, params, shapes) and stops only downstream of a broken
node.

    >>> from studio.graph import parse_graph
    >>> g = parse_graph({"format": "studio.graph/1", "name": "t",
    ...     "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
    ...               {"id": "fc", "type": "Linear", "params": {"out_features": 2}}],
    ...     "edges": [{"source": "input", "target": "fc"}]})
    >>> a = analyze(g)
    >>> a.ok, a.nodes["fc"].output_shape, a.total_params
    (True, (2,), 10)
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from dataclasses import dataclass, field

import torch

from studio.errors import GraphError, Issue
from studio.flop_count import FlopCounter
from studio.graph import Graph, path_problem
from studio.layers import REGISTRY, InSpec, LayerSpec, fmt_shape
from studio.layers.rules import closed_form

DEFAULT_PARAM_BUDGET = 1_000_000_000
# One sample's output of one node: larger and no batch of it fits in memory (an output_size or a shape
# typed with too many zeros). STUDIO_MAX_ACTIVATION_MB raises it.
def _activation_limit() -> int:
    try:
        return int(float(os.environ.get("STUDIO_MAX_ACTIVATION_MB", "1024")) * 2**20)
    except ValueError:
        return 2**30


MAX_SAMPLE_ACTIVATION_BYTES = _activation_limit()
_DTYPES = {"float32": torch.float32, "int64": torch.int64}
# Sizes that follow from the input and are never written in a graph (DESIGN.md).
INFERRED_PARAMS = ("in_channels", "in_features", "input_size", "embed_dim", "d_model", "num_features",
                   "normalized_shape", "num_channels")


@dataclass(frozen=True)
class NodeInfo:
    type: str
    category: str
    label: str  # e.g. "Conv2d 32@3x3"
    inputs: tuple[InSpec, ...]
    output_shape: tuple[int, ...] | None  # per sample; None when it could not be inferred
    dtype: str | None
    params: int = 0  # trainable parameters
    flops: int = 0  # forward FLOPs for one sample (a multiply-add counts 2)
    activation_bytes: int = 0  # output size for one sample

    def to_dict(self) -> dict:
        return {"type": self.type, "output_shape": list(self.output_shape) if self.output_shape else None,
                "dtype": self.dtype, "params": self.params, "flops": self.flops,
                "activation_bytes": self.activation_bytes}


@dataclass
class Analysis:
    issues: list[Issue] = field(default_factory=list)
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # topological; empty when the graph has a cycle
    input_id: str | None = None
    output_id: str | None = None
    frozen: set = field(default_factory=set)  # ids of the graph's frozen nodes (their params are not trained)
    # A graph with blocks is analysed as its flat expansion (studio.graph_expand): `nodes` and `order`
    # are by dotted path; `instances` holds each instance's and copy's totals by path (`layer1`,
    # `layer1.0`); `expansion` is the studio.graph_expand.Expansion (None for a graph without blocks).
    instances: dict[str, NodeInfo] = field(default_factory=dict)
    expansion: object = None

    def info(self, node_id: str) -> NodeInfo | None:
        """A node's or an instance's info by id or path (None when it could not be inferred)."""
        return self.nodes.get(node_id) or self.instances.get(node_id)

    @property
    def flat(self) -> Graph | None:
        """The flat graph that compile builds (None when the graph has no blocks: it is its own)."""
        return self.expansion.graph if self.expansion is not None else None

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def total_params(self) -> int:
        return sum(n.params for n in self.nodes.values())

    @property
    def trainable_params(self) -> int:
        """Parameters that training updates: all but those of frozen nodes."""
        return sum(n.params for nid, n in self.nodes.items() if nid not in self.frozen)

    @property
    def total_flops(self) -> int:
        return sum(n.flops for n in self.nodes.values())

    @property
    def total_activation_bytes(self) -> int:
        return sum(n.activation_bytes for n in self.nodes.values())

    def _info(self, node_id: str | None) -> NodeInfo | None:
        return self.nodes.get(node_id) if node_id else None

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        info = self._info(self.input_id)
        return info.output_shape if info else None

    @property
    def input_dtype(self) -> str | None:
        info = self._info(self.input_id)
        return info.dtype if info else None

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        info = self._info(self.output_id)
        return info.output_shape if info else None

    @property
    def output_dtype(self) -> str | None:
        info = self._info(self.output_id)
        return info.dtype if info else None

    def issues_for(self, node_id: str) -> list[Issue]:
        return [i for i in self.issues if i.node_id == node_id]

    def issues_within(self, path: str) -> list[Issue]:
        """Issues of a node and of every node inside it (an instance's, by path prefix)."""
        return [i for i in self.issues if i.node_id and (i.node_id == path or i.node_id.startswith(path + "."))]

    def summary_items(self, expand: bool = False) -> list[tuple[str, NodeInfo]]:
        """(id, info) per row of `summary`: the graph's own nodes, an instance with its totals; with `expand`
        (or a graph without blocks) every node of the flat graph by path."""
        if self.expansion is None or expand:
            return list(self.nodes.items())
        rows, seen = [], set()
        for path in self.order:
            top = path.split(".", 1)[0]
            info = self.instances.get(top) or self.nodes.get(top)
            if top not in seen and info is not None:
                seen.add(top)
                rows.append((top, info))
        return rows

    def summary_dict(self, expand: bool = False) -> dict:
        """The `summary --json` object of DESIGN.md's CLI contract."""
        return {
            "nodes": [{"id": nid, "type": n.type, "output_shape": list(n.output_shape) if n.output_shape else None,
                       "params": n.params, "flops": n.flops} for nid, n in self.summary_items(expand)],
            "total_params": self.total_params,
            "total_flops": self.total_flops,
        }


def validate(graph: Graph, **kwargs) -> list[Issue]:
    """Every issue in the graph (see `analyze`)."""
    return analyze(graph, **kwargs).issues


def analyze(graph: Graph, *, param_budget: float = DEFAULT_PARAM_BUDGET) -> Analysis:
    if graph.uses_blocks:  # analysed as its flat expansion, issues named by path
        return _analyze_blocks(graph, param_budget=param_budget)
    a = Analysis()
    a.frozen = {n.id for n in graph.nodes if n.frozen}
    broken: set[str] = set()  # nodes whose output cannot be inferred
    issue = a.issues.append

    # ---- pass 1: structure ------------------------------------------------------------------------
    for n in graph.nodes:
        problem = path_problem(n.id)  # parse_graph refuses these; a Graph built in code may not
        if problem:
            issue(Issue(n.id, problem))
            broken.add(n.id)
        if n.type not in REGISTRY:
            close = difflib.get_close_matches(n.type, list(REGISTRY), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; see the palette for the available types"
            issue(Issue(n.id, f"unknown layer type {n.type!r}{hint}"))
            broken.add(n.id)
    inputs = [n.id for n in graph.nodes if n.type == "Input"]
    if not inputs:
        issue(Issue(None, "the graph has no Input node; add one (category 'input') and connect it to the first layer"))
    else:
        a.input_id = inputs[0]
        for extra in inputs[1:]:
            issue(Issue(extra, f"is a second Input (the first is {inputs[0]!r}); a model takes one input, "
                               "delete this one or merge the branches after a single Input"))
            broken.add(extra)
    try:
        a.order = graph.topological_order()
    except GraphError as e:
        a.issues.extend(e.issues)
        return a
    connected = {e.source for e in graph.edges} | {e.target for e in graph.edges}
    for n in graph.nodes:
        if len(graph.nodes) > 1 and n.id not in connected:
            issue(Issue(n.id, "is not connected to anything; connect it or delete it"))
            broken.add(n.id)
    sinks = [s for s in graph.sinks() if s in connected or len(graph.nodes) == 1]
    if len(sinks) == 1:
        a.output_id = sinks[0]
    elif len(sinks) > 1:
        for s in sinks:
            others = ", ".join(repr(o) for o in sinks if o != s)
            issue(Issue(s, f"is an output (nothing consumes it), and so is {others}; a model has a single output: "
                           "connect the extra branches onward (e.g. through Add or Concat) or delete them"))

    # ---- pass 2: params ---------------------------------------------------------------------------
    input_map = graph.input_map()
    by_id = {n.id: n for n in graph.nodes}
    for n in graph.nodes:
        spec = REGISTRY.get(n.type)
        if spec is None:
            continue
        if _param_issues(n.id, spec, n.params, issue):
            broken.add(n.id)
        n_in = len(input_map[n.id])
        lo, hi = spec.inputs
        if n_in < lo or (hi is not None and n_in > hi):
            issue(Issue(n.id, _arity_message(spec, n_in)))
            broken.add(n.id)

    # ---- pass 3: shapes, in topological order -----------------------------------------------------
    for nid in a.order:
        n = by_id[nid]
        spec = REGISTRY.get(n.type)
        if spec is None:
            continue
        if spec.type == "Input":
            if nid in broken:
                continue
            p = spec.resolve(n.params)
            shape = tuple(p["shape"])
            a.nodes[nid] = NodeInfo("Input", "input", spec.describe(n.params), (), shape, p["dtype"],
                                    0, 0, _numel(shape) * _itemsize(p["dtype"]))
            continue
        srcs = input_map[nid]
        if nid in broken or any(s not in a.nodes or a.nodes[s].output_shape is None for s in srcs):
            continue  # downstream of a broken node: its issue is already reported
        ins = [InSpec(a.nodes[s].output_shape, a.nodes[s].dtype) for s in srcs]
        problems = _input_problems(spec, ins) or [(param, msg) for param, msg in
                                                  (spec.check(spec.resolve(n.params), ins) if spec.check else [])]
        if problems:
            lost = _where_size_was_lost(graph, a, nid, input_map)
            for param, msg in problems:
                issue(Issue(nid, msg + lost, param))
            continue
        if spec.elementwise:  # the input's shape and dtype, no params, no FLOPs (LayerSpec.elementwise)
            result = (ins[0].shape, ins[0].dtype, 0, 0)
        else:
            result = _infer(spec.type, _params_key(n.params), tuple(ins))
        if isinstance(result, str):
            issue(Issue(nid, result + _where_size_was_lost(graph, a, nid, input_map)))
            continue
        shape, dtype, params, flops = result
        a.nodes[nid] = NodeInfo(spec.type, spec.category, spec.describe(n.params), tuple(ins), shape, dtype,
                                params, flops, _numel(shape) * _itemsize(dtype))
        if a.nodes[nid].activation_bytes > MAX_SAMPLE_ACTIVATION_BYTES:
            issue(Issue(nid, f"outputs {fmt_shape(shape)} per sample: {_numel(shape):,} values, "
                             f"{a.nodes[nid].activation_bytes / 2**30:,.1f} GiB, more than the "
                             f"{MAX_SAMPLE_ACTIVATION_BYTES / 2**30:g} GiB one sample's output may take (not even a "
                             "batch of one would fit in memory); make its size smaller (or raise "
                             "STUDIO_MAX_ACTIVATION_MB)"))
        if spec.dense and len(ins[0].shape) >= 3:
            src = srcs[0]
            issue(Issue(nid, f"applies to the last dimension only of {fmt_shape(ins[0].shape)} from {src!r}, giving "
                             f"{fmt_shape(shape)}; a classifier almost always needs one vector per sample: insert "
                             f"Flatten before {nid} (or silence this warning if it is what you want)",
                        severity="warning"))

    total = a.total_params
    if total > param_budget and a.nodes:
        biggest = max(a.nodes, key=lambda k: a.nodes[k].params)
        issue(Issue(biggest, f"the model has {total:,} parameters, over the budget of {int(param_budget):,}; "
                             f"this node holds {a.nodes[biggest].params:,} of them: make it smaller "
                             "(or raise the parameter budget)"))
    _buffer_budget(graph, a, total, param_budget, issue)
    return a


def _analyze_blocks(graph: Graph, **kwargs) -> Analysis:
    """A graph with blocks: its flat expansion (studio.graph_expand) analysed as any graph. Issues name full
    paths (`layer2.1.add: ...`), those found while expanding first (a bad `"$name"`, an unknown block
    parameter, a block that contains itself, `repeat` < 1); each instance and copy gets a NodeInfo of
    category "block" in `instances`: its output shape, and the params, FLOPs and activation memory inside."""
    from studio.graph_expand import expand

    ex = expand(graph)
    if ex.fatal:
        return Analysis(issues=list(ex.issues), expansion=ex)
    a = analyze(ex.graph, **kwargs)  # the flat graph holds no blocks: the plain analysis
    a.issues = ex.issues + [i for i in a.issues if (i.node_id, i.param) not in ex.flagged]
    a.expansion = ex
    for inst in ex.instances.values():
        label = f"{inst.block} ×{inst.repeat}" if inst.repeat is not None else inst.block
        a.instances[inst.path] = _block_totals(a, inst.block, label, inst.inputs, inst.output, inst.members)
        if inst.repeat is not None:
            sources = inst.inputs
            for i, (copy_path, members) in enumerate(zip(inst.copies, inst.copy_members, strict=True)):
                a.instances[copy_path] = _block_totals(a, inst.block, f"{inst.block} [{i}]", sources,
                                                       inst.copy_outputs[i], members)
                sources = [inst.copy_outputs[i]]
    return a


def _block_totals(a: Analysis, block: str, label: str, inputs: list[str], output: str | None,
                  members: list[str]) -> NodeInfo:
    infos = [a.nodes[m] for m in members if m in a.nodes]
    out = a.nodes.get(output) if output else None
    ins = tuple(InSpec(a.nodes[s].output_shape, a.nodes[s].dtype) for s in inputs
                if s in a.nodes and a.nodes[s].output_shape is not None)
    return NodeInfo(block, "block", label, ins, out.output_shape if out else None, out.dtype if out else None,
                    sum(i.params for i in infos), sum(i.flops for i in infos),
                    sum(i.activation_bytes for i in infos))


def _buffer_budget(graph: Graph, a: Analysis, params: int, budget: float, issue) -> None:
    """Buffers (fixed tables such as sinusoidal positional encodings) take memory like parameters but
    are not trained: count them in the same size budget, naming the node that holds most of them."""
    if params > budget:
        return  # already reported
    held = {n.id: _buffer_values(n.type, _params_key(n.params), a.nodes[n.id].inputs) for n in graph.nodes
            if n.id in a.nodes and n.type != "Input" and not REGISTRY[n.type].elementwise}
    values = sum(held.values())
    if params + values > budget:
        biggest = max(held, key=held.__getitem__)
        issue(Issue(biggest, f"the model holds {params:,} parameters and {values:,} buffer values (fixed tables "
                             f"such as positional encodings), over the size budget of {int(budget):,}; this node's "
                             f"buffers hold {held[biggest]:,} of them: make it smaller (e.g. a lower max_len)"))


@functools.lru_cache(maxsize=4096)
def _buffer_values(type_name: str, params_key: str, ins: tuple[InSpec, ...]) -> int:
    rule = closed_form(type_name, REGISTRY[type_name].resolve(json.loads(params_key)), ins)
    if rule is not None:
        return rule[4]
    with torch.device("meta"):
        module = REGISTRY[type_name].build(json.loads(params_key), list(ins))
    return sum(b.numel() for b in module.buffers())


def _where_size_was_lost(graph: Graph, a: Analysis, node_id: str, input_map: dict) -> str:
    """For a layer that failed on a small spatial input: the chain of sizes from the Input to it, naming
    the layers that shrank it, so the fix is looked for where the size was lost, not only here."""
    chain, nid = [], node_id
    while True:
        srcs = input_map.get(nid) or []
        if len(srcs) != 1 or srcs[0] not in a.nodes:
            break
        nid = srcs[0]
        chain.append(nid)
    chain.reverse()
    shapes = [(c, a.nodes[c].output_shape) for c in chain if a.nodes[c].output_shape is not None]
    if not shapes or len(shapes[-1][1]) < 2:
        return ""
    last = shapes[-1][1]
    if min(last[1:]) > 3:  # not a size that shrank to (almost) nothing
        return ""
    spatial = lambda shape: "x".join(str(d) for d in shape[1:])  # noqa: E731
    steps, shrinkers, prev = [], [], None
    for c, shape in shapes:
        if len(shape) != len(last):
            continue
        if prev is not None and shape[1:] != prev[1:]:
            shrinkers.append(c)
        steps.append(f"{c} {spatial(shape)}")
        prev = shape
    if not shrinkers:
        return ""
    names = ", ".join(shrinkers)
    return (f"; the size was lost upstream: {' -> '.join(steps)}. Give those layers padding (padding=1 keeps a "
            f"3x3 convolution's size), fewer poolings, or a larger input (shrunk by: {names})")


def _param_issues(node_id: str, spec: LayerSpec, params: dict, issue) -> bool:
    bad = False
    names = [p.name for p in spec.params]
    for key, value in params.items():
        if key in names:
            problem = spec.param(key).problem(value)
            if problem:
                issue(Issue(node_id, problem, key))
                bad = True
        elif key in INFERRED_PARAMS:
            issue(Issue(node_id, f"{key} is inferred from the input and must not be written; remove it", key))
            bad = True
        else:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            valid = f"valid params are {names}" if names else f"{spec.type} takes no params"
            issue(Issue(node_id, f"unknown param {str(key)[:40]!r} for {spec.type}; {hint}{valid}", str(key)[:40]))
            bad = True
    return bad


def _arity_message(spec: LayerSpec, n_in: int) -> str:
    lo, hi = spec.inputs
    if hi == 0:
        return f"{spec.type} takes no inputs but has {n_in}; remove the edges into it"
    if lo == hi:
        want = "one input" if lo == 1 else f"{lo} inputs"
        fix = "connect a layer into it" if n_in < lo else "merge the branches first with Add or Concat"
        return f"{spec.type} takes {want} but has {n_in}; {fix}"
    return f"{spec.type} takes at least {lo} inputs but has {n_in}; connect another branch into it"


def _input_problems(spec: LayerSpec, ins: list[InSpec]) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for i in ins:
        rank = len(i.shape)
        if spec.ranks is not None and rank not in spec.ranks:
            hint = {1: "add a Reshape to give it the expected layout",
                    3: "add a Flatten or a pooling layer first" if spec.category in ("recurrent", "attention",
                                                                                    "sequence") else
                    "add a Reshape first"}.get(rank, "add a Reshape or Permute first")
            out.append((None, f"{spec.type} expects a {spec.expects} input, got {fmt_shape(i.shape)} "
                              f"(rank {rank}); {hint}"))
        elif spec.ranks is None and rank == 0:
            out.append((None, f"{spec.type} needs at least one per-sample dimension"))
        if spec.dtype == "float" and i.dtype != "float32":
            out.append((None, f"{spec.type} expects float32 input but receives {i.dtype} token ids; "
                              "add an Embedding first to turn ids into vectors"))
        if spec.dtype == "int" and i.dtype != "int64":
            out.append((None, f"{spec.type} expects int64 token ids but receives {i.dtype} values; "
                              "feed it from an Input with dtype int64"))
    return out


def _params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


@functools.lru_cache(maxsize=4096)
def _infer(type_name: str, params_key: str, ins: tuple[InSpec, ...]):
    """(shape, dtype, params, flops) of one layer, from its closed-form rule or PyTorch on the meta device,
    or an error message.

    Cached by (type, params, input specs): re-analysing an edited graph only runs the changed layers.
    """
    spec = REGISTRY[type_name]
    rule = closed_form(type_name, spec.resolve(json.loads(params_key)), ins)
    if rule is not None:
        return rule[:4]
    return _infer_on_meta(type_name, params_key, ins)


def _infer_on_meta(type_name: str, params_key: str, ins: tuple[InSpec, ...]):
    """`_infer` by building the layer and running it on the meta device (what the closed-form rules,
    studio.layers.rules, are checked against)."""
    spec = REGISTRY[type_name]
    try:
        with torch.device("meta"):
            module = spec.build(json.loads(params_key), list(ins)).eval()
        xs = [torch.empty((1, *i.shape), dtype=_DTYPES[i.dtype], device="meta") for i in ins]
        with FlopCounter() as counter:
            out = module(*xs)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        shapes = " and ".join(fmt_shape(i.shape) for i in ins)
        return f"PyTorch rejected {type_name} on input {shapes}: {first[:300]}"
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    dtype = str(out.dtype).removeprefix("torch.")
    return tuple(out.shape[1:]), dtype, params, int(counter.total)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _itemsize(dtype: str | None) -> int:
    return {"float32": 4, "int64": 8, "float16": 2, "bfloat16": 2}.get(dtype or "", 4)
