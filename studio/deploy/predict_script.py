"""The `predict.py` that goes beside a downloaded .onnx: how to run it with onnxruntime and numpy only
(input name and shape, the preprocessing the model was trained with, the class labels)."""

from __future__ import annotations

PREDICT_TEMPLATE = '''"""Run {onnx_name} (run {run_id}, {method}) with onnxruntime: no torch, no studio needed.

    pip install onnxruntime numpy
    python predict.py                 # one example batch of zeros: shows the input and output shapes
    python predict.py inputs.npy      # a {dtype} array shaped (N, {shape_text}): prints one prediction per row

Input: 'x', {dtype}, shaped (N, {shape_text}) (batch first, any N >= 1).
Preprocessing: the data as the studio trained on it: {data_description}
Output: {output_text}
Measured on the run's validation split: {metric_name} {metric}.
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

MODEL = Path(__file__).with_name({onnx_name!r})
INPUT_SHAPE = {shape!r}  # per sample
DTYPE = np.{dtype}
LABELS = {labels!r}


def load(path=MODEL, threads=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # the page measured latency on one thread
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict(session, x):
    """Model outputs for a batch x of shape (N, *INPUT_SHAPE)."""
    x = np.ascontiguousarray(x, dtype=DTYPE)
    if x.shape[1:] != tuple(INPUT_SHAPE):
        raise ValueError(f"input of shape {{x.shape}}; expected (N, {{', '.join(map(str, INPUT_SHAPE))}})")
    return session.run(None, {{"x": x}})[0]


def main(argv):
    session = load()
    x = np.load(argv[1]) if len(argv) > 1 else np.zeros((1, *INPUT_SHAPE), dtype=DTYPE)
    y = predict(session, x)
    print(f"input {{x.shape}} -> output {{y.shape}}")
    if LABELS:
        for i, c in enumerate(y.argmax(axis=-1)):
            print(i, LABELS[int(c)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''


def predict_script(report, row, onnx_name: str) -> str:
    """predict.py's text for the onnxruntime variant `row` of `report`, loading `onnx_name` beside it."""
    shape = list(report.input_shape)
    if report.class_names:
        output = (f"one score per class ({len(report.class_names)} classes, highest wins); labels in LABELS "
                  "(index = class)")
    else:
        output = "the model's output tensor (no class labels: not a classification run)"
    return PREDICT_TEMPLATE.format(onnx_name=onnx_name, run_id=report.run_id, method=row.method,
                                   shape_text=", ".join(map(str, shape)), shape=shape, dtype=report.input_dtype,
                                   data_description=report.data_description.replace('"""', "'''"),
                                   output_text=output, metric_name=report.metric_name,
                                   metric="-" if row.metric is None else f"{row.metric:.4f}",
                                   labels=list(report.class_names) if report.class_names else None)
