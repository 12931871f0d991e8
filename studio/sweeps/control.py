"""Starting, stopping and resuming sweeps, and where they live.

A sweep is a directory `workspace/sweeps/<sweep_id>/` holding `sweep.json` (the studio.sweep/1
document), `graph.json` (its base graph), `study.db` (the Optuna study), `state.json` (the sweep
process's status and pid), `log.txt`, and a `stop` file the process polls. The process itself is
`python -m studio.sweeps.runner SWEEP_DIR`, started detached like a worker
(`subprocess.Popen(..., start_new_session=True)`): closing the tab or restarting the server does
not stop it.

    >>> sweep_id = start_sweep(load_sweep("sweep.json"))  # doctest: +SKIP
    >>> stop_sweep(sweep_id); resume_sweep(sweep_id)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from studio.errors import StorageError, TrainError
from studio.graph import atomic_write_text
from studio.runs.launcher import pid_alive
from studio.runs.store import RunRecord, Store
from studio.sweeps.spec import SweepSpec, load_sweep
from studio.workspace import workspace_dir

SWEEP_FILE = "sweep.json"
GRAPH_FILE = "graph.json"
STATE_FILE = "state.json"
STOP_FILE = "stop"
LOG_FILE = "log.txt"
START_GRACE_SECONDS = 30.0  # a sweep process may take this long to write its own state
# running: the process is at work; completed / stopped / failed: it ended; lost: it vanished (killed)
# without saying so, and resume_sweep continues it.
SWEEP_STATUSES = ("starting", "running", "completed", "stopped", "failed", "lost")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_CHILDREN: dict[str, subprocess.Popen] = {}  # sweep id -> the sweep process this process started (reap())


@dataclass
class SweepInfo:
    """A sweep as listed: its id, name, status, the process pid and when it was created."""

    id: str
    name: str
    status: str
    created: float
    pid: int | None
    error: str | None
    spec: SweepSpec | None  # None when sweep.json no longer parses (its error says why)


def sweeps_dir() -> Path:
    return workspace_dir() / "sweeps"


def sweep_dir(sweep_id: str) -> Path:
    return sweeps_dir() / sweep_id


def new_sweep_id() -> str:
    return "sweep-" + time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def start_sweep(spec: SweepSpec) -> str:
    """Write the sweep directory and start its process; returns the sweep id at once."""
    sweep_id = new_sweep_id()
    directory = sweep_dir(sweep_id)
    try:  # a full disk or a read-only workspace: said plainly, and no half-made sweep folder stays behind
        with _disk_errors("create the sweep", directory.parent):
            directory.mkdir(parents=True)
            atomic_write_text(directory / GRAPH_FILE, spec.graph.to_json() + "\n")
            atomic_write_text(directory / SWEEP_FILE, json.dumps(spec.to_dict(GRAPH_FILE), indent=2) + "\n")
            write_state(directory, status="starting", pid=None, created=time.time())
            (directory / LOG_FILE).touch()
    except StorageError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    _spawn(directory)
    return sweep_id


@contextmanager
def _disk_errors(action: str, path: Path):
    """An OSError (disk full, read-only, I/O error) as a StorageError saying what happened and what to do."""
    try:
        yield
    except OSError as e:
        from studio.oserrors import describe_os_error

        raise StorageError(describe_os_error(e, action, path) + "; sweeps saved before are unchanged") from None


def stop_sweep(sweep_id: str) -> str:
    """Ask a sweep to stop: it stops its running trials (they keep their checkpoints) and ends as
    `stopped`; resume_sweep continues them. Returns the status after the request."""
    info = get_sweep(sweep_id)
    if info.status not in ("starting", "running"):
        raise TrainError(f"sweep {sweep_id!r} is {info.status}; only a running sweep can be stopped")
    with _disk_errors("ask the sweep to stop", sweep_dir(sweep_id)):
        (sweep_dir(sweep_id) / STOP_FILE).touch()
    return info.status


def resume_sweep(sweep_id: str) -> str:
    """Start the process of a stopped or lost sweep again: it resumes the trials that were under way
    and asks for new ones until the sweep has its number of trials (never more)."""
    info = get_sweep(sweep_id)
    if info.status in ("starting", "running"):
        raise TrainError(f"sweep {sweep_id!r} is {info.status} already (pid {info.pid})")
    if info.status == "completed":
        raise TrainError(f"sweep {sweep_id!r} has completed all its trials; start a new sweep to run more")
    if info.spec is None:
        raise TrainError(f"sweep {sweep_id!r} cannot be resumed: {info.error}")
    directory = sweep_dir(sweep_id)
    with _disk_errors("resume the sweep", directory):
        (directory / STOP_FILE).unlink(missing_ok=True)
        write_state(directory, status="starting", pid=None)
    _spawn(directory)
    return "starting"


def get_sweep(sweep_id: str) -> SweepInfo:
    directory = sweep_dir(sweep_id)
    if not (directory / SWEEP_FILE).exists():
        raise TrainError(f"no sweep with id {sweep_id!r} in {sweeps_dir()}; list them with list_sweeps()")
    return _info(directory)


def list_sweeps() -> list[SweepInfo]:
    """Every sweep in the workspace, newest first."""
    reap()
    root = sweeps_dir()
    if not root.exists():
        return []
    found = [_info(d) for d in root.iterdir() if (d / SWEEP_FILE).exists()]
    return sorted(found, key=lambda s: (s.created, s.id), reverse=True)


def _info(directory: Path) -> SweepInfo:
    reap()
    state = read_state(directory)
    status, error = state.get("status", "lost"), state.get("error")
    pid = state.get("pid")
    if status == "running" and (pid is None or not pid_alive(pid)):
        status, error = "lost", "the sweep process ended without reporting (killed?); resume the sweep to continue"
    elif status == "starting" and time.time() - state.get("updated", 0) > START_GRACE_SECONDS and (
            pid is None or not pid_alive(pid)):
        status, error = "lost", "the sweep process never started; see log.txt in the sweep directory"
    try:
        spec = load_sweep(directory / SWEEP_FILE)
    except TrainError as e:
        spec, error = None, str(e)
    name = spec.name if spec else directory.name
    return SweepInfo(directory.name, name, status, state.get("created", 0.0), pid, error, spec)


def read_state(directory: Path) -> dict:
    try:
        return json.loads((directory / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_state(directory: Path, **changes) -> None:
    """Merge `changes` into state.json (atomically)."""
    state = {**read_state(directory), **changes, "updated": time.time()}
    atomic_write_text(directory / STATE_FILE, json.dumps(state) + "\n")


def trial_runs(store: Store, sweep_id: str) -> dict[int, RunRecord]:
    """The runs of a sweep by trial number (the run store is the record of what was launched)."""
    found: dict[int, RunRecord] = {}
    for run in reversed(store.list_runs()):  # oldest first: the run a trial started with is the one it keeps
        if run.sweep_id == sweep_id and isinstance(run.tags.get("trial"), int):
            found.setdefault(run.tags["trial"], run)
    return found


def _spawn(directory: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env["STUDIO_WORKSPACE"] = str(workspace_dir())
    with open(directory / LOG_FILE, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "studio.sweeps.runner", str(directory)], cwd=_PROJECT_ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    _CHILDREN[directory.name] = proc  # the process writes its own pid and status into state.json
    return proc


def reap() -> None:
    """Collect sweep processes this process started that have ended (no zombies)."""
    for sweep_id, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[sweep_id]


def wait_sweep_process(sweep_id: str, timeout: float | None = None) -> int | None:
    """Wait for the sweep process this process started (CLI, tests); its exit code, None if not ours."""
    proc = _CHILDREN.get(sweep_id)
    if proc is None:
        return None
    code = proc.wait(timeout)
    _CHILDREN.pop(sweep_id, None)
    return code
