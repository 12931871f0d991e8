"""The built-in blocks: the sub-graphs deep networks are stacks of, as `studio.graph/2` block definitions.

The Build page's "Blocks" palette offers them beside a graph's own blocks; adding one copies its
definition into the graph (a document never refers to a block it does not hold). The templates built
with blocks (resnet18, resnet20, gpt_lm) hold these same definitions; tests/test_blocks.py checks that.

- `basic`: ResNet's basic block, two 3x3 convolutions and an identity skip (He et al., 2016;
  torchvision's `BasicBlock` without a downsample).
- `basic_down`: the basic block that changes size: the first convolution strides, and a 1x1
  convolution with batch norm matches the skip (torchvision's `downsample`).
- `bottleneck`: ResNet-50's block, 1x1 -> 3x3 -> 1x1 (4x wider out) with an identity skip.
- `gpt_block`: a pre-norm Transformer block as in GPT-2 and nanoGPT: x + attn(ln_1(x)), then
  x + c_proj(gelu(c_fc(ln_2(x)))), causal self-attention.
"""

from __future__ import annotations

import copy


def _edges(*pairs: tuple[str, str]) -> list[dict]:
    return [{"source": s, "target": t} for s, t in pairs]


def _conv(channels: str, kernel: int, stride=1, padding: int = 0) -> dict:
    p = {"out_channels": channels, "kernel_size": kernel, "padding": padding, "bias": False}
    if stride != 1:
        p["stride"] = stride
    if not padding:
        del p["padding"]
    return p


BLOCKS: dict[str, dict] = {
    "basic": {
        "description": "ResNet basic block: two 3x3 convolutions with batch norm and an identity skip.",
        "params": {"channels": 64},
        "nodes": [
            {"id": "x", "type": "Input"},
            {"id": "conv1", "type": "Conv2d", "params": _conv("$channels", 3, padding=1)},
            {"id": "bn1", "type": "BatchNorm2d"}, {"id": "relu1", "type": "ReLU"},
            {"id": "conv2", "type": "Conv2d", "params": _conv("$channels", 3, padding=1)},
            {"id": "bn2", "type": "BatchNorm2d"}, {"id": "add", "type": "Add"}, {"id": "relu2", "type": "ReLU"},
        ],
        "edges": _edges(("x", "conv1"), ("conv1", "bn1"), ("bn1", "relu1"), ("relu1", "conv2"), ("conv2", "bn2"),
                        ("bn2", "add"), ("x", "add"), ("add", "relu2")),
    },
    "basic_down": {
        "description": "ResNet basic block that changes size: the first 3x3 convolution strides and a 1x1 "
                       "convolution with batch norm matches the skip.",
        "params": {"channels": 128, "stride": 2},
        "nodes": [
            {"id": "x", "type": "Input"},
            {"id": "conv1", "type": "Conv2d", "params": _conv("$channels", 3, "$stride", padding=1)},
            {"id": "bn1", "type": "BatchNorm2d"}, {"id": "relu1", "type": "ReLU"},
            {"id": "conv2", "type": "Conv2d", "params": _conv("$channels", 3, padding=1)},
            {"id": "bn2", "type": "BatchNorm2d"},
            {"id": "down_conv", "type": "Conv2d", "params": _conv("$channels", 1, "$stride")},
            {"id": "down_bn", "type": "BatchNorm2d"},
            {"id": "add", "type": "Add"}, {"id": "relu2", "type": "ReLU"},
        ],
        "edges": _edges(("x", "conv1"), ("conv1", "bn1"), ("bn1", "relu1"), ("relu1", "conv2"), ("conv2", "bn2"),
                        ("x", "down_conv"), ("down_conv", "down_bn"), ("bn2", "add"), ("down_bn", "add"),
                        ("add", "relu2")),
    },
    "bottleneck": {
        "description": "ResNet bottleneck block: 1x1 (width), 3x3 (width), 1x1 (out_channels = 4 x width) with "
                       "batch norm and an identity skip; its input must have out_channels channels.",
        "params": {"width": 64, "out_channels": 256},
        "nodes": [
            {"id": "x", "type": "Input"},
            {"id": "conv1", "type": "Conv2d", "params": _conv("$width", 1)},
            {"id": "bn1", "type": "BatchNorm2d"}, {"id": "relu1", "type": "ReLU"},
            {"id": "conv2", "type": "Conv2d", "params": _conv("$width", 3, padding=1)},
            {"id": "bn2", "type": "BatchNorm2d"}, {"id": "relu2", "type": "ReLU"},
            {"id": "conv3", "type": "Conv2d", "params": _conv("$out_channels", 1)},
            {"id": "bn3", "type": "BatchNorm2d"}, {"id": "add", "type": "Add"}, {"id": "relu3", "type": "ReLU"},
        ],
        "edges": _edges(("x", "conv1"), ("conv1", "bn1"), ("bn1", "relu1"), ("relu1", "conv2"), ("conv2", "bn2"),
                        ("bn2", "relu2"), ("relu2", "conv3"), ("conv3", "bn3"), ("bn3", "add"), ("x", "add"),
                        ("add", "relu3")),
    },
    "gpt_block": {
        "description": "Pre-norm Transformer block (GPT-2, nanoGPT): x + attn(ln_1(x)), then "
                       "x + c_proj(gelu(c_fc(ln_2(x)))), with causal self-attention.",
        "params": {"d_model": 128, "num_heads": 4, "d_ff": 512, "dropout": 0.0},
        "nodes": [
            {"id": "x", "type": "Input"},
            {"id": "ln_1", "type": "LayerNorm"},
            {"id": "attn", "type": "MultiheadAttention",
             "params": {"num_heads": "$num_heads", "dropout": "$dropout", "causal": True}},
            {"id": "add_1", "type": "Add"},
            {"id": "ln_2", "type": "LayerNorm"},
            {"id": "c_fc", "type": "Linear", "params": {"out_features": "$d_ff"}},
            {"id": "gelu", "type": "GELU"},
            {"id": "c_proj", "type": "Linear", "params": {"out_features": "$d_model"}},
            {"id": "add_2", "type": "Add"},
        ],
        "edges": _edges(("x", "ln_1"), ("ln_1", "attn"), ("x", "add_1"), ("attn", "add_1"), ("add_1", "ln_2"),
                        ("ln_2", "c_fc"), ("c_fc", "gelu"), ("gelu", "c_proj"), ("add_1", "add_2"),
                        ("c_proj", "add_2")),
    },
}


def builtin_block(name: str) -> dict:
    """A fresh copy of a built-in block's definition (the `blocks` entry of a document)."""
    return copy.deepcopy(BLOCKS[name])


__all__ = ["BLOCKS", "builtin_block"]
