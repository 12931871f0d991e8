"""Dataset ids that can be checked without importing the data package (which imports torch).

The CLI launches runs without torch, yet must refuse an unknown `--data` before it creates a run.
`REGISTERED_IDS` is the registry's list in its order; tests/test_cli.py checks it against
`studio.data.registry.registered_ids()`, so a new built-in cannot be forgotten here.
"""

from __future__ import annotations

import re
from pathlib import Path

from studio.errors import DataError

REGISTERED_IDS = ("digits", "iris", "wine", "breast_cancer", "shapes", "reverse", "sort", "copy", "sine", "adding",
                  "chars", "majority", "mnist", "fashion_mnist", "cifar10")
UPLOAD_ID_RE = re.compile(r"upload_[a-z0-9_]{1,64}\Z")


def unknown_message(dataset_id: object) -> str:
    return (f"unknown dataset {dataset_id!r}; use one of {', '.join(REGISTERED_IDS)} "
            "or the id of an upload (upload_...)")


def check_dataset_id(dataset_id: object, workspace: Path) -> None:
    """DataError unless `dataset_id` is a registered id or an upload present in `workspace`.

        >>> check_dataset_id("digits", Path("."))
        >>> check_dataset_id("nope", Path("."))
        Traceback (most recent call last):
        ...
        studio.errors.DataError: unknown dataset 'nope'; use one of digits, ... or the id of an upload (upload_...)
    """
    if dataset_id in REGISTERED_IDS:
        return
    if isinstance(dataset_id, str) and UPLOAD_ID_RE.match(dataset_id):
        if (workspace / "datasets" / "uploads" / dataset_id / "meta.json").is_file():
            return
        raise DataError(f"no uploaded dataset {dataset_id!r} in {workspace / 'datasets' / 'uploads'}; "
                        "list the datasets on the Data page or upload it again")
    raise DataError(unknown_message(dataset_id))


# Each registered id's task without options (get_info(id).task), so the CLI picks a task's default
# training settings without importing torch; tests/test_schema.py checks it against the registry.
REGISTERED_TASKS = {"digits": "classification", "iris": "classification", "wine": "classification",
                    "breast_cancer": "classification", "shapes": "classification", "reverse": "sequence",
                    "sort": "sequence", "copy": "sequence", "sine": "regression", "adding": "regression",
                    "chars": "language_model", "majority": "classification", "mnist": "classification",
                    "fashion_mnist": "classification", "cifar10": "classification"}


def task_of(dataset_id: str, workspace: Path) -> str | None:
    """The task of a registered dataset (no options) or of an upload, read without torch; None if unknown."""
    if dataset_id in REGISTERED_TASKS:
        return REGISTERED_TASKS[dataset_id]
    if isinstance(dataset_id, str) and UPLOAD_ID_RE.match(dataset_id):
        import json

        try:
            meta = json.loads((workspace / "datasets" / "uploads" / dataset_id / "meta.json").read_text("utf-8"))
            return meta["info"]["task"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None
