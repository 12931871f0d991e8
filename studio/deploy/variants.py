"""Smaller variants of a trained model: int8 quantization (torchao) and pruning (torch.nn.utils.prune).

Each builder takes the fp32 model (a compiled graph in eval mode, never modified: it works on a
copy) and returns a `Variant`: the module to measure, whether it can be saved as a state dict, and
notes on what it left untouched. A method that cannot handle the graph raises ExportError saying
which node stops it and what to use instead.

    int8-weight     torchao Int8WeightOnlyConfig: Linear weights int8 per output channel, activations fp32.
    int8-dynamic    torchao Int8DynamicActivationInt8WeightConfig: Linear weights int8, activations
                    quantized per token at run time.
    int8-static     PT2E (torch.export, prepare_pt2e, calibration on training batches, convert_pt2e) with
                    torchao's X86InductorQuantizer: Conv and Linear weights and activations int8.
    prune           global L1 unstructured pruning of every Conv/Linear weight at `sparsity`.
    prune-channels  L2 structured pruning of output channels of every Conv/Linear but the output layer.
    shrink-channels the same channels removed: a smaller dense graph (studio.deploy.shrink).
    onnx-fp32, onnx-int8-static   the model in onnxruntime, fp32 and int8 static QDQ (studio.deploy.onnxrt).
    onnx-int8-shrunk  shrink-channels' smaller graph, int8 static QDQ in onnxruntime.

The torchao and PT2E int8 variants run in PyTorch eager mode, where int8 is emulated by quantize /
dequantize ops and tensor-subclass dispatch, not int8 kernels: they are smaller but slower than fp32,
and the table says so (EAGER_INT8). The int8 that runs fast on a CPU is onnx-int8-static.

`torch.ao.quantization` is deprecated in this PyTorch and is not used.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from studio.errors import ExportError
from studio.export import _known_noise_filtered  # the same known warnings as every export, no others
from studio.layers import REGISTRY
from studio.training import pruning
from studio.training.pruning import check_sparsity, prunable  # noqa: F401  (part of this module's API)

METHODS = ("fp32", "int8-weight", "int8-dynamic", "int8-static", "prune", "prune-channels", "shrink-channels",
           "onnx-fp32", "onnx-int8-static", "onnx-int8-shrunk")
GRAPH_METHODS = ("shrink-channels",)  # built from the run's graph document, not only its module (shrink.py)
ONNX_METHODS = ("onnx-fp32", "onnx-int8-static", "onnx-int8-shrunk")
SHRUNK_ONNX = ("onnx-int8-shrunk",)  # shrink-channels' smaller graph, then int8 in onnxruntime
EAGER_INT8 = ("int8-weight", "int8-dynamic", "int8-static")  # int8 emulated in eager PyTorch: slower than fp32
# Where each variant runs when measured (and where its download is meant to run).
RUNTIMES = {m: "onnxruntime" if m in ONNX_METHODS else "PyTorch eager" for m in METHODS}
# What each download needs to load, exactly (tests/test_deploy_downloads.py loads each with only that).
PT2_TORCH = "torch only (no studio): torch.export.load(path).module()(x)"
PT2_TORCHAO = ("torch + torchao installed: torch.export.load(path).module()(x) imports torchao by itself for the "
               "torchao ops the program calls")
LOADS_WITH = {m: PT2_TORCH for m in METHODS} | {
    "int8-weight": PT2_TORCHAO,
    "int8-dynamic": PT2_TORCHAO,
    "int8-static": "torch + torchao: `import torchao` before torch.export.load(path) (it registers the "
                   "quantized_decomposed ops the program calls; plain torch fails to deserialize it)",
    "onnx-fp32": "onnxruntime + numpy (no torch): onnxruntime.InferenceSession(path).run(None, {'x': x}); "
                 "predict.py shows how",
}
LOADS_WITH["onnx-int8-static"] = LOADS_WITH["onnx-int8-shrunk"] = LOADS_WITH["onnx-fp32"]
SHRUNK_STATE_DICT_LOADS_WITH = ("torch + the shrunk graph's model (open its graph in Build, or its exported code): "
                                "model.load_state_dict(torch.load(path, weights_only=True))")
STATE_DICT_LOADS_WITH = ("torch + this graph's model (the studio, or the graph's exported code): "
                         "model.load_state_dict(torch.load(path, weights_only=True))")
QUANT_TYPES = (nn.Linear,)
# What each method quantizes or prunes, in words, for the table.
DESCRIPTIONS = {
    "fp32": "the run's trained weights, unchanged",
    "int8-weight": "Linear weights int8 per channel (torchao weight-only)",
    "int8-dynamic": "Linear weights int8, activations int8 per token at run time (torchao dynamic)",
    "int8-static": "Conv/Linear weights and activations int8, calibrated on training batches (PT2E)",
    "prune": "global L1 unstructured pruning of Conv/Linear weights",
    "prune-channels": "L2 structured pruning of output channels (all Conv/Linear but the output layer)",
    "shrink-channels": "prune-channels with the pruned channels removed: a smaller dense graph (open it in Build)",
    "onnx-fp32": "the trained weights as ONNX, run by onnxruntime (one thread)",
    "onnx-int8-static": "onnxruntime static int8 (QDQ): weights int8 per channel, activations calibrated on "
                        "training batches",
    "onnx-int8-shrunk": "shrink-channels' smaller graph, then onnxruntime static int8 (QDQ) like onnx-int8-static",
}


@dataclass
class Variant:
    method: str
    module: nn.Module
    notes: list[str] = field(default_factory=list)
    state_dict_ok: bool = True   # loads into the studio graph's model (fp32 and pruned variants)
    graph_doc: dict | None = None  # shrink-channels: the smaller graph its state dict loads into


def make_variant(model: nn.Module, method: str, *, sparsity: float = 0.5, calibration=None,
                 example: torch.Tensor | None = None) -> Variant:
    """The `method` variant of `model` (left untouched). `calibration`: an iterable of input batches
    (int8-static); `example`: one input batch for torch.export (int8-static)."""
    if method not in METHODS:
        raise ExportError(f"method {method!r} is not known; use one of {', '.join(METHODS)}")
    if method in ONNX_METHODS:
        raise ExportError(f"{method} runs in onnxruntime, not as a PyTorch module: use studio.deploy.onnxrt "
                          "(deploy_report measures it)")
    if method in GRAPH_METHODS:
        raise ExportError(f"{method} makes a new graph: use studio.deploy.shrink.shrink_channels(graph, model, "
                          "sparsity) (deploy_report measures it)")
    if method.startswith("prune"):
        check_sparsity(sparsity)
    base = copy.deepcopy(model).eval()
    if method == "fp32":
        return Variant(method, base)
    if method == "int8-weight":
        return _torchao(base, method)
    if method == "int8-dynamic":
        return _torchao(base, method)
    if method == "int8-static":
        if example is None or calibration is None:
            raise ExportError("int8-static needs an example input and calibration batches from the training split")
        return _pt2e_static(base, example, calibration)
    if method == "prune":
        return prune_global_l1(base, sparsity)
    return prune_channels(base, sparsity)


def _node_types(model: nn.Module) -> dict[str, str]:
    return dict(getattr(model, "node_types", {}) or {})


def _has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def _untouched(model: nn.Module, types: tuple, what: str) -> list[str]:
    """Notes naming the nodes with weights that `types` does not cover (they stay fp32) or covers in part."""
    kinds = _node_types(model)
    left, partial = [], []
    # By node: a layer inside a block instance by its path (layer1.0.conv1), not the instance's container.
    nodes = [(nid, model.get_submodule(nid)) for nid in kinds if _has_module(model, nid)] if kinds else \
        list(model.named_children())
    for name, m in nodes:
        if isinstance(m, types) or not any(True for _ in m.parameters()):
            continue
        label = f"{name} ({kinds.get(name, type(m).__name__)})"
        (partial if any(isinstance(s, types) for s in m.modules()) else left).append(label)
    notes = []
    if left:
        notes.append(f"{what}; these stay fp32: {', '.join(left)}")
    if partial:
        notes.append(f"only the Linear parts of {', '.join(partial)} are quantized")
    return notes


def _torchao(model: nn.Module, method: str) -> Variant:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    if not any(isinstance(m, QUANT_TYPES) for m in model.modules()):
        raise ExportError(f"{method} quantizes Linear layers and this graph has none; nothing would change "
                          "(use int8-static for convolutions, or prune)")
    config = Int8WeightOnlyConfig() if method == "int8-weight" else Int8DynamicActivationInt8WeightConfig()
    with _known_noise_filtered():
        quantize_(model, config)
    return Variant(method, model, _untouched(model, QUANT_TYPES, "torchao quantizes Linear layers only"),
                   state_dict_ok=False)


def _pt2e_static(model: nn.Module, example: torch.Tensor, calibration) -> Variant:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    kinds = _node_types(model)
    blocked = [f"{nid} ({t})" for nid, t in kinds.items() if t in REGISTRY and REGISTRY[t].category == "recurrent"]
    if blocked:
        raise ExportError(f"int8-static is not supported for recurrent layers: {', '.join(blocked)}; PT2E's x86 "
                          "quantizer has no int8 pattern for RNN/LSTM/GRU. Use int8-weight or int8-dynamic "
                          "(they quantize the Linear layers), or prune")
    if not any(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) for m in model.modules()):
        raise ExportError("int8-static quantizes Conv and Linear layers and this graph has none; nothing would "
                          "change")
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with _known_noise_filtered():
            try:
                graph = torch.export.export(model, (example,), dynamic_shapes=({0: _batch_dim()},)).module()
                prepared = prepare_pt2e(graph, quantizer)
            except Exception as e:  # torch.export and the quantizer raise many types
                raise ExportError(f"int8-static could not capture this graph with torch.export: "
                                  f"{_first_line(e)}; use int8-weight or int8-dynamic") from None
            batches = 0
            with torch.no_grad():
                for x in calibration:
                    prepared(x)
                    batches += 1
            if batches == 0:
                raise ExportError("int8-static needs calibration batches; the training split gave none")
            converted = convert_pt2e(prepared)
    finally:
        logger.setLevel(level)
    _drop_unused_attributes(converted)
    return Variant("int8-static", converted,
                   [f"calibrated on {batches} training batch{'es' if batches != 1 else ''}; int8 kernels need "
                    "torch.compile (inductor) to run fast, eager timings show the quantize/dequantize cost"],
                   state_dict_ok=False)


def _batch_dim():
    return torch.export.Dim("batch", min=1, max=1 << 16)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def _drop_unused_attributes(gm: torch.fx.GraphModule) -> None:
    """convert_pt2e keeps the fp32 weights as attributes next to their int8 copies; drop the ones the graph
    no longer reads, so the saved program holds only int8 weights."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name not in used:
            owner_name, _, attr = name.rpartition(".")
            owner = gm.get_submodule(owner_name) if owner_name else gm
            delattr(owner, attr)


# ---- pruning (the primitives live in studio.training.pruning: pruned fine-tuning uses them too) -------

def prune_global_l1(model: nn.Module, sparsity: float) -> Variant:
    return Variant("prune", model, pruning.prune_global_l1(model, sparsity))


def prune_channels(model: nn.Module, sparsity: float, n: int = 2) -> Variant:
    return Variant("prune-channels", model, pruning.prune_channels(model, sparsity, n))


