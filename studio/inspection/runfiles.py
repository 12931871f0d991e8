"""A finished or running run as files: its graph, TrainConfig, dataset id and options, and its
checkpoints loaded as a model in eval mode. The directory's layout is studio.runs.rundir's.

    >>> run = load_run(run_id)                                   # doctest: +SKIP
    >>> model = load_model(run, "best")                           # doctest: +SKIP
    >>> dataset = load_run_dataset(run)                           # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import StudioError, TrainError
from studio.graph import Graph
from studio.runs.rundir import RunDir
from studio.training.config import TrainConfig


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
