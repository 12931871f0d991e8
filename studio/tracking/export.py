"""Export a finished run to TensorBoard or MLflow: `export_run(run_id, "tensorboard"|"mlflow", target)`.

What goes out, from the run store and the run directory (never recomputed):

- TensorBoard (`target` a log directory; the run's events go to `target/<run_id>/`): every metric row
  as a scalar at its step and wall time, weight and gradient histograms of the probe snapshots
  (their 32 bins), the graph's summary and the settings as text, the hyperparameters for HParams.
  Exporting again replaces the event files of `target/<run_id>/` (the live log of the same run too).
- MLflow (`target` a tracking URI: `sqlite:///path/mlflow.db` offline, or an `http(s)://` server):
  one MLflow run in experiment `experiment` (default "Neural Studio") holding the whole TrainConfig,
  the dataset and the graph's name and totals as params; every metric row with its step and wall
  time; graph.json, config.json and the best checkpoint as artifacts; tags `studio.run_id`,
  `studio.backend`, `studio.sweep_id`, `studio.status`. Exporting again finds that MLflow run by its
  `studio.run_id` tag: unchanged (same status, step and rows), it is left as it is; otherwise it is
  deleted and written anew, so MLflow never holds a run twice.

A run still queued or running is refused: export it when it has ended.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from studio.runs.rundir import RunDir
from studio.runs.store import ACTIVE_STATUSES, RunRecord, Store
from studio.tracking.common import TrackingError, check_log_dir, require
from studio.tracking.events import (
    CONFIG_TAG,
    GRAPH_TAG,
    EventFile,
    flat_hparams,
    graph_markdown,
    graph_totals,
    snapshot_histograms,
)

DESTINATIONS = ("tensorboard", "mlflow")
DEFAULT_EXPERIMENT = "Neural Studio"
RUN_TAG = "studio.run_id"            # how a re-export finds the MLflow run of a studio run
FINGERPRINT_TAG = "studio.exported"  # status, step and rows of the exported state: unchanged means skip
CONNECT_TIMEOUT_S = 5.0
_MLFLOW_STATUS = {"completed": "FINISHED", "stopped": "KILLED", "pruned": "KILLED", "lost": "KILLED",
                  "failed": "FAILED", "diverged": "FAILED", "imported": "FINISHED"}


@dataclass(frozen=True)
class ExportResult:
    """What an export did: `where` (a folder or an MLflow run URI), `action` (written, replaced,
    unchanged), `metrics` (rows written) and a sentence for the user."""

    destination: str
    where: str
    action: str
    metrics: int
    message: str
    mlflow_run_id: str | None = None


def export_run(run_id: str, to: str, target: str, *, store: Store | None = None,
               experiment: str = DEFAULT_EXPERIMENT) -> ExportResult:
    """Export run `run_id` to `to` ("tensorboard" or "mlflow") at `target` (see the module docstring)."""
    if to not in DESTINATIONS:
        raise TrackingError(f"cannot export to {to!r}; use --to tensorboard DIR or --to mlflow TRACKING_URI")
    store = store or Store()
    run = store.get_run(run_id)
    if run.status in ACTIVE_STATUSES:
        raise TrackingError(f"run {run_id!r} is {run.status}; export it once it has ended (or stop it first)")
    if to == "tensorboard":
        return export_tensorboard(run, target, store)
    return export_mlflow(run, target, store, experiment=experiment)


# ---- TensorBoard --------------------------------------------------------------------------------------

def export_tensorboard(run: RunRecord, log_dir: str | Path, store: Store) -> ExportResult:
    directory = check_log_dir(log_dir) / run.id
    require("tensorboardX")
    old = sorted(directory.glob("events.out.tfevents.*")) if directory.exists() else []
    events = EventFile(directory)
    try:
        events.text(GRAPH_TAG, graph_markdown(run.graph), 0)
        events.text(CONFIG_TAG, "```\n" + json.dumps(run.config, indent=2, sort_keys=True) + "\n```", 0)
        rows = 0
        for chunk in _chunks(store.metric_rows(run.id), 5000):
            events.scalars(chunk)
            rows += len(chunk)
        for step, named in probe_histograms(RunDir.of(run.id)):
            events.histograms(named, step)
        final = store.latest_metrics(run.id)
        events.hparams(flat_hparams(run.config, dataset_id=run.dataset_id, graph=run.graph,
                                    totals=graph_totals(run.graph)),
                       [k for k in final if k.startswith("val_") or k == "train_loss"], run.step, status=run.status)
    except BaseException:
        events.close()
        events.path.unlink(missing_ok=True)  # a cut export leaves the folder as it was
        raise
    events.close()
    for path in old:  # the new file holds everything: the old ones would show each step twice
        path.unlink(missing_ok=True)
    action = "replaced" if old else "written"
    return ExportResult("tensorboard", str(directory), action, rows,
                        f"exported {rows:,} metric rows of run {run.id} to {directory}"
                        + (" (its earlier export there replaced)" if old else "")
                        + f"; view with: tensorboard --logdir {directory.parent}")


def probe_histograms(rd: RunDir):
    """(step, {tag: (counts, [lo, hi])}) of each probe snapshot of the run (see `snapshot_histograms`);
    a damaged index or snapshot is left out, never fatal."""
    try:
        index = json.loads((rd.probes_dir / "index.json").read_text())
    except (OSError, ValueError):
        return
    for entry in index if isinstance(index, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and isinstance(entry.get("file"), str):
            named = snapshot_histograms(rd.probes_dir / Path(entry["file"]).name)
            if named:
                yield entry["step"], named


def _chunks(rows, n: int):
    chunk = []
    for row in rows:
        chunk.append(tuple(row))
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---- MLflow -------------------------------------------------------------------------------------------

def check_tracking_uri(uri: str) -> str:
    """The URI, checked before MLflow is asked anything (MLflow itself retries an unreachable server for
    minutes): a sqlite store whose folder exists and can be written, or a server that answers a connect."""
    if not isinstance(uri, str) or not uri.strip():
        raise TrackingError("the MLflow tracking URI is empty; give e.g. sqlite:///mlflow.db or http://HOST:5000")
    uri = uri.strip()
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        require("sqlalchemy")
        require("alembic")
        db = sqlite_path(uri)
        if db is not None:
            folder = db.parent
            if not folder.is_dir():
                raise TrackingError(f"cannot open the MLflow store {uri!r}: the folder {str(folder)!r} does not exist; "
                                    "create it or give a path in an existing folder")
            try:
                probe = folder / f".studio-write-check-{time.time_ns()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as e:
                raise TrackingError(f"cannot write the MLflow store {uri!r}: {e.strerror or e} in {str(folder)!r}; "
                                    "choose a folder you can write") from None
        return uri
    if parsed.scheme in ("http", "https"):
        host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
        if not host:
            raise TrackingError(f"the MLflow tracking URI {uri!r} names no host; write e.g. http://localhost:5000")
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as e:
            raise TrackingError(f"cannot reach the MLflow tracking server at {uri!r} ({e.strerror or e}); start it "
                                f"(mlflow server --port {port}) or check the URI; an offline store works too: "
                                "sqlite:///mlflow.db") from None
        return uri
    if parsed.scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):  # MLflow's other database stores
        require("sqlalchemy")
        return uri
    if parsed.scheme in ("", "file"):
        raise TrackingError(f"{uri!r} is a file store, which MLflow 3 refuses by default; use a sqlite store "
                            "instead, e.g. sqlite:///mlflow.db (a path relative to the current folder) or "
                            "sqlite:////abs/path/mlflow.db")
    raise TrackingError(f"unsupported MLflow tracking URI {uri!r}; use sqlite:///PATH.db, a database URI "
                        "(postgresql://...) or http(s)://HOST:PORT")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for an in-memory one)."""
    rest = uri[len("sqlite://"):]
    if rest in ("", "/", "/:memory:"):
        return None
    return Path(rest[1:] if rest.startswith("/") else rest).resolve()  # sqlite:///rel.db, sqlite:////abs.db


def mlflow_client(uri: str):
    """An MlflowClient for a checked URI, with MLflow's start-up chatter (database migrations) quiet."""
    require("mlflow")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=check_tracking_uri(uri))


def fingerprint(run: RunRecord, rows: int) -> str:
    return f"{run.status}:{run.step}:{rows}:{run.ended or 0:.3f}"


def export_mlflow(run: RunRecord, uri: str, store: Store, *, experiment: str = DEFAULT_EXPERIMENT) -> ExportResult:
    client = mlflow_client(uri)
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    rows = store.connect().execute("SELECT COUNT(*) FROM metrics WHERE run_id=?", (run.id,)).fetchone()[0]
    mark = fingerprint(run, rows)
    try:
        exp_id = _experiment(client, experiment, uri)
        found = client.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{run.id}'")
        if any(r.data.tags.get(FINGERPRINT_TAG) == mark for r in found):
            kept = next(r for r in found if r.data.tags.get(FINGERPRINT_TAG) == mark)
            return ExportResult("mlflow", _run_uri(uri, exp_id, kept.info.run_id), "unchanged", 0,
                                f"run {run.id} is already in MLflow as {kept.info.run_id} (experiment {experiment!r}), "
                                "unchanged since; nothing written", kept.info.run_id)
        tags = {RUN_TAG: run.id, FINGERPRINT_TAG: mark, "studio.backend": run.backend, "studio.status": run.status,
                "studio.dataset": run.dataset_id, "studio.graph": str(run.graph.get("name", "")),
                "studio.workers": str(run.workers), "mlflow.source.name": "neural-studio"}
        if run.sweep_id:
            tags["studio.sweep_id"] = run.sweep_id
        if run.parent_id:
            tags["studio.parent_id"] = run.parent_id
        created = client.create_run(exp_id, start_time=int((run.started or run.created) * 1000), tags=tags,
                                    run_name=run.name)
        mlflow_id = created.info.run_id
        try:
            params = [Param(k, _param_text(v)) for k, v in export_params(run).items()]
            for i in range(0, len(params), 100):  # MLflow's batch limit for params
                client.log_batch(mlflow_id, params=params[i:i + 100])
            written = 0
            for chunk in _chunks(store.metric_rows(run.id), 1000):  # and for metrics
                client.log_batch(mlflow_id, metrics=[
                    Metric(key, float("nan") if value is None else float(value), int(round(wall * 1000)), int(step))
                    for step, _epoch, _split, key, value, wall in chunk])
                written += len(chunk)
            rd = RunDir.of(run.id)
            for path, folder in ((rd.graph_file, None), (rd.config_file, None), (rd.checkpoint("best"), "checkpoints")):
                if path.exists():
                    client.log_artifact(mlflow_id, str(path), folder)
            client.set_terminated(mlflow_id, _MLFLOW_STATUS.get(run.status, "FINISHED"),
                                  end_time=int((run.ended or time.time()) * 1000))
        except BaseException:
            client.delete_run(mlflow_id)  # a cut export never stays as if it were whole
            raise
        for old in found:  # the new run replaces the older exports of this studio run
            client.delete_run(old.info.run_id)
        client.set_tag(mlflow_id, "studio.exported_at", time.strftime("%Y-%m-%d %H:%M:%S"))
    except MlflowException as e:
        raise TrackingError(f"MLflow refused the export of run {run.id} to {uri!r}: {str(e).splitlines()[0]}") from None
    action = "replaced" if found else "written"
    return ExportResult("mlflow", _run_uri(uri, exp_id, mlflow_id), action, written,
                        f"exported run {run.id} to MLflow as {mlflow_id} (experiment {experiment!r}, {uri})"
                        + ("; its earlier export was replaced" if found else "") + ": "
                        f"{len(params)} params, {written:,} metric rows, artifacts graph.json, config.json"
                        + (", checkpoints/best.pt" if RunDir.of(run.id).checkpoint("best").exists() else ""),
                        mlflow_id)


def export_params(run: RunRecord) -> dict:
    """The params of an export: the whole TrainConfig, the dataset (and its options), the graph's name
    and totals."""
    params = {k: v for k, v in run.config.items()}
    params["dataset"] = run.dataset_id
    options = _dataset_options(run.id)
    if options:
        params["dataset_options"] = options
    params["graph.name"] = run.graph.get("name", "")
    params.update({f"graph.{k}": v for k, v in graph_totals(run.graph).items()})
    return params


def _dataset_options(run_id: str) -> dict:
    try:
        return RunDir.of(run_id).meta().get("dataset_options") or {}
    except Exception:  # noqa: BLE001 (a missing or damaged run.json: the options are left out, nothing else)
        return {}


def _param_text(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:6000]  # MLflow's limit for a param value


def _experiment(client, name: str, uri: str) -> str:
    """The experiment's id, created when missing; a sqlite store keeps its artifacts in an
    `mlartifacts` folder beside the database (MLflow's default would be ./mlruns wherever this runs)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:"):
        db = sqlite_path(uri)
        if db is not None:
            location = (db.parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def _run_uri(uri: str, exp_id: str, mlflow_id: str) -> str:
    return f"{uri}#/experiments/{exp_id}/runs/{mlflow_id}"


__all__ = ["DEFAULT_EXPERIMENT", "DESTINATIONS", "ExportResult", "check_tracking_uri", "export_params", "export_run",
           "mlflow_client", "sqlite_path"]
