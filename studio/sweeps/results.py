"""What a sweep found: its trials with their runs, the best one, and Optuna's parameter importances.

`sweep_summary` is the object `python -m studio sweep ... --json` prints last:
`{"sweep_id", "status", "best": {"run_id", "params", "objective"}, "trials": [{"run_id", "params",
"status", "objective"}, ...]}` (plus the objective's name, its direction and, per trial, its
number, steps and error).
"""

from __future__ import annotations

import math

from optuna.trial import TrialState

from studio.runs.store import Store
from studio.sweeps.control import get_sweep, sweep_dir, trial_runs
from studio.sweeps.study import load_study, study_errors, trial_params


def sweep_summary(sweep_id: str, *, store: Store | None = None) -> dict:
    """The sweep's status, its best completed trial and every trial (status from its run)."""
    info = get_sweep(sweep_id)
    spec = info.spec
    out = {"sweep_id": sweep_id, "name": info.name, "status": info.status, "error": info.error,
           "objective_name": spec.objective if spec else None, "direction": spec.direction if spec else None,
           "trials_asked": spec.trials if spec else None, "best": None, "trials": []}
    study = load_study(sweep_dir(sweep_id), sweep_id) if spec else None
    if study is None:
        return out
    store = store or Store()
    runs = trial_runs(store, sweep_id)
    with study_errors(sweep_dir(sweep_id)):  # a study file damaged after it was opened
        trials = study.get_trials(deepcopy=False)
    for frozen in trials:
        run = runs.get(frozen.number)
        if frozen.state == TrialState.COMPLETE:
            objective = frozen.value
        elif frozen.intermediate_values:  # pruned or under way: the last value it reported
            objective = frozen.intermediate_values[max(frozen.intermediate_values)]
        else:
            objective = None
        if run is not None and frozen.state == TrialState.RUNNING and run.status not in ("queued", "running"):
            status = "running"  # the run has ended; the sweep has not recorded its result yet
        elif run is not None:
            status = run.status
        else:
            status = "failed" if frozen.state == TrialState.FAIL else "queued"
        out["trials"].append({
            "number": frozen.number, "run_id": run.id if run else frozen.user_attrs.get("run_id"),
            "params": trial_params(spec, frozen), "status": status, "objective": _finite(objective),
            "step": run.step if run else 0, "total_steps": run.total_steps if run else None,
            "error": frozen.user_attrs.get("error") or (run.error if run else None),
        })
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    if completed:
        with study_errors(sweep_dir(sweep_id)):
            best = study.best_trial
        best_run = runs.get(best.number)
        out["best"] = {"number": best.number, "run_id": best_run.id if best_run else best.user_attrs.get("run_id"),
                       "params": trial_params(spec, best), "objective": best.value}
    return out


def param_importances(sweep_id: str) -> tuple[dict[str, float], str | None]:
    """Optuna's parameter importances over the completed trials, and why there are none when so."""
    info = get_sweep(sweep_id)
    study = load_study(sweep_dir(sweep_id), sweep_id) if info.spec else None
    if study is None:
        return {}, "the sweep has no trials yet"
    with study_errors(sweep_dir(sweep_id)):
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < 2:
        return {}, f"importances need at least 2 completed trials ({len(completed)} so far)"
    varied = [name for name in info.spec.space if len({repr(t.params.get(name)) for t in completed}) > 1]
    if not varied:
        return {}, "every completed trial has the same parameters"
    import optuna

    try:
        return optuna.importance.get_param_importances(study, params=varied), None
    except (ValueError, RuntimeError) as e:
        return {}, f"Optuna could not compute importances: {e}"


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
