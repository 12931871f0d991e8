"""`python -m studio explain RUN_ID --method M [--sample I] [--target C] [--json]` (DESIGN.md's contract).

--json prints one object: method, target, input, baseline and attributions (each shaped like one
sample; token models: one attribution per token), plus predicted, position, the method's check and the
settings used. Without --json: the prediction, the check, and the inputs that weigh most.
"""

from __future__ import annotations

import argparse
import json


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of sizes; write e.g. 1,4,4") from None


def add_parser(sub) -> None:
    from studio.explain.baselines import BASELINES  # torch-free: the parser stays fast
    from studio.explain.methods import METHODS

    e = sub.add_parser("explain", help="attribute a run's prediction on one sample to its input (Captum: integrated "
                                       "gradients, GradientSHAP, occlusion, saliency, LIME, KernelSHAP, Grad-CAM)")
    e.add_argument("run_id")
    e.add_argument("--method", required=True, choices=tuple(METHODS))
    e.add_argument("--sample", type=int, default=0, help="index into the split (default 0)")
    e.add_argument("--split", default="val", choices=("val", "test", "train"))
    e.add_argument("--target", type=int, help="the class (or token id) explained; default: the predicted one")
    e.add_argument("--position", type=int, help="sequence and language models: the output position (default: last)")
    e.add_argument("--baseline", choices=BASELINES, help="default: zeros, or the padding token for token models")
    e.add_argument("--pad-token", type=int, help="the 'pad' baseline's token id (default: <pad>, else the commonest)")
    e.add_argument("--weights", choices=("best", "last"), help="the checkpoint (default: best when there is one)")
    e.add_argument("--steps", type=int, default=64, help="integrated gradients: points on the path")
    e.add_argument("--samples", type=int, default=64, help="GradientSHAP points; LIME / KernelSHAP perturbations")
    e.add_argument("--window", type=_ints, help="occlusion window over the sample's dims, e.g. 1,4,4")
    e.add_argument("--stride", type=_ints, help="occlusion stride, e.g. 1,2,2")
    e.add_argument("--batch-size", type=int, default=32, help="rows per forward inside the method (bounds memory)")
    e.add_argument("--layer", help="Grad-CAM's layer / the token models' embedding, by path (e.g. layer3.1)")
    e.add_argument("--no-cache", action="store_true", help="compute again instead of reading the cache")
    e.add_argument("--input", metavar="FILE", help="explain this input instead of a dataset sample: an image (resized "
                   "to the model's input) or a .npy / .pt tensor of the input's shape")
    e.add_argument("--text", help="token models: explain this text, through the run's tokenizer (or its dataset's "
                                  "vocabulary), instead of a dataset sample")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    import numpy as np

    from studio.explain.core import Settings
    from studio.explain.runs import explain_run

    settings = Settings(baseline=args.baseline, n_steps=args.steps, n_samples=args.samples, window=args.window,
                        stride=args.stride, internal_batch_size=args.batch_size, layer=args.layer,
                        position=args.position, pad_token=args.pad_token)
    e = explain_run(args.run_id, args.method, sample=args.sample, split=args.split, target=args.target,
                    settings=settings, which=args.weights, use_cache=not args.no_cache, input_file=args.input,
                    text=args.text)
    if args.json:
        print(json.dumps(e.to_dict()))
        return 0
    given = f"--input {args.input}" if args.input else (f"--text {args.text!r}" if args.text is not None else None)
    print(f"{args.method} on {given or f'{args.split}[{args.sample}]'} of run {args.run_id}: target {e.target}, "
          f"predicted {e.predicted}" + (f", position {e.position}" if e.position is not None else ""))
    if e.check is not None:
        print(f"check: {e.check.sentence()}")
    a = e.attributions.reshape(-1)
    top = np.argsort(-np.abs(a))[:5]
    shape = e.attributions.shape
    if len(shape) > 1:
        where = [str(tuple(int(v) for v in np.unravel_index(i, shape))) for i in top]
    elif e.input.dtype.kind == "f":  # a tabular row: the columns by name
        from studio.explain.runs import feature_names
        from studio.inspection import load_run

        names = feature_names(load_run(args.run_id).dataset_id, shape[0])
        where = [names[i] for i in top]
    else:
        where = [f"token {int(i)}" for i in top]
    print("largest attributions: " + ", ".join(f"{w}: {a[i]:+.4g}" for w, i in zip(where, top, strict=True)))
    return 0
