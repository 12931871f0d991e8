"""Shared pieces of the reliability suite: tiny graphs, bounded polling, store invariants, cleanup.

Everything here reads the real store and the real run directories; nothing is mocked. Waits are
bounded polls (a loaded 2-core machine is slow, not broken), never assertions on wall-clock speed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

from studio.runs import Store, reconcile
from studio.runs.launcher import pid_alive

POLL_S = 180  # the bound on any single wait for workers


def mlp_doc(in_shape: list[int], width: int, classes: int, *, name: str = "mlp") -> dict:
    """A small MLP graph document: Input -> [Flatten] -> Linear -> ReLU -> Linear."""
    chain = [("input", "Input", {"shape": in_shape})]
    if len(in_shape) > 1:
        chain.append(("flat", "Flatten", None))
    chain += [("fc1", "Linear", {"out_features": width}), ("relu1", "ReLU", None),
              ("fc2", "Linear", {"out_features": classes})]
    return {"format": "studio.graph/1", "name": name,
            "nodes": [{"id": i, "type": t, **({"params": p} if p else {})} for i, t, p in chain],
            "edges": [{"source": a[0], "target": b[0]} for a, b in zip(chain, chain[1:], strict=False)]}


def wait_for(predicate, what: str, timeout: float = POLL_S, interval: float = 0.05):
    """Poll `predicate` (reconciling the store each time) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        reconcile()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            runs = [(r.id, r.status, r.step) for r in Store().list_runs()]
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}; runs: {runs}")
        time.sleep(interval)


def store_problems(path: str | Path) -> list[str]:
    """Every broken invariant of a run store, read with a fresh connection (empty list = consistent).

    integrity_check; no duplicate (run, step, key) row; per (run, key) the steps strictly increase
    in insertion order; runs.step equals the run's last committed metric step.
    """
    problems = []
    conn = sqlite3.connect(path)
    try:
        check = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if check != ["ok"]:
            problems.append(f"integrity_check: {check[:5]}")
        for run_id, step, key, n in conn.execute(
                "SELECT run_id, step, key, COUNT(*) FROM metrics GROUP BY run_id, step, key HAVING COUNT(*) > 1"):
            problems.append(f"{run_id}: {n} rows for step {step} key {key!r}")
        last: dict[tuple[str, str], int] = {}
        for run_id, step, key in conn.execute("SELECT run_id, step, key FROM metrics ORDER BY rowid"):
            prev = last.get((run_id, key))
            if prev is not None and step <= prev:
                problems.append(f"{run_id}: key {key!r} goes from step {prev} back to {step}")
            last[(run_id, key)] = step
        for run_id, step, top in conn.execute(
                "SELECT id, step, (SELECT MAX(step) FROM metrics WHERE run_id=runs.id) FROM runs"):
            if step != (top or 0):
                problems.append(f"{run_id}: runs.step is {step} but its last metric row is at step {top}")
    finally:
        conn.close()
    return problems


def kill_leftover_workers(store: Store) -> None:
    """Never leave a worker behind when a test ends (or fails half-way)."""
    for run in store.list_runs(("running",)):
        if run.pid and pid_alive(run.pid):
            os.kill(run.pid, signal.SIGKILL)
    reconcile(store)


def files_outside(root: Path, allowed: Path) -> list[Path]:
    """Files under `root` that are not under `allowed`."""
    return [p for p in root.rglob("*") if p.is_file() and allowed not in p.parents]
