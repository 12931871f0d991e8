"""Deploy variants that run in onnxruntime: the run's fp32 model as ONNX, and its int8 static QDQ form.

    onnx-fp32         the studio's ONNX export (torch.onnx, dynamo exporter, dynamic batch), unchanged.
    onnx-int8-static  onnxruntime's static quantization of that file: QDQ format, per-channel signed int8
                      weights (QInt8: unsigned weights are slower than fp32 on this CPU), uint8 activations
                      calibrated (min/max) on batches of the run's *training* split only; the file goes
                      through onnxruntime's `quant_pre_process` (shape inference, graph optimisation) first
                      when that succeeds.

Both are measured in an `onnxruntime.InferenceSession` on one thread (`OrtModel`), the runtime they ship
in, so their latency is what a deployment gets, unlike the eager int8 variants of variants.py.

Known trap: onnx 1.23 stamps models it rewrites with its own newest IR version, which onnxruntime 1.31
refuses to load; the quantized file keeps the IR version of the exported fp32 file (`_keep_ir_version`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from studio.errors import ExportError

INPUT_NAME = "x"
LOADS_WITH = "onnxruntime + numpy (no torch, no studio): onnxruntime.InferenceSession(path).run(None, {'x': x})"


def session(data: bytes, threads: int = 1):
    """An onnxruntime CPU session of the ONNX `data`, on `threads` threads, sequential, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the CPU provider's notes on unused initializers are noise
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        raise ExportError(f"onnxruntime {ort.__version__} could not load this model: {_first_line(e)}") from None


class OrtModel:
    """An onnxruntime session called like a module: a torch batch in, a torch batch out (what the training
    loop's evaluation and measure.latency call). `runner(x)` is the timed call itself, numpy in and out."""

    def __init__(self, data: bytes, threads: int = 1):
        self.session = session(data, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: _numpy(x)})[0])

    def runner(self, x: torch.Tensor):
        """A call with its input converted once, so the timing holds onnxruntime's work only."""
        feed, run = {self.input_name: _numpy(x)}, self.session.run
        return lambda: run(None, feed)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy())


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def fp32_onnx(model: torch.nn.Module) -> bytes:
    """The model's ONNX file (studio.export.to_onnx: input 'x', dynamic batch); ExportError when the exporter
    cannot take it."""
    from studio.export import to_onnx

    return to_onnx(model)


def tensor_bytes(data: bytes) -> int:
    """Bytes of tensor data (initializers and Constant nodes' tensors) in an ONNX file."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(data)
    total = sum(numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            total += sum(numpy_helper.to_array(a.t).nbytes for a in node.attribute if a.name == "value")
    return total


def weight_counts(data: bytes) -> tuple[int, int]:
    """(parameters, non-zero parameters) of an ONNX file: its float and int8/int32 weight tensors (an int8 weight
    that rounds to 0 is a zero); quantization scales, zero points and int64 shape constants are not parameters."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(data)
    params = nonzero = 0
    for t in proto.graph.initializer:
        name = t.name.lower()
        if "scale" in name or "zero_point" in name:
            continue
        array = numpy_helper.to_array(t)
        if array.ndim == 0 or array.dtype == np.int64:
            continue
        params += array.size
        nonzero += int(np.count_nonzero(array))
    return params, nonzero


class _Batches:
    """onnxruntime's CalibrationDataReader over a list of input batches."""

    def __init__(self, batches: list[np.ndarray], input_name: str):
        self._it = iter([{input_name: b} for b in batches])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # part of the reader protocol; calibration reads the batches once
        pass


def quantize_int8_static(fp32: bytes, calibration, *, pre_process: bool = True) -> tuple[bytes, list[str]]:
    """(ONNX bytes, notes): `fp32` quantized by onnxruntime's static QDQ quantization, calibrated on the
    batches in `calibration` (torch tensors from the training split).

    ExportError when nothing would be int8: no calibration batch, or no weighted op onnxruntime quantizes
    (the message names the ops that stay fp32). Ops it leaves fp32 beside quantized ones are named in a note.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    batches = [_numpy(x).astype(np.float32, copy=False) for x in calibration]
    if not batches:
        raise ExportError("onnx-int8-static needs calibration batches; the training split gave none")
    source = onnx.load_from_string(fp32)
    if source.graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ExportError("onnx-int8-static calibrates float inputs; this model takes integer token ids (an "
                          "Embedding first), which static quantization cannot calibrate. Use onnx-fp32")
    notes = [f"calibrated on {len(batches)} training batch{'es' if len(batches) != 1 else ''} "
             f"({sum(b.shape[0] for b in batches)} samples, min/max)"]
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        src, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        start = src
        if pre_process:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                start = pre
            except Exception as e:  # its shape inference raises many types; quantize without it
                notes.append(f"quant_pre_process failed ({_first_line(e)}); quantized the exported file as is")
        try:
            quantize_static(str(start), str(out), _Batches(batches, source.graph.input[0].name),
                            quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax)
        except Exception as e:  # onnxruntime.quantization raises many types
            raise ExportError(f"onnxruntime's static quantization failed on this model: {_first_line(e)}; "
                              "the onnx-fp32 variant still runs in onnxruntime") from None
        quantized = onnx.load(str(out))
    _keep_ir_version(quantized, source)
    done, left = _quantized_ops(quantized)
    if not done:
        stay = ", ".join(f"{op} x{n}" for op, n in sorted(left.items())) or "none"
        raise ExportError(f"onnxruntime's static quantization turns no op of this model int8: its weighted ops "
                          f"({stay}) have no int8 QDQ kernel in onnxruntime (it quantizes Conv, Gemm and "
                          "MatMul). The onnx-fp32 variant runs this model in onnxruntime unchanged")
    if left:
        notes.append("these ops keep fp32 weights (onnxruntime's static quantization left them): "
                     + ", ".join(f"{op} x{n}" for op, n in sorted(left.items())))
    return quantized.SerializeToString(), notes


def _keep_ir_version(quantized, source) -> None:
    """The quantized file declares the IR version the exporter wrote (what this onnxruntime reads), never the
    newer one onnx may stamp on a model it rebuilds (onnx 1.23 writes IR 12+; onnxruntime 1.31 refuses it)."""
    if quantized.ir_version > source.ir_version:
        quantized.ir_version = source.ir_version


def _quantized_ops(proto) -> tuple[Counter, Counter]:
    """(quantized, left fp32) counts of the weighted ops by type. A weighted op takes a weight as its second
    input: a float initializer of 2 or more dims (left fp32), or the output of a DequantizeLinear
    (quantized). Found from the file itself, so no list of op names can go stale."""
    from onnx import TensorProto

    dequantized = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    weights = {t.name for t in proto.graph.initializer
               if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE) and len(t.dims) >= 2}
    done, left = Counter(), Counter()
    for n in proto.graph.node:
        second = n.input[1] if len(n.input) > 1 else ""
        if n.op_type == "DequantizeLinear" or not second:
            continue
        if second in dequantized:
            done[n.op_type] += 1
        elif second in weights:
            left[n.op_type] += 1
    return done, left


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs advice at WARNING through the root logger (pre-processing hints);
    keep it out of the page's and CLI's output, let errors through."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
