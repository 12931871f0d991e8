"""The session's current graph, shared by every page, with undo/redo and an autosave.

Every edit goes through `set_current_graph`, which keeps the previous graph on the undo stack and
autosaves the graph, so a browser refresh (a new Streamlit session) finds the graph where the user
left it. Graphs in the session are treated as immutable: edit a `graph.copy()` and hand it back.

Each browser tab has its own autosave, named by the `tab` query parameter of its URL
(`workspace/graphs/_autosave.tab-<id>.json`): a refresh keeps the URL and so finds its own graph,
and two tabs never overwrite each other's work. `_autosave.json` holds the newest graph of any tab;
a tab opened without an id starts from it. The tab's undo and redo history (its newest
`HISTORY_KEPT` steps each way) is kept beside it in `_autosave.tab-<id>.history.json`, so Undo still
works after a refresh.

Session-state keys are namespaced `studio.session.<name>` (docs/CONTRACTS.md).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time

import streamlit as st

from studio.analysis import Analysis, analyze
from studio.errors import GraphError, Issue
from studio.graph import Graph, Node, atomic_write_text, load_graph, parse_graph, save_graph
from studio.templates import list_templates, load_template
from studio.workspace import workspace_dir

UNDO_LIMIT = 100  # the contract asks for at least 50 steps
HISTORY_KEPT = 25  # undo (and redo) steps a refresh keeps: written on every edit, so bounded
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
_SILENCED = "studio.session.silenced"  # [(node id, warning key)] the user chose not to see
_TAB = "studio.session.tab"  # this tab's id (its URL's `tab` query parameter)
_URL_PAGE = "studio.session.url_page"  # the page whose URL last got the tab id
_SAVED_AT = "studio.session.saved_at"  # the shared autosave's mtime when this tab last wrote it

TAB_PARAM = "tab"
_TAB_RE = re.compile(r"[0-9a-f]{8,32}\Z")
TAB_FILES_KEPT_DAYS = 30  # other tabs' autosaves older than this are removed when a tab starts


# ---- the current graph ---------------------------------------------------------------------------

def current_graph() -> Graph:
    """The graph being edited; restored from the autosave (or the seed template) in a new session."""
    if _GRAPH not in st.session_state:
        _restore()
    _keep_tab_in_url()
    return st.session_state[_GRAPH]


def tab_id() -> str:
    """This browser tab's id: names its autosave and stays in its URL (`?tab=<id>`)."""
    current_graph()
    return st.session_state[_TAB]


def graph_revision() -> int:
    """A counter bumped by every change of the current graph (for caching derived views)."""
    current_graph()
    return st.session_state[_REV]


def current_analysis() -> Analysis:
    """`analyze(current_graph())`, computed once per graph revision and shared by every page."""
    rev = graph_revision()
    silenced = silenced_warnings()
    cached = st.session_state.get(_ANALYSIS)
    if cached is None or cached[0] != (rev, silenced):
        a = analyze(current_graph())
        a.issues = [i for i in a.issues if i.severity != "warning" or warning_key(i) not in silenced]
        cached = st.session_state[_ANALYSIS] = ((rev, silenced), a)
    return cached[1]


def warning_key(issue: Issue) -> tuple[str, str]:
    """What identifies a warning across edits: its node and its first words (shapes in it may change)."""
    return (issue.node_id or "", " ".join(issue.message.split()[:4]))


def silenced_warnings() -> tuple[tuple[str, str], ...]:
    current_graph()
    return tuple(tuple(k) for k in st.session_state.get(_SILENCED) or ())


def silence_warning(issue: Issue) -> None:
    """Hide this warning on every page (kept with the autosave)."""
    st.session_state[_SILENCED] = sorted(set(silenced_warnings()) | {warning_key(issue)})
    _write_meta()


def unsilence_all() -> None:
    st.session_state[_SILENCED] = []
    _write_meta()


def set_current_graph(graph: Graph, *, undoable: bool = True) -> None:
    """Make `graph` current; the previous one goes on the undo stack (unless `undoable=False`). A graph
    equal to the current one changes nothing: no undo step (in Chromium a text field commits the value it
    shows a second time, and each commit was an Undo that did nothing visible)."""
    previous = current_graph()
    if graph == previous:
        return
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
    """The newest autosave of any tab (a tab opened without an id starts from it)."""
    return workspace_dir() / "graphs" / AUTOSAVE_NAME


def tab_autosave_path(tab: str | None = None):
    return workspace_dir() / "graphs" / f"_autosave.tab-{tab or st.session_state[_TAB]}.json"


def _tab_meta_path(tab: str | None = None):
    return workspace_dir() / "graphs" / f"_autosave.tab-{tab or st.session_state[_TAB]}.meta.json"


def _history_path(tab: str | None = None):
    return workspace_dir() / "graphs" / f"_autosave.tab-{tab or st.session_state[_TAB]}.history.json"


def _keep_tab_in_url() -> None:
    """Put the tab's id back in the URL (a page switch drops query parameters)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    tab = st.session_state.get(_TAB)
    ctx = get_script_run_ctx()
    page = getattr(ctx, "page_script_hash", None)
    # The server keeps the old value across a page switch while the browser's URL lost it: set it again
    # once on every page the session shows.
    if tab and (st.query_params.get(TAB_PARAM) != tab or st.session_state.get(_URL_PAGE) != page):
        st.query_params[TAB_PARAM] = tab
        st.session_state[_URL_PAGE] = page


def _install(graph: Graph) -> None:
    st.session_state[_GRAPH] = graph
    st.session_state[_REV] = st.session_state.get(_REV, 0) + 1
    _autosave(graph)
    _write_history()


def _autosave(graph: Graph) -> None:
    try:
        save_graph(graph, tab_autosave_path())
        save_graph(graph, autosave_path())
        # The shared file's own time, compared with its later times: no clock margin to guess
        st.session_state[_SAVED_AT] = autosave_path().stat().st_mtime
    except OSError as e:  # a full disk must not break editing; say it once
        st.session_state[_NOTICE] = f"Autosave failed ({e.strerror or e}); save the graph by name to keep it."


def _write_history() -> None:
    """The newest `HISTORY_KEPT` undo and redo steps, beside the tab's autosave."""
    doc = {side: [g.to_dict() for g in st.session_state[key][-HISTORY_KEPT:]]
           for side, key in (("undo", _UNDO), ("redo", _REDO))}
    try:
        atomic_write_text(_history_path(), json.dumps(doc))
    except OSError:
        pass  # the session's own stacks still have it; the autosave's failure is reported already


def _read_history() -> tuple[list[Graph], list[Graph]]:
    """The undo and redo steps a refreshed tab left; none from a file that does not read."""
    try:
        doc = json.loads(_history_path().read_text())
        return [parse_graph(d) for d in doc["undo"]], [parse_graph(d) for d in doc["redo"]]
    except (OSError, ValueError, KeyError, TypeError, GraphError):
        return [], []


def newer_elsewhere() -> tuple[Graph, float] | None:
    """(graph, when) when another tab autosaved a different graph after this tab's last autosave."""
    path = autosave_path()
    try:
        when = path.stat().st_mtime
    except OSError:
        return None
    if when <= st.session_state.get(_SAVED_AT, 0):
        return None
    try:
        other = load_graph(path)
    except GraphError:
        return None
    return None if other.to_dict() == current_graph().to_dict() else (other, when)


def open_newer_elsewhere() -> None:
    """Take the other tab's newer graph into this tab (undoable)."""
    found = newer_elsewhere()
    if found is not None:
        meta = _read_meta(workspace_dir() / "graphs" / _META_NAME)
        open_graph(found[0], template=meta.get("template"), dataset_id=meta.get("dataset_id"),
                   dataset_options=meta.get("dataset_options"))


def keep_this_tab() -> None:
    """Keep this tab's graph and make it the newest autosave again."""
    _autosave(current_graph())
    _write_meta()


def _template_dataset_options(name: str | None) -> dict:
    """The dataset options a template's catalog entry gives its dataset ({} for none or no template)."""
    if not name:
        return {}
    return next((t.dataset_options for t in list_templates() if t.name == name), {})


def _write_meta() -> None:
    meta = json.dumps({"template": st.session_state.get(_TEMPLATE), "dataset_id": st.session_state.get(_DATASET),
                       "dataset_options": st.session_state.get(_DATASET_OPTIONS) or {},
                       "silenced": [list(k) for k in st.session_state.get(_SILENCED) or ()]})
    try:
        atomic_write_text(_tab_meta_path(), meta)
        atomic_write_text(workspace_dir() / "graphs" / _META_NAME, meta)
    except OSError:
        pass  # the graph itself is what matters; the dataset can be picked again


def _read_meta(path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict):
        return {}
    out = {k: v for k, v in meta.items() if k in ("template", "dataset_id") and isinstance(v, str)}
    options = meta.get("dataset_options")
    if isinstance(options, dict) and all(isinstance(k, str) for k in options):
        out["dataset_options"] = options  # checked against the dataset where used (get_info raises DataError)
    silenced = meta.get("silenced")
    if isinstance(silenced, list):
        out["silenced"] = [tuple(k) for k in silenced
                           if isinstance(k, list) and len(k) == 2 and all(isinstance(v, str) for v in k)]
    return out


def _forget_old_tabs() -> None:
    cutoff = time.time() - TAB_FILES_KEPT_DAYS * 86400
    for p in (workspace_dir() / "graphs").glob("_autosave.tab-*.json"):
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
        except OSError:
            pass


def _keep_unreadable(path) -> str | None:
    """Copy an autosave that cannot be read to graphs/unreadable-autosave-<time>.json; its name, or None."""
    import shutil

    kept = workspace_dir() / "graphs" / f"unreadable-autosave-{time.strftime('%Y%m%d-%H%M%S')}.json"
    try:
        shutil.copyfile(path, kept)
    except OSError:
        return None
    return kept.name


def _restore() -> None:
    st.session_state[_UNDO] = []
    st.session_state[_REDO] = []
    asked = st.query_params.get(TAB_PARAM)
    own = bool(asked and _TAB_RE.match(asked) and tab_autosave_path(asked).exists())
    st.session_state[_TAB] = asked if own else secrets.token_hex(6)
    if not own:
        _forget_old_tabs()
    path = tab_autosave_path() if own else autosave_path()
    meta_path = _tab_meta_path() if own else workspace_dir() / "graphs" / _META_NAME
    graph = None
    if os.path.exists(path):
        try:
            graph = load_graph(path)
            meta = _read_meta(meta_path)
            st.session_state[_TEMPLATE] = meta.get("template")
            st.session_state[_DATASET] = meta.get("dataset_id")
            st.session_state[_DATASET_OPTIONS] = meta.get("dataset_options", {}) if meta.get("dataset_id") else {}
            st.session_state[_SILENCED] = meta.get("silenced", [])
        except GraphError as e:
            first = e.issues[0] if e.issues else Issue(None, "unknown problem")
            kept = _keep_unreadable(path)  # the next edit overwrites the autosave: keep what was there
            st.session_state[_NOTICE] = (f"The autosaved graph could not be read ({first}); started from the seed "
                                         "template instead." + (f" The unreadable file is kept as graphs/{kept}."
                                                                if kept else ""))
    if graph is None:
        graph, template, dataset_id = seed_graph()
        st.session_state[_TEMPLATE] = template
        st.session_state[_DATASET] = dataset_id
        st.session_state[_DATASET_OPTIONS] = _template_dataset_options(template)
    if own:  # this tab's undo and redo steps, as it left them
        st.session_state[_UNDO], st.session_state[_REDO] = _read_history()
    st.session_state[_GRAPH] = graph
    st.session_state[_REV] = 1
    _write_meta()
    try:
        if own:  # this tab's work as it left it: newer work of another tab stays "newer" (newer_elsewhere)
            st.session_state[_SAVED_AT] = tab_autosave_path().stat().st_mtime
        else:
            save_graph(graph, tab_autosave_path())
            st.session_state[_SAVED_AT] = time.time()
        if not os.path.exists(autosave_path()):
            save_graph(graph, autosave_path())
            st.session_state[_SAVED_AT] = autosave_path().stat().st_mtime
    except OSError as e:
        st.session_state[_NOTICE] = f"Autosave failed ({e.strerror or e}); save the graph by name to keep it."
    _keep_tab_in_url()
