"""The Ray backend: `python -m studio.training.distributed RUN_DIR` drives one run on a Ray cluster.

This process plays the worker's part on the studio's machine (its pid and heartbeat are in the
store, it honours the stop file, it ends the run in a final status), while the training happens in
the ranks of a Ray Train `TorchTrainer`: each rank builds the SAME Trainer with the same callbacks
(worker.build_trainer) and trains on its rows of every global batch (studio.training.shard).

Nothing assumes a filesystem shared with the ranks. The driver puts the dataset in Ray's object
store; rank 0 writes its files (checkpoints, probes, confusion lines) in a scratch directory on its
own node and sends them, with its metric rows and events, through a `Relay` actor that the driver
drains a few times a second into the store and the run directory: one writer, as for a local run.
The relay also keeps the latest `last.pt` and probe index, so when a Ray worker dies and Ray Train
restarts the group (up to `max_failures` times), the new ranks resume from that checkpoint; rank 0
then truncates the rows logged after it, so the store holds each step once.

Ray is imported here only: the local path never pays for it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from studio.errors import StudioError, TrainError
from studio.runs.ray_backend import INSTALL_HINT, ClusterInfo, RaySettings, check_fits, check_reachable
from studio.runs.rundir import RunDir
from studio.runs.store import Store
from studio.training.gate import GATE_ENV, gate_dir
from studio.training.loop import Callback, Trainer

PUMP_SECONDS = 0.25          # how often the driver drains the relay into the store
STOP_POLL_SECONDS = 0.5      # how often rank 0 asks the relay whether a stop was requested
STATE_FILES = ("checkpoints/last.pt", "probes/index.json")  # what a restarted rank 0 needs back
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


# ---- the rank side ---------------------------------------------------------------------------------

class RelayStore:
    """The few Store methods rank 0's callbacks call, sent to the driver through the relay, in order."""

    def __init__(self, relay):
        self.relay = relay
        self.path = "relay"

    def send(self, *messages) -> None:
        self.relay.put.remote(list(messages))  # actor calls from one caller run in submission order

    def write_metrics(self, run_id: str, rows: list) -> None:
        if rows:
            self.send(("rows", rows))

    def update_run(self, run_id: str, **fields) -> None:
        self.send(("update", fields))

    def truncate_metrics(self, run_id: str, after_step: int) -> int:
        self.send(("truncate", after_step))
        return 0  # the driver counts and logs what it dropped

    def log_event(self, run_id: str, message: str, level: str = "info") -> None:
        self.send(("event", message, level))

    def heartbeat(self, run_id: str) -> None:  # the driver heartbeats for the run
        pass


class Mirror(Callback):
    """Rank 0, last callback: sends the files its callbacks wrote in the scratch run directory.

    Whole files when they change (checkpoints, probe snapshots, then the probe index, so the index
    never names a snapshot the driver lacks); confusion.jsonl as appended lines.
    """

    def __init__(self, scratch: RunDir, store: RelayStore):
        self.scratch, self.store = scratch, store
        self.seen: dict[str, tuple[int, int]] = {}
        self.confusion_sent = 0

    def sync(self) -> None:
        messages = []
        files = sorted(self.scratch.probes_dir.glob("step_*.npz")) + [self.scratch.probes_dir / "index.json"]
        files += [self.scratch.checkpoint("best"), self.scratch.checkpoint("last")]
        for path in files:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            rel = path.relative_to(self.scratch.path).as_posix()
            key = (st.st_mtime_ns, st.st_size)
            if self.seen.get(rel) != key:
                self.seen[rel] = key
                messages.append(("file", rel, path.read_bytes()))
        confusion = self.scratch.confusion_file
        if confusion.exists() and confusion.stat().st_size > self.confusion_sent:
            with open(confusion, "rb") as f:
                f.seek(self.confusion_sent)
                chunk = f.read()
            self.confusion_sent += len(chunk)
            messages.append(("append", confusion.name, chunk))
        if messages:
            self.store.send(*messages)

    def on_train_start(self, trainer: Trainer) -> None:
        self.sync()

    def on_step_end(self, trainer: Trainer) -> None:
        self.sync()

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.sync()

    def on_train_end(self, trainer: Trainer) -> None:
        self.sync()


class StopPoller(Callback):
    """Rank 0: asks the relay (without waiting) whether the user pressed Stop; tells its Shard."""

    def __init__(self, relay, shard):
        self.relay, self.shard = relay, shard
        self._pending = None
        self._last = 0.0

    def on_step_end(self, trainer: Trainer) -> None:
        import ray

        now = time.monotonic()
        if self._pending is None:
            if now - self._last >= STOP_POLL_SECONDS:
                self._pending, self._last = self.relay.stop_requested.remote(), now
            return
        ready, _ = ray.wait([self._pending], timeout=0)
        if ready:
            if ray.get(self._pending):
                self.shard.request_stop()
            self._pending = None


def train_rank(config: dict) -> None:
    """Ray Train's train_loop_per_worker: one rank of the run."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from studio.training.shard import Shard, ShardStop
    from studio.training.worker import build_trainer

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    relay = config["relay"]
    meta = config["meta"]
    scratch = RunDir(tempfile.mkdtemp(prefix=f"studio-{meta['run_id']}-rank{rank}-"))
    store = RelayStore(relay)
    chief = rank == 0
    try:
        scratch.create(graph_json=config["graph_json"], config=config["config"], meta=meta)
        state = ray.get(relay.state.remote())
        for rel, blob in state.items():
            if chief or rel == "checkpoints/last.pt":  # every rank resumes the same weights
                scratch.file(rel).write_bytes(blob)
        data = ray.get(config["data"])
        device = ray.train.torch.get_device()
        shard = Shard(rank, world, device)
        log = (lambda message, level="info": store.send(("event", message, level))) if chief else None
        extra = (StopPoller(relay, shard), Mirror(scratch, store)) if chief else ()
        if config.get("gate"):  # a test's gate (studio.training.gate), from the driver's environment
            os.environ[GATE_ENV] = config["gate"]

        def stop_asked() -> bool:  # polled only while a test's gate holds rank 0
            if ray.get(relay.stop_requested.remote()):
                shard.request_stop()
                return True
            return False

        trainer, _ = build_trainer(scratch, meta, store if chief else None, log, shard=shard,
                                   stop_callback=ShardStop(shard), device=device, extra_callbacks=extra, data=data,
                                   gate_stop=stop_asked)
        node = f"{ray.util.get_node_ip_address()}, id {ray.get_runtime_context().get_node_id()[:12]}"
        store.send(("start", rank, world, os.getpid(), node, trainer.state.step))
        state = trainer.fit()
        if chief:
            ray.get(relay.put.remote([("end", state.stop_reason, state.message)]))  # delivered before we return
    except StudioError as e:
        # The same on every rank (a graph that does not fit, bad data): report it, do not retry.
        if chief:
            ray.get(relay.put.remote([("error", str(e), traceback.format_exc())]))
    except BaseException as e:
        ray.get(relay.put.remote([("rank_error", rank, f"{type(e).__name__}: {e}", traceback.format_exc())]))
        raise  # Ray Train restarts the group from the last checkpoint (max_failures)
    finally:
        shutil.rmtree(scratch.path, ignore_errors=True)


# ---- the driver side -------------------------------------------------------------------------------

def _relay_class():
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class Relay:
        """Messages from rank 0 to the driver, the state a restarted rank needs, and the stop flag."""

        def __init__(self, state: dict):
            self.messages: list = []
            self.files = dict(state)
            self.stop = False

        def put(self, messages: list) -> None:
            for m in messages:
                if m[0] == "file" and m[1] in STATE_FILES:
                    self.files[m[1]] = m[2]
            self.messages.extend(messages)

        def drain(self) -> list:
            out, self.messages = self.messages, []
            return out

        def state(self) -> dict:
            return self.files

        def request_stop(self) -> None:
            self.stop = True

        def stop_requested(self) -> bool:
            return self.stop

    return Relay


class Driver:
    """Connects to Ray, starts the TorchTrainer, and writes what rank 0 relays into the store."""

    def __init__(self, rd: RunDir, meta: dict, store: Store, log):
        self.rd, self.meta, self.store, self.log = rd, meta, store, log
        self.run_id = meta["run_id"]
        self.settings = RaySettings.from_dict(rd.backend())
        self.starts = 0            # how many times rank 0 started (> 1: Ray Train restarted the group)
        self.end: tuple | None = None
        self.error: tuple | None = None
        self.rank_errors: list[str] = []
        self.pids: list[str] = []

    # ---- connecting ---------------------------------------------------------------------------------
    def connect(self):
        try:
            import ray
        except ImportError as e:
            raise TrainError(f"the Ray backend needs Ray, which cannot be imported here ({e}); install it with "
                             f"{INSTALL_HINT} or train on this machine (backend 'local')") from None
        s = self.settings
        check_reachable(s.address)
        kwargs: dict = {"logging_level": "ERROR", "log_to_driver": False}
        if s.address == "local":
            kwargs["include_dashboard"] = False
        else:  # the cluster's workers may not have this checkout: ship the studio package
            kwargs["runtime_env"] = {"py_modules": [str(_PROJECT_ROOT / "studio")]}
        try:
            ray.init(address=s.address, **kwargs)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise TrainError(f"could not reach a Ray cluster at {s.address!r} ({type(e).__name__}: {first}); start "
                             "one with `ray start --head`, check the address, or use address 'local' to start Ray "
                             "on this machine") from None
        total = ray.cluster_resources()
        info = ClusterInfo(address=s.address, cpus=float(total.get("CPU", 0)), gpus=float(total.get("GPU", 0)),
                           nodes=len([n for n in ray.nodes() if n.get("Alive")]),
                           resources={k: v for k, v in total.items() if k in s.resources})
        check_fits(s, info)
        self.log(f"connected to Ray at {s.address!r} ({info.describe()}); {s.workers} worker"
                 f"{'s' if s.workers != 1 else ''} with {s.cpus_per_worker:g} CPU and {s.gpus_per_worker:g} GPU each, "
                 f"{'nccl' if s.gpus_per_worker > 0 else 'gloo'}, up to {s.max_failures} restart"
                 f"{'s' if s.max_failures != 1 else ''} after a worker failure")
        return ray

    # ---- training -----------------------------------------------------------------------------------
    def train(self) -> tuple[str, str]:
        """Run to the end; returns (final status, message)."""
        from studio.data import get_dataset
        from studio.training.config import TrainConfig

        cfg = TrainConfig.from_dict(self.rd.config_doc())
        cfg.validate()
        if cfg.device == "cuda" and self.settings.gpus_per_worker <= 0:
            raise TrainError("config device='cuda' needs GPUs on the Ray workers; set gpus_per_worker to 1 (or "
                             "device='auto')")
        data = get_dataset(self.meta["dataset_id"], workspace=self.meta.get("workspace"), seed=cfg.seed,
                           options=self.meta.get("dataset_options") or None)
        ray = self.connect()
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        s = self.settings
        state = {rel: self.rd.file(rel).read_bytes() for rel in STATE_FILES if self.rd.file(rel).exists()}
        relay = _relay_class().remote(state)
        self.relay = relay
        per_worker = {"CPU": s.cpus_per_worker, **s.resources}
        if s.gpus_per_worker > 0:
            per_worker["GPU"] = s.gpus_per_worker
        trainer = TorchTrainer(
            train_rank,
            train_loop_config={"relay": relay, "meta": self.meta, "graph_json": self.rd.graph_file.read_text(),
                               "config": cfg.to_dict(), "data": ray.put(data), "cpus_per_worker": s.cpus_per_worker,
                               "gate": gate_dir()},
            torch_config=TorchConfig(backend="nccl" if s.gpus_per_worker > 0 else "gloo"),
            scaling_config=ScalingConfig(num_workers=s.workers, use_gpu=s.gpus_per_worker > 0,
                                         resources_per_worker=per_worker),
            run_config=RunConfig(name=f"studio-{self.run_id}", storage_path=s.storage_path,
                                 failure_config=FailureConfig(max_failures=s.max_failures)),
        )
        outcome: dict = {}
        done = threading.Event()

        def pump_until_done() -> None:  # fit() stays in the main thread (Ray sets signal handlers there)
            stop_sent = False
            while not done.wait(PUMP_SECONDS):
                try:
                    self.pump()
                    if not stop_sent and self.rd.stop_requested():
                        relay.request_stop.remote()
                        stop_sent = True
                except Exception as e:  # noqa: BLE001 - keep pumping; the final pump reports for good
                    outcome.setdefault("pump_error", e)
            self.store.close()

        pump = threading.Thread(target=pump_until_done, name="studio-ray-pump", daemon=True)
        pump.start()
        try:
            trainer.fit()
        except Exception as e:  # TrainingFailedError once max_failures restarts are spent
            outcome["error"] = e
        finally:
            done.set()
            pump.join()
        self.pump()
        if self.error is not None:
            message, tb = self.error
            raise _RankError(message, tb)
        if self.end is not None:
            return self.end[0], self.end[1]
        e = outcome.get("error")
        why = "; ".join(self.rank_errors[-2:]) or (f"{type(e).__name__}: {e}" if e else "no result")
        raise TrainError(f"the Ray workers failed {s.max_failures + 1} time{'s' if s.max_failures else ''} "
                         f"(max_failures={s.max_failures}); last: {why.splitlines()[0][:400]}")

    def pump(self) -> None:
        """Write everything rank 0 sent since the last call into the store and the run directory."""
        import ray

        for m in ray.get(self.relay.drain.remote()):
            self.handle(m)

    def handle(self, m: tuple) -> None:
        kind = m[0]
        if kind == "rows":
            self.store.write_metrics(self.run_id, m[1])
        elif kind == "update":
            self.store.update_run(self.run_id, **m[1])
        elif kind == "event":
            self.log(m[1], m[2])
        elif kind == "truncate":
            step = m[1]
            dropped = self.store.truncate_metrics(self.run_id, step)
            self.rd.truncate_confusion(step)
            if dropped:
                self.log(f"{dropped} metric rows logged after step {step} are dropped and will be recomputed")
        elif kind == "file":
            from studio.graph import atomic_write_bytes

            atomic_write_bytes(self.rd.file(m[1]), m[2])
        elif kind == "append":
            with open(self.rd.file(m[1]), "ab") as f:
                f.write(m[2])
        elif kind == "start":
            _, rank, world, pid, node, step = m
            if rank == 0:
                self.starts += 1
                if self.starts > 1:
                    self.log(f"Ray Train restarted the worker group after a worker failure (restart {self.starts - 1} "
                             f"of at most {self.settings.max_failures}); training continues from the checkpoint at "
                             f"step {step}", "warning")
            self.log(f"Ray worker rank {rank} of {world} started (pid {pid} on node {node}) at step {step}")
        elif kind == "rank_error":
            _, rank, message, tb = m
            self.rank_errors.append(f"rank {rank}: {message}")
            self.log(f"Ray worker rank {rank} failed: {message.splitlines()[0][:300]}", "warning")
            with open(self.rd.log_file, "a") as f:
                f.write(tb)
        elif kind == "error":
            self.error = (m[1], m[2])
        elif kind == "end":
            self.end = (m[1], m[2])


class _RankError(TrainError):
    """A StudioError raised in the ranks (the same on each): its message, with the rank's traceback."""

    def __init__(self, message: str, tb: str = ""):
        super().__init__(message)
        self.rank_traceback = tb

    def __reduce__(self):
        return (type(self), (str(self), self.rank_traceback))


def run(run_dir: str | Path) -> str:
    """Drive the run in `run_dir` on Ray to a final status and return it."""
    from studio.training.worker import run_process

    def train(rd, meta, store, log):
        try:
            reason, message = Driver(rd, meta, store, log).train()
            return reason, message, store.get_run(meta["run_id"]).step
        finally:
            if "ray" in sys.modules:
                try:
                    sys.modules["ray"].shutdown()
                except Exception:  # noqa: BLE001 - shutting down after a failure must not hide the status
                    pass

    return run_process(run_dir, train)


def main(argv: list[str] | None = None) -> int:
    from studio.training.worker import process_main

    return process_main(run, "studio.training.distributed", argv)


if __name__ == "__main__":
    sys.exit(main())
