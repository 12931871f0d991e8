"""Deploy: variants of a finished run's model (int8 quantization, pruning, onnxruntime) measured side by
side on its validation split in the runtime each ships in, the verdict (what to ship within an accuracy
budget) first, a chart of what each costs and gains, the downloads with what each needs, and fine-tuning
a pruned model as a new run."""

import json

import streamlit as st

from components import clicks, nav, session
from components.figures import deploy_view
from components.run_store import open_store, read_or_stop
from components.text import st_escape
from studio.deploy import DESCRIPTIONS, METHODS, deploy_report
from studio.deploy.lineage import start_finetune
from studio.deploy.predict_script import predict_script
from studio.deploy.recommend import DEFAULT_BUDGET, recommend
from studio.deploy.report import CALIBRATION_BATCHES, MAX_CALIBRATION_BATCHES
from studio.deploy.variants import EAGER_INT8, SHRUNK_STATE_DICT_LOADS_WITH, STATE_DICT_LOADS_WITH
from studio.errors import StudioError
from studio.graph import parse_graph
from studio.runs import list_runs

st.set_page_config(page_title="Deploy · Neural Studio", page_icon="📦", layout="wide")
nav.render()

K = "studio.deploy."
REPORT = K + "report"   # (run_id, methods, sparsity, calibration batches) -> DeployReport of the last measurement

st.title("Deploy")
st.caption("Quantize and prune a trained model, and see on its own validation data what each variant costs in "
           "accuracy and gains in size and CPU speed, measured in the runtime it ships in (PyTorch eager or "
           "onnxruntime). Latency is per sample at batch 1 and batch 64, on one CPU thread, the median of 15 "
           "timings taken in turn (interleaved) for every variant.")
store = open_store()
runs = [r for r in read_or_stop(list_runs, store=store) if r.status in ("completed", "stopped")]
if not runs:
    st.info("Deploy needs a finished run with a checkpoint; train one on the Train page first.")
    nav.link("pages/3_Train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

by_id = {r.id: r for r in runs}
current = session.current_run_id()
controls = st.columns([3, 3, 1, 1], vertical_alignment="bottom")
run_id = controls[0].selectbox("Run", list(by_id), index=list(by_id).index(current) if current in by_id else 0,
                               format_func=lambda i: f"{by_id[i].name} ({i}) · {by_id[i].dataset_id}",
                               key=K + "run")
methods = controls[1].multiselect("Variants", [m for m in METHODS if m != "fp32"],
                                  default=[m for m in METHODS if m != "fp32"], key=K + "methods",
                                  format_func=lambda m: m, help="\n".join(f"- {m}: {DESCRIPTIONS[m]}" for m in METHODS))
sparsity = controls[2].number_input("Sparsity", 0.05, 0.95, 0.5, 0.05, key=K + "sparsity",
                                    help="prune: the fraction of Conv/Linear weights zeroed; prune-channels: the "
                                         "fraction of output channels zeroed; shrink-channels: the same channels "
                                         "removed")
calibration = controls[3].number_input("Calibration batches", 1, MAX_CALIBRATION_BATCHES, CALIBRATION_BATCHES, 1,
                                      key=K + "calibration",
                                      help="int8-static and onnx-int8-static: how many batches of the run's "
                                           "training split (its batch size) calibrate the activation ranges; "
                                           "validation and test data are never used")
wanted = (run_id, tuple(methods), float(sparsity), int(calibration))
if clicks.button(st.button, "Measure variants", type="primary", icon=":material/speed:", key=K + "measure"):
    with st.spinner("Building, measuring and exporting every variant (about a second or more each)..."):
        try:
            st.session_state[REPORT] = (wanted, deploy_report(run_id, methods, sparsity=float(sparsity),
                                                              calibration_batches=int(calibration)))
        except StudioError as e:
            st.session_state.pop(REPORT, None)
            st.error(f"Measuring failed: {st_escape(str(e))}")

saved = st.session_state.get(REPORT)
if saved is None:
    st.info("Pick the variants and press **Measure variants**: fp32 is always measured as the reference.")
    st.stop()
(measured_for, report) = saved
if measured_for != wanted:
    st.caption(f"Showing the last measurement (run {measured_for[0]}, sparsity {measured_for[2]}); press "
               "Measure variants for the current choice.")

st.subheader("Verdict")
unit = "points" if "accuracy" in report.metric_name else "% of fp32"
budget = st.number_input(f"Accuracy budget ({unit} a variant may lose)", 0.0, 100.0, DEFAULT_BUDGET, 0.1,
                         key=K + "budget", width=320)
rec = recommend(report, float(budget))
(st.success if rec.method else st.warning)(st_escape(rec.verdict), icon=":material/verified:")
eager = [r.method for r in report.rows if r.ok and r.method in EAGER_INT8]
if eager:
    st.caption(f"{', '.join(eager)} run int8 emulated in PyTorch eager (quantize/dequantize ops, no int8 kernels): "
               "smaller files, slower than fp32, not offered for speed. The int8 that runs fast on a CPU is "
               "onnx-int8-static in onnxruntime.")
st.caption(f"Ratios (×) are against fp32 in PyTorch eager (the run as trained). Static int8 calibrated on "
           f"{report.calibration_batches} training batch(es), {report.calibration_samples} samples.")

st.subheader("Variants")
st.dataframe(deploy_view.table(report, rec), hide_index=True, key=K + "table",
             column_config={
                 "verdict": st.column_config.TextColumn("verdict", width=250),
                 "variant": st.column_config.TextColumn("variant", width=125),
                 "runtime": st.column_config.TextColumn("runtime", width=105),
                 "change": st.column_config.NumberColumn(
                     "change", help=f"{unit} against fp32 on the validation split", format="%+.2f", width=70),
                 "size ×": st.column_config.NumberColumn("size ×", format="%.2f", width=65,
                                                         help="file size against fp32's .pt2"),
                 "latency @1 ×": st.column_config.NumberColumn("latency @1 ×", format="%.2f", width=95,
                                                               help="per-sample latency at batch 1 against fp32"),
                 f"latency @{report.latency_batch} ×": st.column_config.NumberColumn(
                     f"latency @{report.latency_batch} ×", format="%.2f", width=100,
                     help=f"per-sample latency at batch {report.latency_batch} against fp32"),
                 "loads with": st.column_config.TextColumn("loads with", width="large"),
                 "notes": st.column_config.TextColumn("notes", width="large")})
for r in report.rows:
    if not r.ok:
        st.warning(f"**{r.method}** is not available for this graph: {st_escape(r.message)}")
st.plotly_chart(deploy_view.tradeoff_figure(report, float(budget)), key=K + "chart")

st.subheader("Downloads")
st.caption("Each file names exactly what loading it needs. A `.pt2` is a torch.export program "
           "(`torch.export.load(path).module()(x)`); an `.onnx` runs in onnxruntime with numpy only, and its "
           f"`predict.py` (save it beside the .onnx) shows how. A `.pt` state dict needs {STATE_DICT_LOADS_WITH}.")
for r in report.rows:
    if not r.ok:
        continue
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown(f"**{r.method}** · {r.runtime}" + (" · :green[recommended]" if r.method == rec.method else ""))
        if r.onnx is not None:
            onnx_name = f"{report.run_id}-{r.method}.onnx"
            st.download_button(f"{r.method}.onnx", r.onnx, file_name=onnx_name, mime="application/octet-stream",
                               on_click="ignore", key=K + f"onnx.{r.method}", icon=":material/download:")
            st.download_button(f"{r.method} predict.py", predict_script(report, r, onnx_name), file_name="predict.py",
                               mime="text/x-python", on_click="ignore", key=K + f"py.{r.method}",
                               icon=":material/download:")
        if r.program is not None:
            st.download_button(f"{r.method}.pt2", r.program, file_name=f"{report.run_id}-{r.method}.pt2",
                               mime="application/octet-stream", on_click="ignore", key=K + f"pt2.{r.method}",
                               icon=":material/download:")
        if r.state_dict is not None:
            st.download_button(f"{r.method} state dict", r.state_dict, file_name=f"{report.run_id}-{r.method}.pt",
                               mime="application/octet-stream", on_click="ignore", key=K + f"sd.{r.method}",
                               icon=":material/download:")
        if r.graph is not None:
            st.download_button(f"{r.method} graph.json", json.dumps(r.graph, indent=2),
                               file_name=f"{r.graph['name']}.json", mime="application/json", on_click="ignore",
                               key=K + f"graph.{r.method}", icon=":material/download:")
            st.button("Open in Build", key=K + f"open.{r.method}", icon=":material/open_in_new:",
                      on_click=session.open_graph, args=(parse_graph(r.graph),),
                      kwargs={"dataset_id": report.dataset_id, "dataset_options": report.dataset_options})
        st.caption(f"needs {r.loads_with}" + (" — slower than fp32 here" if r.method in EAGER_INT8 else "")
                   + (f"; its state dict: {SHRUNK_STATE_DICT_LOADS_WITH}" if r.graph is not None else ""))
if st.session_state.get(K + "open.shrink-channels"):
    nav.link("pages/1_Build.py", label="The shrunk graph is open: go to Build", icon=":material/account_tree:")

st.subheader("Fine-tune a pruned model")
st.caption("Starts a new run linked to this one: the same graph, data and settings, starting from this run's "
           "weights pruned as below; pruned weights stay at zero while the rest trains. Measure the finished "
           "fine-tune here with **shrink-channels** at the same sparsity: its held-at-zero channels are removed, "
           "giving the fine-tuned smaller dense graph.")
with st.form(K + "finetune"):
    cols = st.columns(3)
    method = cols[0].selectbox("Pruning", ["prune", "prune-channels"], key=K + "ft.method")
    ft_sparsity = cols[1].number_input("Sparsity", 0.05, 0.95, float(sparsity), 0.05, key=K + "ft.sparsity")
    epochs = cols[2].number_input("Epochs", 1, 1000, 3, key=K + "ft.epochs")
    go = clicks.button(st.form_submit_button, "Start fine-tuning", key=K + "finetune.start",
                       icon=":material/rocket_launch:")
if go:
    try:
        child = start_finetune(report.run_id, method, float(ft_sparsity), epochs=int(epochs), store=store)
    except StudioError as e:
        st.error(f"Fine-tuning was not started: {st_escape(str(e))}")
    else:
        st.success(f"Started run {child} (parent {report.run_id}); follow it on the Train page, then measure it here.")
        nav.link("pages/3_Train.py", label="Go to Train", icon=":material/model_training:")
