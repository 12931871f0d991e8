""""Why this prediction" for a run without a studio dataset (imported pretrained weights): the samples that
need none (an uploaded or drawn image; typed text through the run's tokenizer for a GPT-2), a layer chosen by
its path, baselines without 'mean'. The rest (methods side by side, the Explain / Cancel buttons, the cache,
the heatmaps and token chips) is inspect_explain's.

An ImageNet ResNet is explained behind the normalisation Live inference applies (studio.explain.imported.
input_transform): the heatmap lies over the image as uploaded.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st
import torch

from components.inspect import inspect_explain as ie
from components.inspect.inspect_probes import code_span
from components.text import st_escape
from studio import explain as ex
from studio import inspection as ins
from studio.errors import StudioError
from studio.explain import imported

W = ie.W


@st.cache_data(max_entries=4, show_spinner=False)
def _token_strings(run_dir: str, _tokenizer, size: int) -> list[str]:
    """Every token's own text (GPT-2: 50,257 decodes), once per run."""
    return _tokenizer.token_strings(range(size))


@st.cache_data(max_entries=8, show_spinner=False)
def _layers(run_dir: str, which: str, _model) -> list[str]:
    return imported.layer_paths(_model)


def render_imported(run: ins.RunFiles, info) -> None:
    chosen = ie.top_row_and_model(run)
    if chosen is None:
        return
    top, which, model = chosen
    tokens = ex.is_token_model(model)
    tokenizer = imported.run_tokenizer_or_none(run, info) if tokens else None
    if tokens:
        if tokenizer is None:
            st.info("This run has no tokenizer.json, so typed text cannot be turned into its tokens: explain it "
                    "with `python -m studio explain RUN --input ids.npy`.")
            return
        size = int(model(torch.zeros((1, *model.input_shape), dtype=torch.int64)).shape[-1]) \
            if info.num_classes is None else int(info.num_classes)
        info = replace(info, vocab=_token_strings(str(run.directory), tokenizer, size))
    transform = imported.input_transform(run)
    pad = imported.tokenizer_pad(tokenizer) if tokens else None
    per_position = info.task in ("sequence", "language_model")
    with top[1]:
        sources = ["typed text"] if tokens else ["uploaded image", "drawn image"]
        source = st.radio("Input", sources, horizontal=True, key=W + "source")
    cells = st.columns([1, 2, 3, 1] if per_position else [2, 3, 1])
    sample = _pick(source, run, model, info, pad)
    if sample is None:
        return
    position = None
    if per_position:
        length = int(sample.x.shape[0])
        typed = sample.length or length
        position = int(cells[0].number_input(
            "Output position", 0, length - 1, typed - 1, key=W + f"position.{length}.{typed}",
            help="the position whose next-token prediction is explained (default: the last typed token)"))
    with torch.no_grad():
        x = sample.x.unsqueeze(0)
        out = model(x if transform is None else transform(x)).float()[0]
    scores = out[position] if per_position else out.reshape(-1)
    names = ie._class_names(info, len(scores))
    predicted = int(scores.argmax())
    target_cell, methods_cell, baseline_cell = cells[-3:]
    if tokens:  # a next token of GPT-2's 50,257: by id, not a list the browser must hold
        target = int(target_cell.number_input(
            "Target token id", 0, len(names) - 1, predicted, key=W + f"target_id.{sample.key}.{position}",
            help="the next token whose score is explained; default the predicted one"))
        target_cell.caption(code_span(names[target]) + (" (predicted)" if target == predicted else ""))
    else:
        target = int(target_cell.selectbox(
            "Target class", range(len(names)), index=predicted, key=W + f"target.{sample.key}.{position}",
            format_func=lambda i: names[i] + (" (predicted)" if i == predicted else ""),
            help="the score whose attribution is shown; default the predicted class"))
    usable = [m for m, spec in ex.METHODS.items() if ie._fits(spec, model, tokens)]
    methods = methods_cell.multiselect("Methods (up to 3, side by side)", usable, default=["integrated-gradients"],
                                       max_selections=ie.MAX_METHODS, key=W + "methods", persist_state="session",
                                       format_func=lambda m: ex.METHODS[m].label)
    choices = [b for b in ex.baseline_choices(tokens, sample.x.dim()) if b != "mean"]  # no training split
    baseline = baseline_cell.selectbox("Baseline", choices, key=W + "baseline",
                                       help="the input with the evidence absent: attributions explain "
                                            "f(x) - f(baseline); 'mean' needs a training split this run lacks")
    settings = ie._settings(model, sample.x, baseline, position, pad, tokens, info,
                            layers=_layers(str(run.directory), which, model))
    opacity = 0.6
    if ie._is_image(sample.x):
        opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key=W + "opacity", persist_state="session",
                            help="how strongly the attribution covers the image (0: the image alone)")
    if transform is not None:
        st.caption("The model sees the image normalised with ImageNet's mean and standard deviation, as Live "
                   "inference feeds it; the attributions are over the image as given ([0, 1] pixels).")
    if not methods:
        st.info("Pick at least one method.")
        return
    pairs = [(run, which, model, None, m) for m in methods]
    results = ie._results(pairs, sample, target, settings, compute=bool(st.session_state.get(ie.GO)))
    if results is None:
        left, right = st.columns([1, 5], vertical_alignment="center")
        left.button("Explain", type="primary", key=W + "run", on_click=ie._go)
        if st.session_state.get(ie.CANCELLED):
            right.warning("Cancelled: nothing was kept. Press Explain to start again.")
        else:
            right.caption(f"Computes {', '.join(ex.METHODS[m].label for m in methods)} for "
                          f"{st_escape(names[target])}; answers are kept, so coming back is instant.")
        return
    st.session_state.pop(ie.GO, None)
    st.session_state.pop(ie.CANCELLED, None)
    ie._show(results, sample, info, names, target, opacity, False)


def _pick(source: str, run, model, info, pad: int | None) -> ex.Sample | None:
    shape = tuple(model.input_shape)
    try:
        if source == "uploaded image":
            upload = st.file_uploader("Image (PNG or JPEG)", type=["png", "jpg", "jpeg", "bmp", "gif"],
                                      key=W + "upload")
            if upload is None:
                return None
            st.caption(f"Resized to the model's input {shape}.")
            return ex.input_sample(ins.image_to_input(ins.open_image(upload), shape), "uploaded image")
        if source == "drawn image":
            from components.inspect.inspect_results import _drawn

            x = _drawn(shape, key=W + "canvas")
            return None if x is None else ex.input_sample(x, "drawn image")
        text = st.text_input(f"Text (up to {shape[0]} tokens, padded with {info.vocab[pad]!r})", key=W + "text",
                             placeholder="The quick brown fox")
        if not text:
            st.caption("Type a prompt: it is explained at its last token, through the run's "
                       + code_span("tokenizer.json") + ".")
            return None
        x, length, _ = imported.text_tokens(run, info, text, shape[0], pad_token=pad)  # the tokenizer is checked
        return ex.input_sample(x, "typed text", length)
    except StudioError as e:
        st.error(st_escape(str(e)))
        return None
