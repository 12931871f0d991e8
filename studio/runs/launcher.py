"""Launching runs as detached worker processes, and keeping the store true to what is running.

`start_run` writes the run directory, records the run as `queued` and calls `reconcile()`, which
starts queued runs while fewer than `max_concurrent()` are running. Anyone who reads the store
calls `reconcile()` too (list_runs does): it reaps finished children, marks runs whose process is
gone as `lost`, and starts queued runs when slots are free. The launcher owns the queue and the
worker only trains: each worker runs under a small supervisor (`studio.runs.supervise`) that waits
for it and reconciles when it ends, so the queue drains even when no page is open.

Supervisors are started with `subprocess.Popen(..., start_new_session=True)`, not multiprocessing
(which re-executes Streamlit's page in the child): they survive the server and the browser tab.
The launcher names the process to run by module (each backend's `module` in `studio.runs.backends`)
and imports nothing from training: a config is anything with `to_dict()` and `validate()` (a
TrainConfig), or a document.

Example (with a Graph `graph` and `from studio.training import TrainConfig`)::

    run_id = start_run(graph, "digits", TrainConfig(epochs=3))
    stop_run(run_id); resume_run(run_id)
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from studio.errors import StorageError, TrainError
from studio.graph import Graph, parse_graph
from studio.runs import backends, spare
from studio.runs.rundir import STOP_FILE, RunDir
from studio.runs.store import RESUMABLE_STATUSES, RunRecord, Store, storage_message
from studio.workspace import workspace_dir

__all__ = ["STOP_FILE", "max_concurrent", "run_dir", "new_run_id", "start_run", "stop_run", "resume_run",
           "delete_run", "rename_run", "list_runs", "reconcile", "pid_alive", "keep_spare_ready"]

START_GRACE_SECONDS = 30.0    # a claimed run may take this long to record its worker's pid
LOST_AFTER_SECONDS = 120.0    # no heartbeat for this long = lost, even if the pid looks alive (pid reuse)
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_CHILDREN: dict[int, subprocess.Popen] = {}  # workers this process started, reaped by reconcile()


def max_concurrent() -> int:
    """Runs allowed at once: env STUDIO_MAX_RUNS, else half the cores (at least 1)."""
    env = os.environ.get("STUDIO_MAX_RUNS")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise TrainError(f"STUDIO_MAX_RUNS={env!r} is not an integer; set it to e.g. 2") from None
        if value < 1:
            raise TrainError(f"STUDIO_MAX_RUNS={value} must be at least 1")
        return value
    return max(1, (os.cpu_count() or 1) // 2)


def run_dir(run_id: str) -> Path:
    return RunDir.of(run_id).path


def new_run_id() -> str:
    """Sortable and readable: 20250101-120000-3fa2c1."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def start_run(graph: Graph | dict, dataset_id: str, config=None, *,
              name: str | None = None, dataset_options: dict | None = None, store: Store | None = None,
              sweep_id: str | None = None, parent_id: str | None = None, tags: dict | None = None,
              backend: dict | None = None) -> str:
    """Queue a run and start it at once if a slot is free; returns the run id immediately.

    `config` is a TrainConfig (validated here: ConfigError lists every problem) or a config document
    (a dict, checked by the worker); None means every default. `backend` is where it trains:
    None or {"kind": "local"} (a worker process on this machine), or a registered backend's settings
    document (`studio.runs.backends`), e.g. RaySettings(...).to_dict() (a driver process on this
    machine running the ranks on Ray). Raises GraphError for a malformed graph document; the heavier
    checks (the graph against the dataset, the Ray cluster) happen in the worker and end as `failed`
    with the message.
    """
    if isinstance(graph, dict):
        graph = parse_graph(graph)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        config.validate()
        config = config.to_dict()
    if not isinstance(dataset_id, str) or not dataset_id:
        raise TrainError(f"dataset_id must be a dataset id such as 'digits', got {dataset_id!r}")
    backend = dict(backend or {"kind": backends.DEFAULT_BACKEND})
    backends.get(backend.get("kind"))  # TrainError naming the known backends
    workers = int(backend.get("workers", 1))
    store = store or Store()
    run_id = new_run_id()
    directory = RunDir.of(run_id)
    try:  # disk full, read-only workspace, store errors: no half-made run folder stays behind
        directory.create(graph_json=graph.to_json(), config=config, meta={
            "run_id": run_id, "dataset_id": dataset_id, "dataset_options": dataset_options or {},
            "db": str(store.path), "workspace": str(workspace_dir()), "backend": backend,
        })
        with store.transaction():  # the run and its first event together, or neither
            store.create_run(run_id, name=name or f"{graph.name} on {dataset_id}", graph=graph.to_dict(),
                             config=config, dataset_id=dataset_id, sweep_id=sweep_id, parent_id=parent_id,
                             tags=tags, backend=backend["kind"], workers=workers)
            store.log_event(run_id, "queued")
    except (OSError, sqlite3.Error, StorageError) as e:
        shutil.rmtree(directory.path, ignore_errors=True)
        if isinstance(e, StorageError):  # the store's own words: what failed and what to do
            raise
        raise TrainError(storage_message(e, "create the run", directory.path.parent)) from None
    reconcile(store)
    return run_id


def stop_run(run_id: str, *, store: Store | None = None, reason: str | None = None) -> str:
    """Ask a run to stop. A running worker finishes its step, checkpoints and marks itself `stopped`
    (`pruned` when `reason="pruned"`: a sweep's pruner asked); a queued run is stopped at once.
    Returns the status after the request."""
    store = store or Store()
    reconcile(store)
    run = store.get_run(run_id)
    if run.status == "queued":
        with store.transaction(immediate=True) as conn:
            conn.execute("UPDATE runs SET status='stopped', ended=? WHERE id=? AND status='queued'",
                         (time.time(), run_id))
        store.log_event(run_id, "stopped before it started")
        return store.get_run(run_id).status
    if run.status != "running":
        raise TrainError(f"run {run_id!r} is {run.status}; only queued or running runs can be stopped")
    RunDir.of(run_id).request_stop(reason)
    store.log_event(run_id, "stop requested" + (f" ({reason})" if reason else ""))
    return "running"


def resume_run(run_id: str, *, store: Store | None = None) -> str:
    """Queue a stopped, failed, diverged or lost run again; it continues from checkpoints/last.pt
    (model, optimizer, schedule, RNG state and step count) or starts over when it has none."""
    store = store or Store()
    reconcile(store)
    run = store.get_run(run_id)
    if run.status not in RESUMABLE_STATUSES:
        raise TrainError(f"run {run_id!r} is {run.status}; only {', '.join(RESUMABLE_STATUSES)} runs can be "
                         "resumed")
    directory = RunDir.of(run_id)
    if not directory.run_file.exists():
        raise TrainError(f"the directory of run {run_id!r} ({directory.path}) is missing; it cannot be resumed")
    directory.clear_stop()
    store.update_run(run_id, status="queued", pid=None, error=None, traceback=None, ended=None)
    store.log_event(run_id, "resume requested")
    reconcile(store)
    return store.get_run(run_id).status


def delete_run(run_id: str, *, store: Store | None = None) -> None:
    """Remove a run's directory and every row about it. Active runs must be stopped first."""
    store = store or Store()
    reconcile(store)
    run = store.get_run(run_id)
    if run.status == "running":
        raise TrainError(f"run {run_id!r} is running; stop it first (stop_run) and delete it once it has stopped")
    store.delete_run(run_id)
    shutil.rmtree(run_dir(run_id), ignore_errors=True)


def rename_run(run_id: str, name: str, *, store: Store | None = None) -> None:
    if not isinstance(name, str) or not name.strip():
        raise TrainError(f"a run name must be a non-empty string, got {name!r}")
    store = store or Store()
    store.get_run(run_id)
    store.update_run(run_id, name=name.strip())


def list_runs(*, store: Store | None = None) -> list[RunRecord]:
    """Every run, newest first, after reconciling the store with the processes actually alive."""
    store = store or Store()
    reconcile(store)
    return store.list_runs()


# ---- reconciliation -----------------------------------------------------------------------------

def reconcile(store: Store | None = None) -> dict[str, list[str]]:
    """Reap finished children, mark vanished workers `lost`, start queued runs while slots are free.

    Returns {"lost": [...], "started": [...]} run ids.
    """
    store = store or Store()
    _reap_children()
    lost = _mark_lost(store)
    started = []
    while (run_id := _claim_queued(store)) is not None:
        _spawn(store, run_id)
        started.append(run_id)
    return {"lost": lost, "started": started}


def _reap_children() -> None:
    for pid in list(_CHILDREN):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # already reaped elsewhere
            done, status = pid, None
        if done == pid:
            proc = _CHILDREN.pop(pid)
            # Reaped here: tell Popen, so it never waits on (or warns about) this pid again.
            proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else -1


def pid_alive(pid: int) -> bool:
    """True when `pid` is a live process (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # with /proc (Linux): the zombie was reaped between the two looks
        return not os.path.isdir("/proc/self")  # no /proc at all (macOS): os.kill said it exists
    except (OSError, IndexError):
        return True


def _mark_lost(store: Store) -> list[str]:
    now = time.time()
    lost = []
    for run in store.list_runs("running"):
        beat = run.heartbeat or run.started or run.created
        if run.pid is None:
            gone = now - beat > START_GRACE_SECONDS
            why = "its worker never started"
        else:
            alive = pid_alive(run.pid)  # looked at once: the reason must be the one that decided
            gone = not alive or now - beat > LOST_AFTER_SECONDS
            why = (f"its worker (pid {run.pid}) ended without reporting a result (killed, or out of memory?)"
                   if not alive else f"its worker sent no heartbeat for {now - beat:.0f} s")
        if not gone:
            continue
        with store.transaction(immediate=True) as conn:
            cur = conn.execute("UPDATE runs SET status='lost', ended=?, error=? WHERE id=? AND status='running' "
                               "AND pid IS ?", (now, f"lost: {why}; resume it to continue from the last checkpoint",
                                                run.id, run.pid))
        if cur.rowcount:
            store.log_event(run.id, f"marked lost: {why}", "warning")
            lost.append(run.id)
    return lost


def _claim_queued(store: Store) -> str | None:
    """Atomically move the oldest queued run to `running` (pid unknown yet) if a slot is free."""
    limit = max_concurrent()
    with store.transaction(immediate=True) as conn:
        running = conn.execute("SELECT COUNT(*) FROM runs WHERE status='running'").fetchone()[0]
        if running >= limit:
            return None
        row = conn.execute("SELECT id FROM runs WHERE status='queued' ORDER BY created, id LIMIT 1").fetchone()
        if row is None:
            return None
        now = time.time()
        conn.execute("UPDATE runs SET status='running', pid=NULL, started=?, heartbeat=?, ended=NULL WHERE id=?",
                     (now, now, row["id"]))
        return row["id"]


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env["STUDIO_WORKSPACE"] = str(workspace_dir())
    return env


# ---- warm spares (studio.runs.spare) --------------------------------------------------------------

def _spares_dir() -> Path:
    return workspace_dir() / "spares"


def _spare_alive(d: Path) -> bool:
    """A spare that is warming up or ready (its supervisor's pid is alive); a young one without a pid
    file yet is being started."""
    try:
        return pid_alive(int((d / spare.PID).read_text()))
    except (OSError, ValueError):
        try:
            return time.time() - d.stat().st_mtime < 30
        except OSError:
            return False


def keep_spare_ready(store: Store | None = None) -> None:
    """Start a warm spare for this workspace's next local run unless one is alive (the Train page calls
    this on each visit; a launch takes the spare, the next visit warms another). Not while a local run
    trains: its warm-up (seconds of CPU) would be taken from that run."""
    if not spare.enabled():
        return
    _reap_children()
    try:
        if any(_takes_spares(r.backend) for r in (store or Store()).list_runs("running")):
            return
    except StorageError:
        return
    try:
        for d in _spares_dir().glob("*"):
            if any((d / n).exists() for n in (spare.TAKEN, spare.CLAIM)):
                continue  # serving a run (or being handed one): its supervisor removes it at the end
            if _spare_alive(d):
                return
            shutil.rmtree(d, ignore_errors=True)  # its processes are gone
        d = _spares_dir() / secrets.token_hex(4)
        d.mkdir(parents=True)
        with open(d / "log.txt", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "studio.runs.supervise", "--spare", str(d)],
                                    cwd=_PROJECT_ROOT, env=_child_env(), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        _CHILDREN[proc.pid] = proc
        (d / spare.PID).write_text(str(proc.pid))
    except OSError:  # a full disk or a read-only workspace: runs start the usual way (and say why)
        return


def _takes_spares(kind: str) -> bool:
    """Whether runs of this backend are handed to warm spares (a store row names a registered backend)."""
    found = backends.BACKENDS.get(kind)
    return found is not None and found.warm_spares


def _hand_to_spare(store: Store, run_id: str, directory: RunDir) -> bool:
    """Give a local run to a ready spare; False (nothing changed) when none takes it."""
    if not spare.enabled() or not backends.of(directory.backend()).warm_spares:
        return False
    try:
        ready = [d for d in _spares_dir().glob("*") if spare.is_ready(d) and _spare_alive(d)]
    except OSError:
        return False
    for d in ready:
        try:
            pid = (d / spare.PID).read_text()
            if not spare.claim(d, directory.path):
                continue
        except OSError:
            continue
        store.log_event(run_id, f"worker started (warm spare, supervisor pid {pid})")
        return True
    return False


def _spawn(store: Store, run_id: str) -> None:
    directory = RunDir.of(run_id)
    if _hand_to_spare(store, run_id, directory):
        return
    env = _child_env()
    try:
        module = backends.of(directory.backend()).module
        with open(directory.log_file, "ab") as out:
            # The supervisor runs `python -m module RUN_DIR`, waits for it and reconciles when it ends.
            proc = subprocess.Popen(
                [sys.executable, "-m", "studio.runs.supervise", module, str(directory.path)],
                cwd=_PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except (OSError, TrainError, ValueError) as e:
        store.set_status(run_id, "failed", error=f"could not start the worker process: {e}")
        return
    _CHILDREN[proc.pid] = proc  # the supervisor records its worker's pid as the run's (START_GRACE_SECONDS)
    store.log_event(run_id, f"worker started (supervisor pid {proc.pid})")

