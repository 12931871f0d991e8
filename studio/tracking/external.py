"""Runs made elsewhere, read back for the Compare page: a TensorBoard log directory or an MLflow run.

`read_tensorboard(path)` returns one `ExternalRun` per folder holding event files (a `--logdir` folder
of many runs, or one run's own folder), read with TensorBoard's own `EventAccumulator` (every point
kept, not its 10,000-point sample); `read_mlflow(uri, run)` one for an MLflow run (its id, or its name
when that is unique). They are read-only copies in memory: nothing is written to the run store.

Their scalars keep their own tags (`source_tag`) and are charted under the studio's metric names when
the tag says which one it is (`studio_key`): `train_loss`, `Loss/train`, `train/loss` all chart as
`train_loss`; `val/accuracy`, `accuracy/validation`, `eval_acc` as `val_accuracy`; a tag that names no
split is charted as a training metric of its own (`train_<tag>`). `ExternalHistory` gives a run the
interface the studio's charts draw from (`keys`, `points`, `series`, `smoothed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from studio.tracking.common import TrackingError, require

_TRAIN = {"train", "training", "trn"}
_VAL = {"val", "valid", "validation", "eval", "evaluation", "test", "dev"}
_ALIASES = {"acc": "accuracy", "learning_rate": "lr", "ppl": "perplexity"}
_AS_IS = {"lr", "samples_per_sec", "grad_norm"}


def studio_key(tag: str) -> str:
    """The studio's metric name for an external scalar tag (see the module docstring).

    >>> [studio_key(t) for t in ("Loss/train", "train/loss", "val_accuracy", "accuracy/validation", "eval_acc",
    ...                          "learning_rate", "lr-Adam", "reward")]
    ['train_loss', 'train_loss', 'val_accuracy', 'val_accuracy', 'val_accuracy', 'lr', 'train_lr_adam', 'train_reward']
    """
    parts = [p for p in re.split(r"[/\s._\-:]+", tag.strip().lower()) if p]
    split = next((s for s, names in (("train", _TRAIN), ("val", _VAL)) if any(p in names for p in parts)), None)
    rest = [_ALIASES.get(p, p) for p in parts if p not in _TRAIN | _VAL]
    name = "_".join(rest) or "loss"
    name = _ALIASES.get(name, name)
    if split is None and name in _AS_IS:
        return name
    return f"{split or 'train'}_{name}"


@dataclass
class ExternalRun:
    """A run read from TensorBoard or MLflow: `series[key] = (steps, values, wall times)` under the
    studio's names, `source_tag[key]` the tag it was read from."""

    name: str
    source: str                        # "tensorboard" | "mlflow"
    location: str                      # the folder, or the tracking URI and run id
    series: dict = field(default_factory=dict)
    source_tag: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} [external: {self.source}]"

    def add(self, tag: str, steps, values, walls) -> None:
        key = studio_key(tag)
        if key in self.series:  # two tags map onto one name: keep both, the second under its own
            key = f"{key}__{re.sub(r'[^a-z0-9]+', '_', tag.lower()).strip('_')}"
        order = np.argsort(np.asarray(steps), kind="stable")
        self.series[key] = tuple(np.asarray(a, dtype=np.float64)[order] for a in (steps, values, walls))
        self.source_tag[key] = tag


def read_tensorboard(path: str | Path) -> list[ExternalRun]:
    """Every run under a TensorBoard log directory (each folder holding event files), scalars only."""
    root = Path(str(path)).expanduser()
    if not root.is_dir():
        raise TrackingError(f"{str(root)!r} is not a folder; give a TensorBoard log directory (what you pass to "
                            "tensorboard --logdir)")
    folders = sorted({f.parent for f in root.rglob("*tfevents*") if f.is_file()})
    if not folders:
        raise TrackingError(f"no TensorBoard event files (events.out.tfevents.*) under {str(root)!r}; give the "
                            "folder you pass to tensorboard --logdir, or one run's folder inside it")
    require("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = []
    for folder in folders:
        ea = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        try:
            ea.Reload()
        except Exception as e:  # noqa: BLE001 (a damaged file: the reader's own error, named)
            raise TrackingError(f"the event files in {str(folder)!r} could not be read ({type(e).__name__}: {e})") \
                from None
        name = str(folder.relative_to(root)) if folder != root else folder.name
        run = ExternalRun(name, "tensorboard", str(folder))
        for tag in ea.Tags().get("scalars", []):
            events = ea.Scalars(tag)
            run.add(tag, [e.step for e in events], [e.value for e in events], [e.wall_time for e in events])
        if run.series:
            runs.append(run)
    if not runs:
        raise TrackingError(f"the event files under {str(root)!r} hold no scalars (only histograms, images or "
                            "text); Compare overlays scalar curves")
    return runs


def read_mlflow(uri: str, run_ref: str) -> ExternalRun:
    """One MLflow run, by id or by name (`mlflow.runName`), with every metric's full history."""
    from studio.tracking.export import mlflow_client

    if not run_ref or not run_ref.strip():
        raise TrackingError("no MLflow run given; paste its run id (the 32-character id in its URL) or its name")
    run_ref = run_ref.strip()
    client = mlflow_client(uri)
    from mlflow.exceptions import MlflowException

    try:
        if re.fullmatch(r"[0-9a-f]{32}", run_ref):
            found = client.get_run(run_ref)
        else:
            experiments = [e.experiment_id for e in client.search_experiments()]
            matches = client.search_runs(experiments, filter_string=f"attributes.run_name = '{run_ref}'") \
                if experiments else []
            if len(matches) != 1:
                advice = "paste the run id instead" if matches else "check the name, or paste the run id"
                raise TrackingError(f"{len(matches)} MLflow runs are named {run_ref!r} in {uri!r}; {advice}")
            found = matches[0]
        run = ExternalRun(found.info.run_name or found.info.run_id, "mlflow", f"{uri} run {found.info.run_id}")
        for key in sorted(found.data.metrics):
            history = client.get_metric_history(found.info.run_id, key)
            run.add(key, [m.step for m in history], [m.value for m in history], [m.timestamp / 1000 for m in history])
    except MlflowException as e:
        raise TrackingError(f"MLflow could not read run {run_ref!r} from {uri!r}: {str(e).splitlines()[0]}") from None
    if not run.series:
        raise TrackingError(f"MLflow run {run_ref!r} has no metrics to draw")
    return run


class ExternalHistory:
    """An ExternalRun as the charts read a run's history: keys, point counts, (x, y) series, smoothed lines.
    On the epoch axis an external run has no epochs: its series are empty there (steps and wall time work)."""

    def __init__(self, run: ExternalRun):
        self.run = run

    def keys(self) -> list[str]:
        return list(self.run.series)

    def points(self, key: str) -> int:
        return len(self.run.series[key][0]) if key in self.run.series else 0

    def _x(self, key: str, x_axis: str) -> np.ndarray:
        steps, _, walls = self.run.series[key]
        if x_axis == "step":
            return steps
        if x_axis == "wall":
            origin = min(s[2][0] for s in self.run.series.values() if len(s[2]))
            return walls - origin
        if x_axis == "epoch":
            return np.full(len(steps), np.nan)
        raise ValueError(f"x_axis={x_axis!r}; use one of step, epoch, wall")

    def series(self, key: str, x_axis: str = "step", steps_per_epoch: float | None = None):
        x = self._x(key, x_axis)
        keep = np.isfinite(x)
        return x[keep], self.run.series[key][1][keep]

    def smoothed(self, key: str, weight: float, x_axis: str = "step", steps_per_epoch: float | None = None, *,
                 bound: bool = True):
        from studio.runs.history import ema

        x, y = self.series(key, x_axis, steps_per_epoch)
        return x, ema(y, weight), (np.zeros(len(y)) if bound else None)


__all__ = ["ExternalHistory", "ExternalRun", "read_mlflow", "read_tensorboard", "studio_key"]
