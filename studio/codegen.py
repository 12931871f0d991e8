"""Graph -> one readable PyTorch file that the user owns; `export_graph` for every export format.

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
from studio.graph import Graph, atomic_write_bytes, atomic_write_text
from studio.layers import REGISTRY
from studio.layers import modules as studio_modules

MAX_LINE = 120
INDENT = "    "
FORMATS = ("code", "torchscript", "onnx")
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

@lru_cache(maxsize=1)
def _module_defs() -> tuple[str, dict[str, tuple[int, int, frozenset]]]:
    """modules.py's source and, per top-level def: (first line, last line, top-level names it uses)."""
    source = inspect.getsource(studio_modules)
    tree = ast.parse(source)
    defs = {}
    top = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} & top
            used.discard(node.name)
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            defs[node.name] = (start, node.end_lineno, frozenset(used))
    return source, defs


def custom_sources(names: set[str]) -> list[str]:
    """Source of the named modules.py definitions plus everything they use, in the file's order."""
    source, defs = _module_defs()
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(defs[name][2])
    lines = source.splitlines()
    return ["\n".join(lines[defs[n][0] - 1:defs[n][1]]) for n in sorted(wanted, key=lambda n: defs[n][0])]


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
    code = model_code(graph)
    name = _check_class_name(class_name) if class_name is not None else default_class_name(graph.name)

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

    blocks = custom_sources(custom) + (["\n".join(aliases)] if aliases else []) + [class_src]
    if training_script:
        blocks.append(training_source(name, dataset_id, config, dataset_options))
    body = "\n\n\n".join(blocks) + "\n"
    header = ('"""PyTorch model exported by Neural Studio: plain torch, no studio import needed to use it.\n\n'
              "The model class below mirrors the studio graph node by node (attributes are named by node id), so\n"
              "it loads a state dict saved by the studio with strict=True.\n\"\"\"")
    return header + "\n\n" + _imports(body) + "\n\n\n" + body


def _imports(body: str) -> str:
    tree = ast.parse(body)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    std = ["import math"] if "math" in used else []
    third = []
    if "torch" in used:
        third.append("import torch")
    if "F" in used:
        third.append("import torch.nn.functional as F")
    third.append("from torch import nn")
    return "\n\n".join(part for part in ("\n".join(std), "\n".join(third)) if part)


# ---- training script ------------------------------------------------------------------------------

_OPTIMIZERS = {  # the torch.optim class and its arguments, as studio.training.optim.build_optimizer uses them
    "sgd": ("SGD", ("lr", "momentum", "nesterov", "weight_decay")),
    "adam": ("Adam", ("lr", "betas", "weight_decay")),
    "adamw": ("AdamW", ("lr", "betas", "weight_decay")),
    "rmsprop": ("RMSprop", ("lr", "momentum", "weight_decay")),
    "adagrad": ("Adagrad", ("lr", "weight_decay")),
}
_SCHEDULES = {  # factor of the base lr at step t after warmup, over `span` steps (studio.training.optim)
    "none": "1.0",
    "plateau": "1.0",
    "step": "{gamma} ** (t // {step_size})",
    "multistep": "{gamma} ** sum(1 for m in {milestones} if t >= m)",
    "exponential": "{gamma} ** t",
    "cosine": "{floor} + (1 - {floor}) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))",
}
_ONECYCLE = """\
    up = max(1.0, 0.3 * span - 1)  # PyTorch's OneCycleLR: 30% up from lr/25, then down to lr/25e4
    start, end = 1 / 25.0, 1 / (25.0 * 1e4)
    if t <= up:
        a, b, pct = start, 1.0, t / up
    else:
        a, b, pct = 1.0, end, min(1.0, (t - up) / max(1.0, span - 1 - up))
    return {lr} * (b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)) * scale"""
_INIT = {"xavier": "nn.init.xavier_uniform_(p)", "kaiming": 'nn.init.kaiming_uniform_(p, nonlinearity="relu")',
         "normal": "nn.init.normal_(p, 0.0, 0.02)"}
_LOSS = {
    "classification": "F.cross_entropy(out, y, label_smoothing=smoothing)",
    "regression": "F.mse_loss(out, y.reshape(out.shape).to(out.dtype))",
    "sequence": "F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), label_smoothing=smoothing)",
}
_METRIC = {  # (name, summed value of a batch, count of a batch)
    "classification": ("accuracy", "(out.argmax(-1) == y).sum().item()", "len(y)"),
    "regression": ("mae", "(out - y.reshape(out.shape)).abs().sum().item()", "out.numel()"),
    "sequence": ("token_accuracy", "(out.argmax(-1) == y).sum().item()", "y.numel()"),
}


def _options_literal(options: dict) -> str:
    """Python source for a dict of dataset options: string keys, values as `literal` writes them."""
    bad = [k for k in options if not isinstance(k, str)]
    if bad:
        raise ExportError(f"dataset option names must be strings, got {bad[0]!r}; e.g. {{'target': 'input'}}")
    return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in options.items()) + "}"


def training_source(class_name: str, dataset_id: str | None, config=None, dataset_options: dict | None = None) -> str:
    """A `main()` training `class_name` on `dataset_id` (with `dataset_options`) as `config` says, in plain
    PyTorch."""
    from studio.data import get_info
    from studio.training.config import TrainConfig

    if not dataset_id:
        raise ExportError("a training script needs a dataset id (e.g. dataset_id='mnist'); pass one or export "
                          "the model without training_script")
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config or {}))
    cfg.validate()
    options = dict(dataset_options or {})
    info = get_info(dataset_id, options=options or None)
    task = "sequence" if info.task in ("sequence", "language_model") else info.task
    lit = literal
    values = {"lr": lit(float(cfg.lr)), "momentum": lit(float(cfg.momentum)), "nesterov": lit(bool(cfg.nesterov)),
              "weight_decay": lit(float(cfg.weight_decay)), "betas": lit(tuple(float(b) for b in cfg.betas)),
              "gamma": lit(float(cfg.gamma)), "step_size": lit(int(cfg.step_size)),
              "milestones": lit(tuple(int(m) for m in cfg.milestones)),
              "floor": lit(float(cfg.min_lr) / float(cfg.lr))}
    monitor, mode = cfg.resolved_monitor(info.task)
    metric_name, metric_sum, metric_count = _METRIC[task]
    lines = [
        f"DATASET = {lit(dataset_id)}",
        "# Options of get_dataset; {'target': 'input'} makes the input its own target (an autoencoder's data).",
        f"DATASET_OPTIONS = {_options_literal(options)}",
        f"SEED = {lit(int(cfg.seed))}",
        f"EPOCHS = {lit(int(cfg.epochs))}",
        f"MAX_STEPS = {lit(int(cfg.max_steps))}  # 0: train for EPOCHS",
        f"BATCH_SIZE = {lit(int(cfg.batch_size))}",
        f"WARMUP_STEPS = {lit(int(cfg.warmup_steps))}",
        f"GRAD_CLIP = {lit(float(cfg.grad_clip))}  # 0: no clipping",
        f"LABEL_SMOOTHING = {lit(float(cfg.label_smoothing))}",
        "",
        "",
        "def lr_at(step, total_steps, scale=1.0):",
        f'    """Learning rate of optimizer step `step`: linear warmup, then the {cfg.schedule!r} schedule."""',
        "    if step < WARMUP_STEPS:",
        f"        return {values['lr']} * (step + 1) / WARMUP_STEPS",
        "    t = step - WARMUP_STEPS",
        "    span = max(1, total_steps - WARMUP_STEPS)",
    ]
    if cfg.schedule == "onecycle":
        lines.append(_ONECYCLE.format(**values))
    else:
        factor = _SCHEDULES[cfg.schedule].format(**values)
        if factor == "1.0":
            lines[-2:] = ["    return " + values["lr"] + " * scale"]
        else:
            if "span" not in factor:
                lines.pop()
            lines.append(f"    return {values['lr']} * ({factor}) * scale")
    lines += [
        "",
        "",
        "def loss_fn(out, y, smoothing=0.0):",
        f"    return {_LOSS[task]}",
        "",
        "",
        "def evaluate(model, split, device):",
        f'    """Mean loss and {metric_name} of `model` on a split, without gradients."""',
        "    model.eval()",
        "    loss_sum, metric_sum, metric_count = 0.0, 0.0, 0",
        "    with torch.no_grad():",
        "        for start in range(0, len(split), BATCH_SIZE):",
        "            x, y = split.take(torch.arange(start, min(start + BATCH_SIZE, len(split))))",
        "            x, y = x.to(device), y.to(device)",
        "            out = model(x)",
        "            loss_sum += loss_fn(out, y).item() * len(y)",
        f"            metric_sum += {metric_sum}",
        f"            metric_count += {metric_count}",
        "    return loss_sum / max(1, len(split)), metric_sum / max(1, metric_count)",
    ]
    if cfg.init in _INIT:
        lines += [
            "",
            "",
            "def init_weights(model):",
            f'    """Re-initialise weight matrices ({cfg.init}) and zero their biases, as the studio does."""',
            "    with torch.no_grad():",
            "        for module in model.modules():",
            "            has_matrix = any(p.dim() >= 2 for p in module.parameters(recurse=False))",
            "            for name, p in module.named_parameters(recurse=False):",
            "                if p.dim() >= 2:",
            f"                    {_INIT[cfg.init]}",
            '                elif name.startswith("bias") and p.dim() == 1 and has_matrix:',
            "                    nn.init.zeros_(p)",
        ]
    lines += [
        "",
        "",
        "def main():",
        '    """Train on DATASET, print validation metrics per epoch, save the weights to model_state_dict.pt."""',
        "    from studio.data import get_dataset  # Neural Studio's datasets: the same splits as in the studio",
        "",
        "    torch.manual_seed(SEED)",
        '    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")',
        "    data = get_dataset(DATASET, seed=SEED, options=DATASET_OPTIONS)",
        f"    model = {class_name}().to(device)",
    ]
    if cfg.init in _INIT:
        lines.append("    init_weights(model)")
    if cfg.precision != "fp32":
        lines.append(f"    # The studio trains this config with {cfg.precision} autocast; this script trains in fp32.")
    augment = cfg.augmentation()
    if augment.enabled:
        lines += ["    from studio.data.augment import Augment  # the studio's training-only image augmentation",
                  *_call("augment = Augment", [f"{k}={v!r}" for k, v in augment.to_dict().items()], INDENT)]
    opt_class, opt_args = _OPTIMIZERS[cfg.optimizer]
    lines += _call(f"optimizer = torch.optim.{opt_class}",
                   ["model.parameters()", *(f"{a}={values[a]}" for a in opt_args)], INDENT)
    better = "<" if mode == "min" else ">"
    watched = "val_loss" if monitor == "val_loss" else "val_metric"
    plateau = cfg.schedule == "plateau"
    lines += [
        "    total_steps = MAX_STEPS or EPOCHS * math.ceil(len(data.train) / BATCH_SIZE)",
        "    step, epoch, scale = 0, 0, 1.0",
    ]
    if plateau:
        lines.append("    best, bad_evals = None, 0")
    lines += [
        "    while step < total_steps:",
        "        # The same data order as the studio's trainer: a function of (seed, epoch).",
        "        generator = torch.Generator().manual_seed(SEED * 1_000_003 + epoch)",
        "        order = torch.randperm(len(data.train), generator=generator)",
        "        model.train()",
        "        for start in range(0, len(order), BATCH_SIZE):",
        "            x, y = data.train.take(order[start:start + BATCH_SIZE])",
        *(["            x = augment(x, generator)"] if augment.enabled else []),
        "            x, y = x.to(device), y.to(device)",
        "            for group in optimizer.param_groups:",
        "                group[\"lr\"] = lr_at(step, total_steps, scale)",
        "            loss = loss_fn(model(x), y, LABEL_SMOOTHING)",
        "            optimizer.zero_grad(set_to_none=True)",
        "            loss.backward()",
        "            if GRAD_CLIP > 0:",
        "                nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)",
        "            optimizer.step()",
        "            step += 1",
        "            if step >= total_steps:",
        "                break",
        "        epoch += 1",
        "        val_loss, val_metric = evaluate(model, data.val, device)",
        '        print(f"epoch {epoch} step {step}: train loss {loss.item():.4f}, val loss {val_loss:.4f}, "',
        f'              f"val {metric_name} {{val_metric:.4f}}")',
    ]
    if plateau:
        lines += [
            f"        # Reduce on plateau of {monitor} ({mode}), as the studio's schedule does.",
            f"        if best is None or {watched} {better} best:",
            f"            best, bad_evals = {watched}, 0",
            "        else:",
            "            bad_evals += 1",
            f"            if bad_evals > {lit(int(cfg.plateau_patience))}:",
            f"                scale, bad_evals = scale * {lit(float(cfg.plateau_factor))}, 0",
        ]
    lines += [
        '    torch.save(model.state_dict(), "model_state_dict.pt")',
        "",
        "",
        'if __name__ == "__main__":',
        "    main()",
    ]
    return "\n".join(lines)


# ---- export_graph: the CLI's `export` ---------------------------------------------------------------

def export_graph(graph: Graph, fmt: str, path: str | os.PathLike, *, dataset_id: str | None = None,
                 config=None, dataset_options: dict | None = None) -> Path:
    """Write the graph as PyTorch code ('code'), TorchScript ('torchscript') or ONNX ('onnx') to `path`.

    Returns the path written. With a `dataset_id`, code export appends a training script that loads it
    with `dataset_options`.
    """
    path = Path(path)
    if fmt == "code":
        code = to_code(graph, training_script=dataset_id is not None, dataset_id=dataset_id, config=config,
                       dataset_options=dataset_options)
        atomic_write_text(path, code)
    elif fmt in ("torchscript", "onnx"):
        from studio import export

        data = export.to_torchscript(graph) if fmt == "torchscript" else export.to_onnx(graph)
        atomic_write_bytes(path, data)
    else:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    return path


__all__ = ["FORMATS", "ModelCode", "class_ref", "custom_sources", "default_class_name", "docstring_text",
           "export_graph", "forward_source", "literal", "model_code", "to_code"]
