"""A warm spare: a worker process started before the click, waiting with torch already imported.

Most of a run's start is importing torch and the `torch._dynamo` every PyTorch optimizer pulls in at its
first step (about 4 s of CPU here), not studio code. The Train page keeps one spare ready per workspace
(`launcher.keep_spare_ready`); a launch hands its run directory to the spare instead of starting a
process, and a new spare warms up for the next launch. Everything else is as for any run: the spare is
a supervisor (`python -m studio.runs.supervise --spare DIR`) and its worker child, detached in their own
session, so a run started this way survives the server like every other.

The hand-over is a small protocol of files in the spare's directory, each step an atomic rename or link:

    worker  writes `ready` once warm
    launcher  links `claim` (the run directory), only one launcher can; waits ACK_WAIT_S for ...
    supervisor  renames `claim` -> `taken` (the run is its own now) and writes `go` for its worker
    launcher  on no answer renames `claim` -> `revoked`: whichever rename wins decides, so a run is
              never started twice nor dropped (the launcher then starts it the usual way)

A spare left idle for SPARE_IDLE_S ends and removes its directory. STUDIO_SPARE_WORKER=0 turns spares
off (the tests do, except the ones about spares).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SPARE_IDLE_S = float(os.environ.get("STUDIO_SPARE_IDLE_S", "600"))
ACK_WAIT_S = 3.0
POLL_S = 0.02
READY, CLAIM, TAKEN, REVOKED, GO, PID = "ready", "claim", "taken", "revoked", "go", "pid"


def enabled() -> bool:
    return os.environ.get("STUDIO_SPARE_WORKER", "1") != "0"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def mark_ready(spare: Path) -> None:
    _write_atomic(spare / READY, str(os.getpid()))


def is_ready(spare: Path) -> bool:
    return (spare / READY).exists() and not any((spare / n).exists() for n in (CLAIM, TAKEN, REVOKED))


def claim(spare: Path, run_dir: Path) -> bool:
    """Hand `run_dir` to the spare; True once its supervisor took it, False if it did not (then nothing
    of the run is left with the spare)."""
    tmp = spare / f".claim.{os.getpid()}.tmp"
    try:
        tmp.write_text(str(run_dir))
        os.link(tmp, spare / CLAIM)  # fails if another launcher claimed it first
    except OSError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    deadline = time.monotonic() + ACK_WAIT_S
    while time.monotonic() < deadline:
        if (spare / TAKEN).exists():
            return True
        time.sleep(POLL_S)
    try:
        os.rename(spare / CLAIM, spare / REVOKED)
    except FileNotFoundError:  # taken after all, just now
        return True
    return False


def wait_for_claim(spare: Path, alive) -> Path | None:
    """The supervisor's side: the run directory handed over, or None when idle too long or `alive()`
    (its worker) says no."""
    deadline = time.monotonic() + SPARE_IDLE_S
    while time.monotonic() < deadline and alive():
        try:
            os.rename(spare / CLAIM, spare / TAKEN)
        except FileNotFoundError:  # nothing claimed (or revoked first)
            time.sleep(POLL_S)
            continue
        return Path((spare / TAKEN).read_text())
    return None


def wait_for_go(spare: Path, parent: int) -> Path | None:
    """The worker's side: the run directory its supervisor took, or None once the supervisor is gone."""
    while os.getppid() == parent:
        if (spare / GO).exists():
            return Path((spare / GO).read_text())
        time.sleep(POLL_S)
    return None


def send_go(spare: Path, run_dir: Path) -> None:
    _write_atomic(spare / GO, str(run_dir))


def redirect_output(log_file: Path) -> None:
    """Point this process's stdout and stderr at the run's log.txt (a spare starts before its run)."""
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
