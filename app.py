"""Home: what Neural Studio is, how to start, the templates it can open, recent graphs and runs."""

import sqlite3
import time

import streamlit as st

from components import nav, pretrained_panel, session
from components.build import graph_files
from components.text import st_escape
from studio.errors import StudioError
from studio.runs.store import Store

st.set_page_config(page_title="Neural Studio", page_icon="🧠", layout="wide")
nav.render()

BUILD = "pages/1_Build.py"
WHAT = {"Data": "pick or upload a dataset", "Train": "train in the background",
        "Inspect": "feature maps, attention, weights", "Compare": "compare runs",
        "Deploy": "quantize, prune, measure"}  # after "Open the X page"


def _open_template(name: str) -> None:
    graph_files.open_template(name)
    st.session_state["studio.home.go_build"] = True


def _open_saved(path: str) -> None:
    graph_files.open_saved(path)
    st.session_state["studio.home.go_build"] = True


if st.session_state.pop("studio.home.go_build", False):
    nav.go(BUILD)

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
    for path, page, icon in nav.PAGES[1:]:
        nav.link(path, f"Open the {page} page" + (f": {WHAT[page]}" if page in WHAT else ""), icon)
    st.subheader("Start from a pretrained model")
    pretrained_panel.render("studio.home.pretrained")
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
graph_files.render_gallery(key_prefix="studio.home.template", label="Open in Build", on_open=_open_template)
