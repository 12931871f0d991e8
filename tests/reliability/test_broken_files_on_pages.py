"""Pages and Inspect with broken files: a store that is a directory on Train/Inspect/Compare, damaged
run.json / config.json / probes index.json, a PNG declaring 20000x20000 pixels, a graph the canvas
cannot draw, and run or class names written as markup, which figures show as text."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from components.figures.charts import Curve, class_balance_figure, metric_figure
from components.figures.inspect_charts import confusion_figure
from studio import inspection as ins
from studio.errors import DataError, TrainError
from studio.graph import parse_graph, save_graph

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = '<a href="https://evil.example">x</a><span style="font-size:300px">big</span>'


@pytest.mark.parametrize("page", ["pages/3_Train.py", "pages/4_Inspect.py", "pages/5_Compare.py"])
def test_a_store_that_is_a_directory_is_shown_as_its_message(_workspace, page):
    (_workspace / "studio.db").mkdir(parents=True)
    at = AppTest.from_file(str(ROOT / page), default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("a directory is in the way" in e.value for e in at.error), [e.value for e in at.error]


def fake_run(workspace: Path) -> Path:
    directory = workspace / "runs" / "r1"
    (directory / "probes").mkdir(parents=True)
    doc = {"format": "studio.graph/1", "name": "g", "nodes": [{"id": "input", "type": "Input",
                                                               "params": {"shape": [4]}}], "edges": []}
    (directory / "graph.json").write_text(json.dumps(doc))
    (directory / "config.json").write_text(json.dumps({"epochs": 1}))
    (directory / "run.json").write_text(json.dumps({"run_id": "r1", "dataset_id": "iris"}))
    return directory


@pytest.mark.parametrize(("name", "content", "message"), [
    ("run.json", "{not json", r"run\.json cannot be read"),
    ("run.json", "[1, 2]", r"run\.json holds a JSON list"),
    ("run.json", '{"dataset_id": 7}', r"has no dataset_id string"),
    ("config.json", "", r"config\.json cannot be read"),
    ("config.json", '{"epochs": "many", "bogus": 1}', r"config\.json is damaged"),
])
def test_damaged_run_files_are_train_errors(_workspace, name, content, message):
    directory = fake_run(_workspace)
    (directory / name).write_text(content)
    with pytest.raises(TrainError, match=message):
        ins.load_run("r1")


@pytest.mark.parametrize("content", ["{oops", '{"a": 1}', "[" * 5000 + "]" * 5000])
def test_a_damaged_probe_index_is_a_train_error(_workspace, content):
    directory = fake_run(_workspace)
    (directory / "probes" / "index.json").write_text(content)
    with pytest.raises(TrainError, match=r"probe index .* (is damaged|is not a list)"):
        ins.probe_index(ins.load_run("r1"))
    (directory / "probes" / "index.json").write_text(json.dumps([{"file": "../x"}, 3, {"nofile": 1}]))
    assert ins.probe_index(ins.load_run("r1")) == []


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb for whoever trusts it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize(("data", "message"), [
    (png_declaring(20000, 20000), r"could not be read as an image \(Image size \(400000000 pixels\) exceeds"),
    (png_declaring(8000, 8000), r"the image is 8000x8000 pixels, more than the 40,000,000 allowed"),
    (png_declaring(3, 3)[:30], r"could not be read as an image"),
])
def test_inspect_refuses_decompression_bombs_and_broken_images_as_data_errors(data, message):
    with pytest.raises(DataError, match=message):
        ins.open_image(io.BytesIO(data))


def test_inspect_opens_a_real_image():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (5, 4), (10, 20, 30)).save(buf, format="PNG")
    assert ins.open_image(io.BytesIO(buf.getvalue())).size == (5, 4)


def test_run_and_class_names_reach_figures_as_text_not_markup():
    fig = metric_figure([Curve(HOSTILE, "train", np.arange(3), np.ones(3)),
                         Curve("plain", "train", np.arange(3), np.ones(3))], title="loss")
    names = [t.name for t in fig.data]
    assert all("<" not in n for n in names) and any("&lt;a href=" in n for n in names), names
    balance = class_balance_figure([HOSTILE, "b"], {"train": [3, 4]})
    assert list(balance.data[0].x)[0].startswith("&lt;a href=") and balance.data[0].name == "train"
    confusion = confusion_figure(np.eye(2, dtype=int), ["<b>cat</b>", "dog"])
    assert "<b>" not in json.dumps(confusion.to_plotly_json()["data"])
    assert metric_figure([Curve("a&b", "train", np.arange(2), np.ones(2))], title="t").data[0].name.count("&amp;") <= 1


def test_the_build_page_offers_download_and_discard_when_the_canvas_cannot_draw(_workspace, monkeypatch):
    graph = parse_graph({"format": "studio.graph/1", "name": "weird", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [4]}, "position": {"x": 0, "y": 0}}], "edges": []})
    save_graph(graph, _workspace / "graphs" / "_autosave.json")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    from components.build import canvas

    def cannot_draw(*a, **k):
        raise ValueError("cannot convert float NaN to integer")

    monkeypatch.setattr(canvas, "render", cannot_draw)
    at.switch_page("pages/1_Build.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("cannot draw the graph weird" in e.value for e in at.error)
    at.button(key="studio.rescue.discard").click().run()
    assert not at.exception
    assert at.session_state["studio.session.graph"].name != "weird"
