"""The Inspect page's views of probe snapshots: feature maps, attention, weights and gradients.

Each view is a fragment, so moving the step slider or picking another layer reruns only that view,
and each rerun reads exactly one array of one snapshot (`studio.inspection.load_probe_array`). While the
run is training the view refreshes itself to pick up new snapshots; the play control steps through
the saved snapshots.
"""

from __future__ import annotations

import functools
import json
import zipfile

import streamlit as st

from components.figures import inspect_charts as ic
from components.figures import inspect_views as iv
from components.text import st_escape
from studio import inspection as ins
from studio.errors import StudioError
from studio.graph_paths import flat_graph

K = "studio.inspect."
PLAY_S = 0.8       # seconds per frame while playing
LIVE_S = 2.0       # refresh period while the run trains


# ---- cached loaders (shared by every session) --------------------------------------------------------

@st.cache_resource(max_entries=2, show_spinner="Loading the dataset...")
def cached_dataset(dataset_id: str, seed: int, options_json: str):
    from studio.data import get_dataset

    return get_dataset(dataset_id, seed=seed, options=json.loads(options_json) or None)


def run_dataset(run: ins.RunFiles):
    return cached_dataset(run.dataset_id, run.config.seed, json.dumps(run.dataset_options, sort_keys=True))


def probe_inputs(run: ins.RunFiles, n: int):
    """The probe batch the worker used (validation samples picked by Dataset.probe_batch): inputs, targets.

    Snapshots keep only the model's internals, so the inputs are rebuilt from the dataset, split with the
    run's seed and options exactly as the worker split it.
    """
    return run_dataset(run).probe_batch(n)


# ---- shared controls ----------------------------------------------------------------------------------

def step_control(entries: list[dict], key: str, playing: bool, run_id: str) -> dict:
    """A slider over the saved snapshots (advanced one frame per rerun while playing); returns the entry.
    Another run starts at its latest snapshot (not at the step chosen on the previous run)."""
    steps = [e["step"] for e in entries]
    if st.session_state.get(key) not in steps or st.session_state.get(key + ".run") != run_id:
        st.session_state[key] = steps[-1]
        st.session_state[key + ".run"] = run_id
    elif playing:
        st.session_state[key] = steps[(steps.index(st.session_state[key]) + 1) % len(steps)]
    if len(steps) == 1:
        st.caption(f"One snapshot so far, at step {steps[0]}.")
        return entries[0]
    step = st.select_slider("Probe step", steps, key=key,
                            help="Every saved snapshot; press Play to watch them in turn.")
    return entries[steps.index(step)]


def show_png(png: bytes, caption: str | None = None) -> None:
    """A PNG from components.figures.inspect_views, sent as PNG (Streamlit's "auto" may re-encode it as JPEG,
    which smears the sharp tile edges), at its own size."""
    width = int.from_bytes(png[16:20], "big")  # the IHDR width: show pixels 1:1, never stretched and blurred
    st.image(png, caption=caption, output_format="PNG", width=width)


def code_span(text: str) -> str:
    """Text as a markdown code span, shown literally (double backticks survive a backtick inside)."""
    return f"`` {text} ``"


def sample_label(info, y, i: int, x=None) -> str:
    """'sample 3 · cross': a sample named by its target, or by its input `x[i]` (when given) for a
    sequence task, whose input is what the attention axes show."""
    from components.data.data_view import target_label, token_text

    try:
        if x is not None and info.task in ("sequence", "language_model"):
            return f"sample {i} · {token_text(x[i], info.vocab)}"
        return f"sample {i} · {target_label(info, y[i])}"
    except (IndexError, TypeError, ValueError):
        return f"sample {i}"


def play_toggle(key: str) -> bool:
    return st.toggle("Play", key=key, help="Step through the saved snapshots, one every "
                     f"{PLAY_S:g} s (the slider follows).")


# What reading a damaged snapshot (.npz cut short, emptied or overwritten) raises besides the studio's own errors.
_SNAPSHOT_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, StudioError)


def _snapshot_errors_shown(render):
    """`render` (a view or a live fragment) showing an unreadable snapshot as a warning, never a crash: a live
    fragment tries again on its next tick (the snapshot may still have been being written)."""
    @functools.wraps(render)
    def guarded(*args, **kwargs):
        try:
            return render(*args, **kwargs)
        except _SNAPSHOT_ERRORS as e:
            st.warning(f"A probe snapshot could not be read ({st_escape(str(e))}).")

    return guarded


def _refresh(playing: bool, active: bool) -> float | None:
    return PLAY_S if playing else (LIVE_S if active else None)


# ---- feature maps ------------------------------------------------------------------------------------

def render_feature_maps(run: ins.RunFiles, info, entries: list[dict], active: bool) -> None:
    entries = [e for e in entries if e.get("feature_maps")]
    if not entries:
        st.info("This run has no feature-map snapshots: its graph has no convolution, pooling, normalisation or "
                "activation layer, or probes were turned off in the training settings.")
        return
    playing = play_toggle(K + "fm.play")
    st.fragment(_snapshot_errors_shown(_feature_maps), run_every=_refresh(playing, active))(run, info, playing)


def _feature_maps(run: ins.RunFiles, info, playing: bool) -> None:
    entries = [e for e in ins.probe_index(run) if e.get("feature_maps")]
    graph = flat_graph(run.graph)  # a graph with blocks: its layers by path (layer1.0.conv1)
    order = [n for n in graph.topological_order() if n in entries[-1]["feature_maps"]]
    c1, c2, c3, c4 = st.columns([2, 2, 2, 2])
    node_id = c1.selectbox("Layer", order, key=K + "fm.node",
                           format_func=lambda n: f"{n} ({graph.node(n).type})")
    n = entries[-1]["samples"]
    x, y = probe_inputs(run, n)
    sample = c2.selectbox("Probe sample", range(n), key=K + "fm.sample",
                          format_func=lambda i: sample_label(info, y, i))
    sort = c3.radio("Order channels by", ["index", "mean", "max"], horizontal=True, key=K + "fm.sort",
                    help="mean / max activation of each channel on this sample, strongest first")
    scale = c4.radio("Colour scale", ["channel", "layer"], horizontal=True, key=K + "fm.norm",
                     help="channel: each tile uses its own range (shows structure); layer: one range for all "
                          "(shows which channels are strong)")
    entry = step_control(entries, K + "fm.step", playing, run.run_id)
    if node_id not in entry["feature_maps"]:
        st.warning(f"The snapshot at step {entry['step']} has no feature maps for {node_id}.")
        return
    meta = entry["feature_maps"][node_id]
    maps = ins.load_probe_array(run, entry, f"fmap/{node_id}")  # (n, C, ...): this one array only
    if sample >= maps.shape[0]:
        st.warning(f"This snapshot kept only {maps.shape[0]} of {n} probe samples; pick sample 0-{maps.shape[0] - 1}.")
        return
    m = maps[sample]
    channel_order = iv.channel_order(m, sort)
    left, right = st.columns([1, 4])
    with left:
        png = iv.input_png(x[sample].numpy())
        if png is not None:
            show_png(png, caption=f"input · {sample_label(info, y, sample)}")
        else:
            from components.data.data_view import token_text

            st.markdown("**Input**  \n" + code_span(token_text(x[sample], info.vocab)))
    with right:
        show_png(iv.feature_grid_png(m, order=channel_order, normalize=scale, tile=iv.tile_for(len(channel_order))),
                 caption=f"{node_id} at step {entry['step']}: {len(channel_order)} channels, per-sample shape "
                         f"{tuple(meta['full_shape'][1:])}")
        if meta.get("subsampled"):
            st.caption(f"Snapshot {meta['subsampled']}.")
    pick = st.columns([1, 3])[0].selectbox("Enlarge a channel", [None, *channel_order.tolist()], key=K + "fm.enlarge",
                        format_func=lambda c: "none" if c is None else f"channel {c}")
    if pick is not None:
        a = iv.as_channel_maps(m)[pick]
        st.plotly_chart(ic.channel_figure(a if a.shape[0] > 1 else a[0], title=f"{node_id} · channel {pick} · step "
                                          f"{entry['step']}"), key=K + "fm.channel_chart")


# ---- attention ----------------------------------------------------------------------------------------

def render_attention(run: ins.RunFiles, info, entries: list[dict], active: bool) -> None:
    entries = [e for e in entries if e.get("attention")]
    if not entries:
        st.info("This run has no attention snapshots: its graph has no MultiheadAttention or "
                "TransformerEncoderLayer node, or probes were turned off.")
        return
    playing = play_toggle(K + "att.play")
    st.fragment(_snapshot_errors_shown(_attention), run_every=_refresh(playing, active))(run, info, playing)


def causal_flags(graph) -> dict[str, bool]:
    return {n.id: bool(n.params.get("causal", False)) for n in flat_graph(graph).nodes}  # by path: h.3.attn


def _attention(run: ins.RunFiles, info, playing: bool) -> None:
    entries = [e for e in ins.probe_index(run) if e.get("attention")]
    nodes = [n for n in flat_graph(run.graph).topological_order() if n in entries[-1]["attention"]]
    n = entries[-1]["samples"]
    x, y = probe_inputs(run, n)
    c1, c2, c3 = st.columns([3, 2, 3])
    mode = c1.radio("Show", ["one layer", "overview: every layer and head"], horizontal=True, key=K + "att.mode")
    sample = c3.selectbox("Probe sample", range(n), key=K + "att.sample",
                          format_func=lambda i: sample_label(info, y, i, x))
    causal = causal_flags(run.graph)
    tokens = None if x.dtype.is_floating_point else x[sample]  # token ids label the axes
    labels = ic.token_labels(tokens, info.vocab) if tokens is not None else None
    entry = step_control(entries, K + "att.step", playing, run.run_id)
    if mode.startswith("overview"):
        maps = []
        for node_id in nodes:  # one array per layer, each dropped once drawn into the grid
            if node_id in entry["attention"]:
                a = ins.load_probe_array(run, entry, f"attn/{node_id}")
                if sample < a.shape[0]:
                    maps.append((node_id, a[sample]))
        if not maps:
            st.warning(f"The snapshot at step {entry['step']} kept no attention for sample {sample}.")
            return
        heads = max(m.shape[0] for _, m in maps)
        show_png(iv.attention_grid_png(maps, causal=causal, cell=max(96, min(240, 960 // heads))),
                 caption=f"Every layer (rows) and head (columns) at step {entry['step']}")
        st.caption("In each tile, rows are queries and columns keys, in token order; grey cells are masked by a "
                   "causal mask. Pick \"one layer\" to read the tokens on the axes.")
        return
    node_id = c2.selectbox("Layer", nodes, key=K + "att.node")
    a = ins.load_probe_array(run, entry, f"attn/{node_id}")  # (n, heads, T, T)
    if sample >= a.shape[0]:
        st.warning(f"This snapshot kept only {a.shape[0]} probe samples.")
        return
    heads = a.shape[1]
    head = 0  # a single-head layer has nothing to choose
    if heads > 1:
        head = st.radio("Head", ["all", *range(heads)], horizontal=True, key=K + f"att.head.{node_id}",
                        format_func=lambda h: "all heads" if h == "all" else f"head {h}")
    if tokens is not None:
        from components.data.data_view import token_text

        target = f" · **target** {code_span(token_text(y[sample], info.vocab))}" if y.dim() > 1 else ""
        st.markdown(f"**Input** {code_span(token_text(tokens, info.vocab))}{target}")
    title = f"{node_id} at step {entry['step']}"
    if head == "all":
        st.plotly_chart(ic.attention_heads_figure(a[sample], labels, causal=causal.get(node_id, False),
                                                  title=f"{title} · all heads"), key=K + "att.heads_chart")
    else:
        st.plotly_chart(ic.attention_figure(a[sample, int(head)], labels, causal=causal.get(node_id, False),
                                            title=f"{title} · head {head}"), key=K + "att.chart")
    meta = entry["attention"][node_id]
    if meta.get("subsampled"):
        st.caption(f"Snapshot {meta['subsampled']}.")


# ---- weights and gradients -----------------------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def _histograms(_run: ins.RunFiles, run_dir: str, param: str, kind: str, files: tuple[str, ...]):
    """Cached per (run, parameter, kind, saved snapshots): a new snapshot makes a new key."""
    entries = [e for e in ins.probe_index(_run) if e["file"] in files]
    return ins.histogram_over_steps(_run, entries, param, kind)


@_snapshot_errors_shown
def render_weights(run: ins.RunFiles, entries: list[dict]) -> None:
    if not entries:
        st.info("No probe snapshots yet: weights and gradients are recorded with the probes (at each epoch end, "
                "or every probe_every steps).")
        return
    params = ins.parameter_names(run, entries[-1])
    if not params:
        st.info("This model has no parameters to show.")
        return
    param = st.selectbox("Parameter tensor", params, key=K + "w.param")
    files = tuple(e["file"] for e in entries)
    cols = st.columns(2)
    for col, kind, what in ((cols[0], "w", "values"), (cols[1], "g", "gradients")):
        steps, edges, counts = _histograms(run, str(run.directory), param, kind, files)
        with col:
            if len(steps) == 0:
                st.caption(f"No {what} histogram yet for {param} (gradients exist after the first step).")
            else:
                st.plotly_chart(ic.histogram_heatmap_figure(steps, edges, counts,
                                                            title=f"{param}: {what} over training"),
                                key=K + f"w.hist.{kind}")
    steps, norms = ins.index_series(entries, "grad_norms")
    steps_d, dead = ins.index_series(entries, "dead_fraction")
    cols = st.columns(2)
    with cols[0]:
        if norms:
            st.plotly_chart(ic.lines_figure(steps, norms, title="Gradient norm per layer", y_title="L2 norm",
                                            log_y=True), key=K + "w.gradnorm")
        else:
            st.caption("No gradient norms yet (they are recorded from the first training step on).")
    with cols[1]:
        if dead:
            st.plotly_chart(ic.lines_figure(steps_d, dead, title="Dead ReLU units (never positive on the probe "
                                            "batch)", y_title="% of units", percent=True), key=K + "w.dead")
        else:
            st.caption("No ReLU layers in this graph, so no dead-unit fractions.")
