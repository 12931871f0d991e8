"""The Optuna side of a sweep: the study stored in the sweep directory, its sampler and pruner, and
how a trial's parameters are drawn from the space.

The study lives in an Optuna RDB storage, `study.db` (SQLite) in the sweep directory, so a sweep
process that is killed and started again finds every trial it asked for, with its parameters,
reported values and state.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy.exc

from studio.errors import StorageError
from studio.sweeps.spec import Dimension, SweepSpec

STUDY_FILE = "study.db"
_PRIMITIVE = (type(None), bool, int, float, str)  # what an Optuna categorical choice may be

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_url(directory: str | Path, name: str = STUDY_FILE) -> str:
    return f"sqlite:///{Path(directory).resolve() / name}"


def _storage(directory: str | Path, name: str = STUDY_FILE) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(storage_url(directory, name), engine_kwargs={"connect_args": {"timeout": 30}})


@contextmanager
def study_errors(directory: str | Path):
    """The study file failing (damaged, a full disk, an I/O error) as a StorageError saying what to do, not
    SQLAlchemy's traceback."""
    try:
        yield
    except sqlalchemy.exc.SQLAlchemyError as e:
        from studio.runs.store import storage_message

        error, path = getattr(e, "orig", None) or e, Path(directory) / STUDY_FILE
        if type(error) is sqlite3.DatabaseError:  # not a database, malformed pages
            raise StorageError(
                f"the sweep's study {str(path)!r} is damaged (SQLite says: {error}); move it aside (rename it to "
                f"{STUDY_FILE}.damaged): the trials' runs stay in the run store, but this sweep's summary and "
                "resume need its study") from None
        raise StorageError(storage_message(error, "read or write the sweep's study", path)
                           .replace("runs saved before", "trials saved before")) from None


def open_study(directory: str | Path, spec: SweepSpec, *, sweep_id: str) -> optuna.Study:
    """The sweep's study, created on first use and loaded as it is afterwards.

    A new study is made under a temporary name and renamed into place whole: opening an RDBStorage
    creates its tables and stamps its schema version, so a reader (the CLI or a page following the
    sweep) that opened a half-made `study.db` would race this process doing the same (CI saw
    "UNIQUE constraint failed: alembic_version.version_num"). Readers see no file, or a whole one."""
    with study_errors(directory):
        if not (Path(directory) / STUDY_FILE).exists():
            draft = Path(directory) / f"{STUDY_FILE}.new"
            draft.unlink(missing_ok=True)  # left by a process killed while it made the study
            storage = _storage(directory, draft.name)
            optuna.create_study(storage=storage, study_name=sweep_id, direction=spec.direction)
            storage.engine.dispose()
            os.replace(draft, Path(directory) / STUDY_FILE)
        return optuna.create_study(storage=_storage(directory), study_name=sweep_id, direction=spec.direction,
                                   sampler=make_sampler(spec), pruner=make_pruner(spec), load_if_exists=True)


def load_study(directory: str | Path, sweep_id: str) -> optuna.Study | None:
    """The study for reading (None before the sweep process has made it)."""
    if not (Path(directory) / STUDY_FILE).exists():
        return None
    with study_errors(directory):
        try:
            return optuna.load_study(study_name=sweep_id, storage=_storage(directory))
        except KeyError:  # a study file without this sweep's study in it
            return None


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """TPE (default), random, or grid over the listed values; seeded by the base config's seed."""
    seed = int(spec.config.get("seed", 0))
    if spec.sampler == "grid":
        return _GridSampler({name: [encode(d, v) for v in d.values] for name, d in spec.space.items()}, seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Few random trials before TPE models the space: sweeps here are tens of trials, not hundreds.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, spec.trials // 3)))


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its `study.stop()` once the grid is covered: that call only works
    inside `study.optimize`, and under ask/tell the sweep itself never asks for more trials than points."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """median: stop a trial whose value at an evaluation is worse than the median of earlier trials at
    the same step (after a few finished trials); halving: asynchronous successive halving."""
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, min(5, spec.trials // 4)), n_warmup_steps=0)
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, space: dict[str, Dimension]) -> dict:
    """Draw (or, for a trial that already has them, read back) every parameter of the space."""
    params = {}
    for name, d in space.items():
        if d.kind in ("choice", "grid"):
            params[name] = decode(d, trial.suggest_categorical(name, [encode(d, v) for v in d.values]))
        elif d.integer:
            params[name] = trial.suggest_int(name, int(d.values[0]), int(d.values[1]), log=d.kind == "log_uniform")
        else:
            params[name] = trial.suggest_float(name, float(d.values[0]), float(d.values[1]),
                                               log=d.kind == "log_uniform")
    return params


def _listed_as_json(d: Dimension) -> bool:
    return not all(isinstance(v, _PRIMITIVE) for v in d.values)


def encode(d: Dimension, value):
    """A listed value as Optuna stores it: itself, or its JSON text when the list holds lists (kernel sizes)."""
    return json.dumps(value) if _listed_as_json(d) else value


def decode(d: Dimension, value):
    return json.loads(value) if d.kind in ("choice", "grid") and _listed_as_json(d) else value


def trial_params(spec: SweepSpec, frozen: optuna.trial.FrozenTrial) -> dict:
    """A stored trial's parameters as the sweep file writes them."""
    return {name: decode(d, frozen.params[name]) for name, d in spec.space.items() if name in frozen.params}
