"""The probe snapshots a run saved (studio.training.probes writes them): the index, one array of one
snapshot read alone from its `.npz` (so a view never holds more than the array it shows), weight and
gradient histograms over steps on one shared value axis, and per-snapshot series from the index.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from studio.errors import TrainError
from studio.inspection.runfiles import RunFiles


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


@contextmanager
def _snapshot(run: RunFiles, entry: dict) -> Iterator:
    """A snapshot's .npz, open; a file that is empty, cut short, overwritten or not an .npz (any read in
    the block) is a TrainError naming it, the one place such files are read."""
    path = run.probes_dir / entry["file"]
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as e:
        raise TrainError(f"snapshot {path} could not be read ({type(e).__name__}: {e}); it may still be being "
                         "written, or it is damaged (the run's metrics and checkpoints are unaffected)") from None


def load_probe_array(run: RunFiles, entry: dict, name: str) -> np.ndarray:
    """One array of one snapshot (e.g. "fmap/conv1"), read alone from the .npz as float32."""
    with _snapshot(run, entry) as z:
        if name not in z.files:
            raise TrainError(f"snapshot {entry['file']} of run {run.run_id!r} has no array {name!r}; it has "
                             f"{', '.join(sorted(f for f in z.files if '/' in f)[:12])}...")
        a = z[name]
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
        with _snapshot(run, e) as z:
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
    with _snapshot(run, entry) as z:
        return [n[len("whist/"):] for n in z.files if n.startswith("whist/")]


def index_series(entries: list[dict], field_name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(steps, {name: values}) of a per-snapshot dict in the index ("grad_norms" or "dead_fraction");
    a name missing at a step is NaN there."""
    steps = np.array([e["step"] for e in entries], dtype=np.int64)
    names = list(dict.fromkeys(k for e in entries for k in e.get(field_name, {})))
    return steps, {n: np.array([e.get(field_name, {}).get(n, np.nan) for e in entries], dtype=np.float64)
                   for n in names}
