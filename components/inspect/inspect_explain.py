"""The Inspect page's "Why this prediction" view: one input (a validation sample, an uploaded or drawn
image, typed text for token models), a target (default: the predicted class), one to three attribution
methods side by side, and optionally the same method on a second run (before and after fine-tuning).

Computing starts on "Explain" (a callback, so the click survives a rerun); a progress bar follows the
method's model evaluations, and "Cancel" stops it at the next one (its click reruns the page, which
interrupts the computation inside the model's forward). Results are cached on disk per run, checkpoint,
sample, target, method and settings (studio.explain.runs), so coming back to an answer costs nothing.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import streamlit as st
import torch

from components.data.data_view import target_label
from components.figures import explain_views as ev
from components.inspect.inspect_probes import K, code_span, run_dataset, show_png
from components.inspect.inspect_results import _drawn, cached_model, checkpoint_choice
from components.text import st_escape
from studio import explain as ex
from studio import inspection as ins
from studio.errors import StudioError

W = K + "why."
GO = W + "go"                # "Explain" was pressed: compute what is missing on this run of the page
CANCELLED = W + "cancelled"
MAX_METHODS = 3


def render_explain(run: ins.RunFiles, info, runs: dict) -> None:
    """The view. `runs` is {run_id: RunRecord} of the store, for the second run to compare with."""
    if not ex.has_studio_dataset(run):  # imported weights: samples that need no dataset (explain_imported)
        from components.inspect.explain_imported import render_imported

        return render_imported(run, info)
    chosen = top_row_and_model(run)
    if chosen is None:
        return
    top, which, model = chosen
    dataset = run_dataset(run)
    tokens = ex.is_token_model(model)
    pad = ex.default_pad_token(info.vocab, dataset.train.x) if tokens else None
    task = info.task
    per_position = task in ("sequence", "language_model")
    with top[1]:
        source = _source(info, tokens)
    cells = st.columns([1, 1, 2, 3, 1] if per_position else [1, 2, 3, 1])
    sample_cell, target_cell, methods_cell, baseline_cell = cells[0], *cells[-3:]
    sample = _pick_sample(source, model, dataset, info, pad, sample_cell)
    if sample is None:
        return
    position = None
    if per_position:
        length = int(sample.x.shape[0])
        position = int(cells[1].number_input("Output position", 0, length - 1, length - 1, key=W + f"position.{length}",
                                             help="sequence models predict every position: the one explained"))
    with torch.no_grad():
        out = model(sample.x.unsqueeze(0)).float()[0]
    scores = out[position] if per_position else out.reshape(-1)
    names = _class_names(info, len(scores))
    predicted = int(scores.argmax())
    target = int(target_cell.selectbox(  # keyed by the sample: a new sample starts from its own prediction
        "Target class", range(len(names)), index=predicted, key=W + f"target.{sample.key}.{position}",
        format_func=lambda i: names[i] + (" (predicted)" if i == predicted else ""),
        help="the score whose attribution is shown; default the predicted class"))
    usable = [m for m, spec in ex.METHODS.items() if _fits(spec, model, tokens)]
    methods = methods_cell.multiselect("Methods (up to 3, side by side)", usable, default=["integrated-gradients"],
                                       max_selections=MAX_METHODS, key=W + "methods", persist_state="session",
                                       format_func=lambda m: ex.METHODS[m].label)
    choices = ex.baseline_choices(tokens, sample.x.dim())
    baseline = baseline_cell.selectbox("Baseline", choices, key=W + "baseline",
                                       help="the input with the evidence absent: attributions explain "
                                            "f(x) - f(baseline)")
    settings = _settings(model, sample.x, baseline, position, pad, tokens, info)
    row = st.columns([3, 2])
    with row[0]:
        other = _other_run(run, runs, model, info)
    opacity = 0.6
    if _is_image(sample.x):
        opacity = row[1].slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key=W + "opacity", persist_state="session",
                                help="how strongly the attribution covers the image (0: the image alone)")
    left_out = [spec for m, spec in ex.METHODS.items() if m not in usable]
    if left_out:
        st.caption("Not offered for this model: " + "; ".join(
            f"{spec.label} ({spec.not_for_tokens if tokens else 'it needs a Conv2d over an image'})"
            for spec in left_out) + ".")
    if not methods:
        st.info("Pick at least one method.")
        return

    pairs = [(run, which, model, dataset, m) for m in methods]
    if other is not None:
        pairs.append((*other, methods[0]))
    results = _results(pairs, sample, target, settings, compute=bool(st.session_state.get(GO)))
    if results is None:
        left, right = st.columns([1, 5], vertical_alignment="center")
        left.button("Explain", type="primary", key=W + "run", on_click=_go)
        if st.session_state.get(CANCELLED):
            right.warning("Cancelled: nothing was kept. Press Explain to start again.")
        else:
            right.caption(f"Computes {', '.join(ex.METHODS[m].label for m in methods)}"
                          + (f" and {ex.METHODS[methods[0]].label} on the second run" if other else "")
                          + f" for {st_escape(names[target])}; answers are kept, so coming back is instant.")
        return
    st.session_state.pop(GO, None)
    st.session_state.pop(CANCELLED, None)
    _show(results, sample, info, names, target, opacity, other is not None)


def top_row_and_model(run: ins.RunFiles):
    """(the view's top row, the checkpoint picked in its left cell, that checkpoint's model), or None when the
    run has no checkpoint yet (the choice says so)."""
    top = st.columns([1, 3])
    with top[0]:
        which = checkpoint_choice(run, W + "ckpt")
    if which is None:
        return None
    return top, which, cached_model(run, which)


def _go() -> None:
    st.session_state[GO] = True
    st.session_state.pop(CANCELLED, None)


def _cancel() -> None:
    st.session_state.pop(GO, None)
    st.session_state[CANCELLED] = True


def _fits(spec, model, tokens: bool) -> bool:
    if tokens:
        return not spec.not_for_tokens
    if spec.needs_layer:
        try:
            ex.gradcam_layer(model)
        except StudioError:
            return False
        return len(model.input_shape) == 3
    return True


def _is_image(x: torch.Tensor) -> bool:
    return x.is_floating_point() and x.dim() == 3


def _class_names(info, k: int) -> list[str]:
    if info.task in ("sequence", "language_model") and info.vocab and len(info.vocab) == k:
        return [repr(t)[1:-1] for t in info.vocab]
    if info.class_names and len(info.class_names) == k:
        return list(info.class_names)
    return [str(i) for i in range(k)]


def _tokens(ids, vocab) -> list[str]:
    return [vocab[int(i)] if vocab and 0 <= int(i) < len(vocab) else str(int(i)) for i in np.asarray(ids).reshape(-1)]


def _source(info, tokens: bool) -> str:
    sources = ["validation sample"] + (["uploaded image", "drawn image"] if info.is_image else []) + \
        (["typed text"] if tokens and info.vocab else [])
    return st.radio("Input", sources, horizontal=True, key=W + "source")


def _pick_sample(source: str, model, dataset, info, pad: int | None, cell) -> ex.Sample | None:
    """The input to explain from `source`; the validation index goes in `cell`, bigger widgets below."""
    shape = tuple(model.input_shape)
    try:
        if source == "validation sample":
            n = len(dataset.val)
            if n == 0:
                st.warning("The validation split is empty.")
                return None
            index = int(cell.number_input(f"Validation sample (0 to {n - 1})", 0, n - 1, 0, key=W + f"index.{n}"))
            return ex.dataset_sample(dataset, "val", index)
        if source == "uploaded image":
            upload = st.file_uploader("Image (PNG or JPEG)", type=["png", "jpg", "jpeg", "bmp", "gif"],
                                      key=W + "upload")
            if upload is None:
                return None
            return ex.input_sample(ins.image_to_input(ins.open_image(upload), shape), "uploaded image")
        if source == "drawn image":
            x = _drawn(shape, key=W + "canvas")
            return None if x is None else ex.input_sample(x, "drawn image")
        text = st.text_input(f"Text ({shape[0]} tokens; cut or padded with {info.vocab[pad]!r})", key=W + "text",
                             placeholder="".join(info.vocab[:min(len(info.vocab), 12)]))
        if not text:
            st.caption("Type a sequence of the vocabulary's tokens: " + code_span(" ".join(info.vocab[:40])))
            return None
        return ex.input_sample(ex.text_to_tokens(text, info.vocab, shape[0], pad), "typed text")
    except StudioError as e:
        st.error(st_escape(str(e)))
        return None


def _settings(model, x: torch.Tensor, baseline: str, position, pad, tokens: bool, info,
              layers: list[str] | None = None) -> ex.Settings:
    """The method settings; `layers`: the paths offered to attribute to (else the graph's feature maps)."""
    window, stride = ex.default_window(tuple(x.shape))
    layer = None
    with st.expander("Method settings (steps, samples, occlusion window, memory, layer)"):
        c = st.columns(4)
        n_steps = int(c[0].number_input("IG steps", 4, 512, 64, key=W + "steps", persist_state="session",
                                        help="integrated gradients: points on the path; more make the sum closer"))
        n_samples = int(c[1].number_input("Samples", 8, 2000, 64, key=W + "samples", persist_state="session",
                                          help="GradientSHAP points; LIME and KernelSHAP perturbed inputs"))
        batch = int(c[2].number_input("Internal batch", 1, 512, 32, key=W + "batch", persist_state="session",
                                      help="inputs per model call inside a method: bounds the memory"))
        if tokens:
            vocab = len(info.vocab or [0])
            pad = int(c[3].number_input("Padding token id", 0, vocab - 1, int(pad), key=W + f"pad.{vocab}",
                                        help="the 'pad' baseline puts this token everywhere"))
        elif _is_image(x) and layers is None:
            maps = ins.feature_nodes(model)[0]
            layer = c[3].selectbox("Attribute to", [None, *maps], key=W + f"layer.{','.join(maps)}",
                                   format_func=lambda n: "the input" if n is None else f"{n} ({model.node_types[n]})",
                                   help="gradient methods can explain a layer's output instead of the input (its "
                                        "channels summed, stretched over the image); Grad-CAM uses this layer")
        if layers is not None:
            layer = st.selectbox("Attribute to (a layer by its path)", [None, *layers], key=W + f"path.{len(layers)}",
                                 format_func=lambda n: n or ("the embedding" if tokens else "the input"),
                                 help="gradient methods explain that layer's output (tokens: summed per token); "
                                      "Grad-CAM uses it")
        c = st.columns(2)
        w_text = c[0].text_input("Occlusion window", ",".join(map(str, window)), key=W + f"window.{tuple(x.shape)}",
                                 help="one size per input dimension (chosen from the input's shape)")
        s_text = c[1].text_input("Occlusion stride", ",".join(map(str, stride)), key=W + f"stride.{tuple(x.shape)}")
    try:
        window = tuple(int(v) for v in w_text.split(","))
        stride = tuple(int(v) for v in s_text.split(","))
    except ValueError:
        st.warning(f"Occlusion window and stride are sizes separated by commas; using {window} and {stride}.")
    return ex.Settings(baseline=baseline, n_steps=n_steps, n_samples=n_samples, window=window, stride=stride,
                       internal_batch_size=batch, layer=layer, position=position, pad_token=pad)


def _other_run(run: ins.RunFiles, runs: dict, model, info):
    """(RunFiles, which, model, dataset) of a second run with the same input, or None."""
    same = [r for r in runs.values() if r.id != run.run_id and r.dataset_id == run.dataset_id]
    choice = st.selectbox("Same method on a second run (e.g. before and after fine-tuning)",
                          [None] + [r.id for r in same], key=W + f"other.{run.run_id}",
                          format_func=lambda i: "none" if i is None else f"{runs[i].name} ({i})")
    if choice is None:
        return None
    try:
        other = ins.load_run(choice)
        have = other.checkpoints()
        if not have:
            st.info("That run has no checkpoint yet.")
            return None
        other_model = cached_model(other, have[0])
    except StudioError as e:
        st.error(st_escape(str(e)))
        return None
    if tuple(other_model.input_shape) != tuple(model.input_shape) or other_model.input_dtype != model.input_dtype:
        st.warning(f"That run takes {tuple(other_model.input_shape)}, this one {tuple(model.input_shape)}: "
                   "pick a run with the same input.")
        return None
    return other, have[0], other_model, run_dataset(other)


def _for(method: str, settings: ex.Settings) -> ex.Settings:
    """The settings one method takes: perturbation methods always perturb the input, whatever layer the
    gradient methods attribute to."""
    return replace(settings, layer=None) if ex.METHODS[method].uses_window else settings


def _results(pairs, sample: ex.Sample, target: int, settings: ex.Settings, *, compute: bool):
    """[(run, method, Explanation | error text)] from the cache, computing what is missing only when
    `compute`; None when something is missing and not computed."""
    found = []
    missing = []
    for i, (run, which, model, dataset, method) in enumerate(pairs):
        try:
            e, _ = ex.explain_cached(run, which, model, dataset, sample, method, target=target,
                                     settings=_for(method, settings), compute=False)
        except StudioError as err:
            e = str(err)
        found.append((run, method, e))
        if e is None:
            missing.append(i)
    if not missing:
        return found
    if not compute:
        return None
    st.session_state.pop(GO, None)  # one press, one computation: a rerun that interrupts it (Cancel, or any
    # other widget) leaves the rest to the next press
    bar = st.progress(0.0)
    stop = st.empty()
    stop.button("Cancel", key=W + "cancel", on_click=_cancel, help="stops at the next model evaluation")
    for n, i in enumerate(missing):
        run, which, model, dataset, method = pairs[i]
        label = f"{ex.METHODS[method].label} on {run.run_id} ({n + 1} of {len(missing)})"
        with st.spinner(f"Computing {label}..."):
            try:
                e, _ = ex.explain_cached(run, which, model, dataset, sample, method, target=target,
                                         settings=_for(method, settings),
                                         progress=lambda f, label=label: bar.progress(f, text=label))
            except StudioError as err:
                e = str(err)
        found[i] = (run, method, e)
    bar.empty()
    stop.empty()
    return found


def _show(results, sample: ex.Sample, info, names: list[str], target: int, opacity: float, compared: bool) -> None:
    x = sample.x
    kind = "tokens" if not x.is_floating_point() else ("rows" if x.dim() == 1 else "map")
    ok = [e for _, _, e in results if isinstance(e, ex.Explanation)]
    if not ok:
        for _, method, e in results:
            st.error(f"{ex.METHODS[method].label}: {st_escape(e)}")
        return
    first = ok[0]
    truth = f" · true {st_escape(target_label(info, sample.label))}" if sample.label is not None else ""
    st.markdown(f"**{st_escape(sample.source)}** · predicted **{st_escape(names[first.predicted])}** · explaining "
                f"**{st_escape(names[target])}**" + (f" at position {first.position}" if first.position is not None
                                                     else "") + truth)
    groups = [results[:len(results) - 1] if compared else results]
    if compared:
        groups.append([results[0], results[-1]])
    for g, group in enumerate(groups):
        if compared:
            label = ex.METHODS[group[0][1]].label
            st.markdown("**Methods side by side**" if g == 0 else f"**{label}: this run and the second run**")
        # one colour scale for one method on two runs; methods side by side each keep their own (their
        # units differ: a score drop per pixel for occlusion, a share of f(x) - f(baseline) for IG)
        limit = ev.signed_limit(*[ev.attribution_map(e.attributions) for _, _, e in group
                                  if isinstance(e, ex.Explanation)]) if g == 1 else None
        size = {1: 192, 2: 128}.get(len(group), 96)
        cols = st.columns(len(group))
        for col, (run, method, e) in zip(cols, group, strict=True):
            with col:
                _one(run, method, e, kind, info, names, opacity, limit, size, g)


def _one(run, method: str, e, kind: str, info, names: list[str], opacity: float, limit: float | None, size: int,
         group: int) -> None:
    spec = ex.METHODS[method]
    st.markdown(f"**{spec.label}** · run {code_span(run.run_id)}")
    if not isinstance(e, ex.Explanation):
        st.error(st_escape(e))
        return
    if kind == "tokens":
        toks = _tokens(e.input, info.vocab)
        st.markdown(ev.token_html(toks, e.attributions, limit=limit, highlight=e.position), unsafe_allow_html=True)
        base = _tokens(e.baseline, info.vocab)[0] if e.baseline is not None else None
        st.caption("red raises the score, blue lowers it" + (f"; baseline: every token {base!r}" if base else ""))
    elif kind == "rows":
        names = ex.feature_names(run.dataset_id, e.attributions.shape[0])
        st.plotly_chart(ev.feature_bars_figure(e.attributions, names, limit=limit), key=W + f"bars.{group}.{method}."
                        f"{run.run_id}")
    else:
        at = e.notes.get("layer")
        show_png(ev.attribution_png(e.input, e.attributions, opacity=opacity, limit=limit, size=size),
                 caption=f"{method} for {names[e.target]}" + (f" at {at}" if at else "")
                 + (f", baseline {e.settings.baseline}" if spec.uses_baseline else ""))
    if e.check is not None:
        good = e.check.relative_error <= 0.05
        (st.success if good else st.warning)(f"Check: {e.check.sentence()}" + ("" if good else
                                             " — more steps or samples bring the sum closer."))
    else:
        st.caption(f"{spec.help[0].upper()}{spec.help[1:]}; no sum rule to check.")
    if e.notes.get("layer"):
        st.caption(f"attributed at layer {code_span(e.notes['layer'])}")
