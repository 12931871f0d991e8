"""Where a run trains: the registry of backends, looked up by name ("local", "ray").

A backend is its name (the `kind` of the `backend` document in run.json and start_run, the store's
`backend` column, the CLI's `--backend`, a sweep's "backend"), a label for the Train page, a settings
dataclass whose fields carry their `studio.schema.Field` (as TrainConfig's do) so the form is
generated from it, the checks before launch, and the process that trains its runs. Adding a
backend means registering one here; the launcher, the CLI, the sweep spec and the pages look it up.
This module never imports Ray: the Ray backend's settings and checks import it only when they run.

    >>> get("ray").label, get("ray").module
    ('Ray cluster', 'studio.training.distributed')
    >>> start_argument(get("local").settings()) is None     # start_run's `backend` for this machine
    True
    >>> get("slurm")
    Traceback (most recent call last):
    ...
    studio.errors.TrainError: backend 'slurm' is unknown; use one of local, ray
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from studio.errors import TrainError
from studio.runs import ray_backend
from studio.schema import Field


@dataclass
class LocalSettings:
    """A run on this machine: one detached worker process, nothing to set."""

    def validate(self) -> None:
        """Nothing can be wrong."""

    def to_dict(self) -> dict:
        return {"kind": "local"}

    @classmethod
    def from_dict(cls, d: dict) -> LocalSettings:
        unknown = sorted(set(d) - {"kind"})
        if unknown:
            raise TrainError(f"unknown local settings {unknown}; a run on this machine takes none")
        return cls()


@dataclass(frozen=True)
class Backend:
    """One place a run can train. `settings` is a dataclass with `validate()`, `to_dict()` (holding
    `"kind": name`) and `from_dict(doc)` (validated; unknown keys are errors); its fields' metadata
    "field" is their schema (a field without one, such as Ray's `resources` mapping, is not in forms)."""

    name: str
    label: str           # the Train page's choice: "This machine", "Ray cluster"
    description: str     # what training there means, for the choice's help
    noun: str            # how messages name its settings: "invalid Ray settings: ..."
    settings: type       # its settings dataclass (LocalSettings, RaySettings)
    module: str          # the process that trains a run: `python -m MODULE RUN_DIR`, under studio.runs.supervise
    check: Callable      # settings -> None: the checks that need no cluster (values, software installed)
    # The CLI's train flags (argparse.Namespace) -> start_run's `backend`, after every check that can be
    # made before a run exists (Ray: reaches the cluster, checks the request fits); TrainError otherwise.
    from_args: Callable
    warm_spares: bool = False  # a ready spare worker (studio.runs.spare) may take its runs; none warms while one trains
    example: dict | None = None  # settings shown in messages about a sweep file: {"workers": 2}

    def schema(self) -> tuple[Field, ...]:
        """The settings' schema in form order, each Field named after its dataclass field."""
        return tuple(f.metadata["field"].renamed(f.name) for f in fields(self.settings) if "field" in f.metadata)

    @property
    def has_settings(self) -> bool:
        """Whether there is anything to set (a sweep file's object of the backend's name holds it)."""
        return bool(fields(self.settings))


# The first is the default and comes first in the Train page's choice.
LOCAL = Backend(name="local", label="This machine", description="one background process", noun="local",
                settings=LocalSettings, module="studio.training.worker", check=LocalSettings.validate,
                from_args=lambda args: None, warm_spares=True)
RAY = Backend(name="ray", label="Ray cluster", noun="Ray",
              description="data-parallel workers on a Ray cluster (an embedded one on this machine with address "
                          "'local')", settings=ray_backend.RaySettings,
              module="studio.training.distributed", check=ray_backend.check,
              from_args=ray_backend.backend_from_args, example={"workers": 2})

BACKENDS: dict[str, Backend] = {b.name: b for b in (LOCAL, RAY)}
DEFAULT_BACKEND = LOCAL.name  # a run whose document names no backend (start_run(backend=None), old run.json)


def get(name) -> Backend:
    """The backend called `name`; TrainError listing the known ones otherwise."""
    found = BACKENDS.get(name) if isinstance(name, str) else None
    if found is None:
        raise TrainError(f"backend {name!r} is unknown; use one of {', '.join(BACKENDS)}")
    return found


def of(document: dict | None) -> Backend:
    """The backend of a `backend` document (start_run's argument, run.json's "backend"); None or a
    document without a kind is this machine."""
    return get((document or {}).get("kind", DEFAULT_BACKEND))


def start_argument(settings) -> dict | None:
    """What start_run takes as `backend`: None for the default backend, else the settings' document."""
    document = settings.to_dict()
    return None if document["kind"] == DEFAULT_BACKEND else document


def from_args(args) -> dict | None:
    """start_run's `backend` from the CLI's train flags (`--backend`, `--ray-address`, `--workers`, ...),
    after the backend's checks: TrainError before any run exists when it cannot train there."""
    return get(getattr(args, "backend", None) or DEFAULT_BACKEND).from_args(args)
