"""Host overhead (issue 30): what the studio adds to a training step and a forward pass on a tiny model.

On a small step (and on any GPU) the host time between kernels is what the studio can add. Measured
in the training thread's CPU time (`time.thread_time_ns`), so the four other processes loading this
machine do not count, with the variants interleaved (one repetition of each in turn) and medians:

- the step loop on Linear 16->4, batch 8, 200 steps, the same 200 batches for every variant:
  `hand`      a careful hand-written loop (zero_grad, forward, cross-entropy, backward, Adam step,
              `loss.item()` kept in a list),
  `trainer`   the studio's `Trainer.train_step` (learning-rate schedule, AMP scaler off, the loss read),
  `worker`    `Trainer.train_step` plus the loop's per-step bookkeeping and the callbacks the worker's
              `build_trainer` installs (divergence guard, stop request, metric logger into the real
              SQLite store through its writer, checkpointer every epoch: none of those 200 steps saves);
              its process CPU time is printed too (the writer commits on its own thread);
- a chain of N tiny Linear 16->16 nodes, forward at batch 8 under no_grad: the compiled graph against
  an nn.Sequential of the very same modules, N = 10, 100, 1000.

    python -m bench.bench_host [--reps 15] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bench.common import report  # noqa: E402

IN, OUT, BATCH = 16, 4, 8


class _Splits:  # what the Trainer reads of a dataset to size its run: split lengths
    def __init__(self, n_train: int):
        self.train, self.val = range(n_train), range(0)


def _linear_graph():
    from studio.graph import parse_graph

    return parse_graph({"format": "studio.graph/1", "name": "tiny", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [IN]}},
        {"id": "fc", "type": "Linear", "params": {"out_features": OUT}}],
        "edges": [{"source": "input", "target": "fc"}]})


def chain_graph(n: int, width: int = 16):
    from studio.graph import parse_graph

    nodes = [{"id": "input", "type": "Input", "params": {"shape": [width]}}]
    nodes += [{"id": f"fc{i}", "type": "Linear", "params": {"out_features": width}} for i in range(n)]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return parse_graph({"format": "studio.graph/1", "name": f"chain{n}", "nodes": nodes, "edges": edges})


def loop_variants(steps: int, workdir: Path) -> dict:
    """({name: closure running the `steps` steps}, close): the hand loop, the Trainer, the worker's trainer."""
    from studio.compile import compile_graph
    from studio.graph import save_graph
    from studio.runs.rundir import RunDir
    from studio.runs.store import Store
    from studio.training import Task, TrainConfig, Trainer
    from studio.training.worker import RunLog, build_trainer

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(BATCH, IN, generator=g), torch.randint(0, OUT, (BATCH,), generator=g))
               for _ in range(steps)]
    config = TrainConfig(batch_size=BATCH, max_steps=10 ** 9, probes=False, seed=0)

    hand_model = nn.Linear(IN, OUT)
    hand_opt = torch.optim.Adam(hand_model.parameters(), lr=1e-3)
    losses: list[float] = []

    def hand():
        for x, y in batches:
            hand_opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(hand_model(x), y)
            loss.backward()
            hand_opt.step()
            losses.append(loss.item())
        losses.clear()

    trainer = Trainer(compile_graph(_linear_graph(), seed=0), _Splits(BATCH * steps), config,
                      task=Task("classification", num_classes=OUT))

    def studio_step():
        for x, y in batches:
            trainer.state.loss = trainer.train_step(x, y)

    # The worker's own trainer and callbacks, from a run directory and a real store (its writer's thread)
    store = Store(workdir / "runs.db")
    run_id = "bench-host"
    store.create_run(run_id, name=run_id, graph={}, config=config.to_dict(), dataset_id="bench")
    rd = RunDir(workdir / run_id)
    rd.path.mkdir(parents=True)
    rd.checkpoints_dir.mkdir()
    rd.probes_dir.mkdir()
    save_graph(_linear_graph(), rd.graph_file)
    rd.config_file.write_text(json.dumps(config.to_dict()))
    meta = {"run_id": run_id, "dataset_id": "bench"}
    log = RunLog(rd.log_file, store, run_id)
    worker_trainer, _ = build_trainer(rd, meta, store, log, data=_TinyData(BATCH * steps))
    worker_trainer.fire("on_train_start")

    def worker():
        _steps(worker_trainer, batches)

    variants = {"hand": hand, "trainer": studio_step, "worker": worker}
    return variants, lambda: (worker_trainer.fire("on_train_end"), store.close())


class _TinyData:
    """The bench's dataset for build_trainer: its info and sizes (the batches are the bench's own)."""

    def __init__(self, n_train: int):
        from studio.data.types import DatasetInfo

        self.info = DatasetInfo(id="bench", name="bench", task="classification", input_shape=(IN,),
                                input_dtype="float32", target_shape=(), num_classes=OUT,
                                class_names=[str(i) for i in range(OUT)], vocab=None, description="",
                                source="bench", sizes={"train": n_train, "val": 0, "test": 0})
        self.train, self.val = range(n_train), range(0)

    def probe_batch(self, n):
        raise RuntimeError("the bench's config has probes off; nothing asks for a probe batch")


def _steps(trainer, batches) -> None:
    """The body of Trainer.fit for each batch (no evaluation: the bench has no validation split)."""
    s = trainer.state
    t0 = time.perf_counter()
    for x, y in batches:
        s.loss = trainer.train_step(x, y)
        s.step += 1
        s.batch_in_epoch += 1
        now = time.perf_counter()
        s.samples_per_sec, t0 = x.shape[0] / max(now - t0, 1e-9), now
        s.eval_due = False
        trainer.fire("on_step_end")


def chain_variants(n: int, forwards: int) -> dict:
    from studio.compile import compile_graph

    graph = compile_graph(chain_graph(n), seed=0)
    seq = nn.Sequential(*[graph.get_submodule(f"fc{i}") for i in range(n)])
    x = torch.randn(BATCH, 16)

    def run(model):
        def go():
            with torch.no_grad():
                for _ in range(forwards):
                    model(x)
        return go

    return {"sequential": run(seq), "compiled": run(graph)}


def measure(fns: dict, reps: int) -> dict[str, tuple[float, float, float]]:
    """(median thread ns, median process ns, mean thread ns) per variant, interleaved, after one warm-up
    each. The mean is there for the worker: its writer flushes every 0.5 s of wall time, so only some
    repetitions hold a flush and the median can leave it out."""
    for fn in fns.values():
        fn()
    times: dict = {k: ([], []) for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t, p = time.thread_time_ns(), time.process_time_ns()
            fn()
            times[k][0].append(time.thread_time_ns() - t)
            times[k][1].append(time.process_time_ns() - p)
    return {k: (statistics.median(a), statistics.median(b), statistics.mean(a)) for k, (a, b) in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--chain", default="10,100,1000")
    args = ap.parse_args(argv if argv is not None else [])
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        fns, close = loop_variants(args.steps, Path(tmp))
        t = measure(fns, args.reps)
        close()
    us = {k: v[0] / args.steps / 1000 for k, v in t.items()}
    print(f"step loop, Linear {IN}->{OUT}, batch {BATCH}, {args.steps} steps, thread CPU, medians of {args.reps} "
          "interleaved:")
    for k in fns:
        extra = f" ({us[k] - us['hand']:+.1f})" if k != "hand" else ""
        mean = {v: t[v][2] / args.steps / 1000 for v in t}
        proc = (f"; process CPU {t[k][1] / args.steps / 1000:.1f} (its writer thread's commits included); "
                f"mean thread CPU {mean[k]:.1f} vs the hand loop's {mean['hand']:.1f}" if k == "worker" else "")
        print(f"      {k:8} {us[k]:7.1f} us/step{extra}{proc}")
    over = us["worker"] - us["hand"]
    report("trainer + worker callbacks over the hand loop", over, "<= 15 us/step", over <= 15, " us/step")
    for n in [int(v) for v in args.chain.split(",") if v]:
        forwards = max(5, 2000 // n)
        t = measure(chain_variants(n, forwards), args.reps)
        ratio = t["compiled"][0] / t["sequential"][0]
        per = {k: v[0] / forwards / 1000 for k, v in t.items()}
        print(f"      chain N={n}: compiled {per['compiled']:.1f} us vs nn.Sequential {per['sequential']:.1f} us "
              f"per forward ({(per['compiled'] - per['sequential']) / n * 1000:.0f} ns per node)")
        report(f"compiled chain / nn.Sequential, N={n}", ratio, "<= 1.05 at N=100", ratio <= 1.05 or n != 100, "x")


if __name__ == "__main__":
    main(sys.argv[1:])
