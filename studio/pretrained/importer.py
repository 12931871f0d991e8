"""`import_checkpoint`: a published checkpoint in, a run of status `imported` out.

The run directory is the one trained runs have (graph.json, config.json, run.json,
checkpoints/best.pt in the studio.checkpoint/1 format), so Inspect, Deploy, export and
`--init-from` read it unchanged; it also holds `weight_map.txt` (every source tensor and where it
went) and, for GPT-2, `tokenizer.json`. Everything is built and checked in memory first; the run
directory and the store row are written together or not at all.

    >>> imp = import_checkpoint("resnet18-f37072fd.pth")          # doctest: +SKIP
    >>> imp.architecture, imp.params                               # doctest: +SKIP
    ('resnet18', 11689512)
"""

from __future__ import annotations

import io
import pickle
import shutil
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.errors import GraphError, StorageError, TrainError
from studio.pretrained import gpt2, resnet
from studio.pretrained.mapping import PretrainedError, WeightMap

STATUS = "imported"
MAP_FILE = "weight_map.txt"
# The dataset the weights were trained on, recorded as the run's dataset id. These are not datasets of
# the studio: an imported run has no validation split until it is fine-tuned on one of the studio's.
SOURCE_DATASETS = {"resnet": "imagenet", "gpt2": "webtext"}
_STATE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


@dataclass
class Imported:
    """What `import_checkpoint` made: the run and the graph that holds the weights."""

    run_id: str
    graph_path: str                  # the run's graph.json
    architecture: str                # "resnet18", "resnet50", "gpt2", or a description of a custom size
    params: int                      # parameters (tensors of the state dict that are parameters)
    family: str = ""                 # "resnet" | "gpt2"
    tokenizer: str | None = None     # GPT-2: where tokenizer.json came from; None when the folder had none
    notes: list = field(default_factory=list)
    class_names_source: str | None = None  # the file the stored class names came from; None when none stored
    num_class_names: int = 0

    def to_json(self) -> dict:
        """The CLI's --json object (DESIGN.md): run_id, graph, architecture, params; plus "labels"
        {"file", "count"} when class names were stored."""
        out = {"run_id": self.run_id, "graph": self.graph_path, "architecture": self.architecture,
               "params": self.params}
        if self.class_names_source:
            out["labels"] = {"file": self.class_names_source, "count": self.num_class_names}
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def load_state_dict_file(path: Path) -> dict:
    """A `.pth` state dict, loaded with weights_only=True (a pickle with code is refused, never run)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise PretrainedError(f"{path} was refused: it holds Python objects other than tensors (a pickle that could "
                              f"run code when loaded; torch says: {str(e).splitlines()[0][:160]}); only plain "
                              "state dicts (torch.save(model.state_dict(), path)) are imported") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise PretrainedError(f"{path} cannot be read as a PyTorch checkpoint ({str(e).splitlines()[0][:160]}); "
                              "the file is cut short or is not a .pth state dict: download it again") from None
    for wrapper in ("state_dict", "model"):  # training scripts often save {"state_dict": ..., "epoch": ...}
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj:
        raise PretrainedError(f"{path} holds a {type(obj).__name__}, not a state dict (a dict of named tensors)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise PretrainedError(f"{path}: entries {', '.join(map(repr, bad[:5]))} are not named tensors; "
                              "a state dict maps names to tensors")
    return obj


def _read(path: Path, *, image_size: int, seq_len: int | None, name: str | None):
    """(family, graph document, WeightMap, architecture, folder or None) for a checkpoint path."""
    if path.is_file() and path.name == gpt2.WEIGHTS_FILE:
        path = path.parent
    if path.is_dir():
        if not gpt2.looks_like(path):
            have = sorted(p.name for p in path.iterdir())[:10]
            raise PretrainedError(f"{path} is a folder without {gpt2.CONFIG_FILE} and {gpt2.WEIGHTS_FILE} (it has: "
                                  f"{', '.join(have) or 'nothing'}); a Hugging Face GPT-2 checkpoint is a folder with "
                                  "both, a torchvision ResNet a .pth file")
        graph, wm, arch = gpt2.build(path, str(path), seq_len=seq_len, name=name)
        return "gpt2", graph, wm, arch, path
    if path.suffix.lower() == ".safetensors":
        raise PretrainedError(f"{path}: a .safetensors file needs its config.json beside it, named "
                              f"{gpt2.WEIGHTS_FILE}; import the folder that holds config.json and model.safetensors")
    if path.suffix.lower() not in _STATE_SUFFIXES:
        raise PretrainedError(f"{path}: unknown checkpoint kind {path.suffix or '(no suffix)'!r}; expected a "
                              f"torchvision ResNet state dict ({', '.join(_STATE_SUFFIXES)}) or a Hugging Face GPT-2 "
                              "folder")
    state = load_state_dict_file(path)
    if not resnet.looks_like(state):
        raise PretrainedError(f"{path}: the state dict is not a torchvision ResNet's (keys found: "
                              f"{', '.join(list(state)[:6])}{', ...' if len(state) > 6 else ''}); expected "
                              "conv1.weight, bn1.*, layer1.0.conv1.weight, ..., fc.weight")
    graph, wm, arch = resnet.build(state, str(path), image_size=image_size, name=name)
    return "resnet", graph, wm, arch, None


def build_model(graph_doc: dict, wm: WeightMap):
    """The compiled graph holding the mapped weights (PretrainedError when the graph or the map is wrong)."""
    from studio.compile import compile_graph
    from studio.graph import parse_graph

    try:
        graph = parse_graph(graph_doc)
        model = compile_graph(graph)
    except GraphError as e:
        raise PretrainedError(f"{wm.source}: the graph built from the checkpoint's shapes and config is not valid:\n  "
                              + "\n  ".join(str(i) for i in e.issues)) from None
    wm.check(model.state_dict())
    model.load_state_dict(wm.state, strict=True)
    return graph, model.eval()


def import_checkpoint(path, *, name: str | None = None, workspace=None, image_size: int = 224,
                      seq_len: int | None = None, store=None, source: str | None = None, labels=None) -> Imported:
    """Import a torchvision ResNet `.pth` or a Hugging Face GPT-2 folder as a run of status `imported`.

    `image_size` is the ResNet graph's input size (ImageNet's 224 by default; the weights fit any size);
    `seq_len` the GPT-2 graph's context (default: the checkpoint's n_positions); `source` names where the files
    came from in the run's event log (default: the path). `labels`: a file of class names
    (studio.pretrained.labels formats) stored with a classifier; without it, one lying beside the checkpoint
    is used when its count fits. Raises PretrainedError (nothing written) when the file cannot be read, a tensor
    does not map, or `labels` cannot be read or holds another count than the model's outputs.
    """
    import torch

    from studio.runs.launcher import new_run_id
    from studio.runs.rundir import RunDir
    from studio.runs.store import Store, storage_message
    from studio.training.callbacks import CHECKPOINT_FORMAT
    from studio.training.config import training_defaults
    from studio.workspace import workspace_dir

    path = Path(path).expanduser()
    if not path.exists():
        raise PretrainedError(f"{path} does not exist; give the path of a .pth file (torchvision ResNet) or of a "
                              "folder with config.json + model.safetensors (Hugging Face GPT-2)")
    family, graph_doc, wm, arch, folder = _read(path, image_size=image_size, seq_len=seq_len, name=name)
    graph, model = build_model(graph_doc, wm)
    from studio.pretrained.labels import labels_for_import

    class_names, labels_note = labels_for_import(graph, path, labels, source)
    state = model.state_dict()
    params = sum(p.numel() for p in model.parameters())
    task = "classification" if family == "resnet" else "language_model"
    dataset_id = SOURCE_DATASETS[family]
    ws = Path(workspace) if workspace is not None else workspace_dir()
    store = store or Store(ws / "studio.db" if workspace is not None else None)
    run_id = new_run_id()
    rd = RunDir.of(run_id, ws)
    notes = [f"{len(wm.mapped)} tensor(s) mapped"] + [f"not loaded: {k} ({why})" for k, why in wm.ignored]
    if labels_note:
        notes.append(labels_note.replace("RUN_ID", run_id))
    tokenizer = None
    try:  # the directory and the store row together, or neither
        rd.create(graph_json=graph.to_json(), config=training_defaults(None, task), meta={
            "run_id": run_id, "dataset_id": dataset_id, "dataset_options": {}, "db": str(store.path),
            "workspace": str(ws), "backend": {"kind": "local"},
            "pretrained": {"source": source or str(path.resolve()), "family": family, "architecture": arch},
        })
        buf = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "model": state, "best": None,
                    "position": {"step": 0, "epoch": 0, "batch_in_epoch": 0}}, buf)
        from studio.graph import atomic_write_bytes, atomic_write_text

        atomic_write_bytes(rd.checkpoint("best"), buf.getvalue())
        atomic_write_text(rd.path / MAP_FILE, "\n".join(wm.lines()) + "\n")
        if class_names:
            from studio.pretrained.labels import store_labels

            store_labels(rd, class_names[0], class_names[1])
        if folder is not None:
            tokenizer = gpt2.copy_tokenizer(folder, rd.path / gpt2.TOKENIZER_FILE,
                                            vocab_size=graph_doc["nodes"][1]["params"]["num_embeddings"])
            notes.append(f"tokenizer: {tokenizer}" if tokenizer else
                         "no tokenizer.json or vocab.json + merges.txt beside the weights: text cannot be tokenized")
        with store.transaction():
            store.create_run(run_id, name=name or f"{arch} (pretrained)", graph=graph.to_dict(),
                             config=rd.config_doc(), dataset_id=dataset_id, status=STATUS,
                             tags={"pretrained": arch})
            store.log_event(run_id, f"imported {arch} from {source or path}: {params:,} parameters; "
                            + "; ".join(notes))
    except BaseException as e:
        shutil.rmtree(rd.path, ignore_errors=True)
        if isinstance(e, (StorageError, PretrainedError)) or not isinstance(e, (OSError, sqlite3.Error)):
            raise
        raise TrainError(storage_message(e, "create the imported run", rd.path.parent)) from None
    return Imported(run_id, str(rd.graph_file), arch, params, family, tokenizer, notes,
                    class_names_source=class_names[1] if class_names else None,
                    num_class_names=len(class_names[0]) if class_names else 0)
