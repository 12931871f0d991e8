"""`python -m studio.runs.supervise MODULE RUN_DIR`: run one run's process and keep the queue moving.

The launcher starts this small process (detached, in its own session) instead of the worker
itself. It runs `python -m MODULE RUN_DIR` (the local worker or the Ray driver) as its child,
waits for it (so no zombie is left), then reconciles the store: a run whose process died without
a final status is marked `lost` at once, and the next queued run starts. The worker itself never
calls the launcher; it only trains.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--spare":
        return spare_main(Path(argv[1]))
    if len(argv) != 2:
        print("usage: python -m studio.runs.supervise MODULE RUN_DIR | --spare SPARE_DIR", file=sys.stderr)
        return 2
    module, directory = argv
    # stdout/stderr are inherited: the launcher opened them on the run's log.txt.
    proc = subprocess.Popen([sys.executable, "-m", module, directory], stdin=subprocess.DEVNULL)
    return supervise(proc, directory)


def spare_main(spare: Path) -> int:
    """A warm spare (studio.runs.spare): start the worker, wait for a run to be handed over, then
    supervise it like any other; idle too long, end and leave nothing behind."""
    import shutil

    from studio.runs import spare as protocol

    proc = subprocess.Popen([sys.executable, "-m", "studio.training.worker", "--spare", str(spare)],
                            stdin=subprocess.DEVNULL)
    directory = protocol.wait_for_claim(spare, lambda: proc.poll() is None)
    if directory is None:
        proc.kill()
        proc.wait()
        shutil.rmtree(spare, ignore_errors=True)
        return 0
    protocol.redirect_output(directory / "log.txt")
    protocol.send_go(spare, directory)
    try:
        return supervise(proc, str(directory))
    finally:
        shutil.rmtree(spare, ignore_errors=True)


def supervise(proc: subprocess.Popen, directory: str) -> int:
    """Record the worker's pid as the run's, wait for it, then reconcile the store."""
    from studio.errors import StorageError
    from studio.runs.store import Store

    meta = json.loads((Path(directory) / "run.json").read_text())
    # The run's pid is the worker's (what `stop`, reconcile and a kill act on), recorded at once; the
    # worker records it again when it starts. A store that fails is said in log.txt: the worker is still
    # waited for, so no zombie is left.
    try:
        store = Store(meta["db"])
        with store.transaction(immediate=True) as conn:
            conn.execute("UPDATE runs SET pid=? WHERE id=? AND pid IS NULL AND status='running'",
                         (proc.pid, meta["run_id"]))
    except StorageError as e:
        print(f"supervisor: could not record the worker's pid {proc.pid}: {e}", file=sys.stderr, flush=True)
    code = proc.wait()
    from studio.runs.launcher import reconcile

    try:
        reconcile(Store(meta["db"]))
    except StorageError as e:
        print(f"supervisor: could not update the run store after the worker ended: {e}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
