"""The command line: `python -m studio check|summary|train|export|import|runs|stop|resume`.

See DESIGN.md's CLI contract. Every command prints a clear message and exits non-zero on bad
input; a traceback is never the only thing a user sees.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys

from studio.errors import GraphError, StudioError


def _load(path: str):
    from studio.graph import load_graph

    return load_graph(path)


def cmd_check(args: argparse.Namespace) -> int:
    from studio.analysis import analyze

    try:
        issues = analyze(_load(args.graph), param_budget=args.param_budget).issues
    except GraphError as e:
        issues = e.issues
    errors = [i for i in issues if i.severity == "error"]
    if args.json:
        print(json.dumps({"valid": not errors, "issues": [i.to_dict() for i in issues]}, indent=2))
    else:
        for i in issues:
            print(f"{i}" if i.severity == "error" else f"{i} (warning)")
        if not errors:
            print(f"ok: {args.graph} is valid" + (f" with {len(issues)} warning(s)" if issues else ""))
    return 1 if errors else 0


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def cmd_summary(args: argparse.Namespace) -> int:
    from studio.analysis import analyze

    try:
        a = analyze(_load(args.graph), param_budget=args.param_budget)
    except GraphError as e:
        print(str(e), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(a.summary_dict(expand=args.expand)))
    else:
        rows = [("id", "type", "output shape", "params", "FLOPs")]
        for nid, n in a.summary_items(args.expand):
            rows.append((nid, n.type, str(n.output_shape), _fmt_int(n.params), _fmt_int(n.flops)))
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        for k, r in enumerate(rows):
            cells = zip(r, widths, strict=True)
            print("  ".join(v.ljust(w) if c < 3 else v.rjust(w) for c, (v, w) in enumerate(cells)))
            if k == 0:
                print("  ".join("-" * w for w in widths))
        print(f"total params: {_fmt_int(a.total_params)}   total FLOPs per sample: {_fmt_int(a.total_flops)}")
        if a.frozen:
            print(f"trainable params: {_fmt_int(a.trainable_params)} (frozen: {', '.join(sorted(a.frozen))})")
    for i in a.issues:
        print(f"{i}" + (" (warning)" if i.severity == "warning" else ""), file=sys.stderr)
    return 1 if a.errors else 0


def cmd_export(args: argparse.Namespace) -> int:
    from studio import export

    run_id = getattr(args, "run", None)
    if (args.graph is None) == (run_id is None):
        print("error: export takes either a graph file (untrained weights) or --run RUN_ID (a run's trained "
              f"weights), got graph={args.graph!r} and --run={run_id!r}", file=sys.stderr)
        return 2
    if run_id is None:
        if getattr(args, "weights", None) is not None:
            print("error: --weights picks a run's checkpoint; use it with --run RUN_ID", file=sys.stderr)
            return 2
        path = export.write_graph_export(_load(args.graph), args.format, args.output)
        print(f"wrote {path} (untrained: the graph's seeded initial weights; export a run with --run for "
              "trained ones)")
        return 0
    paths, which = export.write_run_export(run_id, args.format, args.output, args.weights)
    print(f"wrote {', '.join(str(p) for p in paths)} (run {run_id}, {which}.pt weights)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from studio.fximport import import_from_file

    graph, unmapped = import_from_file(args.file, args.class_name, input_shape=args.input_shape,
                                       input_dtype=args.input_dtype)
    if unmapped:
        print("these parts of the module do not map onto the palette:", file=sys.stderr)
        for line in unmapped:
            print(f"  {line}", file=sys.stderr)
        return 1
    from studio.graph import save_graph

    save_graph(graph, args.output)
    print(f"wrote {args.output}")
    return 0


def data_option(text: str) -> tuple[str, object]:
    """`KEY=VALUE` of --data-option as (key, value): the value parsed as JSON when it is JSON (28, true,
    [1, 2]), else kept as a string (input)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--data-option {text!r} is not KEY=VALUE; write e.g. "
                                         "--data-option target=input or --data-option image_size=28")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def _training(name: str):
    def run(args: argparse.Namespace) -> int:
        from studio.training import cli

        return getattr(cli, name)(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    from studio.runs import backends

    p = argparse.ArgumentParser(prog="python -m studio", description="Neural Studio command line.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="validate a graph: exit 0 valid, 1 invalid; one line per issue")
    c.add_argument("graph")
    c.add_argument("--json", action="store_true")
    c.add_argument("--param-budget", type=float, default=1e9)
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("summary", help="per node: output shape, params, FLOPs; totals")
    s.add_argument("graph")
    s.add_argument("--json", action="store_true")
    s.add_argument("--param-budget", type=float, default=1e9)
    s.add_argument("--expand", action="store_true", help="list every node inside block instances by path")
    s.set_defaults(func=cmd_summary)

    from studio.training.config import settings_help

    t = sub.add_parser("train", help="train a graph on a dataset in a background worker and follow it",
                       epilog=settings_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("graph")
    t.add_argument("--data", metavar="DATASET_ID",
                   help="the dataset; left out: the graph's own default (its template's), or that dataset's "
                        "offline stand-in when it must be downloaded and is not here (the command says which)")
    t.add_argument("--data-option", type=data_option, action="append", metavar="KEY=VALUE",
                   help="a dataset option, repeatable; e.g. target=input (the reconstruction form, for "
                        "autoencoders) or image_size=28 (shapes); values are read as JSON when they can be")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (0 = train for --epochs)")
    t.add_argument("--config", metavar="FILE.json",
                   help="training settings from a TrainConfig JSON document (partial allowed; a run's config.json "
                        "works); over the template's and the task's defaults")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="one training setting, repeatable, typed as on the Train page: --set schedule=cosine "
                        "--set betas=0.9,0.99; applied last (the settings are listed below)")
    t.add_argument("--name")
    t.add_argument("--teacher", metavar="RUN_ID", help="distil from this finished run (same output shape)")
    t.add_argument("--temperature", type=float, help="distillation temperature (default 4)")
    t.add_argument("--distill-weight", type=float, help="weight of the distillation term (default 0.7)")
    t.add_argument("--init-from", metavar="RUN_ID", help="warm start: copy this run's weights into the nodes "
                                                          "with the same id and shapes")
    t.add_argument("--backbone-lr-scale", type=float, metavar="X",
                   help="fine-tuning: the nodes --init-from loads train at lr * X, new or re-initialised ones (a "
                        "replaced head) at lr (default 1; 0 keeps the loaded weights as they are)")
    t.add_argument("--train-last-blocks", type=int, metavar="N",
                   help="fine-tuning: train only the head and the last N blocks, freeze the rest (0 = the head "
                        "only; default -1 = off)")
    t.add_argument("--json", action="store_true")
    t.add_argument("--backend", choices=tuple(backends.BACKENDS), default=backends.DEFAULT_BACKEND,
                   help="where the run trains: this machine (default) or a Ray cluster (data parallel)")
    t.add_argument("--ray-address", default="local", metavar="local|auto|ray://HOST:PORT",
                   help="Ray: 'local' starts Ray on this machine, 'auto' joins the cluster running here, "
                        "ray://HOST:10001 a remote one")
    t.add_argument("--workers", type=int, default=1, help="Ray: data-parallel workers (ranks)")
    t.add_argument("--cpus-per-worker", type=float, default=1.0)
    t.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray: > 0 trains on CUDA with NCCL")
    t.add_argument("--max-failures", type=int, default=2,
                   help="Ray: restarts from the last checkpoint after a worker dies")
    t.add_argument("--storage-path", help="Ray: Ray Train's storage, shared by every node of a multi-node "
                                          "cluster (a shared directory or s3://...)")
    t.add_argument("--tensorboard", metavar="DIR",
                   help="also write TensorBoard event files while training, into DIR/<run_id> (tensorboard --logdir "
                        "DIR shows them); needs the tensorboardX package")
    t.set_defaults(func=_training("cmd_train"))

    e = sub.add_parser("export", help="export a graph (untrained) or a run's trained model (--run) as PyTorch "
                                      "code, a PyTorch 2 program (.pt2), ONNX or TorchScript (legacy)")
    e.add_argument("graph", nargs="?", help="a graph file; its weights are the seeded initial ones (untrained)")
    e.add_argument("--run", metavar="RUN_ID", help="export this run's trained model instead of a graph file")
    e.add_argument("--weights", choices=("best", "last"),
                   help="with --run: the checkpoint to export (default: best when the run has one, else last)")
    e.add_argument("--format", required=True, choices=("code", "pt2", "onnx", "torchscript"),
                   help="code: the model's .py (with --run, plus NAME.weights.pt beside it); pt2: torch.export "
                        "program, load with torch.export.load; torchscript is legacy")
    e.add_argument("-o", "--output", required=True)
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("import", help="trace an nn.Module class from a Python file into a graph "
                                      "(this EXECUTES the file's code: only import files you trust)")
    i.add_argument("file")
    i.add_argument("--class", dest="class_name", required=True, help="the nn.Module subclass to instantiate")
    i.add_argument("--input-shape", required=True, type=lambda s: [int(v) for v in s.split(",")],
                   help="per-sample input shape, e.g. 1,28,28")
    i.add_argument("--input-dtype", default="float32", choices=("float32", "int64"))
    i.add_argument("-o", "--output", required=True)
    i.set_defaults(func=cmd_import)

    from studio.deploy.cli import add_compress_parser

    add_compress_parser(sub)

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_training("cmd_runs"))
    _add_runs_export(r)
    for name, helptext in (("stop", "stop a run after its current step (it keeps a checkpoint)"),
                           ("resume", "resume a stopped, failed, diverged or lost run from its last checkpoint")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("run_id")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=_training(f"cmd_{name}"))
    _add_sweep(sub)
    _add_explain(sub)
    _add_pretrained(sub)
    return p


def _add_runs_export(runs) -> None:
    from studio.tracking.cli import add_export_parser

    add_export_parser(runs)


def _add_sweep(sub) -> None:
    from studio.sweeps.cli import add_parser

    add_parser(sub)


def _add_explain(sub) -> None:
    from studio.explain.cli import add_parser

    add_parser(sub)


def _add_pretrained(sub) -> None:
    from studio.pretrained.cli import add_parser

    add_parser(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, read-only workspace, I/O error: said plainly, never a traceback
        from studio.oserrors import describe_os_error

        print(f"error: {describe_os_error(e, args.command, e.filename or 'the workspace')}", file=sys.stderr)
        return 1
    except sqlite3.Error as e:
        from studio.oserrors import describe_sqlite_error

        print(f"error: {describe_sqlite_error(e, args.command, 'the run store (studio.db)')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
