"""Live-chart refresh at 1,000,000 logged steps against TensorBoard's reload (issue 14 goal: <= 2x).

A store with a 1M-step run (bench_history's `long` run, written column-wise by bulk_write) gets 100
new steps before each measured call, so every call reads the 300 steps logged since its own last
turn; each repetition runs, interleaved, (1) the Train page fragment's refresh as it is:
update the bounded view, build the figures, serialise them as `st.plotly_chart` does; (2) the same
with Plotly's figure constructor run eagerly (the refresh before PlainFigure deferred it); (3) the
TensorBoard-equivalent reload emulated in bench_history (a 1,000-point reservoir per tag). CPU time,
medians. Quick: about a minute, most of it writing the store.

    python -m bench bench_refresh            (or: python bench/bench_refresh.py --reps 15)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_history as bh  # noqa: E402
from bench.common import report  # noqa: E402

STEPS = 1_000_000


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=15)
    args = p.parse_args(argv if argv is not None else [])
    import plotly.io as pio

    from components.figures.charts import run_figures
    from studio.runs.history import MetricHistory
    from studio.runs.store import Store

    print(f"      ({_load()} at the start)")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        seconds = bh.fill(Path(tmp), STEPS)
        print(f"      (store with a {STEPS:,}-step run written in {seconds:.0f} s; {time.perf_counter() - t:.0f} s)")
        store = Store(Path(tmp) / "studio.db")
        view = MetricHistory("long")
        view.update(store, 0.6)
        reservoir = bh._Reservoir(store, "long")
        rng = np.random.default_rng(1)
        next_step = STEPS + 1

        def tick(eager: bool):
            def run():
                view.update(store, 0.6)
                for _, fig in run_figures([("long", view, None)], smoothing=0.6):
                    if eager:
                        fig._build()  # Plotly's constructor, as every figure ran it before
                    pio.to_json(fig.to_dict(), validate=False)  # what st.plotly_chart does with a Figure

            return run

        variants = {"refresh": tick(False), "refresh, eager figures (before)": tick(True), "tb": reservoir.reload}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for rep in range(args.reps + 1):
            for name, fn in variants.items():  # 100 new steps before each, so every variant reads new rows
                store.write_metrics("long", bh.rows_for(next_step, next_step + 99, rng))
                next_step += 100
                cpu = bh._cpu(fn)
                if rep:  # the first round warms imports and caches
                    times[name].append(cpu)
        store.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"      {name}: {t * 1000:.1f} ms CPU (median of {args.reps})")
    before = med["refresh, eager figures (before)"] / med["tb"]
    ratio = med["refresh"] / med["tb"]
    print(f"      before this change: {before:.2f}x TensorBoard's reload")
    report("chart refresh / TensorBoard-equivalent reload, 1M steps (CPU)", ratio, "<= 2x", ratio <= 2.0, "x")
    print(f"      ({_load()} at the end)")


if __name__ == "__main__":
    main(sys.argv[1:])
