"""The compiled int8 path against onnxruntime int8 (issue 26): PT2E static int8 (torchao's X86InductorQuantizer,
the studio's int8-static variant) run by torch.compile (inductor, CPU, freezing on: the int8 weights prepacked
for oneDNN's qconv/qlinear kernels), against fp32 in PyTorch eager, fp32 under the same torch.compile (for
fairness: inductor speeds fp32 up too), and fp32 / int8 static in onnxruntime (the studio's onnx-fp32 and
onnx-int8-static rows). For the seed MLP, the padded seed CNN and the ResNet-18 of bench_deploy, trained on
`shapes` through the real worker.

    python -m bench.bench_deploy_compiled                       # trains the three models in a temporary workspace
    python -m bench.bench_deploy_compiled --runs "ResNet-18=RUN_ID" --workspace W   # reuse trained runs

Per model: accuracy on the validation split (the compiled modules are evaluated at batch 64, the last batch
padded, so they never recompile), latency per sample at batch 1 and 64 (studio.deploy.measure.latency: one
thread, every variant timed in turn within each of 15 repeats, medians), and compile time (the first call at
batch 1 plus the first call at batch 64, in a fresh inductor cache directory: a cold compile, which a
deployment pays at every start unless it ships an AOTInductor package). torch.compile(dynamic=False): one
graph per batch size, as a server with fixed batch shapes would run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

# a cold compile: an empty inductor cache for this process (set before torch is imported)
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench-deploy-compiled-inductor-"))

BATCHES = (1, 64)
VARIANTS = ("fp32 eager", "fp32 compiled", "int8 PT2E compiled", "fp32 onnxruntime", "int8 onnxruntime")
RUNTIMES = {"fp32 eager": "PyTorch eager", "fp32 compiled": "torch.compile (inductor)",
            "int8 PT2E compiled": "torch.compile (inductor)", "fp32 onnxruntime": "onnxruntime",
            "int8 onnxruntime": "onnxruntime"}


class Compiled:
    """A torch.compile'd module, compiled for each batch size of BATCHES on first use (timed: `compile_s`);
    `runner(x)` is what measure.latency times."""

    def __init__(self, module):
        import torch

        self.fn = torch.compile(module, backend="inductor", dynamic=False)
        self.compile_s = 0.0

    def warm(self, x) -> None:
        import torch

        with torch.no_grad():
            t0 = time.perf_counter()
            self.fn(x)
            self.compile_s += time.perf_counter() - t0

    def __call__(self, x):
        return self.fn(x)

    def runner(self, x):
        return lambda: self.fn(x)


def accuracy(module, dataset, batch: int = 64) -> float:
    """Validation accuracy with every call at exactly `batch` samples (the last batch padded with copies of its
    own samples and the padding's outputs dropped), so a compiled module keeps its one graph per shape."""
    import torch

    from studio.deploy.report import _fill

    right = total = 0
    with torch.no_grad():
        for x, y in dataset.batches("val", batch, shuffle=False, generator=None):
            n = x.shape[0]
            out = module(_fill(x, batch) if n < batch else x)[:n]
            right += int((out.argmax(1) == y).sum())
            total += n
    return right / total


def measure_model(label: str, run_id: str, repeats: int) -> dict:
    import torch
    import torch._inductor.config as inductor_config

    from studio.deploy import measure, onnxrt
    from studio.deploy.report import EXAMPLE_BATCH, _fill, calibration_inputs
    from studio.deploy.variants import make_variant
    from studio.inspection import load_model, load_run, load_run_dataset

    inductor_config.freezing = True  # the weights are constants: folded and prepacked (the int8 recipe needs it)
    torch.set_num_threads(1)
    run = load_run(run_id)
    model = load_model(run, "best" if "best" in run.checkpoints() else "last")
    dataset = load_run_dataset(run)
    example = next(iter(dataset.batches("val", EXAMPLE_BATCH, shuffle=False, generator=None)))[0]
    calibration = calibration_inputs(dataset, int(run.config.batch_size), 8)
    val_x = next(iter(dataset.batches("val", 64, shuffle=False, generator=None)))[0]
    inputs = {1: val_x[:1].contiguous(), 64: _fill(val_x, 64)}

    t0 = time.perf_counter()
    int8 = make_variant(load_model(run, "best" if "best" in run.checkpoints() else "last"), "int8-static",
                        calibration=calibration, example=example).module
    quantize_s = time.perf_counter() - t0
    modules = {"fp32 eager": model, "fp32 compiled": Compiled(model), "int8 PT2E compiled": Compiled(int8)}
    for name in ("fp32 compiled", "int8 PT2E compiled"):
        for b in BATCHES:
            modules[name].warm(inputs[b])
    fp32_onnx = onnxrt.fp32_onnx(model)
    int8_onnx, _ = onnxrt.quantize_int8_static(fp32_onnx, calibration)
    modules["fp32 onnxruntime"], modules["int8 onnxruntime"] = onnxrt.OrtModel(fp32_onnx), onnxrt.OrtModel(int8_onnx)
    acc = {name: accuracy(m, dataset) for name, m in modules.items()}
    load_before = os.getloadavg()[0]
    times = measure.latency(modules, inputs, repeats=repeats)
    load_after = os.getloadavg()[0]
    compile_s = {name: m.compile_s for name, m in modules.items() if isinstance(m, Compiled)}
    return {"label": label, "run": run_id, "acc": acc, "times": times, "compile_s": compile_s,
            "quantize_s": quantize_s, "load": (load_before, load_after)}


def table(results: list[dict]) -> str:
    lines = ["| model | variant | runtime | accuracy | ms/sample @1 | ms/sample @64 | @1 × fp32 eager | "
             "@64 × fp32 eager | compile (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ref = r["times"]["fp32 eager"]
        for name in VARIANTS:
            t = r["times"][name]
            comp = f"{r['compile_s'][name]:.1f}" if name in r["compile_s"] else ""
            lines.append(f"| {r['label']} | {name} | {RUNTIMES[name]} | {r['acc'][name]:.4f} | {t[1]:.4f} | "
                         f"{t[64]:.4f} | {t[1] / ref[1]:.2f} | {t[64] / ref[64]:.2f} | {comp} |")
    lines += ["", "| model | int8 compiled vs int8 onnxruntime @1 (>1: compiled faster) | @64 | "
              "int8 compiled vs fp32 compiled @1 | @64 | load average (before, after timing) |",
              "|---|---|---|---|---|---|"]
    for r in results:
        t = r["times"]
        c, o, f = t["int8 PT2E compiled"], t["int8 onnxruntime"], t["fp32 compiled"]
        lines.append(f"| {r['label']} | {o[1] / c[1]:.2f} | {o[64] / c[64]:.2f} | {f[1] / c[1]:.2f} | "
                     f"{f[64] / c[64]:.2f} | {r['load'][0]:.1f}, {r['load'][1]:.1f} |")
    return "\n".join(lines)


def main(argv=()) -> int:
    from bench.bench_deploy import DATASET_OPTIONS, MODELS, WIDEN, train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="seed MLP,seed CNN,ResNet-18",
                   help="comma-separated labels (default: %(default)s)")
    p.add_argument("--runs", default="", help="LABEL=RUN_ID,... trained runs to reuse (others are trained)")
    p.add_argument("--workspace", help="workspace of those runs / to train in (default: a new temporary one)")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(list(argv))
    os.environ["STUDIO_WORKSPACE"] = args.workspace or tempfile.mkdtemp(prefix="bench-deploy-compiled-")
    known = {m[0]: m for m in MODELS}
    given = dict(kv.split("=", 1) for kv in args.runs.split(",") if kv)
    labels = [m.strip() for m in args.models.split(",") if m.strip()]
    if any(m not in known for m in labels):
        raise SystemExit(f"--models: choose among {', '.join(known)}")
    import torch

    print(f"torch {torch.__version__}; load average at start {os.getloadavg()}", flush=True)
    results = []
    for label in labels:
        _, template, epochs = known[label]
        run_id = given.get(label) or train(template, epochs, WIDEN.get(label), DATASET_OPTIONS.get(label))
        results.append(measure_model(label, run_id, args.repeats))
        print(table(results[-1:]), flush=True)
    print("\nALL\n" + table(results))
    print(f"load average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
