"""Second round of hostile input, one test per class: amplification in CPU and memory through other
formats (image headers declaring millions of pixels in PNG, GIF, TIFF, BMP; a CSV line of millions of
delimiters), sweep documents with NaN, huge integers and deep nesting anywhere, a damaged sweep study,
and user strings reaching the Sweep and Deploy figures as markup."""

from __future__ import annotations

import io
import json
import math
import re
import time
import zipfile

import pytest

from studio.data import readers, upload_image_zip
from studio.errors import DataError, StorageError, TrainError
from studio.sweeps.spec import load_sweep, parse_sweep
from tests.reliability.helpers import mlp_doc

GRAPH = mlp_doc([4], 8, 3, name="hostile")


# ---- amplification: CPU and memory from headers and delimiters ------------------------------------------

def image_bytes(fmt: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", size).save(out, fmt, **({"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}))
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "TIFF", "BMP"])
def test_an_image_zip_declaring_too_many_pixels_in_all_is_refused_before_decoding(_workspace, monkeypatch, fmt):
    # Each image declares 1200x1200 (1.44 M pixels, far under the per-image cap); ten of them pass a 15 M
    # budget and twelve do not. At the real budget the same holds for a 1.4 MB zip of 6000x6000 PNGs
    # (80 s of decoding before this check).
    monkeypatch.setattr(readers, "MAX_ZIP_TOTAL_PIXELS", 15_000_000)
    image = image_bytes(fmt, (1200, 1200))
    decoded = []
    real = readers._decode_image
    monkeypatch.setattr(readers, "_decode_image", lambda *a: decoded.append(a[1]) or real(*a))

    def archive(n: int) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for i in range(n):
                zf.writestr(f"{'ab'[i % 2]}/{i}.{fmt.lower()}", image)
        return out.getvalue()

    with pytest.raises(DataError, match=r"its images hold more than 15,000,000 pixels in all .*1,440,000.*shrink the "
                                        r"images before zipping"):
        upload_image_zip(archive(12), "bomb.zip", image_size=8)
    assert decoded == []  # refused from the headers alone
    assert upload_image_zip(archive(10), "fine.zip", image_size=8).input_shape == (1, 8, 8)


def test_a_jpeg_counts_at_the_reduced_size_it_is_decoded_at(_workspace, monkeypatch):
    monkeypatch.setattr(readers, "MAX_ZIP_TOTAL_PIXELS", 15_000_000)
    from PIL import Image

    jpeg = io.BytesIO()
    Image.new("L", (1600, 1600)).save(jpeg, "JPEG")  # 2.56 M pixels, decoded at 1/8 scale for image_size 8
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for i in range(12):
            zf.writestr(f"{'ab'[i % 2]}/{i}.jpg", jpeg.getvalue())
    assert upload_image_zip(out.getvalue(), "photos.zip", image_size=8).input_shape == (1, 8, 8)


def test_a_csv_line_of_millions_of_delimiters_is_refused_before_it_is_split():
    data = b"a,b\n1,2\n" + b"," * 3_000_000 + b"\n"
    # Refused from the count alone: split, it was three million empty fields (a "blank" row, skipped and
    # accepted after the memory was spent).
    with pytest.raises(DataError, match=r"line 3 holds 3,000,000 delimiters .*at most 10,000 columns"):
        readers.read_csv(data, "wide.csv")
    quoted = b"text,label\n" + b'"' + b"," * 15_000 + b'",x\n' + b"hello,y\n" * 10  # commas inside quotes pass
    assert readers.read_csv(quoted, "quoted.csv").rows == 11


# ---- sweep documents: the values no sweep can use, anywhere -----------------------------------------------

def nested(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


BASE_SWEEP = {"format": "studio.sweep/1", "graph": GRAPH, "data": "iris", "config": {"epochs": 1},
              "space": {"lr": {"log_uniform": [1e-4, 1e-1]}}, "objective": "val_loss", "trials": 2}


@pytest.mark.parametrize(("change", "message"), [
    ({"config": {"epochs": 1, "weight_decay": math.inf}}, r"\['config'\]\['weight_decay'\] is inf; every number in a "
                                                          r"sweep must be finite"),
    ({"space": {"lr": {"uniform": [0.1, math.nan]}}}, r"is nan; every number in a sweep must be finite"),
    ({"space": {"batch_size": {"choice": [10**30]}}}, r"integer of 31 digits, past the 64-bit range"),
    ({"data_options": {"x": nested(500)}}, r"nested more than \d+ levels deep; a sweep document"),
    ({"objective": nested(3)}, r"objective: must name a logged metric"),
    ({"objective": {"a": 1}}, r"objective: must name a logged metric"),
])
def test_sweep_documents_with_unusable_values_give_only_sweep_errors(change, message):
    with pytest.raises(TrainError, match=message):
        parse_sweep({**BASE_SWEEP, **change})


@pytest.mark.parametrize(("text", "message"), [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply to read"),
    ('{"trials": ' + "9" * 5000 + "}", "integer literal thousands of digits long"),
    ('{"trials": NaN}', "every number in a sweep must be finite"),
])
def test_sweep_files_from_the_cli_are_explained_without_a_traceback(tmp_path, capsys, text, message):
    from studio.__main__ import main

    path = tmp_path / "sweep.json"
    path.write_text(text)
    with pytest.raises(TrainError, match=message):
        load_sweep(path)
    assert main(["sweep", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# ---- damaged files: the sweep's study -------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"not a database at all" * 200, b"SQLite format 3\x00" + b"\xff" * 8000])
def test_a_damaged_sweep_study_is_a_storage_error_saying_what_to_do(_workspace, content):
    from studio.sweeps.control import sweep_dir, write_state
    from studio.sweeps.results import param_importances, sweep_summary

    directory = sweep_dir("s1")
    directory.mkdir(parents=True)
    (directory / "sweep.json").write_text(json.dumps(BASE_SWEEP))
    write_state(directory, status="completed", created=time.time())
    (directory / "study.db").write_bytes(content)
    for read in (sweep_summary, param_importances):
        with pytest.raises(StorageError, match=r"the sweep's study .*study\.db' is damaged .*move it aside \(rename "
                                               r"it to study\.db\.damaged\)"):
            read("s1")


# ---- markup in figures ----------------------------------------------------------------------------------

HOSTILE = '<a href="https://evil.example">x</a><span style="font-size:300px">big</span>'


def test_sweep_and_deploy_figures_show_user_strings_as_text():
    from components.train.sweep_view import importance_figure, objective_figure, parallel_figure

    summary = {"objective_name": "val_loss", "direction": "minimize", "trials": [
        {"number": 0, "status": "completed", "objective": 0.5, "params": {"act": HOSTILE, "lr": 0.1}},
        {"number": 1, "status": "completed", "objective": 0.4, "params": {"act": "plain", "lr": 0.2}}]}
    texts = []
    fig = objective_figure(summary)
    texts += [t for trace in fig.data for t in (trace.hovertext or ())]
    parcoords = parallel_figure(summary).data[0]
    texts += [t for d in parcoords.dimensions for t in (d.ticktext or ())] + [d.label for d in parcoords.dimensions]
    texts += list(importance_figure({HOSTILE: 1.0}).data[0].y)
    assert any("evil.example" in t for t in texts)
    assert not any("<a" in t or "<span" in t for t in texts), texts


# ---- a full disk under sweep writes ---------------------------------------------------------------------

def test_enospc_while_starting_or_resuming_a_sweep_is_a_message_and_leaves_no_sweep_folder(_workspace, monkeypatch):
    import errno

    from studio.sweeps import control

    real = control.atomic_write_text

    def full(path, text):
        if path.name == control.SWEEP_FILE or path.name == control.STATE_FILE:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(control, "atomic_write_text", full)
    monkeypatch.setattr(control, "_spawn", lambda directory: pytest.fail("no process for a sweep never written"))
    with pytest.raises(StorageError, match=r"cannot create the sweep in .*sweeps: the disk is full .*free some disk "
                                           r"space.*sweeps saved before are unchanged"):
        control.start_sweep(parse_sweep(BASE_SWEEP))
    assert list(control.sweeps_dir().iterdir()) == []

    directory = control.sweeps_dir() / "s1"  # a stopped sweep whose state cannot be written back
    directory.mkdir()
    (directory / control.SWEEP_FILE).write_text(json.dumps(BASE_SWEEP))
    (directory / control.STATE_FILE).write_text(json.dumps({"status": "stopped", "created": 1.0}))
    with pytest.raises(StorageError, match=r"cannot resume the sweep in .*s1: the disk is full"):
        control.resume_sweep("s1")


# ---- damaged files: a checkpoint whose weights entry is wrong ---------------------------------------------

@pytest.mark.parametrize(("model", "found"), [
    (None, "missing"), ([1, 2], "list"), ("weights", "str"), ({"fc1.weight": 3}, "dict"), (7, "int")])
def test_a_checkpoint_without_usable_weights_is_a_train_error_naming_the_file(tmp_path, model, found):
    import torch

    from studio.graph import parse_graph
    from studio.training.callbacks import CHECKPOINT_FORMAT, load_trained_model

    path = tmp_path / "best.pt"
    torch.save({"format": CHECKPOINT_FORMAT, **({} if model is None else {"model": model})}, path)
    with pytest.raises(TrainError, match=rf"checkpoint '.*best\.pt' is damaged: its 'model' entry \(the weights\) is "
                                         rf"{found}, not a dict of named tensors"):
        load_trained_model(parse_graph(GRAPH), path, run_id="r")


# ---- damaged files: probe snapshots on the Inspect page --------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04" + b"\x00" * 64])
def test_inspect_shows_a_damaged_probe_snapshot_as_a_warning(_workspace, content):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from studio.runs import Store
    from studio.runs.rundir import RunDir

    Store().create_run("r1", name="damaged probes", graph=GRAPH, config={"epochs": 1}, dataset_id="iris",
                       status="completed")
    run = RunDir.of("r1")
    run.create(graph_json=json.dumps(GRAPH), config={"epochs": 1},
               meta={"run_id": "r1", "dataset_id": "iris", "dataset_options": {}})
    (run.probes_dir / "index.json").write_text(json.dumps([{"file": "s1.npz", "step": 1}]))
    (run.probes_dir / "s1.npz").write_bytes(content)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "4_Inspect.py"), default_timeout=60)
    at.session_state["studio.inspect.view"] = "Weights & gradients"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("A probe snapshot could not be read" in w.value for w in at.warning), [w.value for w in at.warning]


# ---- damaged files: an upload's arrays and meta.json --------------------------------------------------------

@pytest.mark.parametrize(("file", "damage", "message"), [
    ("x.npy", lambda data: b"", r"cannot read its arrays"),
    ("meta.json", lambda data: json.dumps({**json.loads(data), "info": 5}).encode(), r"dataset info cannot be read"),
    ("meta.json", lambda data: json.dumps({k: v for k, v in json.loads(data).items() if k != "info"}).encode(),
     r"dataset info cannot be read \(KeyError"),
])
def test_a_damaged_upload_is_a_data_error_naming_it(_workspace, file, damage, message):
    from studio.data import get_dataset, get_info, list_uploads, upload_text

    info = upload_text(b"hello world, " * 60, "t.txt", seq_len=8)
    path = _workspace / "datasets" / "uploads" / info.id / file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=rf"upload '{info.id}' is damaged: .*{message}"):
        get_dataset(info.id)
    if file == "meta.json":
        with pytest.raises(DataError, match=message):
            get_info(info.id)
        assert list_uploads() == []  # left out of the list, which still works


# ---- a full disk under exports ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["code", "pt2"])
def test_an_export_on_a_full_disk_is_a_message_and_leaves_no_file(tmp_path, monkeypatch, capsys, fmt):
    import errno
    import os

    from studio.__main__ import main

    graph = tmp_path / "g.json"
    graph.write_text(json.dumps(GRAPH))
    real_fdopen = os.fdopen

    class Full:  # the temp file opens; writing its bytes hits ENOSPC, as on a full disk
        def __init__(self, fd, mode="r", *a, **k):
            self.f = real_fdopen(fd, mode, *a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", Full)
    out = tmp_path / "out" / ("model.py" if fmt == "code" else "model.pt2")
    assert main(["export", str(graph), "--format", fmt, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "free some disk space" in err and "Traceback" not in err, err
    assert [p.name for p in out.parent.iterdir()] == []  # no model, no temp file left behind


# ---- amplification: a graph document of hundreds of thousands of nodes ----------------------------------------

@pytest.mark.parametrize("key", ["nodes", "edges"])
def test_a_graph_with_too_many_nodes_or_edges_is_refused_before_it_is_walked(tmp_path, capsys, key):
    from components.build.graph_files import parse_upload
    from studio.__main__ import main
    from studio.graph import MAX_EDGES, MAX_NODES

    n = (MAX_NODES if key == "nodes" else MAX_EDGES // 4) + 1
    nodes = [{"id": "input", "type": "Input", "params": {"shape": [4]}}] + [
        {"id": f"n{i}", "type": "ReLU"} for i in range(n if key == "nodes" else 1)]
    edges = [{"source": "input", "target": "n0"}] * (1 if key == "nodes" else MAX_EDGES + 1)
    data = json.dumps({"format": "studio.graph/1", "name": "big", "nodes": nodes, "edges": edges})
    graph, issues = parse_upload(data.encode())
    assert graph is None and re.search(rf"the document has [\d,]+ {key}; a graph may have at most", str(issues[0]))
    path = tmp_path / "big.json"
    path.write_text(data)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr()
    assert "a graph may have at most" in out.out + out.err and "Traceback" not in out.err


# ---- a run store row edited by hand ----------------------------------------------------------------------

@pytest.mark.parametrize("column, value", [("config", "{not json"), ("graph", "[1, 2]"), ("tags", "null")])
def test_a_hand_edited_run_row_does_not_hide_the_other_runs(_workspace, capsys, column, value):
    from studio.__main__ import main as cli
    from studio.runs import Store

    store = Store()
    store.create_run("good", name="kept", graph=GRAPH, config={"lr": 0.1}, dataset_id="iris")
    store.create_run("edited", name="hand-edited", graph=GRAPH, config={"lr": 0.1}, dataset_id="iris")
    store.connect().execute(f"UPDATE runs SET {column}=? WHERE id='edited'", (value,))

    runs = {r.id: r for r in Store().list_runs()}
    assert runs["good"].config == {"lr": 0.1} and runs["good"].error is None
    assert f"damaged {column} value" in runs["edited"].error and getattr(runs["edited"], column) == {}
    assert cli(["runs"]) == 0
    listed = capsys.readouterr().out
    assert "kept" in listed and "hand-edited" in listed
