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
