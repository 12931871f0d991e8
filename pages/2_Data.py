"""Data: pick a built-in, downloadable or uploaded dataset, see what it holds, preview its samples,
upload your own data, and set the current graph's input from it ("Use with current graph")."""

import streamlit as st

from components import charts, data_view, nav, session
from components.canvas import st_escape
from studio.data import (
    apply_dataset,
    check_graph_fits,
    csv_columns,
    dataset_options,
    delete_upload,
    get_dataset,
    get_info,
    list_datasets,
    upload_csv,
    upload_image_zip,
    upload_text,
    upload_text_csv,
)
from studio.data.downloads import is_downloaded
from studio.errors import DataError, GraphError, StudioError
from studio.workspace import workspace_dir

st.set_page_config(page_title="Data · Neural Studio", page_icon="🗂️", layout="wide")
nav.render()

PICK = "studio.data.dataset"
MESSAGE = "studio.data.message"
CONFIRM = "studio.data.confirm_delete"
# The dataset to select on the next run: a widget's value cannot be set once it is drawn, so an
# upload (at the bottom of the page) leaves its id here and the next run applies it before the selectbox.
SELECT_NEXT = "studio.data.select_next"
OPTION = "studio.data.option."  # + dataset id + "." + option name: the option widgets
SOURCES = {"builtin": "built in", "download": "download", "upload": "upload"}
TARGETS = {"labels": "the labels", "input": "the input itself (autoencoder)"}


@st.cache_resource(max_entries=4, show_spinner="Loading the dataset...")
def load(dataset_id: str, workspace: str, version: float, options: tuple = ()):
    """The dataset split for seed 0 with `options` (sorted items); `version` (an upload's mtime) drops
    stale cache entries."""
    return get_dataset(dataset_id, workspace=workspace, options=dict(options) or None)


def version_of(info) -> float:
    if info.source != "upload":
        return 0.0
    folder = workspace_dir() / "datasets" / "uploads" / info.id
    return folder.stat().st_mtime if folder.exists() else 0.0


def label(info) -> str:
    where = SOURCES.get(info.source, info.source)
    if info.source == "download":
        where = "downloaded" if is_downloaded(info.id, workspace_dir()) else "download on first use"
    return f"{info.name} ({info.id}) · {info.task} · {where}"


def say(kind: str, text: str) -> None:
    st.session_state[MESSAGE] = (kind, text)


def choose_options(base) -> dict:
    """Widgets for the options that apply to `base` (the image size of generated images; the target of
    float images: their labels or the input itself), starting from the current options when `base` is
    the current dataset. Returns the options chosen, with the current ones the page has no widget for."""
    current = session.current_dataset_options() if session.current_dataset_id() == base.id else {}
    options = {k: v for k, v in current.items() if k not in ("image_size", "target")}
    own = dataset_options(base.id)
    if "image_size" not in own and not base.is_image:
        return options
    with st.container(horizontal=True, vertical_alignment="bottom"):
        if "image_size" in own:
            key = f"{OPTION}{base.id}.image_size"
            size = current.get("image_size")
            st.session_state.setdefault(key, size if isinstance(size, int) and 16 <= size <= 128 else own["image_size"])
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
    return options


def use_with_graph(info, options: dict) -> None:
    try:
        graph = apply_dataset(session.current_graph(), info)
    except GraphError as e:
        say("error", f"Cannot set the graph's input: {e}")
        return
    session.set_current_graph(graph)
    session.set_current_dataset_id(info.id, options)
    say("success", f"The current graph's input is now {tuple(info.input_shape)} {info.input_dtype} from {info.name}.")


def delete(upload_id: str) -> None:
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


def show_message() -> None:
    message = st.session_state.pop(MESSAGE, None)
    if message:
        getattr(st, message[0])(st_escape(message[1]))


# ---- which dataset --------------------------------------------------------------------------------
st.title("Data")
infos = {i.id: i for i in list_datasets()}
ids = list(infos)
if st.session_state.get(SELECT_NEXT) in infos:
    st.session_state[PICK] = st.session_state.pop(SELECT_NEXT)
if st.session_state.get(PICK) not in infos:
    current = session.current_dataset_id()
    st.session_state[PICK] = current if current in infos else ids[0]
picked = st.selectbox("Dataset", ids, key=PICK, format_func=lambda i: label(infos[i]))
options = choose_options(infos[picked])
info = infos[picked]
if options:
    try:
        info = get_info(picked, options=options)
    except DataError as e:
        st.error(f"The options {st_escape(data_view.dataset_label(picked, options))} do not apply: {st_escape(str(e))}")
        options = {}
show_message()

st.markdown(f"**{st_escape(info.name)}** · {st_escape(info.description)}")
target = f"{info.num_classes} classes" if info.task == "classification" else (
    f"{tuple(info.output_shape)}" if info.task != "regression" else f"{tuple(info.target_shape)} float")
# Each fact as wide as its value (equal columns cut "(1, 32, 32) float32" short); a narrow window wraps them.
with st.container(horizontal=True, gap="medium"):
    st.metric("Task", info.task.replace("_", " "), width="content")
    st.metric("Input (per sample)", f"{tuple(info.input_shape)} {info.input_dtype}", width="content")
    st.metric("Model output", f"{tuple(info.output_shape)}", help=f"Target: {target}", width="content")
    st.metric("Samples", f"{sum(info.sizes.values()):,}", width="content",
              help=" · ".join(f"{k} {v:,}" for k, v in info.sizes.items()))
    st.metric("Splits", " / ".join(f"{v:,}" for v in info.sizes.values()), help="train / val / test", width="content")

# ---- the current graph against this dataset --------------------------------------------------------
graph = session.current_graph()
with st.container(border=True):
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
    right.button("Use with current graph", key="studio.data.use", type="primary", on_click=use_with_graph,
                 args=(info, options), help="Set the graph's Input node to this dataset's sample shape and dtype, "
                                            "and make it (with the options above) the dataset to train on")

# ---- load (downloading if needed) and preview --------------------------------------------------------
dataset = None
if info.source == "download" and not is_downloaded(info.id, workspace_dir()):
    st.info(f"{info.name} is downloaded on first use into {st_escape(str(workspace_dir() / 'datasets'))}.")
    if st.button(f"Download {info.name}", key="studio.data.download", icon=":material/download:"):
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
else:
    try:
        dataset = load(info.id, str(workspace_dir()), version_of(info), tuple(sorted(options.items())))
    except StudioError as e:
        st.error(st_escape(str(e)))

if dataset is not None:
    st.subheader("Samples")
    split = dataset.train
    kind = data_view.preview_kind(info)
    n = min(32, len(split))
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
            from studio.data import upload_details

            features = upload_details(info.id).get("preprocessing", {}).get("features")
        st.dataframe(data_view.table_head(x, y, info, n=10, feature_names=features), width="stretch")
        st.caption("Features as the model sees them (standardised).")
    if info.task == "classification" and info.num_classes:
        names = info.class_names or [str(k) for k in range(info.num_classes)]
        st.plotly_chart(charts.class_balance_figure(names, data_view.class_counts(dataset)),
                        key="studio.data.balance")

# ---- uploads ------------------------------------------------------------------------------------------
st.subheader("Your data")
uploads = [i for i in infos.values() if i.source == "upload"]
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
            st.button("Yes, delete", key=f"studio.data.delete_yes.{up.id}", type="primary", on_click=delete,
                      args=(up.id,))
            st.button("Cancel", key=f"studio.data.delete_no.{up.id}", on_click=lambda: st.session_state.pop(CONFIRM))

with st.expander("Upload a dataset", expanded=not uploads):
    kind = st.radio("Kind", ["CSV table", "Image folders (zip)", "Text (.txt)", "Text + label CSV"],
                    key="studio.data.upload_kind", horizontal=True,
                    help="CSV table: one column is the target. Zip: one folder per class. Text: character-level "
                         "language model. Text + label CSV: text classification.")
    types = {"CSV table": ["csv"], "Image folders (zip)": ["zip"], "Text (.txt)": ["txt"],
             "Text + label CSV": ["csv"]}[kind]
    file = st.file_uploader("File", type=types, key=f"studio.data.file.{kind}")
    name = st.text_input("Name (optional)", key="studio.data.upload_name", max_chars=60)
    options: dict = {}
    columns = []
    if file is not None and kind in ("CSV table", "Text + label CSV"):
        try:
            columns = [c["name"] for c in csv_columns(file.getvalue(), file.name)]
        except DataError as e:
            st.error(st_escape(str(e)))
    if kind == "CSV table" and columns:
        options["target"] = st.selectbox("Target column", columns, index=len(columns) - 1, key="studio.data.target")
        options["task"] = st.radio("Task", ["auto", "classification", "regression"], horizontal=True,
                                   key="studio.data.csv_task")
        options["drop_columns"] = tuple(st.multiselect("Columns to leave out", [c for c in columns
                                                                               if c != options["target"]],
                                                       key="studio.data.drop"))
    elif kind == "Image folders (zip)":
        options["image_size"] = int(st.number_input("Image size (pixels, square)", 8, 256, 32,
                                                    key="studio.data.image_size"))
        options["color"] = st.radio("Colour", ["grayscale", "rgb"], horizontal=True, key="studio.data.color",
                                    format_func=lambda c: "Grayscale" if c == "grayscale" else "RGB")
    elif kind == "Text (.txt)":
        options["seq_len"] = int(st.number_input("Sequence length (characters)", 4, 4096, 64,
                                                 key="studio.data.seq_len"))
    elif kind == "Text + label CSV" and columns:
        options["text_column"] = st.selectbox("Text column", columns, key="studio.data.text_column")
        options["label_column"] = st.selectbox("Label column", columns, index=len(columns) - 1,
                                               key="studio.data.label_column")
        options["max_len"] = int(st.number_input("Max length (characters)", 4, 4096, 128, key="studio.data.max_len"))
        options["max_vocab"] = int(st.number_input("Vocabulary size (most frequent characters)", 10, 5000, 300,
                                                   key="studio.data.max_vocab"))
    ready = file is not None and (kind not in ("CSV table", "Text + label CSV") or bool(columns))
    if st.button("Upload", key="studio.data.upload", type="primary", disabled=not ready):
        upload = {"CSV table": upload_csv, "Image folders (zip)": upload_image_zip, "Text (.txt)": upload_text,
                  "Text + label CSV": upload_text_csv}[kind]
        try:
            with st.spinner("Reading and preparing the data..."):
                new = upload(file.getvalue(), file.name, name=name.strip() or None, **options)
        except DataError as e:
            st.error(st_escape(str(e)))
        else:
            st.session_state[SELECT_NEXT] = new.id
            say("success", f"Uploaded {new.name} as {new.id}: {new.description}")
            st.rerun()
