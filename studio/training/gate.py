"""A test hook that holds a run at a chosen step, so a test can stop, kill or resume it mid-flight
on any machine without racing it (a fast CPU finishes a short run before a test that polls can act).

Off unless the environment names a gate directory (`STUDIO_TEST_GATE=DIR`); the studio never sets it.
The test writes a step number into `DIR/hold`; every run started with that environment that reaches
the end of a step >= that number commits its metric rows, writes the step into `DIR/<run_id>.at` and
waits there until the hold file is removed or raised past the step, or a stop is requested (the run
then stops at that step, or, on a data-parallel run, at the next one). The `.at` file is removed when
the run goes on.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> hold_step(d) is None
    True
    >>> _ = (d / "hold").write_text("12")
    >>> hold_step(d)
    12
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from studio.graph import atomic_write_bytes
from studio.training.loop import Callback, Trainer

GATE_ENV = "STUDIO_TEST_GATE"
POLL_S = 0.02


def gate_dir() -> str | None:
    """The gate directory named by the environment, or None (the studio's normal case)."""
    return os.environ.get(GATE_ENV) or None


def hold_step(directory: str | Path, name: str = "hold") -> int | None:
    """The step runs are held at, or None when nothing is held (no file, or not a number yet)."""
    try:
        return int((Path(directory) / name).read_text().strip())
    except (OSError, ValueError):
        return None


def hold_point(point: str, index: int, poll: float = POLL_S) -> None:
    """The same hold for a loop that is not a training run (Inspect's token-by-token generation, `point`
    "generate"): with the gate on and `DIR/hold-<point>` holding a number <= `index`, write `index` into
    `DIR/<point>.at` and wait until that file is removed or raised past it. Does nothing otherwise."""
    directory = gate_dir()
    if directory is None:
        return
    held = hold_step(directory, f"hold-{point}")
    if held is None or index < held:
        return
    at = Path(directory) / f"{point}.at"
    atomic_write_bytes(at, str(index).encode())
    try:
        while (held := hold_step(directory, f"hold-{point}")) is not None and held <= index:
            time.sleep(poll)
    finally:
        at.unlink(missing_ok=True)


class Gate(Callback):
    """Holds the run at the end of the first step >= the hold step; see the module docstring.

    `stop_requested` is polled while held: True releases the run (the stop callback after this one
    then ends it); a data-parallel rank passes one that also tells its Shard.
    """

    def __init__(self, directory: str | Path, run_id: str, stop_requested: Callable[[], bool],
                 before_hold: Callable[[], None] | None = None, poll: float = POLL_S):
        self.dir, self.run_id = Path(directory), run_id
        self.stop_requested, self.poll = stop_requested, poll
        self.before_hold = before_hold or (lambda: None)  # the worker commits its buffered metric rows

    @property
    def at_file(self) -> Path:
        return self.dir / f"{self.run_id}.at"

    def on_step_end(self, trainer: Trainer) -> None:
        step = trainer.state.step
        held = hold_step(self.dir)
        if held is None or step < held or trainer.state.stop_reason is not None:
            return
        self.before_hold()  # a held run's rows up to the step before are in the store: charts show them
        atomic_write_bytes(self.at_file, str(step).encode())
        try:
            while not self.stop_requested():
                held = hold_step(self.dir)
                if held is None or held > step:
                    break
                time.sleep(self.poll)
        finally:
            self.at_file.unlink(missing_ok=True)
            trainer.stop_check_due = True  # a stop asked while held ends the run at this step
