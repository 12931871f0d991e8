"""The Build page's panels around the canvas: issues, the live summary table, and code export."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components.build import canvas
from components.text import st_escape
from studio.analysis import Analysis
from studio.errors import ExportError, GraphError, StudioError
from studio.graph import Graph
from studio.layers import fmt_shape

_EXPORTS = "studio.build.exports"  # (format, graph revision) -> bytes or an error message


def human_count(n: int) -> str:
    """12,345,678 -> '12.3M' (FLOPs, params)."""
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n} B"


# ---- issues --------------------------------------------------------------------------------------

def _on_select(node_id: str) -> None:
    canvas.select_node(node_id.split(".", 1)[0])  # a path inside a block instance selects the instance


def render_issues(analysis: Analysis) -> None:
    from components import session

    silenced = session.silenced_warnings()
    if silenced:
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        c1.caption(f"{len(silenced)} warning{'s' * (len(silenced) != 1)} silenced.")
        c2.button("Show again", key="studio.build.unsilence", on_click=session.unsilence_all)
    if not analysis.issues:
        st.success("No issues: the graph is valid and ready to train or export.", icon=":material/check_circle:")
        return
    for i, issue in enumerate(analysis.issues):
        c1, c2, c3 = st.columns([1, 5, 0.8], vertical_alignment="center")
        if issue.node_id:
            c1.button(issue.node_id, key=f"studio.build.issue.{i}", on_click=_on_select, args=(issue.node_id,),
                      help="Select this node", width="stretch")
        else:
            c1.markdown("*whole graph*")
        where = f" (**{st_escape(issue.param)}**)" if issue.param else ""
        show = c2.error if issue.severity == "error" else c2.warning
        show(f"**{st_escape(issue.node_id or 'graph')}**{where}: {st_escape(issue.message)}")
        if issue.severity == "warning":
            c3.button("Silence", key=f"studio.build.silence.{i}", on_click=session.silence_warning, args=(issue,),
                      help="Hide this warning (Show again brings it back)")


def params_text(analysis: Analysis) -> str:
    """'1.2M params'; for a graph with errors the valid part's count ('≥ 1.2k params (valid part)') or '- params'."""
    if analysis.ok:
        return f"{human_count(analysis.total_params)} params"
    if analysis.total_params:
        return f"≥ {human_count(analysis.total_params)} params (valid part)"
    return "- params"


# ---- summary -------------------------------------------------------------------------------------

def summary_frame(graph: Graph, analysis: Analysis, expand: bool = False) -> pd.DataFrame:
    """One row per node in topological order (like torchinfo), then a Total row. A block instance is one row
    with its totals unless `expand` (every layer inside it by path)."""
    order = analysis.order or [n.id for n in graph.nodes]
    if analysis.expansion is not None and not expand:
        order = [nid for nid, _ in analysis.summary_items()]
    types = {n.id: n.type for n in graph.nodes}
    rows = []
    for nid in order:
        info = analysis.info(nid)
        shape = info.output_shape if info else None
        rows.append({"node": nid, "layer": info.label if info else types.get(nid, "?"),
                     "output shape": fmt_shape(shape) if shape is not None else "?",
                     "params": info.params if info else None, "FLOPs": info.flops if info else None,
                     "activation memory": human_bytes(info.activation_bytes) if info else "?"})
    rows.append({"node": "Total", "layer": "",
                 "output shape": fmt_shape(analysis.output_shape) if analysis.output_shape is not None else "?",
                 "params": analysis.total_params, "FLOPs": analysis.total_flops,
                 "activation memory": human_bytes(analysis.total_activation_bytes)})
    return pd.DataFrame(rows)


def render_summary(graph: Graph, analysis: Analysis) -> None:
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Parameters", human_count(analysis.total_params), help=f"{analysis.total_params:,} trainable")
    m2.metric("FLOPs / sample", human_count(analysis.total_flops), help=f"{analysis.total_flops:,} (multiply-add = 2)")
    m3.metric("Activations / sample", human_bytes(analysis.total_activation_bytes))
    m4.metric("Output", fmt_shape(analysis.output_shape) if analysis.output_shape is not None else "?")
    expand = graph.uses_blocks and st.toggle("Show every layer inside the blocks", key="studio.build.summary_expand")
    frame = summary_frame(graph, analysis, expand=expand)
    # Tall enough for every row up to 30 (the Total row is last and must show without scrolling).
    st.dataframe(frame, hide_index=True, width="stretch", height=min(36 + 35 * len(frame), 36 + 35 * 30) + 3,
                 column_config={"params": st.column_config.NumberColumn(format="localized"),
                                "FLOPs": st.column_config.NumberColumn(format="localized")})
    st.markdown(f"**Total**: {analysis.total_params:,} parameters · {analysis.total_flops:,} FLOPs per sample · "
                f"{human_bytes(analysis.total_activation_bytes)} of activations per sample"
                + ("" if analysis.ok else " (the valid part of the graph)"))
    if not analysis.ok:
        st.caption("Rows with '?' are at or below a node with an issue; fix it to see their shapes.")


# ---- code and exports ----------------------------------------------------------------------------

def _export(fmt: str, graph: Graph, rev: int) -> None:
    from studio import export

    fn = {"torchscript": export.to_torchscript, "onnx": export.to_onnx}[fmt]
    try:
        result: bytes | str = fn(graph)
    except (ExportError, GraphError, StudioError) as e:
        result = f"{fmt} export failed: {e}"
    st.session_state[_EXPORTS] = {k: v for k, v in st.session_state.get(_EXPORTS, {}).items() if k[1] == rev}
    st.session_state[_EXPORTS][(fmt, rev)] = result


def render_code(graph: Graph, analysis: Analysis, rev: int) -> None:
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in graph.name) or "model"
    st.download_button("Graph JSON", graph.to_json() + "\n", file_name=f"{name}.json", mime="application/json",
                       icon=":material/download:", on_click="ignore", key="studio.build.dl_json")
    if not analysis.ok:
        st.warning("Fix the issues first: code and model exports need a valid graph.")
        return
    from studio.codegen import to_code

    try:
        code = to_code(graph)
    except StudioError as e:
        st.error(f"Code export failed: {st_escape(str(e))}")
        return
    st.info("These exports hold **untrained** (freshly initialised) weights: they are the architecture. To export a "
            "trained model, open its run on the **Train** or **Inspect** page and export from there.",
            icon=":material/info:")
    cols = st.columns(3)
    cols[0].download_button("Python code", code, file_name=f"{name}.py", mime="text/x-python",
                            icon=":material/download:", on_click="ignore", key="studio.build.dl_code")
    for col, fmt, label, ext in ((cols[1], "torchscript", "TorchScript (legacy)", "pt"),
                                 (cols[2], "onnx", "ONNX", "onnx")):
        result = st.session_state.get(_EXPORTS, {}).get((fmt, rev))
        if isinstance(result, bytes):
            col.download_button(f"{label} (.{ext})", result, file_name=f"{name}.{ext}",
                                mime="application/octet-stream", icon=":material/download:",
                                on_click="ignore", key=f"studio.build.dl_{fmt}")
        else:
            col.button(f"Build {label}", key=f"studio.build.make_{fmt}", on_click=_export,
                       args=(fmt, graph, rev), icon=":material/build:",
                       help=f"Compile the model and export it to {label}; a download button appears.")
            if isinstance(result, str):
                col.error(st_escape(result))
    st.code(code, language="python", line_numbers=True)


# ---- dataset availability (Train page, before launch) ------------------------------------------------------

def render_dataset_availability(dataset_id: str | None) -> None:
    """Before a launch: whether the dataset must be downloaded and whether it is here; offer its stand-in."""
    from components import session
    from studio.data.standins import availability
    from studio.workspace import workspace_dir

    if not dataset_id:
        return
    found = availability(dataset_id, workspace_dir())
    if not found.needs_download:
        return
    if found.available:
        st.caption(f":material/check_circle: {st_escape(found.message())}")
        return
    st.warning(st_escape(found.message()) + " A launch downloads it first; without the network it fails.",
               icon=":material/cloud_download:")
    if found.stand_in:
        sid, opts = found.stand_in
        st.button(f"Use the offline stand-in ({sid} at {opts.get('image_size')}x{opts.get('image_size')})",
                  key="studio.train.use_stand_in", on_click=session.set_current_dataset_id, args=(sid, opts),
                  icon=":material/wifi_off:")
