"""TensorBoard logging while a run trains: the run store's rows, mirrored as they are committed.

A run asks for it at launch (`studio.tracking.common.launch_tags(DIR)` in `start_run(..., tags=...)`: the CLI's
`--tensorboard DIR`, the Train page's setting); its events go to `DIR/<run_id>/`, so one folder holds
many runs side by side, as TensorBoard expects. The worker calls `live_tensorboard`, which wraps the
run's store in a `MirroredStore`:

- every metric row the store commits is written as a scalar under the same key (`train_loss`,
  `val_accuracy`, `lr`, ...) at the same step and wall time, after the commit: TensorBoard never
  shows a value the store does not hold;
- when the store drops rows (a resumed run recomputes the steps after its checkpoint), the event
  file gets TensorBoard's restart marker at the next step, so the old values of those steps are
  hidden and each step is shown once, with the value the store holds.

`TensorBoardLogger` (a callback) adds the graph's summary as text, weight and gradient histograms at
the probe steps (the Prober's schedule) and, when the run ends, its hyperparameters for the HParams
tab. A log directory that fails mid-run turns the logging off with a warning in the run's log; the
run itself trains on.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from studio.tracking.common import TrackingError, run_log_dir
from studio.tracking.events import (
    CONFIG_TAG,
    GRAPH_TAG,
    EventFile,
    flat_hparams,
    graph_markdown,
    graph_totals,
    snapshot_histograms,
)


class LiveBoard:
    """The run's event file, turned off (with one warning in the run's log) at its first failure."""

    def __init__(self, logdir: Path, log):
        self.logdir, self.log = logdir, log
        self.file: EventFile | None = EventFile(logdir)
        self._lock = threading.Lock()

    def write(self, what: str, fn, *args, **kwargs) -> None:
        with self._lock:
            if self.file is None:
                return
            try:
                fn(self.file, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 (TensorBoard logging never ends a run: it stops, the run goes on)
                self.file = None
                self.log(f"TensorBoard logging stopped: cannot write the {what} to {str(self.logdir)!r} ({e}); "
                         "the run trains on and its store keeps every metric (export it later with "
                         "`python -m studio runs export RUN --to tensorboard DIR`)", "warning")

    def close(self) -> None:
        with self._lock:
            if self.file is not None:
                self.file.close()
                self.file = None


class MirroredStore:
    """The run's Store, with each committed metric row also written to TensorBoard and each truncation
    mirrored by a restart marker; every other attribute is the store's own."""

    def __init__(self, store, board: LiveBoard):
        self._store, self._board = store, board

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def write_metrics(self, run_id: str, rows: list) -> None:
        self._store.write_metrics(run_id, rows)
        if rows:
            self._board.write("metrics", EventFile.scalars, rows)

    def truncate_metrics(self, run_id: str, after_step: int) -> int:
        dropped = self._store.truncate_metrics(run_id, after_step)
        # After step 0 (a start or a start over) everything goes, the graph's text at step 0 included.
        self._board.write("restart marker", EventFile.purge_from, after_step + 1 if after_step > 0 else 0)
        return dropped


class TensorBoardLogger:
    """Text, histograms and hparams around what `MirroredStore` writes (see the module docstring).

    A training callback (studio.training.loop.Callback's five events), written without importing the
    loop: the worker imports this package, never the other way round."""

    def __init__(self, board: LiveBoard, *, run_id: str, store, meta: dict, graph: dict, config: dict,
                 probes_dir: Path):
        self.board, self.run_id, self.store, self.probes_dir = board, run_id, store, Path(probes_dir)
        self.meta, self.graph, self.config = meta, graph, config
        self._last_hist: int | None = None

    def on_train_start(self, trainer) -> None:
        if trainer.state.step == 0:
            self.board.write("graph summary", EventFile.text, GRAPH_TAG, graph_markdown(self.graph), 0)
            self.board.write("settings", EventFile.text, CONFIG_TAG,
                             "```\n" + json.dumps(self.config, indent=2, sort_keys=True) + "\n```", 0)
            self._histograms(trainer)

    def on_step_end(self, trainer) -> None:
        every = trainer.config.probe_every
        if every > 0 and trainer.state.step % every == 0:
            self._histograms(trainer)

    def on_eval_end(self, trainer, metrics: dict) -> None:  # the rows reach TensorBoard through MirroredStore
        pass

    def on_epoch_end(self, trainer) -> None:
        self._histograms(trainer)

    def on_train_end(self, trainer) -> None:
        s = trainer.state
        if s.stop_reason != "diverged":
            self._histograms(trainer)
        final = self.store.latest_metrics(self.run_id)
        metrics = [k for k in final if k.startswith("val_") or k == "train_loss"]
        hparams = flat_hparams(self.config, dataset_id=self.meta["dataset_id"], graph=self.graph,
                               totals=graph_totals(self.graph))
        status = {"early_stopped": "completed"}.get(s.stop_reason, s.stop_reason or "completed")
        self.board.write("hyperparameters", EventFile.hparams, hparams, metrics, s.step, status=status)
        self.board.close()

    def _histograms(self, trainer) -> None:
        """The weight and gradient histograms of the probe snapshot the Prober (an earlier callback) just
        took at this step, once per step: the Inspect page's histograms, at no second cost."""
        step = trainer.state.step
        if not trainer.config.probes or self._last_hist == step:
            return
        self._last_hist = step
        named = snapshot_histograms(self.probes_dir / f"step_{step:08d}.npz")
        if named:
            self.board.write("histograms", EventFile.histograms, named, step)


def live_tensorboard(rd, meta: dict, store, log) -> tuple:
    """(store, extra callbacks) for the worker of run directory `rd`: the store itself and () unless the run asked for
    TensorBoard at launch; then the mirrored store and the logger. A log directory that cannot be
    written is a warning in the run's log, never a failed run."""
    run = store.get_run(meta["run_id"])
    logdir = run_log_dir(run)
    if logdir is None:
        return store, ()
    try:
        board = LiveBoard(logdir, log)
    except (OSError, TrackingError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        log(f"TensorBoard logging is off for this run: cannot write event files in {str(logdir)!r} ({reason}); "
            "the run trains without it (its store keeps every metric: export it later with "
            "`python -m studio runs export RUN --to tensorboard DIR`)", "warning")
        return store, ()
    log(f"TensorBoard events go to {logdir} (tensorboard --logdir {logdir.parent})")
    logger = TensorBoardLogger(board, run_id=run.id, store=store, meta=meta, graph=run.graph, config=run.config,
                               probes_dir=rd.probes_dir)
    return MirroredStore(store, board), (logger,)


__all__ = ["LiveBoard", "MirroredStore", "TensorBoardLogger", "live_tensorboard"]
