"""TensorBoard and MLflow on the pages (studio.tracking does the work):

- `render_tensorboard_setting()`: the Train form's "TensorBoard log directory" box, and `launch_tags`
  turning it into the run's tags at Launch (or the reason the run was not launched);
- `export_button(run, key)` / `render_export(run)`: a runs-table row's export to TensorBoard or MLflow,
  done in the button's callback (a rerun cannot lose the click), its outcome shown under the row;
- `render_import()` / `external_curves()`: the Compare page's overlay of runs read from a TensorBoard
  log directory or an MLflow run, read-only and labelled external.
"""

from __future__ import annotations

import streamlit as st

from components.text import st_escape
from studio.errors import StudioError
from studio.runs import RunRecord

TB_DIR = "studio.train.tensorboard_dir"
EXPORTING = "studio.train.exporting"          # the run id whose export form is open
EXPORT_RESULT = "studio.train.export_result"  # (run id, "success" | "error", message)
EXTERNAL = "studio.compare.external"          # {location: ExternalRun}
IMPORT_RESULT = "studio.compare.import_result"
_DESTINATIONS = {"tensorboard": "TensorBoard (event files)", "mlflow": "MLflow (tracking store)"}


# ---- Train: live logging ----------------------------------------------------------------------------------

def render_tensorboard_setting() -> None:
    st.text_input("TensorBoard log directory (optional)", key=TB_DIR, persist_state="session",
                  placeholder="e.g. ./tb-logs",
                  help="Also write TensorBoard event files while the run trains, into this folder/<run id>: every "
                       "metric under its name here, the learning rate, weight and gradient histograms at probe "
                       "steps, the graph's summary and, at the end, the hyperparameters. View them with "
                       "`tensorboard --logdir <folder>`. Local runs only; empty: no TensorBoard files.")


def launch_tags(backend: dict | None) -> tuple[dict | None, str | None]:
    """(the run's tags, None) for the folder typed in the form, or (None, why the run cannot launch)."""
    from studio.tracking.common import launch_tags as tags_for

    try:
        return tags_for(st.session_state.get(TB_DIR), (backend or {}).get("kind")) or None, None
    except StudioError as e:
        return None, str(e)


# ---- Train: export a finished run ---------------------------------------------------------------------------

def export_button(run: RunRecord, key: str) -> None:
    st.button("", key=f"{key}.tracking_export", icon=":material/cloud_upload:", disabled=run.active,
              help="Export to TensorBoard or MLflow: once the run has ended" if run.active
              else "Export to TensorBoard or MLflow (metrics, settings, graph, best checkpoint)",
              on_click=lambda: st.session_state.update({EXPORTING: run.id}))


def _export(run: RunRecord) -> None:
    from studio.tracking.export import export_run

    to = st.session_state.get(f"{EXPORTING}.to.{run.id}", "tensorboard")
    target = st.session_state.get(f"{EXPORTING}.target.{run.id}", "")
    try:
        result = export_run(run.id, to, target)
    except StudioError as e:
        st.session_state[EXPORT_RESULT] = (run.id, "error", f"Export failed: {e}")
    else:
        st.session_state[EXPORT_RESULT] = (run.id, "success", result.message[:1].upper() + result.message[1:])


def render_export(run: RunRecord) -> None:
    """Under a row whose export button was pressed: where to, the Export button, the last outcome."""
    if st.session_state.get(EXPORTING) != run.id:
        return
    with st.container(border=True):
        with st.container(horizontal=True, vertical_alignment="bottom"):
            to = st.selectbox("Export to", list(_DESTINATIONS), format_func=_DESTINATIONS.get,
                              key=f"{EXPORTING}.to.{run.id}")
            st.text_input("Log directory" if to == "tensorboard" else "Tracking URI",
                          key=f"{EXPORTING}.target.{run.id}",
                          placeholder="./tb-logs" if to == "tensorboard" else "sqlite:///mlflow.db",
                          help="Events go to <folder>/<run id>" if to == "tensorboard" else
                          "sqlite:///PATH.db (offline; MLflow 3 needs a database store) or http://HOST:5000. "
                          "Exporting again replaces the run's earlier export instead of adding a second.")
            st.button("Export", key=f"{EXPORTING}.go.{run.id}", type="primary", on_click=_export, args=(run,),
                      icon=":material/cloud_upload:")
            st.button("Close", key=f"{EXPORTING}.close.{run.id}",
                      on_click=lambda: st.session_state.pop(EXPORTING, None))
        result = st.session_state.get(EXPORT_RESULT)
        if result and result[0] == run.id:
            getattr(st, result[1])(st_escape(result[2]))


# ---- Compare: overlay runs from elsewhere -------------------------------------------------------------------

def _import() -> None:
    from studio.tracking.external import read_mlflow, read_tensorboard

    source = st.session_state.get(f"{EXTERNAL}.source", "tensorboard")
    try:
        if source == "tensorboard":
            runs = read_tensorboard(st.session_state.get(f"{EXTERNAL}.dir", ""))
        else:
            state = st.session_state
            runs = [read_mlflow(state.get(f"{EXTERNAL}.uri", ""), state.get(f"{EXTERNAL}.run", ""))]
    except StudioError as e:
        st.session_state[IMPORT_RESULT] = ("error", f"Nothing was loaded: {e}")
        return
    loaded = dict(st.session_state.get(EXTERNAL, {}))
    loaded.update({r.location: r for r in runs})
    st.session_state[EXTERNAL] = loaded
    st.session_state[IMPORT_RESULT] = ("success", f"Loaded {', '.join(r.label for r in runs)}.")


def _remove(location: str) -> None:
    st.session_state[EXTERNAL] = {k: v for k, v in st.session_state.get(EXTERNAL, {}).items() if k != location}


def render_import() -> None:
    """The panel that loads external runs, and the list of those loaded (each removable)."""
    loaded = st.session_state.get(EXTERNAL, {})
    with st.expander(f"Runs from TensorBoard or MLflow ({len(loaded)} loaded)", icon=":material/cloud_download:",
                     expanded=bool(loaded)):
        st.caption("Overlay curves logged elsewhere on these runs' charts. They are read-only copies held in "
                   "this session (nothing enters the run store) and labelled *external* in the legends; their "
                   "tags chart under the studio's names when they say which (Loss/train → train_loss).")
        with st.container(horizontal=True, vertical_alignment="bottom"):
            source = st.selectbox("Source", ["tensorboard", "mlflow"], key=f"{EXTERNAL}.source",
                                  format_func={"tensorboard": "TensorBoard log directory", "mlflow": "MLflow run"}.get)
            if source == "tensorboard":
                st.text_input("Log directory", key=f"{EXTERNAL}.dir",
                              placeholder="./runs (what tensorboard --logdir takes)")
            else:
                st.text_input("Tracking URI", key=f"{EXTERNAL}.uri", placeholder="sqlite:///mlflow.db")
                st.text_input("Run id or name", key=f"{EXTERNAL}.run")
            st.button("Load", key=f"{EXTERNAL}.load", on_click=_import, icon=":material/download:")
        message = st.session_state.pop(IMPORT_RESULT, None)
        if message:
            getattr(st, message[0])(st_escape(message[1]))
        for location, run in list(loaded.items()):
            with st.container(horizontal=True, vertical_alignment="center"):
                tags = ", ".join(f"{run.source_tag[k]} → {k}" if run.source_tag[k] != k else k for k in run.series)
                st.markdown(f"**{st_escape(run.label)}**  \n:gray[{st_escape(location)} · {st_escape(tags)}]")
                st.button("", key=f"{EXTERNAL}.remove.{location}", icon=":material/close:",
                          help="Remove from the charts", on_click=_remove, args=(location,))


def external_curves() -> list[tuple]:
    """(label, history, None) of each loaded external run, as `charts.run_figures` takes runs."""
    from studio.tracking.external import ExternalHistory

    return [(run.label, ExternalHistory(run), None) for run in st.session_state.get(EXTERNAL, {}).values()]
