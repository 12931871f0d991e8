"""'Start from a pretrained model' (Home and Build): download a published checkpoint, upload one, or give
its path; the import makes a run of status `imported` (studio.pretrained), shown here with buttons that
open it in Inspect or its graph in Build."""

from __future__ import annotations

import streamlit as st

from components import clicks, nav, session
from components.text import st_escape
from studio.errors import StudioError

INSPECT = "pages/4_Inspect.py"
BUILD = "pages/1_Build.py"
ARCHS = {"resnet18": "ResNet-18 (torchvision, ImageNet, 45 MB)", "gpt2": "GPT-2 small (Hugging Face, 548 MB)"}


def _result_key(key: str) -> str:
    return f"{key}.result"


def _run_import(key: str, action) -> None:
    """Run an import and keep its outcome (the run, or the error's message) for the panel to show."""
    try:
        imp = action()
    except StudioError as e:
        st.session_state[_result_key(key)] = {"error": str(e)}
        return
    except OSError as e:
        from studio.oserrors import describe_os_error

        st.session_state[_result_key(key)] = {"error": describe_os_error(e, "import the checkpoint", "the workspace")}
        return
    st.session_state[_result_key(key)] = imp.to_dict()


def _show_result(key: str) -> None:
    result = st.session_state.get(_result_key(key))
    if not result:
        return
    if "error" in result:
        st.error(st_escape(result["error"]))
        return
    st.success(f"Imported **{st_escape(result['architecture'])}** as run `{result['run_id']}` "
               f"({result['params']:,} parameters, status imported). It is in the runs table of the Train page.")
    for note in result["notes"][1:]:
        st.caption(st_escape(note))
    row = st.columns(2)
    if clicks.button(row[0].button, "Open in Inspect", key=f"{key}.inspect", icon=":material/visibility:"):
        session.set_current_run_id(result["run_id"])
        nav.go(INSPECT)
    if clicks.button(row[1].button, "Open its graph in Build", key=f"{key}.build", icon=":material/edit:"):
        from studio.graph import load_graph

        session.open_graph(load_graph(result["graph_path"]))
        nav.go(BUILD)


def render(key: str) -> None:
    """The panel; `key` namespaces its widgets (one panel per page)."""
    from studio.pretrained import download, import_checkpoint
    from studio.pretrained.uploads import import_uploaded

    st.caption("Bring published weights: a torchvision ResNet (.pth: ResNet-18/34/50) or a Hugging Face GPT-2 "
               "(config.json + model.safetensors). The import builds the graph with blocks and makes a run of "
               "status imported that holds the weights: inspect it, export it, or fine-tune from it "
               "(Train: Warm start from run).")
    how = st.radio("From", ["Download", "Upload files", "Path on this machine"], horizontal=True,
                   key=f"{key}.how", label_visibility="collapsed")
    if how == "Download":
        arch = st.selectbox("Model", list(ARCHS), format_func=ARCHS.get, key=f"{key}.arch")
        if clicks.button(st.button, "Download and import", key=f"{key}.download", type="primary",
                         icon=":material/download:"):
            bar = st.progress(0.0, text="connecting")

            def progress(done, total, name):
                if total:
                    bar.progress(min(done / total, 1.0), text=f"{name}: {done / 1e6:,.1f} of {total / 1e6:,.1f} MB")

            _run_import(key, lambda: download(arch, progress=progress))
            bar.empty()
    elif how == "Upload files":
        files = st.file_uploader("Checkpoint files", accept_multiple_files=True, key=f"{key}.files",
                                 type=["pth", "pt", "json", "safetensors", "txt"],
                                 help="One .pth, or GPT-2's config.json + model.safetensors (+ tokenizer.json). "
                                      "Files over the upload limit (200 MB): give their path instead.")
        names = st.file_uploader("Class names (optional)", key=f"{key}.labels", type=["txt", "json"],
                                 help=LABELS_HELP)
        if clicks.button(st.button, "Import", key=f"{key}.upload", type="primary", disabled=not files,
                         icon=":material/upload:"):
            _run_import(key, lambda: import_uploaded([(f.name, f.getvalue()) for f in files],
                                                     labels=(names.name, names.getvalue()) if names else None))
    else:
        path = st.text_input("Path", key=f"{key}.path", placeholder="/data/resnet18-f37072fd.pth or /data/gpt2/",
                             help="A .pth file, or a folder with config.json and model.safetensors")
        if clicks.button(st.button, "Import", key=f"{key}.import", type="primary", disabled=not path,
                         icon=":material/input:"):
            _run_import(key, lambda: import_checkpoint(path.strip()))
    _show_result(key)
    _add_names(key)


LABELS_HELP = ("The classifier's class names: imagenet_classes.txt (one a line), 'N, name' lines, Keras' "
               "imagenet_class_index.json, a JSON list, or a config.json with id2label. Without it, a "
               "download or a file beside the checkpoint gives them; else the classes are numbered.")


def _add_names(key: str) -> None:
    """Class names for an ImageNet classifier imported earlier (studio.pretrained.labels.set_labels)."""
    from studio.pretrained.labels import set_labels
    from studio.runs import Store

    runs = [r for r in Store().list_runs("imported") if r.dataset_id == "imagenet"]
    if not runs:
        return
    with st.expander("Add class names to an imported run"):
        run_id = st.selectbox("Run", [r.id for r in runs], key=f"{key}.names_run",
                              format_func=lambda i: f"{next(r.name for r in runs if r.id == i)} ({i})")
        upload = st.file_uploader("Class names", key=f"{key}.names_file", type=["txt", "json"], help=LABELS_HELP)
        if clicks.button(st.button, "Store the names", key=f"{key}.names_go", disabled=upload is None,
                         icon=":material/label:"):
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / Path(upload.name).name
                path.write_bytes(upload.getvalue())
                try:
                    names = set_labels(run_id, path, source=f"{upload.name} (uploaded)")
                except StudioError as e:
                    st.error(st_escape(str(e)))
                else:
                    st.success(f"Run `{run_id}` now names its {len(names):,} classes "
                               f"(class 0: {st_escape(names[0])}).")
