"""Launch click to the first point (issue 14, goal <= 3 s on an idle machine, small model).

Three launch paths, interleaved: the Train page's (`studio.runs.start_run` handing the run to the warm
spare worker the page keeps ready, studio.runs.spare), `start_run` with no spare (a fresh worker
process, as on the page's very first launch or with STUDIO_SPARE_WORKER=0) and
`python -m studio train ... --max-steps 30` (the CLI, which starts a fresh worker). Each is timed
from the call to the first `train_loss` row in the store, by wall clock (the worker is not a child of
this process); every run then finishes before the next starts. Beside them, the CPU time of what a
worker cannot avoid: a fresh interpreter importing torch, and importing torch._dynamo after it (every torch optimizer's
first `step()` imports it), so the remainder is what the studio adds.

    python -m bench bench_launch            (or: python bench/bench_launch.py --reps 3)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_starts import CNN  # noqa: E402
from bench.common import report  # noqa: E402


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def _cpu_of(pid: int | None) -> float:
    """User + system CPU seconds the live process `pid` has used so far (Linux /proc), NaN if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CPU: dict[str, list[float]] = {"warm spare (Train page)": [], "start_run": [], "cli": []}


def _first_row(store, run_id: str, t0: float, timeout: float = 600.0, path: str = "start_run") -> float:
    # (path: which CPU list the worker's CPU goes to)
    """Wall seconds from t0 to the run's first train_loss row; the worker's CPU to then goes to CPU[path]."""
    while not store.read_metrics(run_id, keys=["train_loss"]):
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"no metric row from run {run_id} after {timeout:.0f} s: {store.get_run(run_id)}")
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    CPU[path].append(_cpu_of(store.get_run(run_id).pid))
    return wall


def _via_spare(store) -> float:
    """The page's path: a spare made ready beforehand (while the user fills the form), then the launch."""
    from studio.runs import keep_spare_ready, start_run
    from studio.training import TrainConfig

    os.environ["STUDIO_SPARE_WORKER"] = "1"
    try:
        keep_spare_ready()
        spares = Path(os.environ["STUDIO_WORKSPACE"]) / "spares"
        while not (ready := [d for d in spares.glob("*") if (d / "ready").exists()]):
            time.sleep(0.05)
        worker = int((ready[0] / "ready").read_text())
        warm_cpu = _cpu_of(worker)
        t0 = time.perf_counter()
        run_id = start_run(CNN, "digits", TrainConfig(max_steps=30, batch_size=64, probes=False), store=store)
        t = _first_row(store, run_id, t0, path="warm spare (Train page)")
        CPU["warm spare (Train page)"][-1] -= warm_cpu  # what the run itself cost, not the warm-up
    finally:
        os.environ["STUDIO_SPARE_WORKER"] = "0"
    while store.get_run(run_id).active:
        time.sleep(0.05)
    return t


def _via_start_run(store) -> float:
    from studio.runs import start_run
    from studio.training import TrainConfig

    t0 = time.perf_counter()
    run_id = start_run(CNN, "digits", TrainConfig(max_steps=30, batch_size=64, probes=False), store=store)
    t = _first_row(store, run_id, t0)
    while store.get_run(run_id).active:
        time.sleep(0.05)
    return t


def _via_cli(store, graph: Path, env: dict) -> float:
    before = {r.id for r in store.list_runs()}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "studio", "train", str(graph), "--data", "digits",
                             "--max-steps", "30", "--batch-size", "64", "--json"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_id = None
    while run_id is None:
        new = [r.id for r in store.list_runs() if r.id not in before]
        run_id = new[0] if new else None
        if run_id is None:
            if proc.poll() is not None:
                raise RuntimeError(f"the CLI exited before creating a run: {proc.stderr.read()[-500:]}")
            time.sleep(0.01)
    t = _first_row(store, run_id, t0, path="cli")
    proc.wait(timeout=600)
    return t


def _import_cpu(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", "import time; " + code + "; print(time.process_time())"],
                         capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv if argv is not None else [])
    print(f"      ({_load()} at the start)")
    from studio.runs import Store

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STUDIO_WORKSPACE"] = str(Path(tmp) / "ws")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        graph = Path(tmp) / "cnn.json"
        graph.write_text(json.dumps(CNN))
        store = Store()
        times: dict[str, list[float]] = {"warm spare (Train page)": [], "start_run": [], "cli": []}
        for _ in range(args.reps):
            times["warm spare (Train page)"].append(_via_spare(store))
            times["start_run"].append(_via_start_run(store))
            times["cli"].append(_via_cli(store, graph, env))
    torch_cpu = statistics.median(_import_cpu("import torch") for _ in range(args.reps))
    dynamo_cpu = statistics.median(_import_cpu("import torch, torch._dynamo") for _ in range(args.reps)) - torch_cpu
    print(f"      fresh interpreter: import torch {torch_cpu:.2f} s CPU, then torch._dynamo +{dynamo_cpu:.2f} s CPU "
          "(PyTorch's optimizers import it at their first step)")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"      {name}: " + ", ".join(f"{x:.2f}" for x in ts) + " s")
        report(f"launch to the first point in the store, via {name} (wall, median of {args.reps})", t, "<= 3 s",
               t <= 3.0, " s")
        cpu = statistics.median(CPU[name])
        report(f"  the worker's own CPU time up to that first point, via {name}", cpu, "<= 3 s", cpu <= 3.0, " s")
    print(f"      ({_load()} at the end)")


if __name__ == "__main__":
    main(sys.argv[1:])
