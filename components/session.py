"""The session's current graph, shared by every page, with undo/redo and an autosave.

Every edit goes through `set_current_graph`, which keeps the previous graph on the undo stack and
writes the graph to `workspace/graphs/_autosave.json`, so a browser refresh (a new Streamlit
session) finds the graph where the user left it. Graphs in the session are treated as immutable:
edit a `graph.copy()` and hand it back.

Session-state keys are namespaced `studio.session.<name>` (docs/CONTRACTS.md).
"""

from __future__ import annotations

import json
import os

import streamlit as st

from studio.analysis import Analysis, analyze
from studio.errors import GraphError, Issue
from studio.graph import Graph, Node, atomic_write_text, load_graph, save_graph
from studio.templates import list_templates, load_template
from studio.workspace import workspace_dir

UNDO_LIMIT = 100  # the contract asks for at least 50 steps
AUTOSAVE_NAME = "_autosave.json"
_META_NAME = "_autosave.meta.json"  # template, dataset id and dataset options of the autosaved graph

_GRAPH = "studio.session.graph"
_REV = "studio.session.rev"
_ANALYSIS = "studio.session.analysis"  # (revision, Analysis) of the current graph
_UNDO = "studio.session.undo"
_REDO = "studio.session.redo"
_TEMPLATE = "studio.session.template"
_DATASET = "studio.session.dataset_id"
_DATASET_OPTIONS = "studio.session.dataset_options"  # get_dataset options, e.g. {"target": "input"}
_RUN = "studio.session.run_id"
_NOTICE = "studio.session.notice"


# ---- the current graph ---------------------------------------------------------------------------

def current_graph() -> Graph:
    """The graph being edited; restored from the autosave (or the seed template) in a new session."""
    if _GRAPH not in st.session_state:
        _restore()
    return st.session_state[_GRAPH]


def graph_revision() -> int:
    """A counter bumped by every change of the current graph (for caching derived views)."""
    current_graph()
    return st.session_state[_REV]


def current_analysis() -> Analysis:
    """`analyze(current_graph())`, computed once per graph revision and shared by every page."""
    rev = graph_revision()
    cached = st.session_state.get(_ANALYSIS)
    if cached is None or cached[0] != rev:
        cached = st.session_state[_ANALYSIS] = (rev, analyze(current_graph()))
    return cached[1]


def set_current_graph(graph: Graph, *, undoable: bool = True) -> None:
    """Make `graph` current; the previous one goes on the undo stack (unless `undoable=False`)."""
    previous = current_graph()
    if undoable:
        stack: list[Graph] = st.session_state[_UNDO]
        stack.append(previous)
        del stack[:-UNDO_LIMIT]
        st.session_state[_REDO] = []
    _install(graph)


def open_graph(graph: Graph, *, template: str | None = None, dataset_id: str | None = None,
               dataset_options: dict | None = None) -> None:
    """Replace the current graph by an opened one (template, saved file, upload); undoable."""
    st.session_state[_TEMPLATE] = template
    st.session_state[_DATASET] = dataset_id
    st.session_state[_DATASET_OPTIONS] = dict(dataset_options or {})
    set_current_graph(graph)
    _write_meta()


def undo() -> bool:
    if not can_undo():
        return False
    st.session_state[_REDO].append(current_graph())
    _install(st.session_state[_UNDO].pop())
    return True


def redo() -> bool:
    if not can_redo():
        return False
    st.session_state[_UNDO].append(current_graph())
    _install(st.session_state[_REDO].pop())
    return True


def can_undo() -> bool:
    current_graph()
    return bool(st.session_state[_UNDO])


def can_redo() -> bool:
    current_graph()
    return bool(st.session_state[_REDO])


def undo_depth() -> int:
    current_graph()
    return len(st.session_state[_UNDO])


# ---- what goes with the graph ---------------------------------------------------------------------

def current_template() -> str | None:
    """Name of the template the current graph was opened from, if any."""
    current_graph()
    return st.session_state.get(_TEMPLATE)


def current_dataset_id() -> str | None:
    current_graph()
    return st.session_state.get(_DATASET)


def current_dataset_options() -> dict:
    """The options the current dataset is loaded with (`get_dataset(..., options=...)`); {} for none."""
    current_graph()
    return dict(st.session_state.get(_DATASET_OPTIONS) or {})


def set_current_dataset_id(dataset_id: str | None, options: dict | None = None) -> None:
    """Make `dataset_id` with `options` the current dataset; a new choice starts without options."""
    current_graph()
    st.session_state[_DATASET] = dataset_id
    st.session_state[_DATASET_OPTIONS] = dict(options or {}) if dataset_id else {}
    _write_meta()


def current_run_id() -> str | None:
    return st.session_state.get(_RUN)


def set_current_run_id(run_id: str | None) -> None:
    st.session_state[_RUN] = run_id


def take_notice() -> str | None:
    """A one-time message about the session's start (e.g. an unreadable autosave), then None."""
    return st.session_state.pop(_NOTICE, None)


# ---- seed graphs ---------------------------------------------------------------------------------

def empty_graph(name: str = "untitled") -> Graph:
    """A new graph: a single Input node (every model starts from one) to build on."""
    return Graph(name=name, nodes=[Node("input", "Input", {"shape": [1, 28, 28], "dtype": "float32"},
                                        {"x": 0.0, "y": 0.0})])


def seed_graph() -> tuple[Graph, str | None, str | None]:
    """(graph, template name, dataset id) a brand-new session starts from: the padded seed CNN."""
    templates = list_templates()
    if not templates:
        return empty_graph(), None, None
    names = [t.name for t in templates]
    pick = next((n for n in names if "cnn" in n and "pad" in n), None) or next(
        (n for n in names if "cnn" in n), names[0])
    chosen = next(t for t in templates if t.name == pick)
    return load_template(pick), pick, chosen.dataset


# ---- internals -----------------------------------------------------------------------------------

def autosave_path():
    return workspace_dir() / "graphs" / AUTOSAVE_NAME


def _install(graph: Graph) -> None:
    st.session_state[_GRAPH] = graph
    st.session_state[_REV] = st.session_state.get(_REV, 0) + 1
    _autosave(graph)


def _autosave(graph: Graph) -> None:
    try:
        save_graph(graph, autosave_path())
    except OSError as e:  # a full disk must not break editing; say it once
        st.session_state[_NOTICE] = f"Autosave failed ({e.strerror or e}); save the graph by name to keep it."


def _template_dataset_options(name: str | None) -> dict:
    """The dataset options a template's catalog entry gives its dataset ({} for none or no template)."""
    if not name:
        return {}
    return next((t.dataset_options for t in list_templates() if t.name == name), {})


def _write_meta() -> None:
    meta = {"template": st.session_state.get(_TEMPLATE), "dataset_id": st.session_state.get(_DATASET),
            "dataset_options": st.session_state.get(_DATASET_OPTIONS) or {}}
    try:
        atomic_write_text(workspace_dir() / "graphs" / _META_NAME, json.dumps(meta))
    except OSError:
        pass  # the graph itself is what matters; the dataset can be picked again


def _read_meta() -> dict:
    try:
        meta = json.loads((workspace_dir() / "graphs" / _META_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict):
        return {}
    out = {k: v for k, v in meta.items() if k in ("template", "dataset_id") and isinstance(v, str)}
    options = meta.get("dataset_options")
    if isinstance(options, dict) and all(isinstance(k, str) for k in options):
        out["dataset_options"] = options  # checked against the dataset where used (get_info raises DataError)
    return out


def _restore() -> None:
    st.session_state[_UNDO] = []
    st.session_state[_REDO] = []
    path = autosave_path()
    graph = None
    if os.path.exists(path):
        try:
            graph = load_graph(path)
            meta = _read_meta()
            st.session_state[_TEMPLATE] = meta.get("template")
            st.session_state[_DATASET] = meta.get("dataset_id")
            st.session_state[_DATASET_OPTIONS] = meta.get("dataset_options", {}) if meta.get("dataset_id") else {}
        except GraphError as e:
            first = e.issues[0] if e.issues else Issue(None, "unknown problem")
            st.session_state[_NOTICE] = (f"The autosaved graph could not be read ({first}); "
                                         "started from the seed template instead.")
    if graph is None:
        graph, template, dataset_id = seed_graph()
        st.session_state[_TEMPLATE] = template
        st.session_state[_DATASET] = dataset_id
        st.session_state[_DATASET_OPTIONS] = _template_dataset_options(template)
    st.session_state[_GRAPH] = graph
    st.session_state[_REV] = 1
    _write_meta()
    if not os.path.exists(path):
        _autosave(graph)
