"""Amplification: a small upload must not become a huge array. The prepared size is computed before
anything is allocated and refused past the dataset budget (STUDIO_MAX_DATASET_MB) with the numbers and
the knob; CSVs are parsed once per file and bounded in rows and columns; large arrays are written in
chunks and equal what one in-memory build gives.

The memory-heavy case runs in a child process under an address-space limit (resource.setrlimit), so a
regression shows as a MemoryError there instead of taking this machine's memory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from studio.data import (
    get_dataset,
    list_uploads,
    readers,
    upload_csv,
    upload_image_zip,
    upload_text,
    upload_text_csv,
    uploads,
)
from studio.data.builtin import char_windows
from studio.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def uploads_root(workspace: Path) -> Path:
    return workspace / "datasets" / "uploads"


def nothing_left(workspace: Path) -> bool:
    root = uploads_root(workspace)
    return not root.exists() or not any(p.name.startswith(".tmp-") for p in root.iterdir())


def texts_csv(rows: int) -> bytes:
    return ("text,label\n" + "".join(f"t{i % 7},{'ab'[i % 2]}\n" for i in range(rows))).encode()


def tiny_png_zip(n: int) -> bytes:
    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (1, 1), 7).save(png, format="PNG")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            zf.writestr(f"{'ab'[i % 2]}/{i}.png", png.getvalue())
    return buf.getvalue()


def test_text_csv_padded_past_the_budget_is_refused_before_allocating_in_a_memory_limited_child(tmp_path):
    # 40,000 short texts padded to 4,096 ids would be 1.25 GB of int64: past the default 1 GB budget. The
    # child may use only ~700 MB more than it holds after its imports: an np.zeros of that array would fail.
    script = textwrap.dedent("""
        import os, resource, sys
        from studio.data import upload_text_csv
        from studio.errors import DataError
        data = ("text,label\\n" + "".join(f"t{i % 7},{'ab'[i % 2]}\\n" for i in range(40_000))).encode()
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 700 * 2**20, vm + 700 * 2**20))
        try:
            upload_text_csv(data, "long.csv", text_column="text", label_column="label", max_len=4096)
        except DataError as e:
            print("REFUSED", e)
            sys.exit(0)
        except MemoryError:
            print("MEMORYERROR")
            sys.exit(3)
        print("BUILT")
        sys.exit(4)
    """)
    env = dict(os.environ, STUDIO_WORKSPACE=str(tmp_path / "ws"), PYTHONPATH=str(ROOT))
    env.pop("STUDIO_MAX_DATASET_MB", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "40,000 texts x max_len 4,096 ids x 8 bytes" in done.stdout
    assert "STUDIO_MAX_DATASET_MB" in done.stdout and "lower max_len" in done.stdout
    assert nothing_left(tmp_path / "ws")


def test_tiny_pngs_resized_past_the_budget_are_refused_naming_the_numbers(_workspace, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_DATASET_MB", "1")
    with pytest.raises(DataError, match=r"20 images x 3 x 256 x 256 bytes.*budget of 1\.0 MB.*smaller image size"
                                        r".*STUDIO_MAX_DATASET_MB \(megabytes, now 1\)"):
        upload_image_zip(tiny_png_zip(20), "dots.zip", image_size=256, color="rgb")
    assert list_uploads() == [] and nothing_left(_workspace)
    upload_image_zip(tiny_png_zip(20), "dots.zip", image_size=64)  # 80 KB: within the budget


def test_text_and_table_uploads_check_the_budget_too(_workspace, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_DATASET_MB", "0.01")
    with pytest.raises(DataError, match=r"windows x 4 ids x 8 bytes.*upload less text"):
        upload_text(b"abcdefgh" * 2000, "t.txt", seq_len=4)
    table = ("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(2000))).encode()
    with pytest.raises(DataError, match=r"2,000 rows x 2 features x 4 bytes.*drop columns"):
        upload_csv(table, "t.csv", target="y")
    monkeypatch.setenv("STUDIO_MAX_DATASET_MB", "lots")
    with pytest.raises(DataError, match=r"STUDIO_MAX_DATASET_MB='lots' is not a positive number"):
        upload_text(b"abcdefgh" * 200, "t.txt", seq_len=4)
    assert list_uploads() == [] and nothing_left(_workspace)


def test_chunked_building_gives_the_same_arrays_as_one_build(_workspace, monkeypatch):
    monkeypatch.setattr(uploads, "CHUNK_VALUES", 24)  # many chunks, a partial one at the end
    text = "".join(chr(97 + (i * 7) % 13) for i in range(1003))
    info = upload_text(text.encode(), "t.txt", seq_len=8)
    folder = uploads_root(_workspace) / info.id
    want_x, want_y = char_windows(text, sorted(set(text)), 8)  # the built-in's windows as the oracle
    np.testing.assert_array_equal(np.load(folder / "x.npy"), want_x.numpy())
    np.testing.assert_array_equal(np.load(folder / "y.npy"), want_y.numpy())

    rows = [(f"{'xyz' * (i % 5)}{i}", "ab"[i % 2]) for i in range(37)]
    data = ("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows)).encode()
    info = upload_text_csv(data, "tl.csv", text_column="text", label_column="label", max_len=6)
    x = np.load(uploads_root(_workspace) / info.id / "x.npy")
    lookup = {ch: i for i, ch in enumerate(info.vocab)}
    want = np.zeros((len(rows), 6), np.int64)
    for i, (t, _) in enumerate(rows):
        ids = [lookup.get(ch, 1) for ch in t[:6]]
        want[i, :len(ids)] = ids
    np.testing.assert_array_equal(x, want)

    zipped = upload_image_zip(tiny_png_zip(30), "z.zip", image_size=8)
    monkeypatch.setattr(readers.ImageZip.chunks, "__defaults__", (5,))  # chunks of 5 images
    again = upload_image_zip(tiny_png_zip(30), "z.zip", image_size=8)
    a, b = (np.load(uploads_root(_workspace) / i.id / "x.npy") for i in (zipped, again))
    assert a.shape == (30, 1, 8, 8) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert len(get_dataset(again.id).train) == again.sizes["train"]


def test_csv_columns_and_rows_are_bounded_with_clear_messages(_workspace, monkeypatch):
    header = ",".join(f"c{i}" for i in range(readers.MAX_CSV_COLUMNS + 1))
    with pytest.raises(DataError, match=r"the header has 10,001 columns; the limit is 10,000"):
        readers.read_csv(f"{header}\n".encode(), "wide.csv")
    monkeypatch.setattr(readers, "MAX_CSV_ROWS", 50)
    with pytest.raises(DataError, match=r"more than 50 data rows of 2 columns; the limits are 50 rows"):
        readers.read_csv(texts_csv(51), "long.csv")
    monkeypatch.setattr(readers, "MAX_CSV_ROWS", 10**6)
    monkeypatch.setattr(readers, "MAX_CSV_CELLS", 100)
    with pytest.raises(DataError, match=r"more than 50 data rows of 2 columns.*100 cells"):
        readers.read_csv(texts_csv(60), "long.csv")


def test_a_duplicate_among_many_columns_is_found_in_one_pass():
    names = [f"c{i}" for i in range(9_000)]
    names[8_999] = "c17"
    with pytest.raises(DataError, match=r"the header repeats column 'c17'"):
        readers.read_csv((",".join(names) + "\n" + ",".join("1" * 9_000) + "\n").encode(), "dup.csv")


def test_a_csv_is_parsed_once_for_its_column_list_and_its_upload(_workspace, monkeypatch):
    calls = []
    real = readers._parse_csv
    monkeypatch.setattr(readers, "_parse_csv", lambda *a: calls.append(a[1]) or real(*a))
    monkeypatch.setattr(readers, "_CSV_CACHE", {})
    data = texts_csv(40)
    from studio.data import csv_columns

    for _ in range(3):  # the Data page asks on every rerun
        assert [c["name"] for c in csv_columns(data, "r.csv")] == ["text", "label"]
    upload_text_csv(data, "r.csv", text_column="text", label_column="label")
    assert calls == ["r.csv"]
    readers.read_csv(texts_csv(41), "r.csv")  # other bytes: parsed again
    assert calls == ["r.csv", "r.csv"]
    assert json.loads((uploads_root(_workspace) / "upload_r_csv" / "meta.json").read_text())["kind"] == "text_csv"
