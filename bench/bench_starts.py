"""Fast starts (issue 14): the CLI's short run vs a hand-written script, launch to the first point,
a fresh process's first analysis, and cold analysis of 100 distinct convolutions / a bi-LSTM graph.

Every figure is a median of interleaved repetitions. The CLI and the script each run in their own
process. The ratio is of wall times (the CLI returns once the run is final; its worker, in its own
session, may still be exiting and is not a child of this script, so its CPU time cannot be summed
here); the CLI process's own CPU time is printed beside it (what following a run costs).

    python -m bench bench_starts            (or: python bench/bench_starts.py --reps 3)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402

CNN = {
    "format": "studio.graph/1", "name": "digits-cnn",
    "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 8, 8]}},
              {"id": "conv1", "type": "Conv2d", "params": {"out_channels": 16, "kernel_size": 3, "padding": 1}},
              {"id": "relu1", "type": "ReLU"}, {"id": "flat", "type": "Flatten"},
              {"id": "fc1", "type": "Linear", "params": {"out_features": 10}}],
}
CNN["edges"] = [{"source": a["id"], "target": b["id"]} for a, b in zip(CNN["nodes"], CNN["nodes"][1:], strict=False)]

HANDWRITTEN = r'''
import sys
import torch
import torch.nn.functional as F
from torch import nn
torch.set_num_threads(1)
from studio.data import get_dataset

epochs, batch_size, lr = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
torch.manual_seed(0)
data = get_dataset("digits", seed=0)
model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))
opt = torch.optim.Adam(model.parameters(), lr=lr)
losses = []
for epoch in range(epochs):
    model.train()
    g = torch.Generator().manual_seed(epoch)
    for x, y in data.batches("train", batch_size, shuffle=True, generator=g):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())  # what a script that logs its loss reads every step
    model.eval()
    with torch.no_grad():
        correct = sum((model(x).argmax(-1) == y).sum().item() for x, y in data.batches("val", 256, shuffle=False))
    torch.save(model.state_dict(), sys.argv[4])
print(correct / len(data.val))
'''


def _timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and everything it reaped) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {done.stderr[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cli_vs_script(reps: int, epochs: int, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "STUDIO_WORKSPACE": str(Path(tmp) / "ws"), "PYTHONPATH": str(ROOT)}
        graph = Path(tmp) / "cnn.json"
        graph.write_text(json.dumps(CNN))
        cli = [sys.executable, "-m", "studio", "train", str(graph), "--data", "digits", "--epochs", str(epochs),
               "--batch-size", str(batch_size), "--lr", "0.001", "--json"]
        script = [sys.executable, "-c", HANDWRITTEN, str(epochs), str(batch_size), "0.001", str(Path(tmp) / "m.pt")]
        walls: dict[str, list[float]] = {"cli": [], "script": []}
        cpus: dict[str, list[float]] = {"cli": [], "script": []}
        _timed(script, env)  # warm the file cache and the dataset download cache
        for _ in range(reps):
            for name, cmd in (("cli", cli), ("script", script)):
                wall, cpu = _timed(cmd, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
    w = {k: statistics.median(v) for k, v in walls.items()}
    c = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"      medians: cli {w['cli']:.2f} s wall, the CLI process itself {c['cli']:.2f} s CPU (worker not "
          f"included); script {w['script']:.2f} s wall / {c['script']:.2f} s CPU ({reps} interleaved pairs, "
          f"{epochs} epochs of digits, batch {batch_size})")
    report("python -m studio train vs hand-written script, wall time", w["cli"] / w["script"], "<= 1.05",
           w["cli"] / w["script"] <= 1.05, "x")


def launch_to_first_point(reps: int) -> None:
    from studio.runs import Store, start_run
    from studio.training import TrainConfig

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STUDIO_WORKSPACE"] = str(Path(tmp) / "ws")
        store = Store()
        conn = store.connect()
        for _ in range(reps):
            t = time.perf_counter()
            run_id = start_run(CNN, "digits", TrainConfig(epochs=1, batch_size=64), store=store)
            while not store.read_metrics(run_id, keys=["train_loss"]):
                conn.execute("PRAGMA data_version").fetchone()
                time.sleep(0.01)
            times.append(time.perf_counter() - t)
            while store.get_run(run_id).active:
                time.sleep(0.05)
    t = statistics.median(times)
    report("launch to the first point in the store (small model, worker start)", t, "<= 3 s", t <= 3.0, " s")


FIRST_ANALYSIS = r'''
import resource, sys, time
from studio.analysis import analyze
from studio.templates import load_template
g1, g2 = load_template("seed_cnn"), load_template("lenet5")
t = time.process_time(); analyze(g1); first = time.process_time() - t
t = time.process_time(); analyze(g2); second = time.process_time() - t
print(first, second, int("torch._dynamo" in sys.modules))
'''


def first_analysis(reps: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    extra, dynamo = [], 0
    for _ in range(reps):
        out = subprocess.run([sys.executable, "-c", FIRST_ANALYSIS], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        extra.append(float(out[0]) - float(out[1]))
        dynamo = int(out[2])
    t = statistics.median(extra)
    print(f"      torch._dynamo imported by the first analysis: {'yes' if dynamo else 'no'}")
    report("fresh process: first analysis minus a second one, CPU", t, "~0 (paid only where needed)", t <= 0.2, " s")


def conv_graph(n: int):
    from studio.graph import parse_graph

    nodes = [{"id": "input", "type": "Input", "params": {"shape": [3, 32, 32]}}]
    for i in range(n):
        nodes.append({"id": f"conv{i}", "type": "Conv2d", "params": {"out_channels": 3 + (i % 50) + 1, "kernel_size": 3,
                                                                       "padding": 1}})
    nodes[1:] = [{**nd, "params": {**nd["params"], "out_channels": 4 + i}} for i, nd in enumerate(nodes[1:])]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return parse_graph({"format": "studio.graph/1", "name": "convs", "nodes": nodes, "edges": edges})


def bilstm_graph():
    """The LSTM classifier template with its LSTM made bidirectional, 2 layers."""
    from studio.graph import parse_graph
    from studio.templates import load_template

    doc = load_template("lstm_classifier").to_dict()
    for node in doc["nodes"]:
        if node["type"] == "LSTM":
            node["params"].update(bidirectional=True, num_layers=2)
    return parse_graph(doc)


def cold_analysis(reps: int) -> None:
    from studio import analysis

    cases = (("100 distinct convolutions", lambda: conv_graph(100)), ("bidirectional-LSTM graph", bilstm_graph))
    for name, make in cases:
        try:
            graph = make()
        except Exception as e:  # a palette without a layer used here: say so, measure the rest
            print(f"      skipped {name}: {e}")
            continue
        analysis.analyze(graph)  # imports and first-use costs out of the way; the cache is cleared below
        rules = analysis.closed_form
        times: dict[str, list[float]] = {"rules": [], "meta": []}
        try:
            for _ in range(reps):  # interleaved: the closed-form rules, then every layer on the meta device
                for variant in times:
                    analysis.closed_form = rules if variant == "rules" else (lambda *args: None)
                    analysis._infer.cache_clear()
                    analysis._buffer_values.cache_clear()
                    t = time.process_time()
                    a = analysis.analyze(graph)
                    times[variant].append(time.process_time() - t)
                    if not a.ok:
                        print(f"      {name} ({variant}): {a.issues[:2]}")
        finally:
            analysis.closed_form = rules
        t, meta = statistics.median(times["rules"]), statistics.median(times["meta"])
        print(f"      {name}: every layer on the meta device (before) {meta * 1000:.1f} ms, "
              f"{meta / max(t, 1e-9):.0f}x the closed-form rules")
        report(f"cold analysis, {name}, CPU", t * 1000, "<= 50 ms", t <= 0.05, " ms")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv if argv is not None else [])
    cli_vs_script(args.reps, args.epochs, args.batch_size)
    launch_to_first_point(args.reps)
    first_analysis(args.reps)
    cold_analysis(max(args.reps, 5))


if __name__ == "__main__":
    main(sys.argv[1:])
