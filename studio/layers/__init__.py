"""The palette: one registered LayerSpec per layer type (see DESIGN.md's palette table).

    >>> from studio.layers import REGISTRY
    >>> REGISTRY["Conv2d"].category
    'convolution'
"""

from studio.layers import conv, core, norm_act, sequence  # noqa: F401  (each module registers its specs)
from studio.layers.base import REGISTRY, InSpec, LayerSpec, Param, fmt_shape

CATEGORIES = ("input", "core", "convolution", "pooling", "normalization", "activation", "recurrent",
              "embedding", "attention", "sequence", "merge")
# Colours by category (Netron's habit): the canvas and the docs use these. No red: on the canvas red
# marks a node with an error.
CATEGORY_COLORS = {
    "input": "#6b7280", "core": "#2563eb", "convolution": "#7c3aed", "pooling": "#0891b2",
    "normalization": "#059669", "activation": "#d97706", "recurrent": "#db2777", "embedding": "#9333ea",
    "attention": "#92400e", "sequence": "#0d9488", "merge": "#4b5563",
}
# Layers whose outputs the probes save as feature maps.
FEATURE_MAP_CATEGORIES = frozenset({"convolution", "pooling", "normalization", "activation"})


def get_spec(type_name: str) -> LayerSpec:
    return REGISTRY[type_name]


__all__ = ["REGISTRY", "CATEGORIES", "CATEGORY_COLORS", "FEATURE_MAP_CATEGORIES", "InSpec", "LayerSpec",
           "Param", "fmt_shape", "get_spec"]
