"""Sweeps: hyperparameter and architecture search over trials that are ordinary runs (Optuna ask/tell).

    >>> from studio.sweeps import load_sweep, start_sweep, sweep_summary
    >>> sweep_id = start_sweep(load_sweep("sweep.json"))
"""

from studio.sweeps.control import (
    SWEEP_STATUSES,
    SweepInfo,
    get_sweep,
    list_sweeps,
    resume_sweep,
    start_sweep,
    stop_sweep,
    sweep_dir,
    wait_sweep_process,
)
from studio.sweeps.results import param_importances, sweep_summary
from studio.sweeps.spec import (
    BACKENDS,
    DIRECTIONS,
    DISTRIBUTIONS,
    PRUNERS,
    SAMPLERS,
    SWEEP_FORMAT,
    Dimension,
    SweepError,
    SweepSpec,
    load_sweep,
    parse_sweep,
    trial_inputs,
)

__all__ = [
    "BACKENDS", "DIRECTIONS", "DISTRIBUTIONS", "PRUNERS", "SAMPLERS", "SWEEP_FORMAT", "SWEEP_STATUSES", "Dimension",
    "SweepError", "SweepInfo", "SweepSpec", "get_sweep", "list_sweeps", "load_sweep", "param_importances",
    "parse_sweep", "resume_sweep", "start_sweep", "stop_sweep", "sweep_dir", "sweep_summary",
    "trial_inputs", "wait_sweep_process",
]
