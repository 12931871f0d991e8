"""Model exports besides code: TorchScript, ONNX and the weights as a state dict.

Each takes a graph (compiled here with a fixed seed) or an already built model (a trained one),
exports it in evaluation mode (dropout off, batch-norm running statistics) and returns bytes:

- TorchScript by `torch.jit.trace` (the studio's layer classes use Python features that
  `torch.jit.script` does not accept); load it with `torch.jit.load`.
- ONNX with PyTorch's torch.export-based exporter (the batch dimension is dynamic), falling back to
  the legacy TorchScript-based exporter for a model the new one cannot take; run it with onnxruntime.
- The state dict as `torch.save` bytes, loadable with `torch.load(..., weights_only=True)` into the
  studio model or the exported code's class (their parameter names are the same).

    >>> from studio.templates import load_template
    >>> len(to_torchscript(load_template("mlp"))) > 0
    True
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from studio.errors import ExportError
from studio.graph import Graph

EXAMPLE_BATCH = 2  # traced/exported with this batch; ONNX keeps the batch dimension dynamic
ONNX_OPSET = 18


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
def _eval_mode(model: nn.Module):
    """Evaluation mode for the export; a model that was training is put back into training mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' deprecation warnings and log chatter (e.g. 'torchvision is not installed')."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def to_torchscript(source: Graph | nn.Module, *, input_shape=None, input_dtype=None) -> bytes:
    """TorchScript bytes (torch.jit.trace in eval mode); `torch.jit.load(io.BytesIO(data))` runs it."""
    model, example = _model_and_example(source, input_shape, input_dtype)
    try:
        with _eval_mode(model), _quiet(), torch.no_grad():
            traced = torch.jit.trace(model, (example,), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    except (RuntimeError, TypeError, ValueError, AttributeError) as e:
        raise ExportError(f"TorchScript export failed while tracing the model on an input of shape "
                          f"{tuple(example.shape)}: {_first_line(e)}") from None
    return buffer.getvalue()


def to_onnx(source: Graph | nn.Module, *, input_shape=None, input_dtype=None) -> bytes:
    """ONNX bytes with input 'x' and a dynamic batch dimension (opset ONNX_OPSET)."""
    model, example = _model_and_example(source, input_shape, input_dtype)
    problems = []
    with _eval_mode(model), _quiet(), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            batch = torch.export.Dim("batch", min=1, max=1 << 16)
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["x"], output_names=["y"],
                                        dynamic_shapes=({0: batch},), opset_version=ONNX_OPSET, verbose=False,
                                        external_data=False)
            program.save(str(path), external_data=False)
            return path.read_bytes()
        except Exception as e:  # the exporter raises many types; fall back
            problems.append(f"torch.export-based exporter: {_first_line(e)}")
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=ONNX_OPSET)
            return path.read_bytes()
        except Exception as e:  # any failure of the fallback is reported with the first one
            problems.append(f"TorchScript-based exporter: {_first_line(e)}")
    raise ExportError("ONNX export failed with both of PyTorch's exporters; " + "; ".join(problems))


def state_dict_bytes(model: nn.Module) -> bytes:
    """The model's weights (and buffers such as batch-norm statistics) as torch.save bytes, on the CPU.

    Load with `torch.load(buffer, weights_only=True)` (buffer = io.BytesIO(data)), then load_state_dict.
    """
    if not isinstance(model, nn.Module):
        raise ExportError(f"state_dict_bytes needs an nn.Module, got {type(model).__name__}")
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


__all__ = ["EXAMPLE_BATCH", "ONNX_OPSET", "state_dict_bytes", "to_onnx", "to_torchscript"]
