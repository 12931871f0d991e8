"""The digits images and labels read straight from the CSV scikit-learn ships, without importing it.

`sklearn.datasets.load_digits` imports scikit-learn and SciPy (1-2 s of CPU) to read a 60 KB file;
a worker training on `digits` paid that before its first step. This finds the installed package's
file without executing the package (`importlib.util.find_spec` of a top-level package only locates
it) and parses it as `load_digits` does; tests/test_launch.py holds the arrays equal to sklearn's.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64 in 0..16, target (1797,) int), as `load_digits().images/.target`."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("scikit-learn is not installed; the digits dataset ships with it "
                                  "(pip install scikit-learn)")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a scikit-learn that keeps the file elsewhere: its own loader knows where
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)
