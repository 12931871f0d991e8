"""Fine-tuning a pretrained small ResNet vs training it from scratch, with the same step budget.

The template `resnet_small` (stem, three residual blocks, global pooling, Linear head) is first trained on
one task, `shapes` (5 classes of drawn shapes, 1x16x16 here), for --pretrain-steps. Then, on a different task,
`digits` resized to 1x16x16 (10 classes), the same graph with its head replaced for 10 classes
(`studio.graph_head.with_new_head`) is trained for --steps optimizer steps, four ways:

- scratch: fresh weights everywhere;
- head only: warm start from the pretrained run (`init_from`), backbone frozen (`train_last_blocks=0`);
- last block: warm start, only the last residual block's layers and the head train (`train_last_blocks=N`);
- all, backbone lr x 0.1: warm start, everything trains, the loaded weights at a tenth of the lr.

Each run goes through the real worker code (`studio.training.worker.run`, in this process: the launcher is
kept from spawning) in a temporary workspace. The pretrained weights come from a studio run (`--init-from RUN_ID`);
importing a torchvision-layout checkpoint is the `pretrained import` command's job, not measured here.
Printed: the validation accuracy of the last evaluation of each run, per seed, and the medians.

    python bench/bench_finetune.py [--pretrain-steps 300] [--steps 60] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402  (after the path set-up, for `python bench/bench_finetune.py`)

SIZE = {"image_size": 16}
SOURCE = ("shapes", {**SIZE, "num_samples": 2000})
# The fine-tuning tasks: digits (10 classes, a new head of another size), and shapes drawn otherwise (more noise,
# other drawings, 210 training samples) with a new head node of the same size (renamed, so nothing is loaded into it).
TARGETS = {"digits": ("digits", SIZE),
           "shapes-noisy": ("shapes", {**SIZE, "num_samples": 300, "noise": 0.35, "data_seed": 7})}


def run_here(graph, dataset, cfg) -> dict:
    """Train one run through the worker in this process; its final metrics (studio.training.cli)."""
    from studio.runs import Store, run_dir, start_run
    from studio.training import worker
    from studio.training.cli import final_summary

    dataset_id, options = dataset
    run_id = start_run(graph, dataset_id, cfg, dataset_options=options)
    status = worker.run(run_dir(run_id))
    summary = final_summary(run_id, Store())
    if status != "completed":
        raise RuntimeError(f"run {run_id} ended {status}: {summary.get('error')}")
    return summary


def train_variants(graph, target_name: str, target, variants: dict, args, base: dict) -> dict[str, list[float]]:
    """Each variant's last val_accuracy per seed; seeds interleaved (each seed trains every variant in turn)."""
    from studio.training import TrainConfig

    acc: dict[str, list[float]] = {k: [] for k in variants}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, extra in variants.items():
            out = run_here(graph, target, TrainConfig(max_steps=args.steps, seed=seed, **base, **extra))
            acc[name].append(out["val_accuracy"])
            print(f"{target_name} seed {seed}  {name}: val_accuracy {out['val_accuracy']:.3f}", flush=True)
    return acc


def verdict(title: str, target_name: str, acc: dict[str, list[float]], what: str = "best fine-tune") -> None:
    """The medians over seeds, and whether the best fine-tune beats scratch."""
    print(f"\n{title} (val_accuracy, median over seeds):")
    for name, values in acc.items():
        print(f"  {name:48s} {statistics.median(values):.3f}   ({', '.join(f'{v:.3f}' for v in values)})")
    best = max((statistics.median(v), k) for k, v in acc.items() if k != "scratch")
    scratch = statistics.median(acc["scratch"])
    report(f"{target_name}: {what} ({best[1]}) - scratch, val_accuracy", best[0] - scratch, "> 0", best[0] > scratch)


def parser(description: str) -> argparse.ArgumentParser:
    """The options every fine-tune bench takes: pretraining and fine-tuning steps, batch, lr, seeds, targets."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's lr, the same for every run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--targets", default=",".join(TARGETS))
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv if argv is not None else [])
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as ws:
        os.environ["STUDIO_WORKSPACE"] = ws
        from studio.compile import compile_graph
        from studio.data import apply_dataset, get_info
        from studio.graph_edit import renamed
        from studio.graph_head import head_of, with_new_head
        from studio.runs import launcher
        from studio.templates import load_template
        from studio.training import TrainConfig
        from studio.training.finetune import block_units

        launcher.reconcile = lambda store=None: {}  # create runs without spawning: this process trains them
        base = dict(batch_size=args.batch_size, probes=False, optimizer="adam", lr=args.lr)
        source_info = get_info(SOURCE[0], options=SOURCE[1])
        pre_graph = with_new_head(apply_dataset(load_template("resnet_small"), source_info), source_info.num_classes)
        t = time.perf_counter()
        pre = run_here(pre_graph, SOURCE, TrainConfig(max_steps=args.pretrain_steps, **base))
        print(f"pretrained on {SOURCE[0]} {SOURCE[1]} for {args.pretrain_steps} steps: val_accuracy "
              f"{pre['val_accuracy']:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
        results = {}
        for target_name in args.targets.split(","):
            target = TARGETS[target_name]
            info = get_info(target[0], options=target[1])
            graph = apply_dataset(pre_graph, info)
            if info.num_classes != source_info.num_classes:
                graph = with_new_head(graph, info.num_classes)  # other shapes: the warm start re-initialises it
            else:
                graph = renamed(graph, head_of(graph), "new_head")  # a new node: nothing is loaded into it
            units = block_units(compile_graph(graph, seed=0), graph)
            last_block = sum(1 for u in units if u.startswith("b3_"))  # the last residual block's layers
            variants = {
                "scratch": {},
                "head only (backbone frozen)": {"init_from": pre["run_id"], "train_last_blocks": 0},
                f"last block + head (train_last_blocks={last_block})": {"init_from": pre["run_id"],
                                                                         "train_last_blocks": last_block},
                "all, backbone lr x 0.1": {"init_from": pre["run_id"], "backbone_lr_scale": 0.1},
            }
            results[target_name] = train_variants(graph, target_name, target, variants, args, base)
    for target_name, acc in results.items():
        target = TARGETS[target_name]
        verdict(f"{target[0]} {target[1]} after {args.steps} steps of batch {args.batch_size}, Adam lr {args.lr:g}",
                target_name, acc)

if __name__ == "__main__":
    main(sys.argv[1:])
