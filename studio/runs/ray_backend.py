"""Where a run trains when it runs on Ray: the settings, the cluster's resources, and the checks.

This module never imports Ray at import time, and the studio's own process never joins a cluster:
`cluster_resources` asks a short-lived subprocess (`python -m studio.runs.ray_backend ADDRESS`)
for a running cluster's CPUs, GPUs and nodes, and reads this machine directly for `local` (an
embedded Ray that the run's driver starts). The driver (studio.training.distributed) checks again
once connected, since a cluster changes.

    >>> s = RaySettings(address="local", workers=2)
    >>> s.to_dict()["kind"], s.total("CPU")
    ('ray', 2.0)
    >>> try:
    ...     check_fits(s, ClusterInfo(address="local", cpus=1.0, gpus=0.0, nodes=1))
    ... except TrainError as e:
    ...     print(str(e)[:79])
    the request does not fit the Ray cluster at 'local': 2 workers x 1 CPU = 2 CPUs
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.errors import TrainError
from studio.schema import Field

_ADDRESS = re.compile(r"(local|auto|ray://[A-Za-z0-9_.\-]+:\d{1,5}|[A-Za-z0-9_.\-]+:\d{1,5})")
PROBE_TIMEOUT_S = 60.0
INSTALL_HINT = "pip install 'ray[train]==2.60.0'"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _f(default, kind: str, help: str, **schema):
    """A dataclass field whose schema (a studio.schema Field, named after the field later) is its metadata;
    the Train page's "Where it runs" form is generated from these (studio.runs.backends)."""
    return field(default=default, metadata={"field": Field("", kind, default, help, **schema)})


@dataclass
class RaySettings:
    """A Ray run: where the cluster is and what each data-parallel rank gets."""

    address: str = _f("local", "str", "local: start Ray on this machine; auto: join the cluster running here "
                      "(ray start --head); ray://HOST:10001: a remote cluster.")
    workers: int = _f(2, "int", "Data-parallel ranks; each trains on its share of every batch (the batch size "
                      "stays the global batch).", min=1)
    cpus_per_worker: float = _f(1.0, "float", "CPUs each rank reserves on the cluster.", min=0.0,
                                min_exclusive=True)
    gpus_per_worker: float = _f(0.0, "float", "> 0: the ranks train on CUDA with NCCL; 0: on the CPU with gloo.",
                                min=0.0)
    max_failures: int = _f(2, "int", "Restarts of the worker group from the last checkpoint after a worker dies.",
                           min=0, advanced=True)
    storage_path: str | None = _f(None, "str", "Ray Train's storage: on a multi-node cluster a directory every "
                                  "node shares or an s3:// / gs:// URI. Checkpoints reach this machine either "
                                  "way.", optional=True, advanced=True)
    # Extra custom resources per worker, e.g. {"trainer_node": 1}: a mapping, so set in sweep files and the
    # API, not in the form (no schema kind holds one).
    resources: dict = field(default_factory=dict)

    def validate(self) -> None:
        """TrainError naming every bad setting with the received value."""
        problems = []
        if not isinstance(self.address, str) or not _ADDRESS.fullmatch(self.address):
            problems.append(f"address={self.address!r} is not a Ray address; use 'local' (start Ray on this "
                            "machine), 'auto' (join the cluster running here) or 'ray://HOST:PORT' (a remote one, "
                            "port 10001 by default)")
        if not isinstance(self.workers, int) or self.workers < 1:
            problems.append(f"workers={self.workers!r} must be an integer >= 1")
        if not isinstance(self.cpus_per_worker, int | float) or self.cpus_per_worker <= 0:
            problems.append(f"cpus_per_worker={self.cpus_per_worker!r} must be > 0 (e.g. 1)")
        if not isinstance(self.gpus_per_worker, int | float) or self.gpus_per_worker < 0:
            problems.append(f"gpus_per_worker={self.gpus_per_worker!r} must be >= 0 (0 trains on the CPU)")
        if not isinstance(self.max_failures, int) or self.max_failures < 0:
            problems.append(f"max_failures={self.max_failures!r} must be an integer >= 0")
        if self.storage_path is not None and (not isinstance(self.storage_path, str) or not self.storage_path):
            problems.append(f"storage_path={self.storage_path!r} must be a directory or a URI such as s3://bucket/x")
        if not isinstance(self.resources, dict) or not all(
                isinstance(k, str) and isinstance(v, int | float) and v > 0 for k, v in self.resources.items()):
            problems.append(f"resources={self.resources!r} must map resource names to positive amounts")
        if problems:
            raise TrainError("invalid Ray settings: " + "; ".join(problems))

    def total(self, resource: str) -> float:
        per = {"CPU": self.cpus_per_worker, "GPU": self.gpus_per_worker}.get(resource,
                                                                           self.resources.get(resource, 0))
        return float(per) * self.workers

    def to_dict(self) -> dict:
        return {"kind": "ray", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> RaySettings:
        d = {k: v for k, v in d.items() if k != "kind"}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainError(f"unknown Ray settings {unknown}; known: {sorted(known)}")
        settings = cls(**d)
        settings.validate()
        return settings


@dataclass
class ClusterInfo:
    """What a Ray cluster offers: totals over its alive nodes, and custom resources."""

    address: str
    cpus: float
    gpus: float
    nodes: int
    resources: dict = field(default_factory=dict)
    available_cpus: float | None = None   # free now (None for `local`: nothing runs there yet)
    available_gpus: float | None = None

    def describe(self) -> str:
        gpus = f"{self.gpus:g} GPU{'s' if self.gpus != 1 else ''}"
        return f"{self.cpus:g} CPUs, {gpus}, {self.nodes} node{'s' if self.nodes != 1 else ''}"


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def require_ray() -> None:
    if not ray_installed():
        raise TrainError(f"the Ray backend needs Ray, which is not installed here; install it with {INSTALL_HINT} "
                         "or train on this machine (backend 'local')")


def check(settings: RaySettings) -> None:
    """The checks that need no cluster: the settings, and Ray installed here."""
    settings.validate()
    require_ray()


def local_resources() -> ClusterInfo:
    """This machine as an embedded Ray would see it (no Ray started)."""
    import torch

    return ClusterInfo(address="local", cpus=float(os.cpu_count() or 1),
                       gpus=float(torch.cuda.device_count() if torch.cuda.is_available() else 0), nodes=1)


def cluster_resources(address: str, *, timeout: float = PROBE_TIMEOUT_S) -> ClusterInfo:
    """The resources of the cluster at `address`; TrainError saying why when it cannot be reached."""
    RaySettings(address=address).validate()
    require_ray()
    if address == "local":
        return local_resources()
    check_reachable(address)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    try:
        out = subprocess.run([sys.executable, "-m", "studio.runs.ray_backend", address], capture_output=True,
                             text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TrainError(f"could not reach a Ray cluster at {address!r} within {timeout:.0f} s; check the address "
                         "(ray://HOST:10001 for a remote cluster) and that the cluster is up (ray status)") from None
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    doc = json.loads(lines[-1]) if lines else {"error": (out.stderr.strip().splitlines() or ["no answer"])[-1]}
    if "error" in doc:
        raise TrainError(f"could not reach a Ray cluster at {address!r}: {doc['error']}; start one with "
                         "`ray start --head`, check the address, or use address 'local' to start Ray on this machine")
    return ClusterInfo(**doc)


def check_fits(settings: RaySettings, info: ClusterInfo) -> None:
    """TrainError when the workers' request exceeds the cluster's totals (Ray would wait forever)."""
    asks = [("CPU", info.cpus, settings.cpus_per_worker), ("GPU", info.gpus, settings.gpus_per_worker)]
    asks += [(k, float(info.resources.get(k, 0)), v) for k, v in settings.resources.items()]
    for name, have, per in asks:
        need = per * settings.workers
        if need > have + 1e-9:
            unit = f"{name}s" if name in ("CPU", "GPU") else f"of {name!r}"
            per_text = f"{per:g} {name}" if name in ("CPU", "GPU") else f"{per:g} {name!r}"
            fewer = {"CPU": "fewer CPUs per worker", "GPU": "fewer GPUs per worker (0 trains on the CPU)"}.get(
                name, f"less {name!r} per worker")
            raise TrainError(f"the request does not fit the Ray cluster at {info.address!r}: {settings.workers} "
                             f"workers x {per_text} = {need:g} {unit} asked, {have:g} available; use fewer workers "
                             f"or {fewer}, or a bigger cluster")


def preflight(settings: RaySettings) -> ClusterInfo:
    """Validate, reach the cluster and check that the request fits; returns what the cluster has."""
    settings.validate()
    info = cluster_resources(settings.address)
    check_fits(settings, info)
    return info


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """TrainError at once when nothing listens at a HOST:PORT or ray://HOST:PORT address (Ray itself
    would retry for minutes); `local` and `auto` pass (Ray answers those quickly)."""
    import socket

    if address in ("local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise TrainError(f"could not reach a Ray cluster at {address!r}: nothing answers at {host}:{port} "
                         f"({e.strerror or type(e).__name__}); start one with `ray start --head`, check the address "
                         "(ray://HOST:10001 for a remote cluster), or use address 'local' to start Ray on this "
                         "machine") from None


def _probe(address: str) -> dict:
    """Join the cluster at `address` briefly and read its resources (run in a subprocess)."""
    try:
        check_reachable(address)
    except TrainError as e:
        return {"error": str(e).split(": ", 1)[1].split("; start one")[0]}
    import ray

    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except Exception as e:  # ConnectionError, ValueError, grpc errors: the message is what the user needs
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        free = ray.available_resources()
        custom = {k: v for k, v in total.items() if k not in ("CPU", "GPU", "memory", "object_store_memory")
                  and not k.startswith("node:") and not k.startswith("accelerator_type")}
        return {"address": address, "cpus": float(total.get("CPU", 0)), "gpus": float(total.get("GPU", 0)),
                "nodes": len(nodes), "resources": custom, "available_cpus": float(free.get("CPU", 0)),
                "available_gpus": float(free.get("GPU", 0))}
    finally:
        ray.shutdown()


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1])), flush=True)


def settings_from_args(args) -> RaySettings:
    """The Ray settings the CLI's train flags ask for (--ray-address, --workers, --cpus-per-worker, ...)."""
    return RaySettings(
        address=getattr(args, "ray_address", None) or "local", workers=getattr(args, "workers", None) or 1,
        cpus_per_worker=getattr(args, "cpus_per_worker", None) or 1.0,
        gpus_per_worker=getattr(args, "gpus_per_worker", None) or 0.0,
        max_failures=2 if getattr(args, "max_failures", None) is None else args.max_failures,
        storage_path=getattr(args, "storage_path", None))


def backend_from_args(args) -> dict:
    """The `backend` for start_run from the CLI's train flags with `--backend ray`, after a preflight
    (TrainError before any run exists when Ray is missing, the cluster cannot be reached or the
    request does not fit). The CLI reaches it through `studio.runs.backends.from_args`."""
    settings = settings_from_args(args)
    preflight(settings)
    return settings.to_dict()
