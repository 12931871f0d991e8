"""The training commands of `python -m studio`: train, runs, stop, resume.

`train` starts a background run like the Train page does, then follows it through the store with
a plain-text progress bar on stderr; Ctrl-C asks the run to stop (a second Ctrl-C detaches and
leaves it running). With --json it ends by printing one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from studio.dataset_ids import check_dataset_id, task_of
from studio.runs import backends
from studio.runs.launcher import list_runs, reconcile, resume_run, run_dir, start_run, stop_run
from studio.runs.store import ACTIVE_STATUSES, Store
from studio.training.config import (
    CONFIG_VERSION,
    FIELDS,
    ConfigError,
    TrainConfig,
    parse_settings,
    training_defaults,
    unknown_setting,
)
from studio.workspace import workspace_dir

POLL_SECONDS = 0.5  # kept for callers that import it; follow() waits on the store's change counter instead
CHANGE_POLL_SECONDS = 0.02  # how often follow() reads SQLite's data_version (a counter, no table read)
RECONCILE_SECONDS = 1.0     # how often follow() checks that the worker is still alive
BAR_WIDTH = 24
# The single-setting flags of `train` (kept from before --set): each is the TrainConfig field of that name.
LEGACY_FLAGS = ("epochs", "batch_size", "lr", "seed", "max_steps", "teacher", "temperature", "distill_weight",
                "init_from", "backbone_lr_scale", "train_last_blocks")
# Per-step bookkeeping that does not belong in a run's final summary.
_NOT_FINAL = frozenset({"lr", "samples_per_sec", "grad_norm"})


def cmd_train(args: argparse.Namespace) -> int:
    try:
        graph, options, config = prepare_train(args)
    except ConfigError as e:  # a bad --set/--config/flag: the schema's message, no run created
        print(f"error: {e}", file=sys.stderr)
        return 2
    if config.teacher or config.init_from:  # what the teacher and the warm start bring, before a run exists
        from studio.data import get_info
        from studio.training.transfer import check_teacher, match_graph

        if config.teacher:
            check_teacher(graph, config.teacher, get_info(args.data, options=options or None).task)
        if config.init_from:
            for line in match_graph(graph, config.init_from).lines():
                print(line, file=sys.stderr)
    if config.train_last_blocks >= 0:  # what freezing by blocks keeps, before a run exists
        from studio.training.finetune import freeze_plan

        print(freeze_plan(graph, config.train_last_blocks), file=sys.stderr)
    backend = backends.from_args(args)  # None: this machine; otherwise checked by its preflight (Ray: the cluster)
    from studio.tracking.common import launch_tags  # --tensorboard DIR: checked before a run exists

    tags = launch_tags(getattr(args, "tensorboard", None), (backend or {}).get("kind"))
    store = Store()
    run_id = start_run(graph, args.data, config, name=getattr(args, "name", None), dataset_options=options,
                       store=store, backend=backend, parent_id=config.init_from or None, tags=tags or None)
    shown = "".join(f" {k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in options.items())
    print(f"run {run_id}: {graph.name} on {args.data}{shown} (logs: {run_dir(run_id) / 'log.txt'})",
          file=sys.stderr)
    if tags:
        print(f"TensorBoard events: {tags['tensorboard']}/{run_id} (view with: tensorboard --logdir "
              f"{tags['tensorboard']})", file=sys.stderr)
    run = follow(run_id, store, Progress(sys.stderr))
    summary = final_summary(run_id, store)
    if getattr(args, "json", False):
        print(json.dumps(summary))
    else:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if isinstance(v, float))
        print(f"run {run_id} {run.status} at step {run.step}" + (f": {shown}" if shown else ""), file=sys.stderr)
    if run.error:
        print(f"error: {run.error}", file=sys.stderr)
    return 0 if run.status == "completed" else 1


def prepare_train(args: argparse.Namespace) -> tuple:
    """(graph, dataset options, checked TrainConfig) of `train`, before any run exists; sets args.data
    to the dataset (the graph's default when left out). Imports torch only to check dataset options."""
    from studio.graph import load_graph

    graph = load_graph(args.graph)
    options = dict(getattr(args, "data_option", None) or [])  # [(key, value), ...] from --data-option
    if getattr(args, "data", None) is None:
        args.data, options = default_dataset(graph, options)
    check_dataset_id(args.data, workspace_dir())  # an unknown id fails here, before a run exists (no torch)
    task = task_of(args.data, workspace_dir())
    if options:
        from studio.data import get_info  # imports torch; only to check the options before a run exists

        task = get_info(args.data, options=options).task  # an unknown option fails here, before a run exists
    flags = {k: getattr(args, k) for k in LEGACY_FLAGS if getattr(args, k, None) is not None}
    config = train_config(graph.name, task, config_file=getattr(args, "config", None), flags=flags,
                          sets=getattr(args, "set", None) or [])
    return graph, options, config


def train_config(graph_name: str, task: str | None, *, config_file: str | None = None, flags: dict | None = None,
                 sets: list[str] = ()) -> TrainConfig:
    """The checked TrainConfig of `train`: the graph's template and task defaults (the Train page's
    starting point, `studio.training.config.training_defaults`), then --config FILE.json, then the single
    flags (--epochs, --lr, ...), then each --set KEY=VALUE read by its field's text parser.
    ConfigError lists every unknown key and bad value."""

    doc = training_defaults(graph_name, task)
    if config_file:
        doc.update(read_config_file(config_file))
    doc.update(flags or {})
    doc.update(parse_settings(list(sets)))
    config = TrainConfig.from_dict({**doc, "version": CONFIG_VERSION})
    config.validate()
    return config


def read_config_file(path: str) -> dict:
    """A (partial) TrainConfig document from a JSON file; ConfigError when it cannot be read or has unknown keys."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError([("--config", f"cannot read {path}: {e.strerror or e}; give a TrainConfig JSON file "
                                        "(a run's config.json works)")]) from None
    except ValueError as e:
        raise ConfigError([("--config", f"{path} is not valid JSON ({e}); give a TrainConfig JSON document")]) from None
    if not isinstance(doc, dict):
        raise ConfigError([("--config", f"{path} holds a {type(doc).__name__}, not a JSON object of settings")])
    unknown = [k for k in doc if k not in FIELDS]
    if unknown:
        raise ConfigError([(str(k), f"{path}: {unknown_setting(k)}") for k in unknown])
    return doc


def default_dataset(graph, options: dict) -> tuple[str, dict]:
    """--data left out: the graph's own dataset (its template's), or its offline stand-in; says which."""
    from studio.data.standins import graph_default_dataset, resolve_dataset
    from studio.errors import StudioError
    from studio.workspace import workspace_dir

    dataset_id, own = graph_default_dataset(graph)
    if dataset_id is None:
        raise StudioError(f"graph {graph.name!r} has no default dataset (it is not a template); give one with "
                          "--data DATASET_ID, e.g. --data digits (the Data page lists every dataset)")
    chosen, opts, note = resolve_dataset(dataset_id, {**own, **options}, workspace_dir())
    shown = "".join(f" {k}={v}" for k, v in opts.items())
    print(f"dataset: {chosen}{shown} (the default of {graph.name!r}" + (f"; {note})" if note else ")"),
          file=sys.stderr)
    return chosen, opts


def follow(run_id: str, store: Store, progress: Progress | None = None):
    """Follow the run until it ends; returns its final RunRecord. Ctrl-C requests a stop.

    It waits on the store: SQLite's `PRAGMA data_version` changes when another process commits, so the
    run and its metrics are read only after the worker wrote something (seen within
    CHANGE_POLL_SECONDS), and the worker's liveness is reconciled every RECONCILE_SECONDS.
    """
    last_step, latest = -1, {}
    interrupted = False
    conn = store.connect()
    seen_version, next_reconcile = None, 0.0
    while True:
        try:
            if time.monotonic() >= next_reconcile:
                reconcile(store)
                next_reconcile = time.monotonic() + RECONCILE_SECONDS
                seen_version = None  # reconcile may have changed the run itself: read it
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version == seen_version:
                time.sleep(CHANGE_POLL_SECONDS)
                continue
            seen_version = version
            run = store.get_run(run_id)
            for m in store.read_metrics(run_id, since_step=last_step):
                latest[m.key] = m.value
                latest["epoch"] = m.epoch
                last_step = m.step
            if progress is not None:
                progress.update(run, latest)
            if run.status not in ACTIVE_STATUSES:
                if progress is not None:
                    progress.close()
                return run
        except KeyboardInterrupt:
            if interrupted:
                print(f"\ndetached; run {run_id} keeps going in the background "
                      f"(python -m studio stop {run_id})", file=sys.stderr)
                raise
            interrupted = True
            print(f"\nstopping run {run_id} after its current step (Ctrl-C again to detach)...", file=sys.stderr)
            stop_run(run_id, store=store)


def final_summary(run_id: str, store: Store) -> dict:
    """run_id, status, step and the last value of every metric (val_accuracy, val_loss, train_loss, ...)."""
    run = store.get_run(run_id)
    out: dict = {"run_id": run_id, "status": run.status, "step": run.step, "total_steps": run.total_steps}
    out.update({k: v for k, v in sorted(store.latest_metrics(run_id).items()) if k not in _NOT_FINAL})
    if run.best_metric_name:
        out["best_metric_name"], out["best_metric"] = run.best_metric_name, run.best_metric
    if run.error:
        out["error"] = run.error
    return out


class Progress:
    """A one-line progress bar redrawn with '\\r' on a terminal; one line per epoch otherwise."""

    def __init__(self, stream):
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._last_epoch = None
        self._drawn = False
        self._line, self._written = "", ""

    def update(self, run, latest: dict) -> None:
        if run.status == "queued":
            line = "queued: waiting for a free slot (python -m studio runs)"
        else:
            total = run.total_steps or 0
            frac = min(1.0, run.step / total) if total else 0.0
            filled = int(frac * BAR_WIDTH)
            parts = [f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {frac:4.0%}",
                     f"step {run.step}/{total or '?'}", f"epoch {int(latest.get('epoch', 0)) + 1}"]
            for key in ("train_loss", "val_loss", "val_accuracy", "val_token_accuracy", "val_mae"):
                if key in latest:
                    parts.append(f"{key} {latest[key]:.4f}")
            if "samples_per_sec" in latest:
                parts.append(f"{latest['samples_per_sec']:.0f} samples/s")
            line = "  ".join(parts)
        self._line = line
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(100))
            self._drawn = True
        elif latest.get("epoch") != self._last_epoch and line != self._written:
            self._write_line(line)
            self._last_epoch = latest.get("epoch")
        self.stream.flush()

    def _write_line(self, line: str) -> None:
        self.stream.write(line + "\n")
        self._written = line

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
        elif not self.tty and self._line and self._line != self._written:
            self._write_line(self._line)  # the final state
        self.stream.flush()


def cmd_runs(args: argparse.Namespace) -> int:
    runs = list_runs()
    if getattr(args, "json", False):
        print(json.dumps([{"id": r.id, "name": r.name, "status": r.status, "dataset_id": r.dataset_id,
                           "step": r.step, "total_steps": r.total_steps, "created": r.created,
                           "best_metric_name": r.best_metric_name, "best_metric": r.best_metric,
                           "error": r.error, "backend": r.backend, "workers": r.workers, "sweep_id": r.sweep_id,
                           "parent_id": r.parent_id, "tags": r.tags} for r in runs]))
        return 0
    if not runs:
        print("no runs yet; start one with: python -m studio train GRAPH.json --data digits")
        return 0
    rows = [("id", "status", "step", "best", "backend", "name")]
    for r in runs:
        best = f"{r.best_metric_name}={r.best_metric:.4g}" if r.best_metric_name else "-"
        where = r.backend if r.workers == 1 else f"{r.backend} x{r.workers}"  # "ray x2": two workers
        rows.append((r.id, r.status, f"{r.step}/{r.total_steps or '?'}", best, where, r.name))
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row[:5], widths, strict=True)) + "  " + row[5])
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    status = stop_run(args.run_id)
    message = ("stop requested; the run stops after its current step and keeps a checkpoint"
               if status == "running" else f"run is {status}")
    _report(args, {"run_id": args.run_id, "status": status, "message": message})
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    status = resume_run(args.run_id)
    message = ("running again from its last checkpoint (from the start if it had none)" if status == "running"
               else "queued; it continues from its last checkpoint when a slot frees")
    _report(args, {"run_id": args.run_id, "status": status, "message": message})
    return 0


def _report(args: argparse.Namespace, d: dict) -> None:
    if getattr(args, "json", False):
        print(json.dumps(d))
    else:
        print(f"run {d['run_id']}: {d['message']}")
