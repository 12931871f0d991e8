"""Deploy: variants of a finished run's model (int8 quantization, pruning) measured side by side on its
validation split, a chart of what each costs and gains, the downloads, and fine-tuning a pruned model
as a new run."""

import streamlit as st

from components import clicks, nav, session
from components.figures import deploy_view
from components.run_store import open_store, read_or_stop
from components.text import st_escape
from studio.deploy import DESCRIPTIONS, METHODS, deploy_report
from studio.deploy.lineage import start_finetune
from studio.errors import StudioError
from studio.runs import list_runs

st.set_page_config(page_title="Deploy · Neural Studio", page_icon="📦", layout="wide")
nav.render()

K = "studio.deploy."
REPORT = K + "report"   # (run_id, methods, sparsity) -> DeployReport of the last measurement

st.title("Deploy")
st.caption("Quantize and prune a trained model, and see on its own validation data what each variant costs in "
           "accuracy and gains in size and CPU speed. Latency is per sample on one CPU thread, the median of "
           "repeated timings taken in turn for every variant.")
store = open_store()
runs = [r for r in read_or_stop(list_runs, store=store) if r.status in ("completed", "stopped")]
if not runs:
    st.info("Deploy needs a finished run with a checkpoint; train one on the Train page first.")
    nav.link("pages/3_Train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

by_id = {r.id: r for r in runs}
current = session.current_run_id()
controls = st.columns([3, 3, 1], vertical_alignment="bottom")
run_id = controls[0].selectbox("Run", list(by_id), index=list(by_id).index(current) if current in by_id else 0,
                               format_func=lambda i: f"{by_id[i].name} ({i}) · {by_id[i].dataset_id}",
                               key=K + "run")
methods = controls[1].multiselect("Variants", [m for m in METHODS if m != "fp32"],
                                  default=[m for m in METHODS if m != "fp32"], key=K + "methods",
                                  format_func=lambda m: m, help="\n".join(f"- {m}: {DESCRIPTIONS[m]}" for m in METHODS))
sparsity = controls[2].number_input("Sparsity", 0.05, 0.95, 0.5, 0.05, key=K + "sparsity",
                                    help="prune: the fraction of Conv/Linear weights zeroed; prune-channels: the "
                                         "fraction of output channels")
wanted = (run_id, tuple(methods), float(sparsity))
if clicks.button(st.button, "Measure variants", type="primary", icon=":material/speed:", key=K + "measure"):
    with st.spinner("Building, measuring and exporting every variant (about a second or more each)..."):
        try:
            st.session_state[REPORT] = (wanted, deploy_report(run_id, methods, sparsity=float(sparsity)))
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

st.subheader("Variants")
st.dataframe(deploy_view.table(report), hide_index=True, key=K + "table",
             column_config={"change": st.column_config.NumberColumn(
                 "change", help="points of accuracy (or the metric's units) against fp32", format="%+.2f")})
for r in report.rows:
    if not r.ok:
        st.warning(f"**{r.method}** is not available for this graph: {st_escape(r.message)}")
st.plotly_chart(deploy_view.tradeoff_figure(report), key=K + "chart")

st.subheader("Downloads")
st.caption("A `.pt2` file is a torch.export program: `torch.export.load(path).module()(x)` runs it in any Python "
           "with torch (no studio). A `.pt` state dict loads into this graph's model or its exported code.")
for r in report.rows:
    if not r.ok:
        continue
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown(f"**{r.method}**")
        if r.program is not None:
            st.download_button(f"{r.method}.pt2", r.program, file_name=f"{report.run_id}-{r.method}.pt2",
                               mime="application/octet-stream", on_click="ignore", key=K + f"pt2.{r.method}",
                               icon=":material/download:")
        if r.state_dict is not None:
            st.download_button(f"{r.method} state dict", r.state_dict, file_name=f"{report.run_id}-{r.method}.pt",
                               mime="application/octet-stream", on_click="ignore", key=K + f"sd.{r.method}",
                               icon=":material/download:")

st.subheader("Fine-tune a pruned model")
st.caption("Starts a new run linked to this one: the same graph, data and settings, starting from this run's "
           "weights pruned as below; pruned weights stay at zero while the rest trains.")
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
