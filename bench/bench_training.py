"""Studio background run vs a hand-written PyTorch loop: same model, data, batch size and epochs.

The seed CNN (Conv2d 32 3x3, ReLU, Conv2d 64 3x3, ReLU, MaxPool2d 2, Flatten, Linear 128, ReLU,
Linear 10) on 28x28 digits: scikit-learn's 8x8 digits upsampled (and shifted by a pixel for the
extra copies), uploaded once as an image zip, so it is offline and the same for both sides.

The studio side is a full run through start_run: a worker process, metrics every step, probes and
checkpoints every epoch, evaluation every epoch. The hand-written side is a plain loop in its own
process (same startup costs), evaluating every epoch too. Repetitions are interleaved and the
medians compared; the goal is a wall-time ratio <= 1.05.

    python bench/bench_training.py [--epochs 3] [--reps 3] [--copies 4] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402  (after the path set-up, for `python bench/bench_training.py`)

SEED_CNN = {
    "format": "studio.graph/1", "name": "seed-cnn",
    "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [1, 28, 28]}},
        {"id": "conv1", "type": "Conv2d", "params": {"out_channels": 32, "kernel_size": 3}},
        {"id": "relu1", "type": "ReLU"},
        {"id": "conv2", "type": "Conv2d", "params": {"out_channels": 64, "kernel_size": 3}},
        {"id": "relu2", "type": "ReLU"},
        {"id": "pool", "type": "MaxPool2d", "params": {"kernel_size": 2}},
        {"id": "flat", "type": "Flatten"},
        {"id": "fc1", "type": "Linear", "params": {"out_features": 128}},
        {"id": "relu3", "type": "ReLU"},
        {"id": "fc2", "type": "Linear", "params": {"out_features": 10}},
    ],
}
SEED_CNN["edges"] = [{"source": a["id"], "target": b["id"]}
                     for a, b in zip(SEED_CNN["nodes"], SEED_CNN["nodes"][1:], strict=False)]

HANDWRITTEN = r'''
import json, sys, time
import torch
from torch import nn
import torch.nn.functional as F
torch.set_num_threads(1)
from studio.data import get_dataset

dataset_id, epochs, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lr, seed = float(sys.argv[4]), int(sys.argv[5])
data = get_dataset(dataset_id, seed=seed)
torch.manual_seed(seed)
model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.Adam(model.parameters(), lr=lr)
xtr, ytr, xva, yva = data.train.x, data.train.y, data.val.x, data.val.y
t0 = time.time()
for epoch in range(epochs):
    model.train()
    order = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    running = 0.0
    for i in range(0, len(ytr), batch_size):
        idx = order[i:i + batch_size]
        x, y = xtr[idx], ytr[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        running += loss.item()
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(yva), batch_size):
            correct += (model(xva[i:i + batch_size]).argmax(-1) == yva[i:i + batch_size]).sum().item()
print(json.dumps({"loop_s": time.time() - t0, "val_accuracy": correct / len(yva)}))
'''


def digits_zip(copies: int) -> bytes:
    """Digits 8x8 -> 28x28 PNGs in one folder per class; copy k is shifted by k pixels (mod 3)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for k in range(copies):
            dx, dy = (k % 3) - 1 if k else 0, ((k // 3) % 3) - 1 if k else 0
            for i, (img, label) in enumerate(zip(bunch.images, bunch.target, strict=True)):
                big = Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((24, 24), Image.BILINEAR)
                canvas = Image.new("L", (28, 28))
                canvas.paste(big, (2 + dx, 2 + dy))
                out = io.BytesIO()
                canvas.save(out, format="PNG")
                z.writestr(f"digits/{label}/{k}_{i}.png", out.getvalue())
    return buf.getvalue()


def ensure_dataset(copies: int) -> str:
    from studio.data import list_uploads, upload_image_zip

    name = f"digits28x{copies}"
    for info in list_uploads():
        if info.name == name:
            return info.id
    return upload_image_zip(digits_zip(copies), f"{name}.zip", image_size=28, name=name).id


def studio_run(dataset_id: str, args) -> dict:
    from studio.runs import Store, reconcile, start_run
    from studio.training import TrainConfig

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, eval_every=0,
                      probe_every=0, checkpoint_every=0, probes=True)
    store = Store()
    t0 = time.time()
    run_id = start_run(SEED_CNN, dataset_id, cfg, name="bench")
    while True:
        reconcile(store)
        run = store.get_run(run_id)
        if run.status not in ("queued", "running"):
            break
        time.sleep(0.05)
    if run.status != "completed":
        raise SystemExit(f"studio run {run_id} ended {run.status}: {run.error}")
    events = store.read_events(run_id)
    begin = next(e.time for e in events if e.message.startswith("training from step"))
    loop_end = max(m.wall_time for m in store.read_metrics(run_id, since_step=run.step - 1))
    return {"wall_s": run.ended - t0, "loop_s": loop_end - begin,
            "val_accuracy": store.latest_metrics(run_id)["val_accuracy"], "steps": run.step}


def hand_run(dataset_id: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", HANDWRITTEN, dataset_id, str(args.epochs), str(args.batch_size),
                           str(args.lr), str(args.seed)], env=env, capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.time() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--copies", type=int, default=4, help="shifted copies of the 1,797 digits")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault("STUDIO_WORKSPACE", str(ROOT / "bench" / "out" / "workspace"))
    os.environ["STUDIO_MAX_RUNS"] = "1"

    dataset_id = ensure_dataset(args.copies)
    from studio.data import get_info

    print(f"dataset {dataset_id}: {get_info(dataset_id).sizes}, batch {args.batch_size}, {args.epochs} epochs, "
          f"{args.reps} interleaved repetitions, torch threads 1 on both sides")
    studio, hand = [], []
    for rep in range(args.reps):
        for side, fn, results in (("hand", hand_run, hand), ("studio", studio_run, studio)) if rep % 2 else \
                ((("studio", studio_run, studio), ("hand", hand_run, hand))):
            r = fn(dataset_id, args)
            results.append(r)
            print(f"  rep {rep + 1} {side:6} wall {r['wall_s']:6.2f} s  loop {r['loop_s']:6.2f} s  "
                  f"val_accuracy {r['val_accuracy']:.3f}")
    med = {k: (statistics.median(r[k] for r in studio), statistics.median(r[k] for r in hand))
           for k in ("wall_s", "loop_s")}
    print(f"median wall: studio {med['wall_s'][0]:.2f} s, hand-written {med['wall_s'][1]:.2f} s, "
          f"ratio {med['wall_s'][0] / med['wall_s'][1]:.3f} (goal <= 1.05)")
    print(f"median training loop only: studio {med['loop_s'][0]:.2f} s, hand-written {med['loop_s'][1]:.2f} s, "
          f"ratio {med['loop_s'][0] / med['loop_s'][1]:.3f}")
    # Each repetition runs both sides back to back, so its own ratio cancels drift in the machine's load.
    paired = statistics.median(s["wall_s"] / h["wall_s"] for s, h in zip(studio, hand, strict=True))
    report("full background run / hand-written loop, wall time (median of paired repetitions)", paired,
           "<= 1.05", paired <= 1.05, "x")


if __name__ == "__main__":
    main()
