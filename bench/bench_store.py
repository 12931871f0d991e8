"""Run store write and read rates: metric rows per second through the worker's batched MetricWriter,
an incremental read of the newest rows, and a full history read as one numpy table.

Goals: writing must cost well under 1% of a 7 ms training step (3 rows per step), and the live
chart's incremental read of the last 100 steps of a 100,000-step run must take under 10 ms.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import median_time, report
from studio.runs.store import MetricWriter, Store

STEPS = 100_000
ROWS_PER_STEP = 3  # train_loss, lr, samples_per_sec


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "studio.db")
        store.create_run("r", name="bench", graph={}, config={}, dataset_id="digits")
        writer = MetricWriter(store, "r")
        t = time.perf_counter()
        for step in range(1, STEPS + 1):
            writer.log(step, 0, "train", {"train_loss": 1.0 / step, "lr": 1e-3, "samples_per_sec": 1000.0})
            writer.end_step(step)
        writer.close()
        write_s = time.perf_counter() - t
        rows = STEPS * ROWS_PER_STEP
        per_step_us = write_s / STEPS * 1e6
        report("store writes (batched, WAL)", rows / write_s, ">= 100,000 rows/s", rows / write_s >= 1e5, " rows/s")
        report("store write cost per training step (3 metrics)", per_step_us, "<= 70 us (1% of a 7 ms step)",
               per_step_us <= 70, " us")
        tail = median_time(lambda: store.read_metrics("r", since_step=STEPS - 100), reps=20)
        report("incremental read of the last 100 steps (300 rows)", tail * 1000, "<= 10 ms", tail <= 0.010, " ms")
        full = median_time(lambda: store.read_metric_table("r"), reps=3)
        report(f"full history as one table ({rows:,} rows)", rows / full, ">= 500,000 rows/s", rows / full >= 5e5,
               " rows/s")


if __name__ == "__main__":
    main()
