"""What live TensorBoard logging costs a run (studio.tracking.live), measured side by side.

1. Metric rows: the worker's MetricWriter committing 3 metrics a step to the store alone, and to the
   store mirrored to a TensorBoard event file (MirroredStore), interleaved repetitions, medians.
   Goal: the mirror adds at most 1% of a 7 ms training step (70 us) per step.
2. A whole run in this process (build_trainer + fit, a 1024-wide MLP on digits, EPOCHS epochs, probes
   at epoch ends): without and with TensorBoard (mirrored rows, histograms at the probe steps, graph text,
   hparams), interleaved pairs, the median of the paired ratios. Goal: <= 1.05x.

Both are timed in CPU seconds of this process (`time.process_time`, every thread) as well as wall
seconds: on a machine shared with other work the CPU time is the steadier measure of what the
logging costs; the wall time is what a user waits.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.common import report

STEPS = 20_000
EPOCHS = 5  # 225 steps: the fixed costs (the event file, the graph's text, hparams) and the per-step ones both show


def metric_rows() -> None:
    from studio.runs.store import MetricWriter, Store
    from studio.tracking.live import LiveBoard, MirroredStore

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "studio.db")
        mirrored = MirroredStore(store, LiveBoard(Path(tmp) / "tb", lambda *a, **k: None))

        def write(target, run_id):
            def go():
                if not store.has_run(run_id):
                    store.create_run(run_id, name="bench", graph={}, config={}, dataset_id="digits")
                store.truncate_metrics(run_id, 0)
                writer = MetricWriter(target, run_id)
                for step in range(1, STEPS + 1):
                    writer.log(step, 0, "train", {"train_loss": 1.0 / step, "lr": 1e-3, "samples_per_sec": 1000.0})
                    writer.end_step(step)
                writer.close()
            return go

        variants = {"store": write(store, "a"), "mirrored": write(mirrored, "b")}
        cpu: dict = {k: [] for k in variants}
        wall: dict = {k: [] for k in variants}
        for rep in range(6):  # the first round warms up, then interleaved rounds
            for k, fn in variants.items():
                c, w = time.process_time(), time.perf_counter()
                fn()
                if rep:
                    cpu[k].append(time.process_time() - c)
                    wall[k].append(time.perf_counter() - w)
    per = {k: statistics.median(v) / STEPS * 1e6 for k, v in cpu.items()}
    per_wall = {k: statistics.median(v) / STEPS * 1e6 for k, v in wall.items()}
    print(f"      per step, CPU: store {per['store']:.1f} us, store + TensorBoard {per['mirrored']:.1f} us; wall: "
          f"{per_wall['store']:.1f} us, {per_wall['mirrored']:.1f} us")
    extra = per["mirrored"] - per["store"]
    report("TensorBoard mirror, extra CPU per step (3 metrics)", extra, "<= 70 us (1% of a 7 ms step)", extra <= 70,
           " us")


def whole_run(pairs: int = 5) -> None:
    from studio.runs.rundir import RunDir
    from studio.runs.store import Store
    from studio.tracking.live import live_tensorboard
    from studio.training.worker import build_trainer
    from tests.conftest import chain

    graph = chain(("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
                  ("fc1", "Linear", {"out_features": 1024}), ("relu1", "ReLU", None),
                  ("fc2", "Linear", {"out_features": 1024}), ("relu2", "ReLU", None),
                  ("fc3", "Linear", {"out_features": 10}), name="mlp1024")
    import json

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "studio.db")
        quiet = lambda *a, **k: None  # noqa: E731

        def one(run_id: str, tensorboard: bool) -> float:
            rd = RunDir(Path(tmp) / "runs" / run_id)
            meta = {"run_id": run_id, "dataset_id": "digits", "dataset_options": {}, "db": str(store.path),
                    "workspace": tmp, "backend": {"kind": "local"}}
            config = {"epochs": EPOCHS, "batch_size": 32, "seed": 1}
            rd.create(graph_json=json.dumps(graph), config=config, meta=meta)
            tags = {"tensorboard": str(Path(tmp) / "tb")} if tensorboard else None
            store.create_run(run_id, name=run_id, graph=graph, config=config, dataset_id="digits", tags=tags)
            t, c = time.perf_counter(), time.process_time()
            run_store, extra = live_tensorboard(rd, meta, store, quiet)
            trainer, _ = build_trainer(rd, meta, run_store, quiet, extra_callbacks=extra)
            trainer.fit()
            return time.process_time() - c, time.perf_counter() - t

        one("warm", False)
        cpu, wall = [], []
        for i in range(pairs):
            (ca, wa), (cb, wb) = one(f"plain{i}", False), one(f"tb{i}", True)
            cpu.append((ca, cb))
            wall.append((wa, wb))
    for name, pairs_ in (("CPU", cpu), ("wall", wall)):
        ratios = [b / a for a, b in pairs_]
        print(f"      {name}: paired ratios {', '.join(f'{r:.3f}' for r in ratios)}; medians "
              f"{statistics.median(a for a, _ in pairs_):.2f} s without, "
              f"{statistics.median(b for _, b in pairs_):.2f} s with")
    ratio = statistics.median(b / a for a, b in cpu)
    report("whole run with live TensorBoard / without, CPU", ratio, "<= 1.05x", ratio <= 1.05, "x")


def main() -> None:
    import torch

    torch.set_num_threads(1)
    metric_rows()
    whole_run()


if __name__ == "__main__":
    main()
