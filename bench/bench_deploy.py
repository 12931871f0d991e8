"""Deploy variants of the seed CNN (padded) and the seed MLP trained on `digits`: size and CPU latency
ratio of each variant against fp32, and the accuracy change, measured by studio.deploy (every variant
timed in turn on one thread, medians).

    python -m bench.bench_deploy          # trains both in a temporary workspace through the real worker

Goal: int8 at <= 0.3x size with at most 1 point of accuracy lost.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

GOAL_SIZE, GOAL_POINTS = 0.3, 1.0


def train(template: str, epochs: int) -> str:
    from studio.data import apply_dataset, get_info
    from studio.runs import list_runs, reconcile, start_run
    from studio.templates import load_template
    from studio.training import TrainConfig

    graph = apply_dataset(load_template(template), get_info("digits"))
    run_id = start_run(graph, "digits", TrainConfig(epochs=epochs, batch_size=64, probes=False, seed=0))
    while True:
        reconcile()
        run = next(r for r in list_runs() if r.id == run_id)
        if not run.active:
            break
        time.sleep(0.5)
    if run.status != "completed":
        raise SystemExit(f"{template} did not train: {run.status} {run.error}")
    return run_id


def main() -> int:
    from bench.common import report
    from studio.deploy import deploy_report

    os.environ["STUDIO_WORKSPACE"] = tempfile.mkdtemp(prefix="bench-deploy-")
    lines = ["| model | variant | accuracy change (points) | file size × fp32 | weight bytes × fp32 | "
             "non-zero / params | latency × fp32 @1 | latency × fp32 @64 |", "|---|---|---|---|---|---|---|---|"]
    ok_all = True
    for template, epochs in (("seed_cnn_padded", 4), ("mlp", 10)):
        run_id = train(template, epochs)
        r = deploy_report(run_id, sparsity=0.5, repeats=15)
        fp32 = r.row("fp32")
        print(f"{template}: fp32 val_accuracy {fp32.metric:.4f}, file {fp32.bytes:,} B, "
              f"weights {fp32.weight_bytes:,} B, "
              f"{fp32.latency_ms_batch1:.4f} ms/sample @1, {fp32.latency_ms_batch:.4f} ms/sample @64", flush=True)
        for row in r.rows:
            if not row.ok:
                lines.append(f"| {template} | {row.method} | not supported: {row.message} | | | | | |")
                continue
            points = row.delta * 100
            size, wsize = row.bytes / fp32.bytes, row.weight_bytes / fp32.weight_bytes
            lat1 = row.latency_ms_batch1 / fp32.latency_ms_batch1
            latb = row.latency_ms_batch / fp32.latency_ms_batch
            lines.append(f"| {template} | {row.method} | {points:+.2f} | {size:.2f} | {wsize:.2f} | "
                         f"{row.nonzero_params:,} / {row.params:,} | {lat1:.2f} | {latb:.2f} |")
            print(lines[-1], flush=True)
            if row.method.startswith("int8"):
                ok = wsize <= GOAL_SIZE and points >= -GOAL_POINTS
                ok_all &= ok
                report(f"{template} {row.method} weight bytes x fp32 (accuracy {points:+.2f} points)", wsize,
                       f"<= {GOAL_SIZE} with >= -{GOAL_POINTS} point", ok, "x")
    print("\n".join(lines))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
