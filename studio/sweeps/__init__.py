"""Sweeps: hyperparameter and architecture search over trials that are ordinary runs (Optuna ask/tell).

    >>> from studio.sweeps import load_sweep, start_sweep, sweep_summary  # doctest: +SKIP
    >>> sweep_id = start_sweep(load_sweep("sweep.json"))  # doctest: +SKIP
"""

_FROM = {
    "control": ("SWEEP_STATUSES", "SweepInfo", "get_sweep", "list_sweeps", "resume_sweep", "start_sweep", "stop_sweep",
                "sweep_dir", "wait_sweep_process"),
    "results": ("param_importances", "sweep_summary"),
    "spec": ("BACKENDS", "DIRECTIONS", "DISTRIBUTIONS", "PRUNERS", "SAMPLERS", "SWEEP_FORMAT", "Dimension",
             "SweepError", "SweepSpec", "load_sweep", "parse_sweep", "trial_inputs"),
}
_MODULE_OF = {name: module for module, names in _FROM.items() for name in names}


def __getattr__(name: str):
    """The names below load on first use, so registering the `sweep` command imports neither Optuna nor torch."""
    if name in _MODULE_OF:
        import importlib

        return getattr(importlib.import_module(f"studio.sweeps.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'studio.sweeps' has no attribute {name!r}")


__all__ = [
    "BACKENDS", "DIRECTIONS", "DISTRIBUTIONS", "PRUNERS", "SAMPLERS", "SWEEP_FORMAT", "SWEEP_STATUSES", "Dimension",
    "SweepError", "SweepInfo", "SweepSpec", "get_sweep", "list_sweeps", "load_sweep", "param_importances",
    "parse_sweep", "resume_sweep", "start_sweep", "stop_sweep", "sweep_dir", "sweep_summary",
    "trial_inputs", "wait_sweep_process",
]
