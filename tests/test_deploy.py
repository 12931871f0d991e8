"""studio.deploy: quantized and pruned variants of a trained run, against PyTorch and torchao as
oracles, the compress CLI (its program loads in a fresh interpreter without the studio), clear
messages for what a graph does not support, and the Deploy page under AppTest.

One MLP is trained on `digits` by the real worker once for the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from studio.compile import compile_graph
from studio.data import apply_dataset, get_info
from studio.deploy import deploy_report, make_variant
from studio.deploy.variants import prunable
from studio.errors import ExportError
from studio.graph import parse_graph
from studio.templates import load_template
from studio.training import TrainConfig
from tests.conftest import train_here

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 180
COMPRESS_KEYS = {"run_id", "method", "metric_name", "fp32_metric", "metric", "fp32_bytes", "bytes",
                 "nonzero_params", "params", "latency_ms_batch1", "fp32_latency_ms_batch1", "path",
                 "variant", "format", "runtime", "delta", "fp32_weight_bytes", "weight_bytes", "latency_batch",
                 "latency_ms_batch", "fp32_latency_ms_batch", "threads", "calibration_batches", "loads_with", "notes",
                 "rows", "recommendation"}


def digits_mlp():
    return apply_dataset(load_template("mlp"), get_info("digits"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(workspace, run id) of the seed MLP trained on digits to ~97% validation accuracy."""
    ws = tmp_path_factory.mktemp("deploy-ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(ws))
        run_id = train_here(digits_mlp(), "digits", TrainConfig(epochs=8, batch_size=64, probes=False, seed=0))
    return ws, run_id


# ---- pruning --------------------------------------------------------------------------------------------

def test_global_l1_pruning_zeroes_exactly_the_asked_fraction_of_the_smallest_weights():
    model = compile_graph(digits_mlp(), seed=0).eval()
    variant = make_variant(model, "prune", sparsity=0.3)
    layers = prunable(variant.module)
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    assert zeros == round(0.3 * total)
    # the oracle: one global threshold on |w| over the original weights
    before = torch.cat([m.weight.detach().abs().flatten() for _, m in prunable(model)])
    threshold = before.kthvalue(round(0.3 * total)).values
    for (_, orig), (_, pruned) in zip(prunable(model), layers, strict=True):
        kept = pruned.weight != 0
        assert torch.equal(pruned.weight[kept], orig.weight[kept])
        assert (orig.weight.abs()[~kept] <= threshold).all()
    assert all(int((m.weight == 0).sum()) == 0 for _, m in prunable(model))  # the original is untouched


def test_channel_pruning_zeroes_whole_rows_and_keeps_the_output_layer():
    model = compile_graph(digits_mlp(), seed=0).eval()
    pruned = make_variant(model, "prune-channels", sparsity=0.25).module
    for name, m in prunable(pruned):
        rows = (m.weight == 0).all(dim=1)
        if name == "fc4":
            assert not rows.any()
        else:
            assert int(rows.sum()) == round(0.25 * m.out_features)
            assert (m.bias[rows] == 0).all()
            norms = dict(prunable(model))[name].weight.norm(dim=1)
            assert norms[rows].max() <= norms[~rows].min()  # the smallest L2 rows went


@pytest.mark.parametrize("sparsity", [0, 1, 1.5, -0.1, True])
def test_a_sparsity_outside_0_1_is_refused(sparsity):
    with pytest.raises(ExportError, match=r"sparsity=.* is out of range; expected a fraction 0 < sparsity < 1"):
        make_variant(nn.Sequential(nn.Linear(4, 2)), "prune", sparsity=sparsity)


# ---- quantization -----------------------------------------------------------------------------------------

def test_int8_weight_only_linear_stays_within_the_rounding_bound():
    """Per output channel symmetric int8: each weight is off by at most half a step, step = max|w_row| / 127.5,
    so |y - y_q| <= sum|x| * max|w_row| / 255 (plus float rounding)."""
    torch.manual_seed(0)
    lin = nn.Linear(96, 40)
    x = torch.randn(16, 96)
    q = make_variant(nn.Sequential(lin), "int8-weight").module
    with torch.no_grad():
        y, yq = lin(x), q(x)
    bound = x.abs().sum(dim=1, keepdim=True) * lin.weight.abs().amax(dim=1) / 254 + 1e-5
    assert (y - yq).abs().le(bound).all()
    assert not torch.equal(y, yq)  # it did quantize


def test_int8_static_refuses_recurrent_layers_and_names_them():
    g = parse_graph({"format": "studio.graph/1", "name": "rnn", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [5, 3]}},
        {"id": "lstm1", "type": "LSTM", "params": {"hidden_size": 8}},
        {"id": "fc", "type": "Linear", "params": {"out_features": 2}}],
        "edges": [{"source": "input", "target": "lstm1"}, {"source": "lstm1", "target": "fc"}]})
    model = compile_graph(g, seed=0).eval()
    x = torch.randn(4, 5, 3)
    with pytest.raises(ExportError, match=r"int8-static is not supported for recurrent layers: lstm1 \(LSTM\)"):
        make_variant(model, "int8-static", example=x, calibration=[x])
    weight_only = make_variant(model, "int8-weight")
    assert any("these stay fp32: lstm1 (LSTM)" in n for n in weight_only.notes)


def test_torchao_quantization_of_a_graph_without_linear_layers_says_so():
    g = parse_graph({"format": "studio.graph/1", "name": "conv", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [1, 6, 6]}},
        {"id": "conv1", "type": "Conv2d", "params": {"out_channels": 2, "kernel_size": 3}}],
        "edges": [{"source": "input", "target": "conv1"}]})
    with pytest.raises(ExportError, match="int8-weight quantizes Linear layers and this graph has none"):
        make_variant(compile_graph(g, seed=0), "int8-weight")
    with pytest.raises(ExportError, match="method 'int4' is not known"):
        make_variant(compile_graph(g, seed=0), "int4")


def test_quantized_seed_mlp_keeps_its_digits_accuracy_within_2_points(trained):
    ws, run_id = trained
    report = deploy_report(run_id, ["int8-weight", "int8-dynamic", "int8-static", "prune"], sparsity=0.5,
                           repeats=1, workspace=ws)
    fp32 = report.row("fp32")
    assert fp32.metric_name == "val_accuracy" and fp32.metric > 0.9
    for method in ("int8-weight", "int8-dynamic", "int8-static"):
        row = report.row(method)
        assert row.ok, row.message
        assert abs(row.metric - fp32.metric) <= 0.02, (method, row.metric, fp32.metric)
        assert row.weight_bytes < 0.35 * fp32.weight_bytes  # int8 weights: ~1/4 of fp32 plus scales
        assert row.params == fp32.params
        assert row.latency_ms_batch1 > 0 and row.latency_ms_batch > 0
    pruned = report.row("prune")
    layers = sum(p.numel() for n, p in compile_graph(digits_mlp()).named_parameters() if n.endswith("weight"))
    assert fp32.nonzero_params - pruned.nonzero_params >= round(0.5 * layers) - 100  # ~half of the weights
    assert pruned.state_dict is not None and report.row("int8-weight").state_dict is None


# ---- the CLI and a fresh interpreter -----------------------------------------------------------------------

def test_compress_cli_json_and_the_program_loads_without_the_studio(trained, tmp_path, monkeypatch, capsys):
    from studio.__main__ import main

    ws, run_id = trained
    out = tmp_path / "pruned.pt2"
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    code = main(["compress", run_id, "--method", "prune", "--sparsity", "0.5", "--repeats", "2", "-o", str(out),
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert set(figures) == COMPRESS_KEYS
    assert figures["method"] == "prune" and figures["metric_name"] == "val_accuracy"
    assert figures["nonzero_params"] < 0.6 * figures["params"]
    assert any("val_accuracy" in line for line in lines[:-1])

    # a fresh interpreter, isolated (-I: no PYTHONPATH, no current directory), run away from the repository
    x = torch.rand(3, 1, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch\n"
            "assert 'studio' not in sys.modules\n"
            "try:\n    import studio\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('studio importable')\n"
            f"m = torch.export.load({str(out)!r}).module()\n"
            f"y = m(torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True))\n"
            f"torch.save(y, {str(tmp_path / 'y.pt')!r})\n")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, env=clean, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    from studio.training.transfer import load_trained

    _, model = load_trained(run_id, ws)
    expected = make_variant(model, "prune", sparsity=0.5).module(x)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt", weights_only=True), expected)


def test_compress_of_an_unknown_run_or_a_bad_sparsity_says_so(trained, tmp_path, capsys):
    from studio.__main__ import main

    assert main(["compress", "nope", "--method", "int8-weight", "-o", str(tmp_path / "x.pt2")]) == 1
    assert "error: run 'nope' has no run directory" in capsys.readouterr().err
    ws, run_id = trained
    os.environ["STUDIO_WORKSPACE"] = str(ws)  # the autouse fixture's monkeypatch restores it
    assert main(["compress", run_id, "--method", "prune", "--sparsity", "2", "-o", str(tmp_path / "x.pt2")]) == 1
    assert "sparsity=2.0 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "x.pt2").exists()


# ---- the page ------------------------------------------------------------------------------------------------

def test_deploy_page_measures_variants_offers_downloads_and_starts_a_linked_fine_tune(trained, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from studio.runs import Store, list_runs, reconcile

    ws, run_id = trained
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["studio.session.run_id"] = run_id
    at.switch_page("pages/6_Deploy.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="studio.deploy.run").value == run_id
    at.multiselect(key="studio.deploy.methods").set_value(["int8-weight", "prune"])
    at.button(key="studio.deploy.measure").click().run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[0].value
    assert table["variant"].tolist() == ["fp32", "int8-weight", "prune"]
    assert (table["size ×"].iloc[1] < 1.0) and table["non-zero"].iloc[2] < 0.6 * table["params"].iloc[2]
    assert abs(table["change"].iloc[1]) <= 2.0
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["fp32.pt2", "fp32 state dict", "int8-weight.pt2", "prune.pt2", "prune state dict"]
    assert len(at.get("plotly_chart")) == 1

    at.button(key="studio.deploy.finetune.start").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Started run" in s.value for s in at.success)
    child = next(r for r in Store().list_runs() if r.id != run_id)
    assert child.parent_id == run_id and child.config["prune_method"] == "prune"
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline and any(r.active for r in list_runs()):
        reconcile()
        time.sleep(0.3)
    assert Store().get_run(child.id).status == "completed", Store().get_run(child.id).error


def test_deploy_exports_show_warnings_other_than_known_pytorch_noise():
    """Only studio.export's known PyTorch noise is hidden around torch.export and quantization, as in every export."""
    import warnings

    from studio.deploy.measure import export_program

    class Loud(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            warnings.warn("the user's own warning", UserWarning, stacklevel=1)
            return self.fc(x)

    x = torch.randn(2, 3)
    for name, run in (("export_program", lambda: export_program(Loud().eval(), x)),
                      ("int8-static", lambda: make_variant(Loud(), "int8-static", example=x, calibration=[x]))):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            run()
        assert "the user's own warning" in [str(w.message) for w in seen], name
