"""Node ids and dotted paths: what a graph may name its nodes (`conv1`) and what a path inside block
instances looks like (`layer1.0.conv1`). No torch import: the CLI checks documents without it.
"""

from __future__ import annotations

import functools
import keyword
import re

NODE_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_ID_LEN = 64
# Ids that would break exported code; with every nn.Module attribute (`eval`, `to`, `cuda`, ...) they
# are refused, since a submodule cannot take the name of an attribute of the compiled module.
_RESERVED_IDS = frozenset({"order", "input_id", "output_id", "input_shape", "input_dtype", "node_types",
                           "self", "x", "torch", "nn", "F", "math", "super"})


# The public attributes of an nn.Module instance (`training` too), listed here so that parsing a graph
# does not import torch (the CLI launches runs without it); ids starting with '_' are refused anyway.
# tests/test_cli.py checks this list against the installed torch.
_NN_MODULE_ATTRS = frozenset("""
    T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda
    double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter
    get_submodule half ipu load_state_dict modules mtia named_buffers named_children
    named_modules named_parameters parameters register_backward_hook register_buffer
    register_forward_hook register_forward_pre_hook register_full_backward_hook
    register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state
    set_submodule share_memory state_dict to to_empty train training type xpu zero_grad
""".split())


@functools.cache
def _reserved_ids() -> frozenset[str]:
    return _RESERVED_IDS | _NN_MODULE_ATTRS


def node_id_problem(node_id: object, *, nested: bool = False) -> str | None:
    """Why `node_id` is not a valid node id, or None when it is.

    `nested`: the id of a node inside a block, a submodule of the block's module rather than of the
    model, so only Python's keywords and nn.Module's attributes are reserved (a block's Input may be `x`)."""
    if not isinstance(node_id, str):
        return f"id must be a string, got {type(node_id).__name__} {node_id!r}"
    if not NODE_ID_RE.match(node_id):
        return (
            f"id {node_id!r} is not a Python identifier; use letters, digits and '_', "
            "not starting with a digit (e.g. 'conv1')"
        )
    if len(node_id) > MAX_ID_LEN:
        return f"id {node_id[:20]!r}... is {len(node_id)} characters long; use at most {MAX_ID_LEN}"
    reserved = _NN_MODULE_ATTRS if nested else _reserved_ids()
    if keyword.iskeyword(node_id) or node_id in reserved or node_id.startswith("_"):
        return f"id {node_id!r} is reserved in Python or in the compiled module; choose another (e.g. '{node_id}_1')"
    return None


def path_problem(path: object) -> str | None:
    """Why `path` is not a node id or a dotted path of one (`layer1.0.conv1`: instance ids, copy indices and
    the node id inside the block), or None when it is."""
    if not isinstance(path, str):
        return node_id_problem(path)
    parts = path.split(".")
    for i, part in enumerate(parts):
        if i and i < len(parts) - 1 and part.isdigit() and part == str(int(part)):
            continue  # a copy's index
        problem = node_id_problem(part, nested=i > 0)
        if problem:
            return problem
    return None
