"""Model exports besides code: PyTorch 2 programs, ONNX, TorchScript and the weights as a state dict.

Each takes a graph (compiled here with a fixed seed: untrained weights) or an already built model (a
trained one), exports it in evaluation mode (dropout off, batch-norm running statistics) and returns bytes:

- A `torch.export` program (`.pt2`, the batch dimension dynamic): the main deployable artifact;
  `torch.export.load(path).module()` runs it in any Python with torch, no studio needed.
- ONNX with PyTorch's torch.export-based exporter (the batch dimension is dynamic); run it with
  onnxruntime. A model that exporter cannot take is an ExportError naming the reason.
- TorchScript by `torch.jit.trace` (legacy: TorchScript is deprecated in PyTorch 2 and its save/load
  warn; kept while it works); load it with `torch.jit.load`.
- The state dict as `torch.save` bytes, loadable with `torch.load(..., weights_only=True)` into the
  studio model or the exported code's class (their parameter names are the same).

A run's trained weights export the same ways (`run_exports`, `write_run_export`; the CLI's
`python -m studio export --run RUN_ID`): its graph compiled and loaded with best.pt or last.pt.

    >>> from studio.templates import load_template
    >>> len(to_torchscript(load_template("mlp"))) > 0
    True
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from studio.compile import eval_mode
from studio.errors import ExportError
from studio.graph import Graph, atomic_write_bytes, atomic_write_text

EXAMPLE_BATCH = 2  # traced/exported with this batch; ONNX and .pt2 keep the batch dimension dynamic
MAX_BATCH = 1 << 16
ONNX_OPSET = 18
FORMATS = ("code", "pt2", "onnx", "torchscript")
WEIGHTS = ("best", "last")
EXTENSIONS = {"code": "py", "pt2": "pt2", "onnx": "onnx", "torchscript": "pt"}
LABELS = {"code": "Python code + weights", "pt2": "PyTorch 2 program", "onnx": "ONNX",
          "torchscript": "TorchScript (legacy)"}

# Known, harmless messages from inside PyTorch while exporting the studio's layers; everything else
# (a warning about the user's model) is shown. Each is (category, regex matching the message start).
_KNOWN_NOISE = (
    # nn.LSTM/GRU re-assign their flat weight list during forward; the program still holds the parameters.
    (UserWarning, r"The tensor attributes self\.\w+\._flat_weights"),
    # PyTorch's own internals calling its deprecated helpers (not something a user can act on).
    (FutureWarning, r"_check_is_size will be removed"),
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # TorchScript is labelled legacy wherever it is offered; the deprecation is said there once.
    (DeprecationWarning, r"`torch\.jit\.\w+` is deprecated"),
)


def _model_and_example(source: Graph | nn.Module, input_shape=None, input_dtype=None):
    """(model in eval mode, example input) for a graph or a module (a GraphModule knows its input)."""
    if isinstance(source, Graph):
        from studio.compile import compile_graph

        model = compile_graph(source, seed=0)
    elif isinstance(source, nn.Module):
        model = source
    else:
        raise ExportError(f"can only export a graph or an nn.Module, got {type(source).__name__}")
    shape = tuple(input_shape) if input_shape is not None else getattr(model, "input_shape", None)
    dtype = input_dtype if input_dtype is not None else getattr(model, "input_dtype", torch.float32)
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "int64": torch.int64}.get(dtype)
        if dtype is None:
            raise ExportError(f"input_dtype={input_dtype!r} is not supported; use 'float32' or 'int64'")
    if shape is None:
        raise ExportError("the model does not say what input it takes; pass input_shape (per sample, e.g. "
                          "(1, 28, 28)) and input_dtype")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    if dtype == torch.int64:
        example = torch.zeros((EXAMPLE_BATCH, *shape), dtype=torch.int64, device=device)  # id 0 always exists
    else:
        example = torch.randn((EXAMPLE_BATCH, *shape), generator=torch.Generator().manual_seed(0)).to(device)
    return model, example


@contextlib.contextmanager
def _known_noise_filtered():
    """Hide only the _KNOWN_NOISE warnings and the ONNX registry's 'torchvision is not installed' lines;
    any other warning raised while exporting reaches the user."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category, message in _KNOWN_NOISE:
                warnings.filterwarnings("ignore", message=message, category=category)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.modules\.rnn")
            yield
    finally:
        logger.setLevel(level)


def _first_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # the exporters colour their messages
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def _dynamic_batch() -> tuple[dict]:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def exported_program(source: Graph | nn.Module, *, input_shape=None, input_dtype=None):
    """The `torch.export.ExportedProgram` of the model in eval mode, with a dynamic batch dimension."""
    model, example = _model_and_example(source, input_shape, input_dtype)
    try:
        with eval_mode(model), _known_noise_filtered():
            return torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
    except Exception as e:  # torch.export raises many types (UserError, GuardOnDataDependentSymNode, ...)
        raise ExportError(f"torch.export failed on an input of shape {tuple(example.shape)} (batch dynamic): "
                          f"{_first_line(e)}") from None


def to_pt2(source: Graph | nn.Module, *, input_shape=None, input_dtype=None) -> bytes:
    """A `.pt2` PyTorch 2 program (torch.export, batch dynamic from 1 to MAX_BATCH) as bytes.

    `torch.export.load(path).module()(x)` runs it in a fresh interpreter without the studio.
    """
    program = exported_program(source, input_shape=input_shape, input_dtype=input_dtype)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def to_torchscript(source: Graph | nn.Module, *, input_shape=None, input_dtype=None) -> bytes:
    """TorchScript bytes (legacy; torch.jit.trace in eval mode); `torch.jit.load(io.BytesIO(data))` runs it."""
    model, example = _model_and_example(source, input_shape, input_dtype)
    try:
        with eval_mode(model), _known_noise_filtered(), torch.no_grad():
            traced = torch.jit.trace(model, (example,), check_trace=False)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)
    except (RuntimeError, TypeError, ValueError, AttributeError) as e:
        raise ExportError(f"TorchScript export failed while tracing the model on an input of shape "
                          f"{tuple(example.shape)}: {_first_line(e)}") from None
    return buffer.getvalue()


def to_onnx(source: Graph | nn.Module, *, input_shape=None, input_dtype=None) -> bytes:
    """ONNX bytes with input 'x' and a dynamic batch dimension (opset ONNX_OPSET), by PyTorch's
    torch.export-based exporter."""
    model, example = _model_and_example(source, input_shape, input_dtype)
    with eval_mode(model), _known_noise_filtered(), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["x"], output_names=["y"],
                                        dynamic_shapes=_dynamic_batch(), opset_version=ONNX_OPSET, verbose=False,
                                        external_data=False)
            program.save(str(path), external_data=False)
        except Exception as e:  # the exporter raises many types
            raise ExportError(f"ONNX export failed on an input of shape {tuple(example.shape)} (batch dynamic): "
                              f"{_first_line(e)}; the PyTorch 2 program (.pt2) or the code export may still "
                              "work") from None
        return path.read_bytes()


def state_dict_bytes(model: nn.Module) -> bytes:
    """The model's weights (and buffers such as batch-norm statistics) as torch.save bytes, on the CPU.

    Load with `torch.load(buffer, weights_only=True)` (buffer = io.BytesIO(data)), then load_state_dict.
    """
    if not isinstance(model, nn.Module):
        raise ExportError(f"state_dict_bytes needs an nn.Module, got {type(model).__name__}")
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


# ---- a run's trained weights ----------------------------------------------------------------------

def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def resolve_weights(run, weights: str | None) -> str:
    """'best' or 'last' as asked; None picks best when the run has one, else last. ExportError when the
    run has no such checkpoint yet, naming the ones it has."""
    have = run.checkpoints()
    if weights is None:
        if not have:
            raise ExportError(f"run {run.run_id!r} has no checkpoint yet (best.pt or last.pt); wait for its first "
                              "evaluation or epoch end, then export again")
        return have[0]
    if weights not in WEIGHTS:
        raise ExportError(f"weights={weights!r} is not a checkpoint name; use 'best' or 'last'")
    if weights not in have:
        other = f"; use --weights {have[0]}" if have else "; wait for its first evaluation or epoch end"
        raise ExportError(f"run {run.run_id!r} has no {weights}.pt checkpoint yet{other}")
    return weights


def trained_model(run_id: str, weights: str | None = None) -> tuple[nn.Module, str]:
    """(the run's graph compiled with the weights of its best.pt or last.pt, in eval mode on the CPU,
    the checkpoint used)."""
    from studio import inspection as ins

    run = ins.load_run(run_id)
    which = resolve_weights(run, weights)
    return ins.load_model(run, which), which


def run_exports(run_id: str, fmt: str, weights: str | None = None) -> dict[str, bytes]:
    """The files of one export of a run's trained model, {file name: bytes}.

    code: `<class>.py` (the model's source) and `<class>.weights.pt` (a weights-only state dict for it);
    pt2 / onnx / torchscript: one file `<run_id>-<weights>.<ext>`.
    """
    _check_format(fmt)
    model, which = trained_model(run_id, weights)
    stem = f"{run_id}-{which}"
    if fmt == "code":
        from studio import inspection as ins
        from studio.codegen import to_code

        graph = ins.load_run(run_id).graph
        return {f"{stem}.py": to_code(graph).encode(), f"{stem}.weights.pt": state_dict_bytes(model)}
    convert = {"pt2": to_pt2, "onnx": to_onnx, "torchscript": to_torchscript}[fmt]
    return {f"{stem}.{EXTENSIONS[fmt]}": convert(model)}


def weights_path(code_path: str | Path) -> Path:
    """The weights-only state dict written beside an exported `.py`: model.py -> model.weights.pt."""
    code_path = Path(code_path)
    return code_path.with_name(code_path.stem + ".weights.pt")


def write_run_export(run_id: str, fmt: str, path: str | Path, weights: str | None = None) -> tuple[list[Path], str]:
    """Export a run's trained model to `path` (code also writes the weights beside it, see weights_path).
    Returns (the paths written, the checkpoint used: 'best' or 'last')."""
    _check_format(fmt)
    path = Path(path)
    model, which = trained_model(run_id, weights)
    if fmt == "code":
        from studio import inspection as ins
        from studio.codegen import to_code

        atomic_write_text(path, to_code(ins.load_run(run_id).graph))
        atomic_write_bytes(weights_path(path), state_dict_bytes(model))
        return [path, weights_path(path)], which
    convert = {"pt2": to_pt2, "onnx": to_onnx, "torchscript": to_torchscript}[fmt]
    atomic_write_bytes(path, convert(model))
    return [path], which


def write_graph_export(graph: Graph, fmt: str, path: str | Path) -> Path:
    """Export a graph with untrained (seeded) weights: code through codegen, the binary formats here."""
    _check_format(fmt)
    path = Path(path)
    if fmt == "code":
        from studio.codegen import export_graph

        return export_graph(graph, fmt, path)
    convert = {"pt2": to_pt2, "onnx": to_onnx, "torchscript": to_torchscript}[fmt]
    atomic_write_bytes(path, convert(graph))
    return path


def checkpoint_weights_bytes(path: str | Path) -> bytes:
    """The model weights alone (a state dict) out of a full training checkpoint such as best.pt."""
    from studio.training.callbacks import load_checkpoint

    ckpt = load_checkpoint(path)  # weights_only=True; TrainError naming the file when damaged
    buffer = io.BytesIO()
    torch.save(ckpt["model"], buffer)
    return buffer.getvalue()


__all__ = ["EXAMPLE_BATCH", "EXTENSIONS", "FORMATS", "LABELS", "MAX_BATCH", "ONNX_OPSET", "WEIGHTS",
           "checkpoint_weights_bytes", "exported_program", "resolve_weights", "run_exports", "state_dict_bytes",
           "to_onnx", "to_pt2", "to_torchscript", "trained_model", "weights_path", "write_graph_export",
           "write_run_export"]
