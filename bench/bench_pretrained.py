"""Pretrained import at the real sizes: torchvision's ResNet-18 layout (11.7 M parameters) and GPT-2 small
(124 M, saved by transformers), both with random weights (no network here for the published files).

Figures:
- the imported model's logits against the reference module (the test-suite's hand-written torchvision
  ResNet; transformers' GPT2LMHeadModel), as the largest absolute difference and relative to the logits' scale;
- the time of `import_checkpoint` (read, map, build the graph, compile, write the run and its checkpoint)
  against the plain load a hand-written script does (torch.load / safetensors + load_state_dict into the
  reference module), interleaved repetitions, medians. No goal: the import also writes a checkpoint.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import interleaved

ROOT = Path(__file__).resolve().parents[1]


def _compare(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    ok = torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
    print(f"{'PASS' if ok else 'MISS'}  {name}: max |diff| {diff:.3g} on logits up to {scale:.3g} "
          f"(goal: within rtol 1e-4)", flush=True)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from studio.pretrained import import_checkpoint
    from studio.training.transfer import load_trained
    from tests.pretrained_refs import BasicBlock, ResNet, random_resnet

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp())
    os.environ["STUDIO_WORKSPACE"] = str(work / "ws")
    try:
        ref = random_resnet(BasicBlock, (2, 2, 2, 2), width=64, num_classes=1000)
        torch.save(ref.state_dict(), work / "resnet18.pth")
        imp = import_checkpoint(work / "resnet18.pth")
        _, model = load_trained(imp.run_id)
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            _compare(f"resnet18 ({imp.params:,} params) logits vs reference", model(x), ref(x))

        def plain_resnet():
            m = ResNet(BasicBlock, (2, 2, 2, 2))
            m.load_state_dict(torch.load(work / "resnet18.pth", weights_only=True))

        t = interleaved({"import": lambda: import_checkpoint(work / "resnet18.pth"), "plain": plain_resnet}, reps=3)
        print(f"      resnet18: import_checkpoint {t['import']:.2f} s, plain load {t['plain']:.2f} s "
              f"({t['import'] / t['plain']:.1f}x)", flush=True)

        from safetensors.torch import load_file
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        gpt = GPT2LMHeadModel(GPT2Config()).eval()
        gpt.save_pretrained(work / "gpt2", safe_serialization=True)
        imp = import_checkpoint(work / "gpt2")
        _, model = load_trained(imp.run_id)
        ids = torch.randint(0, 50257, (1, 64), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            _compare(f"gpt2 ({imp.params:,} params in the graph, untied head) logits vs transformers, 64 tokens",
                     model(ids), gpt(ids).logits)

        def plain_gpt():
            m = GPT2LMHeadModel(GPT2Config())
            # strict=False: the file has no lm_head.weight (tied to wte); this is the baseline, not the import
            m.load_state_dict(load_file(work / "gpt2" / "model.safetensors"), strict=False)

        t = interleaved({"import": lambda: import_checkpoint(work / "gpt2"), "plain": plain_gpt}, reps=3)
        print(f"      gpt2: import_checkpoint {t['import']:.2f} s, plain load {t['plain']:.2f} s "
              f"({t['import'] / t['plain']:.1f}x)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
