"""Home: what Neural Studio is, how to start, the templates it can open, recent graphs and runs."""

import sqlite3
import time
from pathlib import Path

import streamlit as st

from components import graph_files, session
from components.canvas import st_escape
from studio.errors import StudioError

st.set_page_config(page_title="Neural Studio", page_icon="🧠", layout="wide")

PAGES = Path(__file__).resolve().parent / "pages"
BUILD = "pages/1_Build.py"
LATER = {"2_Data.py": ("Data", "pick or upload a dataset"), "3_Train.py": ("Train", "train in the background"),
         "4_Inspect.py": ("Inspect", "feature maps, attention, weights"), "5_Compare.py": ("Compare", "compare runs")}


def _open_template(name: str) -> None:
    graph_files.open_template(name)
    st.session_state["studio.home.go_build"] = True


def _open_saved(path: str) -> None:
    graph_files.open_saved(path)
    st.session_state["studio.home.go_build"] = True


if st.session_state.pop("studio.home.go_build", False):
    st.switch_page(BUILD)

st.title("Neural Studio")
st.markdown(
    "Build PyTorch models visually: assemble layers into a graph (MLP, CNN, RNN, Transformer, with skips "
    "and merges), see every shape, parameter count and error as you edit, and take the result away as "
    "clean PyTorch code, TorchScript or ONNX."
)

left, right = st.columns([3, 2])
with left:
    st.subheader("Quick start")
    st.markdown(
        "1. Open a **template** below, or go to **Build** and start from the current graph.\n"
        "2. Add layers from the palette, connect them on the canvas, edit their parameters in the inspector: "
        "shapes and issues update on every edit.\n"
        "3. Export from the **Code** tab of the Build page (PyTorch code, graph JSON, TorchScript, ONNX)."
    )
    st.page_link(BUILD, label="Open the Build page", icon=":material/account_tree:")
    missing = [f"{label} ({what})" for file, (label, what) in LATER.items() if not (PAGES / file).exists()]
    for file, (label, what) in LATER.items():
        if (PAGES / file).exists():
            st.page_link(f"pages/{file}", label=f"Open the {label} page: {what}")
    if missing:
        st.caption(f"Not built yet in this version: {', '.join(missing)}. The Build page works on its own.")
with right:
    st.subheader("Current graph")
    graph = session.current_graph()
    st.markdown(f"**{st_escape(graph.name)}**: {len(graph.nodes)} nodes, {len(graph.edges)} edges "
                "(autosaved; it is waiting for you in Build)")
    st.subheader("Recent saved graphs")
    saved = graph_files.saved_graphs()[:8]
    if not saved:
        st.caption("No saved graphs yet: save one from the Files tab of the Build page.")
    for s in saved:
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.markdown(f"{st_escape(s.name)}  \n:gray[{time.strftime('%Y-%m-%d %H:%M', time.localtime(s.modified))}]")
        c2.button("Open", key=f"studio.home.open.{s.name}", on_click=_open_saved, args=(str(s.path),))

    st.subheader("Recent runs")
    try:
        from studio.runs.store import Store
    except ImportError:
        Store = None
    if Store is None:
        st.caption("Training runs are not part of this version yet.")
    else:
        try:
            runs = Store().list_runs()[:8]
        except (OSError, sqlite3.Error, StudioError) as e:  # an unreadable store must not break Home
            runs = []
            st.caption(f"The run store could not be read: {st_escape(str(e))}")
        if not runs:
            st.caption("No runs yet.")
        for r in runs:
            metric = f" · {r.best_metric_name} {r.best_metric:.4g}" if r.best_metric is not None else ""
            st.markdown(f"{st_escape(r.name)} · {r.status} · {st_escape(r.dataset_id)}{st_escape(metric)}")

st.subheader("Templates")
items = graph_files.templates()
if not items:
    st.info("No templates are installed in this version yet: open the Build page to start from a new graph.")
else:
    cols = st.columns(3)
    for i, t in enumerate(items):
        with cols[i % 3].container(border=True):
            st.markdown(f"**{st_escape(t.title)}**")
            st.caption(st_escape(t.description))
            if t.dataset:
                st.caption(f"Dataset: {st_escape(t.dataset)}")
            st.button("Open in Build", key=f"studio.home.template.{t.name}", on_click=_open_template,
                      args=(t.name,), icon=":material/open_in_new:")
