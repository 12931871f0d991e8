"""The deploy table of a finished run: every variant measured on the run's own validation split.

    >>> report = deploy_report(run_id, ["fp32", "int8-weight", "prune"], sparsity=0.5)  # doctest: +SKIP
    >>> [(r.method, r.metric, r.bytes) for r in report.rows if r.ok]  # doctest: +SKIP

`compress(run_id, method, path, fmt=)` is the CLI's one-variant form: it measures fp32 and the variant
side by side and writes the variant's torch.export program (fmt "pt2") or ONNX file (fmt "onnx", with
a predict.py beside it) to `path`.

Every variant is measured in the runtime it ships in (`VariantRow.runtime`): PyTorch eager for fp32,
the torchao/PT2E int8 and the pruned variants, onnxruntime on one thread for onnx-fp32 and
onnx-int8-static. Latency is per sample at batch 1 and batch LATENCY_BATCH (64), every variant timed
in turn, median of the repeats, one thread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from studio.deploy import measure
from studio.deploy.variants import (
    DESCRIPTIONS,
    GRAPH_METHODS,
    LOADS_WITH,
    METHODS,
    ONNX_METHODS,
    RUNTIMES,
    SHRUNK_ONNX,
    check_sparsity,
    make_variant,
)
from studio.errors import ExportError, StudioError

CALIBRATION_BATCHES = 8   # training batches that calibrate the static int8 variants (user-chosen)
MAX_CALIBRATION_BATCHES = 1000
EXAMPLE_BATCH = 2
LATENCY_BATCH = 64        # the second latency column: a batched server; the first is batch 1


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
    latency_ms_batch: float | None = None  # per sample at batch LATENCY_BATCH
    notes: list[str] = field(default_factory=list)
    program: bytes | None = field(default=None, repr=False)     # the .pt2 file
    state_dict: bytes | None = field(default=None, repr=False)  # torch.save of the studio model's weights
    runtime: str = "PyTorch eager"   # where it was measured and where its download runs
    file_format: str = "pt2"         # the download: "pt2" (torch.export program) or "onnx"
    onnx: bytes | None = field(default=None, repr=False)        # the .onnx file (onnxruntime variants)
    loads_with: str = ""             # exactly what loading the download needs
    graph: dict | None = field(default=None, repr=False)        # shrink-channels: the smaller graph document

    def summary(self) -> dict:
        """The row without the file bytes (JSON-friendly)."""
        d = asdict(self)
        for key in ("program", "state_dict", "onnx", "graph"):
            d.pop(key)
        return d

    @property
    def download(self) -> bytes | None:
        """The variant's deployable file: the .onnx for onnxruntime variants, the .pt2 program otherwise."""
        return self.onnx if self.file_format == "onnx" else self.program


@dataclass
class DeployReport:
    run_id: str
    metric_name: str
    batch_size: int
    sparsity: float
    rows: list[VariantRow]
    latency_batch: int = LATENCY_BATCH
    calibration_batches: int = CALIBRATION_BATCHES   # training batches the static int8 variants saw
    calibration_samples: int = 0
    input_shape: tuple = ()
    input_dtype: str = "float32"
    class_names: list | None = None
    data_description: str = ""
    dataset_id: str = ""
    dataset_options: dict = field(default_factory=dict)

    def row(self, method: str) -> VariantRow:
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(method)


def deploy_report(run_id: str, methods=METHODS, *, sparsity: float = 0.5, which: str = "best",
                  repeats: int = 15, calibration_batches: int = CALIBRATION_BATCHES, workspace=None) -> DeployReport:
    """Build and measure every variant in `methods` (fp32 is always measured first, as the reference).

    The static int8 variants (int8-static, onnx-int8-static) are calibrated on the first
    `calibration_batches` batches of the run's training split (never validation or test data)."""
    from studio.export import state_dict_bytes
    from studio.inspection import load_model, load_run, load_run_dataset

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ExportError(f"unknown method {unknown[0]!r}; use one of {', '.join(METHODS)}")
    if any(m.startswith(("prune", "shrink")) or m in SHRUNK_ONNX for m in methods):
        check_sparsity(sparsity)
    check_calibration_batches(calibration_batches)
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
    calibration = calibration_inputs(dataset, batch_size, calibration_batches)
    order = ["fp32"] + [m for m in dict.fromkeys(methods) if m != "fp32"]
    rows, modules, onnx_files = [], {}, {}
    for method in order:
        row = VariantRow(method, DESCRIPTIONS[method], metric_name=metric_name, runtime=RUNTIMES[method],
                         file_format="onnx" if method in ONNX_METHODS else "pt2", loads_with=LOADS_WITH[method])
        rows.append(row)
        if method in ONNX_METHODS:
            try:
                if method in SHRUNK_ONNX:  # the smaller graph of shrink-channels, int8 in onnxruntime
                    shrunk = _shrunk(run.graph, model, sparsity)
                    modules[method] = _measure_onnx(row, shrunk.module, "shrunk", calibration, dataset, onnx_files)
                    row.notes = shrunk.notes + row.notes
                else:
                    modules[method] = _measure_onnx(row, model, "fp32", calibration, dataset, onnx_files)
            except StudioError as e:
                row.ok, row.message = False, str(e)
            continue
        try:
            if method in GRAPH_METHODS:
                variant = _shrunk(run.graph, model, sparsity)
                row.graph = variant.graph_doc
            else:
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
    inputs = {1: val_x[:1], LATENCY_BATCH: _fill(val_x, LATENCY_BATCH)}
    times = measure.latency(modules, inputs, repeats=repeats)
    fp32 = rows[0]
    for row in rows:
        if row.method in times:
            row.latency_ms_batch1 = times[row.method][1]
            row.latency_ms_batch = times[row.method][LATENCY_BATCH]
        if row.ok and row.metric is not None and fp32.metric is not None:
            row.delta = row.metric - fp32.metric
    info = dataset.info
    return DeployReport(run_id, metric_name, batch_size, sparsity, rows, calibration_batches=len(calibration),
                        calibration_samples=sum(int(x.shape[0]) for x in calibration),
                        input_shape=tuple(info.input_shape), input_dtype=info.input_dtype,
                        class_names=list(info.class_names) if info.class_names else None,
                        data_description=info.description, dataset_id=run.dataset_id,
                        dataset_options=dict(run.dataset_options or {}))


def _shrunk(graph, model, sparsity: float):
    """shrink-channels as a Variant (its module is the smaller graph's model), with `graph_doc` set."""
    from studio.deploy.shrink import shrink_channels
    from studio.deploy.variants import Variant

    shrunk = shrink_channels(graph, model, sparsity)
    return Variant("shrink-channels", shrunk.model, list(shrunk.notes), graph_doc=shrunk.graph.to_dict())


def check_calibration_batches(n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CALIBRATION_BATCHES:
        raise ExportError(f"calibration_batches={n!r} is out of range; expected an integer 1 <= calibration_batches "
                          f"<= {MAX_CALIBRATION_BATCHES} (training batches the static int8 variants calibrate on)")


def calibration_inputs(dataset, batch_size: int, n: int) -> list[torch.Tensor]:
    """The inputs of the first `n` batches of the training split, in order (no shuffle): the only data the
    static int8 variants calibrate on. Validation and test data are never seen."""
    return [x for x, _ in _take(dataset.batches("train", batch_size, shuffle=False, generator=None), n)]


def _measure_onnx(row: VariantRow, model, key: str, calibration, dataset, files: dict):
    """Fill `row` for an onnxruntime variant of `model` and return its session (an OrtModel) for the timing
    loop. Each model's fp32 ONNX file is exported once (files[key]) and shared by the rows that need it."""
    from studio.deploy import onnxrt

    if key not in files:
        try:
            files[key] = onnxrt.fp32_onnx(model)
        except StudioError as e:
            files[key] = e
    if isinstance(files[key], StudioError):
        raise files[key]
    if row.method == "onnx-fp32":
        data = files[key]
    else:
        data, row.notes = onnxrt.quantize_int8_static(files[key], calibration)
    runner = onnxrt.OrtModel(data)
    metrics = measure.evaluate(runner, dataset)
    row.metric, row.loss = metrics.get(row.metric_name), metrics.get("val_loss")
    row.params, row.nonzero_params = onnxrt.weight_counts(data)
    row.onnx, row.bytes, row.weight_bytes = data, len(data), onnxrt.tensor_bytes(data)
    return runner


def _take(it, n: int):
    for i, item in enumerate(it):
        if i >= n:
            break
        yield item


def _fill(x: torch.Tensor, n: int) -> torch.Tensor:
    """`n` samples from `x`, repeating them when the split is smaller than a batch."""
    reps = -(-n // x.shape[0])
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:n].contiguous()


COMPRESS_FORMATS = ("pt2", "onnx")


def compress(run_id: str, method: str, path: str | Path, *, sparsity: float = 0.5, repeats: int = 15,
             fmt: str = "pt2", calibration_batches: int = CALIBRATION_BATCHES, budget: float | None = None,
             workspace=None) -> dict:
    """Measure fp32 and `method` side by side (and, for fmt "onnx", fp32 in onnxruntime too), write the
    variant to `path` and return the CLI's figures (the keys of `compress --json`, the page's columns).

    fmt "pt2": the variant's torch.export program. fmt "onnx": the variant run by onnxruntime (method
    int8-static -> onnx-int8-static, fp32 -> onnx-fp32), with `predict.py` written beside it.
    """
    from studio.deploy.recommend import DEFAULT_BUDGET, recommend

    if fmt not in COMPRESS_FORMATS:
        raise ExportError(f"format {fmt!r} is not known; use one of {', '.join(COMPRESS_FORMATS)}")
    onnx_of = {"int8-static": "onnx-int8-static", "fp32": "onnx-fp32"}
    if fmt == "onnx":
        if method not in onnx_of:
            raise ExportError(f"--format onnx runs in onnxruntime and takes --method int8-static (or fp32), got "
                              f"{method!r}; the torchao and pruned variants save as --format pt2")
        variant, methods = onnx_of[method], ["onnx-fp32", onnx_of[method]]
    else:
        if method == "fp32" or method not in METHODS or method in ONNX_METHODS:
            choices = ", ".join(m for m in METHODS if m != "fp32" and m not in ONNX_METHODS)
            raise ExportError(f"method {method!r} is not a compression method for --format pt2; use one of "
                              f"{choices}")
        variant, methods = method, [method]
    report = deploy_report(run_id, methods, sparsity=sparsity, repeats=repeats,
                           calibration_batches=calibration_batches, workspace=workspace)
    fp32, row = report.row("fp32"), report.row(variant)
    if not row.ok:
        raise ExportError(row.message)
    data = row.download
    if data is None:
        raise ExportError(f"{variant} of run {run_id!r} was measured but cannot be saved: {'; '.join(row.notes)}")
    from studio.graph import atomic_write_bytes, atomic_write_text

    path = Path(path)
    atomic_write_bytes(path, data)
    figures = {"run_id": run_id, "method": method, "variant": variant, "format": fmt, "runtime": row.runtime,
               "metric_name": report.metric_name, "fp32_metric": fp32.metric, "metric": row.metric,
               "delta": row.delta, "fp32_bytes": fp32.bytes, "bytes": row.bytes,
               "fp32_weight_bytes": fp32.weight_bytes, "weight_bytes": row.weight_bytes,
               "nonzero_params": row.nonzero_params, "params": row.params,
               "latency_ms_batch1": row.latency_ms_batch1, "fp32_latency_ms_batch1": fp32.latency_ms_batch1,
               "latency_batch": report.latency_batch, "latency_ms_batch": row.latency_ms_batch,
               "fp32_latency_ms_batch": fp32.latency_ms_batch, "threads": 1,
               "calibration_batches": report.calibration_batches if "int8-static" in variant else None,
               "loads_with": row.loads_with, "notes": list(row.notes), "path": str(path.resolve()),
               "rows": [r.summary() for r in report.rows]}
    rec = recommend(report, DEFAULT_BUDGET if budget is None else budget)
    figures["recommendation"] = rec.to_dict()
    if row.graph is not None:  # shrink-channels: the smaller graph its program and weights belong to
        import json

        graph_path = path.with_name(f"{path.stem}.graph.json")
        atomic_write_text(graph_path, json.dumps(row.graph, indent=2))
        figures["graph"] = str(graph_path.resolve())
    if fmt == "onnx":
        from studio.deploy.predict_script import predict_script

        script = path.with_name("predict.py")
        atomic_write_text(script, predict_script(report, row, path.name))
        figures["predict_script"] = str(script.resolve())
    return figures
