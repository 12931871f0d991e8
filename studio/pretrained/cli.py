"""`python -m studio pretrained import PATH [--name NAME] [--labels FILE] [--json]`,
`python -m studio pretrained download resnet18|gpt2 [--name NAME] [--json]` (DESIGN.md's contract) and
`python -m studio pretrained labels RUN FILE [--json]` (class names for an imported classifier).

--json prints {"run_id", "graph", "architecture", "params"}; without it, the run and what was mapped.
Download progress goes to stderr (a bar on a terminal, a line per 10% otherwise).
"""

from __future__ import annotations

import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("pretrained", help="import a torchvision ResNet (.pth) or Hugging Face GPT-2 checkpoint as a "
                                          "run of status imported, or download one and import it")
    actions = p.add_subparsers(dest="action", required=True)
    i = actions.add_parser("import", help="import a .pth state dict (ResNet) or a folder with config.json + "
                                          "model.safetensors (GPT-2)")
    i.add_argument("path")
    i.add_argument("--name", help="the run's name (default: the architecture)")
    i.add_argument("--image-size", type=int, default=224, help="ResNet: the graph's input size (default 224)")
    i.add_argument("--seq-len", type=int, help="GPT-2: the graph's context length (default: n_positions)")
    i.add_argument("--labels", metavar="FILE", help="class names stored with a classifier: imagenet_classes.txt, "
                                                   "'N, name' lines, imagenet_class_index.json, a JSON list or a "
                                                   "config.json with id2label (default: such a file beside PATH)")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_import)
    d = actions.add_parser("download", help="download from the publisher (checksum checked), then import")
    d.add_argument("arch", choices=("resnet18", "gpt2"))
    d.add_argument("--name", help="the run's name (default: the architecture)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_download)
    lb = actions.add_parser("labels", help="give an imported classifier run its class names from a file")
    lb.add_argument("run_id")
    lb.add_argument("file")
    lb.add_argument("--json", action="store_true")
    lb.set_defaults(func=cmd_labels)


def _report(imp, as_json: bool) -> int:
    if as_json:
        print(json.dumps(imp.to_json()))
        return 0
    print(f"imported {imp.architecture} as run {imp.run_id} ({imp.params:,} parameters, status imported)")
    for note in imp.notes:
        print(f"  {note}")
    print(f"  graph: {imp.graph_path}")
    return 0


def cmd_import(args) -> int:
    from studio.pretrained.importer import import_checkpoint

    return _report(import_checkpoint(args.path, name=args.name, image_size=args.image_size, seq_len=args.seq_len,
                                     labels=args.labels), args.json)


def cmd_labels(args) -> int:
    from pathlib import Path

    from studio.pretrained.labels import set_labels

    names = set_labels(args.run_id, args.file)
    if args.json:
        print(json.dumps({"run_id": args.run_id, "file": str(Path(args.file).resolve()), "count": len(names)}))
    else:
        print(f"run {args.run_id}: {len(names):,} class names from {args.file} (e.g. 0 {names[0]})")
    return 0


class _Progress:
    """Download progress on stderr: a bar redrawn in place on a terminal, a line each 10% otherwise."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.shown: dict[str, int] = {}

    def __call__(self, done: int, total: int | None, name: str) -> None:
        if total:
            tenth = done * 10 // total
            if self.tty:
                bar = "#" * (done * 30 // total)
                print(f"\r{name}: [{bar:<30}] {done / 1e6:,.1f}/{total / 1e6:,.1f} MB", end="", file=sys.stderr)
                if done >= total:
                    print(file=sys.stderr)
            elif self.shown.get(name, -1) < tenth:
                self.shown[name] = tenth
                print(f"{name}: {done / 1e6:,.1f}/{total / 1e6:,.1f} MB ({tenth * 10}%)", file=sys.stderr)


def cmd_download(args) -> int:
    from studio.pretrained.downloads import download

    return _report(download(args.arch, name=args.name, progress=_Progress()), args.json)
