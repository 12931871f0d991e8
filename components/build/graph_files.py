"""Where graphs come from and go to: templates, a new graph, the workspace's saved graphs, uploads.

Saved graphs live in `workspace/graphs/<name>.json`; names starting with '_' are the studio's own
(the autosave) and are not listed. An upload that does not parse or validate is reported and
leaves the current graph as it was.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from components import session
from components.build import canvas
from components.text import st_escape
from studio.errors import GraphError, Issue
from studio.graph import Graph, load_graph, loads_graph, save_graph
from studio.templates import list_templates, load_template
from studio.workspace import workspace_dir

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_MESSAGE = "studio.build.files_message"  # (kind, text) shown once after an action
_UPLOAD_KEY = "studio.build.upload"
_SAVE_NAME = "studio.build.save_name"


@dataclass(frozen=True)
class SavedGraph:
    name: str
    path: Path
    modified: float


# ---- pure helpers --------------------------------------------------------------------------------

def saved_graphs() -> list[SavedGraph]:
    """Graphs saved in the workspace, newest first."""
    folder = workspace_dir() / "graphs"
    out = [SavedGraph(p.stem, p, p.stat().st_mtime) for p in folder.glob("*.json") if not p.name.startswith("_")]
    return sorted(out, key=lambda s: s.modified, reverse=True)


def name_problem(name: str) -> str | None:
    if not NAME_RE.match(name or ""):
        return (f"name {name[:40]!r} cannot be a file name; use 1 to 64 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit (e.g. 'mnist-cnn')")
    return None


def save_to_workspace(graph: Graph, name: str) -> Path:
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    path = workspace_dir() / "graphs" / f"{name}.json"
    g = graph.copy()
    g.name = name
    save_graph(g, path)
    return path


def parse_upload(data: bytes) -> tuple[Graph | None, list[Issue]]:
    """(graph, []) for a graph file whose structure is valid, else (None, every issue found).

    Layer-level issues (a wrong shape) do not block opening: the user fixes them on the canvas.
    """
    try:
        return loads_graph(data), []
    except GraphError as e:
        return None, e.issues


# ---- callbacks -----------------------------------------------------------------------------------

def _say(kind: str, text: str) -> None:
    st.session_state[_MESSAGE] = (kind, text)


def open_template(name: str) -> None:
    info = next((t for t in list_templates() if t.name == name), None)
    graph = load_template(name)
    if any(n.position is None for n in graph.nodes):
        graph = canvas.auto_layout(graph, canvas.direction(), only_missing=True)
    dataset_id, options, note = dataset_for_template(graph, info)
    session.open_graph(graph, template=name, dataset_id=dataset_id, dataset_options=options)
    canvas.select_node(None)
    _say("success", f"Opened template {name}. {note}")


def dataset_for_template(graph: Graph, info) -> tuple[str | None, dict | None, str]:
    """The dataset to use with an opened template, and a sentence for the user: the one the user had
    chosen while the template fits it as it is, else the template's own (saying which and why)."""
    from studio.analysis import analyze
    from studio.data import check_graph_fits, get_info
    from studio.errors import StudioError

    own = (info.dataset, info.dataset_options) if info else (None, None)
    current, options = session.current_dataset_id(), session.current_dataset_options()
    if current is None or current == own[0]:
        return (*own, f"Its dataset: {own[0]}." if own[0] else "")
    try:
        problems = [i for i in check_graph_fits(graph, analyze(graph), get_info(current, options=options or None))
                    if i.severity == "error"]
    except StudioError as e:
        problems = [e]
    if not problems:
        return current, options, f"It fits your dataset {current}, which stays chosen."
    if own[0] is None:
        return current, options, (f"It does not fit your dataset {current} yet ({problems[0]}): adapt it on the "
                                  "Data page.")
    return (*own, f"It does not fit your dataset {current} ({problems[0]}), so it uses its own, {own[0]}; "
                  "choose yours again on the Data page to adapt the graph to it.")


def _on_new() -> None:
    session.open_graph(session.empty_graph())
    canvas.select_node("input")
    _say("success", "New graph: an Input node to build on. Add layers from the palette.")


def open_saved(path: str) -> None:
    try:
        graph = load_graph(path)
    except GraphError as e:
        _say("error", f"Could not open {Path(path).name}: " + "; ".join(str(i) for i in e.issues[:5]))
        return
    if any(n.position is None for n in graph.nodes):
        graph = canvas.auto_layout(graph, canvas.direction(), only_missing=True)
    session.open_graph(graph)
    canvas.select_node(None)
    _say("success", f"Opened {Path(path).stem}.")


def _on_save() -> None:
    name = (st.session_state.get(_SAVE_NAME) or "").strip()
    try:
        path = save_to_workspace(session.current_graph(), name)
    except ValueError as e:
        _say("error", str(e))
        return
    except OSError as e:
        _say("error", f"Could not write {name}.json: {e.strerror or e}")
        return
    graph = session.current_graph().copy()
    graph.name = name
    session.set_current_graph(graph, undoable=False)
    _say("success", f"Saved as {path.name} in the workspace.")


def _on_upload() -> None:
    upload = st.session_state.get(_UPLOAD_KEY)
    if upload is None:
        return
    graph, issues = parse_upload(upload.getvalue())
    if graph is None:
        lines = "\n".join(f"- {st_escape(str(i))}" for i in issues[:12])
        more = f"\n- ... and {len(issues) - 12} more" if len(issues) > 12 else ""
        _say("error", f"{st_escape(upload.name)} is not a valid graph; the current graph is unchanged.\n\n"
                      f"{lines}{more}")
        return
    if any(n.position is None for n in graph.nodes):
        graph = canvas.auto_layout(graph, canvas.direction(), only_missing=True)
    session.open_graph(graph)
    canvas.select_node(None)
    n_issues = len(session.current_analysis().issues)
    note = f" It has {n_issues} issue(s) to fix: see the Issues tab." if n_issues else ""
    _say("success", f"Opened {st_escape(upload.name)}.{note}")


# ---- panels --------------------------------------------------------------------------------------

def render_message() -> None:
    message = st.session_state.pop(_MESSAGE, None)
    if message:
        kind, text = message
        if kind == "success":  # in the page's message slot, not a toast: a toast covers the toolbar's buttons
            st.success(text, icon=":material/check_circle:")
        else:
            st.error(text)


def render_newer_elsewhere() -> None:
    """When another browser tab autosaved different work after this one: say so, and let the user choose."""
    found = session.newer_elsewhere()
    if found is None:
        return
    other, when = found
    with st.container(border=True):
        saved_at = time.strftime("%H:%M:%S", time.localtime(when))
        st.markdown(f":material/tab: Another tab saved newer work at {saved_at}: "
                    f"**{st_escape(other.name)}** ({len(other.nodes)} nodes). This tab keeps its own graph "
                    f"(**{st_escape(session.current_graph().name)}**, {len(session.current_graph().nodes)} nodes) "
                    "unless you open the other one here.")
        with st.container(horizontal=True):
            st.button("Open the other tab's graph here", key="studio.build.newer_open",
                      on_click=session.open_newer_elsewhere, icon=":material/download:",
                      help="Undo brings this tab's graph back.")
            st.button("Keep this tab's graph", key="studio.build.newer_keep", on_click=session.keep_this_tab)


def render_gallery(columns: int = 3, key_prefix: str = "studio.build.template", label: str = "Open",
                   on_open=None) -> None:
    """A card per template with its description and a button that opens it (`on_open(name)`)."""
    cols = st.columns(columns)
    for i, t in enumerate(list_templates()):
        with cols[i % columns].container(border=True):
            st.markdown(f"**{st_escape(t.title)}**")
            st.caption(st_escape(t.description))
            if t.dataset:
                st.caption(f"Dataset: {st_escape(t.dataset)}")
            st.button(label, key=f"{key_prefix}.{t.name}", on_click=on_open or open_template, args=(t.name,),
                      icon=":material/open_in_new:")


def render_files(graph: Graph) -> None:
    """New, save, open saved, upload and download."""
    left, right = st.columns(2)
    with left:
        st.markdown("**Save to the workspace**")
        if st.session_state.get(_SAVE_NAME + ".for") != graph.name:  # follow the graph when another is opened
            st.session_state[_SAVE_NAME + ".for"] = graph.name
            st.session_state[_SAVE_NAME] = graph.name if not name_problem(graph.name) else "my-model"
        st.text_input("Name", key=_SAVE_NAME, help="Saved as workspace/graphs/<name>.json (overwrites).")
        st.button("Save", key="studio.build.save", on_click=_on_save, icon=":material/save:")
        st.markdown("**Start over**")
        st.button("New empty graph", key="studio.build.new", on_click=_on_new, icon=":material/note_add:",
                  help="Undo brings the current graph back.")
    with right:
        st.markdown("**Open a saved graph**")
        saved = saved_graphs()
        if not saved:
            st.caption("Nothing saved yet in this workspace.")
        for s in saved[:20]:
            c1, c2 = st.columns([3, 1], vertical_alignment="center")
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.modified))
            c1.markdown(f"{st_escape(s.name)}  \n:gray[{when}]")
            c2.button("Open", key=f"studio.build.open.{s.name}", on_click=open_saved, args=(str(s.path),))
        st.markdown("**Upload a graph JSON**")
        st.file_uploader("Graph file (studio.graph/1)", type=["json"], key=_UPLOAD_KEY, on_change=_on_upload,
                         label_visibility="collapsed")
