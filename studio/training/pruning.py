"""Pruning primitives shared by Deploy's pruned variants and pruned fine-tuning (torch.nn.utils.prune).

Each function prunes a model in place, makes the masks permanent (plain tensors with zeros) and
returns notes for the user; studio.deploy wraps them as variants, studio.training.transfer keeps the
pruned weights at zero while a pruned model is fine-tuned.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from studio.errors import ExportError

PRUNE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


def check_sparsity(sparsity: float) -> None:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 < sparsity < 1.0:
        raise ExportError(f"sparsity={sparsity!r} is out of range; expected a fraction 0 < sparsity < 1 "
                          "(e.g. 0.5 zeroes half the weights)")



def prunable(model: nn.Module, *, skip_output: bool = False) -> list[tuple[str, nn.Module]]:
    """(name, module) of the Conv/Linear layers pruning acts on (their `weight`)."""
    output_id = getattr(model, "output_id", None)
    out = []
    for name, m in model.named_modules():
        if isinstance(m, PRUNE_TYPES) and getattr(m, "weight", None) is not None:
            if skip_output and (name == output_id or name.startswith(f"{output_id}.")):  # by path
                continue
            out.append((name, m))
    return out


def prune_global_l1(model: nn.Module, sparsity: float) -> list[str]:
    """Zero the `sparsity` fraction of all Conv/Linear weights with the smallest |w| (one global threshold);
    the masks are made permanent (plain tensors with zeros)."""
    layers = prunable(model)
    if not layers:
        raise ExportError("prune acts on Conv and Linear weights and this graph has none")
    prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                              amount=float(sparsity))
    for _, m in layers:
        prune.remove(m, "weight")
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    notes = [f"{zeros:,} of {total:,} Conv/Linear weights are zero ({zeros / total:.1%}); stored dense, so the file "
             "is not smaller: a sparse format or structured pruning is needed for that"]
    return notes


def prune_channels(model: nn.Module, sparsity: float, n: int = 2) -> list[str]:
    """Zero the `sparsity` fraction of output channels (rows of Linear, filters of Conv) with the smallest
    L-n norm in every Conv/Linear but the output layer; their biases are zeroed too."""
    layers = prunable(model, skip_output=True)
    if not layers:
        raise ExportError("prune-channels needs a Conv or Linear layer before the output layer; this graph has "
                          "none (use prune)")
    for _, m in layers:
        dim = 1 if isinstance(m, nn.ConvTranspose2d) else 0
        prune.ln_structured(m, "weight", amount=float(sparsity), n=n, dim=dim)
        mask = m.weight_mask
        prune.remove(m, "weight")
        if m.bias is not None:
            keep = mask.flatten(1).any(dim=1) if dim == 0 else mask.transpose(0, 1).flatten(1).any(dim=1)
            with torch.no_grad():
                m.bias.mul_(keep.to(m.bias.dtype))
    names = ", ".join(name for name, _ in layers)
    return [f"{sparsity:.0%} of the output channels of {names} are zero (the output layer is kept whole); "
            "stored dense, a smaller architecture would need the channels removed"]
