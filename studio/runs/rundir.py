"""RunDir: the one place that knows how a run directory is laid out.

    workspace/runs/<run_id>/
        run.json            run id, dataset id and options, store path, workspace, backend settings
        graph.json          the graph document (studio.graph/1)
        config.json         TrainConfig.to_dict()
        checkpoints/        last.pt, best.pt (state dicts, weights_only-loadable)
        probes/             index.json + step_XXXXXXXX.npz
        confusion.jsonl     one confusion matrix per evaluation
        log.txt             the worker's log (and its stdout/stderr)
        stop                present = "stop after this step" (written by stop_run, polled by the worker)
        class_names.json    an imported classifier's class names and the file they came from (studio.pretrained.labels)

It imports nothing from training: the launcher, the worker, the Ray driver and the pages all use it.

    >>> import tempfile
    >>> rd = RunDir(tempfile.mkdtemp())
    >>> rd.checkpoint("last").name, rd.stop_file.name
    ('last.pt', 'stop')
"""

from __future__ import annotations

import json
from pathlib import Path

from studio.errors import StorageError, TrainError
from studio.graph import atomic_write_text
from studio.oserrors import describe_os_error

RUN_FILE = "run.json"
GRAPH_FILE = "graph.json"
CONFIG_FILE = "config.json"
LOG_FILE = "log.txt"
STOP_FILE = "stop"
CONFUSION_FILE = "confusion.jsonl"
CLASS_NAMES_FILE = "class_names.json"
CHECKPOINTS = ("best", "last")


class RunDir:
    """Paths and small documents of one run directory (it need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of(cls, run_id: str, workspace: str | Path | None = None) -> RunDir:
        """The directory of run `run_id` under `workspace` (default: workspace_dir())."""
        from studio.workspace import workspace_dir

        return cls((Path(workspace) if workspace is not None else workspace_dir()) / "runs" / run_id)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ---- paths ----------------------------------------------------------------------------------
    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def graph_file(self) -> Path:
        return self.path / GRAPH_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def stop_file(self) -> Path:
        return self.path / STOP_FILE

    @property
    def confusion_file(self) -> Path:
        return self.path / CONFUSION_FILE

    @property
    def class_names_file(self) -> Path:
        return self.path / CLASS_NAMES_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def probes_dir(self) -> Path:
        return self.path / "probes"

    def checkpoint(self, which: str) -> Path:
        """checkpoints/best.pt or checkpoints/last.pt (it may not exist yet)."""
        if which not in CHECKPOINTS:
            raise TrainError(f"checkpoint {which!r} does not exist; use one of {', '.join(CHECKPOINTS)}")
        return self.checkpoints_dir / f"{which}.pt"

    def checkpoints(self) -> list[str]:
        """The checkpoints saved so far, best first."""
        return [w for w in CHECKPOINTS if self.checkpoint(w).exists()]

    def file(self, relative: str) -> Path:
        """A file named relative to the directory, refusing names that would leave it (from a relay)."""
        target = (self.path / relative).resolve()
        if self.path.resolve() not in target.parents:
            raise TrainError(f"{relative!r} is not a path inside the run directory {self.path}")
        return target

    # ---- documents ------------------------------------------------------------------------------
    def create(self, *, graph_json: str, config: dict, meta: dict) -> None:
        """Write a new run directory: folders, graph.json, config.json, run.json, an empty log."""
        self.checkpoints_dir.mkdir(parents=True)
        self.probes_dir.mkdir()
        atomic_write_text(self.graph_file, graph_json.rstrip("\n") + "\n")
        atomic_write_text(self.config_file, json.dumps(config, indent=2) + "\n")
        self.write_meta(meta)
        self.log_file.touch()

    def meta(self) -> dict:
        """run.json (TrainError naming the directory when it is missing)."""
        if not self.run_file.exists():
            raise TrainError(f"the run directory {self.path} has no {RUN_FILE}; it was not made by start_run "
                             "or has been deleted")
        return json.loads(self.run_file.read_text())

    def write_meta(self, meta: dict) -> None:
        atomic_write_text(self.run_file, json.dumps(meta, indent=2) + "\n")

    def config_doc(self) -> dict:
        return json.loads(self.config_file.read_text())

    def backend(self) -> dict:
        """The backend settings in run.json: {"kind": "local"} unless the run was started on Ray."""
        return self.meta().get("backend") or {"kind": "local"}

    def request_stop(self, reason: str | None = None) -> None:
        """Ask the run to stop; `reason` ("pruned": a sweep's pruner) is what the worker ends with."""
        try:
            self.stop_file.write_text(reason or "")
        except OSError as e:  # a full disk or a read-only workspace: said, with what to do
            raise StorageError(describe_os_error(e, "ask the run to stop", self.path)) from None

    def stop_reason(self) -> str:
        """What the stop file says (empty for a plain stop or SIGTERM)."""
        try:
            return self.stop_file.read_text().strip()
        except OSError:
            return ""

    def clear_stop(self) -> None:
        try:
            self.stop_file.unlink(missing_ok=True)
        except OSError as e:
            raise StorageError(describe_os_error(e, "clear the run's stop request", self.path)) from None

    def stop_requested(self) -> bool:
        return self.stop_file.exists()

    def remove_partial_writes(self) -> None:
        """Drop atomic writes cut short by a kill (.name.tmp files) from checkpoints/."""
        for leftover in self.checkpoints_dir.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def truncate_confusion(self, after_step: int) -> None:
        """Keep the confusion lines up to `after_step` (a resumed run recomputes the rest)."""
        path = self.confusion_file
        if not path.exists():
            return
        kept = []
        for ln in path.read_text().splitlines():
            if not ln.strip():
                continue
            try:
                if json.loads(ln)["step"] <= after_step:
                    kept.append(ln)
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut short by a killed worker
        path.write_text("".join(k + "\n" for k in kept))
