"""Ray backend against the local worker: overhead after start-up, start-up itself, 2 workers vs 1.

Each variant is a real run through start_run (a detached process, the store, the run directory),
the same MLP on digits with the same settings; variants run in turn, `--reps` times, medians.
"Training seconds" is the wall time between the first and the last step's metric rows (start-up
excluded); "start-up" is from the run being claimed to its first step's row (for Ray: the driver's
imports, an embedded Ray, the worker group, the dataset through the object store).

    python -m bench.bench_ray [--steps 600] [--reps 2] [--in-process-only]

On a shared, loaded machine whole runs swing with the load, so the script also measures the Ray
rank's own per-step additions in one process, interleaved with the plain loop: the same
build_trainer with a 1-worker Shard, the Mirror of rank 0's files and the relay-backed store (the
relay's actor call itself, a fire-and-forget message at each metric flush, is left out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from bench.common import report


def mlp(width: int = 256) -> dict:
    chain = [("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
             ("fc1", "Linear", {"out_features": width}), ("relu1", "ReLU", None),
             ("fc2", "Linear", {"out_features": width}), ("relu2", "ReLU", None),
             ("fc3", "Linear", {"out_features": 10})]
    return {"format": "studio.graph/1", "name": "bench-mlp",
            "nodes": [{"id": i, "type": t, **({"params": p} if p else {})} for i, t, p in chain],
            "edges": [{"source": a[0], "target": b[0]} for a, b in zip(chain, chain[1:], strict=False)]}


def one_run(backend: dict | None, steps: int, batch_size: int) -> tuple[float, float]:
    """(start-up seconds, training seconds) of one run."""
    from studio.runs import Store, reconcile, start_run
    from studio.training import TrainConfig

    store = Store()
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, probes=False, eval_every=0, seed=0)
    run_id = start_run(mlp(), "digits", cfg, backend=backend, store=store)
    while store.get_run(run_id).status in ("queued", "running"):
        reconcile(store)
        time.sleep(0.2)
    run = store.get_run(run_id)
    if run.status != "completed":
        raise SystemExit(f"run {run_id} ended {run.status}: {run.error}")
    times = [m.wall_time for m in store.read_metrics(run_id, keys=["train_loss"])]
    return times[0] - run.started, times[-1] - times[0]


class _NoRelay:
    """Stands in for the relay actor handle: `put.remote(...)` and nothing else."""

    class _Call:
        def remote(self, *args):
            return None

    put = _Call()


def in_process_overhead(steps: int, batch_size: int, reps: int) -> float:
    """Median seconds of fit() with the rank's additions / without, interleaved."""
    import json

    import torch

    from bench.common import interleaved
    from studio.runs.rundir import RunDir
    from studio.runs.store import Store
    from studio.training import TrainConfig
    from studio.training.distributed import Mirror, RelayStore
    from studio.training.shard import Shard, ShardStop
    from studio.training.worker import build_trainer

    torch.set_num_threads(1)
    root = tempfile.mkdtemp(prefix="bench-ray-steps-")
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, probes=False, eval_every=0, seed=0).to_dict()
    store = Store(os.path.join(root, "studio.db"))
    log = lambda message, level="info": None  # noqa: E731

    def make(name: str) -> RunDir:
        rd = RunDir(os.path.join(root, name))
        rd.create(graph_json=json.dumps(mlp()), config=cfg, meta={"run_id": name, "dataset_id": "digits"})
        store.create_run(name, name=name, graph=mlp(), config=cfg, dataset_id="digits")
        return rd

    def plain():
        rd = make(f"plain-{time.perf_counter_ns()}")
        build_trainer(rd, rd.meta(), store, log)[0].fit()

    def rank():
        rd = make(f"rank-{time.perf_counter_ns()}")
        relay_store = RelayStore(_NoRelay())
        shard = Shard(0, 1)
        build_trainer(rd, rd.meta(), relay_store, log, shard=shard, stop_callback=ShardStop(shard),
                      extra_callbacks=(Mirror(rd, relay_store),))[0].fit()

    t = interleaved({"plain": plain, "rank": rank}, reps=reps, warmup=1)
    print(f"  in one process, {steps} steps: plain loop {t['plain']:.2f} s, Ray rank's loop {t['rank']:.2f} s")
    return t["rank"] / t["plain"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--in-process-only", action="store_true")
    args = p.parse_args(argv)
    ratio = in_process_overhead(args.steps, args.batch_size, max(3, args.reps))
    report("Ray rank's per-step additions (1 worker) / plain loop, in one process", ratio, "<= 1.10",
           ratio <= 1.10, "x")
    if args.in_process_only:
        return
    os.environ.setdefault("STUDIO_WORKSPACE", tempfile.mkdtemp(prefix="bench-ray-"))
    os.environ["STUDIO_MAX_RUNS"] = "1"
    from studio.runs.ray_backend import RaySettings

    variants = {"local": None, "ray x1": RaySettings(workers=1).to_dict(), "ray x2": RaySettings(workers=2).to_dict()}
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for _ in range(args.reps):
        for name, backend in variants.items():
            got[name].append(one_run(backend, args.steps, args.batch_size))
            print(f"  {name}: start-up {got[name][-1][0]:.1f} s, training {got[name][-1][1]:.2f} s", flush=True)
    med = {k: (statistics.median(s for s, _ in v), statistics.median(t for _, t in v)) for k, v in got.items()}
    print(f"{args.steps} steps of a 3-layer MLP on digits, global batch {args.batch_size}, {os.cpu_count()} cores, "
          f"medians of {args.reps}")
    for name, (s, t) in med.items():
        print(f"  {name:7} start-up {s:6.1f} s   training {t:6.2f} s   {args.steps / t:7.0f} steps/s")
    overhead = med["ray x1"][1] / med["local"][1]
    report("Ray 1 worker / local, training time after start-up", overhead, "<= 1.10", overhead <= 1.10, "x")
    print(f"INFO  Ray start-up (embedded Ray, 1 worker): {med['ray x1'][0]:.1f} s; local worker start-up "
          f"{med['local'][0]:.1f} s")
    speedup = med["ray x1"][1] / med["ray x2"][1]
    print(f"INFO  2 workers vs 1: {speedup:.2f}x the speed (no speed-up is possible on {os.cpu_count()} cores: two "
          "ranks share the cores with the driver and the studio, and each step adds an all-reduce)")


if __name__ == "__main__":
    main()
