"""A TensorBoard event file written synchronously, and the summaries the studio puts in it.

tensorboardX's `SummaryWriter` queues events for a background thread and writes them when it gets to
them; a worker killed a moment later loses events whose rows the run store already holds. `EventFile`
uses tensorboardX's own record writer and summary builders without the queue: every call is in the
file (flushed to the OS) when it returns, so what TensorBoard shows never runs behind the store by
more than the call in progress.

Files are named `events.out.tfevents.<seconds>.<host>.<nanoseconds>.studio`: TensorBoard reads a
folder's files in name order, and the nanoseconds keep two files opened in the same second (a run
killed and resumed at once) in the order they were written, which `purge_from` relies on.

    >>> import tempfile
    >>> f = EventFile(tempfile.mkdtemp())                                # doctest: +SKIP
    >>> f.scalars([(1, 0, "train", "train_loss", 0.5, 1.7e9)])          # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from studio.tracking.common import require

GRAPH_TAG = "graph/summary"

CONFIG_TAG = "run/config"


class EventFile:
    """One new event file in `logdir` (created when missing). Not thread-safe by itself beyond what
    tensorboardX's record writer locks: the worker calls it from the training and the commit thread,
    each call writing whole events."""

    def __init__(self, logdir: str | Path):
        require("tensorboardX")
        from tensorboardX.event_file_writer import EventsWriter

        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventsWriter(str(self.logdir / "events"), f".{time.time_ns():020d}.studio")
        self._writer.flush()
        self.path = Path(self._writer._file_name)
        self.closed = False

    # ---- writing ---------------------------------------------------------------------------------
    def _write(self, events: list) -> None:
        for event in events:
            self._writer.write_event(event)
        self._writer.flush()

    @staticmethod
    def _event(step: int, wall_time: float | None = None, **fields):
        from tensorboardX.proto.event_pb2 import Event

        return Event(step=int(step), wall_time=time.time() if wall_time is None else float(wall_time), **fields)

    def purge_from(self, step: int) -> None:
        """Hide every event at `step` or later written before this file (TensorBoard's restart marker,
        what `SummaryWriter(purge_step=...)` writes): a resumed run's recomputed steps replace them."""
        from tensorboardX.proto.event_pb2 import SessionLog

        self._write([self._event(step, session_log=SessionLog(status=SessionLog.START))])

    def scalars(self, rows) -> None:
        """Store rows (step, epoch, split, key, value, wall_time) as scalars named by their key, at their
        step and wall time; the rows of one step and time share an event. None (a NaN in the store) is NaN."""
        from tensorboardX.proto.summary_pb2 import Summary

        events, current, values = [], None, []
        for step, _epoch, _split, key, value, wall in rows:
            if (step, wall) != current and values:
                events.append(self._event(current[0], current[1], summary=Summary(value=values)))
                values = []
            current = (step, wall)
            values.append(Summary.Value(tag=key, simple_value=math.nan if value is None else float(value)))
        if values:
            events.append(self._event(current[0], current[1], summary=Summary(value=values)))
        self._write(events)

    def histograms(self, named: dict[str, tuple], step: int) -> None:
        """Histograms already binned, one per tag: (counts (bins,), [lo, hi]) with equal-width bins over
        [lo, hi], optionally followed by the values' sum and sum of squares (TensorBoard's format carries
        them; without them they are taken at the bin centres: TensorBoard draws only the buckets).
        A probe snapshot's whist/wrange pairs are so (`snapshot_histograms`)."""
        from tensorboardX.summary import histogram_raw

        events = []
        for tag, (counts, bounds, *sums) in named.items():
            counts = np.asarray(counts, dtype=np.float64)
            if counts.sum() <= 0:
                continue
            lo, hi = float(bounds[0]), float(bounds[1])
            edges = np.linspace(lo, hi, len(counts) + 1)
            centres = (edges[:-1] + edges[1:]) / 2
            total, total_sq = sums if sums else ((counts * centres).sum(), (counts * centres ** 2).sum())
            events.append(self._event(step, summary=histogram_raw(
                tag, lo, hi, float(counts.sum()), float(total), float(total_sq), edges[1:].tolist(),
                counts.tolist())))
        self._write(events)

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        from tensorboardX.summary import text

        self._write([self._event(step, summary=text(tag, markdown))])

    def hparams(self, hparams: dict, metrics: list[str], step: int, *, status: str = "completed") -> None:
        """The HParams tab's record of this run: its hyperparameters, the metric tags to show beside
        them (their values are this run's own scalars), and how the run ended."""
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboardX.summary import hparams as hparams_summaries

        experiment, start, _ = hparams_summaries(hparams, {m: 0.0 for m in metrics})
        code = {"completed": "STATUS_SUCCESS", "failed": "STATUS_FAILURE", "diverged": "STATUS_FAILURE"}
        content = HParamsPluginData(session_end_info=SessionEndInfo(status=Status.Value(
            code.get(status, "STATUS_UNKNOWN"))), version=0)
        end = Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=content.SerializeToString())))])
        self._write([self._event(step, summary=s) for s in (experiment, start, end)])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()


# ---- what the studio writes ----------------------------------------------------------------------------

def snapshot_histograms(path: str | Path) -> dict[str, tuple]:
    """{weights/<param> | gradients/<param>: (counts, [lo, hi])} of one probe snapshot (an .npz that
    studio.training.probes wrote: whist/wrange and ghist/grange per parameter, 32 equal-width bins), the
    histograms TensorBoard gets live and in exports alike. {} when the file cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k.split("/", 1)[0] in ("whist", "wrange", "ghist", "grange")}
    except (OSError, ValueError, KeyError, EOFError):
        return {}
    named = {}
    for key, counts in arrays.items():
        kind, _, param = key.partition("/")
        if kind in ("whist", "ghist"):
            bounds = arrays.get(("wrange/" if kind == "whist" else "grange/") + param)
            if bounds is not None:
                named[("weights/" if kind == "whist" else "gradients/") + param] = (counts, bounds)
    return named


def flat_hparams(config: dict, *, dataset_id: str, graph: dict, totals: dict | None = None) -> dict:
    """TrainConfig's fields as HParams values (numbers, text, booleans; lists and dicts as JSON text;
    unset fields left out), with the dataset, the graph's name and its totals."""
    out: dict = {}
    for key, value in config.items():
        if value is None or key == "version":
            continue
        out[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)
    out["dataset"] = dataset_id
    out["graph"] = str(graph.get("name", ""))
    for key, value in (totals or {}).items():
        out[f"graph_{key}"] = value
    return out


def graph_totals(graph: dict) -> dict:
    """{"total_params", "total_flops"} of a graph document; {} when it no longer analyses."""
    from studio.analysis import analyze
    from studio.errors import GraphError
    from studio.graph import parse_graph

    try:
        a = analyze(parse_graph(graph))
    except GraphError:
        return {}
    return {"total_params": int(a.total_params), "total_flops": int(a.total_flops)}


def graph_markdown(graph: dict) -> str:
    """The graph's summary as a Markdown table (what `python -m studio summary` prints), for TensorBoard's Text tab."""
    from studio.analysis import analyze
    from studio.errors import GraphError
    from studio.graph import parse_graph

    try:
        a = analyze(parse_graph(graph))
    except GraphError as e:
        return f"**{graph.get('name', 'graph')}**: the graph does not analyse ({e})"
    name = graph.get("name") or "graph"
    lines = [f"**{name}**: {a.total_params:,} parameters, {a.total_flops:,} FLOPs per sample", "",
             "| id | type | output shape | params | FLOPs |", "|---|---|---|---:|---:|"]
    for node_id, n in a.nodes.items():
        lines.append(f"| {node_id} | {n.type} | {tuple(n.output_shape) if n.output_shape else '?'} | "
                     f"{n.params:,} | {n.flops:,} |")
    return "\n".join(lines)


__all__ = ["CONFIG_TAG", "GRAPH_TAG", "EventFile", "flat_hparams", "graph_markdown", "graph_totals",
           "snapshot_histograms"]
