"""Closed-form output shape, parameter count, FLOPs and buffer size of the common layers.

A spec names its formula in `shape_rule` (`shape_rule=rules.conv(2)`); analysis asks it first and runs
a layer on the `meta` device only where no rule answers (attention layers, unusual settings, and every
input PyTorch would reject, so that its own message reaches the user). Running on `meta` costs 0.3 to
30 ms a layer (PyTorch's meta kernels are partly Python references, an LSTM's are run step by step) and
its reference kernels import `torch._dynamo` (1.2-2 s of CPU) on first use; these rules cost microseconds.

PyTorch stays the source of truth: each rule is PyTorch's public output-size formula (the ones the
`torch.nn` docs print) and FlopCounterMode's counting (a multiply-add is 2 FLOPs; only matrix products
and convolutions are counted, biases and element-wise work are not), and tests/test_layer_rules.py
compares every rule with the meta-device run at many random settings.

    >>> from studio.layers import InSpec
    >>> closed_form("Conv2d", {"out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1, "dilation": 1,
    ...                        "groups": 1, "bias": True, "padding_mode": "zeros"}, (InSpec((3, 32, 32), "float32"),))
    ((8, 16, 16), 'float32', 224, 110592, 0)
"""

from __future__ import annotations

import math

from studio.layers.base import REGISTRY, InSpec, Result, Rule, as_tuple


def closed_form(type_name: str, p: dict, ins: tuple[InSpec, ...]) -> Result | None:
    """The layer's figures for resolved params `p` and inputs `ins`, or None: ask PyTorch on `meta`."""
    spec = REGISTRY.get(type_name)
    rule = spec.shape_rule if spec is not None else None
    return rule(p, ins) if rule is not None else None


def _prod(xs) -> int:
    return math.prod(xs)


def _same(x: InSpec) -> Result:
    return x.shape, x.dtype, 0, 0, 0


# ---- convolution and pooling ------------------------------------------------------------------------

def conv(n: int) -> Rule:
    def rule(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
        c, *spatial = ins[0].shape
        out_c, g = p["out_channels"], p["groups"]
        k, s, d = as_tuple(p["kernel_size"], n), as_tuple(p["stride"], n), as_tuple(p["dilation"], n)
        if p["padding_mode"] != "zeros" or c % g or out_c % g:
            return None  # reflect/replicate/circular have their own limits on the padding: PyTorch decides
        if p["padding"] == "same":
            if any(x != 1 for x in s):
                return None
            out = tuple(spatial)
        else:
            pad = (0,) * n if p["padding"] == "valid" else as_tuple(p["padding"], n)
            out = tuple((i + 2 * pp - dd * (kk - 1) - 1) // ss + 1
                        for i, pp, dd, kk, ss in zip(spatial, pad, d, k, s, strict=True))
        if min(out) < 1:
            return None
        weights = out_c * (c // g) * _prod(k)
        params = weights + (out_c if p["bias"] else 0)
        return (out_c, *out), "float32", params, 2 * _prod(out) * weights, 0

    return rule


def conv_transpose(n: int) -> Rule:
    def rule(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
        c, *spatial = ins[0].shape
        out_c, g = p["out_channels"], p["groups"]
        k, s, d = as_tuple(p["kernel_size"], n), as_tuple(p["stride"], n), as_tuple(p["dilation"], n)
        pad, opad = as_tuple(p["padding"], n), as_tuple(p["output_padding"], n)
        if c % g or out_c % g or any(op >= max(ss, dd) for op, ss, dd in zip(opad, s, d, strict=True)):
            return None
        out = tuple((i - 1) * ss - 2 * pp + dd * (kk - 1) + op + 1
                    for i, ss, pp, dd, kk, op in zip(spatial, s, pad, d, k, opad, strict=True))
        if min(out) < 1:
            return None
        weights = c * (out_c // g) * _prod(k)
        params = weights + (out_c if p["bias"] else 0)
        return (out_c, *out), "float32", params, 2 * _prod(spatial) * weights, 0

    return rule


def _pool_size(i: int, k: int, s: int, pad: int, d: int, ceil: bool) -> int:
    """PyTorch's pooling_output_shape (aten/src/ATen/native/Pool.h)."""
    out = (i + 2 * pad - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= i + pad:
        out -= 1
    return out


def pool(n: int, kind: str) -> Rule:
    def rule(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
        c, *spatial = ins[0].shape
        k = as_tuple(p["kernel_size"], n)
        s = k if p["stride"] is None else as_tuple(p["stride"], n)
        pad = as_tuple(p["padding"], n)
        d = as_tuple(p["dilation"], n) if kind == "max" else (1,) * n
        if any(pp * 2 > kk for pp, kk in zip(pad, k, strict=True)):
            return None
        out = tuple(_pool_size(i, kk, ss, pp, dd, p["ceil_mode"])
                    for i, kk, ss, pp, dd in zip(spatial, k, s, pad, d, strict=True))
        if min(out) < 1:
            return None
        return (c, *out), "float32", 0, 0, 0

    return rule


def adaptive(n: int) -> Rule:
    def rule(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
        return (ins[0].shape[0], *as_tuple(p["output_size"], n)), "float32", 0, 0, 0

    return rule


# ---- dense, normalization, recurrent, embedding --------------------------------------------------------

def linear(p: dict, ins: tuple[InSpec, ...]) -> Result:
    *lead, f = ins[0].shape
    out = p["out_features"]
    return (*lead, out), "float32", f * out + (out if p["bias"] else 0), 2 * _prod(lead) * f * out, 0


def batch_norm(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
    c = ins[0].shape[0]
    if not p["track_running_stats"] and _prod(ins[0].shape[1:]) == 1:
        return None  # batch statistics of one value per channel: PyTorch refuses the one-sample run
    return ins[0].shape, "float32", 2 * c if p["affine"] else 0, 0, 2 * c + 1 if p["track_running_stats"] else 0


def layer_norm(p: dict, ins: tuple[InSpec, ...]) -> Result:
    f = ins[0].shape[-1]
    params = (f + (f if p["bias"] else 0)) if p["elementwise_affine"] else 0
    return ins[0].shape, "float32", params, 0, 0


def group_norm(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
    c = ins[0].shape[0]
    if c % p["num_groups"]:
        return None
    return ins[0].shape, "float32", 2 * c if p["affine"] else 0, 0, 0


def recurrent(gates: int) -> Rule:
    """RNN (1 gate), GRU (3), LSTM (4): per layer and direction, x @ W_ih and h @ W_hh at every step."""

    def rule(p: dict, ins: tuple[InSpec, ...]) -> Result:
        t, f = ins[0].shape
        h, dirs = p["hidden_size"], 2 if p["bidirectional"] else 1
        params = flops = 0
        for layer in range(p["num_layers"]):
            size_in = f if layer == 0 else h * dirs
            weights = gates * h * (size_in + h)
            params += dirs * (weights + (2 * gates * h if p["bias"] else 0))
            flops += dirs * t * 2 * weights
        shape = (t, h * dirs) if p["return_sequences"] else (h * dirs,)
        return shape, "float32", params, flops, 0

    return rule


def embedding(p: dict, ins: tuple[InSpec, ...]) -> Result:
    d = p["embedding_dim"]
    return (*ins[0].shape, d), "float32", p["num_embeddings"] * d, 0, 0


def positional(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
    t, f = ins[0].shape
    if t > p["max_len"]:
        return None
    table = p["max_len"] * f
    learned = p["kind"] == "learned"
    return ins[0].shape, ins[0].dtype, table if learned else 0, 0, 0 if learned else table


# ---- shape-only layers and merges ----------------------------------------------------------------------

def flatten(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
    shape = ins[0].shape
    rank = len(shape)
    if not (-rank <= p["start_dim"] < rank and -rank <= p["end_dim"] < rank):
        return None
    a, b = p["start_dim"] % rank, p["end_dim"] % rank
    if a > b:
        return None
    return (*shape[:a], _prod(shape[a:b + 1]), *shape[b + 1:]), ins[0].dtype, 0, 0, 0


def reshape(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
    target, n = list(p["shape"]), _prod(ins[0].shape)
    known = _prod(s for s in target if s != -1)
    if target.count(-1) > 1 or any(s == 0 or s < -1 for s in target) or known == 0 or n % known:
        return None
    shape = tuple(n // known if s == -1 else s for s in target)
    return (shape, ins[0].dtype, 0, 0, 0) if _prod(shape) == n else None


def permute(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
    dims, shape = p["dims"], ins[0].shape
    if sorted(dims) != list(range(len(shape))):
        return None
    return tuple(shape[d] for d in dims), ins[0].dtype, 0, 0, 0


def merge(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
    if len({(i.shape, i.dtype) for i in ins}) > 1:
        return None  # broadcasting or type promotion: PyTorch decides
    return _same(ins[0])


def concat(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
    rank = len(ins[0].shape)
    if len({i.dtype for i in ins}) > 1 or any(len(i.shape) != rank for i in ins) or not -rank <= p["dim"] < rank:
        return None
    d = p["dim"] % rank
    if len({i.shape[:d] + i.shape[d + 1:] for i in ins}) > 1:
        return None
    shape = list(ins[0].shape)
    shape[d] = sum(i.shape[d] for i in ins)
    return tuple(shape), ins[0].dtype, 0, 0, 0


def softmax(p: dict, ins: tuple[InSpec, ...]) -> Result | None:
    rank = len(ins[0].shape)
    return _same(ins[0]) if -rank <= p["dim"] < rank else None


def sequence_pool(p: dict, ins: tuple[InSpec, ...]) -> Result:
    return ins[0].shape[1:], ins[0].dtype, 0, 0, 0
