"""Small helpers shared by the benchmark scripts: medians of interleaved repetitions, a result line."""

from __future__ import annotations

import statistics
import time


def median_time(fn, reps: int = 7, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(fns: dict, reps: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds per variant, running the variants in turn so drift hits them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def report(name: str, value: float, goal: str, ok: bool, unit: str = "") -> None:
    print(f"{'PASS' if ok else 'MISS'}  {name}: {value:.4g}{unit}  (goal {goal})", flush=True)


def sgd_steps(model, x, y, n: int = 10):
    """A closure running n SGD steps of cross-entropy on one batch (the training-step workload)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def run():
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

    return run
