"""The registry of backends (studio.runs.backends): every backend goes through the same checks."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from studio.errors import TrainError
from studio.runs import backends
from studio.runs.backends import BACKENDS, DEFAULT_BACKEND
from studio.runs.ray_backend import RaySettings, settings_from_args
from studio.sweeps.spec import BACKENDS as SWEEP_BACKENDS
from studio.sweeps.spec import SweepError, parse_sweep

REGISTERED = list(BACKENDS.values())


@pytest.mark.parametrize("backend", REGISTERED, ids=lambda b: b.name)
def test_settings_round_trip_through_their_document(backend):
    settings = backend.settings()
    document = settings.to_dict()
    assert document["kind"] == backend.name
    assert backend.settings.from_dict(document) == settings
    assert backends.of(document) is backend
    assert backends.start_argument(settings) == (None if backend.name == DEFAULT_BACKEND else document)


@pytest.mark.parametrize("backend", REGISTERED, ids=lambda b: b.name)
def test_settings_describe_themselves_and_agree_with_validate(backend):
    """Each schema Field has the dataclass field's default, which passes; a value past a bound fails
    validate() with a message naming the field."""
    declared = {f.name: f for f in dataclasses.fields(backend.settings)}
    for spec in backend.schema():
        assert spec.default == declared[spec.name].default, spec.name
        assert spec.problem(spec.default) is None, spec.name
        if spec.kind in ("int", "float") and spec.min is not None:
            below = spec.min if spec.min_exclusive else spec.min - 1
            with pytest.raises(TrainError, match=rf"{spec.name}={below!r}"):
                dataclasses.replace(backend.settings(), **{spec.name: below}).validate()


def test_an_unknown_backend_is_refused_with_the_known_ones():
    with pytest.raises(TrainError, match=r"^backend 'slurm' is unknown; use one of local, ray$"):
        backends.get("slurm")
    with pytest.raises(TrainError, match=r"^backend None is unknown; use one of local, ray$"):
        backends.get(None)


def test_unknown_settings_are_refused():
    with pytest.raises(TrainError, match=r"unknown Ray settings \['worker'\]; known: \["):
        RaySettings.from_dict({"kind": "ray", "worker": 2})
    with pytest.raises(TrainError, match=r"unknown local settings \['workers'\]"):
        backends.get("local").settings.from_dict({"kind": "local", "workers": 2})


def test_a_document_without_a_backend_trains_on_this_machine():
    assert backends.of(None) is backends.of({}) is backends.get(DEFAULT_BACKEND)
    local = backends.of(None)
    local.check(local.settings())  # nothing to check, nothing to reach
    assert local.warm_spares and not backends.get("ray").warm_spares
    assert backends.of({"kind": "ray"}).module == "studio.training.distributed"


def test_the_cli_flags_read_as_before():
    assert backends.from_args(argparse.Namespace(backend="local")) is None
    assert backends.from_args(argparse.Namespace()) is None
    flags = argparse.Namespace(backend="ray", ray_address="auto", workers=3, cpus_per_worker=None,
                               gpus_per_worker=None, max_failures=None, storage_path=None)
    assert settings_from_args(flags) == RaySettings(address="auto", workers=3)
    with pytest.raises(TrainError, match=r"address='ray:/x' is not a Ray address; use 'local'"):
        backends.from_args(argparse.Namespace(backend="ray", ray_address="ray:/x", workers=2))


def test_the_sweep_spec_offers_every_backend_and_writes_its_document_as_before():
    assert SWEEP_BACKENDS == tuple(BACKENDS)
    graph = {"format": "studio.graph/1", "name": "tiny", "edges": [{"source": "input", "target": "fc"}],
             "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
                       {"id": "fc", "type": "Linear", "params": {"out_features": 3}}]}
    doc = {"format": "studio.sweep/1", "graph": graph, "data": "iris", "space": {"lr": {"choice": [0.1]}},
           "objective": "val_accuracy", "trials": 1}
    local = parse_sweep(doc)
    assert (local.backend, local.backend_settings()) == ("local", None)
    assert (local.to_dict()["backend"], local.to_dict()["ray"]) == ("local", {})
    ray = parse_sweep({**doc, "backend": "ray", "ray": {"workers": 2, "address": "auto"}})
    assert ray.backend_settings() == RaySettings(workers=2, address="auto").to_dict()
    assert (ray.to_dict()["backend"], ray.to_dict()["ray"]) == ("ray", {"workers": 2, "address": "auto"})
    assert parse_sweep(ray.to_dict(graph_path=graph)).backend_settings() == ray.backend_settings()
    with pytest.raises(SweepError, match=r'ray: must be a JSON object of Ray settings such as \{"workers": 2\}'):
        parse_sweep({**doc, "backend": "ray", "ray": 2})


def test_the_registry_never_imports_ray():
    code = "import sys, studio.runs.backends, studio.sweeps.spec; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
