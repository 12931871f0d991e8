"""What a layer spec is: a params schema, a constructor, input rules and a one-line doc.

One spec per layer type; the generic form, the canvas label, analysis, the compiler and code export
all read it. Adding a layer means adding one `register(LayerSpec(...))` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

PARAM_KINDS = ("int", "float", "bool", "choice", "ints", "size", "padding", "str")
MAX_INTS_ITEMS = 8  # entries of an "ints" param (a shape or a permutation of at most 8 dims)
MAX_INTS_VALUE = 2**31 - 1  # any entry of an "ints" param: larger is no tensor size this studio can hold


@dataclass(frozen=True)
class Param:
    """One constructor keyword: its kind, default, bounds or choices, help, and whether it is advanced."""

    name: str
    kind: str  # one of PARAM_KINDS; "size" is an int or a list of `length` ints (kernel_size, stride)
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    advanced: bool = False  # shown behind the inspector's "advanced" toggle
    optional: bool = False  # None is allowed (e.g. a pool's stride, which then equals kernel_size)
    length: int = 1  # for "size"/"padding": how many spatial dims a list must have
    max_product: int | None = None  # for "ints": the most the entries may multiply to (a shape's values)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "default": self.default, "help": self.help,
            "min": self.min, "max": self.max, "choices": list(self.choices),
            "advanced": self.advanced, "optional": self.optional, "length": self.length,
        }

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable for this param, or None. Worded as the tail of a message."""
        if value is None:
            return None if self.optional else f"{self.name} must be set; it cannot be null"
        k = self.kind
        if k == "bool":
            return None if isinstance(value, bool) else f"{self.name} must be true or false, got {value!r}"
        if k == "int":
            if not _is_int(value):
                return f"{self.name} must be an integer, got {_show(value)}"
            return self._bounds(value)
        if k == "float":
            if not (_is_int(value) or isinstance(value, float)):
                return f"{self.name} must be a number, got {_show(value)}"
            if value != value or value in (float("inf"), float("-inf")):
                return f"{self.name} must be a finite number, got {value!r}"
            return self._bounds(value)
        if k in ("choice", "str"):
            if not isinstance(value, str):
                return f"{self.name} must be a string, got {_show(value)}"
            if k == "choice" and value not in self.choices:
                return f"{self.name}={value!r} is not one of {list(self.choices)}"
            return None
        if k == "ints":
            if not isinstance(value, list) or not value or not all(_is_int(v) for v in value):
                return f"{self.name} must be a non-empty list of integers, got {_show(value)}"
            return self._ints_bounds(value)
        if k in ("size", "padding"):
            if k == "padding" and isinstance(value, str):
                return None if value in ("same", "valid") else (
                    f"padding={value!r} is not valid; use an integer, a list of {self.length}, 'same' or 'valid'")
            if _is_int(value):
                return self._bounds(value)
            if (isinstance(value, list) and len(value) == self.length and all(_is_int(v) for v in value)):
                for v in value:
                    p = self._bounds(v)
                    if p:
                        return p
                return None
            return f"{self.name} must be an integer or a list of {self.length} integers, got {_show(value)}"
        raise ValueError(f"unknown param kind {k!r}")

    def _ints_bounds(self, value: list[int]) -> str | None:
        if len(value) > MAX_INTS_ITEMS:
            return f"{self.name} has {len(value)} entries; at most {MAX_INTS_ITEMS} are allowed"
        for v in value:
            if abs(v) > MAX_INTS_VALUE:
                return f"{self.name}={_show(value)} has the entry {v:,}; entries are at most {MAX_INTS_VALUE:,}"
            if self.min is not None and v < self.min:
                return f"{self.name}={_show(value)} has the entry {v}, below the minimum {_num(self.min)}"
            if self.max is not None and v > self.max:
                return f"{self.name}={_show(value)} has the entry {v}, above the maximum {_num(self.max)}"
        if self.max_product is not None:
            product = 1
            for v in value:
                product *= v
            if product > self.max_product:
                return (f"{self.name}={_show(value)} holds {product:,} values per sample, more than the "
                        f"{self.max_product:,} allowed; use smaller sizes")
        return None

    def _bounds(self, value: float) -> str | None:
        if self.min is not None and value < self.min:
            return f"{self.name}={value!r} is below the minimum {_num(self.min)}"
        if self.max is not None and value > self.max:
            return f"{self.name}={value!r} is above the maximum {_num(self.max)}"
        return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _show(v: Any) -> str:
    s = repr(v)
    return (s[:60] + "...") if len(s) > 60 else s


@dataclass(frozen=True)
class InSpec:
    """What flows along an edge: the per-sample shape and the dtype name."""

    shape: tuple[int, ...]
    dtype: str  # "float32" or "int64"


# make(params, inputs) -> (module class, constructor kwargs). Build and code export both use it.
MakeFn = Callable[[dict, list[InSpec]], tuple[type, dict]]
# function(params) -> (function, keyword args): a weightless node the compiler writes as an fx
# `call_function` (merges: `add(a, b)`, `concat(a, b, dim=1)`) instead of a submodule.
FunctionFn = Callable[[dict], tuple[Callable, dict]]
# from_module(module) -> params: the palette params of a constructed module (import reads models back).
FromModuleFn = Callable[[nn.Module], dict]
# check(params, inputs) -> [(param or None, message)]: precise messages before PyTorch is asked.
CheckFn = Callable[[dict, list[InSpec]], list[tuple[str | None, str]]]


@dataclass(frozen=True)
class LayerSpec:
    type: str
    category: str
    doc: str
    params: tuple[Param, ...] = ()
    make: MakeFn | None = None  # None only for Input
    inputs: tuple[int, int | None] = (1, 1)  # min and max number of inputs (None: unbounded)
    ranks: tuple[int, ...] | None = None  # accepted per-sample ranks; None: any rank >= 1
    expects: str = ""  # the input layout in words, e.g. "(C, H, W)"
    dtype: str = "float"  # "float", "int" or "any": what the input must be
    check: CheckFn | None = None
    label: Callable[[dict], str] | None = None  # key params for the canvas, e.g. "32@3x3"
    attention: bool = False  # reports per-head attention weights
    # Element-wise with no weights: the output has the input's shape and dtype and FlopCounterMode counts
    # nothing, so analysis need not run it on the meta device (where PyTorch's Python reference kernels
    # cost ~0.5 ms a call). tests/test_layers.py checks the claim against PyTorch at several ranks.
    elementwise: bool = False
    example: tuple[InSpec, ...] = field(default=(InSpec((16,), "float32"),))  # an input the defaults accept
    function: FunctionFn | None = None  # set for weightless call_function nodes (then make is None)
    # The inverse of make for modules of `module_types` (fximport's mapping of a traced module).
    from_module: FromModuleFn | None = None
    module_types: tuple[type, ...] = ()

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def resolve(self, params: dict) -> dict:
        """The params with every omitted one at its default (assumes they were checked)."""
        out = {p.name: p.default for p in self.params}
        out.update(params)
        return out

    def build(self, params: dict, inputs: list[InSpec]) -> nn.Module:
        """The node's module; a function node's function wrapped as one (what analysis runs on `meta`)."""
        if self.function is not None:
            fn, kwargs = self.function(self.resolve(params))
            return Function(fn, **kwargs)
        cls, kwargs = self.make(self.resolve(params), inputs)
        return cls(**kwargs)

    def describe(self, params: dict) -> str:
        """Canvas label, e.g. 'Conv2d 32@3x3'."""
        if self.label is None:
            return self.type
        try:
            key = self.label(self.resolve(params))
        except (TypeError, KeyError, ValueError, IndexError):
            key = ""
        return f"{self.type} {key}".strip()


class Function(nn.Module):
    """A function node (`add`, `concat`, ...) as a module, so analysis runs it as it runs the layers.

    The compiler never builds it: there such nodes are `call_function` nodes of the fx graph.
    """

    def __init__(self, fn: Callable, **kwargs):
        super().__init__()
        self.fn = fn
        self.kwargs = kwargs

    def forward(self, *xs):
        return self.fn(*xs, **self.kwargs)


REGISTRY: dict[str, LayerSpec] = {}


def register(spec: LayerSpec) -> LayerSpec:
    if spec.type in REGISTRY:
        raise ValueError(f"layer type {spec.type!r} is registered twice")
    REGISTRY[spec.type] = spec
    return spec


# ---- helpers shared by specs ----------------------------------------------------------------------

def sample_dim(d: int) -> int:
    """A per-sample dim (batch never named) as a batched dim: 0 -> 1, negatives unchanged."""
    return d + 1 if d >= 0 else d


def as_tuple(v: int | list[int], n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, list) else (v,) * n


def fmt_size(v: int | list[int] | None) -> str:
    if v is None:
        return ""
    return "x".join(str(i) for i in v) if isinstance(v, list) else f"{v}x{v}"


class NoEquivalent(ValueError):
    """A constructed module whose settings the palette cannot express; the message says which and why."""


def module_size(v, n: int):
    """A module's kernel/stride/padding attribute as the palette writes it: an int when all dims agree."""
    if isinstance(v, (tuple, list)):
        v = list(v)
        if len(v) == n and all(x == v[0] for x in v):
            return v[0]
        return v
    return v


def module_dim(d: int, what: str) -> int:
    """A module's batched dim index as a per-sample one (negative ones unchanged); dim 0 has none."""
    if d == 0:
        raise NoEquivalent(f"{what} over the batch dimension (dim 0) has no palette equivalent; the batch always "
                           "stays first")
    return d - 1 if d > 0 else d


def spec_for_module(cls: type) -> LayerSpec | None:
    """The spec whose `from_module` reads modules of class `cls`, or None."""
    for spec in REGISTRY.values():
        if cls in spec.module_types:
            return spec
    return None


def fmt_shape(shape: tuple[int, ...] | list[int]) -> str:
    """Shapes print as Python tuples: (32, 26, 26), (10,)."""
    return str(tuple(shape))
