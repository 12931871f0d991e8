"""The deploy table of a finished run: every variant measured on the run's own validation split.

    >>> report = deploy_report(run_id, ["fp32", "int8-weight", "prune"], sparsity=0.5)  # doctest: +SKIP
    >>> [(r.method, r.metric, r.bytes) for r in report.rows if r.ok]  # doctest: +SKIP

`compress(run_id, method, path)` is the CLI's one-variant form: it measures fp32 and the variant
side by side and writes the variant's torch.export program to `path`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from studio.deploy import measure
from studio.deploy.variants import DESCRIPTIONS, METHODS, check_sparsity, make_variant
from studio.errors import ExportError, StudioError

CALIBRATION_BATCHES = 8
EXAMPLE_BATCH = 2


@dataclass
class VariantRow:
    method: str
    description: str
    ok: bool = True
    message: str = ""            # why the variant does not exist for this graph (ok=False)
    metric_name: str = ""
    metric: float | None = None
    loss: float | None = None
    delta: float | None = None   # metric - fp32 metric (points of accuracy x 100 are delta * 100)
    bytes: int | None = None     # size of the saved torch.export program
    weight_bytes: int | None = None  # tensor data inside it
    params: int | None = None
    nonzero_params: int | None = None
    latency_ms_batch1: float | None = None
    latency_ms_batch: float | None = None  # per sample at the training batch size
    notes: list[str] = field(default_factory=list)
    program: bytes | None = field(default=None, repr=False)     # the .pt2 file
    state_dict: bytes | None = field(default=None, repr=False)  # torch.save of the studio model's weights

    def summary(self) -> dict:
        """The row without the file bytes (JSON-friendly)."""
        d = asdict(self)
        d.pop("program")
        d.pop("state_dict")
        return d


@dataclass
class DeployReport:
    run_id: str
    metric_name: str
    batch_size: int
    sparsity: float
    rows: list[VariantRow]

    def row(self, method: str) -> VariantRow:
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(method)


def deploy_report(run_id: str, methods=METHODS, *, sparsity: float = 0.5, which: str = "best",
                  repeats: int = 15, workspace=None) -> DeployReport:
    """Build and measure every variant in `methods` (fp32 is always measured first, as the reference)."""
    from studio.export import state_dict_bytes
    from studio.inspection import load_model, load_run, load_run_dataset

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ExportError(f"unknown method {unknown[0]!r}; use one of {', '.join(METHODS)}")
    if any(m.startswith("prune") for m in methods):
        check_sparsity(sparsity)
    run = load_run(run_id, workspace)
    if which not in run.checkpoints():
        which = (run.checkpoints() or [which])[0]  # a run stopped before its first evaluation has only 'last'
    model = load_model(run, which)
    dataset = load_run_dataset(run)
    if len(dataset.val) == 0:
        raise ExportError(f"run {run_id!r}'s dataset has an empty validation split; variants are measured on it")
    metric_name = measure.METRIC_NAMES[dataset.info.task]
    batch_size = int(run.config.batch_size)
    example = next(iter(dataset.batches("val", EXAMPLE_BATCH, shuffle=False, generator=None)))[0]
    calibration = [x for x, _ in _take(dataset.batches("train", batch_size, shuffle=False, generator=None),
                                       CALIBRATION_BATCHES)]
    order = ["fp32"] + [m for m in dict.fromkeys(methods) if m != "fp32"]
    rows, modules = [], {}
    for method in order:
        row = VariantRow(method, DESCRIPTIONS[method], metric_name=metric_name)
        rows.append(row)
        try:
            variant = make_variant(model, method, sparsity=sparsity, calibration=calibration, example=example)
        except StudioError as e:
            row.ok, row.message = False, str(e)
            continue
        row.notes = list(variant.notes)
        metrics = measure.evaluate(variant.module, dataset)
        row.metric, row.loss = metrics.get(metric_name), metrics.get("val_loss")
        row.params, row.nonzero_params = measure.weight_counts(variant.module)
        try:
            row.program = measure.export_program(variant.module, example)
            row.bytes, row.weight_bytes = len(row.program), measure.weight_bytes(row.program)
        except ExportError as e:
            row.notes.append(f"no program download: {e}")
        if variant.state_dict_ok:
            row.state_dict = state_dict_bytes(variant.module)
        modules[method] = variant.module
    val_x = torch.cat([x for x, _ in _take(dataset.batches("val", batch_size, shuffle=False, generator=None), 1)])
    inputs = {1: val_x[:1]}
    if batch_size > 1:
        inputs[batch_size] = _fill(val_x, batch_size)
    times = measure.latency(modules, inputs, repeats=repeats)
    fp32 = rows[0]
    for row in rows:
        if row.method in times:
            row.latency_ms_batch1 = times[row.method][1]
            row.latency_ms_batch = times[row.method].get(batch_size, row.latency_ms_batch1)
        if row.ok and row.metric is not None and fp32.metric is not None:
            row.delta = row.metric - fp32.metric
    return DeployReport(run_id, metric_name, batch_size, sparsity, rows)


def _take(it, n: int):
    for i, item in enumerate(it):
        if i >= n:
            break
        yield item


def _fill(x: torch.Tensor, n: int) -> torch.Tensor:
    """`n` samples from `x`, repeating them when the split is smaller than a batch."""
    reps = -(-n // x.shape[0])
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:n].contiguous()


def compress(run_id: str, method: str, path: str | Path, *, sparsity: float = 0.5, repeats: int = 15,
             workspace=None) -> dict:
    """Measure fp32 and `method` side by side, write the variant's torch.export program to `path`, and
    return the CLI's figures (the keys of `compress --json`)."""
    if method == "fp32" or method not in METHODS:
        choices = ", ".join(m for m in METHODS if m != "fp32")
        raise ExportError(f"method {method!r} is not a compression method; use one of {choices}")
    report = deploy_report(run_id, [method], sparsity=sparsity, repeats=repeats, workspace=workspace)
    fp32, row = report.row("fp32"), report.row(method)
    if not row.ok:
        raise ExportError(row.message)
    if row.program is None:
        raise ExportError(f"{method} of run {run_id!r} was measured but cannot be saved: {'; '.join(row.notes)}")
    from studio.graph import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, row.program)
    return {"run_id": run_id, "method": method, "metric_name": report.metric_name, "fp32_metric": fp32.metric,
            "metric": row.metric, "fp32_bytes": fp32.bytes, "bytes": row.bytes,
            "nonzero_params": row.nonzero_params, "params": row.params,
            "latency_ms_batch1": row.latency_ms_batch1, "fp32_latency_ms_batch1": fp32.latency_ms_batch1,
            "path": str(path.resolve())}
