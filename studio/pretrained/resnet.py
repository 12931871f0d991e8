"""torchvision ResNets (`.pth` state dicts) as block graphs: ResNet-18/34 (basic blocks) and ResNet-50/101/152
(bottlenecks), with depth and widths read from the file's shapes.

torchvision's keys (`conv1.weight`, `layer2.0.downsample.0.weight`, `fc.bias`) map onto the graph's block
paths: a stage whose first block has no downsample is one instance with `repeat` (`layer1.1.conv1.weight`
keeps its name); a stage that starts with a downsample is `layerS_0` (a block with the 1x1 skip
convolution: `downsample.0/1` -> `down_conv/down_bn`) followed by `layerS_1` repeated for the rest
(`layer2.3.conv1` -> `layer2_1.2.conv1`). Strides follow torchvision (stage 1: 1, later stages: 2, on the
3x3 convolution); a state dict holds no strides, so a ResNet that strides elsewhere imports with
torchvision's strides. It is not a general importer of arbitrary CNNs.
"""

from __future__ import annotations

import re

from studio.pretrained.mapping import PretrainedError, WeightMap

_KEY = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")
KNOWN_DEPTHS = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
                ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
                ("bottleneck", (3, 8, 36, 3)): "resnet152"}


def looks_like(state: dict) -> bool:
    return "conv1.weight" in state and "fc.weight" in state and any(k.startswith("layer1.0.") for k in state)


def _conv(oc, k, *, stride=1, padding=0):
    p = {"out_channels": oc, "kernel_size": k, "bias": False}
    if stride != 1:
        p["stride"] = stride
    if padding:
        p["padding"] = padding
    return p


def _node(node_id: str, layer: str, params: dict | None = None, **extra) -> dict:
    """A node of the graph document (params left out when empty)."""
    return {"id": node_id, "type": layer, **({"params": params} if params else {}), **extra}


def _chain(ids):
    return [{"source": a, "target": b} for a, b in zip(ids, ids[1:], strict=False)]


def _down_block(kind: str) -> dict:
    """basic_down / bottleneck_down: the first block of a stage, with the 1x1 convolution on the skip."""
    if kind == "basic":
        body = [_node("conv1", "Conv2d", {**_conv("$channels", 3, padding=1), "stride": "$stride"}),
                _node("bn1", "BatchNorm2d"), _node("relu1", "ReLU"),
                _node("conv2", "Conv2d", _conv("$channels", 3, padding=1)), _node("bn2", "BatchNorm2d")]
        out, params = "$channels", {"channels": 128, "stride": 2}
        doc = "ResNet basic block that changes size: the first 3x3 convolution strides and a 1x1 convolution " \
              "with batch norm matches the skip."
    else:
        body = [_node("conv1", "Conv2d", _conv("$width", 1)), _node("bn1", "BatchNorm2d"), _node("relu1", "ReLU"),
                _node("conv2", "Conv2d", {**_conv("$width", 3, padding=1), "stride": "$stride"}),
                _node("bn2", "BatchNorm2d"), _node("relu2", "ReLU"),
                _node("conv3", "Conv2d", _conv("$out_channels", 1)), _node("bn3", "BatchNorm2d")]
        out, params = "$out_channels", {"width": 64, "out_channels": 256, "stride": 1}
        doc = "ResNet bottleneck block that changes width or size (torchvision v1.5: the 3x3 convolution " \
              "strides) and a 1x1 convolution with batch norm matches the skip."
    relu_out = "relu2" if kind == "basic" else "relu3"  # the library's blocks end in these
    nodes = [_node("x", "Input"), *body, _node("down_conv", "Conv2d", {**_conv(out, 1), "stride": "$stride"}),
             _node("down_bn", "BatchNorm2d"), _node("add", "Add"), _node(relu_out, "ReLU")]
    last = body[-1]["id"]
    edges = _chain(["x"] + [n["id"] for n in body]) + _chain(["x", "down_conv", "down_bn"])
    edges += [{"source": last, "target": "add"}, {"source": "down_bn", "target": "add"},
              {"source": "add", "target": relu_out}]
    return {"description": doc, "params": params, "nodes": nodes, "edges": edges}


def build(state: dict, source: str, *, image_size: int = 224, name: str | None = None):
    """(graph document, WeightMap, architecture) for a torchvision-layout ResNet state dict."""
    for k in ("conv1.weight", "bn1.weight", "fc.weight", "fc.bias"):
        if k not in state:
            raise PretrainedError(f"{source}: not a torchvision ResNet state dict: it has no {k!r} (keys found: "
                                  f"{', '.join(list(state)[:6])}, ...); expected torchvision's resnet18/34/50 keys")
    kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    blocks: dict[int, set[int]] = {}
    for k in state:
        m = _KEY.match(k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stages = sorted(blocks)
    if stages != list(range(1, len(stages) + 1)) or any(blocks[s] != set(range(len(blocks[s]))) for s in stages):
        raise PretrainedError(f"{source}: the stages and blocks are not numbered layer1.0, layer1.1, ... without gaps "
                              f"(found {', '.join(f'layer{s}: blocks {sorted(blocks[s])}' for s in stages)})")
    depths = tuple(len(blocks[s]) for s in stages)
    conv1 = state["conv1.weight"]
    if conv1.dim() != 4:
        raise PretrainedError(f"{source}: conv1.weight has shape {tuple(conv1.shape)}; a ResNet stem is a 2-d "
                              "convolution (out, in, k, k)")
    stem_c, in_c, k = int(conv1.shape[0]), int(conv1.shape[1]), int(conv1.shape[-1])
    from studio.block_library import builtin_block

    doc_blocks = {kind: builtin_block(kind)}
    nodes = [_node("input", "Input", {"shape": [in_c, image_size, image_size], "dtype": "float32"}),
             _node("conv1", "Conv2d", _conv(stem_c, k, stride=2, padding=k // 2)),
             _node("bn1", "BatchNorm2d"), _node("relu", "ReLU"),
             _node("maxpool", "MaxPool2d", {"kernel_size": 3, "stride": 2, "padding": 1})]
    rename = {}  # torchvision prefix "layerS.B." -> graph path prefix
    for s in stages:
        n, first = len(blocks[s]), f"layer{s}.0."
        widths = _widths(state, first, kind, source)
        stride = 1 if s == 1 else 2
        if f"{first}downsample.0.weight" in state:
            down = f"{kind}_down"
            doc_blocks[down] = _down_block(kind)
            nodes.append({"id": f"layer{s}_0", "type": down, "params": {**widths, "stride": stride}})
            rename[first] = f"layer{s}_0."
            rest = list(range(1, n))
            if rest:
                rep = len(rest) if len(rest) > 1 else None
                nodes.append({"id": f"layer{s}_1", "type": kind, "params": widths, **({"repeat": rep} if rep else {})})
                for j, b in enumerate(rest):
                    rename[f"layer{s}.{b}."] = f"layer{s}_1.{j}." if rep else f"layer{s}_1."
        else:
            rep = n if n > 1 else None
            nodes.append({"id": f"layer{s}", "type": kind, "params": widths, **({"repeat": rep} if rep else {})})
            for b in range(n):
                rename[f"layer{s}.{b}."] = f"layer{s}.{b}." if rep else f"layer{s}."
    classes = int(state["fc.weight"].shape[0])
    nodes += [_node("avgpool", "AdaptiveAvgPool2d", {"output_size": 1}), _node("flatten", "Flatten"),
              _node("fc", "Linear", {"out_features": classes})]
    for i, node in enumerate(nodes):
        node["position"] = {"x": 0, "y": 90 * i}
    arch = KNOWN_DEPTHS.get((kind, depths), f"resnet ({kind} blocks, depths {'-'.join(map(str, depths))})")
    graph = {"format": "studio.graph/2", "name": name or arch,
             "description": f"{arch} imported from the torchvision checkpoint {source}: the stem, "
                            f"{len(stages)} stages of {kind} blocks ({', '.join(map(str, depths))}), global average "
                            f"pooling and a {classes}-way linear head, holding the checkpoint's weights.",
             "blocks": {b: d for b, d in doc_blocks.items() if any(n["type"] == b for n in nodes)},
             "nodes": nodes, "edges": _chain([n["id"] for n in nodes])}
    wm = WeightMap(source)
    for key, tensor in state.items():
        m = _KEY.match(key)
        if not m:
            top = key.split(".")[0]
            if top in ("conv1", "bn1", "fc"):
                wm.put(key, key, tensor)
            else:
                wm.refuse(key, f"no layer {top!r} in a torchvision ResNet (expected conv1, bn1, layer1-4, fc)")
            continue
        prefix = f"layer{m.group(1)}.{m.group(2)}."
        rest = m.group(3).replace("downsample.0.", "down_conv.").replace("downsample.1.", "down_bn.")
        wm.put(key, rename[prefix] + rest, tensor)
    return graph, wm, arch


def _widths(state: dict, first: str, kind: str, source: str) -> dict:
    try:
        if kind == "basic":
            return {"channels": int(state[f"{first}conv1.weight"].shape[0])}
        return {"width": int(state[f"{first}conv1.weight"].shape[0]),
                "out_channels": int(state[f"{first}conv3.weight"].shape[0])}
    except KeyError as e:
        raise PretrainedError(f"{source}: block {first.rstrip('.')} has no {e.args[0]!r}; a {kind} block needs "
                              f"conv1{'' if kind == 'basic' else ', conv3'} weights") from None
