"""The Train page under AppTest: the form refuses an invalid config with its message, launch is
refused while the graph does not fit, and a real run (a tiny MLP on iris, in a worker process)
appears in the runs table with its chart's step growing across reruns, then stops on request.

Fragments do not tick by themselves under AppTest, so each check reruns the page; waits on the
background worker are bounded polls, never wall-clock assertions on speed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from components.train.run_table import format_duration, progress, status_badge
from studio.runs import Store, list_runs, stop_run
from tests.conftest import chain

ROOT = Path(__file__).resolve().parents[1]
CFG = "studio.train.cfg."
TINY_MLP = chain(("input", "Input", {"shape": [4]}), ("fc1", "Linear", {"out_features": 16}), ("relu", "ReLU", None),
                 ("fc2", "Linear", {"out_features": 3}), name="tiny-mlp")
POLL_S = 90  # bound on every wait for the worker (a loaded 2-core machine is slow, not broken)


def plain(text: str) -> str:
    return text.replace("\\", "")


def open_train_page(workspace: Path, graph: dict, dataset_id: str | None = "iris") -> AppTest:
    (workspace / "graphs").mkdir(parents=True, exist_ok=True)
    (workspace / "graphs" / "_autosave.json").write_text(json.dumps(graph))
    (workspace / "graphs" / "_autosave.meta.json").write_text(json.dumps({"dataset_id": dataset_id}))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/3_Train.py")
    return rerun(at)


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def launch_button(at: AppTest):
    return next(b for b in at.button if b.label == "Launch run")


def loss_chart_steps(at: AppTest) -> int:
    """The last step on the loss chart's first trace (plotly sends numpy arrays as base64)."""
    charts = at.get("plotly_chart")
    if not charts:
        return 0
    fig = json.loads(charts[0].proto.spec)
    assert fig["layout"]["title"]["text"] == "Loss"
    x = fig["data"][0]["x"]  # a plain list, as the browser sees it
    return int(x[-1]) if x else 0


def poll(at: AppTest, done, what: str):
    deadline = time.monotonic() + POLL_S
    while True:
        rerun(at)
        result = done(at)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {POLL_S} s")
        time.sleep(0.5)


def test_form_is_generated_from_the_config_and_refuses_an_invalid_one(_workspace):
    at = open_train_page(_workspace, TINY_MLP)
    for name in ("optimizer", "lr", "epochs", "batch_size", "schedule", "betas", "grad_clip", "seed"):
        assert f"{CFG}{name}" in at.session_state, name
    at.number_input(key=f"{CFG}lr").set_value(0.0)
    at.text_input(key=f"{CFG}betas").set_value("0.9, 1.5")
    launch_button(at).click()
    rerun(at)
    text = plain(at.error[0].value)
    assert "The run was not launched" in text
    assert "lr=0.0 is out of range; expected lr > 0" in text
    assert "betas=[0.9, 1.5] has the entry 1.5, which is out of range; expected betas < 1" in text
    assert Store(_workspace / "studio.db").list_runs() == []


def test_the_form_keeps_its_settings_across_a_visit_to_another_page(_workspace):
    at = open_train_page(_workspace, TINY_MLP)
    at.number_input(key=f"{CFG}lr").set_value(0.05)
    at.selectbox(key=f"{CFG}optimizer").set_value("sgd")
    at.text_input(key=f"{CFG}betas").set_value("0.9, 1.5")  # refused: nothing is launched
    launch_button(at).click()
    rerun(at)
    assert "The run was not launched" in plain(at.error[0].value)
    at.switch_page("pages/4_Inspect.py")
    rerun(at)
    at.switch_page("pages/3_Train.py")
    rerun(at)
    assert at.number_input(key=f"{CFG}lr").value == 0.05
    assert at.selectbox(key=f"{CFG}optimizer").value == "sgd"
    assert at.text_input(key=f"{CFG}betas").value == "0.9, 1.5"


def test_launch_is_refused_while_the_graph_does_not_fit(_workspace):
    wrong = chain(("input", "Input", {"shape": [4]}), ("fc", "Linear", {"out_features": 10}), name="wrong")
    at = open_train_page(_workspace, wrong)
    assert launch_button(at).disabled
    text = plain(" ".join(e.value for e in at.error))
    assert "Launch is not possible yet" in text and "set out_features=3" in text
    broken = chain(("input", "Input", {"shape": [4]}), ("flat", "Conv2d", {"out_channels": 2}), name="broken")
    at = open_train_page(_workspace, broken)  # no output shape: the card says so (it printed "None")
    card = plain(" ".join(c.value for c in at.caption))
    assert "output unknown until the errors are fixed" in card and "None" not in card, card

    at = open_train_page(_workspace, TINY_MLP, dataset_id=None)
    assert launch_button(at).disabled
    assert "No dataset is chosen" in plain(at.error[0].value)

    (_workspace / "graphs" / "_autosave.meta.json").write_text(  # options that iris does not take
        json.dumps({"dataset_id": "iris", "dataset_options": {"target": "input", "seq_len": 5}}))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/3_Train.py")
    rerun(at)
    assert launch_button(at).disabled
    assert "The dataset options do not apply (dataset 'iris' has no option 'seq_len'" in plain(at.error[0].value)


def test_launch_watch_grow_stop_and_reopen(_workspace):
    at = open_train_page(_workspace, TINY_MLP)
    assert not launch_button(at).disabled
    assert next(e for e in at.expander if e.label == "New run").proto.expanded  # nothing launched yet
    at.number_input(key=f"{CFG}epochs").set_value(2000)
    at.number_input(key=f"{CFG}batch_size").set_value(8)
    at.number_input(key=f"{CFG}lr").set_value(0.01)
    at.text_input(key="studio.train.run_name").set_value("iris smoke")
    launch_button(at).click()
    rerun(at)
    assert any("Launched" in s.value for s in at.success)
    run_id = at.session_state["studio.train.picked_runs"][0]
    try:
        assert any(":blue-badge[running] iris smoke" in m.value or ":gray-badge[queued] iris smoke" in m.value
                   for m in at.markdown)
        first = poll(at, loss_chart_steps, "the first points on the loss chart")
        later = poll(at, lambda a: (s := loss_chart_steps(a)) > first and s, "the loss chart to grow")
        assert later > first
        new_run = next(e for e in at.expander if e.label == "New run")
        assert new_run.proto.expanded is False  # this graph was just launched on this dataset
        titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
        assert titles[:1] == ["Loss"] and {"Accuracy", "Learning rate", "Throughput (samples/s)"} <= set(titles)
        bar = next(p for p in at.get("progress") if "step" in p.proto.text)
        assert f"/ {2000 * 14:,}" in bar.proto.text and "ETA" in bar.proto.text

        at.button(key=f"studio.train.run.{run_id}.stop").click()
        rerun(at)
        assert any("Stop requested" in s.value for s in at.success)
        poll(at, lambda a: any(":orange-badge[stopped] iris smoke" in m.value for m in a.markdown), "stopped")
        assert at.button(key=f"studio.train.run.{run_id}.resume").label == "Resume"
    finally:
        if any(r.active for r in list_runs()):
            stop_run(run_id)
            deadline = time.monotonic() + POLL_S
            while any(r.active for r in list_runs()) and time.monotonic() < deadline:
                time.sleep(0.3)

    # A new session (a reopened tab) shows the run as the store has it: nothing lived in the old session.
    again = open_train_page(_workspace, TINY_MLP)
    assert any(":orange-badge[stopped] iris smoke" in m.value for m in again.markdown)
    assert loss_chart_steps(again) >= later
    events = plain(" ".join(m.value for m in again.markdown))
    assert "stop requested" in events and "stopped on request" in events
    assert any(b.label == "last.pt" for b in again.get("download_button"))


def test_rename_and_delete_ask_and_act(_workspace):
    store = Store(_workspace / "studio.db")
    store.create_run("r1", name="old name", graph=TINY_MLP, config={}, dataset_id="iris", status="stopped")
    at = open_train_page(_workspace, TINY_MLP)
    at.button(key="studio.train.run.r1.rename").click()
    rerun(at)
    at.text_input(key="studio.train.rename_text.r1").set_value("new name")
    at.button(key="studio.train.run.r1.rename_save").click()
    rerun(at)
    assert store.get_run("r1").name == "new name"
    at.button(key="studio.train.run.r1.delete").click()
    rerun(at)
    assert "Delete new name" in plain(at.warning[0].value) and store.has_run("r1")
    at.button(key="studio.train.run.r1.delete_yes").click()
    rerun(at)
    assert not store.has_run("r1")
    assert any("No runs yet" in c.value for c in at.caption)


def test_open_in_inspect_sets_the_run(_workspace):
    store = Store(_workspace / "studio.db")
    store.create_run("r1", name="a run", graph=TINY_MLP, config={}, dataset_id="iris", status="completed")
    at = open_train_page(_workspace, TINY_MLP)
    at.button(key="studio.train.run.r1.inspect").click()
    rerun(at)
    assert at.session_state["studio.session.run_id"] == "r1"
    assert at.title[0].value == "Inspect"


@pytest.mark.parametrize("seconds, text", [(None, "–"), (5, "5 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_progress_and_badges():
    from studio.runs.store import RunRecord

    run = RunRecord("r", "r", "running", 0.0, 100.0, None, 1, 100.0, {}, {}, "iris", None, None, None, None, 250,
                    1000)
    fraction, text = progress(run, now=110.0)
    assert fraction == 0.25 and text == "step 250 / 1,000 · ETA 30 s"
    assert status_badge("failed") == ":red-badge[failed]"


def test_form_defaults_come_from_the_template_then_the_task(_workspace):
    from studio.templates import list_templates, load_template

    template = next(t for t in list_templates() if t.config and t.dataset)
    (_workspace / "graphs").mkdir(parents=True, exist_ok=True)
    (_workspace / "graphs" / "_autosave.json").write_text(load_template(template.name).to_json())
    (_workspace / "graphs" / "_autosave.meta.json").write_text(
        json.dumps({"template": template.name, "dataset_id": template.dataset}))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/3_Train.py")
    rerun(at)
    for name, value in template.config.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value  # lists are typed as text
        assert at.session_state[f"{CFG}{name}"] == shown, name


def test_the_autoencoder_template_opened_in_build_trains_on_its_reconstruction_form(_workspace):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/1_Build.py")
    rerun(at)
    at.session_state["studio.build.tab"] = "Templates"
    rerun(at)
    at.button(key="studio.build.template.conv_autoencoder").click()
    rerun(at)
    at.switch_page("pages/3_Train.py")
    rerun(at)
    assert not launch_button(at).disabled, [plain(e.value) for e in at.error]
    assert not at.error
    assert any("shapes · target = input (reconstruction) · image_size = 28" in plain(m.value) for m in at.markdown)
    meta = json.loads((_workspace / "graphs" / "_autosave.meta.json").read_text())
    assert meta["dataset_options"] == {"image_size": 28, "target": "input"}  # a refreshed tab gets them back

    at.number_input(key=f"{CFG}max_steps").set_value(2)
    at.number_input(key=f"{CFG}batch_size").set_value(8)
    launch_button(at).click()
    rerun(at)
    assert any("Launched" in s.value for s in at.success), [plain(e.value) for e in at.error]
    run_id = at.session_state["studio.train.picked_runs"][0]
    store = Store(_workspace / "studio.db")
    run_json = json.loads((_workspace / "runs" / run_id / "run.json").read_text())
    assert (run_json["dataset_id"], run_json["dataset_options"]) == ("shapes", {"image_size": 28, "target": "input"})
    deadline = time.monotonic() + POLL_S
    while store.get_run(run_id).status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.3)
    run = store.get_run(run_id)
    assert (run.status, run.error) == ("completed", None)
    assert "val_mae" in store.latest_metrics(run_id)  # trained as regression: the image is the target
