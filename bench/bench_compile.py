"""Compiled graph vs the hand-written module: training-step throughput ratio (goal >= 0.98)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.common import interleaved, report, sgd_steps
from studio.compile import compile_graph
from studio.graph import parse_graph


class SeedCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 12 * 12, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def seed_cnn_graph():
    ids = [("input", "Input", {"shape": [1, 28, 28]}), ("conv1", "Conv2d", {"out_channels": 32}),
           ("relu1", "ReLU", {}), ("conv2", "Conv2d", {"out_channels": 64}), ("relu2", "ReLU", {}),
           ("pool", "MaxPool2d", {"kernel_size": 2}), ("flat", "Flatten", {}),
           ("fc1", "Linear", {"out_features": 128}), ("relu3", "ReLU", {}), ("fc2", "Linear", {"out_features": 10})]
    return parse_graph({"format": "studio.graph/1", "name": "seed", "nodes": [
        {"id": i, "type": t, "params": p} for i, t, p in ids],
        "edges": [{"source": a[0], "target": b[0]} for a, b in zip(ids, ids[1:], strict=False)]})


def main() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    hand = SeedCNN()
    graph = compile_graph(seed_cnn_graph(), seed=0)
    t = interleaved({"hand": sgd_steps(hand, x, y), "graph": sgd_steps(graph, x, y)}, reps=7)
    ratio = t["hand"] / t["graph"]
    report("compiled graph / hand-written throughput, seed CNN train step, batch 64", ratio, ">= 0.98",
           ratio >= 0.98, "x")


if __name__ == "__main__":
    main()
