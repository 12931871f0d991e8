"""The sweep process: `python -m studio.sweeps.runner SWEEP_DIR` runs one sweep to its end and exits.

It asks Optuna for trials (ask/tell), launches each as an ordinary run through
`studio.runs.launcher.start_run` (tagged with the sweep id, the trial number and its parameters),
keeps at most `parallel` trials under way, reads each trial's objective from the run store at
every evaluation and reports it to Optuna; a trial the pruner rejects is stopped with the reason
`pruned` (the worker ends it as `pruned`, keeping what it logged). It never asks for more trials
than the sweep has.

Killed at any moment and started again, it loses nothing: the study (study.db) holds every trial
asked for, the run store every trial launched (found by sweep id and trial number), and the trial
workers are processes of their own that keep running meanwhile. A trial asked for but not yet
launched is launched with the parameters it already has; a stopped or lost trial run is resumed
from its checkpoint.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from studio.analysis import analyze
from studio.errors import GraphError, StorageError, StudioError
from studio.runs.launcher import reconcile, resume_run, start_run, stop_run
from studio.runs.store import ACTIVE_STATUSES, RunRecord, Store
from studio.sweeps.control import LOG_FILE, STOP_FILE, SWEEP_FILE, trial_runs, write_state
from studio.sweeps.spec import SweepSpec, load_sweep, trial_inputs
from studio.sweeps.study import open_study, suggest

POLL_SECONDS = 0.1  # a cheap store read per live trial; a pruned trial stops within a few steps
MAX_AUTO_RESUMES = 2  # a trial whose worker vanished (lost) is resumed this many times, then failed


@dataclass
class Live:
    """A trial under way: its Optuna handle, its run, the last step reported and whether it was pruned."""

    trial: optuna.Trial
    run_id: str
    last_step: int = -1
    prune_requested: bool = False
    resumes: int = 0


class SweepRunner:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory).resolve()
        self.sweep_id = self.dir.name
        self.spec: SweepSpec = load_sweep(self.dir / SWEEP_FILE)
        self.store = Store()
        self.study = open_study(self.dir, self.spec, sweep_id=self.sweep_id)
        self.live: dict[int, Live] = {}
        self.stopping = False

    # ---- logging --------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        with open(self.dir / LOG_FILE, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> str:
        self.adopt()
        while True:
            reconcile(self.store)
            self.poll()
            if not self.stopping and (self.dir / STOP_FILE).exists():
                self.stopping = True
                self.log("stop requested: stopping the trials under way (they keep their checkpoints)")
                for live in self.live.values():
                    self._stop(live.run_id)
            if self.stopping:
                if not self.live:
                    return "stopped"
            else:
                self.fill()
                if not self.live and len(self.study.trials) >= self.spec.trials:
                    return "completed"
            time.sleep(POLL_SECONDS)

    def adopt(self) -> None:
        """Take back the trials a previous sweep process left under way (after a stop or a kill)."""
        runs = trial_runs(self.store, self.sweep_id)
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = optuna.Trial(self.study, frozen._trial_id)
            run = runs.get(frozen.number)
            if run is None:  # asked for, never launched: launch it with the parameters it has
                self.log(f"trial {frozen.number}: was not launched before the sweep stopped; launching it now")
                self.launch(trial)
                continue
            live = Live(trial, run.id, last_step=max(frozen.intermediate_values, default=-1),
                        resumes=int(frozen.user_attrs.get("resumes", 0)))
            self.live[frozen.number] = live
            if run.status in ("stopped", "lost"):
                self._resume(live, run)
            else:
                self.log(f"trial {frozen.number}: run {run.id} is {run.status}; following it again")

    def fill(self) -> None:
        """Ask for new trials while a slot is free and the sweep has fewer trials than asked."""
        while len(self.live) < self.spec.parallel and len(self.study.trials) < self.spec.trials:
            self.launch(self.study.ask())

    def launch(self, trial: optuna.Trial) -> None:
        params = suggest(trial, self.spec.space)
        number = trial.number
        try:
            graph, config = trial_inputs(self.spec, params)
            # A value that breaks the graph (shapes no longer fit) fails the trial with the analysis
            # message at once, without starting a worker that could only fail the same way.
            errors = analyze(graph).errors
            if errors:
                raise GraphError(errors)
            run_id = start_run(graph, self.spec.data, config, name=f"{self.spec.name} · trial {number}",
                               dataset_options=self.spec.data_options or None, store=self.store,
                               sweep_id=self.sweep_id, tags={"trial": number, **params},
                               backend=self.spec.backend_settings())
        except StorageError:  # the run store failed: every later trial would too, so the sweep ends with why
            raise
        except StudioError as e:  # e.g. settings that do not go together: the trial fails, the sweep goes on
            trial.set_user_attr("error", str(e))
            self.study.tell(trial, state=TrialState.FAIL)
            self.log(f"trial {number} {params}: not launched: {e}")
            return
        trial.set_user_attr("run_id", run_id)
        self.live[number] = Live(trial, run_id)
        self.log(f"trial {number} {params}: run {run_id}")

    def poll(self) -> None:
        for number, live in list(self.live.items()):
            run = self.store.get_run(live.run_id)
            self._report(live, run)
            if run.status not in ACTIVE_STATUSES:
                self.finish(number, live, run)

    def _report(self, live: Live, run: RunRecord) -> None:
        """Report every new value of the objective; stop the run if the pruner says so."""
        rows = self.store.read_metrics(live.run_id, since_step=live.last_step, keys=[self.spec.objective])
        reported = False
        for m in rows:
            if m.step > live.last_step and math.isfinite(m.value):
                live.trial.report(m.value, m.step)
                reported = True
            live.last_step = max(live.last_step, m.step)
        if (reported and run.status == "running" and self.spec.pruner != "none" and not live.prune_requested
                and live.trial.should_prune()):
            live.prune_requested = True
            self.log(f"trial {live.trial.number}: pruned at step {live.last_step} ({self.spec.objective} "
                     f"{rows[-1].value:.4g}); stopping run {live.run_id}")
            self._stop(live.run_id, reason="pruned")

    def finish(self, number: int, live: Live, run: RunRecord) -> None:
        trial = live.trial
        if run.status == "completed":
            value = self.store.latest_metrics(live.run_id).get(self.spec.objective)
            if value is None or not math.isfinite(value):
                trial.set_user_attr("error", f"the run completed without logging a finite {self.spec.objective!r} "
                                             f"(it logged {', '.join(self.store.metric_keys(live.run_id))})")
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, value)
        elif run.status == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        elif run.status in ("stopped", "lost") and self.stopping:
            pass  # left RUNNING in the study: resume_sweep resumes this run
        elif run.status == "lost" and live.resumes < MAX_AUTO_RESUMES:
            self._resume(live, run)
            return
        else:  # failed, diverged, stopped by hand, lost again and again
            why = run.error or f"the run ended {run.status}"
            trial.set_user_attr("error", why if run.status != "stopped" else "stopped by hand outside the sweep")
            self.study.tell(trial, state=TrialState.FAIL)
        self.log(f"trial {number}: run {run.id} ended {run.status}")
        del self.live[number]

    def _resume(self, live: Live, run: RunRecord) -> None:
        live.resumes += 1
        live.trial.set_user_attr("resumes", live.resumes)
        self.log(f"trial {live.trial.number}: run {run.id} is {run.status}; resuming it from its checkpoint")
        resume_run(run.id, store=self.store)

    def _stop(self, run_id: str, reason: str | None = None) -> None:
        try:
            stop_run(run_id, store=self.store, reason=reason)
        except StudioError:
            pass  # it ended meanwhile: poll() sees its final status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m studio.sweeps.runner SWEEP_DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0]).resolve()
    lock = open(directory / "lock", "w")
    try:  # one process per sweep: a second resume while one runs must not double the trials
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"sweep {directory.name} already has a running process", file=sys.stderr)
        return 3
    write_state(directory, status="running", pid=os.getpid(), started=time.time(), error=None)
    # SIGTERM (e.g. the machine shutting down) stops like stop_sweep: the trials keep their checkpoints.
    signal.signal(signal.SIGTERM, lambda *_: (directory / STOP_FILE).touch())
    status, error = "failed", None
    try:
        runner = SweepRunner(directory)
        status = runner.run()
        runner.log(f"sweep {status}")
    except BaseException as e:  # the sweep always ends with a recorded status, never a silent exit
        error = str(e) if isinstance(e, StudioError) else f"{type(e).__name__}: {e}"
        with open(directory / LOG_FILE, "a") as f:
            f.write(traceback.format_exc())
    write_state(directory, status=status, ended=time.time(), error=error)
    (directory / STOP_FILE).unlink(missing_ok=True)
    return 0 if status in ("completed", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
