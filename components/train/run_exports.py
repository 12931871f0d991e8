"""Exports of a run's trained model, for the Train and Inspect pages: one call, `render(run_id, key)`.

The user picks the checkpoint (best or last) and gets, with its trained weights:
- the model's Python code and a weights-only state dict for it (`<name>.weights.pt`),
- a PyTorch 2 program (`.pt2`, torch.export; the deployable one), ONNX, and TorchScript (legacy),
  each built on a click (exporting takes a second or more) and then offered as a download,
- beside the full training checkpoint (model, optimizer, RNG state: for resuming), its weights alone.
"""

from __future__ import annotations

import streamlit as st

from components.text import st_escape
from studio.errors import StudioError
from studio.runs import run_dir

_BUILT = "studio.run_exports.built"  # (run_id, which, fmt, checkpoint mtime) -> {file name: bytes} or an error
_MODEL_FORMATS = ("pt2", "onnx", "torchscript")
# As studio.export.LABELS / EXTENSIONS; repeated so that drawing the panel does not import torch.
_LABELS = {"pt2": "PyTorch 2 program", "onnx": "ONNX", "torchscript": "TorchScript (legacy)"}
_EXTENSIONS = {"pt2": "pt2", "onnx": "onnx", "torchscript": "pt"}
_HELP = {
    "pt2": "A torch.export program with the batch dimension dynamic: `torch.export.load(path).module()(x)` "
           "runs it in any Python with PyTorch, no studio needed.",
    "onnx": "For onnxruntime and other ONNX runtimes; input 'x', batch dimension dynamic.",
    "torchscript": "Legacy: TorchScript is deprecated in PyTorch 2 (its save and load warn). Prefer the "
                   ".pt2 program; this stays while it works. Load with torch.jit.load.",
}


def _mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _build(key: tuple, run_id: str, fmt: str, which: str) -> None:
    from studio import export

    try:
        result: dict | str = export.run_exports(run_id, fmt, which)
    except StudioError as e:
        result = f"{_LABELS[fmt]} export failed: {e}"
    built = {k: v for k, v in st.session_state.get(_BUILT, {}).items() if k[:2] == key[:2]}
    built[key] = result
    st.session_state[_BUILT] = built


def _download(label: str, name: str, data, key: str, help: str | None = None) -> None:
    st.download_button(label, data, file_name=name, mime="application/octet-stream", on_click="ignore",
                       icon=":material/download:", key=key, help=help)


def render(run_id: str, key: str) -> None:
    """The export panel of run `run_id` in an expander; `key` keeps its widgets apart from others on the page."""
    with st.expander("Export the trained model (code + weights, .pt2, ONNX, TorchScript)", icon=":material/ios_share:"):
        _render(run_id, key)


def _weights_only(path) -> bytes:
    from studio import export

    return export.checkpoint_weights_bytes(path)


def _code(run_id: str, which: str) -> bytes:
    from studio import export

    return export.run_exports(run_id, "code", which)[f"{run_id}-{which}.py"]


def _render(run_id: str, key: str) -> None:
    checkpoints = run_dir(run_id) / "checkpoints"
    have = [w for w in ("best", "last") if (checkpoints / f"{w}.pt").exists()]
    if not have:
        st.caption("Exports appear once the run has saved a checkpoint (at its first evaluation or epoch end).")
        return
    which = st.radio("Weights", have, horizontal=True, key=f"{key}.weights",
                     format_func=lambda w: {"best": "best (best validation score)", "last": "last (latest step)"}[w],
                     help="The checkpoint whose trained weights go into every export below.")
    path = checkpoints / f"{which}.pt"
    stem = f"{run_id}-{which}"
    with st.container(horizontal=True):
        _download(f"{which}.pt (full checkpoint)", f"{stem}.pt", lambda p=path: p.read_bytes(), f"{key}.ckpt.{which}",
                  help="Model, optimizer, schedule and RNG state: what resuming needs. The model's weights are "
                       "ckpt['model'].")
        _download("Weights only (.pt)", f"{stem}.weights.pt", lambda p=path: _weights_only(p),
                  f"{key}.weights_only.{which}",
                  help="The state dict alone: model.load_state_dict(torch.load(path, weights_only=True)) into the "
                       "exported code's class or the studio model.")
        _download("Python code (.py)", f"{stem}.py", lambda: _code(run_id, which),
                  f"{key}.code.{which}", help="The model's source; load the weights-only file into it.")
    cols = st.columns(len(_MODEL_FORMATS))
    mtime = _mtime(path)
    for col, fmt in zip(cols, _MODEL_FORMATS, strict=True):
        build_key = (run_id, which, fmt, mtime)
        result = st.session_state.get(_BUILT, {}).get(build_key)
        label = _LABELS[fmt]
        if isinstance(result, dict):
            for name, data in result.items():
                with col:
                    _download(f"{label} (.{_EXTENSIONS[fmt]})", name, data, f"{key}.dl.{fmt}.{which}",
                              help=_HELP[fmt])
        else:
            col.button(f"Build {label}", key=f"{key}.make.{fmt}.{which}", on_click=_build,
                       args=(build_key, run_id, fmt, which), icon=":material/build:", help=_HELP[fmt])
            if isinstance(result, str):
                col.error(st_escape(result))
