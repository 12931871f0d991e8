"""Palette: normalization and activation layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from studio.layers import rules
from studio.layers.base import (
    InSpec,
    LayerSpec,
    NoEquivalent,
    Param,
    call_arg,
    module_dim,
    read_arg,
    register,
    sample_dim,
)

_EPS = Param("eps", "float", 1e-5, "Added to the variance for numerical stability.", min=0.0, advanced=True)


def _bn_from_module(m: nn.Module) -> dict:
    if m.momentum is None:
        raise NoEquivalent(f"{type(m).__name__} with momentum=None (cumulative average) has no palette equivalent")
    return {"eps": m.eps, "momentum": m.momentum, "affine": m.affine, "track_running_stats": m.track_running_stats}


def _layer_norm_from_module(m: nn.Module) -> dict:
    if len(m.normalized_shape) != 1:
        raise NoEquivalent(f"LayerNorm over {tuple(m.normalized_shape)} normalizes more than the last dimension; "
                           "the palette's LayerNorm normalizes the last one")
    return {"eps": m.eps, "elementwise_affine": m.elementwise_affine,
            "bias": getattr(m, "bias", None) is not None or not m.elementwise_affine}


def _softmax_from_module(m: nn.Module) -> dict:
    if m.dim is None:
        raise NoEquivalent("Softmax without dim has no palette equivalent; set dim")
    return {"dim": module_dim(m.dim, "Softmax")}


def _softmax_from_call(args: tuple, kwargs: dict) -> dict:
    dim = call_arg(args, kwargs, 1, "dim", None)
    if dim is None:
        raise NoEquivalent("softmax without dim has no palette equivalent; pass dim")
    return {"dim": module_dim(dim, "softmax")}


def _bn(cls: type, ranks: tuple[int, ...], layout: str, example: tuple[int, ...],
        keeps_shape: bool = False) -> LayerSpec:
    return LayerSpec(
        type=cls.__name__, category="normalization",
        doc=f"Batch normalization over the channels of a {layout} input (num_features is inferred).",
        params=(
            _EPS,
            Param("momentum", "float", 0.1, "Weight of the newest batch in the running statistics.",
                  min=0.0, max=1.0, advanced=True),
            Param("affine", "bool", True, "Learn a per-channel scale and shift.", advanced=True),
            Param("track_running_stats", "bool", True, "Keep running mean/variance for evaluation.",
                  advanced=True),
        ),
        make=lambda p, ins: (cls, {"num_features": ins[0].shape[0], **p}),
        ranks=ranks, expects=layout, example=(InSpec(example, "float32"),),
        module_types=(cls,), from_module=_bn_from_module, shape_rule=rules.batch_norm, keeps_shape=keeps_shape,
    )


register(_bn(nn.BatchNorm1d, (1, 2), "(C,) or (C, L)", (8, 20), keeps_shape=True))
register(_bn(nn.BatchNorm2d, (3,), "(C, H, W)", (4, 8, 8)))

register(LayerSpec(
    type="LayerNorm", category="normalization",
    doc="Layer normalization over the last dimension (normalized_shape is inferred).",
    params=(
        _EPS,
        Param("elementwise_affine", "bool", True, "Learn a scale and shift per feature.", advanced=True),
        Param("bias", "bool", True, "Learn the shift (with elementwise_affine).", advanced=True),
    ),
    make=lambda p, ins: (nn.LayerNorm, {"normalized_shape": ins[0].shape[-1], **p}),
    module_types=(nn.LayerNorm,), from_module=_layer_norm_from_module, shape_rule=rules.layer_norm,
    keeps_shape=True,
))


def _group_check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
    c = ins[0].shape[0]
    if c % p["num_groups"]:
        divisors = [d for d in range(1, c + 1) if c % d == 0]
        return [("num_groups", f"num_groups={p['num_groups']} does not divide the {c} channels; "
                               f"use one of {divisors[:12]}")]
    return []


register(LayerSpec(
    type="GroupNorm", category="normalization",
    doc="Group normalization over channel groups of a (C, ...) input (num_channels is inferred).",
    params=(
        Param("num_groups", "int", 1, "Number of channel groups; must divide the channels.", min=1),
        _EPS,
        Param("affine", "bool", True, "Learn a per-channel scale and shift.", advanced=True),
    ),
    make=lambda p, ins: (nn.GroupNorm, {"num_channels": ins[0].shape[0], **p}),
    ranks=(2, 3, 4), expects="(C, ...)", check=_group_check,
    label=lambda p: f"{p['num_groups']} groups",
    example=(InSpec((8, 6, 6), "float32"),),
    module_types=(nn.GroupNorm,),
    from_module=lambda m: {"num_groups": m.num_groups, "eps": m.eps, "affine": m.affine},
    shape_rule=rules.group_norm,
))


def _activation(cls: type, doc: str, params: tuple[Param, ...] = (), label=None, *,
                functions: tuple = (), methods: tuple[str, ...] = (), from_call=None,
                dead_units: bool = False) -> LayerSpec:
    return LayerSpec(type=cls.__name__, category="activation", doc=doc, params=params,
                     make=lambda p, ins: (cls, dict(p)), label=label, example=(InSpec((4, 6, 6), "float32"),),
                     elementwise=True, keeps_shape=True, module_types=(cls,),
                     from_module=lambda m: {p.name: getattr(m, p.name) for p in params},
                     functions=functions, methods=methods, from_call=from_call, dead_units=dead_units)


register(_activation(nn.ReLU, "max(0, x), element-wise.", functions=(F.relu, torch.relu), methods=("relu",),
                     dead_units=True))
register(_activation(nn.LeakyReLU, "x for x >= 0, negative_slope * x otherwise.",
                     (Param("negative_slope", "float", 0.01, "Slope for negative inputs.", min=0.0),),
                     functions=(F.leaky_relu,), from_call=read_arg("negative_slope", 1, 0.01)))
register(_activation(nn.GELU, "Gaussian error linear unit (as in Transformers).",
                     (Param("approximate", "choice", "none", "Exact or tanh approximation.",
                            choices=("none", "tanh"), advanced=True),),
                     functions=(F.gelu,),  # approximate is keyword-only
                     from_call=lambda args, kwargs: {"approximate": kwargs.get("approximate", "none")}))
register(_activation(nn.SiLU, "x * sigmoid(x) (swish).", functions=(F.silu,)))
register(_activation(nn.ELU, "Exponential linear unit.",
                     (Param("alpha", "float", 1.0, "Value approached for large negative inputs.", min=0.0),),
                     functions=(F.elu,), from_call=read_arg("alpha", 1, 1.0)))
register(_activation(nn.Tanh, "Hyperbolic tangent, element-wise.", functions=(torch.tanh, F.tanh),
                     methods=("tanh",)))
register(_activation(nn.Sigmoid, "Logistic sigmoid, element-wise.", functions=(torch.sigmoid, F.sigmoid),
                     methods=("sigmoid",)))


def _softmax_check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
    rank = len(ins[0].shape)
    if not -rank <= p["dim"] < rank:
        return [("dim", f"dim={p['dim']} is out of range for a per-sample input of rank {rank}; "
                        f"use a value in [{-rank}, {rank - 1}]")]
    return []


register(LayerSpec(
    type="Softmax", category="activation",
    doc="Normalize to probabilities along a per-sample dim (not before CrossEntropyLoss: it expects logits).",
    params=(Param("dim", "int", -1, "Per-sample dim to normalize over."),),
    make=lambda p, ins: (nn.Softmax, {"dim": sample_dim(p["dim"])}),
    check=_softmax_check, label=lambda p: f"dim={p['dim']}",
    module_types=(nn.Softmax,), from_module=_softmax_from_module,
    functions=(F.softmax, torch.softmax), methods=("softmax",), from_call=_softmax_from_call,
    shape_rule=rules.softmax, keeps_shape=True, outputs_probabilities=True,
))
