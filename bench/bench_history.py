"""Histories that scale: the Compare and Train pages and the live-chart refresh against runs of 10k to
10M logged steps, measured as a user meets them (Streamlit's AppTest runs the real pages), CPU time,
repetitions interleaved across the history lengths.

Each history length gets its own workspace with two completed runs: `long` (the length measured:
train_loss and lr every step, val_loss and val_accuracy every 1,000 steps, so 2,002,000 rows at 1M
steps) and `short` (1,000 steps), written straight into the store in batches of 100,000 steps (no
worker). Figures:

- Compare rerun: the page drawn again in a session that has already opened it with both runs picked
  (goal <= 300 ms, independent of history length). Its first visit is shown too; the final/best table
  is read from the raw rows on a server thread, and its wait is shown apart.
- Train first visit: a new session opening the Train page with the long run picked (goal <= 1 s);
  "session holds" is the pickled size of the session's chart state (the history views), which must
  not grow with the steps logged.
- Chart refresh: what the live fragment does each second after a worker logged 100 more steps: update
  the views, build the figures, serialise them as Streamlit does. tensorboard is not installed here,
  so it is compared with a TensorBoard-equivalent reload emulated in Python: a reservoir of 1,000
  points per tag (TensorBoard's default for scalars, last point kept) taking the 100 new points, then
  the scalars response for the 4 tags as JSON. That is a lower bound of TensorBoard's own reload
  (which also reads and parses the event file), so the ratio is conservative.

    python -m bench.bench_history            # 10k, 100k, 1M and 10M steps (the 10M store: ~3 min CPU)
    python -m bench.bench_history 10000 1e6  # chosen lengths
"""

from __future__ import annotations

import gc
import json
import math
import os
import pickle
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import report

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (10_000, 100_000, 1_000_000, 10_000_000)
CHUNK = 100_000
REPS = int(os.environ.get("BENCH_HISTORY_REPS", "3"))
COMPARE_GOAL_S, TRAIN_GOAL_S, REFRESH_GOAL_RATIO = 0.300, 1.0, 2.0
# The Compare table reads the raw rows on a server thread (about 70 s per million steps here): waited for up
# to this long, then shown as "> cap" (measured last, in a process of its own: see _measure_in_child).
TABLE_WAIT_CAP_S = float(os.environ.get("BENCH_HISTORY_TABLE_WAIT", "20"))


def rows_for(first: int, last: int, rng) -> list[tuple]:
    steps = np.arange(first, last + 1)
    loss = 2.0 * np.exp(-steps / max(1.0, last / 5)) + 0.05 * rng.standard_normal(len(steps))
    epoch = (steps - 1) // 10_000
    wall = 1e9 + steps * 0.01
    rows = list(zip(steps.tolist(), epoch.tolist(), ["train"] * len(steps), ["train_loss"] * len(steps),
                    loss.tolist(), wall.tolist(), strict=True))
    rows += list(zip(steps.tolist(), epoch.tolist(), ["train"] * len(steps), ["lr"] * len(steps),
                     [1e-3] * len(steps), wall.tolist(), strict=True))
    val = steps[steps % 1000 == 0]
    if len(val):
        v = 2.0 * np.exp(-val / max(1.0, last / 5)) + 0.1
        for key, values in (("val_loss", v), ("val_accuracy", 1 - v / 3)):
            rows += list(zip(val.tolist(), ((val - 1) // 10_000).tolist(), ["val"] * len(val), [key] * len(val),
                             values.tolist(), (1e9 + val * 0.01).tolist(), strict=True))
    return rows


def fill(workspace: Path, steps: int) -> float:
    """Two completed runs in a new store; returns the seconds it took."""
    from studio.runs.store import Store
    from studio.templates import list_templates, load_template
    from studio.training import TrainConfig

    t = time.perf_counter()
    store = Store(workspace / "studio.db")
    graph = load_template(list_templates()[0].name).to_dict()
    rng = np.random.default_rng(0)
    for run_id, n in (("short", 1000), ("long", steps)):
        store.create_run(run_id, name=run_id, graph=graph, config=TrainConfig().to_dict(), dataset_id="digits",
                         status="completed", total_steps=n)
        bulk_write(store, run_id, n, rng)
        time.sleep(0.01)  # `long` is the newer run: both pages pick it first
    store.close()
    return time.perf_counter() - t


# Bulk writes: a chunk of BULK_CHUNK steps holds whole buckets up to level BULK_LEVEL (8**6 = BULK_CHUNK), so
# those levels are computed per chunk; the few wider buckets are merged from the chunks' level-6 records.
BULK_LEVEL = 6
BULK_CHUNK = 8 ** BULK_LEVEL


def bulk_write(store, run_id: str, steps: int, rng) -> None:
    """The rows of `rows_for(1, steps)` and their min/max buckets, written as the store's own
    `write_metrics` would leave them but column-wise with numpy (tens of seconds for 10M steps instead
    of many minutes): raw rows through one executemany per chunk, bucket rows built from numpy columns
    (`history_buckets._levels`' merge), one transaction per chunk. tests/test_history.py's bucket invariants
    are what `check_bulk` compares on a small run."""
    from studio.runs import history_buckets as buckets
    from studio.runs import history_schema, timing

    conn = store.connect()
    # A store being generated has no reader and nothing to recover: write it once, not to the WAL and
    # then the database (the 10M-step store is 1.8 GB), without syncs; WAL again at the end.
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    tops: dict[str, list] = {}
    seconds, last = 0.0, None  # the run's training time (studio.runs.timing's fold, on numpy columns)
    for start in range(0, steps + 1, BULK_CHUNK):  # chunk [start, start + BULK_CHUNK) of aligned steps
        lo, hi = max(1, start), min(steps, start + BULK_CHUNK - 1)
        if lo > hi:
            continue
        series = _bulk_series(lo, hi, steps, rng)
        _, t_step, _, t_wall, _ = series["train_loss"]
        s, w = (np.r_[last[0], t_step], np.r_[last[1], t_wall]) if last else (t_step, t_wall)
        gaps = np.diff(w)
        seconds += float(gaps[(np.diff(s) >= 0) & (gaps <= timing.RESUME_GAP_S)].sum())
        last = (int(t_step[-1]), float(t_wall[-1]))
        with store.transaction():
            for key, (split, step, epoch, wall, value) in series.items():
                conn.executemany("INSERT INTO metrics (run_id, step, epoch, split, key, value, wall_time) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 zip([run_id] * len(step), step.tolist(), epoch.tolist(), [split] * len(step),
                                     [key] * len(step), value.tolist(), wall.tolist(), strict=True))
                rec = buckets.records_from_points(step, epoch, wall, value)
                ids = step.astype(np.int64)
                for level in range(1, BULK_LEVEL + 1):
                    ids = ids // history_schema.BASE
                    rec = buckets.merge(rec, ids)
                    ids = ids[buckets.run_starts(ids)]
                    conn.executemany(buckets._INSERT, _columns_to_rows(run_id, key, split, level, ids, rec))
                tops.setdefault(key, [split, [], []])
                tops[key][1].append(ids)
                tops[key][2].append(rec)
            conn.execute("UPDATE runs SET step=MAX(step, ?) WHERE id=?", (hi, run_id))
    with store.transaction():
        for key, (split, id_parts, rec_parts) in tops.items():
            ids, rec = np.concatenate(id_parts), buckets.concat(rec_parts)
            for level in range(BULK_LEVEL + 1, history_schema.LEVELS + 1):
                ids = ids // history_schema.BASE
                rec = buckets.merge(rec, ids)
                ids = ids[buckets.run_starts(ids)]
                conn.executemany(buckets._INSERT, _columns_to_rows(run_id, key, split, level, ids, rec))
    if last is not None:
        with store.transaction():
            conn.execute("INSERT OR REPLACE INTO run_timing (run_id, seconds, last_step, last_wall) "
                         "VALUES (?, ?, ?, ?)", (run_id, seconds, *last))
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA journal_mode=WAL")


def _bulk_series(lo: int, hi: int, steps: int, rng) -> dict:
    """{key: (split, step, epoch, wall, value)} of rows_for's series over steps lo..hi."""
    step = np.arange(lo, hi + 1)
    loss = 2.0 * np.exp(-step / max(1.0, steps / 5)) + 0.05 * rng.standard_normal(len(step))
    out = {"train_loss": ("train", step, (step - 1) // 10_000, 1e9 + step * 0.01, loss),
           "lr": ("train", step, (step - 1) // 10_000, 1e9 + step * 0.01, np.full(len(step), 1e-3))}
    val = step[step % 1000 == 0]
    if len(val):
        v = 2.0 * np.exp(-val / max(1.0, steps / 5)) + 0.1
        for key, values in (("val_loss", v), ("val_accuracy", 1 - v / 3)):
            out[key] = ("val", val, (val - 1) // 10_000, 1e9 + val * 0.01, values)
    return out


def _columns_to_rows(run_id: str, key: str, split: str, level: int, ids: np.ndarray, rec: dict):
    """Bucket rows as history_buckets._bucket_rows makes them (ints for counts, steps and epochs; None for NaN),
    converted a column at a time."""
    from studio.runs.history_schema import COLUMNS

    cols = []
    for c in COLUMNS:
        col = rec[c]
        nan = np.isnan(col)
        whole = c in ("rows", "count") or c.endswith(("_step", "_epoch"))
        values = np.where(nan, 0, col).astype(np.int64).tolist() if whole else col.tolist()
        if nan.any():
            values = [None if m else v for v, m in zip(values, nan.tolist(), strict=True)]
        cols.append(values)
    n = len(ids)
    return zip([run_id] * n, [key] * n, [level] * n, ids.tolist(), [split] * n, *cols, strict=True)


def check_bulk(tmp: Path, steps: int = 5000) -> None:
    """bulk_write leaves the same raw rows and buckets as Store.write_metrics of rows_for (small run)."""
    from studio.runs.store import Store

    tables = []
    for name, write in (("store", lambda st: st.write_metrics("r", rows_for(1, steps, np.random.default_rng(0)))),
                        ("bulk", lambda st: bulk_write(st, "r", steps, np.random.default_rng(0)))):
        store = Store(tmp / f"{name}.db")
        store.create_run("r", name="r", graph={}, config={}, dataset_id="digits")
        write(store)
        conn = store.connect()
        tables.append((sorted(tuple(r) for r in conn.execute("SELECT * FROM metrics")),
                       sorted(tuple(r) for r in conn.execute("SELECT * FROM metric_buckets")),
                       store.get_run("r").step, store.training_time("r")[0]))
        store.close()
    (raw_a, buckets_a, step_a, secs_a), (raw_b, buckets_b, step_b, secs_b) = tables
    assert raw_a == raw_b and step_a == step_b, "bulk_write's raw rows differ from Store.write_metrics'"
    assert abs(secs_a - secs_b) <= 1e-6 * secs_a, ("training time", secs_a, secs_b)
    sum_at = 5 + history_columns().index("sum")  # numpy adds a bucket's values pairwise: last-bit differences
    for a, b in zip(buckets_a, buckets_b, strict=True):
        assert a[:sum_at] + a[sum_at + 1:] == b[:sum_at] + b[sum_at + 1:], (a, b)
        assert abs(a[sum_at] - b[sum_at]) <= 1e-12 * max(1.0, abs(a[sum_at])), (a, b)


def history_columns() -> tuple[str, ...]:
    from studio.runs.history_schema import COLUMNS

    return COLUMNS


def _reset(workspace: Path, steps: int) -> None:
    from studio.runs.store import Store

    store = Store(workspace / "studio.db")
    if store.get_run("long").step > steps:
        store.truncate_metrics("long", steps)
    store.close()


def fill_only(lengths) -> None:
    """Generate the stores into BENCH_HISTORY_STORES without measuring."""
    for n in lengths:
        space = Path(os.environ["BENCH_HISTORY_STORES"]) / f"ws{n}"
        if not (space / "ready").exists():
            seconds = fill(space, n)
            (space / "ready").write_text(f"{seconds:.0f}\n")
            print(f"{n:,} steps: {os.path.getsize(space / 'studio.db') / 1e6:,.0f} MB in {seconds:.0f} s", flush=True)


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)


def _cpu(fn) -> float:
    gc.collect()
    t = time.process_time()
    fn()
    return time.process_time() - t


def compare_visit(workspace: Path) -> dict:
    os.environ["STUDIO_WORKSPACE"] = str(workspace)
    at = _app()
    at.switch_page("pages/5_Compare.py")
    first = _cpu(at.run)
    t = time.perf_counter()
    while any("Reading the final" in c.value for c in at.caption):  # the table's background read
        if time.perf_counter() - t > TABLE_WAIT_CAP_S:  # 10M steps: minutes; the rerun is measured meanwhile
            break
        time.sleep(0.05)
        at.run()
    table_wait = time.perf_counter() - t
    table_wait = table_wait if table_wait <= TABLE_WAIT_CAP_S else math.inf
    rerun = _cpu(at.run)
    assert not at.exception, [e.message for e in at.exception]
    return {"compare_first": first, "compare_rerun": rerun, "table_wait": table_wait}


def train_visit(workspace: Path) -> dict:
    os.environ["STUDIO_WORKSPACE"] = str(workspace)
    at = _app()
    at.switch_page("pages/3_Train.py")
    first = _cpu(at.run)
    assert not at.exception, [e.message for e in at.exception]
    rerun = _cpu(at.run)
    histories = at.session_state["studio.train.histories"]
    assert list(histories) == ["long"], list(histories)
    held = len(pickle.dumps(histories))
    return {"train_first": first, "train_rerun": rerun, "session_bytes": held,
            "drawn": histories["long"].held_points()}


def refresh(workspace: Path, next_step: list[int]) -> dict:
    """The live fragment's work for one tick after 100 new steps, and the TensorBoard-equivalent reload."""
    import plotly.io as pio

    from components.figures.charts import run_figures
    from studio.runs.history import MetricHistory
    from studio.runs.store import Store

    store = Store(workspace / "studio.db")
    view = MetricHistory("long")
    view.update(store, 0.6)
    rng = np.random.default_rng(1)
    ticks, tb = [], []
    reservoir = _Reservoir(store, "long")
    for _ in range(5):
        store.write_metrics("long", rows_for(next_step[0], next_step[0] + 99, rng))
        next_step[0] += 100

        def tick():
            view.update(store, 0.6)
            for _, fig in run_figures([("long", view, None)], smoothing=0.6):
                pio.to_json(fig.to_dict(), validate=False)  # what st.plotly_chart does with a Figure

        ticks.append(_cpu(tick))
        tb.append(_cpu(reservoir.reload))
    store.close()
    return {"refresh": statistics.median(ticks), "tb_reload": statistics.median(tb)}


def _wait(seconds: float) -> str:
    return f"> {TABLE_WAIT_CAP_S:.0f} s" if math.isinf(seconds) else f"{seconds * 1000:.0f} ms"


class _Reservoir:
    """TensorBoard's scalar reload, emulated: per tag a reservoir of 1,000 points (uniform replacement,
    the newest point always kept), fed the rows since the last reload, then the JSON response."""

    SIZE = 1000

    def __init__(self, store, run_id: str):
        self.store, self.run_id = store, run_id
        self.last = store.get_run(run_id).step
        self.items: dict[str, list] = {}
        self.seen: dict[str, int] = {}
        self.rng = random.Random(0)
        for key in ("train_loss", "lr", "val_loss", "val_accuracy"):  # loaded once, like TensorBoard's first load
            self.items[key] = [[1e9, s, 1.0] for s in range(self.SIZE)]
            self.seen[key] = self.last

    def reload(self) -> None:
        for m in self.store.read_metrics(self.run_id, since_step=self.last):
            items = self.items[m.key]
            self.seen[m.key] += 1
            slot = self.rng.randrange(self.seen[m.key])
            if slot < self.SIZE:
                items[slot] = [m.wall_time, m.step, m.value]
            else:
                items[-1] = [m.wall_time, m.step, m.value]
            self.last = max(self.last, m.step)
        json.dumps({key: sorted(items, key=lambda p: p[1]) for key, items in self.items.items()})


def _measure_in_child(warm: Path, space: Path, steps: int) -> dict:
    """One length's figures, measured in a fresh process: the Compare table's background read of the raw
    rows (minutes at 10M steps) would otherwise keep running in this process and count in the CPU time
    of everything measured after it. The child measures the Train page and the refresh first, the
    Compare page last, and exits without waiting for that read."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "bench.bench_history", "--one", str(warm), str(space), str(steps)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {steps:,} steps failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_one(warm: Path, space: Path, steps: int) -> None:
    """The child of _measure_in_child: warm up on the small store, measure, print JSON, exit at once."""
    _reset(space, steps)  # the refresh below grew the run last time: start it over
    compare_visit(warm)  # imports and caches paid once, outside the figures (a small store: its read is quick)
    train_visit(warm)
    figures = {**train_visit(space), **refresh(space, [steps + 1]), **compare_visit(space)}
    print(json.dumps(figures), flush=True)
    os._exit(0)  # the Compare table's reader thread may still be reading: not waited for


def main(lengths=LENGTHS) -> None:
    # BENCH_HISTORY_STORES=DIR keeps the generated stores there and reuses them (the 10M one takes minutes).
    keep = os.environ.get("BENCH_HISTORY_STORES")
    with tempfile.TemporaryDirectory() as tmp:
        spaces = {}
        for n in lengths:
            spaces[n] = Path(keep or tmp) / f"ws{n}"
            if (spaces[n] / "ready").exists():
                continue
            seconds = fill(spaces[n], n)
            (spaces[n] / "ready").write_text(f"{seconds:.0f}\n")
            print(f"       (store with a {n:,}-step run: {os.path.getsize(spaces[n] / 'studio.db') / 1e6:,.0f} MB, "
                  f"written in {seconds:.0f} s)", flush=True)
        print(f"       (load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} before the measurements)")
        results: dict[int, list[dict]] = {n: [] for n in lengths}
        warm = spaces[min(lengths)]
        for _ in range(REPS):
            for n in lengths:  # interleaved: drift on the shared machine hits every length alike
                results[n].append(_measure_in_child(warm, spaces[n], n))
        med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}

    print(f"\n(load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end; {REPS} repetitions)")
    print("\n| logged steps | Compare rerun | Compare first visit | table (background) | Train first visit "
          "| Train rerun | session holds | drawn records | chart refresh | TB-equivalent reload |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, m in med.items():
        print(f"| {n:,} | {m['compare_rerun'] * 1000:.0f} ms | {m['compare_first'] * 1000:.0f} ms "
              f"| {_wait(m['table_wait'])} | {m['train_first'] * 1000:.0f} ms "
              f"| {m['train_rerun'] * 1000:.0f} ms "
              f"| {m['session_bytes'] / 1000:.0f} KB "
              f"| {m['drawn']:.0f} | {m['refresh'] * 1000:.1f} ms | {m['tb_reload'] * 1000:.1f} ms |")
    big = med[max(n for n in lengths if n <= 1_000_000)] if any(n <= 1_000_000 for n in lengths) else med[max(lengths)]
    reruns = [m["compare_rerun"] for m in med.values()]
    report("Compare rerun, 1M-step run in the store (CPU)", big["compare_rerun"] * 1000, "<= 300 ms",
           big["compare_rerun"] <= COMPARE_GOAL_S, " ms")
    report("Compare rerun, longest / shortest history", max(reruns) / min(reruns), "~1 (independent of length)",
           max(reruns) / min(reruns) <= 1.5, "x")
    report("Train first visit, 1M-step run (CPU)", big["train_first"] * 1000, "<= 1000 ms",
           big["train_first"] <= TRAIN_GOAL_S, " ms")
    longest = med[max(lengths)]
    bound = 4 * ((1000 - 1) // 2)  # 4 series, at most 499 bucket records each (max_points 1,000)
    report(f"records held by the session, {max(lengths):,} steps", longest["drawn"], f"<= {bound} (points drawn)",
           longest["drawn"] <= bound)
    ratio = big["refresh"] / big["tb_reload"]
    report("chart refresh / TensorBoard-equivalent reload, 1M steps", ratio, "<= 2x", ratio <= REFRESH_GOAL_RATIO, "x")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        measure_one(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["--fill"]:
        fill_only(tuple(int(float(a)) for a in sys.argv[2:]) or LENGTHS)
    else:
        main(tuple(int(float(a)) for a in sys.argv[1:]) or LENGTHS)
