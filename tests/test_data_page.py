"""The Data page under AppTest: facts and previews per kind of data, the class-balance chart,
"Use with current graph" with the fit shown at once, uploads listed and deleted, and the offline
download error."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from components.data import data_view
from studio.data import get_dataset, upload_csv
from studio.graph import load_graph
from tests.conftest import chain

ROOT = Path(__file__).resolve().parents[1]
PICK = "studio.data.dataset"


def plain(text: str) -> str:
    """Text as the user reads it (pages escape markdown specials with backslashes)."""
    return text.replace("\\", "")


def open_data_page(workspace: Path, graph: dict | None = None) -> AppTest:
    if graph is not None:
        (workspace / "graphs").mkdir(parents=True, exist_ok=True)
        (workspace / "graphs" / "_autosave.json").write_text(json.dumps(graph))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/2_Data.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def pick(at: AppTest, dataset_id: str) -> AppTest:
    at.selectbox(key=PICK).set_value(dataset_id)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


MLP_28 = chain(("input", "Input", {"shape": [1, 28, 28]}), ("flat", "Flatten", None),
               ("fc", "Linear", {"out_features": 10}), name="mlp")


def test_digits_shows_facts_an_image_grid_and_class_balance(_workspace):
    at = pick(open_data_page(_workspace, MLP_28), "digits")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Task"] == "classification"
    assert metrics["Input (per sample)"] == "(1, 8, 8) float32"
    assert metrics["Samples"] == "1,797"
    assert len([e for e in at.main if type(e).__name__ == "Image"]) == 1  # the grid is one PNG, not a trace per pixel
    balance = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert balance["layout"]["title"]["text"] == "Class balance"
    assert [t["name"] for t in balance["data"]] == ["train", "val", "test"]


def test_use_with_current_graph_sets_the_input_and_shows_the_fit(_workspace):
    at = pick(open_data_page(_workspace, MLP_28), "digits")
    assert "input" in plain(at.error[0].value) and "(1, 8, 8)" in plain(at.error[0].value)
    at.button(key="studio.data.use").click()
    at.run()
    assert not at.error, [e.value for e in at.error]
    assert any(":green-badge[fits]" in m.value for m in at.markdown)
    assert load_graph(_workspace / "graphs" / "_autosave.json").node("input").params["shape"] == [1, 8, 8]

    at = pick(at, "iris")  # 4 features, 3 classes: the input and the head (it stayed at 10 classes)
    assert "set out_features=3" in " ".join(plain(e.value) for e in at.error)
    at.button(key="studio.data.use").click()
    at.run()
    assert not at.error, [plain(e.value) for e in at.error]
    saved = load_graph(_workspace / "graphs" / "_autosave.json")
    assert saved.node("input").params["shape"] == [4] and saved.node("fc").params["out_features"] == 3
    assert any(":green-badge[fits]" in m.value for m in at.markdown)
    (said,) = [plain(s.value) for s in at.success]
    assert "its output fits too: fc.out_features 10 → 3" in said, said
    before = at.session_state["studio.session.undo"][-1]  # one edit: one Undo takes both back
    assert before.node("input").params["shape"] == [1, 8, 8] and before.node("fc").params["out_features"] == 10


def test_reconstruction_target_and_image_size_set_the_dataset_options(_workspace):
    from studio.templates import load_template

    at = pick(open_data_page(_workspace, load_template("conv_autoencoder").to_dict()), "shapes")
    assert "has samples of (1, 32, 32)" in plain(at.error[0].value)  # and 5 classes, not an image, as output
    at.radio(key="studio.data.option.shapes.target").set_value("input")
    at.number_input(key="studio.data.option.shapes.image_size").set_value(28)
    at.run()
    assert not at.exception and not at.error, [plain(e.value) for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Task"], metrics["Input (per sample)"], metrics["Model output"]) == (
        "regression", "(1, 28, 28) float32", "(1, 28, 28)")
    assert any(":green-badge[fits]" in m.value for m in at.markdown)
    (grid,) = [e for e in at.main if type(e).__name__ == "Image"]
    assert grid.proto.imgs[0].caption == "The first 32 training images, each its own target"
    at.button(key="studio.data.use").click()
    at.run()
    assert at.session_state["studio.session.dataset_id"] == "shapes"
    assert at.session_state["studio.session.dataset_options"] == {"image_size": 28, "target": "input"}
    meta = json.loads((_workspace / "graphs" / "_autosave.meta.json").read_text())
    assert meta["dataset_options"] == {"image_size": 28, "target": "input"}

    at = pick(at, "iris")  # tabular: no target choice; picking shapes again shows the current options
    assert not [r for r in at.radio if r.key and r.key.startswith("studio.data.option.")]
    at = pick(at, "shapes")
    assert at.radio(key="studio.data.option.shapes.target").value == "input"
    assert at.number_input(key="studio.data.option.shapes.image_size").value == 28


@pytest.mark.parametrize("dataset_id, expect", [
    ("iris", "table"), ("reverse", "tokens"), ("sine", "series"), ("chars", "tokens")])
def test_previews_per_kind(_workspace, dataset_id, expect):
    at = pick(open_data_page(_workspace, MLP_28), dataset_id)
    if expect == "table":
        head = at.dataframe[0].value
        assert list(head.columns) == ["x0", "x1", "x2", "x3", "target"] and len(head) == 10
        assert set(head["target"]) <= {"setosa", "versicolor", "virginica"}
    elif expect == "tokens":
        rows = at.dataframe[0].value
        ds = get_dataset(dataset_id)
        assert rows["input"][0] == data_view.token_text(ds.train.x[0], ds.info.vocab)
        if dataset_id == "reverse":  # the target is the input reversed, written the same way
            assert rows["target"][0] == rows["input"][0][::-1]
    else:
        fig = json.loads(at.get("plotly_chart")[0].proto.spec)
        assert fig["layout"]["title"]["text"] == "The first training series" and len(fig["data"]) == 4


def test_uploads_are_listed_and_deleted_after_confirmation(_workspace):
    rows = "\n".join(f"{i % 7},{i * 0.5},{'ab'[i % 2]}" for i in range(40))
    info = upload_csv(f"a,b,label\n{rows}\n".encode(), "small.csv", target="label")
    at = open_data_page(_workspace, MLP_28)
    assert any(info.id in m.value for m in at.markdown)
    at = pick(at, info.id)
    head = at.dataframe[0].value
    assert list(head.columns) == ["a", "b", "target"]  # the upload's own feature names
    at.button(key=f"studio.data.delete.{info.id}").click()
    at.run()
    assert "Delete the upload small.csv?" in plain(at.warning[0].value)
    at.button(key=f"studio.data.delete_yes.{info.id}").click()
    at.run()
    assert not at.exception
    assert not (_workspace / "datasets" / "uploads" / info.id).exists()
    assert at.selectbox(key=PICK).value != info.id
    assert any("Deleted the upload" in s.value for s in at.success)


def test_offline_download_says_so(_workspace, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    at = pick(open_data_page(_workspace, MLP_28), "mnist")
    assert "downloaded on first use" in plain(at.info[0].value)
    at.button(key="studio.data.download").click()
    at.run()
    text = plain(" ".join(e.value for e in at.error))
    assert "cannot download MNIST" in text and "offline" in text and "digits" in text


def test_image_grid_png_draws_every_image():
    from io import BytesIO

    from PIL import Image

    images = np.zeros((5, 1, 8, 8), dtype=np.float32)
    images[2] = 1.0
    png = data_view.image_grid_png(images, list("abcde"), columns=4)
    sheet = np.asarray(Image.open(BytesIO(png)).convert("L"))
    assert sheet.shape[1] == 4 * (max(64, 48) + 6)
    cell_w = sheet.shape[1] // 4
    tile = sheet[3:67, 2 * cell_w + (cell_w - 64) // 2:][:, :64]
    assert tile.min() == 255  # the white image, scaled up 8x
    assert sheet[3:67, (cell_w - 64) // 2:][:, :64].max() == 0  # a black one


def test_image_grid_png_two_line_captions_second_line_red_and_any_range_scaled():
    from io import BytesIO

    from PIL import Image

    images = np.linspace(-3.0, 5.0, 2 * 64).reshape(2, 1, 8, 8).astype(np.float32)  # not in [0, 1]
    one = np.asarray(Image.open(BytesIO(data_view.image_grid_png(images, ["cat", "dog"]))).convert("RGB"))
    two = np.asarray(Image.open(BytesIO(data_view.image_grid_png(
        images, [("true cat", "pred dog"), ("true dog", "pred cat")]))).convert("RGB"))
    assert two.shape[0] == one.shape[0] + data_view.LABEL_HEIGHT  # one more line under each tile
    red = (two[..., 0] > 150) & (two[..., 1] < 90) & (two[..., 2] < 90)
    assert red[one.shape[0] - data_view.LABEL_HEIGHT:].any() and not red[:64].any()
    tile = two[3:67, (two.shape[1] // 2 - 64) // 2:][:, :64, 0]
    assert tile.min() == 0 and tile.max() == 255  # each image stretched over its own range
