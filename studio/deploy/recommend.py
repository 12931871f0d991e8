"""Which variant to ship: the smallest-and-fastest one within an accuracy budget, and a verdict per row.

    >>> rec = recommend(report, budget=1.0)  # doctest: +SKIP
    >>> rec.method, rec.verdict  # doctest: +SKIP
    ('onnx-int8-static', 'Ship onnx-int8-static (onnxruntime): ...')

The rule, in order:
1. candidates: the measured variants whose metric is within `budget` of fp32 (points of accuracy for
   accuracy metrics; percent of the fp32 value for an error metric such as val_mae);
2. speed: the geometric mean of the latency ratios (against fp32 in PyTorch eager) at batch 1 and at
   batch 64; the fastest candidate wins, and among candidates within SPEED_TIE (5 %) of it the one with
   the smallest file;
3. int8 that does not pay: when onnx-int8-static was measured and is not the pick, the verdict says why
   (over the budget, or not faster than onnx-fp32 at batch 1 / 64: layers too small for int8 kernels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from studio.deploy.measure import HIGHER_IS_BETTER
from studio.deploy.variants import EAGER_INT8

DEFAULT_BUDGET = 1.0  # points of accuracy (or percent of an error metric) a variant may lose
SPEED_TIE = 1.05


@dataclass
class Recommendation:
    method: str | None           # the variant to ship (None: nothing measured)
    verdict: str                 # one paragraph, the page's first line and the CLI's
    budget: float
    labels: dict[str, str] = field(default_factory=dict)  # method -> the row's verdict column

    def to_dict(self) -> dict:
        return {"method": self.method, "verdict": self.verdict, "budget": self.budget, "labels": dict(self.labels)}


def loss_in_budget_units(row, fp32) -> float | None:
    """How much worse than fp32 `row` is, in the budget's units (positive = worse)."""
    if row.metric is None or fp32.metric is None:
        return None
    if "accuracy" in row.metric_name:
        return (fp32.metric - row.metric) * 100
    worse = (row.metric - fp32.metric) if not HIGHER_IS_BETTER.get(row.metric_name, True) else fp32.metric - row.metric
    return 100 * worse / abs(fp32.metric) if fp32.metric else worse


def speed(row, fp32) -> float | None:
    """Geometric mean of the latency ratios to fp32 eager at batch 1 and the batched size (lower is faster)."""
    if None in (row.latency_ms_batch1, row.latency_ms_batch, fp32.latency_ms_batch1, fp32.latency_ms_batch):
        return None
    return math.sqrt(row.latency_ms_batch1 / fp32.latency_ms_batch1 * row.latency_ms_batch / fp32.latency_ms_batch)


def _unit(row) -> str:
    return "points" if "accuracy" in row.metric_name else "%"


def recommend(report, budget: float = DEFAULT_BUDGET) -> Recommendation:
    fp32 = report.row("fp32")
    rows = [r for r in report.rows if r.ok]
    labels, candidates = {}, []
    for r in report.rows:
        if not r.ok:
            labels[r.method] = "not available"
            continue
        lost, s = loss_in_budget_units(r, fp32), speed(r, fp32)
        if s is None or lost is None:
            labels[r.method] = "not measured"
        elif lost > budget + 1e-9:
            labels[r.method] = f"over budget: -{lost:.2f} {_unit(r)}"
        else:
            candidates.append(r)
            labels[r.method] = "reference (as trained)" if r.method == "fp32" else "within budget"
        if r.method in EAGER_INT8 and s is not None and s > 1:
            labels[r.method] = f"{s:.1f}x slower (eager int8): not for speed"
        elif r.method == "prune" and labels[r.method] == "within budget":
            labels[r.method] = "stored dense: no gain"
    if not candidates:
        return Recommendation(None, f"No variant is within {budget:g} {_unit(fp32)} of fp32; ship fp32 or widen "
                                    "the budget.", budget, labels)
    fastest = min(speed(r, fp32) for r in candidates)
    near = [r for r in candidates if speed(r, fp32) <= fastest * SPEED_TIE]
    pick = min(near, key=lambda r: (r.bytes if r.bytes is not None else math.inf, speed(r, fp32)))
    labels[pick.method] = "recommended"
    by = {r.method: r for r in rows}
    verdict = _verdict(pick, fp32, by, budget)
    return Recommendation(pick.method, verdict, budget, labels)


def _x(a, b) -> str:
    """'3.1x faster' / '1.2x slower' for latencies a (variant) and b (reference)."""
    return f"{b / a:.2f}x faster" if a <= b else f"{a / b:.2f}x slower"


def _size(row, ref) -> str:
    return f"{row.bytes / ref.bytes:.2f}x" if row.bytes and ref.bytes else "(size not measured)"


def _verdict(pick, fp32, by: dict, budget: float) -> str:
    n = "batch"
    lost = loss_in_budget_units(pick, fp32)
    if pick is fp32:
        return (f"Keep fp32 ({fp32.runtime}): no variant measured here is faster within the budget of {budget:g} "
                f"{_unit(fp32)}; measure onnx-fp32 and onnx-int8-static too.")
    head = (f"Ship {pick.method} ({pick.runtime}): {_size(pick, fp32)} the fp32 file, "
            f"{_x(pick.latency_ms_batch1, fp32.latency_ms_batch1)} at {n} 1 and "
            f"{_x(pick.latency_ms_batch, fp32.latency_ms_batch)} at {n} 64 than fp32 in PyTorch eager, "
            f"{-lost + 0.0:+.2f} {_unit(pick)} (budget {budget:g}).")
    ort32, ort8 = by.get("onnx-fp32"), by.get("onnx-int8-static")
    if pick.method == "onnx-int8-static" and ort32 is not None:
        return head + (f" Against fp32 in onnxruntime: {_size(pick, ort32)} the file, "
                       f"{_x(pick.latency_ms_batch1, ort32.latency_ms_batch1)} at batch 1, "
                       f"{_x(pick.latency_ms_batch, ort32.latency_ms_batch)} at batch 64.")
    if ort8 is not None and pick.method != "onnx-int8-static" and ort32 is not None:
        why = []
        lost8 = loss_in_budget_units(ort8, fp32)
        if lost8 is not None and lost8 > budget:
            why.append(f"it loses {lost8:.2f} {_unit(ort8)}, over the budget of {budget:g}")
        for label, a, b in (("1", ort8.latency_ms_batch1, ort32.latency_ms_batch1),
                            ("64", ort8.latency_ms_batch, ort32.latency_ms_batch)):
            if a is not None and b is not None and a >= b:
                what = f"{_x(a, b)} than" if a > b else "no faster than"
                why.append(f"at batch {label} it is {what} fp32 onnxruntime")
        if why:
            head = (f"int8 does not pay for this model: {'; '.join(why)} (int8 kernels gain little on layers this "
                    f"small). " + head)
    return head
