"""Palette: input, core, merge and sequence-pooling layers."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from studio.layers import modules as m
from studio.layers import rules
from studio.layers.base import InSpec, LayerSpec, Param, fmt_shape, module_dim, read_arg, register, sample_dim

register(LayerSpec(
    type="Input", category="input",
    doc="The model's input: one sample's shape (without the batch dimension) and dtype.",
    params=(
        Param("shape", "ints", [1, 28, 28], "Per-sample shape: images (C, H, W), sequences (T, F), token ids (T,).",
              min=1, max_product=2**24),
        Param("dtype", "choice", "float32", "float32 for features and images, int64 for token ids.",
              choices=("float32", "int64")),
    ),
    make=None, inputs=(0, 0), dtype="any",
    label=lambda p: fmt_shape(p["shape"]),
    example=(),
))

register(LayerSpec(
    type="Linear", category="core",
    doc="Fully connected layer y = xW^T + b on the last dimension (in_features is inferred).",
    params=(
        Param("out_features", "int", 64, "Size of each output sample's last dimension.", min=1),
        Param("bias", "bool", True, "Learn an additive bias.", advanced=True),
    ),
    make=lambda p, ins: (nn.Linear, {"in_features": ins[0].shape[-1], "out_features": p["out_features"],
                                     "bias": p["bias"]}),
    label=lambda p: str(p["out_features"]),
    module_types=(nn.Linear,), from_module=lambda m: {"out_features": m.out_features, "bias": m.bias is not None},
    shape_rule=rules.linear, size_param=("out_features", -1), dense=True,
))


def _flatten_check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
    rank = len(ins[0].shape)
    out = []
    for name in ("start_dim", "end_dim"):
        d = p[name]
        if not -rank <= d < rank:
            out.append((name, f"{name}={d} is out of range for a per-sample input of rank {rank} "
                              f"{fmt_shape(ins[0].shape)}; use a value in [{-rank}, {rank - 1}]"))
    return out


register(LayerSpec(
    type="Flatten", category="core",
    doc="Flatten per-sample dims start_dim..end_dim into one (the batch dimension is kept).",
    params=(
        Param("start_dim", "int", 0, "First per-sample dim to flatten (0 is the first after the batch)."),
        Param("end_dim", "int", -1, "Last per-sample dim to flatten.", advanced=True),
    ),
    make=lambda p, ins: (nn.Flatten, {"start_dim": sample_dim(p["start_dim"]), "end_dim": sample_dim(p["end_dim"])}),
    check=_flatten_check,
    example=(InSpec((4, 5, 6), "float32"),),
    module_types=(nn.Flatten,),
    from_module=lambda m: {"start_dim": module_dim(m.start_dim, "Flatten"),
                           "end_dim": module_dim(m.end_dim, "Flatten")},
    shape_rule=rules.flatten,
))


def _reshape_check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
    shape, n = p["shape"], 1
    for s in ins[0].shape:
        n *= s
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        return [("shape", f"shape={shape} may hold positive sizes and at most one -1")]
    known = 1
    for s in shape:
        known *= s if s != -1 else 1
    if (-1 in shape and n % known) or (-1 not in shape and known != n):
        return [("shape", f"cannot reshape {fmt_shape(ins[0].shape)} ({n} values) to {fmt_shape(shape)}; "
                          f"the sizes must multiply to {n} (use -1 for one inferred size)")]
    return []


register(LayerSpec(
    type="Reshape", category="core",
    doc="Reshape each sample to `shape` (per-sample; one size may be -1).",
    params=(Param("shape", "ints", [-1], "Target per-sample shape, e.g. [1, 28, 28]; one entry may be -1.", min=-1),),
    make=lambda p, ins: (m.Reshape, {"shape": list(p["shape"])}),
    check=_reshape_check,
    label=lambda p: fmt_shape(p["shape"]),
    module_types=(m.Reshape,), from_module=lambda mod: {"shape": list(mod.shape)},
    shape_rule=rules.reshape,
))


def _permute_check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
    rank = len(ins[0].shape)
    if sorted(p["dims"]) != list(range(rank)):
        return [("dims", f"dims={p['dims']} is not a permutation of the per-sample dims {list(range(rank))} "
                         f"of input {fmt_shape(ins[0].shape)}")]
    return []


register(LayerSpec(
    type="Permute", category="core",
    doc="Reorder the per-sample dims, e.g. dims=[1, 0] turns (C, L) into (L, C).",
    params=(Param("dims", "ints", [1, 0], "A permutation of the per-sample dims (the batch is never named)."),),
    make=lambda p, ins: (m.Permute, {"dims": list(p["dims"])}),
    check=_permute_check,
    label=lambda p: str(p["dims"]),
    module_types=(m.Permute,), from_module=lambda mod: {"dims": list(mod.dims)},
    example=(InSpec((4, 6), "float32"),), shape_rule=rules.permute,
))

register(LayerSpec(
    type="Dropout", category="core",
    doc="Zero each element with probability p during training (identity at evaluation).",
    params=(Param("p", "float", 0.5, "Probability of an element being zeroed.", min=0.0, max=1.0),),
    make=lambda p, ins: (nn.Dropout, {"p": float(p["p"])}),
    label=lambda p: str(p["p"]),
    dtype="float", elementwise=True, keeps_shape=True,
    module_types=(nn.Dropout,), from_module=lambda mod: {"p": mod.p},
    functions=(F.dropout,), from_call=read_arg("p", 1, 0.5),
))

register(LayerSpec(
    type="Identity", category="core",
    doc="Pass the input through unchanged (a placeholder for a skip path).",
    make=lambda p, ins: (nn.Identity, {}), dtype="any", elementwise=True, keeps_shape=True,
    module_types=(nn.Identity,), from_module=lambda mod: {},
))


def _same_shapes(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
    shapes = [i.shape for i in ins]
    if len(set(shapes)) > 1:
        listed = " and ".join(fmt_shape(s) for s in shapes)
        return [(None, f"inputs have different shapes {listed}; all inputs must have one shape "
                       "(add a Linear or a 1x1 Conv2d on one branch to match them)")]
    return []


for _type, _fn, _doc in (
        ("Add", m.add, "Element-wise sum of two or more inputs of the same shape (residual connections)."),
        ("Multiply", m.multiply, "Element-wise product of two or more inputs of the same shape (gating).")):
    register(LayerSpec(
        type=_type, category="merge", doc=_doc,
        function=lambda p, _fn=_fn: (_fn, {}),
        inputs=(2, None), check=_same_shapes,
        example=(InSpec((8,), "float32"), InSpec((8,), "float32")), shape_rule=rules.merge,
    ))


def _concat_check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
    ranks = {len(i.shape) for i in ins}
    if len(ranks) > 1:
        return [(None, "inputs have different ranks " + " and ".join(fmt_shape(i.shape) for i in ins)
                 + "; Concat needs inputs of one rank")]
    rank = ranks.pop()
    d = p["dim"]
    if not -rank <= d < rank:
        return [("dim", f"dim={d} is out of range for per-sample inputs of rank {rank}; use a value in "
                        f"[{-rank}, {rank - 1}]")]
    d %= rank
    rest = {tuple(s for j, s in enumerate(i.shape) if j != d) for i in ins}
    if len(rest) > 1:
        return [(None, f"inputs {' and '.join(fmt_shape(i.shape) for i in ins)} differ outside dim {d}; "
                       f"Concat along dim={d} needs every other size equal")]
    return []


register(LayerSpec(
    type="Concat", category="merge",
    doc="Concatenate inputs along a per-sample dim, in port order.",
    params=(Param("dim", "int", 0, "Per-sample dim to join along (0: channels/features of the first dim)."),),
    function=lambda p: (m.concat, {"dim": sample_dim(p["dim"])}),
    from_call=lambda args, kwargs: {"dim": module_dim(kwargs["dim"], "concat")},
    inputs=(2, None), check=_concat_check, shape_rule=rules.concat,
    label=lambda p: f"dim={p['dim']}",
    example=(InSpec((4, 8), "float32"), InSpec((4, 8), "float32")),
))

register(LayerSpec(
    type="SequencePool", category="sequence",
    doc="Pool a sequence (T, F) to (F,): mean, max, last or first step.",
    params=(Param("mode", "choice", "mean", "How to reduce the time dimension.",
                  choices=("mean", "max", "last", "first")),),
    make=lambda p, ins: (m.SequencePool, {"mode": p["mode"]}),
    ranks=(2,), expects="(T, F)",
    label=lambda p: p["mode"],
    example=(InSpec((8, 16), "float32"),),
    module_types=(m.SequencePool,), from_module=lambda mod: {"mode": mod.mode},
    shape_rule=rules.sequence_pool,
))
