"""Palette: convolution and pooling layers, with kernel-fits-input checks worded for users."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from studio.layers import rules
from studio.layers.base import (
    InSpec,
    LayerSpec,
    NoEquivalent,
    Param,
    as_tuple,
    call_arg,
    fmt_shape,
    fmt_size,
    module_size,
    register,
)


def _window_check(n: int, kernel_key: str = "kernel_size", transposed: bool = False):
    """A check that the sliding window fits the (padded) input in each of the last n dims."""

    def check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
        if transposed or p.get("padding") == "same":
            return []
        spatial = ins[0].shape[-n:]
        k = as_tuple(p[kernel_key], n)
        pad = as_tuple(p.get("padding", 0) if p.get("padding") != "valid" else 0, n)
        dil = as_tuple(p.get("dilation", 1), n)
        span = [d * (kk - 1) + 1 for kk, d in zip(k, dil, strict=False)]
        if all(s <= i + 2 * pp for s, i, pp in zip(span, spatial, pad, strict=False)):
            return []
        max_k = [max(1, (i + 2 * pp - 1) // d + 1) for i, pp, d in zip(spatial, pad, dil, strict=False)]
        # Suggest the padding that keeps the size ('same'), as Keras's messages do: always enough.
        need_pad = [max(pp, (s - 1) // 2, math.ceil((s - i) / 2)) for s, i, pp in zip(span, spatial, pad, strict=False)]
        show = lambda t: str(t[0]) if len(set(t)) == 1 else str(list(t))  # noqa: E731
        return [(kernel_key, f"{kernel_key}={show(k)} is larger than its input {fmt_shape(spatial)}"
                             f"{' with padding=' + show(pad) if any(pad) else ''}; use {kernel_key} <= "
                             f"{show(max_k)} or padding={show(need_pad)}")]

    return check


def _conv_checks(n: int, transposed: bool = False):
    window = _window_check(n, transposed=transposed)

    def check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
        c, g = ins[0].shape[0], p["groups"]
        out = []
        if c % g or p["out_channels"] % g:
            out.append(("groups", f"groups={g} must divide both in_channels={c} and out_channels={p['out_channels']}"))
        if p.get("padding") == "same" and any(s != 1 for s in as_tuple(p["stride"], n)):
            out.append(("padding", "padding='same' needs stride=1; use an integer padding with this stride"))
        return out + window(p, ins)

    return check


def _conv_params(n: int, transposed: bool = False) -> tuple[Param, ...]:
    pad_kind = "size" if transposed else "padding"
    params = [
        Param("out_channels", "int", 32, "Number of filters (output channels).", min=1),
        Param("kernel_size", "size", 3, "Filter size: an integer or one size per spatial dim.", min=1, length=n),
        Param("stride", "size", 1, "Step between filter positions.", min=1, length=n),
        Param("padding", pad_kind, 0, "Zeros added on each side" + ("" if transposed else "; 'same' keeps the size")
              + ".", min=0, length=n),
    ]
    if transposed:
        params.append(Param("output_padding", "size", 0, "Extra size added to one side of the output.",
                            min=0, length=n, advanced=True))
    params += [
        Param("dilation", "size", 1, "Spacing between filter taps.", min=1, length=n, advanced=True),
        Param("groups", "int", 1, "Split channels into groups convolved separately.", min=1, advanced=True),
        Param("bias", "bool", True, "Learn an additive bias per output channel.", advanced=True),
    ]
    if not transposed:
        params.append(Param("padding_mode", "choice", "zeros", "How padding values are made.",
                            choices=("zeros", "reflect", "replicate", "circular"), advanced=True))
    return tuple(params)


def _conv_make(cls: type):
    def make(p: dict, ins: list[InSpec]) -> tuple[type, dict]:
        kwargs = {"in_channels": ins[0].shape[0], **p}
        return cls, kwargs

    return make


def _conv_from_module(n: int):
    def from_module(m: nn.Module) -> dict:
        p = {"out_channels": m.out_channels, "kernel_size": module_size(m.kernel_size, n),
             "stride": module_size(m.stride, n),
             "padding": module_size(m.padding, n) if not isinstance(m.padding, str) else m.padding,
             "dilation": module_size(m.dilation, n), "groups": m.groups, "bias": m.bias is not None}
        if isinstance(m, nn.ConvTranspose2d):
            if m.padding_mode != "zeros":
                raise NoEquivalent(f"ConvTranspose2d with padding_mode={m.padding_mode!r} has no palette equivalent")
            p["output_padding"] = module_size(m.output_padding, n)
        else:
            p["padding_mode"] = m.padding_mode
        return p

    return from_module


def _pool_from_module(n: int, kind: str):
    def from_module(m: nn.Module) -> dict:
        name = type(m).__name__
        if kind == "max":
            if m.return_indices:
                raise NoEquivalent(f"{name} with return_indices=True has no palette equivalent")
            return {"kernel_size": module_size(m.kernel_size, n),
                    "stride": None if m.stride == m.kernel_size else module_size(m.stride, n),
                    "padding": module_size(m.padding, n), "dilation": module_size(m.dilation, n),
                    "ceil_mode": m.ceil_mode}
        if getattr(m, "divisor_override", None) is not None:
            raise NoEquivalent(f"{name} with divisor_override has no palette equivalent")
        k, s = module_size(m.kernel_size, n), module_size(m.stride, n)
        return {"kernel_size": k, "stride": None if s == k else s, "padding": module_size(m.padding, n),
                "ceil_mode": m.ceil_mode, "count_include_pad": m.count_include_pad}

    return from_module


def _pool_from_call(n: int, kind: str):
    """Params of F.max_pool{n}d / F.avg_pool{n}d(x, kernel_size, stride, padding, ...)."""
    name = f"torch.nn.functional.{kind}_pool{n}d"

    def from_call(args: tuple, kwargs: dict) -> dict:
        k = module_size(call_arg(args, kwargs, 1, "kernel_size", None), n)
        stride = call_arg(args, kwargs, 2, "stride", None)
        s = None if stride in (None, [], ()) else module_size(stride, n)
        p = {"kernel_size": k, "stride": None if s == k else s,
             "padding": module_size(call_arg(args, kwargs, 3, "padding", 0), n)}
        if kind == "max":
            p["dilation"] = module_size(call_arg(args, kwargs, 4, "dilation", 1), n)
            p["ceil_mode"] = call_arg(args, kwargs, 5, "ceil_mode", False)
            if call_arg(args, kwargs, 6, "return_indices", False):
                raise NoEquivalent(f"{name} with return_indices=True has no palette equivalent")
        else:
            p["ceil_mode"] = call_arg(args, kwargs, 4, "ceil_mode", False)
            p["count_include_pad"] = call_arg(args, kwargs, 5, "count_include_pad", True)
            if call_arg(args, kwargs, 6, "divisor_override", None) is not None:
                raise NoEquivalent(f"{name} with divisor_override has no palette equivalent")
        return p

    return from_call


def _adaptive_from_module(n: int):
    def from_module(m: nn.Module) -> dict:
        size = module_size(m.output_size, n)
        if size is None or (isinstance(size, list) and None in size):
            raise NoEquivalent(f"{type(m).__name__} with output_size={m.output_size!r} (None keeps a size) has no "
                               "palette equivalent")
        return {"output_size": size}

    return from_module


def _conv_label(p: dict) -> str:
    s = f"{p['out_channels']}@{fmt_size(p['kernel_size'])}"
    if p["stride"] != 1:
        s += f" /{p['stride'] if not isinstance(p['stride'], list) else fmt_size(p['stride'])}"
    if p["padding"] not in (0, "valid"):
        s += f" pad {p['padding'] if not isinstance(p['padding'], list) else fmt_size(p['padding'])}"
    return s


for _cls, _n, _layout, _ex in ((nn.Conv1d, 1, "(C, L)", (3, 32)), (nn.Conv2d, 2, "(C, H, W)", (3, 16, 16))):
    register(LayerSpec(
        type=_cls.__name__, category="convolution",
        doc=f"{_n}-D convolution over a {_layout} input (in_channels is inferred).",
        params=_conv_params(_n), make=_conv_make(_cls), ranks=(_n + 1,), expects=_layout,
        check=_conv_checks(_n), label=_conv_label, example=(InSpec(_ex, "float32"),),
        module_types=(_cls,), from_module=_conv_from_module(_n), shape_rule=rules.conv(_n),
        size_param=("out_channels", 0), gradcam=_n == 2,
    ))

register(LayerSpec(
    type="ConvTranspose2d", category="convolution",
    doc="2-D transposed convolution (learned upsampling) over a (C, H, W) input.",
    params=_conv_params(2, transposed=True), make=_conv_make(nn.ConvTranspose2d), ranks=(3,), expects="(C, H, W)",
    check=_conv_checks(2, transposed=True), label=_conv_label, example=(InSpec((8, 7, 7), "float32"),),
    module_types=(nn.ConvTranspose2d,), from_module=_conv_from_module(2), shape_rule=rules.conv_transpose(2),
    size_param=("out_channels", 0),
))


def _pool_params(n: int, kind: str) -> tuple[Param, ...]:
    params = [
        Param("kernel_size", "size", 2, "Window size.", min=1, length=n),
        Param("stride", "size", None, "Step between windows; empty means equal to kernel_size.", min=1,
              length=n, optional=True),
        Param("padding", "size", 0, "Padding on each side (at most half the kernel).", min=0, length=n),
    ]
    if kind == "max":
        params.append(Param("dilation", "size", 1, "Spacing between window taps.", min=1, length=n, advanced=True))
    params.append(Param("ceil_mode", "bool", False, "Round the output size up instead of down.", advanced=True))
    if kind == "avg":
        params.append(Param("count_include_pad", "bool", True, "Count padded zeros in the average.", advanced=True))
    return tuple(params)


def _pool_check(n: int):
    window = _window_check(n)

    def check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
        k, pad = as_tuple(p["kernel_size"], n), as_tuple(p["padding"], n)
        if any(pp * 2 > kk for pp, kk in zip(pad, k, strict=False)):
            return [("padding", f"padding={p['padding']} is more than half of kernel_size={p['kernel_size']}; "
                                "use padding <= kernel_size // 2")]
        return window(p, ins)

    return check


for _cls, _fn, _n, _kind, _layout, _ex in (
        (nn.MaxPool1d, F.max_pool1d, 1, "max", "(C, L)", (3, 32)),
        (nn.MaxPool2d, F.max_pool2d, 2, "max", "(C, H, W)", (3, 16, 16)),
        (nn.AvgPool1d, F.avg_pool1d, 1, "avg", "(C, L)", (3, 32)),
        (nn.AvgPool2d, F.avg_pool2d, 2, "avg", "(C, H, W)", (3, 16, 16))):
    register(LayerSpec(
        type=_cls.__name__, category="pooling",
        doc=f"{'Max' if _kind == 'max' else 'Average'} pooling over a {_layout} input.",
        params=_pool_params(_n, _kind), make=lambda p, ins, _cls=_cls: (_cls, dict(p)),
        ranks=(_n + 1,), expects=_layout, check=_pool_check(_n),
        label=(lambda p, _n=_n: "x".join([str(k) for k in as_tuple(p["kernel_size"], _n)])),
        example=(InSpec(_ex, "float32"),), module_types=(_cls,), from_module=_pool_from_module(_n, _kind),
        functions=(_fn,), from_call=_pool_from_call(_n, _kind), shape_rule=rules.pool(_n, _kind),
    ))

for _cls, _fn, _n, _layout, _ex in ((nn.AdaptiveAvgPool1d, F.adaptive_avg_pool1d, 1, "(C, L)", (3, 32)),
                                    (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d, 2, "(C, H, W)", (3, 16, 16))):
    register(LayerSpec(
        type=_cls.__name__, category="pooling",
        doc=f"Average pooling to a fixed output size over a {_layout} input (1 gives global pooling).",
        params=(Param("output_size", "size", 1, "Output size per spatial dim.", min=1, length=_n),),
        make=lambda p, ins, _cls=_cls: (_cls, dict(p)),
        ranks=(_n + 1,), expects=_layout,
        label=(lambda p, _n=_n: "->" + "x".join(str(k) for k in as_tuple(p["output_size"], _n))),
        example=(InSpec(_ex, "float32"),), module_types=(_cls,), from_module=_adaptive_from_module(_n),
        functions=(_fn,), shape_rule=rules.adaptive(_n),
        from_call=lambda args, kwargs, _n=_n: {
            "output_size": module_size(call_arg(args, kwargs, 1, "output_size", 1), _n)},
    ))
