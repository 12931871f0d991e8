"""TensorBoard and MLflow, in and out (studio.tracking): what a run logs live or exports reads back with
the other tool's own reader (tensorboard's EventAccumulator, MlflowClient) as the values the run store
holds, at the same steps; a killed and resumed run leaves one history; bad inputs say what to do.

One run trained by the real CLI (one subprocess) serves the readers; the kill and resume run and the
run whose log directory fails are real workers too (iris, a 131-parameter MLP: seconds each)."""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np
import pytest

from studio.runs import Store, list_runs, reconcile, resume_run, start_run
from studio.tracking import TrackingError
from studio.tracking.common import launch_tags, require
from studio.training import TrainConfig
from tests.conftest import chain, train_here, wait_until

IRIS_MLP = chain(("input", "Input", {"shape": [4]}), ("fc1", "Linear", {"out_features": 16}), ("relu", "ReLU", None),
                 ("fc2", "Linear", {"out_features": 3}), name="iris-mlp")


def accumulator(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(directory), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    ea.Reload()
    return ea


def assert_same_as_store(ea, store: Store, run_id: str) -> None:
    """Every key of the store is a TensorBoard scalar with the same steps and values, each step once.
    TensorBoard's scalar format is float32 (`simple_value`): each value is the store's rounded to float32,
    exactly (the conversion is deterministic, so no tolerance is needed)."""
    keys = store.metric_keys(run_id)
    assert keys and set(keys) <= set(ea.Tags()["scalars"])
    for key in keys:
        rows = store.read_metrics(run_id, keys=[key])
        events = ea.Scalars(key)
        assert [e.step for e in events] == [m.step for m in rows], key  # same steps, each once, in order
        np.testing.assert_array_equal(np.array([e.value for e in events], np.float32),
                                      np.array([m.value for m in rows], np.float32), err_msg=key)
        assert [e.wall_time for e in events] == pytest.approx([m.wall_time for m in rows], abs=1e-6)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    ws = tmp_path_factory.mktemp("tracking") / "workspace"
    mp.setenv("STUDIO_WORKSPACE", str(ws))
    yield ws
    mp.undo()


@pytest.fixture(autouse=True)
def _workspace(workspace, monkeypatch):  # overrides conftest's per-test workspace: these tests share one
    monkeypatch.setenv("STUDIO_WORKSPACE", str(workspace))
    return workspace


@pytest.fixture(scope="module")
def cli_run(workspace, tmp_path_factory):
    """(run_id, TensorBoard root) of a run trained by `python -m studio train ... --tensorboard DIR`."""
    import subprocess

    tmp = tmp_path_factory.mktemp("cli")
    graph = tmp / "iris.json"
    graph.write_text(json.dumps(IRIS_MLP))
    tb = tmp / "tb"
    env = {**os.environ, "STUDIO_WORKSPACE": str(workspace)}
    done = subprocess.run([sys.executable, "-m", "studio", "train", str(graph), "--data", "iris", "--epochs", "3",
                           "--batch-size", "16", "--set", "probe_every=3", "--tensorboard", str(tb), "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])["run_id"], tb


# ---- live TensorBoard ---------------------------------------------------------------------------------

def test_live_tensorboard_reads_back_as_the_store(cli_run):
    run_id, tb = cli_run
    store = Store()
    ea = accumulator(tb / run_id)
    assert_same_as_store(ea, store, run_id)
    assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(ea.Tags()["scalars"])
    hists = set(ea.Tags()["histograms"])
    assert {"weights/fc1.weight", "gradients/fc1.weight", "weights/fc2.bias"} <= hists
    steps = [h.step for h in ea.Histograms("weights/fc1.weight")]
    assert steps[0] == 0 and steps[-1] == store.get_run(run_id).step and 3 in steps  # start, probe_every, end
    from studio.runs import run_dir

    with np.load(run_dir(run_id) / "probes" / "step_00000003.npz") as z:  # the Inspect page's histogram
        at_3 = next(h for h in ea.Histograms("gradients/fc1.weight") if h.step == 3)
        assert list(at_3.histogram_value.bucket) == z["ghist/fc1.weight"].tolist()
    text = ea.Tensors("graph/summary/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| fc1 | Linear | (16,) | 80 |" in text and "131 parameters" in text
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = ea.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["dataset"].string_value == "iris" and start.hparams["batch_size"].number_value == 16
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"train_loss", "val_loss", "val_accuracy"}
    events = [e.message for e in store.read_events(run_id)]
    assert any(m.startswith(f"TensorBoard events go to {tb / run_id}") for m in events)


def test_killed_and_resumed_run_leaves_one_tensorboard_history(gate, tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    tb = tmp_path / "tb"
    store = Store()
    cfg = TrainConfig(max_steps=40, batch_size=8, checkpoint_every=10, eval_every=5, probes=False, seed=3)
    gate.hold(25)
    run_id = start_run(IRIS_MLP, "iris", cfg, store=store, tags=launch_tags(tb))
    gate.wait_held("the run held at step 25", run_id)
    os.kill(store.get_run(run_id).pid, signal.SIGKILL)
    wait_until(lambda: reconcile(store) and store.get_run(run_id).status == "lost", "the killed run marked lost")
    gate.release()
    resume_run(run_id, store=store)
    wait_until(lambda: store.get_run(run_id).status not in ("queued", "running"), "the resumed run to end")
    assert store.get_run(run_id).status == "completed"

    files = sorted((tb / run_id).glob("events.out.tfevents.*"))
    assert len(files) == 2  # the first attempt's and the resumed one's
    written = [e.step for f in files for e in EventFileLoader(str(f)).Load()
               if e.HasField("summary") and any(v.tag == "train_loss" for v in e.summary.value)]
    # Steps 21..24 were written by the killed attempt and again after the resume from step 20's checkpoint:
    assert sorted(set(written)) == list(range(1, 41)) and len(written) == 44
    assert_same_as_store(accumulator(tb / run_id), store, run_id)  # ... and TensorBoard shows each once


def test_unwritable_log_directory_is_refused_at_launch_and_never_harms_a_run(tmp_path, capsys):
    from studio.__main__ import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(TrackingError, match="is a file, not a folder"):
        launch_tags(blocker)
    with pytest.raises(TrackingError, match=r"cannot write TensorBoard event files in .*a-file/logs.*choose a folder"):
        launch_tags(blocker / "logs")
    with pytest.raises(TrackingError, match="built for the local backend only"):
        launch_tags(tmp_path / "tb", "ray")
    assert launch_tags("  ") == {} and launch_tags(None) == {}

    graph = tmp_path / "g.json"
    graph.write_text(json.dumps(IRIS_MLP))
    before = len(list_runs())
    assert main(["train", str(graph), "--data", "iris", "--tensorboard", str(blocker / "logs")]) == 1
    assert "cannot write TensorBoard event files" in capsys.readouterr().err
    assert len(list_runs()) == before  # no run was created

    # A folder that fails after launch (here: a run told to write under a file): a warning, and the run trains.
    store = Store()
    run_id = train_here(IRIS_MLP, "iris", TrainConfig(max_steps=4, probes=False), store=store,
                        tags={"tensorboard": str(blocker / "logs")})  # the worker's code, in this process
    assert store.get_run(run_id).status == "completed" and store.get_run(run_id).step == 4
    warnings = [e.message for e in store.read_events(run_id) if e.level == "warning"]
    assert any(m.startswith("TensorBoard logging is off for this run: cannot write event files") for m in warnings)


def test_a_missing_optional_package_is_named_with_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # an import of it now fails as if not installed
    with pytest.raises(TrackingError, match=r"'tensorboardX' is needed to write TensorBoard event files.*"
                                            r"pip install tensorboardX"):
        require("tensorboardX")
    with pytest.raises(TrackingError, match="pip install tensorboardX"):  # before any run exists
        launch_tags("tb-logs")
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(TrackingError, match="pip install mlflow-skinny SQLAlchemy alembic"):
        require("mlflow")


# ---- export ---------------------------------------------------------------------------------------------

def test_export_to_tensorboard_reads_back_and_replaces_on_reexport(cli_run, tmp_path):
    from studio.tracking.export import export_run

    run_id, _ = cli_run
    store = Store()
    first = export_run(run_id, "tensorboard", str(tmp_path / "out"))
    assert first.action == "written" and first.metrics == len(list(store.metric_rows(run_id)))
    again = export_run(run_id, "tensorboard", str(tmp_path / "out"))
    assert again.action == "replaced" and len(list((tmp_path / "out" / run_id).glob("events.*"))) == 1
    ea = accumulator(tmp_path / "out" / run_id)
    assert_same_as_store(ea, store, run_id)
    assert "weights/fc1.weight" in ea.Tags()["histograms"]  # from the probe snapshots


def test_export_to_mlflow_reads_back_with_mlflow_client_and_does_not_duplicate(cli_run, tmp_path, capsys):
    from mlflow import MlflowClient

    from studio.__main__ import main

    run_id, _ = cli_run
    store = Store()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["runs", "export", run_id, "--to", "mlflow", uri, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["action"] == "written"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("Neural Studio")
    found = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in found] == [out["mlflow_run_id"]]
    run = found[0]
    record = store.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == record.name
    assert run.data.tags["studio.run_id"] == run_id and run.data.tags["studio.backend"] == "local"
    params = run.data.params
    assert params["dataset"] == "iris" and params["graph.name"] == "iris-mlp" and params["graph.total_params"] == "131"
    assert params["batch_size"] == "16" and set(record.config) - {"version"} <= set(params)
    for key in store.metric_keys(run_id):
        rows = store.read_metrics(run_id, keys=[key])
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
        assert [(m.step, m.value, m.timestamp) for m in history] == \
               [(r.step, r.value, int(round(r.wall_time * 1000))) for r in rows], key  # float64 both: exact
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"graph.json", "config.json", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]
    graph_copy = client.download_artifacts(run.info.run_id, "graph.json", str(tmp_path))
    assert json.loads(open(graph_copy).read())["name"] == "iris-mlp"

    from studio.tracking.external import read_mlflow

    for ref in (run.info.run_id, record.name):  # Compare's import reads it back, by id or by name
        back = read_mlflow(uri, ref)
        assert back.label == f"{record.name} [external: mlflow]"
        steps, values, _ = back.series["val_accuracy"]
        rows = store.read_metrics(run_id, keys=["val_accuracy"])
        assert steps.tolist() == [r.step for r in rows] and values.tolist() == [r.value for r in rows]
    with pytest.raises(TrackingError, match="0 MLflow runs are named 'no such run'"):
        read_mlflow(uri, "no such run")

    assert main(["runs", "export", run_id, "--to", "mlflow", uri]) == 0
    assert "unchanged since; nothing written" in capsys.readouterr().out
    store.update_run(run_id, ended=record.ended + 1)  # the studio run changed since: the export is replaced
    assert main(["runs", "export", run_id, "--to", "mlflow", uri]) == 0
    assert "its earlier export was replaced" in capsys.readouterr().out
    found = client.search_runs([exp.experiment_id])
    assert len(found) == 1 and found[0].info.run_id != out["mlflow_run_id"]


def test_export_bad_targets_say_what_to_do_and_leave_the_run_alone(cli_run, tmp_path, capsys):
    from studio.__main__ import main
    from studio.tracking.export import export_run

    run_id, _ = cli_run
    store = Store()
    before = (store.get_run(run_id).status, list(store.metric_rows(run_id)))
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingError, match=rf"cannot reach the MLflow tracking server at 'http://127.0.0.1:{port}'"):
        export_run(run_id, "mlflow", f"http://127.0.0.1:{port}")
    with pytest.raises(TrackingError, match="the folder .*missing.* does not exist"):
        export_run(run_id, "mlflow", f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")
    with pytest.raises(TrackingError, match="file store, which MLflow 3 refuses"):
        export_run(run_id, "mlflow", str(tmp_path / "mlruns"))
    (tmp_path / "blocker").write_text("")
    with pytest.raises(TrackingError, match="is a file, not a folder"):
        export_run(run_id, "tensorboard", str(tmp_path / "blocker"))
    assert main(["runs", "export", run_id, "--to", "wandb", "x"]) == 2
    assert "use --to tensorboard DIR or --to mlflow TRACKING_URI" in capsys.readouterr().err
    assert (store.get_run(run_id).status, list(store.metric_rows(run_id))) == before
    assert not list((tmp_path / "blocker").parent.glob("mlartifacts"))


# ---- the pages (AppTest) ---------------------------------------------------------------------------------

def _rerun(at):
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _poll(at, done, what: str):
    deadline = __import__("time").monotonic() + 240
    while not done(_rerun(at)):
        assert __import__("time").monotonic() < deadline, f"gave up waiting for {what}"
        __import__("time").sleep(0.3)


def test_train_page_logs_to_tensorboard_and_exports_from_the_runs_table(workspace, tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from components.train.tracking_panel import EXPORTING, TB_DIR

    (workspace / "graphs").mkdir(parents=True, exist_ok=True)
    (workspace / "graphs" / "_autosave.json").write_text(json.dumps(IRIS_MLP))
    (workspace / "graphs" / "_autosave.meta.json").write_text(json.dumps({"dataset_id": "iris"}))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/3_Train.py")
    _rerun(at)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    before = {r.id for r in list_runs()}
    at.number_input(key="studio.train.cfg.epochs").set_value(1)
    at.text_input(key=TB_DIR).set_value(str(blocker / "tb"))
    next(b for b in at.button if b.label == "Launch run").click()
    _rerun(at)
    assert any("The run was not launched" in e.value and "cannot write TensorBoard event files" in e.value.replace(
        "\\", "") for e in at.error)
    assert {r.id for r in list_runs()} == before

    at.text_input(key=TB_DIR).set_value(str(tmp_path / "tb"))
    next(b for b in at.button if b.label == "Launch run").click()
    _rerun(at)
    run_id = at.session_state["studio.train.picked_runs"][0]
    assert run_id not in before and Store().get_run(run_id).tags == {"tensorboard": str(tmp_path / "tb")}
    _poll(at, lambda a: not Store().get_run(run_id).active, "the run launched from the page to end")
    assert set(accumulator(tmp_path / "tb" / run_id).Tags()["scalars"]) >= {"train_loss", "val_accuracy"}

    _rerun(at)  # the page as it is now the run has ended (the poll's last rerun may predate the end)
    at.button(key=f"studio.train.run.{run_id}.tracking_export").click()
    _rerun(at)
    at.text_input(key=f"{EXPORTING}.target.{run_id}").set_value(str(tmp_path / "exported"))
    at.button(key=f"{EXPORTING}.go.{run_id}").click()
    _rerun(at)
    assert any(f"Exported {len(list(Store().metric_rows(run_id)))} metric rows of run {run_id}" in s.value.replace(
        "\\", "") for s in at.success), [s.value for s in at.success] + [e.value for e in at.error]
    assert list((tmp_path / "exported" / run_id).glob("events.out.tfevents.*"))


def test_compare_overlays_a_tensorboard_run_marked_external(cli_run, tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest
    from tensorboardX import SummaryWriter

    from components.train.tracking_panel import EXTERNAL

    run_id, _ = cli_run
    with SummaryWriter(str(tmp_path / "logs" / "resnet-baseline")) as w:  # as a PyTorch user logs
        for step in range(1, 11):
            w.add_scalar("Loss/train", 1.0 / step, step)
    (tmp_path / "empty").mkdir()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.session_state["studio.session.run_id"] = run_id
    at.switch_page("pages/5_Compare.py")
    _rerun(at)
    at.multiselect(key="studio.compare.runs").set_value([run_id])  # one studio run: the external one is the other
    _rerun(at)
    assert any("Pick a second run, or load one from TensorBoard or MLflow" in i.value for i in at.info)
    assert not at.get("plotly_chart")
    at.text_input(key=f"{EXTERNAL}.dir").set_value(str(tmp_path / "empty"))
    at.button(key=f"{EXTERNAL}.load").click()
    _rerun(at)
    errors = [e.value.replace("\\", "") for e in at.error]
    assert any("Nothing was loaded: no TensorBoard event files" in e for e in errors), errors
    at.text_input(key=f"{EXTERNAL}.dir").set_value(str(tmp_path / "logs"))
    at.button(key=f"{EXTERNAL}.load").click()
    _rerun(at)
    loss = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["layout"]["title"]["text"] == "Loss")
    external = [t for t in loss["data"] if "resnet-baseline [external: tensorboard]" in t["name"]]
    assert external and external[-1]["x"][-1] == 10
    assert any(run_id[-6:] in t["name"] for t in loss["data"])  # beside the studio run's own curve
    assert Store().metric_keys(run_id) and not any("resnet" in r.name for r in list_runs())  # nothing stored
