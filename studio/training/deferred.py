"""Metrics without a device sync per step, and store writes off the training thread.

On an accelerator, reading a step's loss (`loss.item()`) waits for the device to finish that step:
one stall per step. The Trainer keeps the loss and gradient norm as device tensors there
(`Trainer.sync_every_step` is False), and this writer buffers them as they are; when it flushes
(every `flush_seconds`, 0.5 s by default, or at an evaluation or checkpoint) it hands the buffer to a
background thread, which reads all its device values in a single transfer and commits the rows, so
the training thread never waits on the device or the database; `flush_and_wait()` is the
synchronous form the checkpointer uses (rows are committed before last.pt records their step).
A training step's row is one append (`log_values`), spread into rows on the commit thread too.

On the CPU the values are plain floats and the rows are bit-for-bit those of `MetricWriter`.
"""

from __future__ import annotations

import queue
import threading
import time

from studio.runs.store import MetricWriter, Store


def read_scalars(values: list) -> list[float]:
    """Python floats of `values` (floats or 0-d tensors), reading all tensors of one device at once."""
    import torch

    out = list(values)
    tensors = [(i, v) for i, v in enumerate(out) if isinstance(v, torch.Tensor)]
    by_device: dict = {}
    for i, v in tensors:
        by_device.setdefault(v.device, []).append((i, v))
    for items in by_device.values():
        read = torch.stack([v.detach().reshape(()) for _, v in items]).tolist()  # one device -> host copy
        for (i, _), value in zip(items, read, strict=True):
            out[i] = float(value)
    return out


class DeferredMetricWriter(MetricWriter):
    """A MetricWriter that accepts device tensors and commits on a background thread (see the module)."""

    def __init__(self, store: Store, run_id: str, *, flush_steps: int = 1_000_000, flush_seconds: float = 0.5):
        # Flushing by time only: a flush is a device read, so it must not happen every few fast steps.
        super().__init__(store, run_id, flush_steps=flush_steps, flush_seconds=flush_seconds)
        self._last_flush -= flush_seconds  # the first step is flushed at once: the chart's first point
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._commit_loop, name="studio-metric-writer", daemon=True)
        self._thread.start()

    def log(self, step: int, epoch: int, split: str, metrics: dict) -> None:
        now = time.time()
        for k, v in metrics.items():
            self._rows.append((step, epoch, split, k, v if not isinstance(v, (int, float)) else float(v), now))

    def log_values(self, step: int, epoch: int, split: str, keys: tuple, values: tuple) -> None:
        """`log(step, epoch, split, dict(zip(keys, values)))` as one append (a training step's row): the
        entry holds the key and value tuples and is spread into rows when it is flushed."""
        self._rows.append((step, epoch, split, keys, values, time.time()))

    def flush(self, *, everything: bool = False) -> None:
        """Queue the buffered entries of complete steps for the commit thread, which spreads them into
        rows, reads their device values (one transfer) and commits them."""
        self._raise_commit_error()
        rows = self._rows
        if everything or not rows or rows[-1][0] <= self._complete_upto:  # the usual case: all complete
            ready, self._rows = rows, []
        else:
            ready = [r for r in rows if r[0] <= self._complete_upto]
            self._rows = [r for r in rows if r[0] > self._complete_upto]
        if ready:
            self._queue.put(ready)
        self._steps_pending = 0
        self._last_flush = time.monotonic()

    def flush_and_wait(self) -> None:
        """flush(), then wait until every queued row is committed."""
        self.flush()
        self._queue.join()
        self._raise_commit_error()

    def close(self) -> None:
        self.flush(everything=True)
        self._queue.put(None)
        self._thread.join()
        self._raise_commit_error()

    def _commit_loop(self) -> None:
        while True:
            rows = self._queue.get()
            try:
                if rows is None:
                    return
                if self._error is None:
                    rows = _spread(rows)
                    values = read_scalars([r[4] for r in rows])
                    rows = [(*r[:4], value, r[5]) for r, value in zip(rows, values, strict=True)]
                    self.store.write_metrics(self.run_id, rows)
            except BaseException as e:  # reported on the training thread at its next flush
                self._error = e
            finally:
                self._queue.task_done()
                if rows is None:
                    self.store.close()

    def _raise_commit_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _spread(entries: list[tuple]) -> list[tuple]:
    """Rows (step, epoch, split, key, value, wall) of buffered entries, `log_values`' packed ones spread
    out key by key in their order."""
    rows = []
    for entry in entries:
        keys = entry[3]
        if isinstance(keys, tuple):
            step, epoch, split, _, values, wall = entry
            rows.extend((step, epoch, split, k, v if not isinstance(v, int) else float(v), wall)
                        for k, v in zip(keys, values, strict=True))
        else:
            rows.append(entry)
    return rows


__all__ = ["DeferredMetricWriter", "read_scalars"]
