"""Checkpoint files uploaded through a page: written into a folder of their own under
workspace/uploads/pretrained/, imported from there (a `.pth` file, or a GPT-2 folder when config.json and
model.safetensors are among them), then removed: the run keeps the weights in its own checkpoint."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from studio.pretrained.mapping import PretrainedError

_NAMES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt")


def import_uploaded(files: list[tuple[str, bytes]], *, name: str | None = None, workspace=None,
                    labels: tuple[str, bytes] | None = None, **options):
    """Import uploaded files [(file name, bytes)]: one `.pth`/`.pt` (ResNet), or config.json +
    model.safetensors (+ tokenizer.json or vocab.json + merges.txt) for GPT-2. `labels` (file name, bytes):
    a class-names file stored with a classifier (studio.pretrained.labels). Returns the Imported run."""
    from studio.pretrained.importer import _STATE_SUFFIXES, import_checkpoint
    from studio.workspace import workspace_dir

    names = [Path(n).name for n, _ in files]
    states = [n for n in names if Path(n).suffix.lower() in _STATE_SUFFIXES]
    gpt = {"config.json", "model.safetensors"} <= set(names)
    if not files or (len(states) != 1 and not gpt) or (states and gpt):
        raise PretrainedError(f"uploaded {', '.join(names) or 'nothing'}; upload one .pth state dict (a torchvision "
                              "ResNet) or GPT-2's config.json and model.safetensors together (with tokenizer.json, "
                              "or vocab.json and merges.txt)")
    ws = Path(workspace) if workspace is not None else workspace_dir()
    folder = ws / "uploads" / "pretrained" / secrets.token_hex(4)
    folder.mkdir(parents=True)
    try:
        for n, data in files:
            if gpt and Path(n).name not in _NAMES:
                continue  # a README or generation_config.json beside the weights: not needed
            (folder / Path(n).name).write_bytes(data)
        target = folder if gpt else folder / states[0]
        labels_path = None
        if labels is not None:
            labels_path = folder / "labels" / Path(labels[0]).name  # its own folder: never a checkpoint file
            labels_path.parent.mkdir()
            labels_path.write_bytes(labels[1])
            names.append(labels_path.name)
        return import_checkpoint(target, name=name, workspace=workspace, labels=labels_path,
                                 source=f"uploaded files {', '.join(names)}", **options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
