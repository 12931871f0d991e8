"""The closed-form layer rules (each spec's shape_rule, studio.layers.rules) against PyTorch on the meta
device, the oracle, at many random settings; the dynamo-free FLOP counter against FlopCounterMode; and a
fresh process's analysis of the CNN templates without torch._dynamo."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from studio import analysis
from studio.flop_count import FlopCounter
from studio.layers import REGISTRY, InSpec
from studio.layers.rules import closed_form

ROOT = Path(__file__).resolve().parents[1]


def _size(r: random.Random, n: int, lo: int, hi: int):
    return r.randint(lo, hi) if r.random() < 0.5 else [r.randint(lo, hi) for _ in range(n)]


def _conv(r: random.Random, n: int, transposed: bool = False):
    g = r.choice([1, 1, 2, 3])
    c = g * r.randint(1, 4)
    p = {"out_channels": g * r.randint(1, 4), "kernel_size": _size(r, n, 1, 5), "stride": _size(r, n, 1, 3),
         "dilation": _size(r, n, 1, 2), "groups": g, "bias": r.random() < 0.5}
    if transposed:
        p["padding"] = _size(r, n, 0, 2)
        p["output_padding"] = _size(r, n, 0, 2)
    else:
        p["padding"] = r.choice([0, 1, 2, "same", "valid", [r.randint(0, 2) for _ in range(n)]])
        p["padding_mode"] = r.choice(["zeros", "zeros", "reflect", "circular"])
    return p, (InSpec((c, *[r.randint(1, 12) for _ in range(n)]), "float32"),)


def _pool(r: random.Random, n: int, kind: str):
    p = {"kernel_size": _size(r, n, 1, 4), "stride": r.choice([None, _size(r, n, 1, 3)]),
         "padding": _size(r, n, 0, 2), "ceil_mode": r.random() < 0.5}
    if kind == "max":
        p["dilation"] = _size(r, n, 1, 2)
    else:
        p["count_include_pad"] = r.random() < 0.5
    return p, (InSpec((r.randint(1, 4), *[r.randint(1, 12) for _ in range(n)]), "float32"),)


def _recurrent(r: random.Random, extra: dict | None = None):
    p = {"hidden_size": r.randint(1, 6), "num_layers": r.randint(1, 3), "return_sequences": r.random() < 0.5,
         "bidirectional": r.random() < 0.5, "dropout": 0.0, "bias": r.random() < 0.5, **(extra or {})}
    return p, (InSpec((r.randint(1, 4), r.randint(1, 6)), "float32"),)


def _shape(r: random.Random, lo: int = 1, hi: int = 4) -> tuple[int, ...]:
    return tuple(r.randint(1, 5) for _ in range(r.randint(lo, hi)))


def _flatten(r: random.Random):
    s = _shape(r)
    return {"start_dim": r.randint(-len(s), len(s) - 1), "end_dim": r.randint(-len(s), len(s) - 1)}, (
        InSpec(s, "float32"),)


def _reshape(r: random.Random):
    s = _shape(r)
    n = 1
    for d in s:
        n *= d
    target = [d for d in _shape(r, 1, 3)]
    if r.random() < 0.6:  # a valid target with one inferred size
        target = [n] if len(target) == 1 else [-1, *([1] * (len(target) - 1))]
    return {"shape": target}, (InSpec(s, "float32"),)


def _permute(r: random.Random):
    s = _shape(r)
    dims = list(range(len(s)))
    r.shuffle(dims)
    return {"dims": dims if r.random() < 0.9 else dims + [len(s)]}, (InSpec(s, "float32"),)


def _concat(r: random.Random):
    s = _shape(r)
    d = r.randint(-len(s), len(s) - 1)
    ins = []
    for _ in range(r.randint(2, 3)):
        t = list(s)
        t[d] = r.randint(1, 4)
        ins.append(InSpec(tuple(t), "float32"))
    return {"dim": d}, tuple(ins)


GENERATORS = {
    "Conv1d": lambda r: _conv(r, 1), "Conv2d": lambda r: _conv(r, 2),
    "ConvTranspose2d": lambda r: _conv(r, 2, transposed=True),
    "MaxPool1d": lambda r: _pool(r, 1, "max"), "MaxPool2d": lambda r: _pool(r, 2, "max"),
    "AvgPool1d": lambda r: _pool(r, 1, "avg"), "AvgPool2d": lambda r: _pool(r, 2, "avg"),
    "AdaptiveAvgPool1d": lambda r: ({"output_size": r.randint(1, 5)}, (InSpec((r.randint(1, 4), r.randint(1, 12)),
                                                                              "float32"),)),
    "AdaptiveAvgPool2d": lambda r: ({"output_size": _size(r, 2, 1, 5)},
                                    (InSpec((r.randint(1, 4), r.randint(1, 12), r.randint(1, 12)), "float32"),)),
    "Linear": lambda r: ({"out_features": r.randint(1, 9), "bias": r.random() < 0.5}, (InSpec(_shape(r), "float32"),)),
    "BatchNorm1d": lambda r: ({"eps": 1e-5, "momentum": 0.1, "affine": r.random() < 0.5,
                               "track_running_stats": r.random() < 0.5},
                              (InSpec(_shape(r, 1, 2), "float32"),)),
    "BatchNorm2d": lambda r: ({"eps": 1e-5, "momentum": 0.1, "affine": r.random() < 0.5,
                               "track_running_stats": r.random() < 0.5}, (InSpec(_shape(r, 3, 3), "float32"),)),
    "LayerNorm": lambda r: ({"eps": 1e-5, "elementwise_affine": r.random() < 0.5, "bias": r.random() < 0.5},
                            (InSpec(_shape(r), "float32"),)),
    "GroupNorm": lambda r: ({"num_groups": r.randint(1, 4), "eps": 1e-5, "affine": r.random() < 0.5},
                            (InSpec((r.choice([2, 4, 6, 8]), *_shape(r, 1, 2)), "float32"),)),
    "RNN": lambda r: _recurrent(r, {"nonlinearity": r.choice(["tanh", "relu"])}),
    "GRU": _recurrent, "LSTM": _recurrent,
    "Embedding": lambda r: ({"num_embeddings": r.randint(1, 50), "embedding_dim": r.randint(1, 8),
                             "padding_idx": None, "max_norm": r.choice([None, 1.0])},
                            (InSpec(_shape(r, 1, 2), "int64"),)),
    "PositionalEncoding": lambda r: ({"kind": r.choice(["sinusoidal", "learned"]), "max_len": r.randint(1, 12)},
                                     (InSpec((r.randint(1, 8), r.choice([2, 4, 6])), "float32"),)),
    "Flatten": _flatten, "Reshape": _reshape, "Permute": _permute,
    "Add": lambda r: ({}, (InSpec(_shape(r), "float32"),) * r.randint(2, 3)),
    "Multiply": lambda r: ({}, (InSpec(_shape(r), "float32"),) * r.randint(2, 3)),
    "Concat": _concat,
    "Softmax": lambda r: ({"dim": r.randint(-5, 4)}, (InSpec(_shape(r), "float32"),)),
    "SequencePool": lambda r: ({"mode": r.choice(["mean", "max", "last", "first"])},
                               (InSpec(_shape(r, 2, 2), "float32"),)),
}
RULED = sorted(t for t, spec in REGISTRY.items() if spec.shape_rule is not None)  # the specs with a shape_rule
CONFIGS = {t: (12 if t in ("RNN", "GRU", "LSTM") else 40) for t in RULED}


def test_every_rule_has_a_generator():
    assert set(GENERATORS) == set(RULED)


def _buffers_on_meta(type_name: str, params: dict, ins: tuple[InSpec, ...]) -> int:
    with torch.device("meta"):
        module = REGISTRY[type_name].build(params, list(ins))
    return sum(b.numel() for b in module.buffers())


@pytest.mark.parametrize("type_name", RULED)
def test_closed_form_equals_pytorch_on_meta_at_random_settings(type_name):
    """Where a rule answers, PyTorch gives the same shape, dtype, params, FLOPs and buffers; where PyTorch
    rejects the input, the rule never answers (the meta run's message reaches the user)."""
    r = random.Random(f"rules-{type_name}")
    answered = 0
    for _ in range(CONFIGS[type_name]):
        params, ins = GENERATORS[type_name](r)
        resolved = REGISTRY[type_name].resolve(params)
        rule = closed_form(type_name, resolved, ins)
        meta = analysis._infer_on_meta(type_name, json.dumps(params, sort_keys=True), ins)
        if isinstance(meta, str):
            assert rule is None, (params, ins, meta, rule)
            continue
        if rule is None:
            continue
        answered += 1
        assert rule[:4] == meta, (params, ins)
        assert rule[4] == _buffers_on_meta(type_name, params, ins), (params, ins)
    assert answered >= CONFIGS[type_name] // 4, f"the rule answered only {answered} of the random settings"


@pytest.mark.parametrize("type_name", sorted(t for t in REGISTRY if t != "Input"))
def test_flop_counter_equals_flop_counter_mode(type_name):
    spec = REGISTRY[type_name]
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    with torch.device("meta"):
        module = spec.build({}, list(spec.example)).eval()
    xs = [torch.empty((1, *i.shape), dtype=dtypes[i.dtype], device="meta") for i in spec.example]
    with FlopCounter() as ours:
        a = module(*xs)
    with FlopCounterMode(display=False) as theirs:
        b = module(*xs)
    assert ours.total == theirs.get_total_flops()
    assert (a[0] if isinstance(a, tuple) else a).shape == (b[0] if isinstance(b, tuple) else b).shape


FRESH = r"""
import json, sys
from studio.analysis import analyze
from studio.templates import load_template
out = {}
for name in sys.argv[1:]:
    a = analyze(load_template(name))
    out[name] = [a.ok, a.total_params, a.total_flops]
out["dynamo"] = "torch._dynamo" in sys.modules
print(json.dumps(out))
"""


def test_a_fresh_process_analyses_the_cnn_and_rnn_templates_without_importing_dynamo(tmp_path):
    names = ["seed_cnn", "lenet5", "resnet_small", "lstm_classifier", "cnn1d", "conv_autoencoder"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDIO_WORKSPACE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", FRESH, *names], env=env, capture_output=True, text=True,
                          check=True, cwd=ROOT)
    out = json.loads(done.stdout)
    assert out.pop("dynamo") is False
    assert all(ok for ok, _, _ in out.values()), out
    from studio.templates import load_template

    for name, (_, params, flops) in out.items():  # the same figures as this process's analysis
        a = analysis.analyze(load_template(name))
        assert (params, flops) == (a.total_params, a.total_flops)
