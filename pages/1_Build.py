"""Build: the graph editor. Palette on the left, canvas and inspector in the middle, and below them
the issues, the live summary, the exported code, the templates and the graph files."""

import streamlit as st

from components import clicks, nav, pretrained_panel, session
from components.build import (
    block_canvas,  # a block opened on the canvas
    blocks,
    canvas,
    graph_files,
    graph_rescue,
    head_panel,
    inspector,
    palette,
    panels,
)
from components.text import st_escape

st.set_page_config(page_title="Build · Neural Studio", page_icon="🧱", layout="wide")
nav.render()

# The browser's edits (moves, deletions, new edges, selection) first, so everything below sees them.
graph = session.current_graph()
if block_canvas.opened(graph):  # a block open on the canvas: the browser's edits are edits of its definition
    block_canvas.absorb(graph)
    edited = None
else:
    edited = canvas.absorb_browser_state(graph)
if edited is not None:
    canvas.apply_browser_edit(edited)
if any(n.position is None for n in session.current_graph().nodes):
    session.set_current_graph(canvas.auto_layout(session.current_graph(), canvas.direction(), only_missing=True),
                              undoable=False)
graph, rev, analysis = session.current_graph(), session.graph_revision(), session.current_analysis()
block_open = block_canvas.opened(graph)  # a block whose definition the canvas and inspector show, or None


def _relayout(direction: str) -> None:
    if block_canvas.relayout(direction):  # a block is open: lay out its layers
        return
    canvas.set_direction(direction)
    session.set_current_graph(canvas.auto_layout(session.current_graph(), direction))


with st.sidebar:
    st.markdown("### Layers")
    palette.render_palette()
    blocks.render_block_palette(st.session_state.get(palette.SEARCH_KEY) or "")

# One fixed slot for messages, so that showing one never shifts the canvas (a shifted component is
# remounted by the browser, which loses the viewport).
messages = st.container()
notice = session.take_notice()
if notice:
    messages.warning(notice)
with messages:
    graph_files.render_message()
    graph_files.render_newer_elsewhere()
    head_panel.render_fit_offer(graph, analysis)  # "Replace the head for N classes" when the output does not fit

# ---- toolbar -------------------------------------------------------------------------------------
bar = st.columns([3, 5], vertical_alignment="center")
with bar[0]:
    n_err, n_warn = len(analysis.errors), len(analysis.warnings)
    status = ":green-badge[valid]" if analysis.ok else f":red-badge[{n_err} error{'s' * (n_err != 1)}]"
    if n_warn:
        status += f" :orange-badge[{n_warn} warning{'s' * (n_warn != 1)}]"
    st.markdown(f"#### {st_escape(graph.name)} &nbsp; {status}")
    st.caption(f"{len(graph.nodes)} nodes · {panels.params_text(analysis)} · "
               f"output {analysis.output_shape if analysis.output_shape is not None else '?'}")
with bar[1].container(horizontal=True, horizontal_alignment="right"):
    st.button("Undo", key="studio.build.undo", on_click=session.undo, disabled=not session.can_undo(),
              icon=":material/undo:", help="Undo the last edit (up to 100)")
    st.button("Redo", key="studio.build.redo", on_click=session.redo, disabled=not session.can_redo(),
              icon=":material/redo:")
    st.button("Layout ↓", key="studio.build.layout_down", on_click=_relayout, args=("down",),
              help="Arrange the graph in layers, top to bottom")
    st.button("Layout →", key="studio.build.layout_right", on_click=_relayout, args=("right",),
              help="Arrange the graph in layers, left to right")
    dataset = session.current_dataset_id() or "choose it there"
    train = clicks.button(st.button, "Train this graph", key="studio.build.train", type="primary",
                          icon=":material/play_arrow:", disabled=not analysis.ok,
                          help="Fix the issues first" if not analysis.ok else
                          f"Open the Train page with this graph (dataset: {dataset})")
if train:
    nav.go("pages/3_Train.py")

# ---- canvas and inspector ------------------------------------------------------------------------
left, right = st.columns([3, 1.15])
with left:
    try:
        if block_open:  # the open block's definition, with one instance's shapes
            view, view_analysis = block_canvas.current_view(graph)
            block_canvas.render_header(graph, view)
            canvas.render(view.graph, view_analysis)
        else:
            canvas.render(graph, analysis)
    except graph_rescue.DRAW_ERRORS as e:
        graph_rescue.render_undrawable(graph, e)
    st.caption("Drag from a node's bottom handle to another node to connect · right-click a node or edge to "
               "delete it · click a node to edit it")
with right:
    if block_open:
        block_canvas.render_inspector(graph, *block_canvas.current_view(graph))
    else:
        inspector.render_inspector(graph, analysis)

# ---- panels (only the open tab runs) -------------------------------------------------------------
n_issues = len(analysis.issues)
labels = [f"Issues ({n_issues})", "Summary", "Code", "Templates", "Files", "Pretrained"]
# The tabs' identity includes their labels: when the issue count changes they are made anew, starting
# at `default`, so the tab the user had open (what the last run saw) stays open.
was_open = str(st.session_state.get("studio.build.tab") or "").split(" (")[0]
tabs = st.tabs(labels, key="studio.build.tab", on_change="rerun",
               default=next((label for label in labels if label.split(" (")[0] == was_open), labels[0]))
with tabs[0]:
    if tabs[0].open:
        panels.render_issues(analysis)
with tabs[1]:
    if tabs[1].open:
        panels.render_summary(graph, analysis)
with tabs[2]:
    if tabs[2].open:
        st.caption("Exports here are **untrained**: the graph with its seeded initial weights. To export a trained "
                   "model, open the run on the Train or Inspect page (Export the trained model), or run "
                   "`python -m studio export --run RUN_ID --format pt2 -o model.pt2`. TorchScript is legacy.")
        panels.render_code(graph, analysis, rev)
with tabs[3]:
    if tabs[3].open:
        graph_files.render_gallery()
with tabs[4]:
    if tabs[4].open:
        graph_files.render_files(graph)
with tabs[5]:
    if tabs[5].open:
        pretrained_panel.render("studio.build.pretrained")

canvas.hide_unsupported_menu_items()  # last, so that its empty frame shifts nothing above
