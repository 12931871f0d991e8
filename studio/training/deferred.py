"""Metrics without a device sync per step, and store writes off the training thread.

On an accelerator, reading a step's loss (`loss.item()`) waits for the device to finish that step:
one stall per step. The Trainer keeps the loss and gradient norm as device tensors there
(`Trainer.sync_every_step` is False), and this writer buffers them as they are and reads all the
buffered ones in a single transfer when it flushes (every `flush_seconds`, 0.5 s by default, or at an
evaluation or checkpoint). The SQLite commit then happens on a background thread, so the training
thread never waits on the database; `flush_and_wait()` is the synchronous form the checkpointer uses
(rows are committed before last.pt records their step).

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

    def flush(self, *, everything: bool = False) -> None:
        """Read the buffered values of complete steps (one transfer) and queue them for the commit thread."""
        self._raise_commit_error()
        if everything:
            ready, self._rows = self._rows, []
        else:
            ready = [r for r in self._rows if r[0] <= self._complete_upto]
            self._rows = [r for r in self._rows if r[0] > self._complete_upto]
        if ready:
            values = read_scalars([r[4] for r in ready])
            ready = [(*r[:4], value, r[5]) for r, value in zip(ready, values, strict=True)]
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


__all__ = ["DeferredMetricWriter", "read_scalars"]
