"""What a layer spec is: a params schema, a constructor, input rules, a one-line doc, and the facts
about the layer that the rest of the studio acts on (its shape rule, whether it keeps its input's shape,
the param that sets its size, the torch functions that import as it, ...).

One spec per layer type; the generic form, the canvas label, analysis, the compiler, code export, import,
the dataset checks and the probes all read it, and no module outside studio/layers/ keeps a list of layer
types (tests/test_architecture.py checks). Adding a layer means adding one `register(LayerSpec(...))` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from studio.schema import MAX_INTS_ITEMS, MAX_INTS_VALUE, Field  # noqa: F401  (re-exported)

PARAM_KINDS = ("int", "float", "bool", "choice", "ints", "size", "padding", "str")  # the kinds layers use
# A layer param is a settings field (studio.schema): the same type, validator and text parsing as the
# training settings, so the inspector and the Train form read and check values the one way.
Param = Field


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
# from_call(args, kwargs) -> params: the palette params of a traced call (fximport), the inverse of make for
# a functional form such as F.gelu(x, approximate="tanh"); args[0] is the input.
FromCallFn = Callable[[tuple, dict], dict]
# (per-sample output shape, dtype, trainable params, forward FLOPs for one sample, buffer values)
Result = tuple[tuple[int, ...], str, int, int, int]
# shape_rule(resolved params, inputs) -> Result in closed form, or None where PyTorch must decide on the meta
# device (studio.layers.rules holds the formulas and says why they exist).
Rule = Callable[[dict, tuple[InSpec, ...]], "Result | None"]


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
    # The torch functions and Tensor methods (by name: "relu" for x.relu()) that compute this layer on their
    # first argument; fximport reads a traced call of one, or of `function`'s callable, with `from_call`
    # (None: the layer has no params to read).
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    from_call: FromCallFn | None = None
    shape_rule: Rule | None = None  # closed-form shape, params and FLOPs; None: analysis runs it on `meta`

    # ---- facts that other parts of the studio act on (each says who reads it) ----
    # The output has the input's shape whatever the params, so a wrong output size behind it is set in front
    # of it: studio.data.fit walks back through it to the layer to fix. Element-wise layers set it too.
    keeps_shape: bool = False
    # The param that sets the output's size along one per-sample dim, e.g. ("out_features", -1) or
    # ("out_channels", 0): studio.data.fit names it in the fix for an output that does not fit a dataset.
    size_param: tuple[str, int] | None = None
    # The output is a probability distribution: studio.data.fit warns when a classifier ends in it (the loss
    # expects logits).
    outputs_probabilities: bool = False
    # The param that bounds the token ids it takes (ids < it): studio.data.fit holds it to a dataset's vocabulary.
    vocab_param: str | None = None
    # Fully connected over the last dim: studio.analysis warns when its input has rank >= 3 (a missing Flatten).
    dense: bool = False
    # Outputs 0 for every input <= 0: the probes (studio.training.probes) report its dead units.
    dead_units: bool = False
    # Its output is a (C, H, W) map of learned filters: Grad-CAM's default layer (studio.explain).
    gradcam: bool = False

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


def call_arg(args: tuple, kwargs: dict, i: int, name: str, default):
    """Argument `name` of a traced call: the i-th positional one, else the keyword one, else `default`."""
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def read_arg(name: str, i: int, default) -> FromCallFn:
    """A `from_call` reading one param from a call's i-th argument, or its keyword of the same name."""
    return lambda args, kwargs: {name: call_arg(args, kwargs, i, name, default)}


def spec_for_module(cls: type) -> LayerSpec | None:
    """The spec whose `from_module` reads modules of class `cls`, or None."""
    for spec in REGISTRY.values():
        if cls in spec.module_types:
            return spec
    return None


def fmt_shape(shape: tuple[int, ...] | list[int]) -> str:
    """Shapes print as Python tuples: (32, 26, 26), (10,)."""
    return str(tuple(shape))
