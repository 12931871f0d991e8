"""The size budget for datasets built from uploads: how big the prepared arrays may get.

Upload caps bound the bytes a user sends; what is built from them can be far larger (a 0.4 MB CSV of
texts padded to 4,096 token ids, a zip of 1x1 PNGs resized to 256x256). Every upload computes the
size of what it will build *before* allocating it and asks `check_prepared_size`, which refuses past
the budget with the numbers and the knob. The budget is `STUDIO_MAX_DATASET_MB` (megabytes,
default 1024), well under the memory of the machines the studio runs on.
"""

from __future__ import annotations

import os

from studio.errors import DataError

BUDGET_ENV = "STUDIO_MAX_DATASET_MB"
DEFAULT_BUDGET_MB = 1024


def dataset_budget_bytes() -> int:
    """The configured budget in bytes; a malformed setting is an error naming the variable."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_BUDGET_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        mb = float("nan")
    if not mb > 0 or mb == float("inf"):
        raise DataError(f"{BUDGET_ENV}={raw!r} is not a positive number of megabytes; set it to e.g. "
                        f"{DEFAULT_BUDGET_MB} or unset it")
    return int(mb * 2**20)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB', 3.35e9 -> '3.1 GB' (binary units, as memory is counted)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} PB"  # not reached


def check_prepared_size(nbytes: int, what: str, filename: str, fix: str) -> None:
    """Refuse a dataset whose prepared arrays would take more than the budget.

    `what` spells out the product (e.g. "52,000 texts x 4,096 ids x 8 bytes"); `fix` says what to
    change in the upload (e.g. "lower max_len").

        >>> check_prepared_size(10 * 2**30, "10 x 1 GB", "big.csv", "upload fewer rows")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        studio.errors.DataError: big.csv: the prepared dataset would take 10.0 GB (10 x 1 GB), ...
    """
    budget = dataset_budget_bytes()
    if nbytes > budget:
        raise DataError(f"{filename}: the prepared dataset would take {human_bytes(nbytes)} ({what}), more than "
                        f"the dataset budget of {human_bytes(budget)}; {fix}, or raise the budget with the "
                        f"environment variable {BUDGET_ENV} (megabytes, now {budget // 2**20})")
