"""The Inspect page under AppTest on short finished runs (conftest.trained_runs): feature maps of a conv node
with the step slider and play control, attention with the vocabulary's tokens as labels, the
confusion matrix summing to the validation size, live inference with saliency (on a dataset sample and on a
drawing, the canvas's browser answer faked in session state), weights, diagnostics."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from studio import inspection as ins
from studio.data import get_dataset
from studio.runs import list_runs
from tests.test_inspect import SHAPES_OPTIONS, bar_canvas

ROOT = Path(__file__).resolve().parents[1]
PAGE = "pages/4_Inspect.py"
K = "studio.inspect."
SHAPE_NAMES = ["circle", "square", "triangle", "cross", "ring"]


@pytest.fixture(scope="module")
def runs(trained_runs):
    """The session's trained runs (conftest.trained_runs), in their workspace for this module's tests."""
    workspace, ids = trained_runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(workspace))
        yield ids


@pytest.fixture(autouse=True)
def _workspace(runs):  # share the module's workspace with its runs
    return None


def walk(node):
    yield node
    for child in (getattr(node, "children", None) or {}).values():
        yield from walk(child)


def elements(at: AppTest, kind: str) -> list:
    return [e for e in walk(at._tree) if getattr(e, "type", None) == kind]


def figures(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in elements(at, "plotly_chart")]


def arr(value) -> np.ndarray:
    """A figure's data array: Plotly sends numpy arrays as {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        a = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return a.reshape([int(n) for n in str(value.get("shape", len(a))).split(",")])
    return np.asarray(value)


def image_captions(at: AppTest) -> list[str]:
    return [img.caption for e in elements(at, "image") for img in e.proto.imgs]


def open_page(run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    if run_id:
        at.session_state["studio.session.run_id"] = run_id
    at.switch_page(PAGE)
    at.run()
    return at


def page(run_id: str, view: str) -> AppTest:
    at = open_page(run_id)
    assert not at.exception, [e.message for e in at.exception]
    at.radio(key=K + "view").set_value(view).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_feature_maps_render_for_a_conv_node_with_step_slider_and_play(runs):
    at = page(runs["cnn-a"], "Feature maps")
    at.selectbox(key=K + "fm.node").set_value("conv1").run()
    captions = image_captions(at)
    assert any(c.startswith("input · sample 0") for c in captions)
    assert "conv1 at step 40: 8 channels, per-sample shape (8, 16, 16)" in captions
    steps = at.select_slider(key=K + "fm.step").options
    assert steps[0] == "0" and steps[-1] == "40" and len(steps) >= 6
    at.select_slider(key=K + "fm.step").set_value(0).run()
    assert "conv1 at step 0: 8 channels, per-sample shape (8, 16, 16)" in image_captions(at)
    at.radio(key=K + "fm.sort").set_value("max").run()
    at.selectbox(key=K + "fm.enlarge").set_value(3).run()
    (fig,) = figures(at)
    assert fig["data"][0]["type"] == "heatmap" and arr(fig["data"][0]["z"]).shape == (16, 16)
    assert "channel 3 · step 0" in fig["layout"]["title"]["text"]
    at.toggle(key=K + "fm.play").set_value(True).run()   # each run while playing shows the next snapshot
    assert at.select_slider(key=K + "fm.step").value == int(steps[1])
    at.run()
    assert at.select_slider(key=K + "fm.step").value == int(steps[2])
    assert not at.exception


def test_attention_renders_with_the_vocabulary_as_token_labels(runs):
    at = page(runs["rev"], "Attention")
    x, _ = get_dataset("reverse", seed=0).probe_batch(8)
    vocab = list("0123456789")
    at.selectbox(key=K + "att.sample").set_value(2).run()
    (fig,) = figures(at)
    heat = fig["data"][0]
    expected = [f"{vocab[int(t)]} ({p})" for p, t in enumerate(x[2])]
    assert heat["type"] == "heatmap" and heat["x"] == expected and heat["y"] == expected
    z = arr(heat["z"])
    assert z.shape == (12, 12) and np.allclose(z.sum(axis=1), 1, atol=1e-2)
    assert "attn at step 60 · head 0" in fig["layout"]["title"]["text"]
    assert not [r for r in at.radio if r.key and r.key.startswith(K + "att.head")]  # one head: nothing to pick
    sample = at.selectbox(key=K + "att.sample")
    assert sample.options[2] == "sample 2 · " + "".join(vocab[int(t)] for t in x[2])  # named by its input
    at.radio(key=K + "att.mode").set_value("overview: every layer and head").run()
    assert any(c.startswith("Every layer (rows) and head (columns) at step 60") for c in image_captions(at))


def test_confusion_matrix_sums_to_the_validation_size(runs):
    at = page(runs["cnn-a"], "Evaluation")
    fig = figures(at)[0]
    z = arr(fig["data"][0]["z"])
    val_size = len(get_dataset("shapes", seed=0, options=SHAPES_OPTIONS).val)
    assert z.shape == (5, 5) and z.sum() == val_size == 60
    assert fig["data"][0]["x"] == ["circle", "square", "triangle", "cross", "ring"]
    per_class = at.dataframe[0].value
    assert list(per_class["class"]) == fig["data"][0]["x"] and per_class["support"].sum() == val_size
    assert any("most confident mistakes" in c for c in image_captions(at))
    at.select_slider(key=K + "ev.logged_step").set_value(20).run()
    logged = [f for f in figures(at) if f["layout"]["title"]["text"] == "Confusion matrix at step 20"]
    assert len(logged) == 1 and arr(logged[0]["data"][0]["z"]).sum() == val_size
    at.radio(key=K + "ev.ckpt").set_value("last").run()
    assert not at.exception


def test_sequence_evaluation_shows_predicted_tokens(runs):
    at = page(runs["rev"], "Evaluation")
    assert any(m.value.startswith("**Token accuracy") for m in at.markdown)
    frame = at.dataframe[0].value
    assert list(frame.index) == ["input", "target", "predicted", "right"] and frame.shape[1] == 12


def test_live_inference_with_probabilities_feature_maps_and_saliency(runs):
    at = page(runs["cnn-a"], "Live inference")
    assert at.radio(key=K + "inf.source").options == ["dataset sample", "uploaded image", "drawn image"]
    at.number_input(key=K + "inf.index").set_value(5).run()
    assert any(m.value.startswith("**Prediction:") for m in at.markdown)
    probs = figures(at)[0]["data"][0]
    assert probs["type"] == "bar" and abs(arr(probs["x"]).sum() - 1) < 1e-3
    at.selectbox(key=K + "inf.fm_node").set_value("conv2").run()
    assert any(c.startswith("conv2: per-sample shape (16, 8, 8)") for c in image_captions(at))
    for method in ("gradcam", "gradient_x_input"):
        at.radio(key=K + "inf.sal_method").set_value(method).run()
        assert any(c.startswith(f"{method} for class") for c in image_captions(at))
    assert not at.exception

    at = page(runs["rev"], "Live inference")
    assert any(m.value.startswith("**Predicted tokens**") for m in at.markdown)
    att = [f for f in figures(at) if f["data"][0]["type"] == "heatmap"]
    assert att and att[0]["data"][0]["x"][0].endswith(" (0)")


def canvas_value(rgba: np.ndarray) -> dict:
    """What streamlit-drawable-canvas sends back from the browser: its Fabric.js JSON and a PNG data URL."""
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return {"drawing": {"raw": {"objects": [{"type": "path"}], "background": "#000000"}, "data": url}}


def test_live_inference_on_a_drawn_image(runs):
    at = page(runs["cnn-a"], "Live inference")
    at.radio(key=K + "inf.source").set_value("drawn image").run()
    assert not at.exception, [e.message for e in at.exception]
    (canvas,) = elements(at, "bidi_component")  # the component renders only in a browser: check what it was sent
    sent = json.loads(canvas.proto.json)
    assert canvas.proto.component_name.endswith("streamlit_drawable_canvas")
    assert (sent["canvasWidth"], sent["canvasHeight"], sent["drawingMode"]) == (280, 280, "freedraw")
    # 16x16 shapes on a 280 px canvas: strokes of about one input pixel (17.5 px, within 20 px)
    assert (sent["strokeColor"], sent["backgroundColor"], sent["strokeWidth"]) == ("#FFFFFF", "#000000", 20)
    assert any(c.value.startswith("Draw on the black canvas") for c in at.caption)  # empty: a hint, no prediction
    assert not any(m.value.startswith("**Prediction:") for m in at.markdown) and not figures(at)

    rgba = bar_canvas()
    at.session_state[K + "inf.canvas"] = canvas_value(rgba)  # the browser's answer after a stroke
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Drawn at 280x280, resized to the model's input (1, 16, 16)." in [c.value for c in at.caption]
    run = ins.load_run(runs["cnn-a"])
    expected = ins.infer(ins.load_model(run, "best"), ins.image_to_input(Image.fromarray(rgba).convert("L"),
                                                                         (1, 16, 16)), "classification")
    k = int(expected.probabilities.argmax())
    prediction = next(m.value for m in at.markdown if m.value.startswith("**Prediction:"))
    assert prediction.startswith(f"**Prediction: {SHAPE_NAMES[k]}** ({expected.probabilities[k]:.1%})")
    probs = figures(at)[0]["data"][0]
    shown = dict(zip(probs["y"], arr(probs["x"]), strict=True))
    assert np.allclose([shown[n] for n in SHAPE_NAMES], expected.probabilities, atol=1e-5)  # what the model saw
    captions = image_captions(at)
    assert "input" in captions and any(c.startswith("conv1: per-sample shape (8, 16, 16)") for c in captions)
    assert any(c.startswith("gradcam for class") for c in captions)

    at.session_state[K + "inf.canvas"] = canvas_value(np.zeros((280, 280, 4), np.uint8))  # cleared in the toolbar
    at.run()
    assert any(c.value.startswith("Draw on the black canvas") for c in at.caption)
    assert not any(m.value.startswith("**Prediction:") for m in at.markdown)

    at = page(runs["rev"], "Live inference")  # token inputs: nothing to draw
    assert at.radio(key=K + "inf.source").options == ["dataset sample"]


def test_weights_and_diagnostics_views(runs):
    at = page(runs["cnn-a"], "Weights & gradients")
    at.selectbox(key=K + "w.param").set_value("conv1.weight").run()
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    assert titles[:2] == ["conv1.weight: values over training", "conv1.weight: gradients over training"]
    assert "Gradient norm per layer" in titles and any(t.startswith("Dead ReLU units") for t in titles)
    at.radio(key=K + "view").set_value("Diagnostics").run()
    assert any(c.value.startswith("Checked: overfitting") for c in at.caption)
    assert at.success or at.warning or at.info


def test_no_runs_says_where_to_start(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "empty"))
    at = open_page()
    assert not at.exception
    assert at.info[0].value.startswith("No runs yet")


def test_another_run_starts_at_its_latest_probe(runs):
    at = page(runs["cnn-a"], "Feature maps")
    at.selectbox(key=K + "fm.node").set_value("conv1").run()
    at.select_slider(key=K + "fm.step").set_value(0).run()
    assert "conv1 at step 0: 8 channels, per-sample shape (8, 16, 16)" in image_captions(at)
    at.selectbox(key=K + "run").set_value(runs["cnn-b"]).run()  # it kept step 0 of the other run
    assert not at.exception, [e.message for e in at.exception]
    assert at.select_slider(key=K + "fm.step").value == 40
    assert any(c.startswith("conv1 at step 40") for c in image_captions(at)), image_captions(at)


@pytest.mark.parametrize("name", ["cnn-a", "cnn-b", "rev"])  # the newest is the default; the others are the test
def test_a_refresh_opens_the_run_in_the_url(runs, name):
    fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)  # a new session: what a refresh is
    fresh.switch_page(PAGE)
    (record,) = [r for r in list_runs() if r.id == runs[name]]
    fresh.query_params[K + "run"] = f"{record.name} ({record.id})"  # the selectbox is bound to it, by its label
    fresh.run()
    assert not fresh.exception, [e.message for e in fresh.exception]
    assert fresh.selectbox(key=K + "run").value == runs[name]


def test_a_run_another_page_asks_for_wins_over_the_one_shown_before(runs):
    at = page(runs["cnn-a"], "Feature maps")
    assert at.selectbox(key=K + "run").value == runs["cnn-a"]
    at.session_state["studio.session.run_id"] = runs["cnn-b"]  # what the Train page's Inspect button does
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key=K + "run").value == runs["cnn-b"]
    at.selectbox(key=K + "run").set_value(runs["cnn-a"]).run()  # and the user's own choice here still counts
    assert at.selectbox(key=K + "run").value == runs["cnn-a"]
