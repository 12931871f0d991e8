"""Compare: two or more runs side by side (studio runs, and runs loaded from TensorBoard or MLflow). Their
curves overlaid on one axis, a table of final and best metrics, the training settings that differ, and how
their graphs differ (nodes added, removed, type or params changed) against the first run picked.

The curves come from each run's downsampled history (a few thousand bucket rows, whatever the run's
length); the table comes from the raw rows, read on a server thread so a long run never holds up the
page."""

import pandas as pd
import streamlit as st

from components import nav, session
from components.figures import charts
from components.inspect.inspect_probes import code_span
from components.run_store import in_background, open_store, read_or_stop, shows_store_errors
from components.text import st_escape
from components.train import tracking_panel
from components.train.history_view import update_histories, zoom_control
from components.train.run_table import status_badge
from studio import inspection as ins
from studio.deploy.lineage import teacher_pairs, teacher_student_rows
from studio.errors import GraphError
from studio.runs import Store, list_runs
from studio.runs.history_read import final_and_best

st.set_page_config(page_title="Compare · Neural Studio", page_icon="⚖️", layout="wide")
nav.render()

PICKED = "studio.compare.runs"
HISTORIES = "studio.compare.histories"


def run_metrics(store: Store, run_id: str) -> dict[str, tuple[float, float, float]]:
    """key -> (final, lowest, highest) of the run's validation metrics and train_loss, from its raw rows."""
    keys = [k for k in store.metric_keys(run_id) if k.startswith("val_") or k == "train_loss"]
    return final_and_best(store.connect(), run_id, keys)


def metrics_table(found: dict[str, dict], picked: list[str], names: dict[str, str]) -> pd.DataFrame:
    """One row per run: status, steps, then `final` and `best` of every validation metric and train_loss."""
    rows = []
    for run_id in picked:
        record = by_id[run_id]
        row = {"run": names[run_id], "status": record.status, "dataset": record.dataset_id, "steps": record.step}
        ordered = sorted(found[run_id].items(), key=lambda kv: (kv[0] != "train_loss", kv[0]))
        for key, (final, lowest, highest) in ordered:
            row[f"{key} final"] = final
            row[f"{key} best"] = ins.best_value(key, [lowest, highest])
        rows.append(row)
    return pd.DataFrame(rows)


st.title("Compare runs")
store = open_store()
runs = read_or_stop(list_runs, store=store)
if not runs:
    st.info("Comparing needs a run of this studio; there are none yet. Launch one on the Train page, then compare "
            "it with another (e.g. the same graph with another learning rate) or with a run from TensorBoard or "
            "MLflow.")
    nav.link("pages/3_Train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

by_id = {r.id: r for r in runs}
names = {r.id: f"{r.name} ({r.id[-6:]})" for r in runs}
if PICKED not in st.session_state:
    first = session.current_run_id() if session.current_run_id() in by_id else runs[0].id
    st.session_state[PICKED] = [first] + [r.id for r in runs if r.id != first][:1]
st.session_state[PICKED] = [r for r in st.session_state[PICKED] if r in by_id]
picked = st.multiselect("Runs to compare (the first is the reference for the differences)", list(by_id),
                        key=PICKED, format_func=lambda i: names[i], persist_state="session")
if not picked:
    st.info("Pick the runs to compare.")
    st.stop()

# ---- curves ----------------------------------------------------------------------------------------
controls = st.columns([2, 2, 1])
x_axis = controls[0].radio("x axis", list(charts.X_AXIS_CHOICES), horizontal=True, key="studio.compare.x_axis",
                           persist_state="session", format_func=charts.X_AXIS_CHOICES.get)
smoothing = controls[1].slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="studio.compare.smoothing",
                               persist_state="session")
log_y = controls[2].toggle("Log scale", key="studio.compare.log_y", persist_state="session")
zoom = zoom_control("studio.compare.zoom", max(by_id[r].step for r in picked))
histories = read_or_stop(update_histories, HISTORIES, picked, by_id, store, smoothing, zoom)
tracking_panel.render_import()  # runs from TensorBoard or MLflow, overlaid read-only and marked external
overlaid = [(names[r], histories[r], None) for r in picked] + tracking_panel.external_curves()
if len(overlaid) < 2:
    st.info(f"Pick a second run, or load one from TensorBoard or MLflow above, to compare "
            f"{st_escape(names[picked[0]])} with it.")
    st.stop()
figures = charts.run_figures(overlaid, x_axis=x_axis, smoothing=smoothing, log_y=log_y, legend=False)
st.subheader("Curves")
st.html(charts.shared_legend([name for name, _, _ in overlaid]))  # one legend for every chart
grid = st.columns(2)
for n, (title, fig) in enumerate(figures):
    grid[n % 2].plotly_chart(fig, key=f"studio.compare.chart.{title}")

# ---- metrics ------------------------------------------------------------------------------------------
st.subheader("Final and best metrics")
st.markdown(" · ".join(f"{status_badge(by_id[r].status)} {st_escape(names[r])}" for r in picked))


def table_reads() -> dict:
    """The background read of each picked run's raw rows, started once per run and state (a run still
    training is read again once it has logged more)."""
    return {r: in_background(("compare.metrics", r, by_id[r].step, by_id[r].status, by_id[r].started),
                             run_metrics, store, r) for r in picked}


def render_metrics_table() -> None:
    """The table once every picked run's raw rows are read; until then a note, re-checked twice a second."""
    reads = table_reads()
    if all(f.done() for f in reads.values()):
        st.dataframe(metrics_table({r: f.result() for r, f in reads.items()}, picked, names), hide_index=True)
        if st.session_state.pop("studio.compare.table_pending", False):
            st.rerun(scope="app")  # stop the polling: run_every is fixed when the page draws the fragment
        return
    st.session_state["studio.compare.table_pending"] = True
    st.caption(f":material/hourglass_top: Reading the final and best values from the raw metric rows "
               f"({sum(by_id[r].step for r in picked):,} steps)...")


st.fragment(shows_store_errors(render_metrics_table),
            run_every=None if all(f.done() for f in table_reads().values()) else 0.5)()

# ---- distillation: each picked student next to its teacher ----------------------------------------------
for student, teacher in teacher_pairs([by_id[r] for r in picked]):
    st.subheader(f"Teacher and student: {st_escape(names.get(student, student))}")
    st.dataframe(pd.DataFrame(teacher_student_rows(store, student, teacher)), hide_index=True,
                 key=f"studio.compare.distill.{student}")

# ---- settings and graphs --------------------------------------------------------------------------------
if len(picked) < 2:
    st.caption("Settings and graphs are compared between runs of this studio: pick a second one to see them.")
    st.stop()
st.subheader("Training settings that differ")
configs = [{"dataset": by_id[r].dataset_id, **by_id[r].config} for r in picked]
diff = ins.config_diff(configs)
if diff:
    st.dataframe(pd.DataFrame({names[r]: [str(v[i]) for v in diff.values()] for i, r in enumerate(picked)},
                              index=list(diff)),
                 column_config={"_index": st.column_config.TextColumn(  # wide enough for the longest label
                     "setting", width=max(90, 8 * max(len(k) for k in diff) + 24))})
else:
    st.caption("Every training setting and the dataset are the same.")

st.subheader("Graph differences")
reference = picked[0]
for run_id in picked[1:]:
    st.markdown(f"**{st_escape(names[run_id])}** against **{st_escape(names[reference])}**")
    try:
        d = ins.graph_diff(by_id[reference].graph, by_id[run_id].graph)
    except GraphError as e:  # a row whose graph was damaged by hand: its record says so
        st.warning(f"Cannot compare the graphs: {st_escape(str(e))}")
        continue
    if d.empty:
        st.caption("Same graph (node positions aside).")
    else:
        st.markdown("\n".join(f"- {code_span(line)}" for line in d.lines()))
