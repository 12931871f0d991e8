"""Hostile input: zip slip, zip bombs, binary garbage as CSV, huge lines, hostile strings in every
field of a graph document (the exported code stays safe), and pickles passed as checkpoints.

Payloads that would run code all try to create a marker file; every test asserts it never appears.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio import inspection as ins
from studio.analysis import analyze
from studio.codegen import export_graph, to_code
from studio.compile import compile_graph
from studio.data import get_dataset
from studio.data.uploads import csv_columns, list_uploads, upload_csv, upload_image_zip, upload_text, upload_text_csv
from studio.errors import DataError, ExportError, GraphError, TrainError
from studio.graph import parse_graph
from studio.layers import REGISTRY
from studio.runs import Store, reconcile, resume_run, run_dir, start_run, stop_run
from studio.training import TrainConfig
from studio.training.callbacks import load_checkpoint
from tests.reliability.helpers import files_outside, kill_leftover_workers, mlp_doc, wait_for


@pytest.fixture()
def marker(tmp_path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a payload ran"


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 6), seed * 20 % 256, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def classes(n: int = 6) -> dict[str, bytes]:
    return {f"{c}/{i}.png": png(i + 5 * k) for k, c in enumerate(("cat", "dog")) for i in range(n)}


# ---- zip slip -----------------------------------------------------------------------------------------

SLIPS = ["../../evil.txt", "../../../../../../tmp/evil.png", "cat/../../evil.png", "/tmp/evil.png",
         "C:\\Windows\\evil.png", "..\\..\\evil.png", "cat/..\\..\\evil.png", "./../evil.png"]


@pytest.mark.parametrize("entry", SLIPS)
def test_zip_slip_is_refused_and_writes_nothing_outside_the_workspace(_workspace, tmp_path, entry):
    with pytest.raises(DataError, match=r"points outside the archive's folder .*refusing the whole archive"):
        upload_image_zip(make_zip({**classes(), entry: png(1)}), "slip.zip")
    assert files_outside(tmp_path, _workspace) == [] and not list(tmp_path.rglob("evil*"))
    assert not Path("/tmp/evil.png").exists() and list_uploads() == []


def test_hostile_file_and_dataset_names_stay_inside_the_uploads_folder(_workspace, tmp_path):
    csv = "a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30))
    info = upload_csv(csv.encode(), "../../../../etc/passwd.csv", target="label", name="../../../evil/..\x00/x")
    folder = _workspace / "datasets" / "uploads" / info.id
    assert info.id.startswith("upload_") and "/" not in info.id and folder.is_dir()
    assert files_outside(tmp_path, _workspace) == []
    assert get_dataset(info.id).info.name == "../../../evil/..\x00/x"  # kept as a label, never as a path
    zipped = upload_image_zip(make_zip(classes()), "../../x.zip", name="/etc/shadow")
    assert (_workspace / "datasets" / "uploads" / zipped.id).is_dir()
    assert files_outside(tmp_path, _workspace) == []


# ---- zip bombs ----------------------------------------------------------------------------------------

def _patch_sizes(data: bytes, real: int, declared: int) -> bytes:
    """Make every header of the archive declare `declared` uncompressed bytes instead of `real`."""
    patched = data.replace(real.to_bytes(4, "little"), declared.to_bytes(4, "little"))
    assert all(i.file_size == declared for i in zipfile.ZipFile(io.BytesIO(patched)).infolist()
               if i.filename == "dog/bomb.png")
    return patched


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_zip_bombs_are_refused_without_expanding_them(_workspace, tmp_path):
    size = 60 * 2**20  # past the 50 MB per-entry cap; compresses to about 60 KB
    honest = make_zip({**classes(), "dog/bomb.png": b"\0" * size})
    assert len(honest) < 200_000

    def refused(data: bytes, match: str):
        with pytest.raises(DataError, match=match):
            upload_image_zip(data, "bomb.zip")

    peak = _peak_bytes(lambda: refused(honest, r"entry 'dog/bomb.png' declares 62,914,560 bytes; the limit per file"))
    assert peak < 8 * 2**20  # refused from the headers: nothing was inflated
    # the same bomb whose headers lie (10 bytes): reading stops at the declared size, the archive is refused
    liar = _patch_sizes(honest, size, 10)
    peak = _peak_bytes(lambda: refused(liar, r"entry 'dog/bomb.png' cannot be read .*the archive is damaged"))
    assert peak < 8 * 2**20
    # a zip inside the zip is not opened (not an image): it is skipped and counted
    nested = upload_image_zip(make_zip({**classes(), "cat/inner.zip": honest}), "nested.zip", image_size=8)
    assert "1 non-image files skipped" in nested.description
    assert files_outside(tmp_path, _workspace) == []
    assert [p.name for p in (_workspace / "datasets" / "uploads").iterdir()] == [nested.id]  # no temp folder left


# ---- binary garbage and huge lines as CSV ----------------------------------------------------------------

def _garbage() -> dict[str, bytes]:
    rng = random.Random(7)
    printable = "abc,\"'\n\r\t;0123456789.-eE \\\x0b\x0c"
    out = {
        "random bytes": bytes(rng.randrange(256) for _ in range(4096)),
        "NUL bytes": b"\0" * 2048,
        "NUL inside rows": b"a,b\n" + b"1,\0\n" * 20,
        "UTF-16": "x,y\n1,2\n".encode("utf-16"),
        "a PNG": png(3),
        "a zip": make_zip(classes(1)),
        "a pickle": pickle.dumps({"a": list(range(50))}),
        "unclosed quote": b'a,b\n1,"2\n3,4\n' * 10,
        "only carriage returns": b"a,b\r1,2\r" * 30,
        "BOM then nothing": b"\xef\xbb\xbf",
        "lone surrogate bytes": b"a,b\n\xed\xa0\x80,1\n" * 12,
    }
    for i in range(8):
        out[f"random text {i}"] = "".join(rng.choice(printable) for _ in range(rng.randrange(1, 3000))).encode()
    return out


@pytest.mark.parametrize("name", sorted(_garbage()))
def test_binary_garbage_as_csv_is_a_data_error_never_a_crash(_workspace, tmp_path, name):
    data = _garbage()[name]
    calls = {
        "csv_columns": lambda: csv_columns(data, "garbage.csv"),
        "upload_csv": lambda: upload_csv(data, "garbage.csv", target="b"),
        "upload_text_csv": lambda: upload_text_csv(data, "garbage.csv", text_column="a", label_column="b"),
    }
    for what, call in calls.items():
        try:
            call()
        except DataError as e:
            assert str(e).startswith("garbage.csv"), (what, str(e))
    assert files_outside(tmp_path, _workspace) == []
    uploads = _workspace / "datasets" / "uploads"
    assert not uploads.exists() or not [p for p in uploads.iterdir() if p.name.startswith(".tmp")]


def test_huge_line_lengths(_workspace):
    one_line = b"a," + b"9" * (4 * 2**20)  # a 4 MB field, no newline at all
    with pytest.raises(DataError, match=r"garbage.csv: not a readable CSV near line 1: field larger than field limit"):
        upload_csv(one_line, "garbage.csv", target="a")
    # 5,000 columns on one line: a valid (wide) table
    n = 5_000
    header = ",".join(f"c{i}" for i in range(n)) + ",label\n"
    rows = "".join(",".join(str((i * j) % 7) for j in range(n)) + f",{i % 2}\n" for i in range(12))
    info = upload_csv((header + rows).encode(), "wide.csv", target="label")
    assert info.input_shape == (n,) and info.num_classes == 2
    assert get_dataset(info.id).train.x.shape[1:] == (n,)
    # a 1 MB single-line text for a character model
    text = upload_text(("abcdefgh " * 120_000).encode(), "one-line.txt", seq_len=64)
    assert text.vocab == sorted(set("abcdefgh ")) and sum(text.sizes.values()) > 10
    with pytest.raises(DataError, match=r"one line\.txt is 200 MB; uploads are limited to 200 MB"):
        upload_text(b"x" * (200 * 2**20 + 1), "one line.txt")


# ---- hostile strings in every field of a graph document -----------------------------------------------------

def payloads(marker: Path) -> list[str]:
    m = repr(str(marker))
    run = f"open({m}, 'w').close()"
    return [
        f'"""\n{run}\n"""',
        f"'''\n{run}\n'''",
        f'\\"""; {run}; """',
        f'x\\\\""" + {run} + """',
        f"\\\n{run}",
        f"\r{run}\r",
        f"\u2028{run}\u2029\x85{run}\x0c",
        f"\0{run}",
        f"{{__import__('os').system('touch {marker}')}}",
        "%(name)s %s {0} {}",
        "# -*- coding: rot13 -*-\n" + run,
        "\\N{",
        "\\x4",
        "\\u12",
        "\ud800 lone surrogate",
        "<script>alert(1)</script>",
        "A" * 50_000 + f'"""{run}',
        f"#\n{run}  # trailing",
        '"',
        "\\",
    ]


def _tiny_graph(name: str, description: str) -> dict:
    doc = mlp_doc([4], 8, 3, name=name)
    doc["description"] = description
    return doc


def test_hostile_names_and_descriptions_export_as_code_that_compiles_and_never_runs_them(marker, tmp_path):
    for i, text in enumerate(payloads(marker)):
        graph = parse_graph(_tiny_graph(text, text))
        code = to_code(graph)
        compiled = compile(code, f"exported_{i}.py", "exec")  # a SyntaxError would fail here
        namespace: dict = {"__name__": f"exported_{i}"}
        exec(compiled, namespace)
        assert not marker.exists(), f"payload {i} ran at import"
        classes_defined = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
                           and v.__module__ == f"exported_{i}"]
        assert len(classes_defined) == 1
        exported = classes_defined[0]()
        studio_model = compile_graph(graph, seed=0)
        exported.load_state_dict(studio_model.state_dict(), strict=True)
        x = torch.randn(5, 4)
        assert torch.equal(exported(x), studio_model(x))
        assert not marker.exists(), f"payload {i} ran"
    # the training script too (its main() is not called on import), written to disk by export_graph
    graph = parse_graph(_tiny_graph(payloads(marker)[0], payloads(marker)[6]))
    path = export_graph(graph, "code", tmp_path / "train.py", dataset_id="iris")
    namespace = {"__name__": "exported_script"}
    exec(compile(path.read_text("utf-8"), str(path), "exec"), namespace)
    assert callable(namespace["main"]) and not marker.exists()


def test_a_hostile_class_name_is_refused(marker):
    graph = parse_graph(_tiny_graph("ok", ""))
    for text in payloads(marker)[:8] + ["Model(nn.Module):\n    pass\nimport os\nclass X", "torch", "class"]:
        with pytest.raises(ExportError, match=r"class_name=.*(is not a Python identifier|would clash)"):
            to_code(graph, class_name=text)


def test_a_hostile_monitor_name_cannot_reach_the_training_script(marker):
    graph = parse_graph(_tiny_graph("ok", ""))
    for text in payloads(marker)[:8]:
        for monitor in ("val_" + text, "val_x\n" + text.lstrip("\\\"'\r\n")):
            with pytest.raises(TrainError, match=r"monitor=.* is not a metric name"):
                to_code(graph, training_script=True, dataset_id="iris",
                        config={"schedule": "plateau", "monitor": monitor})
    assert "MONITOR, MODE = 'val_loss', 'min'" in to_code(graph, training_script=True, dataset_id="iris",
                                                          config={"schedule": "plateau", "monitor": "val_loss"})


def _string_fields(text: str) -> list[tuple[str, dict]]:
    """(field, document) with `text` put in one string-carrying field of a valid graph each time."""
    out = []
    base = mlp_doc([4], 8, 3)

    def variant(field: str, edit) -> None:
        doc = {**base, "nodes": [dict(n, params=dict(n.get("params", {}))) for n in base["nodes"]],
               "edges": [dict(e) for e in base["edges"]]}
        edit(doc)
        out.append((field, doc))

    variant("format", lambda d: d.update(format=text))
    variant("node id", lambda d: (d["nodes"][1].update(id=text), d["edges"][0].update(target=text),
                                  d["edges"][1].update(source=text)))
    variant("node type", lambda d: d["nodes"][1].update(type=text))
    variant("param name", lambda d: d["nodes"][1]["params"].update({text: 1}))
    variant("param value", lambda d: d["nodes"][1]["params"].update(out_features=text))
    variant("dtype", lambda d: d["nodes"][0]["params"].update(dtype=text))
    variant("position", lambda d: d["nodes"][1].update(position={"x": text, "y": 0}))
    variant("edge source", lambda d: d["edges"][0].update(source=text))
    variant("edge port", lambda d: d["edges"][0].update(port=text))
    variant("unknown key", lambda d: d.update({text: text}))
    return out


def _choice_params() -> list[tuple[str, str, dict]]:
    """(type, param, minimal node doc) for every palette param that takes a string."""
    found = []
    for type_name, spec in REGISTRY.items():
        for p in spec.params:
            if p.kind in ("choice", "padding"):
                found.append((type_name, p.name))
    return found


def test_hostile_strings_in_structural_fields_and_string_params_are_graph_errors(marker):
    refused = 0
    for text in payloads(marker) + ["input", "fc1", ""]:
        for field, doc in _string_fields(text):
            try:
                graph = parse_graph(doc)
                code = to_code(graph)
            except GraphError as e:  # never anything but the studio's own error, each issue with a message
                assert e.issues and all(i.message for i in e.issues), field
                refused += 1
                continue
            # accepted (e.g. a node renamed to another valid id): the export is still safe to import
            exec(compile(code, "exported.py", "exec"), {"__name__": "exported"})
            assert not marker.exists(), (field, text)
    assert refused >= len(payloads(marker)) * 9
    # every string-valued palette param (choices, padding) refuses a hostile value on its node
    text = payloads(marker)[0]
    for type_name, param in _choice_params():
        node_params = {param: text}
        doc = {"format": "studio.graph/1", "name": "p", "nodes": [
            {"id": "input", "type": "Input", "params": {"shape": [4, 8, 8] if "2d" in type_name.lower() else [8, 16]}},
            {"id": "layer", "type": type_name, "params": node_params}], "edges": [
            {"source": "input", "target": "layer"}]}
        if type_name == "Input":
            doc = mlp_doc([4], 8, 3)
            doc["nodes"][0]["params"][param] = text
        try:
            graph = parse_graph(doc)
        except GraphError as e:
            assert any(i.node_id in ("layer", "input") for i in e.issues), (type_name, param)
            continue
        errors = analyze(graph).errors
        assert any(i.node_id in ("layer", "input") and i.param == param for i in errors), (type_name, param, errors)
        with pytest.raises(GraphError):
            to_code(graph)
    assert not marker.exists()


# ---- pickles passed as checkpoints ----------------------------------------------------------------------------

class Payload:
    """Unpickling this object calls open(marker, 'w'): the classic pickle exploit."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"plain pickle": folder / "plain.pt", "torch.save of a payload": folder / "torch.pt",
             "payload inside a real checkpoint": folder / "inside.pt"}
    files["plain pickle"].write_bytes(pickle.dumps(Payload(marker)))
    torch.save(Payload(marker), files["torch.save of a payload"])
    torch.save({"format": "studio.checkpoint/1", "model": {"w": torch.ones(2)}, "evil": Payload(marker)},
               files["payload inside a real checkpoint"])
    assert not marker.exists()  # pickling does not run it; only unpickling would
    return files


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_files_are_refused_by_the_checkpoint_loader(marker, tmp_path):
    for what, path in _evil_files(tmp_path / "evil", marker).items():
        with pytest.raises(TrainError, match=rf"checkpoint '.*{path.name}' was refused: it is not made of tensors "
                                             r"and plain values only"):
            load_checkpoint(path)
        assert not marker.exists(), what


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_put_in_place_of_last_pt_fails_the_resume_clearly(_workspace, marker, monkeypatch):
    """Through the whole product: a stopped run whose last.pt is a payload; resuming it runs a real worker."""
    monkeypatch.setenv("STUDIO_MAX_RUNS", "1")
    store = Store()
    try:
        # a placeholder holds the only slot, so the real run stays queued and is stopped before it starts
        store.create_run("placeholder", name="slot", graph=mlp_doc([4], 8, 3), config={}, dataset_id="iris",
                         status="running")
        store.update_run("placeholder", pid=os.getpid())
        run_id = start_run(mlp_doc([4], 8, 3), "iris", TrainConfig(max_steps=20, probes=False), name="victim")
        assert stop_run(run_id) == "stopped"
        store.set_status("placeholder", "completed")
        files = _evil_files(_workspace / "evil", marker)
        (run_dir(run_id) / "checkpoints" / "last.pt").write_bytes(files["torch.save of a payload"].read_bytes())
        (run_dir(run_id) / "checkpoints" / "best.pt").write_bytes(files["plain pickle"].read_bytes())
        resume_run(run_id, store=store)
        wait_for(lambda: store.get_run(run_id).status not in ("queued", "running"), "the resumed run to end")
        run = store.get_run(run_id)
        assert run.status == "failed"
        assert run.error.startswith(f"checkpoint '{run_dir(run_id) / 'checkpoints' / 'last.pt'}' was refused")
        assert not marker.exists()
        with pytest.raises(TrainError, match=r"best.pt' was refused"):  # the Inspect page's loader too
            ins.load_model(ins.load_run(run_id), "best")
        assert not marker.exists()
    finally:
        kill_leftover_workers(store)
        reconcile(store)


def test_no_torch_load_without_weights_only_anywhere():
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in list((root / "studio").rglob("*.py")) + list((root / "components").rglob("*.py")) + \
            list((root / "pages").rglob("*.py")) + [root / "app.py"]:
        text = path.read_text("utf-8")
        for i, line in enumerate(text.splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
            if "pickle.load" in line or "weights_only=False" in line or "allow_pickle=True" in line:
                offenders.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert offenders == []
