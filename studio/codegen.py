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
import keyword
import math
import os
import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.fx
from torch import nn

from studio.analysis import analyze
from studio.compile import build_fx_graph
from studio.errors import ExportError, GraphError
from studio.graph import Graph, atomic_write_text
from studio.layers import REGISTRY
from studio.layers import modules as studio_modules

MAX_LINE = 120
INDENT = "    "
# Names the generated file defines or imports; a class name must not shadow them.
_FILE_NAMES = frozenset({"math", "torch", "F", "nn", "main", "lr_at", "evaluate"})


@dataclass(frozen=True)
class ModelCode:
    """What the exported class is made of: the compiler's fx graph and each submodule's constructor."""

    fx_graph: torch.fx.Graph  # the same graph compile_graph builds; its code is the exported forward
    constructors: dict[str, tuple[type, dict]]  # node_id -> (class, kwargs) from LayerSpec.make
    input_shape: tuple[int, ...]
    input_dtype: str


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


# ---- literals and names ---------------------------------------------------------------------------

def literal(value) -> str:
    """Python source for a param value: only None, bool, int, finite float, str and lists/tuples of them."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExportError(f"cannot write the non-finite number {value!r} as a constructor argument")
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    raise ExportError(f"cannot write a value of type {type(value).__name__} ({value!r:.60}) as Python source; "
                      "only numbers, booleans, strings, None and lists of them can be exported")


def docstring_text(text: str) -> str:
    """`text` made safe inside a triple-quoted docstring: backslashes and quotes escaped, control
    characters written as escapes, lines wrapped and stripped of trailing spaces (readable and lint-clean)."""
    out = []
    for ch in text.replace("\r\n", "\n"):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n" or ch.isprintable():
            out.append(ch)
        elif 0xD800 <= ord(ch) <= 0xDFFF:  # a lone surrogate: as an escape it would break the import; show it
            out.append(f"\\\\u{ord(ch):04x}")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    lines = []
    for para in "".join(out).split("\n"):
        para = para.rstrip()
        # Never wrap inside an escape sequence: wrap only at spaces (long words stay whole).
        lines.extend(textwrap.wrap(para, width=96, break_long_words=False, break_on_hyphens=False) or [""])
    return "\n".join(lines).strip("\n")


def default_class_name(graph_name: str) -> str:
    """'seed-cnn' -> 'SeedCnn'; falls back to 'Model' and avoids names the file already uses."""
    words = re.findall(r"[A-Za-z0-9]+", graph_name)
    name = "".join(w[:1].upper() + w[1:] for w in words)
    if not name or not name[0].isalpha() or not name.isascii():
        name = "Model" + name
    if name in _FILE_NAMES or hasattr(studio_modules, name) or keyword.iskeyword(name):
        name += "Model"
    return name[:80]


def _check_class_name(name: str) -> str:
    if not (isinstance(name, str) and name.isidentifier() and name.isascii() and not keyword.iskeyword(name)):
        raise ExportError(f"class_name={name!r} is not a Python identifier; use letters, digits and '_', e.g. "
                          "'MyModel'")
    if name in _FILE_NAMES or hasattr(studio_modules, name):
        raise ExportError(f"class_name={name!r} would clash with a name the exported file already defines; "
                          f"choose another (e.g. '{name}Model')")
    return name


def class_ref(cls: type) -> str:
    """How the file names a layer class: `nn.Conv2d` for torch.nn's, the bare name for the studio's own."""
    if getattr(nn, cls.__name__, None) is cls:
        return f"nn.{cls.__name__}"
    if cls.__module__ == studio_modules.__name__ and getattr(studio_modules, cls.__name__, None) is cls:
        return cls.__name__
    raise ExportError(f"layer class {cls.__module__}.{cls.__qualname__} is neither in torch.nn nor in "
                      "studio/layers/modules.py, so its code cannot be exported")


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


# ---- layout helpers ---------------------------------------------------------------------------------

def _call(head: str, args: list[str], indent: str) -> list[str]:
    """`head(args)` on one line when it fits, else args filled onto continuation lines."""
    one = f"{indent}{head}({', '.join(args)})"
    if len(one) <= MAX_LINE or not args:
        return [one]
    lines, cur, inner = [f"{indent}{head}("], "", indent + INDENT
    for a in args:
        piece = f"{a},"
        if cur and len(inner) + len(cur) + 1 + len(piece) > MAX_LINE:
            lines.append(inner + cur)
            cur = piece
        else:
            cur = f"{cur} {piece}" if cur else piece
    lines.append(inner + cur)
    lines.append(f"{indent})")
    return lines


def _constructor_args(cls: type, kwargs: dict) -> list[str]:
    """Leading required params positionally (at most two), torch.nn defaults left out, the rest by keyword."""
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    args, rest = [], dict(kwargs)
    for p in params:
        if (len(args) < 2 and p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty and p.name in rest):
            args.append(literal(rest.pop(p.name)))
        else:
            break
    is_torch = class_ref(cls).startswith("nn.")
    defaults = {p.name: p.default for p in params if p.default is not p.empty}
    for k, v in rest.items():
        d = defaults.get(k, inspect.Parameter.empty)
        if is_torch and d is not inspect.Parameter.empty and type(d) is type(v) and d == v:
            continue  # equal to PyTorch's own default: left out for readability
        args.append(f"{k}={literal(v)}")
    return args


def shape_comment(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["B", *map(str, shape)]) + ")"


def forward_source(code: ModelCode) -> tuple[list[str], set[str], list[str]]:
    """(the fx graph's forward without its `= None` drops, indented for the class, with each value's
    shape as a comment;
    the modules.py functions it calls; alias lines for those whose name a value of forward takes).

    fx names a function it calls by its qualified name (`studio_layers_modules_add`); the file calls it
    by its own name (`add`), unless a node is called that too, and then keeps fx's name as an alias.
    """
    python = code.fx_graph.python_code(root_module="self")
    src = python.src
    nodes = {n.name: n for n in code.fx_graph.nodes}
    functions, aliases = set(), []
    for global_name, obj in python.globals.items():
        if getattr(obj, "__module__", None) == studio_modules.__name__ and callable(obj):
            functions.add(obj.__name__)
            if obj.__name__ in nodes:
                aliases.append(f"{global_name} = {obj.__name__}  # a value in forward is called {obj.__name__!r}")
            else:
                src = re.sub(rf"\b{global_name}\b", obj.__name__, src)
    kind = "token ids" if code.input_dtype == "int64" else "float32"
    lines = []
    for line in src.strip("\n").splitlines():
        # fx ends a line with `;  a = b = None` to drop values after their last use; the file leaves
        # that to Python (one statement a line, as a hand-written forward reads).
        line = re.sub(r";  (\w+ = )+None$", "", line.rstrip())
        head, eq, call = line.partition(" = ")
        line = head + eq + re.sub(r"([(,] ?)(\w+) = ", r"\1\2=", call)  # fx writes `dim = 1` for keywords
        if not line:
            continue
        m = re.match(r"    (\w+) = ", line)
        node = nodes.get(m.group(1)) if m else None
        if line.startswith("def forward("):
            lines += [INDENT + line, f"{INDENT * 2}# x: {shape_comment(code.input_shape)} {kind}"]
        elif node is not None and node.meta.get("shape") is not None:
            comment = f"  # {shape_comment(node.meta['shape'])}"
            if len(INDENT + line + comment) <= MAX_LINE:
                lines.append(INDENT + line + comment)
            else:
                lines += [f"{INDENT * 2}# {node.name}: {shape_comment(node.meta['shape'])}", INDENT + line]
        else:
            lines.append(INDENT + line)
    return lines, functions, aliases


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
