"""Fine-tuning through the published layout: a ResNet pretrained here, saved as a torchvision `.pth`, imported,
given a new head and fine-tuned, against the same graph from scratch with the same step budget.

1. A torchvision-layout ResNet (the hand-written reference of tests/pretrained_refs.py: torchvision's module
   names, BasicBlock, layers (1, 1, 1, 1), `--width` channels; its stem takes the 1-channel images of the
   source task) is trained by a plain PyTorch loop on `shapes` (5 classes, 16x16) for --pretrain-steps.
2. Its `state_dict()` is saved with `torch.save`, as torchvision's checkpoints are, and imported with
   `studio.pretrained.import_checkpoint` (a run of status `imported`, the graph built from the file).
3. On a different task (`digits` at 16x16, 10 classes; or shapes drawn otherwise), the imported graph gets a new
   head (`with_new_head`; the warm start re-initialises it, its shape differs) and trains --steps optimizer
   steps through the real worker code, three ways: from scratch; warm started from the imported run with the
   backbone frozen (`train_last_blocks=0`); warm started with everything training and the loaded weights at a
   tenth of the lr (`backbone_lr_scale=0.1`).

Printed: each run's last validation accuracy per seed (seeds interleaved) and the medians.

    python bench/bench_finetune_import.py [--pretrain-steps 300] [--steps 60] [--seeds 0,1,2]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_finetune import TARGETS, parser, train_variants, verdict  # noqa: E402  (after the path set-up)

SOURCE = ("shapes", {"image_size": 16, "num_samples": 2000})


def pretrain_reference(width: int, steps: int, batch_size: int, lr: float):
    """The torchvision-layout ResNet trained on the source task by a plain loop; (model, val accuracy)."""
    import torch
    from torch import nn

    from studio.data import get_dataset
    from tests.pretrained_refs import BasicBlock, ResNet

    torch.manual_seed(0)
    data = get_dataset(SOURCE[0], options=SOURCE[1])
    model = ResNet(BasicBlock, (1, 1, 1, 1), num_classes=data.info.num_classes, width=width)
    model.conv1 = nn.Conv2d(1, width, 7, 2, 3, bias=False)  # the source images have one channel
    train, val = data.split("train"), data.split("val")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        x, y = train.take(torch.randint(0, len(train), (batch_size,), generator=g))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(val.x).argmax(1) == val.y).float().mean())
    return model, acc


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=16)
    args = p.parse_args(argv if argv is not None else [])
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as ws:
        os.environ["STUDIO_WORKSPACE"] = ws
        from studio.data import apply_dataset, get_info
        from studio.graph import load_graph
        from studio.graph_edit import renamed
        from studio.graph_head import head_of, with_new_head
        from studio.pretrained import import_checkpoint
        from studio.runs import launcher

        launcher.reconcile = lambda store=None: {}  # create runs without spawning: this process trains them
        ref, ref_acc = pretrain_reference(args.width, args.pretrain_steps, args.batch_size, args.lr)
        path = Path(ws) / "resnet_tiny.pth"
        torch.save(ref.state_dict(), path)
        imp = import_checkpoint(path, name="pretrained here", image_size=16)
        print(f"pretrained the torchvision-layout ResNet on {SOURCE[0]} for {args.pretrain_steps} steps: val_accuracy "
              f"{ref_acc:.3f}; imported as run {imp.run_id} ({imp.architecture}, {imp.params:,} parameters)",
              flush=True)
        imported = load_graph(imp.graph_path)
        results = {}
        for target_name in args.targets.split(","):
            target = TARGETS[target_name]
            info = get_info(target[0], options=target[1])
            graph = apply_dataset(imported, info)
            if info.num_classes != ref.fc.out_features:
                graph = with_new_head(graph, info.num_classes)
            else:
                graph = renamed(graph, head_of(graph), "new_head")  # a new node: nothing is loaded into it
            base = dict(batch_size=args.batch_size, probes=False, optimizer="adam", lr=args.lr)
            variants = {
                "scratch": {},
                "imported, backbone frozen": {"init_from": imp.run_id, "train_last_blocks": 0},
                "imported, all, backbone lr x 0.1": {"init_from": imp.run_id, "backbone_lr_scale": 0.1},
            }
            results[target_name] = train_variants(graph, target_name, target, variants, args, base)
    for target_name, acc in results.items():
        verdict(f"{target_name} after {args.steps} steps", target_name, acc,
                "best fine-tune of the imported checkpoint")


if __name__ == "__main__":
    main(sys.argv[1:])
