"""Graph -> one readable PyTorch file that the user owns (`to_code`, `export_graph`; binary formats: studio.export).

The file holds the imports, the verbatim source of the studio's own layer classes and functions the
graph uses (from studio/layers/modules.py, which depend only on torch and math), and one `nn.Module`
whose submodules are named by node id and built from the same `LayerSpec.make` as the compiler uses,
so the exported model loads the studio model's state dict with `strict=True` and computes exactly
the same outputs. `forward` is the code torch.fx generates for the compiler's graph, with each
value's shape as a comment.
Optionally a plain-PyTorch training script for a dataset and a TrainConfig is appended.

Nothing from the graph reaches the code unescaped: node ids are identifiers (graph contract), every
param value is written with `repr` after a type check, and the name and description are escaped
inside the docstring.

    >>> from studio.templates import load_template
    >>> code = to_code(load_template("seed_cnn"))
    >>> "self.conv1 = nn.Conv2d(1, 32, kernel_size=3)" in code
    True
"""

from __future__ import annotations

import ast
import inspect
import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.fx

from studio.analysis import analyze
from studio.codegen_text import (  # noqa: F401 - the file's writing helpers, importable from here as before
    _FILE_NAMES,
    INDENT,
    MAX_LINE,
    ModelCode,
    _call,
    _check_class_name,
    _constructor_args,
    class_ref,
    default_class_name,
    docstring_text,
    forward_source,
    literal,
    shape_comment,
)
from studio.compile import build_fx_graph
from studio.errors import ExportError, GraphError
from studio.graph import Graph, atomic_write_text
from studio.layers import REGISTRY
from studio.layers import modules as studio_modules


def model_code(graph: Graph) -> ModelCode:
    """The compiler's fx graph and the submodules' constructors of a valid graph.

    Raises GraphError when the graph is invalid. The submodules are built on the `meta` device only
    to make the fx graph (no memory, no init).
    """
    analysis = analyze(graph)
    if analysis.errors:
        raise GraphError(analysis.errors)
    graph = analysis.flat or graph  # a graph with blocks: its expansion, layers by dotted path
    with torch.device("meta"):
        fx_graph, _ = build_fx_graph(graph, analysis)
    by_id = {n.id: n for n in graph.nodes}
    constructors = {}
    for fx_node in fx_graph.nodes:
        if fx_node.op == "call_module":
            node = by_id[fx_node.target]
            spec = REGISTRY[node.type]
            cls, kwargs = spec.make(spec.resolve(node.params), list(analysis.nodes[node.id].inputs))
            constructors[node.id] = (cls, dict(kwargs))
    return ModelCode(fx_graph, constructors, tuple(analysis.input_shape), analysis.input_dtype)


# ---- the studio's own classes, copied verbatim --------------------------------------------------------

@lru_cache(maxsize=8)
def _module_defs(module=studio_modules) -> tuple[str, dict[str, tuple[int, int, frozenset]]]:
    """A module's source and, per top-level def or constant: (first line, last line, top-level names it uses)."""
    source = inspect.getsource(module)
    tree = ast.parse(source)
    defs = {}
    named = [(n.name, n) for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
    named += [(t.id, n) for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    top = {name for name, _ in named}
    for name, node in named:
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} & top
        used.discard(name)
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        defs[name] = (start, node.end_lineno, frozenset(used))
    return source, defs


def custom_sources(names: set[str], module=studio_modules) -> list[str]:
    """Source of the named top-level definitions of `module` (modules.py by default) plus everything they
    use, in the file's order; constants come first, as one block."""
    source, defs = _module_defs(module)
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(defs[name][2])
    lines = source.splitlines()
    chunks = ["\n".join(lines[defs[n][0] - 1:defs[n][1]]) for n in sorted(wanted, key=lambda n: defs[n][0])]
    constants = [c for c in chunks if not c.startswith(("def ", "class ", "@"))]
    return (["\n".join(constants)] if constants else []) + [c for c in chunks if c not in constants]


# ---- the file -----------------------------------------------------------------------------------------

def to_code(graph: Graph, *, class_name: str | None = None, training_script: bool = False,
            dataset_id: str | None = None, config=None, dataset_options: dict | None = None) -> str:
    """One readable Python file defining the graph's model as an nn.Module (see the module docstring).

    With `training_script=True` a `main()` that trains the model on `dataset_id` loaded with
    `dataset_options` (e.g. {"target": "input"} for an autoencoder) with `config` (a TrainConfig or a
    dict of overrides) in plain PyTorch is appended; it loads the data with the studio's dataset
    registry (`studio.data.get_dataset`), so the splits match the studio's.
    """
    name = _check_class_name(class_name) if class_name is not None else default_class_name(graph.name)
    block_classes: list[str] = []
    if graph.uses_blocks:  # one class per block (studio.graph_codegen)
        from studio.graph_codegen import block_code

        analysis = analyze(graph)
        if analysis.errors:
            raise GraphError(analysis.errors)
        block_classes, init_lines, fwd_lines, custom, aliases, input_shape, input_dtype = block_code(
            graph, analysis, name)
    else:
        code = model_code(graph)
        input_shape, input_dtype = code.input_shape, code.input_dtype
        custom: set[str] = set()
        init_lines: list[str] = []
        for node_id, (cls, kwargs) in code.constructors.items():
            ref = class_ref(cls)
            if not ref.startswith("nn."):
                custom.add(ref)
            init_lines += _call(f"self.{node_id} = {ref}", _constructor_args(cls, kwargs), INDENT * 2)
        fwd_lines, functions, aliases = forward_source(code)
        custom |= functions

    doc = docstring_text(graph.name or "untitled")
    if graph.description.strip():
        doc += "\n\n" + docstring_text(graph.description)
    doc_lines = doc.split("\n")
    class_doc = [f'{INDENT}"""{doc_lines[0]}'] + [f"{INDENT}{ln}" if ln else "" for ln in doc_lines[1:]]
    if len(doc_lines) == 1:
        class_doc[0] += '"""'
    else:
        class_doc.append(f'{INDENT}"""')

    class_src = "\n".join([
        f"class {name}(nn.Module):",
        *class_doc,
        "",
        f"{INDENT}def __init__(self):",
        f"{INDENT * 2}super().__init__()",
        *init_lines,
        "",
        *fwd_lines,
    ])

    blocks = custom_sources(custom) + (["\n".join(aliases)] if aliases else []) + block_classes + [class_src]
    if training_script:
        blocks.append(training_source(name, dataset_id, config, dataset_options))
    else:
        blocks.append(demo_source(name, input_shape, input_dtype))
    body = "\n\n\n".join(blocks) + "\n"
    header = ('"""PyTorch model exported by Neural Studio: plain torch, no studio import needed to use it.\n\n'
              "The model class below mirrors the studio graph node by node (attributes are named by node id), so\n"
              "it loads a state dict saved by the studio with strict=True. A run's best weights:\n\n"
              f"    model = {name}()\n"
              '    ckpt = torch.load("workspace/runs/<run_id>/checkpoints/best.pt", weights_only=True)\n'
              '    model.load_state_dict(ckpt["model"])\n\n'
              + ("Run this file to train the model (main() below).\n" if training_script else
                 "Run this file to build the model and pass one batch through it.\n") + '\"\"\"')
    return header + "\n\n" + _imports(body) + "\n\n\n" + body


def _imports(body: str) -> str:
    tree = ast.parse(body)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    std = [f"import {m}" for m in ("contextlib", "math") if m in used]
    if "SimpleNamespace" in used:
        std.append("from types import SimpleNamespace")
    third = []
    if "torch" in used:
        third.append("import torch")
    if "F" in used:
        third.append("import torch.nn.functional as F")
    third.append("from torch import nn")
    return "\n\n".join(part for part in ("\n".join(std), "\n".join(third)) if part)


# ---- training script ------------------------------------------------------------------------------

TRAIN_TEMPLATE = Path(__file__).parent / "templates_code" / "train_script.py.tmpl"
# What the script copies from the studio's training code: the worker's schedule, optimizer, init, loss
# and metrics (module, top-level names); whatever they use in their module comes along.
TRAINING_SOURCES = (("studio.training.optim", ("LRSchedule", "build_optimizer", "init_weights")),
                    ("studio.training.loop", ("Task",)))


def _options_literal(options: dict) -> str:
    """Python source for a dict of dataset options: string keys, values as `literal` writes them."""
    bad = [k for k in options if not isinstance(k, str)]
    if bad:
        raise ExportError(f"dataset option names must be strings, got {bad[0]!r}; e.g. {{'target': 'input'}}")
    return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in options.items()) + "}"


def training_source(class_name: str, dataset_id: str | None, config=None, dataset_options: dict | None = None) -> str:
    """A `main()` training `class_name` on `dataset_id` (with `dataset_options`) as `config` says: the
    template file TRAIN_TEMPLATE filled with the studio's own training code (TRAINING_SOURCES) and the
    run's settings."""
    import importlib
    import string

    from studio.data import get_info
    from studio.training.config import TrainConfig

    if not dataset_id:
        raise ExportError("a training script needs a dataset id (e.g. dataset_id='mnist'); pass one or export "
                          "the model without training_script")
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config or {}))
    cfg.validate()
    options = dict(dataset_options or {})
    info = get_info(dataset_id, options=options or None)
    monitor, mode = cfg.resolved_monitor(info.task)
    sources = []
    for module_name, names in TRAINING_SOURCES:
        sources += custom_sources(set(names), importlib.import_module(module_name))
    augment = cfg.augmentation()
    settings = cfg.to_dict()
    config_src = "{\n" + "".join(f"{INDENT}{literal(k)}: {literal(_plain_value(v))},\n"
                                  for k, v in settings.items()) + "}"
    return string.Template(TRAIN_TEMPLATE.read_text()).substitute(
        SOURCES="\n\n\n".join(sources), DATASET=literal(dataset_id), DATASET_OPTIONS=_options_literal(options),
        CONFIG=config_src, MONITOR=literal(monitor), MODE=literal(mode), CLASS_NAME=class_name,
        AUGMENT=_options_literal(augment.to_dict()) if augment.enabled else "None").rstrip("\n")


def _plain_value(v):
    """A config value as `literal` writes it (tuples as lists are fine: the copied code only iterates them)."""
    return list(v) if isinstance(v, tuple) else v


def demo_source(class_name: str, input_shape: tuple[int, ...], input_dtype: str) -> str:
    """`__main__` of a model-only file: build the model, run one batch of the right shape, print a summary."""
    make_x = (f"torch.randint(0, 2, (2, {', '.join(map(str, input_shape))}))" if input_dtype == "int64"
              else f"torch.randn(2, {', '.join(map(str, input_shape))})")
    return "\n".join([
        'if __name__ == "__main__":',
        f"    model = {class_name}().eval()",
        f"    x = {make_x}  # a batch of 2 {'token-id sequences' if input_dtype == 'int64' else 'samples'}",
        "    with torch.no_grad():",
        "        out = model(x)",
        "    params = sum(p.numel() for p in model.parameters())",
        '    print(f"{type(model).__name__}: {params:,} parameters; input {tuple(x.shape)} -> "',
        '          f"output {tuple(out.shape)}")',
    ])


# ---- export_graph: the CLI's `export` ---------------------------------------------------------------

def export_graph(graph: Graph, fmt: str, path: str | os.PathLike, *, dataset_id: str | None = None,
                 config=None, dataset_options: dict | None = None) -> Path:
    """Write the graph as PyTorch code to `path` (`fmt` "code"; the binary formats are studio.export's).

    Returns the path written. With a `dataset_id`, the code ends with a training script that loads it
    with `dataset_options`.
    """
    if fmt != "code":
        raise ExportError(f"codegen writes source code only, not {fmt!r}; use studio.export.write_graph_export "
                          "for pt2, ONNX and TorchScript")
    path = Path(path)
    atomic_write_text(path, to_code(graph, training_script=dataset_id is not None, dataset_id=dataset_id,
                                    config=config, dataset_options=dataset_options))
    return path


__all__ = ["TRAIN_TEMPLATE", "ModelCode", "class_ref", "custom_sources", "default_class_name",
           "demo_source", "docstring_text", "export_graph", "forward_source", "literal", "model_code", "to_code",
           "training_source"]
