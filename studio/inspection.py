"""Looking inside a trained run: its checkpoint as a model, its evaluation, one-input inference with
feature maps and attention, saliency, the probe snapshots it saved, and diffs between runs.

Pure functions on run directories, graphs and tensors (no Streamlit): the Inspect and Compare pages
lay out what these return. Probe snapshots are read one `.npz` member at a time (`load_probe_array`),
so a view never holds more than the one array it shows.

    >>> run = load_run(run_id)                                   # doctest: +SKIP
    >>> model = load_model(run, "best")                           # doctest: +SKIP
    >>> ev = evaluate(model, load_run_dataset(run))               # doctest: +SKIP
    >>> int(ev.confusion.sum()) == len(ev.targets)                # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from studio.errors import DataError, StudioError, TrainError
from studio.graph import Graph, parse_graph
from studio.runs.rundir import RunDir
from studio.training.config import TrainConfig

EVAL_BATCH = 256
MISCLASSIFIED_LIMIT = 64


# ---- a run on disk ---------------------------------------------------------------------------------

@dataclass
class RunFiles:
    """What a run left in its directory: graph, config, dataset id and options, checkpoints, probes."""

    run_id: str
    directory: Path
    graph: Graph
    config: TrainConfig
    dataset_id: str
    dataset_options: dict = field(default_factory=dict)

    @property
    def rundir(self) -> RunDir:
        """The directory's layout (studio.runs.rundir owns it)."""
        return RunDir(self.directory)

    @property
    def probes_dir(self) -> Path:
        return self.rundir.probes_dir

    def checkpoint_path(self, which: str) -> Path:
        return self.rundir.checkpoint(which)

    def checkpoints(self) -> list[str]:
        """The checkpoints saved so far, best first."""
        return self.rundir.checkpoints()


def load_run(run_id: str, workspace: str | Path | None = None) -> RunFiles:
    """The files of run `run_id` under workspace/runs/ (TrainError naming the directory when missing)."""
    rd = RunDir.of(run_id, workspace)
    directory, meta_path = rd.path, rd.run_file
    if not meta_path.exists():
        raise TrainError(f"run {run_id!r} has no run directory at {directory}; it was deleted or belongs to "
                         "another workspace (check STUDIO_WORKSPACE)")
    from studio.graph import load_graph

    meta = _read_json_object(meta_path, run_id)
    config = _read_json_object(rd.config_file, run_id)
    if not isinstance(meta.get("dataset_id"), str) or not isinstance(meta.get("dataset_options") or {}, dict):
        raise TrainError(f"run {run_id!r}: {meta_path} has no dataset_id string or a malformed dataset_options; "
                         "the file is damaged, so this run cannot be inspected (its checkpoints are untouched)")
    try:
        train_config = TrainConfig.from_dict(config)
    except (TypeError, ValueError, KeyError, StudioError) as e:
        raise TrainError(f"run {run_id!r}: {rd.config_file} is damaged ({e}); this run cannot be "
                         "inspected (its checkpoints are untouched)") from None
    return RunFiles(run_id, directory, load_graph(rd.graph_file), train_config,
                    meta["dataset_id"], dict(meta.get("dataset_options") or {}))


def _read_json_object(path: Path, run_id: str) -> dict:
    """A run's JSON file as a dict, or a TrainError saying which file is damaged and how."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__ + (f": {e}" if str(e) else "")
        raise TrainError(f"run {run_id!r}: {path} cannot be read ({why[:200]}); the file is damaged, so this run "
                         "cannot be inspected (its checkpoints are untouched)") from None
    if not isinstance(data, dict):
        raise TrainError(f"run {run_id!r}: {path} holds a JSON {type(data).__name__}, not an object; the file is "
                         "damaged, so this run cannot be inspected")
    return data


def load_run_dataset(run: RunFiles):
    """The run's dataset, split exactly as its worker split it (same seed and options)."""
    from studio.data import get_dataset

    return get_dataset(run.dataset_id, seed=run.config.seed, options=run.dataset_options or None)


def load_model(run: RunFiles, which: str = "best", device: str = "cpu"):
    """The run's compiled graph with the weights of checkpoint `which` ('best' or 'last'), in eval mode."""
    from studio.training.callbacks import load_trained_model

    path = run.checkpoint_path(which)
    if not path.exists():
        have = run.checkpoints()
        hint = f"use {' or '.join(repr(h) for h in have)}" if have else "wait for the first evaluation or epoch end"
        raise TrainError(f"run {run.run_id!r} has no {which!r} checkpoint yet ({path}); {hint}")
    return load_trained_model(run.graph, path, run_id=run.run_id, device=device)


# ---- evaluation -------------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """A model's predictions on one split. Arrays are numpy; fields not used by a task are None.

    classification: predictions (N,), probabilities (N, C), confusion (C, C) rows = true class.
    regression: predictions (N, *out) against targets (N, *out).
    sequence / language_model: predictions (N, T) token ids against targets (N, T).
    """

    task: str
    split: str
    targets: np.ndarray
    predictions: np.ndarray
    loss: float
    probabilities: np.ndarray | None = None
    confusion: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.targets)

    @property
    def accuracy(self) -> float | None:
        """Accuracy per sample (classification) or per token (sequence tasks)."""
        if self.task == "regression":
            return None
        return float((self.predictions == self.targets).mean())

    @property
    def mae(self) -> float | None:
        if self.task != "regression":
            return None
        return float(np.abs(self.predictions - self.targets.reshape(self.predictions.shape)).mean())

    def misclassified(self, limit: int = MISCLASSIFIED_LIMIT) -> np.ndarray:
        """Indices of the wrong samples (a sample with any wrong token, for sequences), most confident first."""
        if self.task == "regression":
            return np.zeros(0, np.int64)
        wrong = self.predictions != self.targets
        if wrong.ndim > 1:
            wrong = wrong.any(axis=tuple(range(1, wrong.ndim)))
        idx = np.flatnonzero(wrong)
        if self.probabilities is not None and len(idx):
            idx = idx[np.argsort(-self.probabilities[idx].max(axis=1), kind="stable")]
        return idx[:limit]


def precision_recall(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, support) per class of a confusion matrix whose rows are the true classes.
    A class never predicted has precision NaN; a class absent from the split has recall NaN."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    predicted, support = c.sum(axis=0), c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
    return precision, recall, support.astype(np.int64)


def evaluate(model, dataset, split: str = "val", *, batch_size: int = EVAL_BATCH) -> Evaluation:
    """Run `model` over a split of `dataset` and collect predictions, the loss and the confusion matrix."""
    info = dataset.info
    data = dataset.split(split)
    if len(data) == 0:
        raise TrainError(f"the {split} split of {info.id!r} is empty; evaluate another split")
    preds, probs, targets, loss_sum = [], [], [], 0.0
    model.eval()
    with torch.no_grad():
        for x, y in dataset.batches(split, batch_size, shuffle=False):
            out = model(x).float()
            if info.task == "classification":
                loss_sum += F.cross_entropy(out, y, reduction="sum").item()
                p = out.softmax(dim=-1)
                probs.append(p.numpy())
                preds.append(p.argmax(dim=-1).numpy())
            elif info.task == "regression":
                yy = y.reshape(out.shape).to(out.dtype)
                loss_sum += F.mse_loss(out, yy, reduction="sum").item() / max(1, out[0].numel())
                preds.append(out.numpy())
            else:
                loss_sum += F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum").item() \
                    / y.shape[1]
                preds.append(out.argmax(dim=-1).numpy())
            targets.append(y.numpy())
    n = len(data)
    ev = Evaluation(info.task, split, np.concatenate(targets), np.concatenate(preds), loss_sum / n)
    if info.task == "classification":
        ev.probabilities = np.concatenate(probs)
        k = info.num_classes or ev.probabilities.shape[1]
        ev.confusion = np.bincount(ev.targets * k + ev.predictions, minlength=k * k).reshape(k, k)
    return ev


# ---- one input ---------------------------------------------------------------------------------------

@dataclass
class Inference:
    """One input through the model: its output, class probabilities (classification) or per-position
    token probabilities (sequences), and the feature maps and attention of that input (batch of 1)."""

    output: np.ndarray
    probabilities: np.ndarray | None
    features: dict[str, np.ndarray]
    attention: dict[str, np.ndarray]


def feature_nodes(model) -> tuple[list[str], list[str]]:
    """(feature-map node ids, attention node ids) of a compiled model, in graph order."""
    from studio.training.probes import probe_targets

    return probe_targets(model)


def infer(model, x: torch.Tensor, task: str, *, node_ids: list[str] | None = None) -> Inference:
    """Run one input `x` (per-sample shape, no batch dimension) and capture what the pages show."""
    from studio.compile import capture

    fmap_ids, _ = feature_nodes(model)
    with torch.no_grad():
        out, feats, attns = capture(model, x.unsqueeze(0), fmap_ids if node_ids is None else node_ids)
    out = out.float()[0]
    probs = out.softmax(dim=-1).numpy() if task in ("classification", "sequence", "language_model") else None
    return Inference(out.numpy(), probs, {k: v[0].float().numpy() for k, v in feats.items()},
                     {k: v[0].float().numpy() for k, v in attns.items()})


def open_image(file):
    """A PIL image from an uploaded file, decoded; a damaged file or one that declares more pixels than
    MAX_IMAGE_PIXELS (a decompression bomb: a tiny PNG that says 20000x20000) is a DataError."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from studio.data.readers import MAX_IMAGE_PIXELS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(file)
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DataError(f"the image is {w}x{h} pixels, more than the {MAX_IMAGE_PIXELS:,} allowed; "
                                "upload a smaller image")
            img.load()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"that file could not be read as an image ({str(e)[:200]}); upload a PNG or JPEG") from None
    return img


def image_to_input(image, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A PIL image as a model input of per-sample shape (C, H, W) in [0, 1]: resized (bilinear) to
    (H, W), converted to grayscale for C=1 or RGB for C=3."""
    from PIL import Image

    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise StudioError(f"an image can only feed a model whose input is (1, H, W) or (3, H, W), but this one "
                          f"takes {tuple(input_shape)}; use a dataset sample instead")
    c, h, w = input_shape
    img = image.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = a[None] if c == 1 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def saliency(model, x: torch.Tensor, target: int, *, method: str = "gradcam", layer: str | None = None) -> np.ndarray:
    """A (H, W) map in [0, 1] of where image `x` (C, H, W) drives the score of class `target`.

    "gradient_x_input": |d score / d x * x| summed over channels (Shrikumar et al.).
    "gradcam": ReLU(sum_c mean(d score / d A_c) * A_c) of a convolutional layer's output A, upsampled
    (Selvaraju et al.); `layer` defaults to the last Conv2d.
    """
    model.eval()
    if method == "gradient_x_input":
        xg = x.unsqueeze(0).clone().requires_grad_(True)
        with torch.enable_grad():
            score = model(xg)[0, target]
        (grad,) = torch.autograd.grad(score, xg)  # leaves the parameters' .grad alone
        s = (grad[0] * xg[0]).abs().sum(dim=0)
    elif method == "gradcam":
        convs = [n for n in model.order if model.node_types[n] == "Conv2d"]
        layer = layer or (convs[-1] if convs else None)
        if layer is None:
            raise StudioError("Grad-CAM needs a Conv2d layer and this model has none; use gradient_x_input")
        kept: dict = {}
        handle = model._modules[layer].register_forward_hook(lambda _m, _i, out: kept.update(a=out))
        try:
            with torch.enable_grad():
                out = model(x.unsqueeze(0))
        finally:
            handle.remove()
        (grad,) = torch.autograd.grad(out[0, target], kept["a"])
        a, g = kept["a"][0], grad[0]  # (C, h, w)
        cam = F.relu((g.mean(dim=(1, 2), keepdim=True) * a).sum(dim=0))
        s = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    else:
        raise StudioError(f"unknown saliency method {method!r}; use 'gradcam' or 'gradient_x_input'")
    s = s.detach().float()
    span = float(s.max() - s.min())
    return ((s - s.min()) / span).numpy() if span > 0 else np.zeros(tuple(s.shape), np.float32)


def supports_saliency(model, task: str) -> bool:
    """Saliency is offered for image classifiers (float (C, H, W) input, class scores out)."""
    return task == "classification" and len(model.input_shape) == 3 and model.input_dtype == torch.float32


# ---- probe snapshots -------------------------------------------------------------------------------

def probe_index(run: RunFiles) -> list[dict]:
    """The run's probe snapshots, oldest first (see studio.training.probes for the entry format)."""
    from studio.training.probes import read_index

    try:
        index = read_index(run.probes_dir)
    except (OSError, ValueError, RecursionError) as e:
        raise TrainError(f"run {run.run_id!r}: the probe index {run.probes_dir / 'index.json'} is damaged "
                         f"({type(e).__name__}); the probe views cannot be shown (the run's metrics, checkpoints "
                         "and evaluation are unaffected)") from None
    if not isinstance(index, list):
        raise TrainError(f"run {run.run_id!r}: the probe index {run.probes_dir / 'index.json'} is not a list; "
                         "the probe views cannot be shown")
    return [e for e in index if isinstance(e, dict) and isinstance(e.get("file"), str) and "/" not in e["file"]
            and (run.probes_dir / e["file"]).exists()]


def load_probe_array(run: RunFiles, entry: dict, name: str) -> np.ndarray:
    """One array of one snapshot (e.g. "fmap/conv1"), read alone from the .npz as float32."""
    path = run.probes_dir / entry["file"]
    try:
        with np.load(path, allow_pickle=False) as z:
            if name not in z.files:
                raise TrainError(f"snapshot {entry['file']} of run {run.run_id!r} has no array {name!r}; it has "
                                 f"{', '.join(sorted(f for f in z.files if '/' in f)[:12])}...")
            a = z[name]
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise TrainError(f"snapshot {path} could not be read ({e}); it may still be being written") from e
    return a.astype(np.float32) if a.dtype == np.float16 else a


def histogram_over_steps(run: RunFiles, entries: list[dict], param: str, kind: str = "w", bins: int = 64,
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps (S,), bin edges (bins+1,), counts (S, bins)) of one parameter's values (kind "w") or
    gradients ("g") over the snapshots, re-binned onto one value axis shared by every step.

    Each snapshot stores its own [min, max] range; its counts move to the shared bins by their bin
    centres. Snapshots without that histogram (no gradient yet) are left out.
    """
    hist, rng = f"{kind}hist/{param}", f"{kind}range/{param}"
    found: list[tuple[int, np.ndarray, np.ndarray]] = []
    for e in entries:
        with np.load(run.probes_dir / e["file"], allow_pickle=False) as z:
            if hist in z.files:
                found.append((e["step"], z[hist].astype(np.float64), z[rng].astype(np.float64)))
    if not found:
        return np.zeros(0, np.int64), np.zeros(bins + 1), np.zeros((0, bins))
    lo = min(r[0] for _, _, r in found)
    hi = max(r[1] for _, _, r in found)
    if hi <= lo:
        hi = lo + 1e-12
    edges = np.linspace(lo, hi, bins + 1)
    out = np.zeros((len(found), bins))
    for i, (_, counts, (a, b)) in enumerate(found):
        k = len(counts)
        centres = a + (np.arange(k) + 0.5) * (b - a) / k
        j = np.clip(((centres - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)
        np.add.at(out[i], j, counts)
    return np.array([s for s, _, _ in found]), edges, out


def parameter_names(run: RunFiles, entry: dict) -> list[str]:
    """Names of the parameter tensors with histograms in a snapshot (conv1.weight, ...)."""
    with zipfile.ZipFile(run.probes_dir / entry["file"]) as z:
        return [n[len("whist/"):-len(".npy")] for n in z.namelist() if n.startswith("whist/")]


def index_series(entries: list[dict], field_name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(steps, {name: values}) of a per-snapshot dict in the index ("grad_norms" or "dead_fraction");
    a name missing at a step is NaN there."""
    steps = np.array([e["step"] for e in entries], dtype=np.int64)
    names = list(dict.fromkeys(k for e in entries for k in e.get(field_name, {})))
    return steps, {n: np.array([e.get(field_name, {}).get(n, np.nan) for e in entries], dtype=np.float64)
                   for n in names}


def read_confusions(run: RunFiles) -> list[dict]:
    """Every evaluation's confusion matrix the worker logged: [{"step", "epoch", "matrix"}], oldest first."""
    path = run.rundir.confusion_file
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return out


# ---- diffs between runs -------------------------------------------------------------------------------

@dataclass
class GraphDiff:
    """How graph `b` differs from graph `a`."""

    added: list[str]
    removed: list[str]
    type_changed: list[tuple[str, str, str]]                 # (node_id, type in a, type in b)
    params_changed: list[tuple[str, str, object, object]]    # (node_id, param, value in a, value in b)
    edges_added: list[tuple[str, str]]
    edges_removed: list[tuple[str, str]]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.type_changed or self.params_changed or self.edges_added
                    or self.edges_removed)

    def lines(self) -> list[str]:
        """One human line per difference, e.g. "conv1: out_channels 8 -> 16"."""
        out = [f"+ {n} added" for n in self.added] + [f"- {n} removed" for n in self.removed]
        out += [f"{n}: type {a} -> {b}" for n, a, b in self.type_changed]
        out += [f"{n}: {p} {_show(a)} -> {_show(b)}" for n, p, a, b in self.params_changed]
        out += [f"+ edge {s} -> {t}" for s, t in self.edges_added]
        out += [f"- edge {s} -> {t}" for s, t in self.edges_removed]
        return out


_MISSING = "(default)"


def _show(v) -> str:
    return v if v == _MISSING else json.dumps(v)


def graph_diff(a: Graph | dict, b: Graph | dict) -> GraphDiff:
    """Nodes added, removed, whose type changed, and params changed from `a` to `b` (matched by node id);
    a param written in one graph only is compared with "(default)". Positions are ignored."""
    a = parse_graph(a) if isinstance(a, dict) else a
    b = parse_graph(b) if isinstance(b, dict) else b
    na, nb = {n.id: n for n in a.nodes}, {n.id: n for n in b.nodes}
    type_changed, params_changed = [], []
    for node_id in [n.id for n in b.nodes if n.id in na]:
        x, y = na[node_id], nb[node_id]
        if x.type != y.type:
            type_changed.append((node_id, x.type, y.type))
            continue
        for p in dict.fromkeys([*x.params, *y.params]):
            va, vb = x.params.get(p, _MISSING), y.params.get(p, _MISSING)
            if va != vb:
                params_changed.append((node_id, p, va, vb))
    ea = [(e.source, e.target) for e in a.edges]
    eb = [(e.source, e.target) for e in b.edges]
    return GraphDiff(added=[n for n in nb if n not in na], removed=[n for n in na if n not in nb],
                     type_changed=type_changed, params_changed=params_changed,
                     edges_added=[e for e in eb if e not in ea], edges_removed=[e for e in ea if e not in eb])


def config_diff(configs: list[dict]) -> dict[str, list]:
    """{setting: [value per config]} for the settings whose values are not all equal."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    out = {}
    for k in keys:
        values = [c.get(k, _MISSING) for c in configs]
        if any(v != values[0] for v in values[1:]):
            out[k] = values
    return out


LOWER_IS_BETTER = ("loss", "perplexity", "mae", "mse", "rmse")


def best_value(key: str, values: list[float]) -> float:
    """The best finite value of a metric: the minimum for losses and errors, the maximum otherwise."""
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return float("nan")
    return min(finite) if key.endswith(LOWER_IS_BETTER) else max(finite)
