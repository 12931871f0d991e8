"""Fast starts and the accelerator path, checked without a GPU: what a worker imports before its first
step, the digits file read without scikit-learn, the first metric row flushed at the first step,
device selection, and no per-step host reads when the loss stays on the device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.errors import TrainError
from studio.runs.store import Store
from studio.training import TrainConfig
from studio.training.optim import resolve_device

ROOT = Path(__file__).resolve().parents[1]


def test_digits_file_equals_sklearns_load_digits():
    from sklearn.datasets import load_digits

    from studio.data.digits_file import digits_arrays

    images, target = digits_arrays()
    bunch = load_digits()
    assert images.dtype == bunch.images.dtype and np.array_equal(images, bunch.images)
    assert target.dtype == bunch.target.dtype and np.array_equal(target, bunch.target)


WORKER = r"""
import json, os, sys
from studio.runs import launcher
launcher.reconcile = lambda store=None: {}  # create the run without spawning: this process is its worker
from studio.runs import start_run, run_dir
from studio.training import TrainConfig
graph = {"format": "studio.graph/1", "name": "cnn",
         "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 8, 8]}},
                   {"id": "conv", "type": "Conv2d", "params": {"out_channels": 4, "kernel_size": 3, "padding": 1}},
                   {"id": "flat", "type": "Flatten"}, {"id": "fc", "type": "Linear", "params": {"out_features": 10}}],
         "edges": [{"source": "input", "target": "conv"}, {"source": "conv", "target": "flat"},
                   {"source": "flat", "target": "fc"}]}
run_id = start_run(graph, "digits", TrainConfig(max_steps=3, batch_size=32, probes=False))
before = set(sys.modules)
from studio.training import worker
status = worker.run(run_dir(run_id))
# (torch._dynamo, and the part of torch._inductor it imports, come with every torch optimizer's first
# step: PyTorch's, not the studio's, so they are not listed.)
heavy = ["plotly", "pandas", "optuna", "ray", "onnx", "onnxscript", "torchao", "sklearn", "scipy", "streamlit"]
print(json.dumps({"status": status, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def test_a_worker_trains_without_importing_what_it_does_not_use(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDIO_WORKSPACE": str(tmp_path / "ws")}
    done = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"status": "completed", "loaded": []}


def test_the_first_step_is_flushed_at_once(tmp_path):
    from studio.training.deferred import DeferredMetricWriter

    store = Store(tmp_path / "s.db")
    store.create_run("r", name="r", graph={}, config={}, dataset_id="digits")
    writer = DeferredMetricWriter(store, "r")  # flushes every 0.5 s, but the first step at once
    writer.log(1, 0, "train", {"train_loss": torch.tensor(0.5)})
    writer.end_step(1)
    writer._queue.join()  # the commit thread has written what the flush queued
    assert [(m.step, m.key, m.value) for m in store.read_metrics("r")] == [(1, "train_loss", 0.5)]
    writer.log(2, 0, "train", {"train_loss": torch.tensor(0.25)})
    writer.end_step(2)  # within 0.5 s of the first: buffered
    writer._queue.join()
    assert len(store.read_metrics("r")) == 1
    writer.close()
    assert len(store.read_metrics("r")) == 2


def test_device_selection_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type in ("cpu", "mps")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(TrainError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")


HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


def test_no_host_read_per_step_when_the_loss_stays_on_the_device(tmp_path, monkeypatch):
    """The accelerator path (Trainer.sync_every_step False, as on CUDA) run on the CPU: every way a
    tensor reaches the host is counted; a 2x longer run may add only the reads of its extra flushes
    (none here: flushes are 0.5 s apart) and evaluations (none: one at the end), not one per step."""
    from studio.compile import compile_graph
    from studio.data import get_dataset
    from studio.graph import parse_graph
    from studio.training.callbacks import DivergenceGuard, MetricLogger
    from studio.training.deferred import DeferredMetricWriter
    from studio.training.loop import Task, Trainer

    data = get_dataset("digits", seed=0)
    graph = parse_graph({"format": "studio.graph/1", "name": "mlp",
                         "nodes": [{"id": "input", "type": "Input", "params": {"shape": [1, 8, 8]}},
                                   {"id": "flat", "type": "Flatten"},
                                   {"id": "fc", "type": "Linear", "params": {"out_features": 10}}],
                         "edges": [{"source": "input", "target": "flat"}, {"source": "flat", "target": "fc"}]})
    monkeypatch.setattr(DivergenceGuard, "READ_SECONDS", 1e9)

    def reads(steps: int) -> int:
        store = Store(tmp_path / f"{steps}.db")
        store.create_run("r", name="r", graph={}, config={}, dataset_id="digits")
        writer = DeferredMetricWriter(store, "r", flush_seconds=1e9)
        cfg = TrainConfig(max_steps=steps, batch_size=16, optimizer="sgd", lr=0.05, grad_clip=1.0, eval_every=0)
        trainer = Trainer(compile_graph(graph, seed=0), data, cfg, task=Task("classification", num_classes=10),
                          callbacks=[DivergenceGuard(), MetricLogger(writer)])
        trainer.sync_every_step = False  # what a CUDA device sets (the loop's accelerator path)
        count = [0]
        originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

        def counting(name):
            def read(self, *args, **kwargs):
                count[0] += 1
                return originals[name](self, *args, **kwargs)

            return read

        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, counting(name))
        try:
            state = trainer.fit()
        finally:
            for name, fn in originals.items():
                monkeypatch.setattr(torch.Tensor, name, fn)
        assert state.step == steps
        assert len(store.read_metrics("r", keys=["train_loss"])) == steps  # every step's loss logged
        return count[0]

    short, long = reads(20), reads(40)
    assert long - short <= 2, (short, long)  # not one read per step


def test_a_process_reaped_between_the_two_looks_is_dead(monkeypatch):
    """pid_alive asks the kernel (os.kill) and then /proc for a zombie; a process reaped between the two
    is gone. It answered "alive" once (its /proc file had vanished), and a killed run was marked lost
    for "no heartbeat for 0 s" instead of its worker having ended (tests/reliability/test_crash_safety)."""
    from studio.runs import launcher

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: /proc/<pid> is gone
    monkeypatch.setattr(launcher.os, "kill", lambda pid, sig: None)  # as if os.kill had looked just before
    assert launcher.pid_alive(child.pid) is False
