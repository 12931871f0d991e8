"""Deploy in the runtime it ships in: onnxruntime's fp32 and static int8 (QDQ) variants of a trained digits
MLP, calibration on training data only, the recommendation, `compress --format onnx` with its predict.py,
a model whose weighted op onnxruntime does not quantize, and every download loaded in a fresh interpreter
with exactly what the page says it needs.

One seed MLP is trained on `digits` by the real worker for the module, and measured once with every
variant (`report_all`); a two-step LSTM run stands for a model onnxruntime cannot quantize.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.data import apply_dataset, get_info
from studio.deploy import deploy_report, onnxrt
from studio.deploy import report as report_module
from studio.deploy.recommend import recommend
from studio.deploy.variants import LOADS_WITH, METHODS
from studio.graph import parse_graph
from studio.templates import load_template
from studio.training import TrainConfig
from tests.conftest import chain, train_here

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = 3


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return tmp_path_factory.mktemp("deploy-onnx-ws")


@pytest.fixture(scope="module")
def trained(ws):
    """The seed MLP trained on digits (~95 % validation accuracy)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(ws))
        graph = apply_dataset(load_template("mlp"), get_info("digits"))
        return train_here(graph, "digits", TrainConfig(epochs=8, batch_size=64, probes=False, seed=0))


@pytest.fixture(scope="module")
def report_all(ws, trained):
    """(report, calibration seen by each static int8 builder): every variant measured once, with spies on
    what the two static int8 builders were given to calibrate on."""
    seen = {}
    quantize, make_variant = onnxrt.quantize_int8_static, report_module.make_variant

    def spy_onnx(fp32, calibration, **kw):
        seen["onnx-int8-static"] = [x.clone() for x in calibration]
        return quantize(fp32, calibration, **kw)

    def spy_pt2e(model, method, **kw):
        if method == "int8-static":
            seen["int8-static"] = [x.clone() for x in kw["calibration"]]
        return make_variant(model, method, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnxrt, "quantize_int8_static", spy_onnx)
        mp.setattr(report_module, "make_variant", spy_pt2e)
        report = deploy_report(trained, METHODS, sparsity=0.5, repeats=1, calibration_batches=CALIBRATION,
                               workspace=ws)
    return report, seen


def _val(ws, run_id):
    from studio.inspection import load_run, load_run_dataset

    return load_run_dataset(load_run(run_id, ws))


# ---- int8 in onnxruntime ----------------------------------------------------------------------------------

def test_int8_onnx_of_a_trained_digits_mlp_runs_in_onnxruntime_within_a_point_of_fp32(ws, trained, report_all):
    import onnx

    report, _ = report_all
    fp32, ort32, ort8 = report.row("fp32"), report.row("onnx-fp32"), report.row("onnx-int8-static")
    assert ort32.ok and ort8.ok, (ort32.message, ort8.message)
    assert ort8.runtime == ort32.runtime == "onnxruntime" and fp32.runtime == "PyTorch eager"
    assert fp32.metric > 0.9
    n_val = len(_val(ws, trained).val.y)
    # fp32 onnxruntime computes what PyTorch does (other kernels, float rounding): at most one sample flips
    assert abs(ort32.metric - fp32.metric) <= 1 / n_val + 1e-9
    assert abs(ort8.metric - fp32.metric) <= 0.01, (ort8.metric, fp32.metric)  # the bound: <= 1 point
    assert ort8.bytes <= 0.35 * ort32.bytes and ort8.weight_bytes <= 0.3 * ort32.weight_bytes

    # what the file is: QDQ, signed int8 weights per output channel, the IR version onnxruntime reads
    proto = onnx.load_from_string(ort8.onnx)
    assert proto.ir_version <= onnx.load_from_string(ort32.onnx).ir_version
    inits = {t.name: t for t in proto.graph.initializer}
    gemms = [n for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")]
    deq = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    assert len(gemms) == 4 and all(g.input[1] in deq for g in gemms)
    for g in gemms:
        weight, scale = (inits[deq[g.input[1]].input[i]] for i in (0, 1))
        assert weight.data_type == onnx.TensorProto.INT8
        assert scale.dims[0] == weight.dims[0 if g.op_type == "Gemm" else 1] > 1  # one scale per output channel

    # the downloaded bytes, in a new session, give the accuracy the page reported
    data = _val(ws, trained)
    session = onnxrt.session(ort8.onnx)
    logits = session.run(None, {"x": data.val.x.numpy()})[0]
    assert (logits.argmax(-1) == data.val.y.numpy()).mean() == pytest.approx(ort8.metric, abs=1e-12)


def test_calibration_uses_the_chosen_number_of_training_batches_only(ws, trained, report_all):
    report, seen = report_all
    data = _val(ws, trained)
    batch = 64
    expected = [data.train.x[i * batch:(i + 1) * batch] for i in range(CALIBRATION)]
    for method in ("onnx-int8-static", "int8-static"):
        got = seen[method]
        assert len(got) == CALIBRATION, method
        for x, want in zip(got, expected, strict=True):
            assert torch.equal(x, want), method  # the first training batches, unshuffled, nothing else
    assert report.calibration_batches == CALIBRATION and report.calibration_samples == CALIBRATION * batch
    assert f"calibrated on {CALIBRATION} training batches" in report.row("onnx-int8-static").notes[0]
    with pytest.raises(Exception, match=r"calibration_batches=0 is out of range"):
        deploy_report(trained, ["onnx-int8-static"], calibration_batches=0, workspace=ws)


def test_recommendation_is_within_the_budget_and_eager_int8_is_labelled_slower(report_all):
    report, _ = report_all
    fp32 = report.row("fp32")
    rec = recommend(report, budget=1.0)
    pick = report.row(rec.method)
    assert (fp32.metric - pick.metric) * 100 <= 1.0 and rec.labels[rec.method] == "recommended"
    assert rec.verdict.startswith(("Ship ", "int8 does not pay"))
    ok = [r for r in report.rows if r.ok and (fp32.metric - r.metric) * 100 <= 1.0]
    speed = {r.method: (r.latency_ms_batch1 / fp32.latency_ms_batch1 * r.latency_ms_batch / fp32.latency_ms_batch)
             for r in ok}
    assert speed[rec.method] <= min(speed.values()) * 1.05 ** 2 + 1e-12  # the fastest, or a smaller near-tie
    for method in ("int8-weight", "int8-dynamic", "int8-static"):
        label = rec.labels[method]
        slower = speed.get(method, 2) > 1
        assert ("slower (eager int8): not for speed" in label) == slower or "over budget" in label, (method, label)
    # a zero budget keeps only variants that lose nothing
    strict = recommend(report, budget=0.0)
    assert strict.method is None or report.row(strict.method).metric >= fp32.metric


# ---- a model onnxruntime does not quantize ---------------------------------------------------------------

def test_an_op_onnxruntime_does_not_quantize_says_so_and_the_fp32_rows_still_show(ws, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    graph = parse_graph(chain(("input", "Input", {"shape": [1, 8, 8]}), ("rows", "Reshape", {"shape": [8, 8]}),
                              ("lstm1", "LSTM", {"hidden_size": 10, "return_sequences": False}), name="lstm"))
    run_id = train_here(graph, "digits", TrainConfig(epochs=1, max_steps=2, batch_size=32, probes=False, seed=0))
    report = deploy_report(run_id, ["onnx-fp32", "onnx-int8-static"], repeats=1, workspace=ws)
    bad = report.row("onnx-int8-static")
    assert not bad.ok
    assert "turns no op of this model int8: its weighted ops (LSTM x1) have no int8 QDQ kernel" in bad.message
    assert "onnx-fp32 variant runs this model in onnxruntime" in bad.message
    assert report.row("fp32").ok and report.row("onnx-fp32").ok and report.row("onnx-fp32").metric is not None

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["studio.session.run_id"] = run_id
    at.switch_page("pages/6_Deploy.py")
    at.run()
    at.multiselect(key="studio.deploy.methods").set_value(["onnx-fp32", "onnx-int8-static"])
    at.button(key="studio.deploy.measure").click().run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[0].value
    assert table["variant"].tolist() == ["fp32", "onnx-fp32", "onnx-int8-static"]
    assert table["runtime"].tolist() == ["PyTorch eager", "onnxruntime", "onnxruntime"]
    assert table["size ×"].notna().tolist() == [True, True, False]
    assert any("onnx-int8-static** is not available" in w.value and "LSTM x1" in w.value for w in at.warning)
    assert at.success and at.success[0].value.startswith("Ship ")  # the verdict comes first, from the fp32 rows
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["fp32.pt2", "fp32 state dict", "onnx-fp32.onnx", "onnx-fp32 predict.py"]


# ---- the CLI and predict.py --------------------------------------------------------------------------------

def test_compress_int8_static_to_onnx_writes_the_file_and_predict_py_that_runs_without_torch(
        ws, trained, tmp_path, monkeypatch, capsys):
    from studio.__main__ import main

    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    out = tmp_path / "model.onnx"
    code = main(["compress", trained, "--method", "int8-static", "--format", "onnx", "--calibration-batches", "2",
                 "--repeats", "2", "-o", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["variant"] == "onnx-int8-static" and figures["format"] == "onnx"
    assert figures["runtime"] == "onnxruntime" and figures["threads"] == 1 and figures["calibration_batches"] == 2
    assert [r["method"] for r in figures["rows"]] == ["fp32", "onnx-fp32", "onnx-int8-static"]
    assert figures["bytes"] == out.stat().st_size and figures["loads_with"] == LOADS_WITH["onnx-int8-static"]
    assert figures["recommendation"]["budget"] == 1.0 and figures["recommendation"]["method"]
    assert abs(figures["delta"]) <= 0.01
    assert any("verdict (budget 1)" in line for line in lines[:-1])
    assert Path(figures["predict_script"]) == tmp_path / "predict.py"

    # predict.py in a fresh, isolated interpreter (-I), run away from the repository: onnxruntime + numpy only
    x = _val(ws, trained).val.x[:5].numpy()
    np.save(tmp_path / "x.npy", x)
    script = ("import runpy, sys\n"
              "sys.argv = ['predict.py', 'x.npy']\n"
              "runpy.run_path('predict.py', run_name='__main__')\n"
              "assert 'torch' not in sys.modules and 'studio' not in sys.modules, 'predict.py needed torch'\n")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=clean, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    printed = [line.split() for line in run.stdout.splitlines()[1:]]
    expected = onnxrt.session(out.read_bytes()).run(None, {"x": x})[0].argmax(-1)
    names = get_info("digits").class_names
    assert printed == [[str(i), names[int(c)]] for i, c in enumerate(expected)]


def test_compress_onnx_refuses_a_method_onnxruntime_does_not_run(trained, ws, tmp_path, monkeypatch, capsys):
    from studio.__main__ import main

    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    assert main(["compress", trained, "--method", "prune", "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 1
    assert "--format onnx runs in onnxruntime and takes --method int8-static (or fp32), got 'prune'" in \
        capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


# ---- every download loads where the page says -------------------------------------------------------------

def test_every_download_loads_in_a_fresh_interpreter_with_exactly_what_it_names(ws, trained, report_all, tmp_path):
    """One isolated interpreter (-I, no studio importable) loads, in order: every .pt2 the page says needs
    torch only and the state dicts through the graph's exported code, checking torchao was never imported;
    int8-static.pt2, which must fail in plain torch; the torchao-weight programs, which import torchao by
    themselves; and int8-static.pt2 again after `import torchao`, as its row says."""
    from studio.codegen import to_code
    from studio.deploy.variants import PT2_TORCH, PT2_TORCHAO
    from studio.inspection import load_run

    report, _ = report_all
    run = load_run(trained, ws)
    (tmp_path / "exported_model.py").write_text(to_code(run.graph, class_name="Model"))
    shrunk_graph = parse_graph(report.row("shrink-channels").graph)  # its state dict loads into this graph's code
    (tmp_path / "exported_shrunk.py").write_text(to_code(shrunk_graph, class_name="Model"))
    x = _val(ws, trained).val.x[:4]
    torch.save(x, tmp_path / "x.pt")
    groups = {PT2_TORCH: [], PT2_TORCHAO: [], LOADS_WITH["int8-static"]: []}
    state_dicts = []
    for r in report.rows:
        if r.program is not None:
            (tmp_path / f"{r.method}.pt2").write_bytes(r.program)
            groups[r.loads_with].append(r.method)  # a KeyError here: a requirement this test does not load
        if r.state_dict is not None:
            (tmp_path / f"{r.method}.pt").write_bytes(r.state_dict)
            state_dicts.append(r.method)
    plain, auto = groups[PT2_TORCH], groups[PT2_TORCHAO]
    assert groups[LOADS_WITH["int8-static"]] == ["int8-static"] and auto == ["int8-weight", "int8-dynamic"]
    assert plain == ["fp32", "prune", "prune-channels", "shrink-channels"] and state_dicts == plain
    script = f"""
import sys, torch
try:
    import studio
except ImportError:
    pass
else:
    raise SystemExit('studio importable')
x = torch.load('x.pt', weights_only=True)
out = {{}}
for name in {plain!r}:
    out[name + '.pt2'] = torch.export.load(name + '.pt2').module()(x)
sys.path.insert(0, '.')  # -I leaves the working directory off the path; the exported code is here
import exported_model, exported_shrunk
for name in {state_dicts!r}:
    m = (exported_shrunk if name == 'shrink-channels' else exported_model).Model().eval()
    m.load_state_dict(torch.load(name + '.pt', weights_only=True))
    with torch.no_grad():
        out[name + '.pt'] = m(x)
assert 'torchao' not in sys.modules, 'a torch-only download imported torchao'
try:
    torch.export.load('int8-static.pt2')
except Exception:
    pass
else:
    raise SystemExit('int8-static.pt2 loaded without torchao: its row says it needs it')
for name in {auto!r}:
    out[name + '.pt2'] = torch.export.load(name + '.pt2').module()(x)
assert 'torchao' in sys.modules, 'the torchao-weight programs did not need torchao: their rows say they do'
import torchao
out['int8-static.pt2'] = torch.export.load('int8-static.pt2').module()(x)
torch.save(out, 'out.pt')
"""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=clean, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    from studio.deploy import make_variant
    from studio.training.transfer import load_trained

    _, model = load_trained(trained, ws)
    # Same CPU, another process: the kernels are the same, the values may differ in the last bits only
    # (thread count and allocation alignment can change the summation order): fp32 tolerance.
    tol = {"rtol": 1e-5, "atol": 1e-5}
    with torch.no_grad():
        torch.testing.assert_close(got["fp32.pt2"], model(x), **tol)
        torch.testing.assert_close(got["fp32.pt"], model(x), **tol)
        pruned = make_variant(model, "prune", sparsity=0.5).module
        torch.testing.assert_close(got["prune.pt"], pruned(x), **tol)
        torch.testing.assert_close(got["prune.pt2"], pruned(x), **tol)
        zeroed = make_variant(model, "prune-channels", sparsity=0.5).module  # what shrink-channels computes
        torch.testing.assert_close(got["shrink-channels.pt"], zeroed(x), **tol)
        torch.testing.assert_close(got["shrink-channels.pt2"], zeroed(x), **tol)
        for name in ("int8-weight.pt2", "int8-dynamic.pt2", "int8-static.pt2"):  # int8: the classes of fp32
            assert (got[name].argmax(-1) == model(x).argmax(-1)).float().mean() >= 0.75, name


# ---- the verdict's rule, on rows made by hand -----------------------------------------------------------------

def _row(method, metric, size, b1, b64):
    from studio.deploy.report import VariantRow
    from studio.deploy.variants import RUNTIMES

    return VariantRow(method, "", metric_name="val_accuracy", metric=metric, bytes=size, latency_ms_batch1=b1,
                      latency_ms_batch=b64, runtime=RUNTIMES[method])


def _report(*rows):
    from studio.deploy.report import DeployReport

    return DeployReport("r", "val_accuracy", 64, 0.5, list(rows))


def test_when_int8_cannot_pay_the_verdict_says_why_and_recommends_fp32_onnxruntime():
    fp32 = _row("fp32", 0.90, 1000, 1.0, 0.5)
    slow = _report(fp32, _row("onnx-fp32", 0.90, 950, 0.2, 0.1), _row("onnx-int8-static", 0.90, 260, 0.24, 0.1))
    rec = recommend(slow)
    assert rec.method == "onnx-fp32" and rec.labels["onnx-int8-static"] == "within budget"
    assert rec.verdict.startswith("int8 does not pay for this model: at batch 1 it is 1.20x slower than fp32 "
                                  "onnxruntime; at batch 64 it is no faster than fp32 onnxruntime")
    assert "Ship onnx-fp32 (onnxruntime): 0.95x the fp32 file, 5.00x faster at batch 1" in rec.verdict

    lossy = _report(fp32, _row("onnx-fp32", 0.90, 950, 0.2, 0.1), _row("onnx-int8-static", 0.885, 260, 0.1, 0.03))
    rec = recommend(lossy, budget=1.0)
    assert rec.method == "onnx-fp32" and rec.labels["onnx-int8-static"] == "over budget: -1.50 points"
    assert "it loses 1.50 points, over the budget of 1" in rec.verdict
    assert recommend(lossy, budget=2.0).method == "onnx-int8-static"  # a wider budget lets it in

    # within 5 % of the fastest, the smaller file wins
    tie = _report(fp32, _row("onnx-fp32", 0.90, 950, 0.2, 0.1), _row("onnx-int8-static", 0.90, 260, 0.205, 0.102))
    assert recommend(tie).method == "onnx-int8-static"
    # nothing faster within the budget: keep fp32, said as such
    alone = recommend(_report(fp32, _row("prune", 0.90, 1000, 1.01, 0.51)))
    assert alone.method == "fp32" and alone.verdict.startswith("Keep fp32 (PyTorch eager): no variant measured here")


def test_a_quantized_file_stamped_with_onnx_newest_ir_version_is_brought_back_to_what_onnxruntime_reads(
        monkeypatch):
    """The trap: onnx 1.23 stamps a model it rebuilds with IR 14, which onnxruntime 1.31 refuses to load."""
    import onnx
    import onnxruntime.quantization as ortq

    from studio.compile import compile_graph

    model = compile_graph(parse_graph(chain(("input", "Input", {"shape": [6]}), ("fc1", "Linear", {"out_features": 8}),
                                            ("relu", "ReLU", {}), ("fc2", "Linear", {"out_features": 3}))),
                          seed=0).eval()
    fp32 = onnxrt.fp32_onnx(model)
    stamped = onnx.load_from_string(fp32)
    stamped.ir_version = onnx.IR_VERSION
    with pytest.raises(Exception, match="could not load this model"):
        onnxrt.session(stamped.SerializeToString())  # the trap is real with these versions

    real = ortq.quantize_static

    def stamping(model_input, model_output, *args, **kwargs):
        real(model_input, model_output, *args, **kwargs)
        proto = onnx.load(model_output)
        proto.ir_version = onnx.IR_VERSION
        onnx.save(proto, model_output)

    monkeypatch.setattr(ortq, "quantize_static", stamping)
    g = torch.Generator().manual_seed(0)
    data, _ = onnxrt.quantize_int8_static(fp32, [torch.rand(16, 6, generator=g)])
    assert onnx.load_from_string(data).ir_version == onnx.load_from_string(fp32).ir_version < onnx.IR_VERSION
    x = torch.rand(4, 6, generator=g)
    # int8 of a 6-8-3 MLP calibrated on 16 samples: each output within a few quantization steps of fp32
    # (steps of about 1/255 of each tensor's range, three tensors quantized in a row; up to 0.056 was
    # seen over random inputs). The bound is for the file loading and computing the same function.
    with torch.no_grad():
        torch.testing.assert_close(onnxrt.OrtModel(data)(x), model(x), rtol=0, atol=0.1)
