"""`python -m studio sweep SWEEP.json [--json]`: start a sweep and follow it to its end.

One line per finished trial on stderr; with --json the last thing printed on stdout is the sweep
summary (studio.sweeps.results.sweep_summary). Ctrl-C asks the sweep to stop (its trials keep their
checkpoints; `python -m studio sweep --resume SWEEP_ID` continues it); a second Ctrl-C detaches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

POLL_SECONDS = 1.0
_ENDED = ("completed", "stopped", "failed", "lost")


def add_parser(sub) -> None:
    s = sub.add_parser("sweep", help="run a hyperparameter / architecture sweep (format studio.sweep/1) to its end")
    s.add_argument("sweep", help="the sweep file; with --resume, the id of the sweep to continue")
    s.add_argument("--resume", action="store_true", help="continue a stopped or lost sweep by its id")
    s.add_argument("--json", action="store_true", help="print the sweep summary as one JSON object last")
    s.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from studio.sweeps.control import get_sweep, resume_sweep, start_sweep, sweep_dir
    from studio.sweeps.spec import load_sweep

    if args.resume:
        sweep_id = args.sweep
        resume_sweep(sweep_id)
    else:
        spec = load_sweep(args.sweep)
        sweep_id = start_sweep(spec)
    print(f"sweep {sweep_id}: {get_sweep(sweep_id).name} (log: {sweep_dir(sweep_id) / 'log.txt'})", file=sys.stderr)
    summary = follow(sweep_id)
    if args.json:
        print(json.dumps(summary))
    else:
        best = summary["best"]
        print(f"sweep {sweep_id} {summary['status']}: "
              + (f"best trial {best['number']} (run {best['run_id']}) {summary['objective_name']}="
                 f"{best['objective']:.4g} with {best['params']}" if best else "no completed trial"))
    if summary.get("error"):
        print(f"error: {summary['error']}", file=sys.stderr)
    return 0 if summary["status"] == "completed" else 1


def follow(sweep_id: str) -> dict:
    """Poll until the sweep process ends; print each trial as it finishes; returns the final summary."""
    from studio.sweeps.control import stop_sweep, wait_sweep_process
    from studio.sweeps.results import sweep_summary

    shown: set[int] = set()
    interrupted = False
    while True:
        try:
            summary = sweep_summary(sweep_id)
            for t in summary["trials"]:
                if t["number"] not in shown and t["status"] not in ("queued", "running"):
                    shown.add(t["number"])
                    value = "–" if t["objective"] is None else f"{t['objective']:.4g}"
                    print(f"trial {t['number']} {t['status']}: {summary['objective_name']}={value} {t['params']}"
                          + (f" ({t['error']})" if t["error"] and t["status"] != "completed" else ""), file=sys.stderr)
            if summary["status"] in _ENDED:
                wait_sweep_process(sweep_id, timeout=30)
                return sweep_summary(sweep_id)
            time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            if interrupted:
                print(f"\ndetached; sweep {sweep_id} keeps going in the background", file=sys.stderr)
                raise
            interrupted = True
            print(f"\nstopping sweep {sweep_id} (Ctrl-C again to detach)...", file=sys.stderr)
            stop_sweep(sweep_id)
