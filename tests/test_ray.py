"""The Ray backend, end to end on one shared Ray cluster (two "nodes" on this machine).

One scenario starts every run at once (Ray's start-up dominates on 2 cores, so the runs overlap it):
the oracle pair (an MLP locally and on 2 Ray workers), the seed CNN locally and on 2 workers, a run
pinned to the second node, a run whose rank 1 is SIGKILLed mid-run, and runs that must fail
clearly (too many GPUs, Ray not importable). The tests then read what the runs left in the store
and the run directories, exactly as the pages do.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from studio.errors import TrainError
from studio.runs import Store, list_runs, reconcile, resume_run, run_dir, start_run, stop_run
from studio.runs.launcher import pid_alive
from studio.runs.ray_backend import ClusterInfo, RaySettings, backend_from_args, check_fits, preflight
from studio.training import TrainConfig
from studio.training.callbacks import load_checkpoint
from studio.training.gate import GATE_ENV
from tests.conftest import RunGate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # Ray start-up on 2 busy cores: minutes
DEADLINE_S = 1200  # a bound on each wait on a loaded 2-core machine, not a speed goal
CNN_EPOCHS = 4  # 80 steps: held at 30 (kill) and 60 (stop), then resumed to the end


def mlp() -> dict:
    chain = [("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
             ("fc1", "Linear", {"out_features": 64}), ("relu1", "ReLU", None),
             ("fc2", "Linear", {"out_features": 10})]
    return {"format": "studio.graph/1", "name": "oracle-mlp",
            "nodes": [{"id": i, "type": t, **({"params": p} if p else {})} for i, t, p in chain],
            "edges": [{"source": a[0], "target": b[0]} for a, b in zip(chain, chain[1:], strict=False)]}


def seed_cnn():
    from studio.data import apply_dataset, get_info
    from studio.templates import load_template

    return apply_dataset(load_template("seed_cnn_padded"), get_info("digits"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One Ray cluster for the whole module: a head with 6 logical CPUs and a second node (2 CPUs and
    a custom resource 'node2' that pins a run's workers there)."""
    from ray.cluster_utils import Cluster

    mp = pytest.MonkeyPatch()
    ws = tmp_path_factory.mktemp("workspace")
    mp.setenv("STUDIO_WORKSPACE", str(ws))
    mp.setenv("STUDIO_MAX_RUNS", "12")
    mp.setenv(GATE_ENV, str(tmp_path_factory.mktemp("gate")))  # the scenario holds its runs at chosen steps
    for attempt in range(3):  # Ray gives a raylet 30 s to register: a loaded 2-core machine can miss that
        c = Cluster()
        try:
            c.add_node(num_cpus=6, include_dashboard=False)
            node2 = c.add_node(num_cpus=2, resources={"node2": 2})
            c.wait_for_nodes()
            break
        except Exception:
            c.shutdown()
            if attempt == 2:
                raise
    yield {"address": c.address, "node2": node2.node_id, "workspace": ws}
    for run in Store().list_runs(("running",)):  # never leave a driver or worker behind
        if run.pid and pid_alive(run.pid):
            os.kill(run.pid, signal.SIGKILL)
    c.shutdown()
    mp.undo()


@pytest.fixture(autouse=True)
def _workspace(request, tmp_path, monkeypatch):
    """Overrides conftest's: tests reading the scenario share the cluster's workspace, others get their own."""
    if "scenario" in request.fixturenames:
        ws = request.getfixturevalue("cluster")["workspace"]
    else:
        ws = tmp_path / "workspace"
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    return ws


def ray_backend(cluster, **kw) -> dict:
    return RaySettings(address=cluster["address"], **{"workers": 2, **kw}).to_dict()


def wait_for(predicate, what: str):
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        reconcile()
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; runs: {[(r.id, r.status, r.step) for r in list_runs()]}")


def rank_pids(store: Store, run_id: str) -> dict[int, int]:
    found = {}
    for e in store.read_events(run_id):
        m = re.match(r"Ray worker rank (\d+) of \d+ started \(pid (\d+)", e.message)
        if m:
            found[int(m[1])] = int(m[2])
    return found


@pytest.fixture(scope="module")
def scenario(cluster, tmp_path_factory):
    """Two Ray runs (each Ray Train run costs several processes; on 2 busy cores fewer is faster):
    the oracle MLP, pinned to the second node, and the seed CNN, whose rank 1 is SIGKILLed, then
    stopped and resumed after Ray Train restarted it; plus their local twins and two refusals."""
    store = Store()
    oracle_cfg = TrainConfig(epochs=2, batch_size=64, seed=3, lr=3e-3)
    cnn_cfg = TrainConfig(epochs=CNN_EPOCHS, batch_size=64, seed=1, lr=3e-3)
    out = {"store": store}
    gate = RunGate(os.environ[GATE_ENV])
    gate.hold(30)
    # Ray cannot be imported by the driver: a package named `ray` that refuses to import, first on its path.
    fake = tmp_path_factory.mktemp("no_ray")
    (fake / "ray").mkdir()
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray (hidden by the test)')\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(fake))
        out["no_ray"] = start_run(mlp(), "digits", oracle_cfg, backend=ray_backend(cluster), name="no ray")
    out["gpus"] = start_run(mlp(), "digits", oracle_cfg, backend=ray_backend(cluster, gpus_per_worker=4),
                            name="too many gpus")
    out["oracle_ray"] = start_run(mlp(), "digits", oracle_cfg, backend=ray_backend(cluster, resources={"node2": 1}),
                                  name="oracle ray, second node")
    out["cnn_ray"] = start_run(seed_cnn(), "digits", cnn_cfg, backend=ray_backend(cluster), name="cnn ray")
    out["oracle_local"] = start_run(mlp(), "digits", oracle_cfg, name="oracle local")
    out["cnn_local"] = start_run(seed_cnn(), "digits", cnn_cfg, name="cnn local")

    cnn = out["cnn_ray"]

    def cnn_held_at(step: int, *, restarted: bool = False) -> bool:
        run = store.get_run(cnn)
        assert run.status in ("queued", "running"), f"the CNN run ended ({run.status}: {run.error}) before step {step}"
        events = [e.message for e in store.read_events(cnn)]
        return (gate.held().get(cnn) == step and run_dir(cnn).joinpath("checkpoints", "last.pt").exists()
                and len(rank_pids(store, cnn)) == 2
                and (not restarted or any(m.startswith("Ray Train restarted") for m in events)))

    # Every run waits at step 30 (the oracles too, for a while): the CNN is killed and stopped mid-flight
    # on any machine, never raced.
    wait_for(lambda: cnn_held_at(30), "the CNN run held at step 30 with a checkpoint")
    os.kill(rank_pids(store, cnn)[1], signal.SIGKILL)
    gate.hold(60)  # the restarted workers go past the kill and wait at step 60
    wait_for(lambda: cnn_held_at(60, restarted=True), "the CNN run to restart and wait at step 60")
    stop_run(cnn)
    wait_for(lambda: store.get_run(cnn).status != "running", "the CNN run to stop")
    out["stopped"] = store.get_run(cnn)
    gate.release()
    resume_run(cnn)
    ids = [v for k, v in out.items() if k != "store" and isinstance(v, str)]
    wait_for(lambda: all(store.get_run(r).status not in ("queued", "running") for r in ids), "all runs to end")
    return out


def losses(store: Store, run_id: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in store.read_metrics(run_id, keys=["train_loss"])]


def test_oracle_same_loss_every_step_and_same_weights(scenario):
    store, a, b = scenario["store"], scenario["oracle_local"], scenario["oracle_ray"]
    assert store.get_run(a).status == "completed", store.get_run(a).error
    assert store.get_run(b).status == "completed", store.get_run(b).error
    local, ray_ = losses(store, a), losses(store, b)
    run = store.get_run(b)
    assert run.backend == "ray" and run.workers == 2 and store.get_run(a).backend == "local"
    assert len(local) == run.total_steps == 2 * 20  # 1257 training rows: the last batch of each epoch is uneven
    assert [s for s, _ in ray_] == [s for s, _ in local]
    for (step, x), (_, y) in zip(local, ray_, strict=True):
        assert abs(x - y) <= 1e-5 * abs(x), (step, x, y)
    wa = load_checkpoint(run_dir(a) / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(run_dir(b) / "checkpoints" / "last.pt")["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-5), (k, (wa[k] - wb[k]).abs().max())


def test_workers_on_the_second_node_fill_the_store_and_run_dir(scenario, cluster):
    store, rid = scenario["store"], scenario["oracle_ray"]
    nodes = [e.message for e in store.read_events(rid) if e.message.startswith("Ray worker rank")]
    assert len(nodes) == 2 and all(f"id {cluster['node2'][:12]}" in m for m in nodes), nodes
    assert (run_dir(rid) / "checkpoints" / "last.pt").exists() and (run_dir(rid) / "checkpoints" / "best.pt").exists()
    assert [e["step"] for e in json.loads((run_dir(rid) / "probes" / "index.json").read_text())] == [0, 20, 40]
    assert len((run_dir(rid) / "confusion.jsonl").read_text().splitlines()) == 2
    assert "completed 40 steps" in (run_dir(rid) / "log.txt").read_text()


def test_cnn_survives_a_killed_worker_and_a_stop_each_step_once(scenario):
    store, rid = scenario["store"], scenario["cnn_ray"]
    run = store.get_run(rid)
    stopped = scenario["stopped"]
    assert stopped.status == "stopped" and stopped.step == 61  # rank 0 asks at 60; every rank agrees at 61
    assert run.status == "completed", run.error
    assert run.step == run.total_steps == CNN_EPOCHS * 20
    assert [s for s, _ in losses(store, rid)] == list(range(1, run.total_steps + 1))  # each step once, none lost
    events = [e.message for e in store.read_events(rid)]
    restarts = [m for m in events if m.startswith("Ray Train restarted the worker group after a worker failure")]
    assert len(restarts) == 1 and "training continues from the checkpoint at step" in restarts[0]
    assert "stop requested" in events and any(m.startswith("stopped on request at step") for m in events)
    assert sum(m.startswith("resumed from the checkpoint at step") for m in events) == 2  # restart, then resume


def test_cnn_on_two_workers_charts_probes_inspect_export(scenario):
    from studio import inspection as ins
    from studio.export import to_torchscript

    store, local, ray_ = scenario["store"], scenario["cnn_local"], scenario["cnn_ray"]
    run = store.get_run(ray_)
    assert run.status == "completed", run.error
    acc = store.latest_metrics(ray_)["val_accuracy"]
    assert acc >= 0.85 and abs(acc - store.latest_metrics(local)["val_accuracy"]) <= 0.03
    files = ins.load_run(ray_)
    index = ins.probe_index(files)
    # before training, each epoch end, and the step the run stopped at (then resumed from): each once
    stopped_at = scenario["stopped"].step
    assert [e["step"] for e in index] == sorted({*range(0, run.total_steps + 1, 20), stopped_at})
    assert "conv1" in index[-1]["feature_maps"] and ins.load_probe_array(files, index[-1], "fmap/conv1").ndim == 4
    assert [c["step"] for c in ins.read_confusions(files)] == list(range(20, run.total_steps + 1, 20))
    model = ins.load_model(files, "best")
    ev = ins.evaluate(model, ins.load_run_dataset(files))
    assert abs(ev.accuracy - run.best_metric) < 1e-6
    scripted = torch.jit.load(io.BytesIO(to_torchscript(model)))
    x = ins.load_run_dataset(files).val.x[:4]
    assert torch.allclose(scripted(x), model(x), atol=1e-5)


def test_unsatisfiable_or_unreachable_requests_are_refused_clearly(scenario, cluster):
    store = scenario["store"]
    gpus = store.get_run(scenario["gpus"])
    assert gpus.status == "failed"
    assert gpus.error.startswith(f"the request does not fit the Ray cluster at {cluster['address']!r}: 2 workers x "
                                 "4 GPU = 8 GPUs asked, 0 available")
    no_ray = store.get_run(scenario["no_ray"])
    assert no_ray.status == "failed"
    assert no_ray.error.startswith("the Ray backend needs Ray, which cannot be imported here")
    assert store.list_runs("running") == []  # nothing left running

    before = len(store.list_runs())
    with pytest.raises(TrainError, match=r"could not reach a Ray cluster at '127.0.0.1:1': nothing answers"):
        backend_from_args(argparse.Namespace(backend="ray", ray_address="127.0.0.1:1", workers=2))
    with pytest.raises(TrainError, match=r"address='ray:/x' is not a Ray address; use 'local'"):
        backend_from_args(argparse.Namespace(backend="ray", ray_address="ray:/x", workers=2))
    with pytest.raises(TrainError, match=r"2 workers x 3 GPU = 6 GPUs asked, 0 available; use fewer workers"):
        preflight(RaySettings(address=cluster["address"], workers=2, gpus_per_worker=3))
    assert len(store.list_runs()) == before  # refused before any run was made
    with pytest.raises(TrainError, match=r"3 workers x 1 'node2' = 3 of 'node2' asked, 2 available"):
        check_fits(RaySettings(workers=3, resources={"node2": 1}), ClusterInfo("x", 8, 0, 2, {"node2": 2}))


def test_the_local_path_never_imports_ray():
    code = ("import sys, studio.runs, studio.training.worker, studio.training.cli, studio.__main__, "
            "studio.runs.ray_backend; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_page_where_it_runs_shows_resources_and_refuses_what_does_not_fit(_workspace):
    from tests.test_train_page import launch_button, open_train_page, rerun

    at = open_train_page(_workspace, mlp(), "digits")
    where = at.radio(key="studio.train.backend.where")
    assert where.value == "local" and not launch_button(at).disabled
    where.set_value("ray")
    rerun(at)
    cpus = os.cpu_count()
    shown = " ".join(c.value for c in at.caption)
    assert f"Cluster at this machine (Ray starts when the run does): **{cpus} CPUs, 0 GPUs, 1 node**" in shown
    at.number_input(key="studio.train.backend.gpus").set_value(4.0)
    rerun(at)
    errors = " ".join(e.value for e in at.error)
    assert "the request does not fit the Ray cluster at 'local': 2 workers x 4 GPU = 8 GPUs asked, 0 available" \
        in errors.replace("\\", "")
    assert launch_button(at).disabled
    at.text_input(key="studio.train.backend.address").set_value("ray:/nowhere")
    rerun(at)
    assert "address='ray:/nowhere' is not a Ray address" in " ".join(e.value for e in at.error).replace("\\", "")
    assert launch_button(at).disabled and Store().list_runs() == []
