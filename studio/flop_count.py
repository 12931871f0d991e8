"""Count a forward pass's FLOPs as `torch.utils.flop_counter.FlopCounterMode` does, without importing
`torch._dynamo`.

FlopCounterMode's dispatch handler is wrapped in `torch._compile._disable_dynamo`, which imports
`torch._dynamo` (1.2-2 s of CPU) on its first call, so any process's first analysis paid for the
compiler; so does any TorchDispatchMode subclass unless it opts out, as this one does. This mode
counts the same way, with the same formulas (`flop_registry`), for the total only:
operators without a formula are decomposed and their parts counted, size queries are left alone.
tests/test_layer_rules.py holds it equal to FlopCounterMode on every palette layer.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

# Size and layout queries FlopCounterMode passes through untouched (NotImplemented: the default runs).
_PASS_THROUGH = {
    torch.ops.aten.sym_is_contiguous.default, torch.ops.aten.is_contiguous.default,
    torch.ops.aten.is_contiguous.memory_format, torch.ops.aten.is_strides_like_format.default,
    torch.ops.aten.is_non_overlapping_and_dense.default, torch.ops.aten.size.default,
    torch.ops.aten.sym_size.default, torch.ops.aten.stride.default, torch.ops.aten.sym_stride.default,
    torch.ops.aten.storage_offset.default, torch.ops.aten.sym_storage_offset.default,
    torch.ops.aten.numel.default, torch.ops.aten.sym_numel.default, torch.ops.aten.dim.default,
    torch.ops.prim.layout.default,
}


class FlopCounter(TorchDispatchMode):
    """`with FlopCounter() as c: module(x)`, then `c.total` is FlopCounterMode's `get_total_flops()`."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps a subclass's handler in `_disable_dynamo` (which imports torch._dynamo on
        # the first call) unless this says no: this mode runs on the meta device in analysis, never
        # inside a torch.compile'd region, so there is nothing for Dynamo to skip.
        return False

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PASS_THROUGH or isinstance(func, torch._ops.HigherOrderOperator):
            return NotImplemented
        # As FlopCounterMode: `func` (an overload) is never a key of the registry (packets), so every
        # operator with a decomposition is decomposed and its parts counted.
        if func not in flop_registry and func is not torch.ops.prim.device.default:
            with self:
                out = func.decompose(*args, **kwargs)
                if out is not NotImplemented:
                    return out
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            self.total += flop_registry[packet](*args, **kwargs, out_val=out)
        return out
