"""What every tracking path shares: its error type, the optional-dependency check, the log directory check.

    >>> TrackingError("x").__class__.__mro__[1].__name__
    'StudioError'
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from studio.errors import StudioError

# The optional libraries of these paths, with what each is for and what to install.
PACKAGES = {
    "tensorboardX": ("write TensorBoard event files", "tensorboardX"),
    "tensorboard": ("read TensorBoard event files", "tensorboard"),
    "mlflow": ("export to or read from MLflow", "mlflow-skinny SQLAlchemy alembic"),
    "sqlalchemy": ("use an MLflow sqlite:/// store", "SQLAlchemy alembic"),
}


TAG = "tensorboard"  # the run tag holding the live TensorBoard log directory chosen at launch


class TrackingError(StudioError):
    """A TensorBoard or MLflow logging, export or import that cannot proceed (a missing optional
    library, an unwritable directory, an unreachable tracking server, a folder without event files)."""


def require(module: str):
    """Import an optional library, or raise TrackingError saying what needs it and what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        purpose, install = PACKAGES.get(module, ("this", module))
        raise TrackingError(f"the optional package {module!r} is needed to {purpose} but is not installed "
                            f"({e}); install it with: pip install {install}") from None


def check_log_dir(path: str | Path) -> Path:
    """The absolute log directory, created if needed; TrackingError when it cannot be written there.

    Checked by the launch side (CLI, Train page) before a run exists, so a bad directory never costs
    a run; the worker checks again and trains on without TensorBoard if it became unwritable since.
    """
    if not str(path).strip():
        raise TrackingError("the TensorBoard log directory is empty; give a folder, e.g. ./tb-logs")
    directory = Path(os.path.expanduser(str(path))).resolve()
    if directory.exists() and not directory.is_dir():
        raise TrackingError(f"the TensorBoard log directory {str(directory)!r} is a file, not a folder; "
                            "give a folder (it is created when missing)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".studio-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise TrackingError(f"cannot write TensorBoard event files in {str(directory)!r}: "
                            f"{e.strerror or e}; choose a folder you can write, or fix its permissions") from None
    return directory


def launch_tags(log_dir: str | Path | None, backend: str | None = None) -> dict:
    """The run tags that ask for live TensorBoard logging into `log_dir` ({} for None or blank);
    TrackingError, before any run exists, when the folder cannot be written, tensorboardX is missing or
    the backend does not log live (only the local worker does: export a Ray run after it ends)."""
    if log_dir is None or not str(log_dir).strip():
        return {}
    if backend not in (None, "local"):
        raise TrackingError(f"live TensorBoard logging is built for the local backend only, not {backend!r}; "
                            "train without --tensorboard and export the run when it ends: "
                            "python -m studio runs export RUN --to tensorboard DIR")
    require("tensorboardX")  # missing: said before a run exists, not as a warning in its log
    return {TAG: str(check_log_dir(log_dir))}


def run_log_dir(run) -> Path | None:
    """Where a run's live TensorBoard events go (`DIR/<run_id>`), or None when it did not ask."""
    directory = (run.tags or {}).get(TAG)
    return Path(directory) / run.id if directory else None
