"""Host overhead (issue 30): the cheap paths keep every promise the pages rely on, without timing anything.

A step's metric row is one buffered append, yet every row reaches the store at a flush, in MetricWriter's
order and values; the stop file is looked at on a poll, yet a check the gate asks for, or an evaluation,
honours it at that step; the logged loss is the one a hand-written loop computes; the compiled graph
finds its submodules without Module.__getattr__ and still sees a replaced one; best.pt is written only
once the rows up to its step are committed, so a real worker killed after it and resumed from it logs
every step once (the one test here with worker processes: one run, killed at a gate, and its resume).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from studio.compile import compile_graph
from studio.graph import parse_graph
from studio.runs.store import MetricWriter, Store
from studio.training import Task, TrainConfig, Trainer
from studio.training.callbacks import Checkpointer, DivergenceGuard, MetricLogger, StopRequest, load_checkpoint
from studio.training.deferred import DeferredMetricWriter
from studio.training.loop import Callback
from tests.conftest import chain

IN, OUT, BATCH, STEPS = 6, 3, 4, 7


class FixedBatches:
    """A dataset of STEPS fixed batches, served in order every epoch; with `val`, the same batches are the
    validation split (otherwise there is none)."""

    def __init__(self, val: bool = False):
        g = torch.Generator().manual_seed(5)
        self.items = [(torch.randn(BATCH, IN, generator=g), torch.randint(0, OUT, (BATCH,), generator=g))
                      for _ in range(STEPS)]
        self.train, self.val = range(BATCH * STEPS), range(BATCH * STEPS if val else 0)

    def batches(self, split, batch_size, *, shuffle, generator, augment=None, drop_last=False):
        return iter(self.items if split == "train" or len(self.val) else [])


def tiny_graph(dropout: bool = False):
    nodes = [("input", "Input", {"shape": [IN]})]
    if dropout:
        nodes.append(("drop", "Dropout", {"p": 0.5}))
    nodes.append(("fc", "Linear", {"out_features": OUT}))
    return parse_graph(chain(*nodes))


def make_trainer(callbacks=(), graph=None, val=False, **cfg):
    config = TrainConfig(batch_size=BATCH, max_steps=STEPS, optimizer="adam", lr=0.01, probes=False, seed=0, **cfg)
    model = compile_graph(graph or tiny_graph(), seed=0)
    return Trainer(model, FixedBatches(val), config, task=Task("classification", num_classes=OUT),
                   callbacks=list(callbacks))


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "runs.db")
    s.create_run("r", name="r", graph={}, config={}, dataset_id="x")
    yield s
    s.close()


def test_logged_loss_is_the_hand_loops_and_every_row_reaches_the_store(store):
    # flush_seconds so large that no flush happens during the run: the rows arrive at close() (the run's end)
    writer = DeferredMetricWriter(store, "r", flush_seconds=1e9)
    writer._last_flush = math.inf  # not even the first step's immediate flush
    trainer = make_trainer([DivergenceGuard(), MetricLogger(writer)])
    hand_model = copy.deepcopy(trainer.model)
    state = trainer.fit()
    assert state.stop_reason == "completed" and state.step == STEPS

    opt = torch.optim.Adam(hand_model.parameters(), lr=0.01)
    hand = []
    for x, y in FixedBatches().items:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(hand_model(x), y)
        loss.backward()
        opt.step()
        hand.append(loss.item())
    rows = store.read_metrics("r", keys=["train_loss"])
    assert [r.step for r in rows] == list(range(1, STEPS + 1))
    # same process, same CPU kernels, same operations in the same order: bit-identical, no tolerance
    assert [r.value for r in rows] == hand
    keys = [m.key for m in store.read_metrics("r") if m.step == 1]
    assert keys == ["train_loss", "lr", "samples_per_sec"]


def test_packed_rows_equal_metric_writers_rows(tmp_path):
    """log_values (one append per step) ends in the rows log(dict) writes, key order and values alike."""
    values = [(1, 0, (0.5, 1e-3, 12.0)), (2, 0, (torch.tensor(0.25), 1e-3, 13)), (3, 1, (0.125, 5e-4, 14.5))]
    stores = {}
    for kind in ("plain", "deferred"):
        s = stores[kind] = Store(tmp_path / f"{kind}.db")
        s.create_run("r", name="r", graph={}, config={}, dataset_id="x")
        w = MetricWriter(s, "r") if kind == "plain" else DeferredMetricWriter(s, "r", flush_seconds=1e9)
        for step, epoch, vals in values:
            if kind == "plain":
                w.log(step, epoch, "train", dict(zip(("train_loss", "lr", "samples_per_sec"), vals, strict=True)))
            else:
                w.log_values(step, epoch, "train", ("train_loss", "lr", "samples_per_sec"), vals)
            w.end_step(step)
        w.log(3, 1, "val", {"val_loss": 0.75})
        w.close()

    def rows(s):
        return [(m.step, m.epoch, m.split, m.key, m.value) for m in s.read_metrics("r")]

    assert rows(stores["deferred"]) == rows(stores["plain"])
    assert len(rows(stores["plain"])) == 10
    for s in stores.values():
        s.close()


def test_flush_and_wait_commits_complete_steps_only(store):
    w = DeferredMetricWriter(store, "r", flush_seconds=1e9)
    w._last_flush = math.inf
    w.log_values(1, 0, "train", ("train_loss",), (1.0,))
    w.end_step(1)
    w.log_values(2, 0, "train", ("train_loss",), (2.0,))  # step 2 not ended yet
    assert store.read_metrics("r") == []  # buffered, not flushed
    w.flush_and_wait()
    assert [(m.step, m.value) for m in store.read_metrics("r")] == [(1, 1.0)]
    w.end_step(2)
    w.close()
    assert [(m.step, m.value) for m in store.read_metrics("r")] == [(1, 1.0), (2, 2.0)]


class TouchAt(Callback):
    """Writes the stop file at the end of `step`, and asks for an immediate check at `check_at`."""

    def __init__(self, path, step, check_at=None):
        self.path, self.step, self.check_at = path, step, check_at

    def on_step_end(self, trainer):
        if trainer.state.step == self.step:
            self.path.touch()
        if trainer.state.step == self.check_at:
            trainer.stop_check_due = True  # what the test gate does after a hold


def test_stop_is_honoured_at_the_next_check(tmp_path):
    stop = tmp_path / "stop"
    # Polled every step: the step that wrote the file is the step that stops.
    state = make_trainer([TouchAt(stop, 2), StopRequest(stop)]).fit()
    assert (state.stop_reason, state.step) == ("stopped", 2)

    # Polled on a clock that never comes round again after the first look: only an asked-for check sees it.
    stop.unlink()
    state = make_trainer([TouchAt(stop, 2, check_at=5), StopRequest(stop, poll_seconds=1e9)]).fit()
    assert (state.stop_reason, state.step) == ("stopped", 5)
    assert state.message == "stopped on request at step 5"

    stop.unlink()
    state = make_trainer([TouchAt(stop, 2), StopRequest(stop, poll_seconds=1e9)]).fit()
    assert (state.stop_reason, state.step) == ("completed", STEPS)  # no check came: the run went on

    # A step that evaluates looks at once (a sweep's pruner stops a trial after reading an evaluation).
    stop.unlink()
    state = make_trainer([TouchAt(stop, 2), StopRequest(stop, poll_seconds=1e9)], val=True, eval_every=3).fit()
    assert (state.stop_reason, state.step) == ("stopped", 3)


def test_gate_asks_for_a_stop_check_after_a_hold(tmp_path):
    from studio.training.gate import Gate

    (tmp_path / "hold").write_text("3")
    stop = tmp_path / "stop"
    stop.touch()  # asked before the hold: the gate lets go at once and the stop lands on the held step
    gate = Gate(tmp_path, "r", stop_requested=stop.exists)
    state = make_trainer([gate, StopRequest(stop, poll_seconds=1e9)]).fit()
    # the first step's look found the file already: the run stops at step 1, before the hold
    assert (state.stop_reason, state.step) == ("stopped", 1)

    stop.unlink()

    class TouchWhileHeld(Callback):  # before the gate: the stop file appears at the held step
        def on_step_end(self, trainer):
            if trainer.state.step == 3:
                stop.touch()

    state = make_trainer([TouchWhileHeld(), Gate(tmp_path, "r", stop_requested=stop.exists),
                          StopRequest(stop, poll_seconds=1e9)]).fit()
    assert (state.stop_reason, state.step) == ("stopped", 3)


def test_callbacks_added_after_the_first_event_get_events():
    seen = []

    class Count(Callback):
        def on_step_end(self, trainer):
            seen.append(trainer.state.step)

    class AddLater(Callback):
        def on_step_end(self, trainer):
            if trainer.state.step == 3:
                trainer.callbacks.append(Count())

    make_trainer([AddLater()]).fit()
    assert seen == list(range(4, STEPS + 1))


def test_train_mode_comes_back_after_an_evaluation():
    trainer = make_trainer(graph=tiny_graph(dropout=True))
    x, y = FixedBatches().items[0]
    trainer.train_step(x, y)
    trainer.model.eval()  # what evaluate() and the prober do
    seen = []
    handle = trainer.model.drop.register_forward_hook(lambda m, i, o: seen.append(m.training))
    trainer.train_step(x, y)
    handle.remove()
    assert seen == [True] and trainer.model.training


def test_compiled_graph_finds_submodules_without_module_getattr(monkeypatch):
    graph = parse_graph(chain(("input", "Input", {"shape": [IN]}), ("fc0", "Linear", {"out_features": IN}),
                              ("fc1", "Linear", {"out_features": OUT})))
    model = compile_graph(graph, seed=0)
    looked_up = []
    original = nn.Module.__getattr__

    def counting(self, name):
        looked_up.append(name)
        return original(self, name)

    monkeypatch.setattr(nn.Module, "__getattr__", counting)
    x = torch.randn(2, IN)
    out = model(x)
    assert "fc0" not in looked_up and "fc1" not in looked_up
    torch.testing.assert_close(out, model.fc1(model.fc0(x)), rtol=0, atol=0)  # the same modules, the same result
    assert type(model).__call__ is nn.Module.__call__  # fx's _WrappedCall is not in the way

    model.fc1 = nn.Linear(IN, OUT)  # a replaced submodule is the one the forward runs
    torch.testing.assert_close(model(x), model.fc1(model.fc0(x)), rtol=0, atol=0)
    twin = copy.deepcopy(model)
    assert twin.fc0 is twin._modules["fc0"] and twin.fc0 is not model.fc0
    torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)
    del model.fc1
    with pytest.raises(AttributeError, match="fc1"):
        model.fc1  # noqa: B018


def test_bf16_clipped_step_is_the_hand_written_one():
    """The autocast and clipping branches of the trimmed step: the same operations as written by hand."""
    trainer = make_trainer(precision="bf16", grad_clip=0.5)
    hand_model = copy.deepcopy(trainer.model)
    opt = torch.optim.Adam(hand_model.parameters(), lr=0.01)
    for x, y in FixedBatches().items[:3]:
        logged = trainer.train_step(x, y)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = hand_model(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(hand_model.parameters(), 0.5)
        opt.step()
        # same process and kernels, same operations in the same order: bit-identical
        assert (logged, trainer.state.grad_norm) == (loss.item(), float(norm))
    for a, b in zip(trainer.model.parameters(), hand_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---- best.pt and the deferred metric commits -------------------------------------------------------

def test_best_pt_is_written_once_the_rows_up_to_its_step_are_committed(store, tmp_path):
    """best.pt records step S only when every row up to S, that step's train row too, is in the store."""
    writer = DeferredMetricWriter(store, "r", flush_seconds=1e9)
    writer._last_flush = math.inf  # no flush on the clock: only the ones evaluations and checkpoints ask for
    seen = []

    def on_best(name, value, step):  # called right after best.pt is written
        position = load_checkpoint(tmp_path / "best.pt")["position"]["step"]
        seen.append((step, position, [m.step for m in store.read_metrics("r", keys=["train_loss"])],
                     [m.step for m in store.read_metrics("r", keys=["val_loss"])]))

    checkpointer = Checkpointer(tmp_path, every=100, on_best=on_best, before_best=writer.flush_and_wait)
    make_trainer([MetricLogger(writer), checkpointer], val=True, eval_every=3, monitor="val_loss").fit()
    assert seen and seen[0][0] == 3  # the first evaluation always writes best.pt
    for step, position, train_steps, val_steps in seen:
        assert position == step
        assert train_steps == list(range(1, step + 1))
        assert val_steps == [s for s in range(1, step + 1) if s % 3 == 0 or s == STEPS]  # the last step evaluates


def test_a_run_killed_after_best_pt_resumes_from_it_with_every_steps_row_once(gate):
    """A real worker, held at the evaluation of step 20 (best.pt written at step 10's, no last.pt yet:
    checkpoints at epoch ends, 158 steps away), is SIGKILLed; best.pt is copied over last.pt (what
    load_checkpoint's message advises for a damaged last.pt) and the run resumed: every step's rows once.
    When best.pt was written at the evaluation, before that step's rows were committed, a kill there
    left best.pt at step 20 with rows up to 19, and the resumed run never logged step 20."""
    import os
    import shutil
    import signal

    from studio.runs import reconcile, resume_run, run_dir, start_run
    from tests.conftest import wait_until

    store = Store()

    def status():
        reconcile(store)  # reaps the killed worker and marks it lost; starts the resumed run
        return store.get_run(run_id).status

    graph = chain(("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
                  ("fc1", "Linear", {"out_features": 16}), ("relu", "ReLU", None),
                  ("fc2", "Linear", {"out_features": 10}), name="best-kill")
    config = TrainConfig(max_steps=40, batch_size=8, lr=1e-2, optimizer="adam", eval_every=10, checkpoint_every=0,
                         monitor="val_loss", seed=2, probes=False, device="cpu")
    gate.hold(20)
    run_id = start_run(graph, "digits", config, name="killed after best.pt", store=store)
    checkpoints = run_dir(run_id) / "checkpoints"
    try:
        gate.wait_held("the run held at step 20", run_id)
        assert not (checkpoints / "last.pt").exists()
        best_step = load_checkpoint(checkpoints / "best.pt")["position"]["step"]
        committed = [m.step for m in store.read_metrics(run_id, keys=["train_loss"])]
        assert committed[:best_step] == list(range(1, best_step + 1)), (best_step, committed)
        os.kill(store.get_run(run_id).pid, signal.SIGKILL)
        wait_until(lambda: status() == "lost", "the run marked lost")
    finally:
        gate.release()
    shutil.copyfile(checkpoints / "best.pt", checkpoints / "last.pt")
    resume_run(run_id, store=store)
    wait_until(lambda: status() not in ("queued", "running"), "the resumed run to end")
    run = store.get_run(run_id)
    assert (run.status, run.step) == ("completed", 40), run.error
    assert [m.step for m in store.read_metrics(run_id, keys=["train_loss"])] == list(range(1, 41))
    assert [m.step for m in store.read_metrics(run_id, keys=["val_loss"])] == [10, 20, 30, 40]
    assert f"resumed from the checkpoint at step {best_step}" in {e.message.split(" (")[0]
                                                                  for e in store.read_events(run_id)}
