"""What live TensorBoard logging costs a run (studio.tracking.live), measured side by side.

1. Metric rows: the worker's MetricWriter committing 3 metrics a step to the store alone, and to the
   store mirrored to a TensorBoard event file (MirroredStore), interleaved repetitions, medians.
   Goal: the mirror adds at most 1% of a 7 ms training step (70 us) per step.
2. A whole run in this process (build_trainer + fit, a 1024-wide MLP on digits, 2 epochs, probes at
   epoch ends): without and with TensorBoard (mirrored rows, histograms at the probe steps, graph text,
   hparams), interleaved pairs, the median of the paired ratios. Goal: <= 1.05x.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.common import interleaved, report

STEPS = 20_000


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

        t = interleaved({"store": write(store, "a"), "mirrored": write(mirrored, "b")}, reps=5)
    plain, tb = t["store"] / STEPS * 1e6, t["mirrored"] / STEPS * 1e6
    print(f"      per step: store {plain:.1f} us, store + TensorBoard {tb:.1f} us")
    report("TensorBoard mirror, extra cost per step (3 metrics)", tb - plain, "<= 70 us (1% of a 7 ms step)",
           tb - plain <= 70, " us")


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
            config = {"epochs": 2, "batch_size": 32, "seed": 1}
            rd.create(graph_json=json.dumps(graph), config=config, meta=meta)
            tags = {"tensorboard": str(Path(tmp) / "tb")} if tensorboard else None
            store.create_run(run_id, name=run_id, graph=graph, config=config, dataset_id="digits", tags=tags)
            t = time.perf_counter()
            run_store, extra = live_tensorboard(rd, meta, store, quiet)
            trainer, _ = build_trainer(rd, meta, run_store, quiet, extra_callbacks=extra)
            trainer.fit()
            return time.perf_counter() - t

        one("warm", False)
        ratios, plain, tb = [], [], []
        for i in range(pairs):
            a, b = one(f"plain{i}", False), one(f"tb{i}", True)
            plain.append(a)
            tb.append(b)
            ratios.append(b / a)
    print(f"      paired ratios {', '.join(f'{r:.3f}' for r in ratios)}; medians {statistics.median(plain):.2f} s "
          f"without, {statistics.median(tb):.2f} s with")
    ratio = statistics.median(ratios)
    report("whole run with live TensorBoard / without", ratio, "<= 1.05x", ratio <= 1.05, "x")


def main() -> None:
    import torch

    torch.set_num_threads(1)
    metric_rows()
    whole_run()


if __name__ == "__main__":
    main()
