"""The dependency direction of DESIGN.md: studio/ never imports Streamlit, Plotly or the UI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("streamlit", "plotly", "components", "pages", "streamlit_flow")


def test_studio_never_imports_streamlit_or_ui():
    offenders = []
    for path in sorted((ROOT / "studio").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_only_weights_only_torch_load():
    """Checkpoints are state dicts; unpickling arbitrary objects is never allowed anywhere."""
    bad = []
    for path in sorted(p for d in ("studio", "components", "pages", "bench") for p in (ROOT / d).rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(r"\btorch\.load\(", text):
            args = _call_args(text, m.end())
            if "weights_only=True" not in args:
                bad.append(f"{path.relative_to(ROOT)}: torch.load({args[:60]})")
    assert bad == []


def _call_args(text: str, start: int) -> str:
    """The argument text of a call whose '(' ends at `start`, up to its matching ')'."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return text[start:]


def _studio_unit(path: Path) -> str:
    """The unit a file belongs to: its sibling package under studio/ (`studio.data`), or the module itself."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(rel[:2]) if rel[-1] != "__init__" or len(rel) > 2 else "studio"


def _unit_imports() -> dict[str, set[str]]:
    """{unit: units it imports}, counting imports inside functions too (a lazy import is still an arrow)."""
    units = {_studio_unit(p) for p in (ROOT / "studio").rglob("*.py")}
    arrows: dict[str, set[str]] = {u: set() for u in units}
    for path in sorted((ROOT / "studio").rglob("*.py")):
        src = _studio_unit(path)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                target = ".".join(name.split(".")[:2])
                if target in units and target != src:
                    arrows[src].add(target)
    return arrows


def _cycles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle through the smallest unit in it (small graphs: a plain DFS will do)."""
    found = []
    for start in sorted(arrows):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(arrows[node]):
                if nxt == start:
                    found.append(path + [start])
                elif nxt not in path and nxt > start:
                    stack.append((nxt, path + [nxt]))
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


# The one circle today: the worker (studio.training) calls the launcher (studio.runs). Issue 12 part 4
# removes it on the Ray engineer's branch; delete this entry when that lands. Nothing may be added here.
KNOWN_CYCLES: list[list[str]] = []


def test_no_sibling_packages_under_studio_import_each_other_in_a_circle():
    cycles = [c for c in _cycles(_unit_imports()) if c not in KNOWN_CYCLES]
    assert cycles == [], "import circles between parts of studio/: " + "; ".join(" -> ".join(c) for c in cycles)


def test_dataset_loaders_never_import_the_catalogue():
    """registry.py imports the loaders; a loader importing it back would close a circle inside studio.data."""
    back = []
    for path in sorted((ROOT / "studio" / "data").glob("*.py")):
        if path.stem in ("__init__", "registry"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "studio.data.registry" or (
                    isinstance(node, ast.ImportFrom) and node.module == "studio.data"
                    and any(a.name == "registry" for a in node.names)):
                back.append(path.name)
    assert back == []


def _readme_layout() -> str:
    """The code block under README's "How it is built": the layout of the repository."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## How it is built"):]
    start = section.index("```\n") + 4
    return section[start:section.index("```\n", start)]


def test_readme_layout_names_every_module_and_package_of_studio():
    layout = _readme_layout()
    names = [p.name for p in (ROOT / "studio").glob("*.py") if p.name != "__init__.py"]
    names += [f"{p.name}/" for p in (ROOT / "studio").iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    missing = sorted(n for n in names if not re.search(rf"(?m)^\s+{re.escape(n)}\s", layout))
    assert missing == [], f"README's layout (How it is built) does not list {', '.join(missing)} under studio/"
    for top in ("components/", "pages/", "tests/", "bench/"):
        assert re.search(rf"(?m)^{re.escape(top)}", layout), top


def test_layout_check_finds_a_missing_module():
    assert not re.search(r"(?m)^\s+graph_edit\.py\s", "  graph.py          the graph document\n")


def test_studio_never_imports_scipy():
    """scipy comes only with scikit-learn (README: Libraries we chose); requirements.txt does not pin it."""
    users = []
    for path in sorted((ROOT / "studio").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            users += [str(path.relative_to(ROOT)) for n in names if n.split(".")[0] == "scipy"]
    assert users == []
    assert not [ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln.startswith("scipy")]


def _module_imports(root: Path) -> dict[str, set[str]]:
    """{module: modules under `root` it imports}, named from root's parent (`studio.runs.store`; a
    package's `__init__.py` is the package), counting imports inside functions too.

    `from P import n` is an arrow to the module P.n when n is one, else to the module that P's
    `__init__` re-exports n from, else to P. That a package's `__init__` runs before its submodules is
    Python's doing, not an arrow the importing module draws.
    """
    files = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in sorted(root.rglob("*.py"))}
    trees = {m: ast.parse(p.read_text(), filename=str(p)) for m, p in files.items()}

    def absolute(module: str, node: ast.ImportFrom) -> str:
        package = module.split(".")[:None if files[module].name == "__init__.py" else -1]
        base = package[:len(package) - node.level + 1] if node.level else []
        return ".".join(base + ([node.module] if node.module else []))

    def origin(module: str, name: str) -> str:
        if f"{module}.{name}" in files:
            return f"{module}.{name}"
        if module in files and files[module].name == "__init__.py":
            for node in trees[module].body:
                if isinstance(node, ast.ImportFrom):
                    for alias in node.names:
                        if (alias.asname or alias.name) == name:
                            return origin(absolute(module, node), alias.name)
        return module

    arrows: dict[str, set[str]] = {m: set() for m in files}
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = [origin(absolute(module, node), a.name) for a in node.names]
            else:
                continue
            arrows[module] |= {t for t in targets if t in files and t != module}
    return arrows


def test_module_imports_follow_submodules_and_package_reexports(tmp_path):
    files = {"__init__.py": "from pkg.a import A as B\n", "a.py": "A = 1\n",
             "b.py": "from pkg import B, a\n\n\ndef f():\n    import pkg.c\n", "c.py": "from . import a\n"}
    (tmp_path / "pkg").mkdir()
    for name, text in files.items():
        (tmp_path / "pkg" / name).write_text(text)
    assert _module_imports(tmp_path / "pkg") == {"pkg": {"pkg.a"}, "pkg.a": set(), "pkg.b": {"pkg.a", "pkg.c"},
                                                "pkg.c": {"pkg.a"}}


def test_no_modules_of_studio_import_each_other_in_a_circle():
    """A circle, lazy or not, means neither module can be read (or loaded) without the other."""
    cycles = _cycles(_module_imports(ROOT / "studio"))
    assert cycles == [], "import circles between modules of studio/: " + "; ".join(" -> ".join(c) for c in cycles)


# ---- one layer type, one place (STYLE.md habit 2) -------------------------------------------------------

def _type_names_acted_on(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each layer type name written as a literal where code acts on it: compared (==, in),
    listed in a tuple, list or set, a dict key or value, or bound to a name. A name passed to a call (a
    node the code creates, `Node("fc", "Linear")`) or written inside a longer string is not counted."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            operands = node.elts
        elif isinstance(node, ast.Dict):
            operands = [*node.keys, *node.values]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            operands = [node.value]
        else:
            continue
        found += [(o.lineno, o.value) for o in operands
                  if isinstance(o, ast.Constant) and isinstance(o.value, str) and o.value in names]
    return sorted(found)


def test_type_name_finder_finds_hand_lists_comparisons_and_tables():
    source = ('RECURRENT = ("RNN", "LSTM")\n'
              'if node.type == "Conv2d" or t in {"ReLU"}:\n'
              '    RULES = {"Linear": rule, f: "Tanh"}\n'
              'LINEAR = "Linear"\n'
              'make("Softmax", doc="Softmax over a dim")\n')
    names = {"RNN", "LSTM", "Conv2d", "ReLU", "Linear", "Tanh", "Softmax"}
    assert _type_names_acted_on(source, names) == [(1, "LSTM"), (1, "RNN"), (2, "Conv2d"), (2, "ReLU"),
                                                   (3, "Linear"), (3, "Tanh"), (4, "Linear")]


# Where a type name may still be acted on outside studio/layers/, each with why. Nothing may be added here.
NAMED_TYPES_ALLOWED = {
    # fximport's own idiom, on the nodes it makes itself: x[:, -1] (a SequencePool it mapped) after a
    # recurrent layer folds into that layer's return_sequences=False.
    ("studio/fximport.py", "SequencePool"),
}


def test_layer_types_are_acted_on_only_through_their_spec():
    """Adding a layer type touches one spec: outside studio/layers/ no module keeps its own list, table or
    test of layer type names (shape rules, "keeps its shape", "is recurrent", ...); each such fact is a
    LayerSpec attribute. "Input" is the graph's entry node, which the graph format itself defines."""
    from studio.layers import REGISTRY

    names = set(REGISTRY) - {"Input"}
    found = []
    for path in sorted(p for d in ("studio", "components", "pages") for p in (ROOT / d).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("studio/layers/"):
            continue
        found += [f"{rel}:{line}: {name!r}" for line, name in _type_names_acted_on(path.read_text(), names)
                  if (rel, name) not in NAMED_TYPES_ALLOWED]
    assert found == [], ("layer type names acted on outside their spec; make the fact a LayerSpec attribute "
                         "(studio/layers/base.py) and read it from the spec: " + "; ".join(found))
