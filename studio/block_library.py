"""The built-in blocks: the sub-graphs deep networks are stacks of, as `studio.graph/2` block definitions.

The definitions are data, `block_library.json` (each a `blocks` entry of a /2 document). The Build
page's "Blocks" palette offers them beside a graph's own blocks; adding one copies its
definition into the graph (a document never refers to a block it does not hold). The templates built
with blocks (resnet18, resnet20, gpt_lm, unet) hold these same definitions; tests/test_blocks.py checks that.

- `basic`: ResNet's basic block, two 3x3 convolutions and an identity skip (He et al., 2016;
  torchvision's `BasicBlock` without a downsample).
- `basic_down`: the basic block that changes size: the first convolution strides, and a 1x1
  convolution with batch norm matches the skip (torchvision's `downsample`).
- `bottleneck`: ResNet-50's block, 1x1 -> 3x3 -> 1x1 (4x wider out) with an identity skip.
- `double_conv`: a U-Net level's two 3x3 convolutions with batch norm and ReLU (the unet template).
- `gpt_block`: a pre-norm Transformer block as in GPT-2 and nanoGPT: x + attn(ln_1(x)), then
  x + c_proj(gelu(c_fc(ln_2(x)))), causal self-attention.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

LIBRARY_PATH = Path(__file__).resolve().parent / "block_library.json"  # the definitions, as data
BLOCKS: dict[str, dict] = json.loads(LIBRARY_PATH.read_text(encoding="utf-8"))


def builtin_block(name: str) -> dict:
    """A fresh copy of a built-in block's definition (the `blocks` entry of a document)."""
    return copy.deepcopy(BLOCKS[name])


__all__ = ["BLOCKS", "builtin_block"]
