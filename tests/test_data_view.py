"""The Data page's pure helpers in components/data/data_view.py: the picker's label, the target text, the
cache version of an upload and the upload kinds with their defaults."""

from __future__ import annotations

import inspect

from components.data import data_view
from studio.data import get_info, upload_csv
from studio.data.uploads import upload_image_zip, upload_text, upload_text_csv


def test_choice_label_says_where_a_dataset_comes_from(_workspace):
    assert data_view.choice_label(get_info("digits"), _workspace) == "Digits 8x8 (digits) · classification · built in"
    assert data_view.choice_label(get_info("mnist"), _workspace).endswith("· download on first use")


def test_target_text_per_task():
    assert data_view.target_text(get_info("digits")) == "10 classes"
    assert data_view.target_text(get_info("shapes", options={"target": "input"})) == "(1, 32, 32) float"
    assert data_view.target_text(get_info("reverse")) == str(tuple(get_info("reverse").output_shape))


def test_cache_version_changes_when_an_upload_is_replaced(_workspace):
    rows = "\n".join(f"{i % 7},{i * 0.5},{'ab'[i % 2]}" for i in range(40))
    info = upload_csv(f"a,b,label\n{rows}\n".encode(), "small.csv", target="label")
    folder = _workspace / "datasets" / "uploads" / info.id
    assert data_view.cache_version(info, _workspace) == folder.stat().st_mtime > 0
    assert data_view.cache_version(get_info("digits"), _workspace) == 0.0
    folder.rename(folder.with_name("gone"))
    assert data_view.cache_version(info, _workspace) == 0.0


def test_upload_kinds_start_from_the_upload_functions_defaults():
    kinds = data_view.UPLOAD_KINDS
    assert [k.upload for k in kinds.values()] == [upload_csv, upload_image_zip, upload_text, upload_text_csv]
    assert kinds["Image folders (zip)"].default("image_size") == 32
    assert kinds["Text (.txt)"].default("seq_len") == 64
    assert kinds["Text + label CSV"].default("max_vocab") == \
        inspect.signature(upload_text_csv).parameters["max_vocab"].default
    assert [k.needs_columns for k in kinds.values()] == [True, False, False, True]
