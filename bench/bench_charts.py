"""The Train page's live-chart fragment with a 1,000,000-step history: what one refresh costs.

A run with 1,000,000 logged steps (train_loss, lr, samples_per_sec each step; val_loss and
val_accuracy every 1,000 steps: 3,002,000 metric rows) sits in a temporary run store. One refresh
is what the fragment does every second: read the rows logged since the last read (100 new steps),
smooth and downsample every series, build the figures and serialise them as Streamlit does
(plotly.io.to_json). The view (studio.runs.history.MetricHistory) reads only bucket summaries, so its
first read is shown apart but no longer grows with the history. Goals: a refresh at most 100 ms of
server time; the loss figure's JSON at most 200 KB. bench_history.py measures the pages themselves.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import plotly.io as pio

from bench.common import report
from components.figures.charts import MetricHistory, run_figures
from studio.runs.store import Store

STEPS = 1_000_000
NEW_PER_TICK = 100
TIME_GOAL_S = 0.100
SIZE_GOAL = 200_000


def _rows(first: int, last: int, rng) -> list[tuple]:
    steps = np.arange(first, last + 1)
    loss = 2.0 * np.exp(-steps / 2e5) + 0.05 * rng.standard_normal(len(steps))
    rows = []
    for s, v in zip(steps.tolist(), loss.tolist(), strict=True):
        epoch, wall = (s - 1) // 1000, 1e9 + s * 0.01
        rows += [(s, epoch, "train", "train_loss", v, wall), (s, epoch, "train", "lr", 1e-3, wall),
                 (s, epoch, "train", "samples_per_sec", 5000.0 + s % 97, wall)]
        if s % 1000 == 0:
            rows += [(s, epoch, "val", "val_loss", v + 0.1, wall), (s, epoch, "val", "val_accuracy", 1 - v / 3, wall)]
    return rows


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "studio.db")
        store.create_run("bench", name="bench", graph={}, config={}, dataset_id="digits")
        t = time.perf_counter()
        for start in range(1, STEPS + 1, 100_000):
            store.write_metrics("bench", _rows(start, start + 99_999, rng))
        print(f"       (store filled with {3 * STEPS + 2 * STEPS // 1000:,} rows in {time.perf_counter() - t:.1f} s)")

        history = MetricHistory("bench")
        t = time.perf_counter()
        history.update(store)
        cold = time.perf_counter() - t
        print(f"INFO  first read of the bounded view (once per session and run): {cold * 1000:.0f} ms, "
              f"{history.held_points()} records held")

        ticks, sizes, next_step = [], None, STEPS + 1
        for _ in range(7):
            store.write_metrics("bench", _rows(next_step, next_step + NEW_PER_TICK - 1, rng))
            next_step += NEW_PER_TICK
            t = time.perf_counter()
            history.update(store, 0.6)
            figures = run_figures([("bench", history, 1000.0)], x_axis="step", smoothing=0.6)
            payloads = {title: pio.to_json(fig, validate=False) for title, fig in figures}
            ticks.append(time.perf_counter() - t)
            sizes = {title: len(p.encode()) for title, p in payloads.items()}
        tick = statistics.median(ticks)
        points = max(len(tr.x) for _, fig in figures for tr in fig.data)
        report("one live-chart refresh (read new rows + smooth + downsample + 4 figures + JSON)", tick * 1000,
               f"<= {TIME_GOAL_S * 1000:.0f} ms", tick <= TIME_GOAL_S, " ms")
        report("loss figure JSON payload", sizes["Loss"] / 1000, f"<= {SIZE_GOAL / 1000:.0f} KB",
               sizes["Loss"] <= SIZE_GOAL, " KB")
        print(f"INFO  all {len(sizes)} figures together: {sum(sizes.values()) / 1000:.1f} KB "
              f"({', '.join(f'{k} {v / 1000:.1f} KB' for k, v in sizes.items())}); at most {points} points per trace; "
              f"history {history.points('train_loss'):,} steps; {os.cpu_count()} cores")
        store.close()


if __name__ == "__main__":
    main()
