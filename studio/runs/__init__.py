"""Runs: the SQLite run store and the launcher that starts, stops and resumes worker processes.

    >>> from studio.runs import start_run, list_runs, Store
"""

from studio.runs.launcher import (
    delete_run,
    keep_spare_ready,
    list_runs,
    max_concurrent,
    reconcile,
    rename_run,
    resume_run,
    run_dir,
    start_run,
    stop_run,
)
from studio.runs.store import (
    ACTIVE_STATUSES,
    RESUMABLE_STATUSES,
    STATUSES,
    Event,
    Metric,
    MetricWriter,
    RunRecord,
    Store,
)

__all__ = [
    "ACTIVE_STATUSES", "RESUMABLE_STATUSES", "STATUSES", "Event", "Metric", "MetricWriter", "RunRecord", "Store",
    "delete_run", "keep_spare_ready", "list_runs", "max_concurrent", "reconcile", "rename_run", "resume_run",
    "run_dir", "start_run", "stop_run",
]
