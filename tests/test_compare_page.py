"""The Compare page under AppTest on short finished runs: overlaid curves, final and best metrics,
the settings that differ, and the graph diff that names the changed param."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.runs import Store
from tests.test_inspect import make_runs

ROOT = Path(__file__).resolve().parents[1]
PICKED = "studio.compare.runs"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("STUDIO_WORKSPACE", str(tmp_path_factory.mktemp("compare_page") / "workspace"))
    mp.setenv("STUDIO_MAX_RUNS", "3")
    yield make_runs()
    mp.undo()


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


def test_two_runs_side_by_side(runs):
    at = open_page(runs["cnn-a"])
    at.multiselect(key=PICKED).set_value([runs["cnn-a"], runs["cnn-b"]]).run()
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
    names = {t["name"] for t in loss["data"] if t.get("showlegend", True) is not False}
    assert any(n.startswith("cnn-a") for n in names) and any(n.startswith("cnn-b") for n in names)


def test_a_different_dataset_and_template_graph_show_as_differences(runs):
    at = open_page()
    at.multiselect(key=PICKED).set_value([runs["cnn-a"], runs["rev"]]).run()
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


def test_fewer_than_two_runs(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "empty"))
    at = open_page()
    assert at.info[0].value.startswith("Comparing needs at least two runs; there are 0.")


def _walk(node):
    yield node
    for child in (getattr(node, "children", None) or {}).values():
        yield from _walk(child)
