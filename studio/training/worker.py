"""The worker process: `python -m studio.training.worker RUN_DIR` trains one run and exits.

It depends only on the run directory (graph.json, config.json, run.json naming the run id, the
dataset and the store) and the store itself, so any launcher that can start a process next to
them can run it; it never calls the launcher (the launcher's supervisor reconciles when it ends).
It heartbeats every ~2 s, honours the stop file, resumes from checkpoints/last.pt when one
exists, and always leaves the run in a final status with a human message.

`build_trainer` is shared with the Ray backend (studio.training.distributed): each rank builds the
same Trainer from a run directory, with rank 0 alone logging, probing and checkpointing.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from studio.errors import DataError, GraphError, StorageError, StudioError, TrainError
from studio.runs.rundir import RunDir
from studio.runs.store import MetricWriter, Store
from studio.training.callbacks import (
    Checkpointer,
    DivergenceGuard,
    EarlyStopping,
    MetricLogger,
    StopRequest,
    load_checkpoint,
    restore_checkpoint,
)
from studio.training.config import TrainConfig
from studio.training.deferred import DeferredMetricWriter
from studio.training.gate import Gate, gate_dir
from studio.training.loop import Callback, Task, Trainer
from studio.training.optim import init_weights, resolve_device
from studio.training.probes import Prober

HEARTBEAT_SECONDS = 2.0
STOP_POLL_SECONDS = 0.25  # the stop file is looked at this often (and at a gate's hold), not at every step
PROBE_SAMPLES = 8
FINAL_STATUS = {"completed": "completed", "early_stopped": "completed", "stopped": "stopped",
                "diverged": "diverged"}


class RunLog:
    """Appends timestamped lines to log.txt and mirrors them as events in the store."""

    def __init__(self, path: Path, store: Store, run_id: str):
        self.path, self.store, self.run_id = path, store, run_id

    def __call__(self, message: str, level: str = "info") -> None:
        self.to_file(message, level)
        self.store.log_event(self.run_id, message, level)

    def to_file(self, message: str, level: str = "info") -> None:
        """The line in log.txt only (what is left to record when the store itself fails)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.path, "a") as f:
                f.write(f"{stamp} {level.upper():7} {message}\n")
        except OSError:  # a full disk: the event still reaches the store (and the run's status)
            pass


class Heartbeat:
    """A daemon thread updating runs.heartbeat every `interval` seconds (its own DB connection)."""

    def __init__(self, store: Store, run_id: str, interval: float = HEARTBEAT_SECONDS):
        self.store, self.run_id, self.interval = store, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="studio-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import sqlite3

        while not self._stop.wait(self.interval):
            try:
                self.store.heartbeat(self.run_id)
            except (sqlite3.OperationalError, StorageError):
                pass  # the database stayed locked past busy_timeout, or the disk failed; the next beat tries again
        self.store.close()


def build_trainer(run_dir: Path | RunDir, meta: dict, store: Store, log: RunLog, *, shard=None,
                  stop_callback: Callback | None = None, device: torch.device | None = None,
                  extra_callbacks: tuple = (), data=None, gate_stop=None) -> tuple[Trainer, dict]:
    """Everything from the run directory to a ready Trainer (restored from last.pt when present).

    On a data-parallel rank (`shard` given, see studio.training.shard) every rank builds the same
    model and state; only rank 0 (`shard.rank == 0`) gets the logger, checkpointer and prober, and
    `store` / `log` there may be stand-ins that relay to the studio's machine. `stop_callback`
    replaces the stop-file poll; `extra_callbacks` run last (rank 0 only); `data` is the dataset when
    the caller has it already (a rank gets it from the driver, not from a filesystem). Under a test's
    gate (studio.training.gate) the chief holds at the gate's step until released or `gate_stop()`
    (default: the stop file exists) says a stop was requested.
    """
    from studio.compile import compile_graph
    from studio.data import get_dataset
    from studio.graph import load_graph

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    chief = shard is None or shard.rank == 0
    run_id = meta["run_id"]
    rd.remove_partial_writes()  # an atomic write cut short by a kill
    cfg = TrainConfig.from_dict(rd.config_doc())
    cfg.validate()
    graph = load_graph(rd.graph_file)
    device = device or resolve_device(cfg.device)
    if data is None:
        data = get_dataset(meta["dataset_id"], workspace=meta.get("workspace"), seed=cfg.seed,
                           options=meta.get("dataset_options") or None)
    _check_fits(graph, data.info, log if chief else (lambda *a, **k: None))

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = compile_graph(graph, seed=cfg.seed, device=device)
    init_weights(model, cfg.init)
    task = Task(data.info.task, num_classes=data.info.num_classes, label_smoothing=cfg.label_smoothing)
    from studio.training.transfer import prepare_training  # warm start, pruning masks, frozen nodes, teacher

    distill = prepare_training(model, graph, cfg, task.kind, log, device=device)

    monitor, mode = cfg.resolved_monitor(task.kind)
    guard = DivergenceGuard()
    stateful: dict = {}
    writer = None
    if chief:  # one process: device values read once per flush, commits off this thread; a Ray rank's
        # loss is read at every step's all-reduce anyway, and its relay keeps the rows in order
        writer = DeferredMetricWriter(store, run_id) if shard is None else MetricWriter(store, run_id)
    checkpointer = Checkpointer(
        rd.checkpoints_dir, every=cfg.checkpoint_every,
        extra_state=lambda: {k: cb.state_dict() for k, cb in stateful.items()},
        on_best=lambda name, value, step: store.update_run(run_id, best_metric=value, best_metric_name=name),
        before_last=writer.flush_and_wait if chief else None,
        before_best=writer.flush_and_wait if chief else None,
    )
    guard.checkpointer = checkpointer
    stateful["checkpointer"] = checkpointer
    callbacks = [guard, stop_callback or StopRequest(rd.stop_file, poll_seconds=STOP_POLL_SECONDS)]
    if chief and gate_dir() is not None:  # tests only: hold the run at a step (before the stop callback)
        callbacks.insert(1, Gate(gate_dir(), run_id, gate_stop or rd.stop_requested, writer.flush_and_wait))
    if cfg.patience > 0:
        stateful["early_stopping"] = EarlyStopping(monitor, mode, cfg.patience, cfg.min_delta)
        callbacks.append(stateful["early_stopping"])
    if chief:
        # The logger ends each step before the checkpointer saves it, and last.pt or best.pt is written only
        # once the rows up to its step are committed: a worker killed at any moment, resumed from either
        # checkpoint, never leaves a step without rows.
        callbacks.append(MetricLogger(writer, log=log, run_dir=rd.path))
        callbacks.append(checkpointer)
        if cfg.probes:
            callbacks.append(Prober(rd.probes_dir, data.probe_batch(PROBE_SAMPLES), every=cfg.probe_every))
        callbacks.extend(extra_callbacks)

    if shard is not None:
        model = shard.prepare(model, log if chief else None)
    trainer = Trainer(model, data, cfg, task=task, callbacks=callbacks, device=device, distill=distill)
    if shard is not None:
        shard.attach(trainer)
    if checkpointer.last_path.exists():
        ckpt = load_checkpoint(checkpointer.last_path, map_location=device)
        restore_checkpoint(trainer, ckpt, stateful)
        checkpointer.last_step = trainer.state.step
        if chief:
            dropped = store.truncate_metrics(run_id, trainer.state.step)
            rd.truncate_confusion(trainer.state.step)
            log(f"resumed from the checkpoint at step {trainer.state.step}"
                + (f" ({dropped} metric rows logged after it will be recomputed)" if dropped else ""))
    elif chief and store.truncate_metrics(run_id, 0):  # killed before its first checkpoint: start over
        rd.truncate_confusion(0)
        log("no checkpoint to resume from: training starts over from step 0")
    if chief:
        store.update_run(run_id, total_steps=trainer.state.total_steps)
    return trainer, stateful


def _check_fits(graph, info, log: RunLog) -> None:
    """The graph's input and output against the dataset, before any work: GraphError naming the nodes."""
    from studio.analysis import analyze
    from studio.data import check_graph_fits

    issues = check_graph_fits(graph, analyze(graph), info)
    for issue in issues:
        if issue.severity == "warning":
            log(str(issue), "warning")
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise GraphError(errors)


def human_message(exc: BaseException, batch_size: int | None) -> str:
    """One sentence for the run's error field: what went wrong and what to try."""
    text = str(exc)
    oom = isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text))
    if oom or isinstance(exc, MemoryError):
        smaller = f" (e.g. batch_size={max(1, batch_size // 2)} instead of {batch_size})" if batch_size else ""
        return f"ran out of memory; try a smaller batch size{smaller} or a smaller model"
    if isinstance(exc, (StudioError, DataError, GraphError, TrainError)):
        return text
    if isinstance(exc, OSError) and exc.errno is not None:  # disk full, read-only, I/O error: say what to do
        from studio.oserrors import describe_os_error

        return describe_os_error(exc, "write the run's files", exc.filename or "the run folder")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_process(run_dir: str | Path, train) -> str:
    """The frame every training process shares (this worker, the Ray driver): mark the run running,
    heartbeat, call `train(rd, meta, store, log) -> (stop_reason, message, step)`, and always leave the
    run in a final status with a human message (a sweep's stop with reason "pruned" ends as `pruned`)."""
    rd = RunDir(Path(run_dir).resolve())
    meta = rd.meta()
    run_id = meta["run_id"]
    try:
        store = Store(meta["db"])
    except StorageError as e:  # stderr is the run's log.txt (the supervisor opened it)
        print(f"failed: the run could not start: {e}", file=sys.stderr)
        return "failed"
    log = RunLog(rd.log_file, store, run_id)
    now = time.time()
    try:
        store.update_run(run_id, status="running", pid=os.getpid(), started=now, heartbeat=now, ended=None,
                         error=None, traceback=None)
    except StorageError as e:  # the store cannot take the run: say why where it can still be read
        log.to_file(f"failed: the run could not start: {e}", "error")
        return "failed"
    # SIGTERM (e.g. the machine shutting down) stops like the Stop button: finish the step, checkpoint.
    signal.signal(signal.SIGTERM, lambda *_: rd.request_stop())
    status = "failed"
    with Heartbeat(store, run_id):
        try:
            reason, message, step = train(rd, meta, store, log)
            status = FINAL_STATUS[reason]
            if status == "stopped" and rd.stop_reason() == "pruned":  # a sweep's pruner ended this trial
                status, message = "pruned", f"pruned by its sweep at step {step}"
            log(message, "error" if status == "diverged" else "info")
            store.set_status(run_id, status, error=message if status == "diverged" else None)
        except BaseException as exc:  # every failure ends as a recorded status, never a silent exit
            message = human_message(exc, _batch_size(rd))
            tb = getattr(exc, "rank_traceback", "") or traceback.format_exc()
            try:
                with open(rd.log_file, "a") as f:
                    f.write(tb)
                log(f"failed: {message}", "error")
            except Exception:  # noqa: BLE001 (disk or store full: the status below matters more than the log)
                pass
            try:
                store.set_status(run_id, "failed", error=message, traceback=tb)
            except StorageError as e:  # log.txt keeps the reason; reconcile marks the run lost
                log.to_file(f"the run store could not record this failure: {e}", "error")
            status = "failed"
    rd.clear_stop()
    return status


def _batch_size(rd: RunDir) -> int | None:
    """The configured batch size for a failure's advice, when config.json can be read at all."""
    try:
        value = rd.config_doc().get("batch_size")
    except Exception:  # noqa: BLE001 (a damaged config is what failed; the advice just leaves the size out)
        return None
    return value if isinstance(value, int) else None


def run(run_dir: str | Path) -> str:
    """Train the run in `run_dir` in this process to a final status and return it."""

    def train(rd, meta, store, log):
        from studio.tracking.live import live_tensorboard  # the run's store mirrored to TensorBoard when it asked

        store, tracking = live_tensorboard(rd, meta, store, log)
        trainer, _ = build_trainer(rd, meta, store, log, extra_callbacks=tracking)
        state = trainer.fit()
        return state.stop_reason, state.message, state.step

    return run_process(run_dir, train)


def process_main(run, module: str, argv: list[str] | None = None) -> int:
    """`python -m MODULE RUN_DIR`: exit 0 when the run ends completed, stopped or pruned."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {module} RUN_DIR", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    return 0 if run(argv[0]) in ("completed", "stopped", "pruned") else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--spare":
        return spare_main(Path(argv[1]))
    return process_main(run, "studio.training.worker", argv)


def spare_main(spare: Path) -> int:
    """A warm spare's worker (studio.runs.spare): pay the imports a run's first step needs, say ready,
    then train the run handed over; nothing if the supervisor goes away first."""
    from studio.runs import spare as protocol

    parent = os.getppid()
    torch.set_num_threads(1)
    warm_up()
    protocol.mark_ready(spare)
    run_dir = protocol.wait_for_go(spare, parent)
    if run_dir is None:
        return 0
    protocol.redirect_output(run_dir / "log.txt")
    return process_main(run, "studio.training.worker", [str(run_dir)])


def warm_up() -> None:
    """Import what building and stepping a model imports lazily: the compiler, the data registry, and
    torch._dynamo, which every torch.optim optimizer imports at its first step()."""
    import studio.compile  # noqa: F401
    import studio.data  # noqa: F401

    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.zeros(1)
    for opt in (torch.optim.SGD([p], lr=0.0), torch.optim.Adam([p], lr=0.0)):
        opt.step()


if __name__ == "__main__":
    sys.exit(main())
