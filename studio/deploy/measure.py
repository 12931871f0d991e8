"""Measuring a model variant: task metric on a split, saved size, weight counts and CPU latency.

Latency is per sample, the median of repeated timings; every variant is timed in the same loop
(one call each, in turn, repeated), so a busy machine slows them all alike and the ratios hold.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
import zipfile

import torch
from torch import nn

from studio.errors import ExportError
from studio.export import _known_noise_filtered  # the same known warnings as every export, no others

METRIC_NAMES = {"classification": "val_accuracy", "regression": "val_mae", "sequence": "val_token_accuracy",
                "language_model": "val_token_accuracy"}
HIGHER_IS_BETTER = {"val_accuracy": True, "val_token_accuracy": True, "val_mae": False}


def evaluate(module: nn.Module, dataset, split: str = "val", batch_size: int = 256) -> dict:
    """The training loop's metrics of `module` on `split`: {"val_loss", "val_accuracy" | "val_mae" | ...}."""
    from studio.training.loop import Task

    info = dataset.info
    task = Task(info.task, num_classes=info.num_classes)
    batches = dataset.batches(split, batch_size, shuffle=False, generator=None)
    raw = task.evaluate(module, batches, torch.device("cpu"), contextlib.nullcontext)
    return {f"{split}_{k}": v for k, v in raw.items() if k != "confusion"}


def export_program(module: nn.Module, example: torch.Tensor) -> bytes:
    """`module` as a torch.export program (dynamic batch dimension), as the bytes of a .pt2 file.

    It loads with `torch.export.load(path).module()` in any interpreter with torch (no studio needed).
    """
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        with _known_noise_filtered():
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            buffer = io.BytesIO()
            torch.export.save(program, buffer)
    except Exception as e:  # torch.export raises many types; say which step failed
        text = str(e).strip()
        raise ExportError("torch.export could not capture this variant with a dynamic batch dimension: "
                          + (text.splitlines()[0] if text else type(e).__name__)[:300]) from None
    return buffer.getvalue()


def weight_bytes(program: bytes) -> int:
    """Bytes of tensor data (weights, buffers, constants) inside a .pt2 archive, without the graph text."""
    with zipfile.ZipFile(io.BytesIO(program)) as z:
        return sum(i.file_size for i in z.infolist()
                   if "/data/weights/" in i.filename or "/data/constants/" in i.filename)


def weight_counts(module: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters): quantized weights are counted in their int8 form (a weight that
    rounds to 0 is a zero); quantization scales and zero points are not parameters."""
    tensors = dict(module.named_parameters())
    if isinstance(module, torch.fx.GraphModule):  # a PT2E program keeps its int8 weights as attributes
        for node in module.graph.nodes:
            if node.op == "get_attr":
                value = module
                for part in node.target.split("."):
                    value = getattr(value, part)
                if isinstance(value, torch.Tensor):
                    tensors[node.target] = value
    params = nonzero = 0
    for name, t in tensors.items():
        leaf = name.rsplit(".", 1)[-1]
        if "scale" in leaf or "zero_point" in leaf:
            continue
        inner = getattr(t, "qdata", None)
        data = inner if isinstance(inner, torch.Tensor) else t
        params += data.numel()
        nonzero += int(torch.count_nonzero(data.detach()))
    return params, nonzero


def latency(modules: dict[str, nn.Module], inputs: dict[int, torch.Tensor], *, repeats: int = 15,
            min_seconds: float = 0.01) -> dict[str, dict[int, float]]:
    """{name: {batch_size: median milliseconds per sample}} for every module at every input batch, on one
    CPU thread (onnxruntime models: sessions made with one thread, timed through their `runner`).

    Each timing runs a module `inner` times (enough for about `min_seconds`, at least once, at most 200);
    the modules take turns within each repeat, so a busy machine slows them all alike.
    """
    out: dict[str, dict[int, list[float]]] = {name: {b: [] for b in inputs} for name in modules}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, as a small server or a worker would give it; steadier on a busy machine
    try:
        _time_all(modules, inputs, out, repeats, min_seconds)
    finally:
        torch.set_num_threads(threads)
    return {name: {b: statistics.median(v) for b, v in per.items()} for name, per in out.items()}


def _call(m, x):
    """The timed call: a module on `x`, or an onnxruntime model's own `runner(x)` (its input converted once,
    outside the timing)."""
    runner = getattr(m, "runner", None)
    return runner(x) if runner is not None else (lambda: m(x))


def _time_all(modules, inputs, out, repeats: int, min_seconds: float) -> None:
    with torch.no_grad():
        inner: dict[str, dict[int, int]] = {name: {} for name in modules}
        calls = {name: {b: _call(m, x) for b, x in inputs.items()} for name, m in modules.items()}
        for b in inputs:
            for name, per in calls.items():
                per[b]()  # warm up: first calls allocate and pick kernels
                t0 = time.perf_counter()
                per[b]()
                one = max(time.perf_counter() - t0, 1e-6)
                inner[name][b] = max(1, min(200, int(min_seconds / one)))  # each timing spans ~min_seconds
        for _ in range(repeats):
            for b in inputs:
                for name, per in calls.items():
                    call, n = per[b], inner[name][b]
                    t0 = time.perf_counter()
                    for _ in range(n):
                        call()
                    out[name][b].append((time.perf_counter() - t0) / n / b * 1000.0)
