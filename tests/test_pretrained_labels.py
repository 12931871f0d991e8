"""studio.pretrained.labels: class names for an imported classifier, read from files generated here in the
formats people have (never a real label list), stored with the run, shown by Inspect's top five."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio.graph import load_graph
from studio.pretrained import PretrainedError, download, import_checkpoint
from studio.pretrained.downloads import Remote
from studio.pretrained.info import imported_info
from studio.pretrained.labels import parse_labels, read_labels, set_labels, stored_labels
from studio.runs import Store
from tests.pretrained_refs import random_resnet
from tests.test_pretrained import nothing_imported, server  # noqa: F401 (the local HTTP server fixture)

K = 30  # classes of the tiny ResNets: over 20, so Inspect shows a top five as it does for ImageNet


def names(k: int = K) -> list[str]:
    return [f"kind_{i}_x" for i in range(k)]  # underscores, as ImageNet's names have


def tiny_resnet(folder: Path, k: int = K) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(random_resnet(width=2, num_classes=k).state_dict(), folder / "r.pth")
    return folder / "r.pth"


def info_of(imp):
    return imported_info(load_graph(imp.graph_path), "imagenet", Path(imp.graph_path).parent)


# ---- formats ---------------------------------------------------------------------------------------

def test_each_format_is_read_in_class_order_with_names_as_written():
    want = ["tench", "great_white_shark", "Granny Smith"]
    files = {
        "imagenet_classes.txt": "tench\ngreat_white_shark\nGranny Smith\n\n",
        "numbered.txt": "2, Granny Smith\n0, tench\n1, great_white_shark\n",
        "numbered_with_header.txt": "index, name\n0, tench\n1, great_white_shark\n2, 'Granny Smith'\n",
        "imagenet_class_index.json": json.dumps({"1": ["n01484850", "great_white_shark"], "0": ["n01440764", "tench"],
                                                 "2": ["n07742313", "Granny Smith"]}),
        "list.json": json.dumps(want),
        "config.json": json.dumps({"architectures": ["ResNetForImageClassification"],
                                   "id2label": {"0": "tench", "2": "Granny Smith", "1": "great_white_shark"}}),
    }
    for name, text in files.items():
        assert parse_labels(text.encode(), name, 3) == want, name


@pytest.mark.parametrize("text, message", [
    ("", r"f is empty"),
    ("\n  \n", r"f is empty"),
    ("0, a\n1, b\n1, c\n", r"index 1 is given twice \(line 2 and line 3\)"),
    ("0, a\n1, b\n3, c\n", r"index 2 is missing \(3 names, highest index 3, out of range: 3\)"),
    ('{"0": ["n1", "a"], "0 ": ["n2", "b"]}', r"index 0 is given twice"),
    ('{"labels": ["a", "b"]}', r"without id2label whose keys \(labels\) are not class indices; it is not one of the "
                               r"class-name formats tried: plain text .*numbered text .*Keras imagenet_class_index"
                               r"\.json .*a JSON list of names; a Hugging Face config\.json with id2label"),
    ('{"0": "a",', r"starts like JSON but is not valid JSON .* formats tried"),
    ("a\n\nb\nc\n", r"line 2 is empty, between names"),
    ("a\nb\n", r"f holds 2 class names but the model has 3 outputs"),
])
def test_bad_label_files_are_refused_saying_why(text, message):
    with pytest.raises(PretrainedError, match=message):
        parse_labels(text.encode(), "f", 3)


def test_a_binary_file_is_not_a_label_format(tmp_path):
    tiny_resnet(tmp_path)
    with pytest.raises(PretrainedError, match=r"r\.pth: .* it is not one of the class-name formats tried"):
        read_labels(tmp_path / "r.pth")


# ---- stored with the run -----------------------------------------------------------------------------

def test_import_with_labels_stores_them_and_imported_info_returns_them(tmp_path, _workspace):
    pth = tiny_resnet(tmp_path / "ck")
    index = {str(i): [f"n{i:08d}", n] for i, n in enumerate(names())}
    (tmp_path / "index.json").write_text(json.dumps(index))
    imp = import_checkpoint(pth, image_size=32, labels=tmp_path / "index.json")
    assert info_of(imp).class_names == names()
    assert imp.to_json()["labels"] == {"file": str((tmp_path / "index.json").resolve()), "count": K}
    assert f"class names: {K} from {(tmp_path / 'index.json').resolve()}" in Store().read_events(imp.run_id)[0].message
    # Without names, imported_info keeps numbering the classes (and without the run directory, too).
    plain = import_checkpoint(pth, image_size=32)
    assert info_of(plain).class_names is None
    assert imported_info(load_graph(imp.graph_path), "imagenet").class_names is None


def test_a_labels_file_of_the_wrong_count_refuses_the_import(tmp_path, _workspace):
    pth = tiny_resnet(tmp_path)
    (tmp_path / "ten.txt").write_text("\n".join(names(10)))
    with pytest.raises(PretrainedError, match=r"ten\.txt holds 10 class names but the model has 30 outputs"):
        import_checkpoint(pth, image_size=32, labels=tmp_path / "ten.txt")
    nothing_imported(_workspace)


def test_a_labels_file_beside_the_checkpoint_is_picked_up(tmp_path):
    pth = tiny_resnet(tmp_path / "a")
    (tmp_path / "a" / "labels.txt").write_text("".join(f"{i}, {n}\n" for i, n in enumerate(names())))
    imp = import_checkpoint(pth, image_size=32)
    assert info_of(imp).class_names == names()
    assert any(n.endswith("labels.txt (found beside the checkpoint)") for n in imp.notes)
    # One that does not fit is noted, not fatal: the import goes on with numbered classes.
    pth = tiny_resnet(tmp_path / "b")
    (tmp_path / "b" / "imagenet_classes.txt").write_text("\n".join(names(1000)))
    imp = import_checkpoint(pth, image_size=32)
    assert info_of(imp).class_names is None
    assert any("imagenet_classes.txt beside the checkpoint does not fit (" in n and "1,000 class names but the model "
               "has 30 outputs" in n for n in imp.notes)


def test_an_imported_run_gets_names_afterwards_and_a_wrong_count_leaves_it_unchanged(tmp_path, capsys):
    from studio.__main__ import main

    imp = import_checkpoint(tiny_resnet(tmp_path), image_size=32)
    rd = Path(imp.graph_path).parent
    (tmp_path / "bad.txt").write_text("\n".join(names(29)))
    assert main(["pretrained", "labels", imp.run_id, str(tmp_path / "bad.txt")]) == 1
    assert "bad.txt holds 29 class names but the model has 30 outputs" in capsys.readouterr().err
    assert not (rd / "class_names.json").exists() and len(Store().read_events(imp.run_id)) == 1
    (tmp_path / "good.json").write_text(json.dumps(names()))
    assert main(["pretrained", "labels", imp.run_id, str(tmp_path / "good.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == K
    assert stored_labels(rd) == names() == info_of(imp).class_names
    assert Store().read_events(imp.run_id)[-1].message.startswith(f"class names: {K} from ")


def test_cli_import_with_labels_json(tmp_path, _workspace):
    pth = tiny_resnet(tmp_path)
    (tmp_path / "n.txt").write_text("\n".join(names()))
    done = subprocess.run([sys.executable, "-m", "studio", "pretrained", "import", str(pth), "--image-size", "32",
                           "--labels", str(tmp_path / "n.txt"), "--json"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "STUDIO_WORKSPACE": str(_workspace)})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["labels"] == {"file": str((tmp_path / "n.txt").resolve()), "count": K}
    assert stored_labels(Path(out["graph"]).parent) == names()


# ---- download ------------------------------------------------------------------------------------------

def test_download_fetches_the_class_names_beside_the_checkpoint(server, _workspace):  # noqa: F811
    handler, url = server
    buf = io.BytesIO()
    torch.save(random_resnet(width=2, num_classes=1000).state_dict(), buf)
    handler.files["tiny.pth"] = buf.getvalue()
    remote = Remote("tiny.pth", url, sha256=hashlib.sha256(buf.getvalue()).hexdigest())
    # No labels file on the server: a warning, and the import still happens with numbered classes.
    imp = download("resnet18", files=(remote,), with_labels=True, base_url=url, image_size=32)
    assert info_of(imp).class_names is None
    warning = Store().read_events(imp.run_id)[-1]
    assert warning.level == "warning" and "imagenet_classes.txt answered HTTP 404 (Not Found)." in warning.message
    assert "pretrained import PATH" not in warning.message  # the checkpoint's advice, not the labels'"
    assert f"python -m studio pretrained labels {imp.run_id} imagenet_classes.txt" in warning.message
    # A file that is not 1000 names is deleted, never picked up.
    handler.files["imagenet_classes.txt"] = "\n".join(names(999)).encode()
    imp = download("resnet18", files=(remote,), with_labels=True, base_url=url, image_size=32)
    assert info_of(imp).class_names is None
    assert "not fetched: imagenet_classes.txt holds 999 class names, not the 1,000 expected" in imp.notes[-1]
    dest = _workspace / "downloads" / "pretrained" / "resnet18"
    assert not (dest / "imagenet_classes.txt").exists()
    # The real layout: 1000 names, fetched through the same code (progress), stored with the run.
    handler.files["imagenet_classes.txt"] = "".join(n + "\n" for n in names(1000)).encode()
    seen = []
    imp = download("resnet18", files=(remote,), with_labels=True, base_url=url, image_size=32,
                   progress=lambda done, total, name: seen.append(name))
    assert info_of(imp).class_names == names(1000)
    assert "imagenet_classes.txt" in seen and (dest / "imagenet_classes.txt").is_file()


# ---- pages ---------------------------------------------------------------------------------------------

def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 120, 40)).save(buf, format="PNG")
    return buf.getvalue()


def test_inspect_top_five_names_the_classes_or_says_how_to_add_them(tmp_path):
    from tests.test_pretrained import _inspect

    imp = import_checkpoint(tiny_resnet(tmp_path), image_size=32)
    at = _inspect(imp.run_id)
    at.file_uploader(key="studio.inspect.inf.upload").upload("photo.png", _png(), "image/png").run()
    assert not at.exception, [e.message for e in at.exception]
    top = at.dataframe[0].value["class"].tolist()
    assert len(top) == 5 and all(c.startswith("class ") for c in top)
    captions = " ".join(c.value for c in at.caption)
    assert f"python -m studio pretrained labels {imp.run_id} imagenet_classes.txt" in captions

    (tmp_path / "n.txt").write_text("\n".join(names()))
    set_labels(imp.run_id, tmp_path / "n.txt")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    named = at.dataframe[0].value["class"].tolist()
    assert named == [f"{c.split()[1]} kind_{c.split()[1]}_x" for c in top]  # same classes, now named
    assert "pretrained labels" not in " ".join(c.value for c in at.caption)
    first = top[0].split()[1]
    assert any(f"Prediction: kind\\_{first}\\_x**" in m for m in at.markdown.values)  # escaped Markdown


def test_uploaded_checkpoint_with_a_labels_file_stores_the_names(tmp_path):
    from studio.pretrained.uploads import import_uploaded

    pth = tiny_resnet(tmp_path)
    imp = import_uploaded([("r.pth", pth.read_bytes())], labels=("classes.txt", "\n".join(names()).encode()),
                          image_size=32)
    assert info_of(imp).class_names == names()
    assert imp.class_names_source == "classes.txt (uploaded files r.pth, classes.txt)"


def test_home_panel_adds_names_to_a_run_imported_earlier(tmp_path):
    from streamlit.testing.v1 import AppTest

    imp = import_checkpoint(tiny_resnet(tmp_path), image_size=32)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=90)
    at.run()
    p = "studio.home.pretrained."
    assert at.selectbox(key=p + "names_run").value == imp.run_id
    at.file_uploader(key=p + "names_file").upload("few.txt", b"a\nb\n", "text/plain").run()
    at.button(key=p + "names_go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert "holds 2 class names but the model has 30 outputs" in at.error[0].value
    assert at.error[0].value.startswith("few\\.txt \\(uploaded\\)")  # escaped Markdown
    assert stored_labels(Path(imp.graph_path).parent) is None
    at.file_uploader(key=p + "names_file").set_value(("n.txt", "\n".join(names()).encode(), "text/plain")).run()
    at.button(key=p + "names_go").click().run()
    assert f"now names its {K} classes" in at.success[-1].value
    assert stored_labels(Path(imp.graph_path).parent) == names()
