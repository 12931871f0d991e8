"""Inspect: look inside one run. Feature maps and attention as training went (every saved probe
step), weight and gradient distributions, evaluation on the validation split, live inference on a
dataset sample, an uploaded image or a drawing, with saliency, why a prediction was made (attributions by
Captum: studio.explain), and diagnostics with their evidence."""

import streamlit as st

from components import nav, session
from components.inspect import inspect_explain, inspect_generate, inspect_probes, inspect_results
from components.run_store import open_store, read_or_stop
from components.text import st_escape
from components.train import run_exports
from components.train.run_table import best_metric_text, status_badge
from studio import inspection as ins
from studio.errors import StudioError
from studio.runs import list_runs

st.set_page_config(page_title="Inspect · Neural Studio", page_icon="🔬", layout="wide")
nav.render()

RUN = "studio.inspect.run"
SHOWN = "studio.inspect.shown_run"  # the run this page last showed (and made the session's current run)
VIEW = "studio.inspect.view"
VIEWS = ["Feature maps", "Attention", "Weights & gradients", "Evaluation", "Live inference", "Diagnostics"]
VIEWS.insert(VIEWS.index("Diagnostics"), "Why this prediction")
VIEWS.insert(VIEWS.index("Diagnostics"), "Generate")


st.title("Inspect")
store = open_store()
runs = read_or_stop(list_runs, store=store)
if not runs:
    st.info("No runs yet. Launch one on the Train page, then come back to look inside it.")
    nav.link("pages/3_Train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

by_id = {r.id: r for r in runs}


def run_label(run_id: str) -> str:
    return f"{by_id[run_id].name} ({run_id})"


# The run is in the URL (the selectbox is bound to it, by its label): a browser refresh, a bookmark or a
# shared link opens it. A run another page asked for (its Inspect button) since this page last showed
# one wins over both.
wanted = session.current_run_id()
if wanted in by_id and wanted != st.session_state.get(SHOWN):
    st.session_state[RUN] = wanted
elif st.session_state.get(RUN) not in by_id and st.query_params.get(RUN) not in {run_label(i) for i in by_id}:
    st.session_state[RUN] = runs[0].id
top = st.columns([3, 4], vertical_alignment="bottom")
run_id = top[0].selectbox("Run", list(by_id), key=RUN, format_func=run_label, bind="query-params")
session.set_current_run_id(run_id)
st.session_state[SHOWN] = run_id
record = by_id[run_id]
top[1].markdown(f"{status_badge(record.status)} · dataset {inspect_probes.code_span(record.dataset_id)} · step "
                f"{record.step:,}"
                + (f" of {record.total_steps:,}" if record.total_steps else "")
                + f" · best {st_escape(best_metric_text(record))}")
if record.error:
    st.caption(f"Run message: {st_escape(record.error)}")
run_exports.render(run_id, "studio.inspect.exports")

try:
    run = ins.load_run(run_id)
    if record.status == "imported":  # pretrained weights, trained on a dataset the studio does not have
        from studio.pretrained.info import imported_info

        info = imported_info(run.graph, record.dataset_id, run.directory)
    else:
        info = inspect_probes.run_dataset(run).info  # the run's own options (e.g. image_size) shape it
except StudioError as e:
    st.error(f"This run cannot be inspected: {st_escape(str(e))}")
    st.stop()
if record.status == "imported":
    VIEWS = ["Generate"] if info.task == "language_model" else ["Live inference"]
    VIEWS.append("Why this prediction")  # on an uploaded or drawn image, or typed text (no dataset needed)
    st.caption(f"Imported pretrained weights, trained on {st_escape(record.dataset_id)} (not a dataset of the "
               "studio): " + ("generate from a prompt and see its attention, token by token."
                             if VIEWS[0] == "Generate" else "run it on an uploaded or drawn image, with its feature "
                             "maps and saliency.") + " The views that read a dataset or training snapshots need a "
               "run trained here: fine-tune it on your data (Train: Warm start from run). Why this prediction "
               "explains one input by its attributions.")
try:
    entries = ins.probe_index(run)
except StudioError as e:  # a damaged probe index: the other views still work
    st.warning(st_escape(str(e)))
    entries = []

if st.session_state.get(VIEW) not in VIEWS:  # a view this run does not offer (an imported run's few)
    st.session_state[VIEW] = VIEWS[0]
view = st.radio("View", VIEWS, horizontal=True, key=VIEW, label_visibility="collapsed",
                persist_state="session")
try:
    if view == "Feature maps":
        inspect_probes.render_feature_maps(run, info, entries, record.active)
    elif view == "Attention":
        inspect_probes.render_attention(run, info, entries, record.active)
    elif view == "Weights & gradients":
        inspect_probes.render_weights(run, entries)
    elif view == "Evaluation":
        inspect_results.render_evaluation(run, info)
    elif view == "Live inference":
        inspect_results.render_inference(run, info)
    elif view == "Why this prediction":
        inspect_explain.render_explain(run, info, by_id)
    elif view == "Generate":
        inspect_generate.render_generate(run, info)
    else:
        inspect_results.render_diagnostics(run, record, store, entries)
except StudioError as e:
    st.error(st_escape(str(e)))
