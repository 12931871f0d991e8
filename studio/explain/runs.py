"""Explanations of a run's predictions: its checkpoint, its dataset split as the worker split it, and a
cache per (run, checkpoint file, sample, target, method, settings).

The run's own files are only read. The cache lives in the workspace's `cache/explain/<run_id>/`, one
`.npz` per explanation, keyed by a hash of everything that decides the result (the checkpoint's size
and modification time included, so a new best checkpoint is never served an old answer); deleting the
folder loses nothing but time.

    >>> e = explain_run(run_id, "integrated-gradients", sample=3)   # doctest: +SKIP
    >>> e.attributions.shape == e.input.shape                        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from studio.explain.baselines import default_pad_token
from studio.explain.core import Check, ExplainError, Explanation, Settings, explain

CACHE_FORMAT = 1


@dataclass(frozen=True)
class Sample:
    """One input to explain and where it came from (`key` identifies it in the cache)."""

    x: torch.Tensor          # per-sample shape
    label: int | None        # the dataset's target, when the sample is from a split (classification)
    source: str              # "val[12]", "uploaded image", "typed text"
    key: str
    length: int | None = None  # typed text through a tokenizer: the tokens typed (the rest is padding)


def dataset_sample(dataset, split: str, index: int) -> Sample:
    """Sample `index` of a split; ExplainError naming the split's size when it is out of range."""
    part = dataset.split(split)
    n = len(part)
    if not 0 <= int(index) < n:
        raise ExplainError(f"sample {index} is out of range: the {split} split has {n} samples (0 to {n - 1}); "
                           f"pass --sample from 0 to {n - 1}")
    x, y = part.take(torch.tensor([int(index)]))
    label = int(y[0]) if y[0].dim() == 0 else None
    return Sample(x[0], label, f"{split}[{int(index)}]", f"{split}:{int(index)}")


def input_sample(x: torch.Tensor, source: str, length: int | None = None) -> Sample:
    """An input that is not in a split (an uploaded image, a drawing, typed text): keyed by its bytes.
    `length`: typed text's token count when the rest is padding."""
    digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:20]
    return Sample(x, None, source, f"input:{x.dtype}:{tuple(x.shape)}:{digest}", length)


def text_to_tokens(text: str, vocab: list[str] | None, seq_len: int, pad_token: int) -> torch.Tensor:
    """Typed text as token ids of the model's length: one character a token (the studio's token datasets
    are character vocabularies), cut to `seq_len` or filled with `pad_token`; ExplainError naming the
    characters the vocabulary does not have."""
    if not vocab:
        raise ExplainError("this dataset has no vocabulary, so typed text cannot be turned into its tokens; "
                           "pick a dataset sample")
    ids = {tok: i for i, tok in enumerate(vocab)}
    unknown = sorted({ch for ch in text if ch not in ids})
    if unknown:
        fallback = ids.get("<unk>")
        if fallback is None:
            shown = "".join(vocab[:40]) if all(len(v) == 1 for v in vocab) else ", ".join(vocab[:20])
            raise ExplainError(f"{', '.join(repr(c) for c in unknown[:10])} not in the vocabulary; type only "
                               f"these tokens: {shown}")
    tokens = [ids.get(ch, ids.get("<unk>", 0)) for ch in text][:seq_len]
    if not tokens:
        raise ExplainError("the text is empty; type at least one token")
    return torch.tensor(tokens + [pad_token] * (seq_len - len(tokens)), dtype=torch.int64)


def feature_names(dataset_id: str, width: int, workspace=None) -> list[str]:
    """Names of a tabular dataset's columns: scikit-learn's for the bundled sets, the upload's own
    column names (one-hot columns as `col=value`), else `x0`, `x1`, ..."""
    names: list[str] = []
    try:
        if dataset_id.startswith("upload_"):
            from studio.data.uploads import upload_details

            names = list((upload_details(dataset_id, workspace).get("preprocessing") or {}).get("features") or [])
        elif dataset_id in ("iris", "wine", "breast_cancer"):
            import sklearn.datasets  # the loader's own source of these sets; only these need it

            loader = {"iris": "load_iris", "wine": "load_wine", "breast_cancer": "load_breast_cancer"}[dataset_id]
            names = [str(n) for n in getattr(sklearn.datasets, loader)().feature_names]
    except (OSError, ValueError, KeyError, ImportError):
        names = []
    return names if len(names) == width else [f"x{i}" for i in range(width)]


# ---- the cache --------------------------------------------------------------------------------------------

def cache_dir(run_id: str, workspace=None) -> Path:
    from studio.workspace import workspace_dir

    root = Path(workspace) if workspace is not None else workspace_dir()
    return root / "cache" / "explain" / run_id


def cache_key(run, which: str, sample: Sample, method: str, target: int | None, settings: Settings) -> str:
    ckpt = run.checkpoint_path(which)
    st = ckpt.stat()
    doc = {"format": CACHE_FORMAT, "run": run.run_id, "which": which, "checkpoint": [st.st_size, st.st_mtime_ns],
           "sample": sample.key, "method": method, "target": target, "settings": settings.to_dict()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def _load_cached(path: Path) -> Explanation | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in ("input", "attributions", "scores")}
            baseline = z["baseline"] if "baseline" in z.files else None
    except (OSError, ValueError, KeyError):
        return None  # a damaged or older entry is recomputed
    check = Check(**meta["check"]) if meta.get("check") else None
    return Explanation(meta["method"], meta["target"], arrays["input"], baseline, arrays["attributions"],
                       arrays["scores"], check, Settings(**{k: tuple(v) if isinstance(v, list) else v
                                                           for k, v in meta["settings"].items()}),
                       meta.get("position"), meta.get("notes") or {})


def _store_cached(path: Path, e: Explanation) -> None:
    from studio.graph import atomic_write_bytes

    check = None
    if e.check is not None:
        check = {k: getattr(e.check, k) for k in ("name", "attribution_sum", "output", "baseline_output", "delta")}
    meta = {"method": e.method, "target": e.target, "position": e.position, "check": check,
            "settings": e.settings.to_dict(), "notes": e.notes}
    import io

    buf = io.BytesIO()
    arrays = {"input": e.input, "attributions": e.attributions, "scores": e.scores, "meta": np.array(json.dumps(meta))}
    if e.baseline is not None:
        arrays["baseline"] = e.baseline
    np.savez_compressed(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def explain_cached(run, which: str, model, dataset, sample: Sample, method: str, *, target: int | None = None,
                   settings: Settings | None = None, progress: Callable[[float], None] | None = None,
                   cancel: Callable[[], bool] | None = None, use_cache: bool = True,
                   compute: bool = True) -> tuple[Explanation | None, bool]:
    """(explanation, came from the cache) of `sample` under a run's loaded `model` and `dataset`;
    (None, False) when it is not cached and `compute` is False (the page asks before it computes).
    `dataset` None: a run without a studio dataset (imported weights), explained on a given sample
    (studio.explain.imported)."""
    from studio.explain import imported

    s = settings or Settings()
    info = imported.run_info(run, dataset)
    if info.input_dtype == "int64" and s.pad_token is None:
        pad = default_pad_token(info.vocab, dataset.train.x) if dataset is not None else \
            imported.tokenizer_pad(imported.run_tokenizer_or_none(run, info))
        s = Settings(**{**s.__dict__, "pad_token": pad})
    if s.position is None and sample.length and info.task in ("sequence", "language_model"):
        s = Settings(**{**s.__dict__, "position": sample.length - 1})  # typed text: its last token, not padding
    if s.layer and not imported.has_studio_dataset(run):
        imported.check_layer(model, s.layer)
    if dataset is None and s.baseline == "mean":
        raise ExplainError(f"the 'mean' baseline is the training split's mean input, and run {run.run_id!r} has no "
                           f"studio dataset (its weights were trained on {run.dataset_id!r}); use the zeros or "
                           "blurred baseline")
    path = cache_dir(run.run_id) / f"{cache_key(run, which, sample, method, target, s)}.npz"
    if use_cache and path.exists():
        found = _load_cached(path)
        if found is not None:
            return found, True
    if not compute:
        return None, False
    wants_mean = s.baseline == "mean" and info.input_dtype == "float32" and dataset is not None and len(dataset.train)
    mean = dataset.train.x.float().mean(0) if wants_mean else None  # only for the 'mean' baseline
    names = info.class_names or (info.vocab if info.task in ("sequence", "language_model") else None)
    e = explain(model, sample.x, method=method, target=target, task=info.task, settings=s, train_mean=mean,
                class_names=names, progress=progress, cancel=cancel, preprocess=imported.input_transform(run))
    if use_cache:
        try:
            _store_cached(path, e)
        except OSError:
            pass  # a read-only or full workspace: the answer is still good, only not kept
    return e, False


def explain_run(run_id: str, method: str, *, sample: int | Sample = 0, split: str = "val", target: int | None = None,
                settings: Settings | None = None, which: str | None = None, use_cache: bool = True,
                progress: Callable[[float], None] | None = None,
                cancel: Callable[[], bool] | None = None, input_file: str | Path | None = None,
                text: str | None = None) -> Explanation:
    """Explain run `run_id`'s prediction on `sample` (an index into `split`, or a Sample) with `method`.
    `which` checkpoint: 'best' when the run has one, else 'last'. `input_file` (an image, .npy or .pt) or
    `text` (through the run's tokenizer) replace `sample`; a run without a studio dataset (imported
    weights) needs one of them."""
    from studio.inspection import load_model, load_run, load_run_dataset

    run = load_run(run_id)
    have = run.checkpoints()
    if not have:
        raise ExplainError(f"run {run_id!r} has no checkpoint yet, so there is no trained model to explain; wait "
                           "for its first evaluation or epoch end")
    which = which or have[0]
    model = load_model(run, which)
    from studio.explain import imported

    dataset = load_run_dataset(run) if imported.has_studio_dataset(run) else None
    if input_file is not None and text is not None:
        raise ExplainError("give --input FILE or --text, not both")
    if input_file is not None:
        sample = input_sample(*imported.file_input(input_file, tuple(model.input_shape), model.input_dtype))
    elif text is not None:
        info = imported.run_info(run, dataset)
        given = settings.pad_token if settings is not None else None
        seq_len = int(model.input_shape[0])
        found = imported.text_tokens(run, info, text, seq_len, pad_token=given)
        if found is None:  # no tokenizer.json: the dataset's character vocabulary
            if not info.vocab:
                raise ExplainError(f"run {run_id!r} has no tokenizer.json and its dataset no vocabulary, so typed "
                                   "text cannot be turned into its tokens; give --input FILE with the token ids")
            pad = given if given is not None else default_pad_token(
                info.vocab, dataset.train.x if dataset is not None else None)
            found = text_to_tokens(text, info.vocab, seq_len, pad), None, pad
        x, length, pad = found
        sample = input_sample(x, "typed text", length)
        settings = Settings(**{**(settings or Settings()).__dict__, "pad_token": pad})
    elif dataset is None and not isinstance(sample, Sample):
        raise ExplainError(imported.no_dataset_message(run))
    if not isinstance(sample, Sample):
        sample = dataset_sample(dataset, split, sample)
    return explain_cached(run, which, model, dataset, sample, method, target=target, settings=settings,
                          progress=progress, cancel=cancel, use_cache=use_cache)[0]


def cache_size(run_id: str) -> int:
    """Bytes the cached explanations of a run take (the page says so beside "clear")."""
    d = cache_dir(run_id)
    return sum(p.stat().st_size for p in d.glob("*.npz")) if d.is_dir() else 0


def clear_cache(run_id: str) -> None:
    d = cache_dir(run_id)
    if d.is_dir():
        for p in d.glob("*.npz"):
            os.unlink(p)
