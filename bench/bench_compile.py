"""Compiled graph vs the hand-written module: training-step throughput ratio (goal >= 0.98); and the
speed-up of TrainConfig.compile_model (torch.compile of the training forward) on this CPU, CPU time."""

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
    torch_compile_speedup()


def torch_compile_speedup(steps: int = 20, reps: int = 5) -> None:
    """TrainConfig(compile_model=True) vs eager through the studio's Trainer.train_step, same model and batch."""
    import time

    from studio.templates import load_template
    from studio.training import Task, TrainConfig, Trainer

    class OneBatch:  # the Trainer needs splits only to size the run
        train, val = range(64), range(0)

    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    trainers = {}
    for name, flag in (("eager", False), ("compiled", True)):
        model = compile_graph(load_template("seed_cnn"), seed=0)
        trainers[name] = Trainer(model, OneBatch(), TrainConfig(compile_model=flag, batch_size=64),
                                 task=Task("classification", num_classes=10))
    t = time.process_time()
    for _ in range(3):
        trainers["compiled"].train_step(x, y)  # compilation happens here
    compile_cost = time.process_time() - t
    times = {k: [] for k in trainers}
    for _ in range(reps):
        for name, trainer in trainers.items():
            t = time.process_time()
            for _ in range(steps):
                trainer.train_step(x, y)
            times[name].append(time.process_time() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    speedup = med["eager"] / med["compiled"]
    per_step = {k: v / steps * 1000 for k, v in med.items()}
    print(f"      compile_model: first 3 steps {compile_cost:.1f} s CPU (compilation); then "
          f"{per_step['compiled']:.1f} ms/step vs eager {per_step['eager']:.1f} ms/step")
    report("torch.compile speed-up of the seed CNN train step on this CPU (TrainConfig.compile_model)", speedup,
           "measured; > 1 is a gain", speedup > 1.0, "x")


if __name__ == "__main__":
    main()
