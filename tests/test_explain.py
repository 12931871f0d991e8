"""studio.explain checked against the axioms attributions must satisfy, not against its own code:

- completeness: integrated gradients sum to f(x) - f(baseline) within 2 % on a trained digits MLP and on
  a trained CNN, within 5 % per token on the trained `reverse` transformer (layer IG on the embedding);
  KernelSHAP's values sum to the same difference (Shapley efficiency);
- dummy: an input column the model ignores by construction (its first layer's weights are zero) gets
  no attribution from any method;
- locality: occlusion puts its largest attribution in the one patch that decides a synthetic image's class;
- Grad-CAM and gradient x input agree with hand-written torch oracles (the papers' formulas);
- bad input (a sample out of range, a class that does not exist, Grad-CAM without a convolution, an
  occlusion too costly) gets a message that says what and how to fix it;
- a run's files are never changed, repeated questions come from the cache, the CLI prints the contract.

The CNN and the transformer are conftest.trained_runs (trained once per session by the worker's code);
the digits MLP and the patch CNN train here in-process for a few hundred steps on tiny data.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from studio import explain as ex
from studio.compile import compile_graph
from studio.errors import StudioError
from studio.graph import parse_graph
from tests.conftest import chain


@pytest.fixture(scope="module")
def runs(trained_runs):
    workspace, ids = trained_runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(workspace))
        yield ids


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on this shared 2-core machine two made these small models about 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _workspace(runs):  # these tests share the trained runs' workspace (overrides conftest's per-test one)
    return None


def train(model, x, y, steps: int, lr: float = 1e-2, seed: int = 0):
    """A few hundred full-batch Adam steps in-process (no worker): enough for these tiny problems."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    return model


@pytest.fixture(scope="module")
def digits_mlp():
    from studio.data import get_dataset

    data = get_dataset("digits", seed=0)
    graph = parse_graph(chain(("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
                              ("fc1", "Linear", {"out_features": 32}), ("relu", "ReLU", None),
                              ("fc2", "Linear", {"out_features": 10})))
    model = train(compile_graph(graph, seed=0), data.train.x, data.train.y, steps=300)
    with torch.no_grad():
        accuracy = (model(data.val.x).argmax(1) == data.val.y).float().mean().item()
    assert accuracy > 0.9  # trained, not a random net: completeness on a real decision surface
    return model, data


# ---- completeness ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("baseline", ["zeros", "blurred", "mean"])
def test_integrated_gradients_are_complete_on_a_trained_digits_mlp(digits_mlp, baseline):
    model, data = digits_mlp
    mean = data.train.x.mean(0)
    for i in range(4):
        x = data.val.x[i]
        e = ex.explain(model, x, method="integrated-gradients", settings=ex.Settings(baseline=baseline),
                       train_mean=mean)
        base = ex.make_baseline(baseline, x, is_tokens=False, train_mean=mean)
        with torch.no_grad():  # the oracle: the model itself, not the Check the method reports
            fx, fb = model(x[None])[0, e.target].item(), model(base[None])[0, e.target].item()
        assert e.attributions.shape == (1, 8, 8) and e.target == e.predicted
        assert abs(e.attributions.sum() - (fx - fb)) <= 0.02 * abs(fx - fb), (i, baseline)
        assert e.check.relative_error <= 0.02 and abs(e.check.difference - (fx - fb)) < 1e-4


def test_integrated_gradients_are_complete_on_a_trained_cnn(runs):
    for i in range(3):
        e = ex.explain_run(runs["cnn-a"], "integrated-gradients", sample=i, settings=ex.Settings(n_steps=128))
        assert e.attributions.shape == e.input.shape == (1, 16, 16)
        assert e.check.relative_error <= 0.02, e.check.sentence()


def test_attributions_to_an_inner_layer_have_its_shape_and_are_complete(runs):
    e = ex.explain_run(runs["cnn-a"], "integrated-gradients", sample=0, settings=ex.Settings(layer="pool1"))
    assert e.attributions.shape == (8, 8, 8) and e.notes["layer"] == "pool1"  # MaxPool2d's output per sample
    assert e.check.relative_error <= 0.02, e.check.sentence()
    with pytest.raises(StudioError, match="Occlusion perturbs the input, so it cannot attribute to layer 'pool1'"):
        ex.explain_run(runs["cnn-a"], "occlusion", sample=0, settings=ex.Settings(layer="pool1"))
    with pytest.raises(StudioError, match="layer 'conv9' is not in this model; use a layer path such as 'conv1'"):
        ex.explain_run(runs["cnn-a"], "saliency", sample=0, settings=ex.Settings(layer="conv9"))


def test_kernel_shap_values_sum_to_the_prediction_difference(runs, digits_mlp):
    model, data = digits_mlp
    e = ex.explain(model, data.val.x[0], method="kernel-shap", settings=ex.Settings(n_samples=200))
    assert e.check.relative_error <= 0.02, e.check.sentence()
    e = ex.explain_run(runs["cnn-a"], "kernel-shap", sample=1)
    assert e.check.relative_error <= 0.02, e.check.sentence()


def test_tokens_get_one_attribution_each_and_are_complete(runs):
    from studio.inspection import load_model, load_run, load_run_dataset

    run = load_run(runs["rev"])
    model, data = load_model(run, "best"), load_run_dataset(run)
    for position in (0, 5, 11):
        e = ex.explain_run(runs["rev"], "integrated-gradients", sample=0, settings=ex.Settings(position=position))
        assert e.attributions.shape == (12,) and e.position == position and e.notes["layer"] == "embed"
        x = data.val.x[0]
        pad = torch.full_like(x, e.settings.pad_token)
        with torch.no_grad():
            fx, fb = model(x[None])[0, position, e.target].item(), model(pad[None])[0, position, e.target].item()
        assert abs(e.attributions.sum() - (fx - fb)) <= 0.05 * abs(fx - fb), (position, e.check.sentence())
    e = ex.explain_run(runs["rev"], "occlusion", sample=0)
    assert e.attributions.shape == (12,) and e.position == 11


# ---- dummy, locality, Grad-CAM --------------------------------------------------------------------------

# Gradient and occlusion methods give exactly 0 (a zero gradient, an unchanged score); LIME and KernelSHAP
# fit a linear surrogate to 64 random coalitions, so the ignored column gets the fit's noise: float32
# scores through KernelSHAP's least squares (~1e-5 of the largest value), LIME's SGD Lasso (~1e-3).
NOISE = {"lime": 1e-2, "kernel-shap": 1e-4}


@pytest.mark.parametrize("method", [m for m in ex.METHODS if m != "grad-cam"])
def test_a_column_the_model_ignores_gets_no_attribution(method):
    graph = parse_graph(chain(("input", "Input", {"shape": [5]}), ("fc1", "Linear", {"out_features": 8}),
                              ("act", "Tanh", None), ("fc2", "Linear", {"out_features": 3})))
    model = compile_graph(graph, seed=0)
    with torch.no_grad():
        model.fc1.weight[:, 2] = 0.0  # column 2 cannot reach the output
    x = torch.tensor([0.5, -1.0, 3.0, 0.8, -0.3])
    e = ex.explain(model, x, method=method, settings=ex.Settings(n_samples=64))
    a = np.abs(e.attributions)
    assert a[2] <= NOISE.get(method, 1e-6) * a.max() + 1e-7, (method, e.attributions)
    assert a.max() > 1e-4  # and the others are not all zero


def test_occlusion_finds_the_patch_that_decides_the_class():
    g = torch.Generator().manual_seed(0)
    n = 128
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    for img in x:  # a bright distractor square anywhere, in both classes
        r, c = torch.randint(0, 13, (2,), generator=g).tolist()
        img[0, r:r + 3, c:c + 3] = 1.0
    y = torch.arange(n) % 2
    x[y == 1, 0, 10:14, 2:6] = 0.9  # class 1 iff this patch is lit
    graph = parse_graph(chain(("input", "Input", {"shape": [1, 16, 16]}),
                              ("conv", "Conv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1}),
                              ("relu", "ReLU", None), ("pool", "MaxPool2d", {"kernel_size": 2}),
                              ("flat", "Flatten", None), ("fc", "Linear", {"out_features": 2})))
    model = train(compile_graph(graph, seed=0), x, y, steps=100)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95
    for i in (1, 3, 5):
        e = ex.explain(model, x[i], method="occlusion", target=1, settings=ex.Settings(window=(1, 4, 4),
                                                                                      stride=(1, 2, 2)))
        r, c = np.unravel_index(np.argmax(e.attributions[0]), (16, 16))
        assert 10 <= r < 14 and 2 <= c < 6, (i, r, c)


def test_grad_cam_and_gradient_x_input_match_the_hand_written_oracles(runs):
    from studio.inspection import load_model, load_run, load_run_dataset

    run = load_run(runs["cnn-a"])
    model = load_model(run, "best")
    x = load_run_dataset(run).val.x[2]
    # Selvaraju et al. by hand on conv2: run the layers up to conv2 and the rest separately
    a = F.max_pool2d(F.relu(model.conv1(x[None])), 2).detach()
    acts = model.conv2(a)
    acts.retain_grad()
    model.fc(model.gap(F.relu(acts)).flatten(1))[0, 3].backward()
    cam = F.relu((acts.grad[0].mean((1, 2), keepdim=True) * acts[0]).sum(0))
    cam = F.interpolate(cam[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0].detach()
    model.zero_grad(set_to_none=True)
    e = ex.explain(model, x, method="grad-cam", target=3)
    assert e.notes["layer"] == "conv2" and e.attributions.shape == (1, 16, 16)
    torch.testing.assert_close(torch.from_numpy(e.attributions), cam, atol=1e-5, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())  # the parameters' gradients are left alone
    # gradient x input (Shrikumar et al.) by hand
    xg = x[None].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg)[0, 3], xg)
    e = ex.explain(model, x, method="input-x-gradient", target=3)
    torch.testing.assert_close(torch.from_numpy(e.attributions), (grad * x)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", list(ex.METHODS))
def test_every_method_explains_a_frozen_model_and_leaves_it_frozen(method):
    """A run with frozen layers (or a fine-tune of an imported model) has parameters without gradients:
    attributions only need the input's, and nothing is unfrozen."""
    from tests.test_inspect import cnn

    model = compile_graph(parse_graph(cnn(8)), seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    e = ex.explain(model, torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(1)), method=method,
                   settings=ex.Settings(n_samples=32))
    assert e.attributions.shape == (1, 16, 16) and np.abs(e.attributions).sum() > 0
    assert not any(p.requires_grad for p in model.parameters()) and model.training  # train mode given back


def test_a_sequence_regression_model_gets_attributions_shaped_like_its_input():
    """(T, F) float inputs (a GRU forecaster): occlusion and the surrogate methods cut both axes into
    patches, taking neither for channels; KernelSHAP stays complete on a regression output."""
    from studio.templates import load_template

    model = compile_graph(load_template("gru_forecaster"), seed=0)
    x = torch.rand(tuple(model.input_shape), generator=torch.Generator().manual_seed(0))
    for method in [m for m in ex.METHODS if m != "grad-cam"]:
        e = ex.explain(model, x, method=method, task="regression", settings=ex.Settings(n_samples=32))
        assert e.attributions.shape == tuple(model.input_shape) == (32, 1), method
        if method == "kernel-shap":
            assert e.check.relative_error <= 0.02, e.check.sentence()
    assert e.target == 0


# ---- bad input ------------------------------------------------------------------------------------------

def test_bad_input_gets_clear_messages(runs, digits_mlp):
    with pytest.raises(StudioError, match=r"sample 5000 is out of range: the val split has 60 samples \(0 to 59\)"):
        ex.explain_run(runs["cnn-a"], "saliency", sample=5000)
    with pytest.raises(StudioError, match=r"target class 7 does not exist: this model scores 5 classes, 0 to 4 "
                                          r"\(circle, square, triangle, cross, ring\)"):
        ex.explain_run(runs["cnn-a"], "saliency", sample=0, target=7)
    model, data = digits_mlp
    with pytest.raises(StudioError, match="Grad-CAM needs a convolutional layer .* has none; use integrated"):
        ex.explain(model, data.val.x[0], method="grad-cam")
    with pytest.raises(StudioError, match="unknown attribution method 'shap'; use one of integrated-gradients"):
        ex.explain(model, data.val.x[0], method="shap")
    with pytest.raises(StudioError, match=r"occlusion window \(1, 9, 2\) does not fit a sample of shape \(1, 8, 8\)"):
        ex.explain(model, data.val.x[0], method="occlusion", settings=ex.Settings(window=(1, 9, 2)))
    with pytest.raises(StudioError, match="baseline 'blurred' does not fit inputs of shape \\(5,\\)"):
        ex.make_baseline("blurred", torch.zeros(5), is_tokens=False)
    with pytest.raises(StudioError, match="position 12 is out of range: this model predicts 12 positions"):
        ex.explain_run(runs["rev"], "saliency", settings=ex.Settings(position=12))
    with pytest.raises(StudioError, match="Grad-CAM cannot explain this model, which takes token ids: it needs "
                                          "convolutional feature maps"):
        ex.explain_run(runs["rev"], "grad-cam")
    with pytest.raises(StudioError, match="GradientSHAP cannot explain this model, which takes token ids: it draws"):
        ex.explain_run(runs["rev"], "gradient-shap")


def test_a_costly_occlusion_is_refused_before_it_runs():
    graph = parse_graph(chain(("input", "Input", {"shape": [3, 224, 224]}),
                              ("gap", "AdaptiveAvgPool2d", {"output_size": 1}), ("flat", "Flatten", None),
                              ("fc", "Linear", {"out_features": 4})))
    model = compile_graph(graph, seed=0)
    with pytest.raises(StudioError, match="would evaluate the model on 50,177 inputs, more than the 20,000 allowed"):
        ex.explain(model, torch.rand(3, 224, 224), method="occlusion",
                   settings=ex.Settings(window=(3, 1, 1), stride=(3, 1, 1)))
    assert ex.default_window((3, 224, 224)) == ((3, 28, 28), (3, 14, 14))  # 15 x 15 positions: 226 rows


# ---- progress, cancel, cache, the run's files ---------------------------------------------------------

def test_progress_reaches_the_end_and_cancel_stops_the_computation(digits_mlp):
    model, data = digits_mlp
    seen = []
    ex.explain(model, data.val.x[0], method="integrated-gradients",
               settings=ex.Settings(n_steps=64, internal_batch_size=16), progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 4
    calls = []
    with pytest.raises(ex.Cancelled, match="cancelled"):
        ex.explain(model, data.val.x[0], method="integrated-gradients",
                   settings=ex.Settings(internal_batch_size=8), cancel=lambda: calls.append(1) or len(calls) > 3)
    assert len(calls) == 4  # stopped at the fourth forward, not after all of them


def _tree_digest(directory) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_explaining_never_changes_the_run_and_answers_again_from_the_cache(runs, monkeypatch):
    from studio.inspection import load_run

    run = load_run(runs["cnn-b"])
    before = _tree_digest(run.directory)
    first = ex.explain_run(runs["cnn-b"], "gradient-shap", sample=4)
    cached = list(ex.cache_dir(runs["cnn-b"]).glob("*.npz"))
    assert len(cached) == 1 and run.directory not in cached[0].parents

    def no_compute(*a, **k):
        raise AssertionError("computed again instead of reading the cache")

    monkeypatch.setattr("studio.explain.runs.explain", no_compute)
    again = ex.explain_run(runs["cnn-b"], "gradient-shap", sample=4)
    assert np.array_equal(again.attributions, first.attributions) and again.check == first.check
    assert again.target == first.target and again.settings == first.settings
    assert _tree_digest(run.directory) == before


def test_cli_prints_input_baseline_and_attributions_shaped_like_the_sample(runs, trained_runs):
    workspace, _ = trained_runs
    out = subprocess.run([sys.executable, "-m", "studio", "explain", runs["cnn-a"], "--method",
                          "integrated-gradients", "--sample", "2", "--target", "1", "--json", "--no-cache"],
                         capture_output=True, text=True, env={**__import__("os").environ,
                                                              "STUDIO_WORKSPACE": str(workspace)}, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert {"method", "target", "input", "baseline", "attributions"} <= set(doc)
    assert doc["method"] == "integrated-gradients" and doc["target"] == 1
    assert np.asarray(doc["input"]).shape == np.asarray(doc["attributions"]).shape == (1, 16, 16)
    assert np.asarray(doc["baseline"]).shape == (1, 16, 16) and not np.asarray(doc["baseline"]).any()
    here = ex.explain_run(runs["cnn-a"], "integrated-gradients", sample=2, target=1, use_cache=False)
    # another process on this machine: the same kernels, but thread counts may change reduction order
    torch.testing.assert_close(torch.tensor(doc["attributions"]), torch.from_numpy(here.attributions),
                               atol=1e-5, rtol=1e-4)
    assert abs(doc["check"]["relative_error"]) <= 0.05


# ---- inputs ---------------------------------------------------------------------------------------------

def test_typed_text_becomes_tokens_of_the_models_length():
    vocab = ["A", "B", "0", "1", "2"]
    assert ex.text_to_tokens("AB01", vocab, 6, 2).tolist() == [0, 1, 2, 3, 2, 2]
    assert ex.text_to_tokens("AB0120", vocab, 3, 2).tolist() == [0, 1, 2]
    with pytest.raises(StudioError, match="'x' not in the vocabulary; type only these tokens: AB012"):
        ex.text_to_tokens("Ax", vocab, 6, 2)
    assert ex.default_pad_token(["<pad>", "<unk>", "a"]) == 0
    assert ex.default_pad_token(vocab, torch.tensor([[0, 3, 3, 1]])) == 3  # the commonest token, not a marker


def test_blurred_baseline_keeps_the_mean_and_removes_edges():
    x = torch.zeros(1, 16, 16)
    x[0, 4:12, 4:12] = 1.0
    b = ex.make_baseline("blurred", x, is_tokens=False)
    assert b.shape == x.shape and abs(b.mean() - x.mean()) < 0.02
    assert (b[0, :, 1:] - b[0, :, :-1]).abs().max() < 0.5 * (x[0, :, 1:] - x[0, :, :-1]).abs().max()


# ---- the Inspect page's view, in-process (AppTest) -------------------------------------------------------

def test_why_this_prediction_view_under_apptest(runs):
    """Explain computes on the press (a callback), shows a heatmap per method with its check, the same
    method on a second run, and a token model's typed text as one chip per token."""
    from tests.test_inspect import bar_canvas
    from tests.test_inspect_page import K, canvas_value, elements, image_captions, page

    at = page(runs["cnn-a"], "Why this prediction")
    assert at.button(key=K + "why.run").label == "Explain" and not image_captions(at)  # nothing before the press
    at.multiselect(key=K + "why.methods").set_value(["integrated-gradients", "occlusion", "grad-cam"]).run()
    at.selectbox(key=K + f"why.other.{runs['cnn-a']}").set_value(runs["cnn-b"]).run()
    at.button(key=K + "why.run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    captions = image_captions(at)
    assert [c.split(" for ")[0] for c in captions] == ["integrated-gradients", "occlusion", "grad-cam",
                                                      "integrated-gradients", "integrated-gradients"], captions
    checks = [s.value for s in at.success]
    assert len(checks) == 3 and all(c.startswith("Check: sum of attributions") for c in checks)  # IG x 3
    at.run()  # again: every answer now comes from the cache, no press needed
    assert len(image_captions(at)) == 5 and not elements(at, "progress")

    at.selectbox(key=K + f"why.other.{runs['cnn-a']}").set_value(None).run()
    at.radio(key=K + "why.source").set_value("drawn image").run()
    at.session_state[K + "why.canvas"] = canvas_value(bar_canvas())  # the browser's answer after a stroke
    at.run()
    at.button(key=K + "why.run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(m.value.startswith("**drawn image** · predicted") for m in at.markdown)
    assert len(image_captions(at)) == 3

    at = page(runs["rev"], "Why this prediction")
    at.radio(key=K + "why.source").set_value("typed text").run()
    at.text_input(key=K + "why.text").input("0123").run()
    at.button(key=K + "why.run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    chips = [m.value for m in at.markdown if m.value.startswith('<div style="line-height')]
    assert len(chips) == 1 and chips[0].count("<span") == 12  # 12 positions: "0123" and 8 padding tokens
    at.text_input(key=K + "why.text").input("01x").run()
    assert any("'x' not in the vocabulary" in e.value for e in at.error)
