"""The Inspect page's views of a checkpoint and of the run's record: evaluation on the validation
split, live inference on one input (a dataset sample, an uploaded image or a drawing, with its feature
maps, attention and saliency), and diagnostics.

Models and evaluations are cached per (run, checkpoint, checkpoint file time), so a new best
checkpoint is picked up and reruns cost nothing.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch
from streamlit_drawable_canvas import st_canvas

from components.data.data_view import image_grid_png, target_label, token_text
from components.figures import explain_views as ev
from components.figures import inspect_charts as ic
from components.figures import inspect_views as iv
from components.inspect import drawn_input as dr
from components.inspect.inspect_probes import K, causal_flags, code_span, run_dataset, show_png
from components.text import st_escape
from studio import inspection as ins
from studio.errors import StudioError
from studio.explain import explain
from studio.graph_paths import flat_graph
from studio.training import diagnostics

SALIENCY_METHODS = {"gradcam": "grad-cam", "gradient_x_input": "input-x-gradient"}  # studio.explain's names


@st.cache_resource(max_entries=4, show_spinner="Loading the checkpoint...")
def _model(_run: ins.RunFiles, run_dir: str, which: str, mtime: float):
    return ins.load_model(_run, which)


def cached_model(run: ins.RunFiles, which: str):
    path = run.checkpoint_path(which)
    return _model(run, str(run.directory), which, path.stat().st_mtime)


@st.cache_data(max_entries=8, show_spinner="Evaluating on the validation split...")
def _evaluation(_run: ins.RunFiles, run_dir: str, which: str, mtime: float) -> ins.Evaluation:
    return ins.evaluate(cached_model(_run, which), run_dataset(_run), "val")


def checkpoint_choice(run: ins.RunFiles, key: str) -> str | None:
    have = run.checkpoints()
    if not have:
        st.info("This run has no checkpoint yet: 'last' is written at each epoch end (or every checkpoint_every "
                "steps), 'best' when the monitored validation metric improves.")
        return None
    return st.radio("Checkpoint", have, horizontal=True, key=key,
                    help="best: the best monitored validation metric so far; last: the latest saved state")


# ---- evaluation ----------------------------------------------------------------------------------------

def render_evaluation(run: ins.RunFiles, info) -> None:
    which = checkpoint_choice(run, K + "ev.ckpt")
    if which is None:
        return
    try:
        ev = _evaluation(run, str(run.directory), which, run.checkpoint_path(which).stat().st_mtime)
    except StudioError as e:
        st.error(str(e))
        return
    data = run_dataset(run).val
    if ev.task == "classification":
        _classification(ev, info, data)
        _logged_confusions(run, info)
    elif ev.task == "regression":
        _regression(ev)
    else:
        _sequences(ev, info, data)


def _classification(ev: ins.Evaluation, info, data) -> None:
    precision, recall, support = ins.precision_recall(ev.confusion)
    st.markdown(f"**Validation accuracy {ev.accuracy:.2%}** on {ev.size:,} samples · loss {ev.loss:.4g} · "
                f"{int(ev.confusion.trace()):,} right, {ev.size - int(ev.confusion.trace()):,} wrong")
    left, right = st.columns([3, 2])
    left.plotly_chart(ic.confusion_figure(ev.confusion, info.class_names), key=K + "ev.confusion")
    with right:
        st.markdown("**Per class**")
        st.dataframe(ic.per_class_frame(precision, recall, support, info.class_names), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                    ("precision", "recall", "f1")})
        if np.isnan(precision).any():
            st.caption("Precision is empty for a class the model never predicts.")
    wrong = ev.misclassified()
    st.markdown(f"**Misclassified samples** (the {len(wrong)} most confident mistakes)" if len(wrong) else
                "**No misclassified samples** on the validation split.")
    if not len(wrong):
        return
    names = info.class_names or [str(i) for i in range(ev.confusion.shape[0])]
    if info.is_image:
        lines = [(f"true {names[ev.targets[i]]}", f"pred {names[ev.predictions[i]]}") for i in wrong]
        show_png(image_grid_png(data.x[torch.as_tensor(wrong)], lines, columns=12),
                 caption="Under each image: its true class, then the predicted one (red); most confident mistakes "
                         "first")
    else:
        import pandas as pd

        st.dataframe(pd.DataFrame({"index": wrong, "true": [names[ev.targets[i]] for i in wrong],
                                   "predicted": [names[ev.predictions[i]] for i in wrong],
                                   "confidence": ev.probabilities[wrong].max(axis=1)}), hide_index=True)


def _logged_confusions(run: ins.RunFiles, info) -> None:
    """The confusion matrices the worker logged at each evaluation during training."""
    logged = ins.read_confusions(run)
    if not logged:
        return
    with st.expander(f"Confusion matrix at each of the {len(logged)} evaluations during training"):
        steps = [c["step"] for c in logged]
        step = steps[0] if len(steps) == 1 else st.select_slider("Evaluation at step", steps, value=steps[-1],
                                                                  key=K + "ev.logged_step")
        matrix = np.asarray(next(c["matrix"] for c in logged if c["step"] == step))
        st.plotly_chart(ic.confusion_figure(matrix, info.class_names, title=f"Confusion matrix at step {step}"),
                        key=K + "ev.logged_confusion")


def _regression(ev: ins.Evaluation) -> None:
    err = ev.predictions - ev.targets.reshape(ev.predictions.shape)
    st.markdown(f"**Validation MAE {ev.mae:.4g}** · RMSE {float(np.sqrt((err ** 2).mean())):.4g} · MSE loss "
                f"{ev.loss:.4g} on {ev.size:,} samples")
    st.plotly_chart(ic.regression_figure(ev.targets, ev.predictions), key=K + "ev.regression")


def _sequences(ev: ins.Evaluation, info, data) -> None:
    whole = float((ev.predictions == ev.targets).all(axis=1).mean())
    st.markdown(f"**Token accuracy {ev.accuracy:.2%}** · whole sequences right {whole:.2%} · loss {ev.loss:.4g} "
                f"on {ev.size:,} sequences")
    per_pos = (ev.predictions == ev.targets).mean(axis=0)
    st.bar_chart({"accuracy by position": per_pos}, height=180)
    i = st.number_input("Validation sample", 0, ev.size - 1, 0, key=K + "ev.seq_sample")
    st.dataframe(ic.token_frame(data.x[i], ev.targets[i], ev.predictions[i], info.vocab))


# ---- live inference ------------------------------------------------------------------------------------

def render_inference(run: ins.RunFiles, info) -> None:
    which = checkpoint_choice(run, K + "inf.ckpt")
    if which is None:
        return
    model = cached_model(run, which)
    has_data = bool(info.sizes)  # an imported run's dataset is not the studio's: no samples to pick
    sources = (["dataset sample"] if has_data else []) + (["uploaded image", "drawn image"] if info.is_image else [])
    if not sources:
        st.info("This run's inputs are not images and its dataset is not one of the studio's: there is no sample to "
                "run it on here.")
        return
    source = st.radio("Input", sources, horizontal=True, key=K + "inf.source")
    if not info.is_image:
        st.caption("This dataset's inputs are not images: pick a dataset sample.")
    target = None
    if source == "dataset sample":
        c1, c2 = st.columns(2)
        split = c1.selectbox("Split", ["val", "test", "train"], key=K + "inf.split")
        part = run_dataset(run).split(split)
        if len(part) == 0:
            st.warning(f"The {split} split is empty.")
            return
        index = int(c2.number_input("Sample index", 0, len(part) - 1, 0, key=K + "inf.index"))
        x, target = part.take(torch.tensor([index]))
        x, target = x[0], target[0]
    elif source == "uploaded image":
        upload = st.file_uploader("Image (PNG or JPEG)", type=["png", "jpg", "jpeg", "bmp", "gif"],
                                  key=K + "inf.upload")
        if upload is None:
            return
        try:
            x = ins.image_to_input(ins.open_image(upload), tuple(model.input_shape))
        except StudioError as e:
            st.error(st_escape(str(e)))
            return
        st.caption(f"Resized to the model's input {tuple(model.input_shape)}.")
    else:
        x = _drawn(tuple(model.input_shape))
        if x is None:
            return
    shown = x
    if not has_data and source != "dataset sample":
        from studio.pretrained.info import preprocess

        x = preprocess(x, run.dataset_id)
        if x is not shown:
            st.caption("Normalised with ImageNet's mean and standard deviation per channel, as torchvision's "
                       "pretrained weights expect.")
    result = ins.infer(model, x, info.task)
    _show_prediction(shown, target, result, info, hint=_names_hint(run, info, has_data))
    _show_internals(model, x, result, info, run)


def _names_hint(run: ins.RunFiles, info, has_data: bool) -> str | None:
    """For an imported ImageNet classifier without class names: how to add them (shown under the top five)."""
    if has_data or info.task != "classification" or info.class_names or run.dataset_id != "imagenet":
        return None
    from studio.pretrained.labels import ADD_LATER

    return ("No class names are stored with this run, so the classes are numbered. Add them with "
            f"`{ADD_LATER.format(run_id=run.run_id, file='imagenet_classes.txt')}` (PyTorch Hub's file, "
            "https://raw.githubusercontent.com/pytorch/hub/master/imagenet_classes.txt) or the Home page's "
            "\"Start from a pretrained model\" panel.")


def _drawn(input_shape: tuple[int, ...], key: str = K + "inf.canvas") -> torch.Tensor | None:
    """The drawing canvas and what is drawn on it as the model's input; None (with a hint) while empty."""
    width, height = dr.canvas_size(input_shape)
    st.space("medium")  # room for the canvas toolbar, which floats above the canvas on hover
    drawing = st_canvas(stroke_width=dr.brush_width(input_shape), stroke_color="#FFFFFF",
                        background_color="#000000", width=width, height=height, drawing_mode="freedraw",
                        return_image_data=True, key=key)
    x = dr.drawn_input(drawing.image_data, input_shape)
    if x is None:
        st.caption("Draw on the black canvas (light strokes on dark, like the dataset's images) to see the "
                   "model's prediction; undo and clear are in the toolbar that appears above it on hover.")
        return None
    st.caption(f"Drawn at {width}x{height}, resized to the model's input {input_shape}.")
    return x


def _show_prediction(x, target, result: ins.Inference, info, hint: str | None = None) -> None:
    left, right = st.columns([1, 2])
    with left:
        png = iv.input_png(x.numpy())
        if png is not None:
            show_png(png, caption="input")
        else:
            st.markdown(f"**Input** {code_span(token_text(x, info.vocab))}")
        if target is not None:
            st.markdown(f"**True:** {st_escape(target_label(info, target))}")
    with right:
        if info.task == "classification":
            k = int(result.probabilities.argmax())
            name = info.class_names[k] if info.class_names else str(k)
            st.markdown(f"**Prediction: {st_escape(name)}** ({result.probabilities[k]:.1%})")
            if len(result.probabilities) > 20:  # ImageNet's 1,000 classes: the five most likely
                top = result.probabilities.argsort()[::-1][:5]
                st.dataframe({"class": [f"{i} {info.class_names[i]}" if info.class_names else f"class {i}"
                                        for i in top],
                              "probability": [f"{result.probabilities[i]:.2%}" for i in top]}, hide_index=True)
                if hint:
                    st.caption(hint)
            else:
                st.plotly_chart(ic.probabilities_figure(result.probabilities, info.class_names), key=K + "inf.probs")
        elif info.task == "regression":
            st.markdown("**Prediction:** " + ", ".join(f"{v:.4g}" for v in result.output.reshape(-1)))
        else:
            pred = result.probabilities.argmax(axis=-1)
            conf = result.probabilities.max(axis=-1)
            st.markdown(f"**Predicted tokens** {code_span(token_text(pred, info.vocab))} "
                        f"(mean confidence {conf.mean():.1%})")
            if target is not None:
                st.dataframe(ic.token_frame(x, target, pred, info.vocab))


def _show_internals(model, x, result: ins.Inference, info, run: ins.RunFiles) -> None:
    if result.features:
        st.markdown("**Feature maps of this input**")
        node_id = st.columns([1, 3])[0].selectbox("Layer", list(result.features), key=K + "inf.fm_node",
                               format_func=lambda n: f"{n} ({model.node_types[n]})")
        m = result.features[node_id]
        show_png(iv.feature_grid_png(m, tile=iv.tile_for(iv.as_channel_maps(m).shape[0])),
                 caption=f"{node_id}: per-sample shape {tuple(m.shape)}")
    if result.attention:
        st.markdown("**Attention on this input**")
        node_id = st.columns([1, 3])[0].selectbox("Attention layer", list(result.attention), key=K + "inf.att_node")
        a = result.attention[node_id]
        labels = ic.token_labels(x, info.vocab) if not x.dtype.is_floating_point else None
        causal = causal_flags(run.graph).get(node_id, False)
        if a.shape[0] > 1:
            st.plotly_chart(ic.attention_heads_figure(a, labels, causal=causal, title=node_id), key=K + "inf.att")
        else:
            st.plotly_chart(ic.attention_figure(a[0], labels, causal=causal, title=node_id), key=K + "inf.att")
    if ins.supports_saliency(model, info.task):
        st.markdown("**Saliency**: where the input drives a class score")
        c1, c2 = st.columns(2)
        method = c1.radio("Method", ["gradcam", "gradient_x_input"], horizontal=True, key=K + "inf.sal_method",
                          format_func={"gradcam": "Grad-CAM (last Conv2d)", "gradient_x_input": "gradient × input"}.get)
        names = info.class_names or [str(i) for i in range(len(result.probabilities))]
        predicted = int(result.probabilities.argmax())
        cls = c2.selectbox("Class", range(len(names)), index=predicted, key=K + "inf.sal_class",
                           format_func=lambda i: names[i] + (" (predicted)" if i == predicted else ""))
        try:  # Captum's, through studio.explain (the "Why this prediction" view has every method)
            sal = ev.saliency_map(explain(model, x, method=SALIENCY_METHODS[method], target=int(cls)).attributions)
        except StudioError as e:
            st.info(str(e))
            return
        show_png(iv.saliency_png(x.numpy(), sal), caption=f"{method} for class {names[cls]}")


# ---- diagnostics ---------------------------------------------------------------------------------------

def render_diagnostics(run: ins.RunFiles, record, store, entries: list[dict]) -> None:
    rows = store.read_metrics(run.run_id, keys=["train_loss", "val_loss"])
    train = [(m.step, m.value) for m in rows if m.key == "train_loss"]
    val = [(m.step, m.value) for m in rows if m.key == "val_loss"]
    grads = next((e for e in reversed(entries) if e.get("grad_norms")), None)
    dead = entries[-1] if entries else None
    hints = diagnostics.diagnose(
        train_steps=[s for s, _ in train], train_loss=[v for _, v in train],
        val_steps=[s for s, _ in val], val_loss=[v for _, v in val], status=record.status, error=record.error,
        lr=run.config.lr, dead_fraction=dead.get("dead_fraction") if dead else None,
        grad_norms=grads.get("grad_norms") if grads else None, layer_order=flat_graph(run.graph).topological_order(),
        probe_step=grads["step"] if grads else None)
    st.caption(f"Checked: {', '.join(diagnostics.CHECKS)} — from {len(train):,} training steps, {len(val)} "
               f"evaluations and {len(entries)} probe snapshots.")
    if not hints:
        st.success("No problems found in what this run recorded.")
        return
    for h in hints:
        box = st.warning if h.severity == "warning" else st.info
        box(f"**{st_escape(h.title)}**: {st_escape(h.message)}  \n*Evidence:* {st_escape(h.evidence)}")
