"""Structured pruning that shrinks: the output channels `prune-channels` would zero are removed, giving a
smaller dense graph (a new `studio.graph/1` document, shapes re-inferred by the compiler) and its weights.

For each Conv1d/Conv2d/Linear but the output layer, the `sparsity` fraction of output channels with the
smallest L2 norm goes (the channels torch.nn.utils.prune.ln_structured picks, as prune-channels does);
the layer's `out_channels` / `out_features` shrinks, and so do the per-channel tensors downstream of it:
a BatchNorm's, and the input columns of the next Conv/Linear (through a Flatten: every position of each
kept channel). A layer is kept whole, with the reason in the notes, when its channels do not reach
exactly one next Conv/Linear through channel-wise nodes only (activations, pooling, BatchNorm, Dropout,
Identity, one full Flatten): a merge (Add, Concat), a second consumer, LayerNorm or a reshape would need
the same channels removed elsewhere.

On a graph whose activations map 0 to 0 (ReLU, GELU, SiLU, Tanh, ...) and without BatchNorm on the
path, the shrunk model computes exactly what the prune-channels model computes, with fewer weights; so
a run fine-tuned by the pruned fine-tuning path (prune-channels, channels held at zero) shrinks to the
same function. (With a BatchNorm on the path a zeroed channel still carries BatchNorm's constant, which
removing it drops.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from studio.errors import ExportError
from studio.layers import REGISTRY
from studio.training.pruning import check_sparsity

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
PER_CHANNEL = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class Shrunk:
    graph: object                      # the smaller studio Graph
    model: nn.Module                   # its compiled model holding the kept weights, eval mode
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)  # node_id -> (before, after)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Path:
    producer: str
    per_channel: list[str]             # BatchNorm nodes between producer and consumer
    consumer: str
    positions: int = 1                 # a Flatten between: positions per channel (H*W)


def shrink_channels(graph, model: nn.Module, sparsity: float, *, n: int = 2) -> Shrunk:
    """The graph and model with the pruned channels removed (neither argument is changed).

    `model` is the trained compiled graph (its modules named by node id). ExportError when no layer can
    shrink (the message names why for each)."""
    from studio.analysis import analyze
    from studio.compile import compile_graph
    from studio.graph_edit import with_param

    check_sparsity(sparsity)
    analysis = analyze(graph)
    modules = dict(model.named_children())
    paths, kept_whole = _paths(graph, analysis, modules, getattr(model, "output_id", None))
    if not paths:
        raise ExportError("shrink-channels found no layer whose channels can be removed: "
                          + "; ".join(kept_whole) + ". Use prune-channels (zeroes them in place)")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    keeps = {}
    for p in paths:  # every choice from the original weights, as prune-channels makes it
        w = state[f"{p.producer}.weight"]
        out = w.shape[0]
        drop = min(round(sparsity * out), out - 1)
        norms = w.flatten(1).norm(p=n, dim=1)
        keeps[p.producer] = torch.topk(norms, out - drop, largest=True).indices.sort().values
    new_graph = graph
    result = Shrunk(None, None)
    for p in paths:
        keep = keeps[p.producer]
        before = state[f"{p.producer}.weight"].shape[0]
        for name in ("weight", "bias"):
            key = f"{p.producer}.{name}"
            if key in state:
                state[key] = state[key][keep]
        for bn in p.per_channel:
            for name in ("weight", "bias", "running_mean", "running_var"):
                if f"{bn}.{name}" in state:
                    state[f"{bn}.{name}"] = state[f"{bn}.{name}"][keep]
        columns = (keep[:, None] * p.positions + torch.arange(p.positions)).flatten()
        key = f"{p.consumer}.weight"
        state[key] = state[key][:, columns]
        param = REGISTRY[graph.node(p.producer).type].size_param[0]
        new_graph = with_param(new_graph, p.producer, param, int(keep.numel()))
        result.channels[p.producer] = (before, int(keep.numel()))
    new_graph = new_graph.copy()
    new_graph.name = f"{graph.name}-shrunk-{round(sparsity * 100)}"
    small = compile_graph(new_graph, seed=0)
    small.load_state_dict(state, strict=True)  # every shape re-inferred by the compiler matches the slices
    result.graph, result.model = new_graph, small.eval()
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in small.parameters())
    result.notes.append("channels removed: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in result.channels.items())
                        + f"; {after:,} of {before:,} parameters remain ({after / before:.0%}), stored dense")
    if kept_whole:
        result.notes.append("kept whole: " + "; ".join(kept_whole))
    return result


def _paths(graph, analysis, modules: dict, output_id: str | None) -> tuple[list[_Path], list[str]]:
    successors: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for e in graph.edges:
        successors[e.source].append(e.target)
    paths, kept = [], []
    for node in graph.nodes:
        m = modules.get(node.id)
        if not isinstance(m, WEIGHTED):
            continue
        if node.id == output_id:
            kept.append(f"{node.id} (the output layer)")
            continue
        if getattr(m, "groups", 1) != 1:
            kept.append(f"{node.id} (grouped convolution)")
            continue
        shape = analysis.nodes[node.id].output_shape
        if isinstance(m, nn.Linear) and len(shape or ()) != 1:
            kept.append(f"{node.id} (a Linear on a sequence: its channels are the last dim)")
            continue
        path, why = _follow(node.id, successors, modules, analysis, isinstance(m, nn.Linear))
        if path is None:
            kept.append(f"{node.id} ({why})")
        else:
            paths.append(path)
    return paths, kept


def _follow(start: str, successors, modules, analysis, from_linear: bool):
    """The path from `start`'s output to the next Conv/Linear, or (None, why) when it is not channel-wise only."""
    path = _Path(start, [], "")
    current, flattened = start, False
    while True:
        nxt = successors.get(current, [])
        if len(nxt) != 1:
            where = "its output" if current == start else f"its channels reach {current}, whose output"
            return None, f"{where} feeds {len(nxt)} nodes" if nxt else "nothing consumes its output"
        current = nxt[0]
        m = modules.get(current)
        type_name = _type(analysis, current)
        if m is None:
            return None, f"its channels reach {current} ({type_name}), a merge"
        if isinstance(m, WEIGHTED):
            if isinstance(m, nn.Linear) and not from_linear and not flattened:
                return None, f"{current} (Linear) reads the last dim, not its channels"
            if not isinstance(m, nn.Linear) and (from_linear or getattr(m, "groups", 1) != 1):
                return None, f"{current} ({type_name}) cannot take fewer input channels here"
            path.consumer = current
            return path, ""
        if isinstance(m, PER_CHANNEL):
            path.per_channel.append(current)
            continue
        if isinstance(m, nn.Flatten):
            before = analysis.nodes[_previous(current, successors)].output_shape
            if flattened or from_linear or m.start_dim != 1 or m.end_dim != -1 or not before:
                return None, f"{current} (Flatten) does not flatten whole channels"
            flattened, path.positions = True, math.prod(before[1:])
            continue
        spec = REGISTRY.get(type_name)
        if spec is not None and (spec.elementwise or (spec.category == "pooling" and not flattened)):
            continue
        return None, f"its channels reach {current} ({type_name})"


def _type(analysis, node_id: str) -> str:
    node = analysis.nodes.get(node_id)  # a block instance is analysed by the paths inside it, not by its own id
    return node.type if node is not None else "a block: shrink-channels does not look inside blocks"


def _previous(node_id: str, successors) -> str:
    return next(src for src, targets in successors.items() if node_id in targets)
