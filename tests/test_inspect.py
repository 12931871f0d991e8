"""studio.inspection and the Inspect page's image builders on real finished runs (trained by the
worker's code): checkpoints load into the compiled graph, the evaluation agrees with torch and
scikit-learn, probe arrays are read one at a time, and graph / config diffs list what changed. (Saliency
and Grad-CAM against their hand-written torch oracles: tests/test_explain.py.)

`make_runs` is trained once per session (conftest.trained_runs) for these and the page tests: two
small CNNs on `shapes` that differ in conv1's out_channels and the learning rate, and the
reverse_transformer template on `reverse`.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from components.figures import inspect_charts as ic
from components.figures import inspect_views as iv
from studio import inspection as ins
from studio.errors import StudioError, TrainError
from studio.training import TrainConfig

SHAPES_OPTIONS = {"num_samples": 400, "image_size": 16}


def cnn(conv1_channels: int) -> dict:
    chain = [("input", "Input", {"shape": [1, 16, 16]}),
             ("conv1", "Conv2d", {"out_channels": conv1_channels, "kernel_size": 3, "padding": 1}),
             ("relu1", "ReLU", None), ("pool1", "MaxPool2d", {"kernel_size": 2}),
             ("conv2", "Conv2d", {"out_channels": 16, "kernel_size": 3, "padding": 1}), ("relu2", "ReLU", None),
             ("gap", "AdaptiveAvgPool2d", {"output_size": 1}), ("flat", "Flatten", None),
             ("fc", "Linear", {"out_features": 5})]
    return {"format": "studio.graph/1", "name": f"cnn{conv1_channels}",
            "nodes": [{"id": i, "type": t, **({"params": p} if p else {})} for i, t, p in chain],
            "edges": [{"source": a[0], "target": b[0]} for a, b in zip(chain, chain[1:], strict=False)]}


def make_runs() -> dict[str, str]:
    """Train three short runs in the current STUDIO_WORKSPACE (the worker's code, conftest.train_here);
    {name: run_id}."""
    from studio.templates import load_template
    from tests.conftest import train_here

    cfg = dict(max_steps=40, batch_size=32, eval_every=10, probe_every=10, seed=0)
    return {
        "cnn-a": train_here(cnn(8), "shapes", TrainConfig(lr=3e-3, **cfg), dataset_options=SHAPES_OPTIONS,
                            name="cnn-a"),
        "cnn-b": train_here(cnn(12), "shapes", TrainConfig(lr=1e-3, **cfg), dataset_options=SHAPES_OPTIONS,
                            name="cnn-b"),
        "rev": train_here(load_template("reverse_transformer"), "reverse",
                          TrainConfig(max_steps=60, batch_size=64, lr=3e-3, eval_every=20, probe_every=20),
                          name="rev"),
    }


@pytest.fixture(scope="module")
def runs(trained_runs):
    """The session's trained runs (conftest.trained_runs), in their workspace for this module's tests."""
    workspace, ids = trained_runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(workspace))
        yield ids


@pytest.fixture(autouse=True)
def _workspace(runs):  # these tests share the module's workspace (overrides conftest's per-test one)
    return None


# ---- checkpoints and evaluation --------------------------------------------------------------------

def test_checkpoint_loads_into_the_compiled_graph_and_evaluation_agrees_with_torch(runs):
    from sklearn.metrics import confusion_matrix, precision_score, recall_score

    run = ins.load_run(runs["cnn-a"])
    assert run.checkpoints() == ["best", "last"] and run.dataset_options == SHAPES_OPTIONS
    model = ins.load_model(run, "last")
    state = torch.load(run.checkpoint_path("last"), weights_only=True)["model"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    data = ins.load_run_dataset(run)
    ev = ins.evaluate(model, data, "val", batch_size=17)  # batches that do not divide the split

    with torch.no_grad():
        logits = model(data.val.x)
    assert np.array_equal(ev.predictions, logits.argmax(1).numpy())
    assert ev.loss == pytest.approx(F.cross_entropy(logits, data.val.y).item(), rel=1e-5)
    assert int(ev.confusion.sum()) == len(data.val) == ev.size
    assert np.array_equal(ev.confusion, confusion_matrix(ev.targets, ev.predictions, labels=range(5)))
    precision, recall, support = ins.precision_recall(ev.confusion)
    seen = support > 0
    assert np.allclose(recall[seen], recall_score(ev.targets, ev.predictions, average=None, labels=np.flatnonzero(seen),
                                                  zero_division=0))
    predicted = ev.confusion.sum(0) > 0
    assert np.allclose(precision[predicted], precision_score(ev.targets, ev.predictions, average=None,
                                                             labels=np.flatnonzero(predicted), zero_division=0))
    wrong = ev.misclassified()
    assert len(wrong) == ev.size - int(ev.confusion.trace())
    conf = ev.probabilities[wrong].max(1)
    assert np.all(np.diff(conf) <= 0)  # most confident mistakes first


def test_sequence_evaluation_and_missing_checkpoint_message(runs, tmp_path):
    run = ins.load_run(runs["rev"])
    ev = ins.evaluate(ins.load_model(run, "best"), ins.load_run_dataset(run))
    assert ev.predictions.shape == ev.targets.shape == (600, 12)
    assert ev.accuracy == pytest.approx(float((ev.predictions == ev.targets).mean()))
    run.checkpoint_path("best").rename(tmp_path / "best.pt")
    try:
        with pytest.raises(TrainError, match=r"has no 'best' checkpoint yet .*use 'last'"):
            ins.load_model(run, "best")
    finally:
        (tmp_path / "best.pt").rename(run.checkpoint_path("best"))
    with pytest.raises(TrainError, match="no run directory"):
        ins.load_run("20990101-000000-ffffff")


def test_regression_evaluation_agrees_with_torch():
    from studio.compile import compile_graph
    from studio.data import get_dataset
    from studio.graph import parse_graph

    data = get_dataset("sine", seed=0, options={"num_samples": 300})
    graph = {"format": "studio.graph/1", "name": "lin",
             "nodes": [{"id": "input", "type": "Input", "params": {"shape": list(data.info.input_shape)}},
                       {"id": "flat", "type": "Flatten"},
                       {"id": "fc", "type": "Linear", "params": {"out_features": 1}}],
             "edges": [{"source": "input", "target": "flat"}, {"source": "flat", "target": "fc"}]}
    model = compile_graph(parse_graph(graph), seed=0)
    ev = ins.evaluate(model, data, "val", batch_size=7)
    with torch.no_grad():
        out = model(data.val.x)
    y = data.val.y.reshape(out.shape)
    assert ev.confusion is None and ev.accuracy is None and len(ev.misclassified()) == 0
    assert ev.mae == pytest.approx((out - y).abs().mean().item(), rel=1e-5)
    assert ev.loss == pytest.approx(F.mse_loss(out, y).item(), rel=1e-5)
    fig = ic.regression_figure(ev.targets, ev.predictions)
    assert len(fig.data[0].x) == len(data.val)


# ---- inference -------------------------------------------------------------------------------------

def test_infer_returns_one_inputs_maps_and_attention(runs):
    run = ins.load_run(runs["rev"])
    model = ins.load_model(run, "best")
    x = ins.load_run_dataset(run).val.x[0]
    result = ins.infer(model, x, "sequence")
    assert result.probabilities.shape == (12, 10) and np.allclose(result.probabilities.sum(-1), 1, atol=1e-5)
    att = result.attention["attn"]
    assert att.shape == (1, 12, 12) and np.allclose(att.sum(-1), 1, atol=1e-5)

    cnn_run = ins.load_run(runs["cnn-a"])
    cnn_model = ins.load_model(cnn_run, "best")
    img = ins.load_run_dataset(cnn_run).val.x[1]
    result = ins.infer(cnn_model, img, "classification")
    assert set(result.features) == {"conv1", "relu1", "pool1", "conv2", "relu2", "gap"}
    with torch.no_grad():
        expected = cnn_model.conv1(img[None])[0].numpy()
    assert np.allclose(result.features["conv1"], expected, atol=1e-6)


def test_uploaded_images_are_resized_to_the_input_shape():
    img = Image.new("RGB", (50, 30), (255, 0, 0))
    x = ins.image_to_input(img, (1, 16, 16))
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32
    assert float(x.mean()) == pytest.approx(0.299, abs=0.01)  # PIL's luma of pure red
    assert ins.image_to_input(img, (3, 8, 8))[0].min() == 1.0
    with pytest.raises(StudioError, match=r"takes \(12,\); use a dataset sample"):
        ins.image_to_input(img, (12,))


def bar_canvas(size: int = 280, background=(0, 0, 0, 255)) -> np.ndarray:
    """RGBA canvas pixels with a white vertical bar drawn at columns 126..153, rows 40..239."""
    rgba = np.empty((size, size, 4), np.uint8)
    rgba[:] = background
    rgba[40:240, 126:154] = (255, 255, 255, 255)
    return rgba


def test_a_drawn_vertical_bar_lands_as_a_bright_vertical_bar_on_a_zero_background():
    from components.inspect.drawn_input import drawn_input

    x = drawn_input(bar_canvas(), (1, 28, 28))
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) <= 1.0
    assert (x[0, 6:22, 13:15] > 0.8).all()                         # the bar: bright, 2 columns wide
    assert (x[0, :, :11] == 0).all() and (x[0, :, 17:] == 0).all()  # left and right of it: background 0
    assert (x[0, :2] == 0).all() and (x[0, 26:] == 0).all()          # above and below it
    profile = x[0].sum(dim=0)
    assert int(profile.argmax()) in (13, 14) and float(profile[2]) == 0.0


def test_drawn_input_counts_transparency_as_background_and_fills_three_channels():
    from components.inspect.drawn_input import canvas_image, drawn_input

    opaque = drawn_input(bar_canvas(), (1, 16, 16))
    transparent = drawn_input(bar_canvas(background=(255, 255, 255, 0)), (1, 16, 16))
    assert torch.allclose(opaque, transparent)  # a white but transparent background is still black
    rgb = drawn_input(bar_canvas(), (3, 16, 16))
    assert rgb.shape == (3, 16, 16) and torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])
    assert torch.allclose(rgb[0], opaque[0], atol=1 / 255)
    assert canvas_image(bar_canvas()[..., :3]).size == (280, 280)  # RGB pixels without alpha work too
    for empty in (None, np.zeros((280, 280, 4), np.uint8), bar_canvas(background=(0, 0, 0, 255))[:30]):
        assert drawn_input(empty, (1, 28, 28)) is None


def test_the_canvas_keeps_the_input_aspect_and_sizes_the_brush_to_its_pixels():
    from components.inspect.drawn_input import BRUSH_RANGE, brush_width, canvas_size

    assert canvas_size((1, 28, 28)) == (280, 280) and brush_width((1, 28, 28)) == 20  # 2 input pixels
    assert brush_width((1, 16, 16)) == 20 and brush_width((1, 8, 8)) == 35  # 8x8: one input pixel (issue 18)
    assert BRUSH_RANGE[0] <= brush_width((1, 64, 64)) <= BRUSH_RANGE[1]
    assert canvas_size((3, 16, 32)) == (280, 140) and canvas_size((1, 40, 20)) == (140, 280)
    with pytest.raises(StudioError, match=r"takes \(12,\); use a dataset sample"):
        canvas_size((12,))


# ---- probes --------------------------------------------------------------------------------------------

def test_logged_confusions_match_the_worker_evaluations(runs):
    from studio.runs import Store

    run = ins.load_run(runs["cnn-a"])
    logged = ins.read_confusions(run)
    steps, acc = Store().metric_series(runs["cnn-a"], "val_accuracy")
    assert [c["step"] for c in logged] == steps == [10, 20, 30, 40]
    for c, a in zip(logged, acc, strict=True):
        m = np.asarray(c["matrix"])
        assert m.sum() == 60 and m.trace() / m.sum() == pytest.approx(a)


def test_probe_arrays_are_read_one_at_a_time(runs):
    run = ins.load_run(runs["cnn-a"])
    entries = ins.probe_index(run)
    assert [e["step"] for e in entries][:2] == [0, 9] and entries[-1]["step"] == 40
    a = ins.load_probe_array(run, entries[-1], "fmap/conv1")
    assert a.dtype == np.float32 and a.shape == (8, 8, 16, 16)
    with pytest.raises(TrainError, match=r"has no array 'fmap/nope'"):
        ins.load_probe_array(run, entries[-1], "fmap/nope")
    steps, edges, counts = ins.histogram_over_steps(run, entries, "conv1.weight", "w", bins=32)
    assert list(steps) == [e["step"] for e in entries] and counts.shape == (len(entries), 32)
    assert np.all(counts.sum(1) == 8 * 1 * 3 * 3)  # every weight counted once at every step
    last = torch.load(run.checkpoint_path("last"), weights_only=True)["model"]["conv1.weight"]
    assert edges[0] <= float(last.min()) and edges[-1] >= float(last.max())
    g_steps, _, _ = ins.histogram_over_steps(run, entries, "conv1.weight", "g")
    assert g_steps[0] > 0  # no gradient before the first step
    assert "fc.bias" in ins.parameter_names(run, entries[-1])
    steps, dead = ins.index_series(entries, "dead_fraction")
    assert set(dead) == {"relu1", "relu2"} and np.all((dead["relu1"] >= 0) & (dead["relu1"] <= 1))


@pytest.mark.parametrize("damage", ["empty", "cut", "text"])
def test_a_damaged_snapshot_is_a_train_error_from_every_reader(runs, tmp_path, damage):
    """A snapshot emptied, cut short or overwritten (a full disk, a crash mid-write) names itself."""
    import shutil
    from types import SimpleNamespace

    run = ins.load_run(runs["cnn-a"])
    entry = ins.probe_index(run)[-1]
    shutil.copyfile(run.probes_dir / entry["file"], tmp_path / entry["file"])
    data = (tmp_path / entry["file"]).read_bytes()
    (tmp_path / entry["file"]).write_bytes({"empty": b"", "cut": data[: len(data) // 2], "text": b"{}"}[damage])
    damaged = SimpleNamespace(probes_dir=tmp_path, run_id="damaged")
    for read in (lambda: ins.load_probe_array(damaged, entry, "fmap/conv1"),
                 lambda: ins.histogram_over_steps(damaged, [entry], "conv1.weight"),
                 lambda: ins.parameter_names(damaged, entry)):
        with pytest.raises(TrainError, match=rf"snapshot .*{entry['file']} could not be read"):
            read()


# ---- diffs ----------------------------------------------------------------------------------------------

def test_graph_diff_lists_added_removed_type_and_param_changes(runs):
    a, b = cnn(8), cnn(12)
    d = ins.graph_diff(a, b)
    assert d.params_changed == [("conv1", "out_channels", 8, 12)] and not d.added and not d.removed
    assert d.lines() == ["conv1: out_channels 8 -> 12"]
    b["nodes"][2] = {"id": "relu1", "type": "GELU"}
    b["nodes"].insert(3, {"id": "drop", "type": "Dropout", "params": {"p": 0.2}})
    b["edges"] = [e for e in b["edges"] if e["source"] != "relu1"] + [
        {"source": "relu1", "target": "drop"}, {"source": "drop", "target": "pool1"}]
    b["nodes"][-2]["params"] = {"start_dim": 1}
    d = ins.graph_diff(a, b)
    assert d.added == ["drop"] and d.type_changed == [("relu1", "ReLU", "GELU")]
    assert ("flat", "start_dim", "(default)", 1) in d.params_changed
    assert ("relu1", "pool1") in d.edges_removed and ("drop", "pool1") in d.edges_added
    assert ins.graph_diff(b, a).removed == ["drop"] and ins.graph_diff(a, a).empty


def test_config_diff_and_best_values():
    a, b, c = TrainConfig(lr=1e-3).to_dict(), TrainConfig(lr=3e-3).to_dict(), TrainConfig(lr=1e-3, epochs=3).to_dict()
    assert ins.config_diff([a, b, c]) == {"lr": [1e-3, 3e-3, 1e-3], "epochs": [10, 10, 3]}
    assert ins.config_diff([a, a]) == {}
    assert ins.best_value("val_loss", [0.5, float("nan"), 0.3, 0.4]) == 0.3
    assert ins.best_value("val_accuracy", [0.5, 0.9, 0.7]) == 0.9


# ---- images and figures --------------------------------------------------------------------------------

def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_feature_grid_is_one_png_with_a_tile_per_channel_in_the_asked_order():
    rng = np.random.default_rng(0)
    maps = rng.random((64, 16, 16)).astype(np.float32)
    maps[5] += 3.0  # the strongest channel
    order = iv.channel_order(maps, "mean")
    assert order[0] == 5 and sorted(order.tolist()) == list(range(64))
    img = _decode(iv.feature_grid_png(maps, order=order))
    tile = 16 * (64 // 16)
    assert img.shape[1] == 8 * (tile + 4) and img.shape[0] == 8 * (tile + iv.LABEL_H + 4)
    # the first tile is channel 5, scaled per channel: it is not blank
    first = img[2:2 + tile, 2:2 + tile]
    assert first.std() > 10
    assert _decode(iv.feature_grid_png(maps[:3, 0])).shape[0] > 0     # (C, L) signals as strips
    assert _decode(iv.feature_grid_png(maps[0, 0])).shape[0] > 0       # (F,) vectors as cells
    assert len(iv.feature_grid_png(maps)) < 150_000                     # one small image, not 64 traces


def test_attention_grid_shows_the_causal_mask_in_grey():
    t = 6
    att = np.tril(np.ones((2, t, t))) / np.arange(1, t + 1)[:, None]
    img = _decode(iv.attention_grid_png([("enc", att)], causal={"enc": True}, cell=60))
    scale = 60 // t
    top, left = iv.LABEL_H + 4, 4
    assert tuple(img[top + 1, left + (t - 1) * scale + 1]) == iv.MASKED_RGB      # row 0, last key: masked
    assert tuple(img[top + (t - 1) * scale + 1, left + 1]) != iv.MASKED_RGB      # last row, key 0: allowed
    fig = ic.attention_figure(att[0], ic.token_labels([1, 1, 2, 0, 1, 2], ["a", "b", "c"]), causal=True)
    assert list(fig.data[0].x) == ["b (0)", "b (1)", "c (2)", "a (3)", "b (4)", "c (5)"]   # unique labels for repeats
    assert np.isnan(np.asarray(fig.data[0].z, dtype=float)[0, 1])              # masked cells left blank


def test_token_frame_marks_wrong_positions():
    frame = ic.token_frame([1, 2, 3], [3, 2, 1], [3, 0, 1], list("abcd"))
    assert frame.loc["predicted"].tolist() == ["d", "a", "b"] and frame.loc["right"].tolist() == ["✓", "✗", "✓"]


def test_a_damaged_checkpoint_is_reported_by_name(runs, tmp_path):
    run = ins.load_run(runs["cnn-b"])
    path = run.checkpoint_path("last")
    saved = path.read_bytes()
    try:
        path.write_bytes(saved[: len(saved) // 2])
        with pytest.raises(TrainError, match=r"last\.pt.* is damaged"):
            ins.load_model(run, "last")
    finally:
        path.write_bytes(saved)
    assert isinstance(ins.load_model(run, "last"), torch.nn.Module)
