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
    if len(argv) != 2:
        print("usage: python -m studio.runs.supervise MODULE RUN_DIR", file=sys.stderr)
        return 2
    module, directory = argv
    from studio.errors import StorageError
    from studio.runs.store import Store

    meta = json.loads((Path(directory) / "run.json").read_text())
    # stdout/stderr are inherited: the launcher opened them on the run's log.txt.
    proc = subprocess.Popen([sys.executable, "-m", module, directory], stdin=subprocess.DEVNULL)
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
