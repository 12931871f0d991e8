"""The Compare page under AppTest on short finished runs: overlaid curves, final and best metrics,
the settings that differ, and the graph diff that names the changed param."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.runs import Store

ROOT = Path(__file__).resolve().parents[1]
PICKED = "studio.compare.runs"


@pytest.fixture(scope="module")
def runs(trained_runs):
    """The session's trained runs (conftest.trained_runs), in their workspace for this module's tests."""
    workspace, ids = trained_runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(workspace))
        yield ids


@pytest.fixture(autouse=True)
def _workspace(runs):  # share the module's workspace with its runs (overrides conftest's per-test one)
    return None


def open_page(run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    if run_id:
        at.session_state["studio.session.run_id"] = run_id
    at.switch_page("pages/5_Compare.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def settle(at: AppTest) -> AppTest:
    """Rerun until the metrics table's background read has finished (fragments do not tick in AppTest)."""
    for _ in range(200):
        if not any("Reading the final" in c.value for c in at.caption):
            return at
        time.sleep(0.05)
        at.run()
    raise AssertionError("the metrics table never appeared")


def test_two_runs_side_by_side(runs):
    at = open_page(runs["cnn-a"])
    at.multiselect(key=PICKED).set_value([runs["cnn-a"], runs["cnn-b"]]).run()
    settle(at)
    assert not at.exception

    text = "\n".join(m.value for m in at.markdown)
    assert "`` conv1: out_channels 8 -> 12 ``" in text  # the graph diff names the changed param

    settings = at.dataframe[1].value
    assert list(settings.index) == ["lr"] and settings.loc["lr"].tolist() == ["0.003", "0.001"]

    table = at.dataframe[0].value
    assert table["run"].str.startswith(("cnn-a", "cnn-b")).all() and len(table) == 2
    store = Store()
    for run_id, row in zip((runs["cnn-a"], runs["cnn-b"]), table.itertuples(), strict=True):
        _, acc = store.metric_series(run_id, "val_accuracy")
        assert row.steps == 40
        assert table.loc[row.Index, "val_accuracy final"] == acc[-1]
        assert table.loc[row.Index, "val_accuracy best"] == max(acc)
        _, loss = store.metric_series(run_id, "val_loss")
        assert table.loc[row.Index, "val_loss best"] == min(loss)

    charts = [json.loads(e.proto.spec) for e in _walk(at._tree) if getattr(e, "type", None) == "plotly_chart"]
    loss = next(c for c in charts if c["layout"]["title"]["text"] == "Loss")
    names = {t["name"] for t in loss["data"]}
    assert any(n.startswith("cnn-a") for n in names) and any(n.startswith("cnn-b") for n in names)
    # One legend above the grid, none under each chart (with four runs they took half of each chart).
    assert all(c["layout"].get("showlegend") is False for c in charts)
    (legend,) = [e.proto.body for e in _walk(at._tree) if getattr(e, "type", None) == "html"]
    assert "cnn-a" in legend and "cnn-b" in legend and "dashed with markers: validation" in legend


def test_a_different_dataset_and_template_graph_show_as_differences(runs):
    at = open_page()
    at.multiselect(key=PICKED).set_value([runs["cnn-a"], runs["rev"]]).run()
    settle(at)
    assert not at.exception
    settings = at.dataframe[1].value
    assert settings.loc["dataset"].tolist() == ["shapes", "reverse"]
    text = "\n".join(m.value for m in at.markdown)
    assert "`` + embed added ``" in text and "`` - conv1 removed ``" in text


def test_the_picked_runs_and_chart_settings_survive_a_visit_to_another_page(runs):
    at = open_page()
    at.multiselect(key=PICKED).set_value([runs["rev"], runs["cnn-b"]]).run()
    at.toggle(key="studio.compare.log_y").set_value(True).run()
    at.switch_page("pages/4_Inspect.py").run()
    at.switch_page("pages/5_Compare.py").run()
    assert not at.exception
    assert at.multiselect(key=PICKED).value == [runs["rev"], runs["cnn-b"]]
    assert at.toggle(key="studio.compare.log_y").value is True


def test_no_runs_or_one_run_says_what_is_missing(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "empty"))
    at = open_page()
    assert at.info[0].value.startswith("Comparing needs a run of this studio; there are none yet.")
    from studio.templates import list_templates, load_template

    Store().create_run("only", name="only", graph=load_template(list_templates()[0].name).to_dict(), config={},
                       dataset_id="iris", status="completed")
    at = open_page()  # one run: a second one, or one loaded from TensorBoard or MLflow, is what it needs
    assert any(i.value.startswith("Pick a second run, or load one from TensorBoard or MLflow") for i in at.info), \
        [i.value for i in at.info]
    assert at.expander and any("Runs from TensorBoard or MLflow" in e.label for e in at.expander)
    assert not at.get("plotly_chart")


def _walk(node):
    yield node
    for child in (getattr(node, "children", None) or {}).values():
        yield from _walk(child)


def test_long_runs_keep_only_the_drawn_points_in_the_session(runs, tmp_path, monkeypatch):
    import numpy as np

    from studio.runs.history import MetricHistory
    from studio.templates import list_templates, load_template

    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "long"))
    store = Store()
    rng = np.random.default_rng(0)
    n = 30_000
    truth = {}
    for run_id in ("long-a", "long-b"):
        store.create_run(run_id, name=run_id, graph=load_template(list_templates()[0].name).to_dict(),
                         config={"lr": 0.1},
                         dataset_id="iris", status="completed")
        loss = np.exp(-np.arange(n) / 5000) + 0.05 * rng.standard_normal(n)
        rows = [(s + 1, s // 1000, "train", "train_loss", float(v), float(s)) for s, v in enumerate(loss)]
        rows += [(s, s // 1000 - 1, "val", "val_loss", float(loss[s - 1]) + 0.1, float(s))
                 for s in range(1000, n + 1, 1000)]
        rows.sort(key=lambda r: r[0])
        store.write_metrics(run_id, rows)
        truth[run_id] = loss
    at = open_page()
    at.multiselect(key=PICKED).set_value(["long-a", "long-b"]).run()
    settle(at)
    assert not at.exception
    histories = at.session_state["studio.compare.histories"]
    for h in histories.values():
        assert isinstance(h, MetricHistory) and h.points("train_loss") == n
        assert h.held_points() <= 2 * h.groups  # a bounded view per key, not 30,000 rows
    charts = [json.loads(e.proto.spec) for e in _walk(at._tree) if getattr(e, "type", None) == "plotly_chart"]
    loss_chart = next(c for c in charts if c["layout"]["title"]["text"] == "Loss")
    assert all(len(t["x"]) <= 1000 for t in loss_chart["data"])
    raw = next(t for t in loss_chart["data"] if t["name"].startswith("long-a") and t["name"].endswith("(raw)"))
    assert max(raw["y"]) == pytest.approx(truth["long-a"].max(), rel=1e-6)  # the spikes survive
    table = at.dataframe[0].value
    for row, run_id in zip(table.itertuples(), ("long-a", "long-b"), strict=True):
        assert table.loc[row.Index, "train_loss final"] == truth[run_id][-1]  # the raw rows' truth
        assert table.loc[row.Index, "train_loss best"] == truth[run_id].min()


def test_a_run_whose_stored_graph_was_damaged_by_hand_is_compared_without_its_graph(runs):
    store = Store()
    kept = store.connect().execute("SELECT graph FROM runs WHERE id=?", (runs["cnn-b"],)).fetchone()[0]
    store.connect().execute("UPDATE runs SET graph='{oops' WHERE id=?", (runs["cnn-b"],))
    try:
        at = open_page()
        at.multiselect(key=PICKED).set_value([runs["cnn-a"], runs["cnn-b"]]).run()
        settle(at)
        assert not at.exception
        assert any("Cannot compare the graphs" in w.value for w in at.warning)
        assert at.dataframe[0].value["run"].str.startswith(("cnn-a", "cnn-b")).all()  # metrics still compared
    finally:
        store.connect().execute("UPDATE runs SET graph=? WHERE id=?", (kept, runs["cnn-b"]))
