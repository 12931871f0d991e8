"""How an exported file writes things: values as literals, docstrings, class names, layer classes,
calls laid out within the line length, and the forward torch.fx generates with shape comments.

studio.codegen assembles the file from these; studio.graph_codegen (one class per block) uses them too.
"""

from __future__ import annotations

import inspect
import keyword
import math
import re
import textwrap
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from studio.errors import ExportError
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


def _constructor_args(cls: type, kwargs: dict, write=None) -> list[str]:
    """Leading required params positionally (at most two), torch.nn defaults left out, the rest by keyword.
    `write` turns a value into source (default `literal`; a block's class writes its parameters' names)."""
    write = write or literal
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    args, rest = [], dict(kwargs)
    for p in params:
        if (len(args) < 2 and p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty and p.name in rest):
            args.append(write(rest.pop(p.name)))
        else:
            break
    is_torch = class_ref(cls).startswith("nn.")
    defaults = {p.name: p.default for p in params if p.default is not p.empty}
    for k, v in rest.items():
        d = defaults.get(k, inspect.Parameter.empty)
        if is_torch and d is not inspect.Parameter.empty and type(d) is type(v) and d == v:
            continue  # equal to PyTorch's own default: left out for readability
        args.append(f"{k}={write(v)}")
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
