"""Compare: two or more runs side by side. Their curves overlaid on one axis, a table of final and best
metrics, the training settings that differ, and how their graphs differ (nodes added, removed,
type or params changed) against the first run picked."""

import pandas as pd
import streamlit as st

from components import charts, nav, session
from components.canvas import st_escape
from components.inspect_probes import code_span
from components.run_store import open_store
from components.run_table import status_badge
from studio import inspect as ins
from studio.runs import Store, list_runs

st.set_page_config(page_title="Compare · Neural Studio", page_icon="⚖️", layout="wide")
nav.render()

PICKED = "studio.compare.runs"
HISTORIES = "studio.compare.histories"


def metrics_table(store: Store, picked: list[str], names: dict[str, str]) -> pd.DataFrame:
    """One row per run: status, steps, then `final` and `best` of every validation metric and train_loss."""
    rows = []
    for run_id in picked:
        record = by_id[run_id]
        row = {"run": names[run_id], "status": record.status, "dataset": record.dataset_id, "steps": record.step}
        keys = [k for k in store.metric_keys(run_id) if k.startswith("val_") or k == "train_loss"]
        for key in sorted(keys, key=lambda k: (k != "train_loss", k)):
            _, values = store.metric_series(run_id, key)
            if values:
                row[f"{key} final"] = values[-1]
                row[f"{key} best"] = ins.best_value(key, values)
        rows.append(row)
    return pd.DataFrame(rows)


st.title("Compare runs")
store = open_store()
runs = list_runs(store=store)
if len(runs) < 2:
    st.info(f"Comparing needs at least two runs; there {'is' if len(runs) == 1 else 'are'} {len(runs)}. "
            "Launch more on the Train page (e.g. the same graph with another learning rate).")
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
if len(picked) < 2:
    st.info("Pick at least two runs.")
    st.stop()

# ---- curves ----------------------------------------------------------------------------------------
controls = st.columns([2, 2, 1])
x_axis = controls[0].radio("x axis", list(charts.X_AXIS_CHOICES), horizontal=True, key="studio.compare.x_axis",
                           persist_state="session", format_func=charts.X_AXIS_CHOICES.get)
smoothing = controls[1].slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="studio.compare.smoothing",
                               persist_state="session")
log_y = controls[2].toggle("Log scale", key="studio.compare.log_y", persist_state="session")
cache = st.session_state.setdefault(HISTORIES, {})
for run_id in picked:
    history = cache.get(run_id)
    if history is None or history.started != by_id[run_id].started:
        history = cache[run_id] = charts.MetricHistory(run_id, started=by_id[run_id].started)
    history.update(store)
figures = charts.run_figures([(names[r], cache[r], None) for r in picked], x_axis=x_axis, smoothing=smoothing,
                             log_y=log_y)
st.subheader("Curves")
grid = st.columns(2)
for n, (title, fig) in enumerate(figures):
    grid[n % 2].plotly_chart(fig, key=f"studio.compare.chart.{title}")

# ---- metrics ------------------------------------------------------------------------------------------
st.subheader("Final and best metrics")
st.markdown(" · ".join(f"{status_badge(by_id[r].status)} {st_escape(names[r])}" for r in picked))
st.dataframe(metrics_table(store, picked, names), hide_index=True)

# ---- settings and graphs --------------------------------------------------------------------------------
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
    d = ins.graph_diff(by_id[reference].graph, by_id[run_id].graph)
    st.markdown(f"**{st_escape(names[run_id])}** against **{st_escape(names[reference])}**")
    if d.empty:
        st.caption("Same graph (node positions aside).")
    else:
        st.markdown("\n".join(f"- {code_span(line)}" for line in d.lines()))
