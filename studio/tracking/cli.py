"""`python -m studio runs export RUN_ID --to tensorboard DIR | --to mlflow TRACKING_URI [--experiment NAME]`."""

from __future__ import annotations

import argparse
import json
import sys


def add_export_parser(runs: argparse.ArgumentParser) -> None:
    """The `export` subcommand under `runs` (which keeps listing runs when given none)."""
    sub = runs.add_subparsers(dest="runs_command", metavar="export")
    e = sub.add_parser("export", help="write a finished run to TensorBoard event files or an MLflow tracking store")
    e.add_argument("run_id")
    e.add_argument("--to", nargs=2, required=True, metavar=("tensorboard|mlflow", "DIR|TRACKING_URI"),
                   help="tensorboard DIR: event files in DIR/<run_id>; mlflow URI: a run in that tracking store "
                        "(sqlite:///mlflow.db works offline, or http://HOST:5000); exporting again does not duplicate")
    e.add_argument("--experiment", default=None, help="MLflow experiment (default 'Neural Studio')")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from studio.tracking.export import DEFAULT_EXPERIMENT, DESTINATIONS, export_run

    to, target = args.to
    if to not in DESTINATIONS:
        print(f"error: --to {to!r} is not a destination; use --to tensorboard DIR or --to mlflow TRACKING_URI",
              file=sys.stderr)
        return 2
    if args.experiment is not None and to != "mlflow":
        print("error: --experiment names an MLflow experiment; use it with --to mlflow", file=sys.stderr)
        return 2
    result = export_run(args.run_id, to, target, experiment=args.experiment or DEFAULT_EXPERIMENT)
    if args.json:
        print(json.dumps({"run_id": args.run_id, "to": to, "where": result.where, "action": result.action,
                          "metrics": result.metrics, "mlflow_run_id": result.mlflow_run_id}))
    else:
        print(result.message)
    return 0
