"""Uploads: CSV tables, image-folder zips, text; every hostile or broken file gets its error and
nothing is ever written outside the workspace."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.data import (
    csv_columns,
    delete_upload,
    get_dataset,
    list_datasets,
    list_uploads,
    readers,
    upload_csv,
    upload_details,
    upload_image_zip,
    upload_text,
    upload_text_csv,
)
from studio.errors import DataError


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    cwd = tmp_path / "cwd"  # relative paths would land here, outside the workspace
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return ws


def files_outside(tmp_path: Path, workspace: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.is_file() and workspace not in p.parents]


def uploads_root(workspace: Path) -> Path:
    return workspace / "datasets" / "uploads"


def no_leftovers(workspace: Path) -> bool:
    root = uploads_root(workspace)
    return not root.exists() or not any(p.name.startswith(".tmp-") for p in root.iterdir())


# ---- CSV --------------------------------------------------------------------------------------------

def table_csv(n: int = 40, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    rows = ["height,weight,colour,species,price"]
    for i in range(n):
        rows.append(f"{rng.normal(170, 10):.2f},{rng.normal(70, 8):.2f},{['red', 'blue'][i % 2]},"
                    f"{['cat', 'dog', 'fox'][i % 3]},{rng.normal(100, 20):.3f}")
    return ("\n".join(rows) + "\n").encode()


def test_csv_classification_with_one_hot_and_standardisation(workspace, tmp_path):
    info = upload_csv(table_csv(), "Pets Table.csv", target="species", drop_columns=("price",))
    assert info.id == "upload_pets_table_csv"
    assert (info.task, info.input_shape, info.num_classes, info.class_names) == \
        ("classification", (4,), 3, ["cat", "dog", "fox"])
    assert info.source == "upload" and "uploaded CSV Pets Table.csv" in info.description
    ds = get_dataset(info.id, seed=0)
    assert ds.info == info and ds.train.y.dtype == torch.int64
    # standardised with the seed-0 training split's statistics, which are stored with the upload
    torch.testing.assert_close(ds.train.x.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    details = upload_details(info.id)
    assert details["preprocessing"]["features"] == ["height", "weight", "colour=blue", "colour=red"]
    assert details["preprocessing"]["one_hot"] == {"colour": ["blue", "red"]}
    assert len(details["preprocessing"]["mean"]) == 4
    assert sorted(p.name for p in (uploads_root(workspace) / info.id).iterdir()) == ["meta.json", "x.npy", "y.npy"]
    assert files_outside(tmp_path, workspace) == []


def test_csv_regression_and_integer_classes():
    info = upload_csv(table_csv(), "t.csv", target="price")
    assert (info.task, info.target_shape, info.num_classes, info.class_names) == ("regression", (1,), None, None)
    ds = get_dataset(info.id)
    assert ds.train.y.dtype == torch.float32 and ds.train.y.shape == (info.sizes["train"], 1)
    ints = b"a,b,label\n" + b"".join(f"{i},{i * 2},{(i % 3) * 5}\n".encode() for i in range(30))
    info = upload_csv(ints, "ints.csv", target="label")
    assert info.task == "classification" and info.class_names == ["0", "5", "10"]  # numeric order
    forced = upload_csv(ints, "ints.csv", target="label", task="regression")
    assert forced.task == "regression" and forced.id == "upload_ints_csv_2"  # ids never collide


def test_csv_columns_summary():
    cols = {c["name"]: c for c in csv_columns(table_csv(), "t.csv")}
    assert cols["species"]["kind"] == "text" and cols["species"]["distinct"] == 3
    assert cols["price"]["kind"] == "number"


@pytest.mark.parametrize("data, options, message", [
    (b"", {"target": "y"}, r"x.csv is empty"),
    (b"   \n\n", {"target": "y"}, r"x.csv is empty"),
    (b"a,y\n1,2\n3,4,5\n", {"target": "y"}, r"line 3 has 3 fields but the header has 2 columns"),
    (b"a,y\n1\n", {"target": "y"}, r"line 2 has 1 fields but the header has 2 columns"),
    (b"a,y\n", {"target": "y"}, r"has a header but no data rows"),
    (b"a,b\n" + b"1,2\n" * 20, {"target": "y"}, r"target column 'y' is not in the CSV; its columns are: a, b"),
    (b"a,y\n" + b"1,same\n" * 20, {"target": "y"}, r"target column 'y' has one class \('same'\) in all 20 rows"),
    (b"a,y\n" + b"1,2.5\n" * 20, {"target": "y", "task": "regression"}, r"'y' is 2.5 in every row"),
    (b"a,y\n" + b"1,2\n" * 3, {"target": "y"}, r"found 3 data rows; at least 10 are needed"),
    (b"a,y\n" + b"1,1\n,0\n" * 10, {"target": "y"}, r"column 'a' has 10 missing values \(first on data row 2\)"),
    (b"name,y\n" + b"".join(f"n{i},{i % 2}\n".encode() for i in range(30)), {"target": "y"},
     r"column 'name' is text with 30 distinct values .* drop the column"),
    (b"a,a,y\n1,2,3\n", {"target": "y"}, r"the header repeats column 'a'"),
    (b"\xff\xfe\x00a,y\n", {"target": "y"}, r"x.csv is not UTF-8 text"),
    (b"a,y\n" + b"1,2\n" * 20, {"target": "y", "task": "maybe"}, r"task='maybe'; use 'auto'"),
])
def test_broken_csv_gets_a_clear_error(workspace, tmp_path, data, options, message):
    with pytest.raises(DataError, match=message):
        upload_csv(data, "x.csv", **options)
    assert list_uploads() == [] and no_leftovers(workspace)
    assert files_outside(tmp_path, workspace) == []


# ---- image zips --------------------------------------------------------------------------------------

def png(color: int, size=(12, 10), mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)  # names kept verbatim
    return buf.getvalue()


def class_zip(prefix: str = "pets/", per_class: int = 6, extra: dict | None = None) -> bytes:
    entries = {f"{prefix}{cls}/{i}.png": png(shade + i) for cls, shade in (("cat", 10), ("dog", 200))
               for i in range(per_class)}
    entries.update(extra or {})
    return make_zip(entries)


def test_image_zip_upload(workspace, tmp_path):
    extra = {"pets/readme.txt": b"hello", "__MACOSX/pets/._1.png": b"junk", "pets/cat/.DS_Store": b"x"}
    info = upload_image_zip(class_zip(extra=extra), "pets.zip", image_size=16)
    assert (info.task, info.input_shape, info.class_names) == ("classification", (1, 16, 16), ["cat", "dog"])
    assert "3 non-image files skipped" in info.description
    assert sorted(upload_details(info.id)["skipped"]) == sorted(extra)
    ds = get_dataset(info.id)
    assert sum(info.sizes.values()) == 12
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 16, 16)
    assert (x[y == 0].mean() < 0.1) and (x[y == 1].mean() > 0.75)  # dark cats, bright dogs
    rgb = upload_image_zip(class_zip(prefix=""), "pets.zip", image_size=8, color="rgb")
    assert rgb.input_shape == (3, 8, 8)
    assert files_outside(tmp_path, workspace) == []


HOSTILE_ZIPS = {
    "parent": ({"cat/1.png": png(1), "../../evil.txt": b"owned"}, r"entry '../../evil.txt' points outside"),
    "nested_parent": ({"cat/../../../evil.txt": b"owned", "dog/1.png": png(2)}, r"points outside"),
    "absolute": ({"/tmp/evil.txt": b"owned", "cat/1.png": png(1)}, r"entry '/tmp/evil.txt' points outside"),
    "windows": ({"C:\\evil.txt": b"owned", "cat/1.png": png(1)}, r"points outside"),
    "backslash": ({"..\\evil.txt": b"owned", "cat/1.png": png(1)}, r"points outside"),
    "one_class": ({f"cat/{i}.png": png(i) for i in range(12)}, r"all images are in one folder \('cat'\)"),
    "no_folders": ({f"{i}.png": png(i) for i in range(12)}, r"12 images are not inside a class folder"),
    "no_images": ({"a/readme.txt": b"x", "b/notes.md": b"y"}, r"contains no images \(2 other files\)"),
    "corrupt": ({**{f"cat/{i}.png": png(i) for i in range(10)}, "dog/2.png": b"\x89PNG\r\n\x1a\nnot really"},
                r"'dog/2.png' is not a readable image"),
    "truncated": ({**{f"cat/{i}.png": png(i) for i in range(10)}, "dog/2.png": png(3, (64, 64))[:60]},
                  r"'dog/2.png' is not a readable image"),
    "too_few": ({"cat/1.png": png(1), "dog/2.png": png(2)}, r"found 2 images; at least 10 are needed"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ZIPS))
def test_hostile_zip_gets_its_error_and_writes_nothing_outside(workspace, tmp_path, case):
    entries, message = HOSTILE_ZIPS[case]
    with pytest.raises(DataError, match=message):
        upload_image_zip(make_zip(entries), "evil.zip")
    assert files_outside(tmp_path, workspace) == []
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/evil.txt").exists()
    assert list_uploads() == [] and no_leftovers(workspace)


def test_not_a_zip_and_symlinks():
    with pytest.raises(DataError, match=r"x.zip is not a readable zip archive"):
        upload_image_zip(b"PK\x03\x04 definitely not", "x.zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        link = zipfile.ZipInfo("cat/link.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        zf.writestr("dog/1.png", png(1))
    with pytest.raises(DataError, match=r"'cat/link.png' is a symbolic link"):
        upload_image_zip(buf.getvalue(), "x.zip")


def test_zip_bomb_stopped_by_declared_sizes_before_reading(monkeypatch):
    monkeypatch.setattr(readers, "MAX_ZIP_ENTRY_BYTES", 1 << 20)
    bomb = make_zip({"cat/1.png": png(1), "dog/bomb.png": b"\0" * (2 << 20)})
    assert len(bomb) < 20_000  # 2 MB of zeros compress to a few KB
    many = make_zip({f"c{i % 2}/{i}.png": b"" for i in range(6)}, zipfile.ZIP_STORED)

    def never(*args, **kwargs):
        raise AssertionError("an entry was opened")

    monkeypatch.setattr(zipfile.ZipFile, "open", never)
    with pytest.raises(DataError, match=r"'dog/bomb.png' declares 2,097,152 bytes; the limit per file is 1,048,576"):
        upload_image_zip(bomb, "bomb.zip")
    monkeypatch.setattr(readers, "MAX_ZIP_TOTAL_BYTES", 1 << 20)
    monkeypatch.setattr(readers, "MAX_ZIP_ENTRY_BYTES", 1 << 30)
    with pytest.raises(DataError, match=r"declares 2,09\d,\d{3} bytes uncompressed; the limit is 1,048,576"):
        upload_image_zip(bomb, "bomb.zip")
    monkeypatch.setattr(readers, "MAX_ZIP_FILES", 5)
    with pytest.raises(DataError, match=r"holds 6 entries; the limit is 5"):
        upload_image_zip(many, "many.zip")


def test_zip_bomb_stopped_by_counting_bytes_while_reading(monkeypatch):
    """An archive that lies about its sizes: reading stops at the cap, whatever the headers say."""
    real = png(5, (64, 64))
    entries = {f"cat/{i}.png": real for i in range(6)} | {f"dog/{i}.png": real for i in range(6)}
    data = make_zip(entries)
    # every entry declares 10 bytes: the declared total passes every cap
    zf = zipfile.ZipFile(io.BytesIO(data))
    lying = io.BytesIO()
    with zipfile.ZipFile(lying, "w", zipfile.ZIP_DEFLATED) as out:
        for info in zf.infolist():
            out.writestr(info, zf.read(info))
    patched = bytearray(lying.getvalue())
    size = len(real).to_bytes(4, "little")
    patched = bytes(patched).replace(size, (10).to_bytes(4, "little"))
    infos = zipfile.ZipFile(io.BytesIO(patched)).infolist()
    assert all(i.file_size == 10 for i in infos)
    with pytest.raises(DataError, match=r"cat/0.png"):  # damaged (CRC) or capped: refused either way
        upload_image_zip(patched, "liar.zip")
    # the counting cap itself, for a zip reader that would not stop at the declared size
    monkeypatch.setattr(readers, "MAX_ZIP_ENTRY_BYTES", 100)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo("cat/0.png")
        with pytest.raises(DataError, match=rf"'cat/0.png' expands past 100 bytes although it declares {len(real):,}"):
            readers._read_entry(archive, info, 10_000, "liar.zip")
        monkeypatch.setattr(readers, "MAX_ZIP_ENTRY_BYTES", 1 << 20)
        with pytest.raises(DataError, match=r"expands past 50 bytes"):  # what is left of the archive's budget
            readers._read_entry(archive, info, 50, "liar.zip")
        assert readers._read_entry(archive, info, 10_000, "ok.zip") == real


def test_huge_image_dimensions_refused(monkeypatch):
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match=r"image 'pets/cat/0.png' is 12x10 pixels, more than the 100 allowed"):
        upload_image_zip(class_zip(), "big.zip")


def test_image_options_validated():
    with pytest.raises(DataError, match=r"color='cmyk'; use 'grayscale' or 'rgb'"):
        upload_image_zip(class_zip(), "x.zip", color="cmyk")
    with pytest.raises(DataError, match=r"image_size=4; use an integer from 8 to 256"):
        upload_image_zip(class_zip(), "x.zip", image_size=4)


# ---- text ----------------------------------------------------------------------------------------------

def test_text_upload_for_character_models():
    text = "the quick brown fox jumps over the lazy dog. " * 40
    info = upload_text(text.encode(), "fox.txt", seq_len=16)
    assert (info.task, info.input_shape, info.input_dtype, info.target_shape) == \
        ("language_model", (16,), "int64", (16,))
    assert info.vocab == sorted(set(text)) and info.num_classes == len(info.vocab)
    ds = get_dataset(info.id)
    x, y = ds.train.x[0], ds.train.y[0]
    assert torch.equal(x[1:], y[:-1])
    assert "".join(info.vocab[i] for i in x.tolist()) in text


@pytest.mark.parametrize("data, message", [
    (b"", r"t.txt is empty"),
    (b"short text", r"t.txt has 10 characters: with seq_len=64 that makes 0 sequences, at least 10"),
    (b"abc\xff\xfe" * 400, r"t.txt is not UTF-8 text \(byte 3 is 0xff\)"),
])
def test_broken_text_files(data, message):
    with pytest.raises(DataError, match=message):
        upload_text(data, "t.txt")


def test_text_label_csv():
    rows = ["review,label"] + [f'"{"great fun, loved it" if i % 2 else "dull and slow"} #{i}",'
                               f'{"pos" if i % 2 else "neg"}' for i in range(30)]
    info = upload_text_csv("\n".join(rows).encode(), "reviews.csv", text_column="review", label_column="label",
                           max_len=12)
    assert (info.task, info.input_shape, info.input_dtype, info.class_names) == \
        ("classification", (12,), "int64", ["neg", "pos"])
    assert info.vocab[:2] == ["<pad>", "<unk>"] and "30 cut to 12 characters" in info.description
    ds = get_dataset(info.id)
    assert ds.train.x.dtype == torch.int64 and int(ds.train.x.max()) < len(info.vocab)
    with pytest.raises(DataError, match=r"label column 'stars' is not in the CSV"):
        upload_text_csv("\n".join(rows).encode(), "r.csv", text_column="review", label_column="stars")
    one = "text,label\n" + "".join(f"t{i},x\n" for i in range(20))
    with pytest.raises(DataError, match=r"target column 'label' has one class \('x'\)"):
        upload_text_csv(one.encode(), "r.csv", text_column="text", label_column="label")


# ---- the store ----------------------------------------------------------------------------------------

def test_list_and_delete_uploads(workspace):
    a = upload_csv(table_csv(), "a.csv", target="species")
    b = upload_text(b"hello world " * 100, "b.txt", seq_len=8)
    assert [i.id for i in list_uploads()] == [a.id, b.id]
    assert [i.id for i in list_datasets()][-2:] == [a.id, b.id]
    delete_upload(a.id)
    assert [i.id for i in list_uploads()] == [b.id]
    with pytest.raises(DataError, match="no upload 'upload_a_csv'"):
        get_dataset(a.id)
    with pytest.raises(DataError, match="is not an upload id"):
        delete_upload("../../ws")
    assert workspace.exists()


def test_damaged_upload_is_reported(workspace):
    info = upload_text(b"hello world " * 100, "b.txt", seq_len=8)
    folder = uploads_root(workspace) / info.id
    os.remove(folder / "x.npy")
    with pytest.raises(DataError, match=r"upload 'upload_b_txt' is damaged: cannot read its arrays"):
        get_dataset(info.id)
    (folder / "meta.json").write_text(json.dumps({"format": "other"}))
    assert list_uploads() == []
    with pytest.raises(DataError, match="meta.json in an unknown format"):
        get_dataset(info.id)
