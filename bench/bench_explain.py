"""Explaining a 224x224 prediction: the peak memory an attribution adds, against the internal batch size.

Integrated gradients (64 steps) and occlusion (the default 28x28 window, stride 14: 226 inputs) on a
small 3-conv CNN taking (3, 224, 224). Each measurement is its own process (the peak resident set,
`ru_maxrss`, only ever grows): the figure is the peak after the attribution minus the peak before it
(torch, Captum, the model and one forward already paid). Configurations run interleaved, three rounds,
medians. Goal (issue 27): an attribution of a 224x224 input stays within a memory budget set by the
internal batch size: at batch 16, under 256 MB more than the model's own forward; peak growing with
the batch, not with the number of steps or windows.

    python -m bench explain
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import report

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 4, 16, 64)
METHODS = ("integrated-gradients", "occlusion")
BUDGET_MB = 256
ROUNDS = 3

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from studio.compile import compile_graph
from studio.graph import parse_graph
from studio.explain import Settings, explain
chain = [("input", "Input", {"shape": [3, 224, 224]}),
         ("conv1", "Conv2d", {"out_channels": 16, "kernel_size": 3, "stride": 2, "padding": 1}), ("r1", "ReLU", None),
         ("conv2", "Conv2d", {"out_channels": 32, "kernel_size": 3, "stride": 2, "padding": 1}), ("r2", "ReLU", None),
         ("conv3", "Conv2d", {"out_channels": 64, "kernel_size": 3, "stride": 2, "padding": 1}), ("r3", "ReLU", None),
         ("gap", "AdaptiveAvgPool2d", {"output_size": 1}), ("flat", "Flatten", None),
         ("fc", "Linear", {"out_features": 10})]
doc = {"format": "studio.graph/1", "name": "bench-224", "nodes": [{"id": i, "type": t, **({"params": p} if p else {})}
       for i, t, p in chain], "edges": [{"source": a[0], "target": b[0]} for a, b in zip(chain, chain[1:])]}
model = compile_graph(parse_graph(doc), seed=0).eval()
x = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    model(x[None])
explain(model, torch.rand(3, 224, 224), method="saliency")  # Captum's imports and autograd's first use, paid
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
e = explain(model, x, method=sys.argv[1], settings=Settings(internal_batch_size=int(sys.argv[2])))
seconds = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mb": (after - before) / 1024, "seconds": seconds,
                  "error": None if e.check is None else e.check.relative_error}))
"""


def _one(method: str, batch: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(batch)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    runs: dict[tuple[str, int], list[dict]] = {(m, b): [] for m in METHODS for b in BATCHES}
    for _ in range(ROUNDS):  # interleaved: every configuration once per round
        for key in runs:
            runs[key].append(_one(*key))
    for (method, batch), found in runs.items():
        mb = statistics.median(r["mb"] for r in found)
        seconds = statistics.median(r["seconds"] for r in found)
        extra = f", {seconds:.2f} s" + (f", completeness off by {found[0]['error']:.2%}" if found[0]["error"] else "")
        print(f"{method:22s} internal batch {batch:3d}: +{mb:7.1f} MB peak{extra}")
    for method in METHODS:
        mb16 = statistics.median(r["mb"] for r in runs[(method, 16)])
        report(f"{method}, 224x224, internal batch 16: peak memory added", mb16, f"<= {BUDGET_MB} MB",
               mb16 <= BUDGET_MB, " MB")
        small, large = (statistics.median(r["mb"] for r in runs[(method, b)]) for b in (BATCHES[0], BATCHES[-1]))
        report(f"{method}: peak at batch {BATCHES[-1]} / batch {BATCHES[0]}", large / max(small, 1.0),
               "> 1 (the batch bounds the memory)", large > small, "x")
