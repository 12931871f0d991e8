"""The module tree of a compiled graph with blocks: containers that mirror the blocks.

The compiler's fx graph calls the layers by dotted path (`layer1.0.conv1`); this module gives those
paths the tree a hand-written model would have: an instance is a `BlockModule` (its layers and nested
instances as submodules), an instance written with `repeat` an `nn.Sequential` of copies, as torchvision's
`_make_layer` builds a ResNet stage. State-dict keys are the dotted paths (`layer1.0.conv1.weight`).
The containers only hold submodules: the fx graph's forward runs the layers.
"""

from __future__ import annotations

from torch import nn


class BlockModule(nn.Module):
    """One copy of a block: holds the block's layers (and nested instances) by node id."""

    def __init__(self, block: str):
        super().__init__()
        self.block = block

    def extra_repr(self) -> str:
        return f"block={self.block!r}"


def module_root(expansion, modules: dict[str, nn.Module]) -> nn.Module:
    """A module holding `modules` (by dotted path) inside containers mirroring `expansion`'s instances."""
    root = nn.Module()
    for inst in expansion.instances.values():  # outer instances come before the ones inside them
        parent_path, _, name = inst.path.rpartition(".")
        parent = root.get_submodule(parent_path) if parent_path else root
        if inst.repeat is None:
            parent.add_module(name, BlockModule(inst.block))
        else:
            parent.add_module(name, nn.Sequential(*[BlockModule(inst.block) for _ in inst.copies]))
    for path, module in modules.items():
        parent_path, _, name = path.rpartition(".")
        (root.get_submodule(parent_path) if parent_path else root).add_module(name, module)
    return root


def adopt_tree(model: nn.Module, root: nn.Module) -> None:
    """Give `model` (an fx.GraphModule made from `root`, whose intermediate containers fx made plain
    nn.Modules) `root`'s containers; the layers in them are the same objects."""
    for name, child in root.named_children():
        setattr(model, name, child)


__all__ = ["BlockModule", "adopt_tree", "module_root"]
