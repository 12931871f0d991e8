"""Batch fetching vs a training step of the seed CNN at batch 64 (goal: fetching <= 5% of a step).

Fetching is `Dataset.batches` on a shuffled training split: index by a random permutation, and for
uint8 images (how MNIST-like downloads are kept) the conversion to float32. Measured side by side
with a forward + backward + SGD step of the seed CNN, medians over interleaved repetitions.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.common import interleaved, report, sgd_steps
from studio.data import Augment, get_dataset, get_info
from studio.data.types import Dataset, make_dataset

BATCH = 64
BATCHES = 50  # batches fetched per repetition
STEPS = 10  # training steps per repetition


def seed_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Linear(128, 10))


def mnist_shaped() -> Dataset:
    """60,000 + 10,000 uint8 images 1x28x28, stored as a downloaded MNIST is (no network needed)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (60_000, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (60_000,), generator=g)
    xt = torch.randint(0, 256, (10_000, 1, 28, 28), dtype=torch.uint8, generator=g)
    yt = torch.randint(0, 10, (10_000,), generator=g)
    return make_dataset(get_info("mnist"), x, y, 0, test=(xt, yt))


def fetch(ds: Dataset, augment=None):
    g = torch.Generator().manual_seed(1)

    def run():
        batches = ds.batches("train", BATCH, shuffle=True, generator=g, augment=augment)
        for _ in range(BATCHES):
            next(batches)

    return run


def train_steps(model: nn.Module, ds: Dataset):
    x, y = next(ds.batches("train", BATCH, shuffle=False))
    return sgd_steps(model, x, y, STEPS)


def main() -> None:
    torch.manual_seed(0)
    mnist = mnist_shaped()
    shapes = get_dataset("shapes", options={"num_samples": 20_000, "image_size": 28})  # float32 storage
    augment = Augment(crop=True, crop_padding=2, affine=True, noise=True)
    t = interleaved({
        "step": train_steps(seed_cnn(), mnist),
        "mnist_uint8": fetch(mnist),
        "shapes_float32": fetch(shapes),
        "mnist_augmented": fetch(mnist, augment),
    }, reps=7)
    step = t["step"] / STEPS
    print(f"seed CNN train step, batch {BATCH}: {step * 1e3:.2f} ms")
    for key, label in (("mnist_uint8", "MNIST-shaped uint8 (60k)"), ("shapes_float32", "shapes 28x28 float32"),
                       ("mnist_augmented", "MNIST-shaped + crop/affine/noise augmentation")):
        per_batch = t[key] / BATCHES
        ratio = per_batch / step
        print(f"  fetch {label}: {per_batch * 1e6:.0f} us per batch")
        if key == "mnist_augmented":
            print(f"INFO  augmented fetch / train step: {ratio:.2%} (augmentation is opt-in; no goal)")
        else:
            report(f"batch fetch / train step, {label}", ratio * 100, "<= 5%", ratio <= 0.05, "%")


if __name__ == "__main__":
    main()
