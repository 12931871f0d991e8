"""Train: the current graph and dataset on top, a training form generated from TrainConfig, then the
runs table and live charts. Runs are worker processes; this page only starts them and reads the
run store, so closing the tab stops nothing and reopening it shows every run as it is."""

import time

import streamlit as st

from components import clicks, nav, session
from components.build import panels
from components.data import data_view
from components.figures import charts
from components.run_store import open_store, read_or_stop, shows_store_errors
from components.text import st_escape
from components.train import backend_form, run_exports, run_table, sweep_view, tracking_panel, train_form
from components.train.history_view import update_histories, zoom_control
from studio.data import check_graph_fits, get_info, list_datasets
from studio.errors import DataError, GraphError, StorageError, StudioError
from studio.layers import fmt_shape
from studio.runs import backends, keep_spare_ready, list_runs, start_run

st.set_page_config(page_title="Train · Neural Studio", page_icon="🏋️", layout="wide")
nav.render()

if st.session_state.pop(run_table.GO_INSPECT, False):
    nav.go(run_table.INSPECT_PAGE)

PICKED = "studio.train.picked_runs"
HISTORIES = "studio.train.histories"
REFRESH_S = 1.0


# ---- the graph and the dataset ---------------------------------------------------------------------
st.title("Train")
graph, analysis = session.current_graph(), session.current_analysis()

infos = {i.id: i for i in list_datasets()}
dataset_id = session.current_dataset_id()
if dataset_id not in infos:
    dataset_id = None
options = session.current_dataset_options() if dataset_id else {}
info, options_problem = infos.get(dataset_id), None
if info is not None and options:  # e.g. {"target": "input"}: the task and shapes follow the options
    try:
        info = get_info(dataset_id, options=options)
    except DataError as e:
        info, options_problem = None, f"The dataset options do not apply ({e}); choose the dataset again."


def _shape(shape) -> str:
    return fmt_shape(shape) if shape is not None else "unknown until the errors are fixed"


top = st.columns([3, 3])
with top[0].container(border=True):
    n_err = len(analysis.errors)
    badge = ":green-badge[valid]" if analysis.ok else f":red-badge[{n_err} error{'s' * (n_err != 1)}]"
    st.markdown(f"**Graph** {st_escape(graph.name)} {badge}")
    st.caption(f"{len(graph.nodes)} nodes · {analysis.total_params:,} parameters · input "
               f"{_shape(analysis.input_shape)} → output {_shape(analysis.output_shape)}"
               + (f" · template {session.current_template()}" if session.current_template() else ""))
    nav.link("pages/1_Build.py", label="Edit in Build", icon=":material/account_tree:")
with top[1].container(border=True):
    ids = list(infos)
    shown = {**infos, **({dataset_id: info} if info else {})}  # the current dataset as its options make it
    chosen = st.selectbox("Dataset", ids, index=ids.index(dataset_id) if dataset_id else None,
                          format_func=lambda i: f"{shown[i].name} ({i}) · {shown[i].task}",
                          placeholder="Choose a dataset", key=f"studio.train.dataset.{dataset_id}")
    if chosen != dataset_id:
        session.set_current_dataset_id(chosen)
        st.rerun()
    if options:
        st.markdown(f"**{st_escape(data_view.dataset_label(dataset_id, options))}**")
    if info is not None:
        st.caption(f"{st_escape(info.description)}  \ninput {tuple(info.input_shape)} {info.input_dtype} · output "
                   f"{tuple(info.output_shape)} · " + " / ".join(f"{k} {v:,}" for k, v in info.sizes.items()))
    nav.link("pages/2_Data.py", label="Preview or upload data", icon=":material/dataset:")
    panels.render_dataset_availability(dataset_id)  # must it be downloaded, is it here, its offline stand-in

reasons = [f"{i.node_id}: {i.message}" if i.node_id else i.message for i in analysis.errors]
if options_problem:
    reasons.append(options_problem)
elif info is None:
    reasons.append("No dataset is chosen: pick one above or on the Data page.")
else:
    try:
        reasons += [str(i) for i in check_graph_fits(graph, analysis, info, graph_issues=False)
                    if i.severity == "error"]
    except GraphError as e:
        reasons += [str(i) for i in e.issues]

# ---- one run, or a sweep of many (the Sweep tab runs alone: the rest of the page is the Runs tab) -----
sweep_tab = st.tabs(["Runs", "Sweep"], key="studio.train.tab", bind="query-params")[1]
if sweep_tab.open:
    with sweep_tab:
        sweep_view.render(graph, dataset_id, options, info, reasons, open_store())
    st.stop()

# ---- the training form (components.train.train_form: TrainConfig's schema through the one generated form) ----
task = info.task if info else None
defaults = train_form.start_from_defaults((graph.name, session.current_template(), task),
                                          session.current_template(), task)

store = open_store()
try:
    latest = next(iter(store.list_runs()), None)
except StorageError:  # the Runs section below shows why the store cannot be read
    latest = None
# The form folds once this graph has been launched on this dataset (the runs and charts below matter
# then), and stays open while the graph (node moves aside) or the dataset differs from the last run's.
changed = (latest is None or latest.dataset_id != dataset_id
           or train_form.model_of(latest.graph) != train_form.model_of(graph.to_dict()))
with st.expander("New run", expanded=changed or bool(reasons), icon=":material/add:"):
    backend, refusal = backend_form.render()  # this machine or Ray: cluster resources, clear refusals
    reasons = [*reasons, refusal] if refusal else reasons
    with st.form("studio.train.form", border=True):
        st.markdown("**Training settings**")
        train_form.render_settings(defaults)
        run_name = st.text_input("Run name (optional)", key="studio.train.run_name", max_chars=120)
        tracking_panel.render_tensorboard_setting()
        if reasons:
            st.error("Launch is not possible yet:\n\n" + "\n".join(f"- {st_escape(r)}" for r in reasons))
        launch = clicks.button(st.form_submit_button, "Launch run", key="studio.train.launch", type="primary",
                               icon=":material/rocket_launch:", disabled=bool(reasons))
    train_form.render_transfer(defaults, graph, task)  # after the basics: most runs start from scratch

if launch and not reasons:
    config, problems = train_form.read_config()
    tags, tags_problem = tracking_panel.launch_tags(backend)
    problems = [*problems, ("tensorboard", tags_problem)] if tags_problem else problems
    if problems:
        st.error("The run was not launched; fix these settings:\n\n"
                 + "\n".join(f"- {st_escape(msg)}" for _, msg in problems))
    else:
        try:
            run_id = start_run(graph, info.id, config, name=run_name.strip() or None, dataset_options=options,
                               store=store, backend=backend,
                               parent_id=config.init_from or None, tags=tags)
        except StudioError as e:
            st.error(f"The run was not launched: {st_escape(str(e))}")
        else:
            st.session_state[PICKED] = [run_id]
            st.success(f"Launched {run_id}: it trains in the background; follow it below.")
if backends.of(backend).warm_spares:
    keep_spare_ready(store)  # a worker warms up for the next launch (studio.runs.spare)

# ---- runs and live charts --------------------------------------------------------------------------
runs = read_or_stop(list_runs, store=store)
by_id = {r.id: r for r in runs}
any_active = any(r.active for r in runs)

st.subheader("Runs")
run_table.render_message()

controls = st.columns([4, 2, 1, 2], vertical_alignment="bottom")
picked_now = [r for r in st.session_state.get(PICKED, []) if r in by_id]
if not picked_now and runs:
    picked_now = [runs[0].id]
st.session_state[PICKED] = picked_now
controls[0].multiselect("Runs on the charts", list(by_id), key=PICKED, persist_state="session",
                        format_func=lambda i: f"{by_id[i].name} ({i})")
smoothing = controls[1].slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="studio.train.smoothing",
                               persist_state="session",
                               help="Exponential moving average, debiased as in TensorBoard; 0 = raw values")
log_y = controls[2].toggle("Log scale", key="studio.train.log_y", persist_state="session")
x_axis = controls[3].radio("x axis", list(charts.X_AXIS_CHOICES), horizontal=True, key="studio.train.x_axis",
                           persist_state="session", format_func=charts.X_AXIS_CHOICES.get)
# Zooming into a step range is offered for finished runs (a live run's range grows every second).
zoom = None if any_active else zoom_control(
    "studio.train.zoom", max((by_id[r].step for r in st.session_state.get(PICKED, []) if r in by_id), default=0))


def histories_for(run_ids: list[str], records: dict) -> dict:
    """Per-run bounded history views kept in the session (the drawn points only), updated with what changed."""
    return update_histories(HISTORIES, run_ids, records, store, smoothing, zoom)


def steps_per_epoch(run) -> float | None:
    epochs, max_steps = run.config.get("epochs"), run.config.get("max_steps", 0)
    if run.total_steps and epochs and not max_steps:
        return run.total_steps / epochs
    return None


def render_live() -> None:
    if st.session_state.pop(run_table.GO_INSPECT, False):  # a row's Inspect button reruns only this fragment
        nav.go(run_table.INSPECT_PAGE)
    records = {r.id: r for r in list_runs(store=store)}
    if any(r.active for r in records.values()) != any_active or set(records) != set(by_id):
        st.rerun(scope="app")  # a run started, ended or vanished: refresh the page around the fragment
    run_table.render_runs_table(list(records.values()))

    picked = [r for r in st.session_state.get(PICKED, []) if r in records]
    if not picked:
        return
    histories = histories_for(picked, records)
    st.subheader("Curves")
    figures = charts.run_figures([(records[r].name, histories[r], steps_per_epoch(records[r])) for r in picked],
                                 x_axis=x_axis, smoothing=smoothing, log_y=log_y)
    if not figures and all(records[r].status == "imported" for r in picked):
        st.caption("Imported runs hold pretrained weights and no training: they have no curves.")
    elif not figures:
        st.caption("Waiting for the first metrics (a worker needs a second or two to start)...")
    grid = st.columns(2)
    for n, (title, fig) in enumerate(figures):
        grid[n % 2].plotly_chart(fig, key=f"studio.train.chart.{title}")

    st.subheader("Event log")
    events = []
    for run_id in picked:
        events += [(e, records[run_id].name) for e in store.read_events(run_id)[-200:]]
    events.sort(key=lambda t: t[0].time, reverse=True)
    icons = {"info": "·", "warning": ":orange[:material/warning:]", "error": ":red[:material/error:]"}
    lines = [f"`{time.strftime('%H:%M:%S', time.localtime(e.time))}` {icons.get(e.level, '·')} "
             f"{st_escape(name) + ': ' if len(picked) > 1 else ''}{st_escape(e.message)}" for e, name in events[:40]]
    with st.container(height=220, border=True):
        st.markdown("  \n".join(lines) if lines else "No events yet.")

    st.subheader("Downloads")
    for run_id in picked:
        run = records[run_id]
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown(f"**{st_escape(run.name)}**")
            st.download_button("Metrics (CSV)", lambda r=run_id: run_table.metrics_csv(store, r),
                               file_name=f"{run_id}-metrics.csv", mime="text/csv", on_click="ignore",
                               key=f"studio.train.csv.{run_id}", icon=":material/table:")
            for which in ("best", "last"):
                path = run_table.checkpoint_path(run_id, which)
                if path.exists():
                    st.download_button(f"{which}.pt", lambda p=path: p.read_bytes(), file_name=f"{run_id}-{which}.pt",
                                       mime="application/octet-stream", on_click="ignore",
                                       key=f"studio.train.ckpt.{which}.{run_id}", icon=":material/download:")
                else:
                    st.caption(f"no {which} checkpoint yet")
        run_exports.render(run_id, f"studio.train.exports.{run_id}")


st.fragment(shows_store_errors(render_live), run_every=REFRESH_S if any_active else None)()
run_table.message_seen()  # only a page drawn to here has shown it (render_live may rerun the whole page)
