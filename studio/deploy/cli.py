"""`python -m studio compress RUN_ID --method M [--format pt2|onnx] [--sparsity S] [--calibration-batches N]
[--budget POINTS] -o PATH [--json]`.

Measures the run's fp32 model and the chosen variant side by side on its validation split and writes
the variant: `--format pt2` (default) a torch.export program (load it with
`torch.export.load(PATH).module()`; int8-static needs `import torchao` first), `--format onnx` the
model for onnxruntime (`--method int8-static`: static int8 QDQ calibrated on N training batches, also
measured against fp32 in onnxruntime) with a `predict.py` beside it. Prints the figures the Deploy page
shows; with --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

COMPRESS_METHODS = ("int8-weight", "int8-dynamic", "int8-static", "prune", "prune-channels", "shrink-channels", "fp32")


def add_compress_parser(sub) -> None:
    c = sub.add_parser("compress", help="quantize or prune a trained run; measure it against fp32 and save it "
                                        "as a torch.export program")
    c.add_argument("run_id")
    c.add_argument("--method", required=True, choices=COMPRESS_METHODS)
    c.add_argument("--format", dest="fmt", default="pt2", choices=("pt2", "onnx"),
                   help="pt2: torch.export program; onnx: runs in onnxruntime (--method int8-static or fp32), "
                        "predict.py written beside it")
    c.add_argument("--sparsity", type=float, default=0.5, help="prune / prune-channels: the fraction zeroed")
    c.add_argument("--calibration-batches", type=int, default=8,
                   help="int8-static: training batches (the run's batch size) that calibrate the activations")
    c.add_argument("--budget", type=float, default=1.0,
                   help="accuracy points a variant may lose for the recommendation (percent for error metrics)")
    c.add_argument("--repeats", type=int, default=15, help="timings per variant (the median is reported)")
    c.add_argument("-o", "--output", required=True, metavar="PATH", help="where the .pt2 or .onnx file is written")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compress)


def _fmt_size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:,.1f} KiB"


def _ratio(a, b) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def cmd_compress(args: argparse.Namespace) -> int:
    from studio.deploy.report import compress
    from studio.errors import ExportError

    if args.repeats < 1:
        raise ExportError(f"--repeats {args.repeats} must be at least 1")
    r = compress(args.run_id, args.method, args.output, sparsity=args.sparsity, repeats=args.repeats, fmt=args.fmt,
                 calibration_batches=args.calibration_batches, budget=args.budget)
    name, batch = r["metric_name"], r["latency_batch"]
    lines = [
        f"run {r['run_id']}: {r['variant']} ({r['runtime']}) against fp32 (PyTorch eager), on the validation split",
        f"  {name}: {r['fp32_metric']:.4f} -> {r['metric']:.4f} ({r['metric'] - r['fp32_metric']:+.4f})",
        f"  file size: {_fmt_size(r['fp32_bytes'])} -> {_fmt_size(r['bytes'])} "
        f"({_ratio(r['bytes'], r['fp32_bytes'])}); tensor bytes {_ratio(r['weight_bytes'], r['fp32_weight_bytes'])}",
        f"  non-zero parameters: {r['nonzero_params']:,} of {r['params']:,}",
        f"  CPU latency per sample, 1 thread, median of {args.repeats} interleaved timings:",
    ]
    for row in r["rows"]:
        if row["ok"]:
            lines.append(f"    {row['method']:<18} {row['runtime']:<14} batch 1: {row['latency_ms_batch1']:.4f} ms   "
                         f"batch {batch}: {row['latency_ms_batch']:.4f} ms   {_fmt_size(row['bytes'])}")
    for note in r["notes"]:
        lines.append(f"  note: {note}")
    lines.append(f"  verdict (budget {r['recommendation']['budget']:g}): {r['recommendation']['verdict']}")
    lines.append(f"  wrote {r['path']} (loads with {r['loads_with']})")
    if r.get("graph"):
        lines.append(f"  wrote {r['graph']} (the smaller graph: open it in Build, or train and export it)")
    if r.get("predict_script"):
        lines.append(f"  wrote {r['predict_script']} (python predict.py [inputs.npy])")
    print("\n".join(lines))
    if args.json:
        print(json.dumps(r))
    return 0
