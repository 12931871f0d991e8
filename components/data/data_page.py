"""The Data page's parts: the dataset picker with its options, the facts, the fit of the current graph,
the download, the sample previews, the list of uploads with their deletion, and the upload form.

Each `render_*` draws one part of the page; `pages/2_Data.py` places them. Widget keys live under
`studio.data.`; a message for the next run (after an upload or a deletion) is kept in session state.
"""

from __future__ import annotations

import streamlit as st

from components import clicks, session
from components.data import data_view
from components.figures import charts
from components.text import st_escape
from studio.analysis import analyze
from studio.data import (
    apply_dataset,
    check_graph_fits,
    csv_columns,
    dataset_options,
    delete_upload,
    get_dataset,
    get_info,
    upload_details,
)
from studio.data.downloads import is_downloaded
from studio.data.fit import fit_head
from studio.errors import DataError, GraphError, StudioError
from studio.workspace import workspace_dir

PICK = "studio.data.dataset"
MESSAGE = "studio.data.message"
CONFIRM = "studio.data.confirm_delete"
# The dataset to select on the next run: a widget's value cannot be set once it is drawn, so an
# upload (at the bottom of the page) leaves its id here and the next run applies it before the selectbox.
SELECT_NEXT = "studio.data.select_next"
OPTION = "studio.data.option."  # + dataset id + "." + option name: the option widgets
TARGETS = {"labels": "the labels", "input": "the input itself (autoencoder)"}
PREVIEW_SAMPLES = 32  # samples read for the preview (only these are converted to floats)


def say(kind: str, text: str) -> None:
    """Show `text` with st.<kind> (success, error) at the top of the next run."""
    st.session_state[MESSAGE] = (kind, text)


def show_message() -> None:
    message = st.session_state.pop(MESSAGE, None)
    if message:
        getattr(st, message[0])(st_escape(message[1]))


# ---- which dataset --------------------------------------------------------------------------------

def select_dataset(infos: dict) -> str:
    """The dataset picker: a new upload first, else the current dataset, else the first; returns the id."""
    if st.session_state.get(SELECT_NEXT) in infos:
        st.session_state[PICK] = st.session_state.pop(SELECT_NEXT)
    if st.session_state.get(PICK) not in infos:
        current = session.current_dataset_id()
        st.session_state[PICK] = current if current in infos else next(iter(infos))
    workspace = workspace_dir()
    return st.selectbox("Dataset", list(infos), key=PICK,
                        format_func=lambda i: data_view.choice_label(infos[i], workspace))


def choose_options(base) -> tuple:
    """Widgets for the options that apply to `base` (the image size of generated images; the target of
    float images: their labels or the input itself), starting from the current options when `base` is
    the current dataset. Returns the dataset's info with the options chosen, and those options (with
    the current ones the page has no widget for); an option that does not apply is said and dropped."""
    current = session.current_dataset_options() if session.current_dataset_id() == base.id else {}
    options = {k: v for k, v in current.items() if k not in ("image_size", "target")}
    own = dataset_options(base.id)
    if "image_size" in own or base.is_image:
        with st.container(horizontal=True, vertical_alignment="bottom"):
            if "image_size" in own:
                key = f"{OPTION}{base.id}.image_size"
                size = current.get("image_size")
                st.session_state.setdefault(key, size if isinstance(size, int) and 16 <= size <= 128
                                            else own["image_size"])
                size = int(st.number_input("Image size (pixels, square)", 16, 128, key=key, width=220))
                if size != own["image_size"]:
                    options["image_size"] = size
            if base.is_image:
                key = f"{OPTION}{base.id}.target"
                st.session_state.setdefault(key, "input" if current.get("target") == "input" else "labels")
                if st.radio("Target", list(TARGETS), key=key, horizontal=True, format_func=TARGETS.get,
                            help="The input itself turns the images into an autoencoder's task: regression, "
                                 "the model outputs the image it was given") == "input":
                    options["target"] = "input"
    if not options:
        return base, options
    try:
        return get_info(base.id, options=options), options
    except DataError as e:
        st.error(f"The options {st_escape(data_view.dataset_label(base.id, options))} do not apply: "
                 f"{st_escape(str(e))}")
        return base, {}


def render_facts(info) -> None:
    st.markdown(f"**{st_escape(info.name)}** · {st_escape(info.description)}")
    # Each fact as wide as its value (equal columns cut "(1, 32, 32) float32" short); a narrow window wraps them.
    with st.container(horizontal=True, gap="medium"):
        st.metric("Task", info.task.replace("_", " "), width="content")
        st.metric("Input (per sample)", f"{tuple(info.input_shape)} {info.input_dtype}", width="content")
        st.metric("Model output", f"{tuple(info.output_shape)}", help=f"Target: {data_view.target_text(info)}",
                  width="content")
        st.metric("Samples", f"{sum(info.sizes.values()):,}", width="content",
                  help=" · ".join(f"{k} {v:,}" for k, v in info.sizes.items()))
        st.metric("Splits", " / ".join(f"{v:,}" for v in info.sizes.values()), help="train / val / test",
                  width="content")


# ---- the current graph against this dataset --------------------------------------------------------

def _use_with_graph(info, options: dict) -> None:
    try:
        graph = apply_dataset(session.current_graph(), info)
    except GraphError as e:
        say("error", f"Cannot set the graph's input: {e}")
        return
    head = None
    try:
        head = fit_head(graph, analyze(graph), info)  # the output too, where one param makes it fit
    except GraphError:
        pass  # the graph's own errors: the page lists them
    if head is not None:
        graph, changed = head
    session.set_current_graph(graph)  # one edit: one Undo takes the input and the head back
    session.set_current_dataset_id(info.id, options)
    say("success", f"The current graph's input is now {tuple(info.input_shape)} {info.input_dtype} from {info.name}"
                   + (f"; its output fits too: {changed}." if head else ".") + " Undo on the Build page takes it back.")


def render_fit(info, options: dict) -> None:
    """Whether the current graph fits the dataset (each issue), and "Use with current graph"."""
    graph = session.current_graph()
    left, right = st.columns([3, 1], vertical_alignment="center")
    try:
        fit_issues = check_graph_fits(graph, session.current_analysis(), info)
    except GraphError as e:
        fit_issues = list(e.issues)
    errors = [i for i in fit_issues if i.severity == "error"]
    with left:
        st.markdown(f"Current graph **{st_escape(graph.name)}** with {st_escape(info.name)}: "
                    + (":green-badge[fits]" if not errors else f":red-badge[{len(errors)} issue"
                       f"{'s' * (len(errors) != 1)}]"))
        for issue in fit_issues:
            (st.error if issue.severity == "error" else st.warning)(st_escape(str(issue)))
    right.button("Use with current graph", key="studio.data.use", type="primary", on_click=_use_with_graph,
                 args=(info, options), help="Set the graph's Input node to this dataset's sample shape and dtype "
                                            "(and the last layer's size to its classes, where one param does it), "
                                            "and make it (with the options above) the dataset to train on")


# ---- load (downloading if needed) and preview --------------------------------------------------------

@st.cache_resource(max_entries=4, show_spinner="Loading the dataset...")
def _load(dataset_id: str, workspace: str, version: float, options: tuple = ()):
    """The dataset split for seed 0 with `options` (sorted items); `version` (an upload's mtime) drops
    stale cache entries."""
    return get_dataset(dataset_id, workspace=workspace, options=dict(options) or None)


def needs_download(info) -> bool:
    return info.source == "download" and not is_downloaded(info.id, workspace_dir())


def render_download(info) -> None:
    """Where a download goes, and its button with a progress bar; the page reruns once it is there."""
    st.info(f"{info.name} is downloaded on first use into {st_escape(str(workspace_dir() / 'datasets'))}.")
    if not clicks.button(st.button, f"Download {info.name}", key="studio.data.download", icon=":material/download:"):
        return
    bar = st.progress(0.0, text="Connecting...")

    def report(done: int, total: int) -> None:
        bar.progress(min(1.0, done / total) if total else 0.0,
                     text=f"Downloading {info.name}: {done / 1e6:.1f} of {total / 1e6:.1f} MB")

    try:
        get_dataset(info.id, progress=report)
    except DataError as e:
        bar.empty()
        st.error(st_escape(str(e)))
    else:
        bar.progress(1.0, text="Downloaded.")
        st.rerun()


def load_dataset(info, options: dict):
    """The dataset (cached across reruns), or None after showing why it cannot be loaded."""
    workspace = workspace_dir()
    try:
        return _load(info.id, str(workspace), data_view.cache_version(info, workspace), tuple(sorted(options.items())))
    except StudioError as e:
        st.error(st_escape(str(e)))
        return None


def render_samples(dataset, options: dict) -> None:
    """The first training samples as suits the data (images, tokens, series or a table), and the class balance."""
    info = dataset.info
    split = dataset.train
    kind = data_view.preview_kind(info)
    n = min(PREVIEW_SAMPLES, len(split))
    x, y = split.take(slice(0, n))  # only these samples as floats, not the whole uint8 set
    if kind == "image" and options.get("target") == "input":
        st.image(data_view.image_grid_png(x, []), caption=f"The first {n} training images, each its own target")
    elif kind == "image":
        labels = [data_view.target_label(info, t) for t in y]
        st.image(data_view.image_grid_png(x, labels), caption=f"The first {n} training images with their labels")
    elif kind == "tokens":
        st.dataframe(data_view.token_rows(x, y, info, n=10), hide_index=True, width="stretch")
    elif kind == "series":
        samples, labels = data_view.series_samples(x, y, info, n=4)
        st.plotly_chart(charts.series_preview_figure(samples, labels, title="The first training series"),
                        key="studio.data.series")
    else:
        features = None
        if info.source == "upload":
            features = upload_details(info.id).get("preprocessing", {}).get("features")
        st.dataframe(data_view.table_head(x, y, info, n=10, feature_names=features), width="stretch")
        st.caption("Features as the model sees them (standardised).")
    if info.task == "classification" and info.num_classes:
        names = info.class_names or [str(k) for k in range(info.num_classes)]
        st.plotly_chart(charts.class_balance_figure(names, data_view.class_counts(dataset)),
                        key="studio.data.balance")


# ---- uploads ------------------------------------------------------------------------------------------

def _delete(upload_id: str) -> None:
    st.session_state.pop(CONFIRM, None)
    try:
        delete_upload(upload_id)
    except DataError as e:
        say("error", str(e))
        return
    if st.session_state.get(PICK) == upload_id:
        st.session_state.pop(PICK)
    if session.current_dataset_id() == upload_id:
        session.set_current_dataset_id(None)
    say("success", f"Deleted the upload {upload_id}.")


def render_uploads(uploads: list) -> None:
    """One row per upload with its Delete button, which asks before it deletes."""
    if not uploads:
        st.caption("No uploads yet.")
    for up in uploads:
        row = st.columns([4, 1], vertical_alignment="center")
        row[0].markdown(f"**{st_escape(up.name)}** `{up.id}` · {up.task} · {sum(up.sizes.values()):,} samples  \n"
                        f":gray[{st_escape(up.description)}]")
        row[1].button("Delete", key=f"studio.data.delete.{up.id}", icon=":material/delete:",
                      on_click=lambda i=up.id: st.session_state.update({CONFIRM: i}))
        if st.session_state.get(CONFIRM) == up.id:
            with st.container(horizontal=True, vertical_alignment="center"):
                st.warning(f"Delete the upload {st_escape(up.name)}? Runs that used it can no longer be resumed.")
                st.button("Yes, delete", key=f"studio.data.delete_yes.{up.id}", type="primary", on_click=_delete,
                          args=(up.id,))
                st.button("Cancel", key=f"studio.data.delete_no.{up.id}",
                          on_click=lambda: st.session_state.pop(CONFIRM))


def _upload_options(kind: str, columns: list[str]) -> dict:
    """The widgets for one kind of upload's settings, starting from the upload function's defaults."""
    spec = data_view.UPLOAD_KINDS[kind]
    options: dict = {}
    if kind == "CSV table" and columns:
        options["target"] = st.selectbox("Target column", columns, index=len(columns) - 1, key="studio.data.target")
        options["task"] = st.radio("Task", ["auto", "classification", "regression"], horizontal=True,
                                   key="studio.data.csv_task")
        options["drop_columns"] = tuple(st.multiselect("Columns to leave out", [c for c in columns
                                                                               if c != options["target"]],
                                                       key="studio.data.drop"))
    elif kind == "Image folders (zip)":
        options["image_size"] = int(st.number_input("Image size (pixels, square)", 8, 256,
                                                    spec.default("image_size"), key="studio.data.image_size"))
        options["color"] = st.radio("Colour", ["grayscale", "rgb"], horizontal=True, key="studio.data.color",
                                    format_func=lambda c: "Grayscale" if c == "grayscale" else "RGB")
    elif kind == "Text (.txt)":
        runs = data_view.tokenizer_runs()
        if runs:
            tokens = st.selectbox("Tokens", ["characters", *runs], key="studio.data.tokens",
                                  format_func=lambda r: "characters (a vocabulary of the text's own characters)"
                                  if r == "characters" else f"the tokenizer of run {runs[r]}",
                                  help="To fine-tune an imported GPT-2 on this text, tokenize it with that run's "
                                       "tokenizer.json: the ids then mean what its embedding learned.")
            if tokens != "characters":
                options["tokenizer_run"] = tokens
        unit = "tokens" if "tokenizer_run" in options else "characters"
        options["seq_len"] = int(st.number_input(f"Sequence length ({unit})", 4, 4096, spec.default("seq_len"),
                                                 key="studio.data.seq_len"))
    elif kind == "Text + label CSV" and columns:
        options["text_column"] = st.selectbox("Text column", columns, key="studio.data.text_column")
        options["label_column"] = st.selectbox("Label column", columns, index=len(columns) - 1,
                                               key="studio.data.label_column")
        options["max_len"] = int(st.number_input("Max length (characters)", 4, 4096, spec.default("max_len"),
                                                 key="studio.data.max_len"))
        options["max_vocab"] = int(st.number_input("Vocabulary size (most frequent characters)", 10, 5000,
                                                   spec.default("max_vocab"), key="studio.data.max_vocab"))
    return options


def render_upload_form() -> None:
    """Kind, file, name and the kind's settings; Upload reads the file and selects the new dataset."""
    kind = st.radio("Kind", list(data_view.UPLOAD_KINDS), key="studio.data.upload_kind", horizontal=True,
                    help="CSV table: one column is the target. Zip: one folder per class. Text: character-level "
                         "language model. Text + label CSV: text classification.")
    spec = data_view.UPLOAD_KINDS[kind]
    file = st.file_uploader("File", type=list(spec.files), key=f"studio.data.file.{kind}")
    name = st.text_input("Name (optional)", key="studio.data.upload_name", max_chars=60)
    columns = []
    if file is not None and spec.needs_columns:
        try:
            columns = [c["name"] for c in csv_columns(file.getvalue(), file.name)]
        except DataError as e:
            st.error(st_escape(str(e)))
    options = _upload_options(kind, columns)
    upload = data_view.text_upload(options.pop("tokenizer_run", None)) if kind == "Text (.txt)" else spec.upload
    ready = file is not None and (not spec.needs_columns or bool(columns))
    if clicks.button(st.button, "Upload", key="studio.data.upload", type="primary", disabled=not ready):
        try:
            with st.spinner("Reading and preparing the data..."):
                new = upload(file.getvalue(), file.name, name=name.strip() or None, **options)
        except DataError as e:
            st.error(st_escape(str(e)))
        else:
            st.session_state[SELECT_NEXT] = new.id
            say("success", f"Uploaded {new.name} as {new.id}: {new.description}")
            st.rerun()
