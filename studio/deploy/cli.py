"""`python -m studio compress RUN_ID --method M [--sparsity S] -o PATH [--json]`.

Measures the run's fp32 model and the chosen variant side by side on its validation split, writes
the variant as a torch.export program (load it with `torch.export.load(PATH).module()`, no studio
needed) and prints the figures; with --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

COMPRESS_METHODS = ("int8-weight", "int8-dynamic", "int8-static", "prune", "prune-channels")


def add_compress_parser(sub) -> None:
    c = sub.add_parser("compress", help="quantize or prune a trained run; measure it against fp32 and save it "
                                        "as a torch.export program")
    c.add_argument("run_id")
    c.add_argument("--method", required=True, choices=COMPRESS_METHODS)
    c.add_argument("--sparsity", type=float, default=0.5, help="prune / prune-channels: the fraction zeroed")
    c.add_argument("--repeats", type=int, default=15, help="timings per variant (the median is reported)")
    c.add_argument("-o", "--output", required=True, metavar="PATH", help="where the .pt2 program is written")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compress)


def _fmt_size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:,.1f} KiB"


def cmd_compress(args: argparse.Namespace) -> int:
    from studio.deploy.report import compress
    from studio.errors import ExportError

    if args.repeats < 1:
        raise ExportError(f"--repeats {args.repeats} must be at least 1")
    r = compress(args.run_id, args.method, args.output, sparsity=args.sparsity, repeats=args.repeats)
    name = r["metric_name"]
    lines = [
        f"run {r['run_id']}: {r['method']} against fp32, on the validation split",
        f"  {name}: {r['fp32_metric']:.4f} -> {r['metric']:.4f} ({r['metric'] - r['fp32_metric']:+.4f})",
        f"  size: {_fmt_size(r['fp32_bytes'])} -> {_fmt_size(r['bytes'])} "
        f"({r['bytes'] / r['fp32_bytes']:.2f}x)",
        f"  non-zero parameters: {r['nonzero_params']:,} of {r['params']:,}",
        f"  CPU latency per sample at batch 1 (1 thread, median): {r['fp32_latency_ms_batch1']:.3f} ms -> "
        f"{r['latency_ms_batch1']:.3f} ms ({r['latency_ms_batch1'] / r['fp32_latency_ms_batch1']:.2f}x)",
        f"  wrote {r['path']} (torch.export program: torch.export.load(path).module()(x))",
    ]
    print("\n".join(lines))
    if args.json:
        print(json.dumps(r))
    return 0
