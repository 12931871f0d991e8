"""Probes: snapshots of a model's internals on a fixed probe batch, for the Inspect page.

One snapshot = one compressed `.npz` in the run's probes/ folder (float16 maps, int32 histogram
counts) plus an entry in `probes/index.json` (written atomically) that lists it by step and says
what was kept. Arrays in a snapshot:

    fmap/<node_id>    (n, C, ...) outputs of convolution / pooling / normalization / activation nodes
    attn/<node_id>    (n, heads, T, T) attention weights of attention nodes
    whist/<param>     (bins,) counts of a parameter tensor's values over wrange/<param> = [min, max]
    ghist/<param>     (bins,) counts of its gradient over grange/<param> (absent before the first step)

Per-layer gradient norms and the fraction of dead ReLU units live in the index entry. Snapshots
never change training: they run in eval mode under no_grad and consume no random numbers.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from studio.graph import atomic_write_bytes, atomic_write_text
from studio.training.loop import Callback, Trainer

HIST_BINS = 32
DEFAULT_CAP_BYTES = 4 * 1024 * 1024   # per snapshot, maps and attention together (float16)
INDEX_NAME = "index.json"


def probe_targets(model) -> tuple[list[str], list[str]]:
    """(feature-map node ids, attention node ids) of a compiled GraphModule, in graph order."""
    from studio.layers import FEATURE_MAP_CATEGORIES, REGISTRY

    fmaps, attns = [], []
    for node_id in model.order:
        category = REGISTRY[model.node_types[node_id]].category
        if category in FEATURE_MAP_CATEGORIES:
            fmaps.append(node_id)
        elif category == "attention":
            attns.append(node_id)
    return fmaps, attns


def histogram(t: torch.Tensor, bins: int = HIST_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(counts int32 (bins,), [min, max] float32) of a tensor's finite values."""
    flat = t.detach().float().flatten()
    flat = flat[torch.isfinite(flat)]
    if flat.numel() == 0:
        return np.zeros(bins, np.int32), np.zeros(2, np.float32)
    lo, hi = flat.min().item(), flat.max().item()
    if hi <= lo:
        hi = lo + 1e-12
    counts = torch.histc(flat, bins=bins, min=lo, max=hi)
    return counts.to(torch.int32).cpu().numpy(), np.array([lo, hi], np.float32)


def fit_to_cap(arrays: dict[str, torch.Tensor], cap_bytes: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Subsample samples (dim 0), then channels/heads (dim 1), until float16 copies fit `cap_bytes`.

    Returns the kept tensors and {"samples": n_kept, "channels": {name: kept}} describing the cut.
    """
    total = sum(a.numel() for a in arrays.values()) * 2
    cut: dict = {"samples": None, "channels": {}}
    if total <= cap_bytes or not arrays:
        return arrays, cut
    n = max(a.shape[0] for a in arrays.values())
    keep_n = max(1, min(n, math.floor(n * cap_bytes / total)))
    if keep_n < n:
        arrays = {k: a[:keep_n] for k, a in arrays.items()}
        cut["samples"] = keep_n
    total = sum(a.numel() for a in arrays.values()) * 2
    if total > cap_bytes:
        ratio = cap_bytes / total
        out = {}
        for k, a in arrays.items():
            if a.dim() >= 2:
                keep_c = max(1, math.floor(a.shape[1] * ratio))
                if keep_c < a.shape[1]:
                    a = a[:, :keep_c]
                    cut["channels"][k] = keep_c
            out[k] = a
        arrays = out
    return arrays, cut


class Prober(Callback):
    """Takes a snapshot before the first step, at every epoch end, every `every` steps (0 = epoch ends
    only) and at the end."""

    def __init__(self, directory: str | Path, probe_batch: tuple[torch.Tensor, torch.Tensor], *,
                 every: int = 0, cap_bytes: int = DEFAULT_CAP_BYTES):
        self.dir = Path(directory)
        self.x = probe_batch[0]
        self.every, self.cap_bytes = every, cap_bytes
        self.index: list[dict] = []
        self._last_step: int | None = None

    # ---- events -------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index = [e for e in read_index(self.dir) if e["step"] <= trainer.state.step]
        for f in self.dir.glob("step_*.npz"):  # snapshots past a resumed checkpoint are redone
            if int(f.stem.split("_")[1]) > trainer.state.step:
                f.unlink()
        if trainer.state.step == 0:
            self.snapshot(trainer)

    def on_step_end(self, trainer: Trainer) -> None:
        if self.every > 0 and trainer.state.step % self.every == 0:
            self.snapshot(trainer)

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.snapshot(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        self.snapshot(trainer)  # the final state (skipped when it was just taken or the run diverged)

    # ---- one snapshot -------------------------------------------------------------------------
    def snapshot(self, trainer: Trainer) -> dict | None:
        from studio.compile import capture
        from studio.layers import REGISTRY

        s = trainer.state
        if s.stop_reason == "diverged" or not (s.step == 0 or math.isfinite(s.loss)) or self._last_step == s.step:
            return None
        model = trainer.model
        fmap_ids, attn_ids = probe_targets(model)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), trainer.autocast():
                _, feats, attns = capture(model, self.x.to(trainer.device), fmap_ids, attention=bool(attn_ids))
        finally:
            model.train(was_training)

        entry: dict = {"step": s.step, "epoch": s.epoch, "time": time.time(), "samples": int(self.x.shape[0]),
                       "feature_maps": {}, "attention": {}, "dead_fraction": {}, "grad_norms": {}}
        for node_id in fmap_ids:
            if REGISTRY[model.node_types[node_id]].dead_units and node_id in feats:
                out = feats[node_id]
                entry["dead_fraction"][node_id] = float((out <= 0).all(dim=0).float().mean())
        arrays = {f"fmap/{k}": v.float().cpu() for k, v in feats.items()}
        arrays.update({f"attn/{k}": v.float().cpu() for k, v in attns.items()})
        full_shapes = {k: list(v.shape) for k, v in arrays.items()}
        arrays, cut = fit_to_cap(arrays, self.cap_bytes)
        for name, a in arrays.items():
            kind, node_id = name.split("/", 1)
            info = {"shape": list(a.shape), "full_shape": full_shapes[name]}
            if cut["samples"] is not None or name in cut["channels"]:
                info["subsampled"] = (f"kept {a.shape[0]} of {full_shapes[name][0]} samples and "
                                      f"{a.shape[1] if a.dim() > 1 else 1} of "
                                      f"{full_shapes[name][1] if len(full_shapes[name]) > 1 else 1} "
                                      f"{'heads' if kind == 'attn' else 'channels'} to stay under "
                                      f"{self.cap_bytes // 1024} KiB")
            entry["feature_maps" if kind == "fmap" else "attention"][node_id] = info

        out: dict[str, np.ndarray] = {k: a.to(torch.float16).numpy() for k, a in arrays.items()}
        grad_sq: dict[str, float] = {}
        from studio.graph_paths import node_of_key  # a layer inside a block is named by its path

        node_ids = set(getattr(model, "node_types", {}) or {})
        for pname, p in model.named_parameters():
            out[f"whist/{pname}"], out[f"wrange/{pname}"] = histogram(p)
            if p.grad is not None:
                out[f"ghist/{pname}"], out[f"grange/{pname}"] = histogram(p.grad)
                layer = node_of_key(pname, node_ids)
                grad_sq[layer] = grad_sq.get(layer, 0.0) + float(p.grad.detach().float().pow(2).sum())
        entry["grad_norms"] = {k: math.sqrt(v) for k, v in grad_sq.items()}

        name = f"step_{s.step:08d}.npz"
        buf = io.BytesIO()
        np.savez_compressed(buf, **out)
        atomic_write_bytes(self.dir / name, buf.getvalue())
        entry["file"] = name
        entry["bytes"] = buf.tell()
        self.index = [e for e in self.index if e["step"] != s.step] + [entry]
        atomic_write_text(self.dir / INDEX_NAME, json.dumps(self.index))
        self._last_step = s.step
        return entry


def read_index(directory: str | Path) -> list[dict]:
    """The probe index of a run's probes/ folder, oldest first ([] when none yet)."""
    path = Path(directory) / INDEX_NAME
    if not path.exists():
        return []
    return json.loads(path.read_text())


def load_snapshot(directory: str | Path, entry: dict) -> dict[str, np.ndarray]:
    """All arrays of one snapshot (see the module docstring for the names)."""
    with np.load(Path(directory) / entry["file"]) as z:
        return {k: z[k] for k in z.files}
