"""The CUDA path, where a GPU exists: device selection, mixed precision, and speed of a full
background run against a hand-written loop on the same GPU. Prints SKIP on a machine without CUDA.

Each variant trains the seed CNN (padded, 1x32x32 input) on `shapes` through the real worker
process and store; samples/s runs from the first to the last step the worker logged.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.common import report


def seed_cnn_doc(num_classes: int):
    ids = [("input", "Input", {"shape": [1, 32, 32]}),
           ("conv1", "Conv2d", {"out_channels": 32, "kernel_size": 3, "padding": 1}), ("relu1", "ReLU", {}),
           ("pool1", "MaxPool2d", {"kernel_size": 2}),
           ("conv2", "Conv2d", {"out_channels": 64, "kernel_size": 3, "padding": 1}), ("relu2", "ReLU", {}),
           ("pool2", "MaxPool2d", {"kernel_size": 2}), ("flat", "Flatten", {}),
           ("fc1", "Linear", {"out_features": 128}), ("relu3", "ReLU", {}),
           ("fc2", "Linear", {"out_features": num_classes})]
    return {"format": "studio.graph/1", "name": "seed-cnn-32", "nodes": [
        {"id": i, "type": t, "params": p} for i, t, p in ids],
        "edges": [{"source": a[0], "target": b[0]} for a, b in zip(ids, ids[1:], strict=False)]}


def hand_loop(x, y, batch, epochs, device, num_classes):
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(),
                          nn.Linear(128, num_classes)).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = x.to(device), y.to(device)
    torch.cuda.synchronize()
    t = time.perf_counter()
    n = 0
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            n += len(idx)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main() -> None:
    if not torch.cuda.is_available():
        print("SKIP  no CUDA device on this machine")
        return
    os.environ.setdefault("STUDIO_WORKSPACE", tempfile.mkdtemp(prefix="studio-cuda-"))
    from studio.data import get_dataset
    from studio.graph import parse_graph
    from studio.runs.launcher import start_run
    from studio.runs.store import ACTIVE_STATUSES, Store
    from studio.training.config import TrainConfig
    from studio.training.optim import resolve_device

    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    assert resolve_device("auto").type == "cuda", "device=auto must pick CUDA when it exists"
    options = {"num_samples": 20000, "image_size": 32}
    ds = get_dataset("shapes", options=options)
    graph = parse_graph(seed_cnn_doc(ds.info.num_classes))
    store = Store()
    batch, epochs = 256, 3
    for precision in ("fp32", "bf16", "fp16"):
        cfg = TrainConfig(device="auto", precision=precision, epochs=epochs, batch_size=batch, lr=1e-3)
        run_id = start_run(graph, "shapes", cfg, dataset_options=options, store=store)
        t = time.perf_counter()
        while store.get_run(run_id).status in ACTIVE_STATUSES and time.perf_counter() - t < 300:
            time.sleep(0.5)
        run = store.get_run(run_id)
        # Effective throughput from the first to the last logged step: evaluation, probes and
        # checkpoints at epoch ends included, as in the hand-written loop (which evaluates nothing).
        rows = store.read_metrics(run_id, keys=["train_loss"])
        latest = store.latest_metrics(run_id)
        speed = ((rows[-1].step - rows[0].step) * batch / (rows[-1].wall_time - rows[0].wall_time)
                 if len(rows) > 1 else float("nan"))
        print(f"{precision}: status={run.status} wall={time.perf_counter() - t:.1f}s "
              f"samples/s={speed:,.0f} val_accuracy={latest.get('val_accuracy', float('nan')):.3f}"
              + (f" error={run.error}" if run.error else ""))
        if precision == "fp32":
            hand = hand_loop(ds.train.x, ds.train.y, batch, epochs, "cuda", ds.info.num_classes)
            report("studio step throughput / hand-written loop, CUDA fp32", speed / hand, ">= 0.95",
                   speed / hand >= 0.95, "x")


if __name__ == "__main__":
    main()
