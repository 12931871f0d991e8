"""Built-in datasets that work offline: scikit-learn's bundled data and small synthetic tasks.

Each one is registered under its id (DESIGN.md, "Dataset ids") with a static DatasetInfo, so
listing datasets never generates data. Synthetic sets are generated from `data_seed` (the content)
and split with the `seed` given to `get_dataset` (which samples land in train, val and test).
Everything here loads in well under a second.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from studio.data.types import Dataset, DatasetInfo, Split, make_dataset, register, split_sizes
from studio.errors import DataError

SOURCE = "builtin"


def _int_option(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise DataError(f"option {name}={value!r} is out of range; use an integer from {lo} to {hi}")
    return value


def _float_option(name: str, value: object, lo: float, hi: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise DataError(f"option {name}={value!r} is out of range; use a number from {lo} to {hi}")
    return float(value)


def _standardise(ds):
    """Scale tabular features with the training split's mean and std (val/test reuse them)."""
    mean = ds.train.x.mean(0)
    std = ds.train.x.std(0).clamp_min(1e-8)
    scaled = [Split((s.x - mean) / std, s.y) for s in (ds.train, ds.val, ds.test)]
    return Dataset(ds.info, *scaled)


# ---- scikit-learn's bundled data -----------------------------------------------------------------

_SKLEARN = {
    # id: (loader name, name, n, n_features, class names, description)
    "iris": ("load_iris", "Iris", 150, 4, ["setosa", "versicolor", "virginica"],
             "Iris flowers: 4 measurements -> 3 species (Fisher 1936; scikit-learn load_iris)"),
    "wine": ("load_wine", "Wine", 178, 13, ["class_0", "class_1", "class_2"],
             "Wines: 13 chemical measurements -> 3 cultivars (UCI; scikit-learn load_wine)"),
    "breast_cancer": ("load_breast_cancer", "Breast cancer", 569, 30, ["malignant", "benign"],
                      "Breast tumours: 30 cell-nucleus features -> malignant or benign "
                      "(UCI Wisconsin diagnostic; scikit-learn load_breast_cancer)"),
}


def _tabular_info(dataset_id: str) -> DatasetInfo:
    _, name, n, f, classes, description = _SKLEARN[dataset_id]
    return DatasetInfo(dataset_id, name, "classification", (f,), "float32", (), len(classes), list(classes),
                       None, description, SOURCE, split_sizes(n))


def _register_tabular(dataset_id: str) -> None:
    @register(dataset_id, functools.partial(_tabular_info, dataset_id))
    def load(seed=0, workspace=None, progress=None):
        import sklearn.datasets  # imported here: it costs about a second and only these sets need it

        bunch = getattr(sklearn.datasets, _SKLEARN[dataset_id][0])()
        x = torch.tensor(bunch.data, dtype=torch.float32)
        y = torch.tensor(bunch.target, dtype=torch.int64)
        return _standardise(make_dataset(_tabular_info(dataset_id), x, y, seed))



def _digits_info() -> DatasetInfo:
    return DatasetInfo("digits", "Digits 8x8", "classification", (1, 8, 8), "float32", (), 10,
                       [str(i) for i in range(10)], None,
                       "Handwritten digits, 8x8 grayscale in [0, 1] (UCI; scikit-learn load_digits)",
                       SOURCE, split_sizes(1797))


@register("digits", _digits_info)
def _load_digits(seed=0, workspace=None, progress=None):
    from studio.data.digits_file import digits_arrays  # sklearn's file, without importing sklearn

    images, target = digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(target, dtype=torch.int64)
    return make_dataset(_digits_info(), x, y, seed)


# Registered after digits so the listing follows DESIGN.md's order.
for _id in _SKLEARN:
    _register_tabular(_id)


# ---- shapes: synthetic images ---------------------------------------------------------------------

SHAPE_CLASSES = ["circle", "square", "triangle", "cross", "ring"]
_SHAPES_OPTIONS = {"num_samples": 2000, "image_size": 32, "noise": 0.1, "data_seed": 0}


def _shapes_info(num_samples=2000, image_size=32, **_) -> DatasetInfo:
    return DatasetInfo("shapes", "Shapes", "classification", (1, image_size, image_size), "float32", (),
                       len(SHAPE_CLASSES), list(SHAPE_CLASSES), None,
                       f"Synthetic {image_size}x{image_size} grayscale shapes ({', '.join(SHAPE_CLASSES)}) "
                       "with random position, size, rotation, brightness and noise (generated)",
                       SOURCE, split_sizes(num_samples))


def _ring(u, v):
    d2 = u * u + v * v
    return (d2 <= 1.0) & (d2 >= 0.36)


# Shape-local coordinates (u, v) -> inside mask; each shape fits the unit disc. Order = SHAPE_CLASSES.
_SHAPE_MASKS = (
    lambda u, v: u * u + v * v <= 1.0,                                                   # circle
    lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.75,                                # square
    lambda u, v: (v >= -0.5) & (v <= 1.0 - math.sqrt(3.0) * u.abs()),                    # triangle
    lambda u, v: ((u.abs() <= 0.28) & (v.abs() <= 1.0)) | ((v.abs() <= 0.28) & (u.abs() <= 1.0)),  # cross
    _ring,                                                                               # ring
)


def render_shapes(labels: torch.Tensor, image_size: int, noise: float, g: torch.Generator) -> torch.Tensor:
    """Draw one shape per label into (N, 1, S, S) float images in [0, 1], all samples at once."""
    n, s = len(labels), image_size
    radius = (0.18 + 0.14 * torch.rand(n, generator=g)) * s  # half-size of the shape, pixels
    margin = radius + 1
    cx = margin + torch.rand(n, generator=g) * (s - 2 * margin)
    cy = margin + torch.rand(n, generator=g) * (s - 2 * margin)
    angle = torch.rand(n, generator=g) * 2 * math.pi
    brightness = 0.6 + 0.4 * torch.rand(n, generator=g)
    coords = torch.arange(s, dtype=torch.float32) + 0.5
    dy = coords.view(1, s, 1) - cy.view(n, 1, 1)  # (N, S, 1)
    dx = coords.view(1, 1, s) - cx.view(n, 1, 1)  # (N, 1, S)
    cos, sin = angle.cos().view(n, 1, 1), angle.sin().view(n, 1, 1)
    r = radius.view(n, 1, 1)
    u = (dx * cos + dy * sin) / r  # shape-local coordinates, the shape fits the unit disc
    v = (-dx * sin + dy * cos) / r
    mask = torch.zeros(n, s, s)
    for k, draw in enumerate(_SHAPE_MASKS):
        sel = labels == k
        if sel.any():
            mask[sel] = draw(u[sel], v[sel]).float()
    img = mask * brightness.view(n, 1, 1) + noise * torch.randn(n, s, s, generator=g)
    return img.clamp_(0.0, 1.0).unsqueeze(1)


@register("shapes", _shapes_info, _SHAPES_OPTIONS)
def _load_shapes(seed=0, workspace=None, progress=None, num_samples=2000, image_size=32, noise=0.1, data_seed=0):
    n = _int_option("num_samples", num_samples, 50, 100_000)
    s = _int_option("image_size", image_size, 16, 128)
    noise = _float_option("noise", noise, 0.0, 1.0)
    g = torch.Generator().manual_seed(_int_option("data_seed", data_seed, 0, 2**31 - 1))
    y = torch.arange(n) % len(SHAPE_CLASSES)  # balanced classes
    y = y[torch.randperm(n, generator=g)]
    x = torch.cat([render_shapes(y[i:i + 1000], s, noise, g) for i in range(0, n, 1000)])
    return make_dataset(_shapes_info(n, s), x, y, seed)


# ---- token sequence tasks: reverse, sort, copy -------------------------------------------------------

TOKEN_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_SEQ_OPTIONS = {"num_samples": 4000, "seq_len": 12, "vocab_size": 10, "data_seed": 0}
_SEQ_TASKS = {
    "reverse": ("Reverse", "the same tokens in reverse order (attention: the anti-diagonal)"),
    "sort": ("Sort", "the same tokens sorted ascending (attention: follows the values)"),
    "copy": ("Copy", "the input itself (attention: the diagonal); the simplest wiring check"),
}


def _seq_info(dataset_id: str, num_samples=4000, seq_len=12, vocab_size=10, **_) -> DatasetInfo:
    name, what = _SEQ_TASKS[dataset_id]
    return DatasetInfo(dataset_id, name, "sequence", (seq_len,), "int64", (seq_len,), vocab_size,
                       None, list(TOKEN_ALPHABET[:vocab_size]),
                       f"{seq_len} random tokens of {vocab_size} -> per position, {what} (generated)",
                       SOURCE, split_sizes(num_samples))


def _register_sequence(dataset_id: str) -> None:
    @register(dataset_id, functools.partial(_seq_info, dataset_id), _SEQ_OPTIONS)
    def load(seed=0, workspace=None, progress=None, num_samples=4000, seq_len=12, vocab_size=10, data_seed=0):
        n = _int_option("num_samples", num_samples, 50, 200_000)
        t = _int_option("seq_len", seq_len, 2, 512)
        v = _int_option("vocab_size", vocab_size, 2, len(TOKEN_ALPHABET))
        g = torch.Generator().manual_seed(_int_option("data_seed", data_seed, 0, 2**31 - 1))
        x = torch.randint(0, v, (n, t), generator=g)  # (N, T) int64
        if dataset_id == "reverse":
            y = x.flip(1)
        elif dataset_id == "sort":
            y = x.sort(dim=1).values
        else:
            y = x.clone()
        return make_dataset(_seq_info(dataset_id, n, t, v), x, y, seed)


for _id in _SEQ_TASKS:
    _register_sequence(_id)


# ---- sine forecasting and the adding problem --------------------------------------------------------

_SINE_OPTIONS = {"num_samples": 4000, "window": 32, "horizon": 1, "noise": 0.05, "data_seed": 0}


def _sine_info(num_samples=4000, window=32, horizon=1, **_) -> DatasetInfo:
    return DatasetInfo("sine", "Sine forecasting", "regression", (window, 1), "float32", (horizon,), None,
                       None, None,
                       f"Sum of two random sine waves plus noise: the last {window} values -> the next "
                       f"{horizon} (generated)", SOURCE, split_sizes(num_samples))


@register("sine", _sine_info, _SINE_OPTIONS)
def _load_sine(seed=0, workspace=None, progress=None, num_samples=4000, window=32, horizon=1, noise=0.05,
               data_seed=0):
    n = _int_option("num_samples", num_samples, 50, 200_000)
    w = _int_option("window", window, 2, 1024)
    h = _int_option("horizon", horizon, 1, 256)
    noise = _float_option("noise", noise, 0.0, 1.0)
    g = torch.Generator().manual_seed(_int_option("data_seed", data_seed, 0, 2**31 - 1))
    t = torch.arange(w + h, dtype=torch.float32).view(1, 1, -1)
    freq = 0.02 + 0.13 * torch.rand(n, 2, 1, generator=g)  # cycles per step
    amp = 0.3 + 0.7 * torch.rand(n, 2, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 2, 1, generator=g)
    series = (amp * torch.sin(2 * math.pi * freq * t + phase)).sum(1)  # (N, W+H)
    series = series + noise * torch.randn(series.shape, generator=g)
    x = series[:, :w].unsqueeze(-1).contiguous()  # (N, W, 1)
    y = series[:, w:].contiguous()  # (N, H)
    return make_dataset(_sine_info(n, w, h), x, y, seed)


_ADDING_OPTIONS = {"num_samples": 4000, "seq_len": 50, "data_seed": 0}


def _adding_info(num_samples=4000, seq_len=50, **_) -> DatasetInfo:
    return DatasetInfo("adding", "Adding problem", "regression", (seq_len, 2), "float32", (1,), None, None, None,
                       f"{seq_len} steps of (value, marker); predict the sum of the two marked values "
                       "(Hochreiter & Schmidhuber 1997; generated)", SOURCE, split_sizes(num_samples))


@register("adding", _adding_info, _ADDING_OPTIONS)
def _load_adding(seed=0, workspace=None, progress=None, num_samples=4000, seq_len=50, data_seed=0):
    n = _int_option("num_samples", num_samples, 50, 200_000)
    t = _int_option("seq_len", seq_len, 4, 2048)
    g = torch.Generator().manual_seed(_int_option("data_seed", data_seed, 0, 2**31 - 1))
    values = torch.rand(n, t, generator=g)
    half = t // 2
    first = torch.randint(0, half, (n,), generator=g)  # one marker in each half
    second = torch.randint(half, t, (n,), generator=g)
    markers = torch.zeros(n, t)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)  # (N, T, 2)
    y = (values * markers).sum(1, keepdim=True)  # (N, 1)
    return make_dataset(_adding_info(n, t), x, y, seed)


# ---- chars: character-level language modelling --------------------------------------------------------

_CHARS_OPTIONS = {"seq_len": 64}


@functools.lru_cache(maxsize=1)
def _corpus() -> str:
    """Python's own help topics (pydoc_data), about 465,000 characters of English, in key order."""
    import pydoc_data.topics

    return "".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))


def char_windows(text: str, vocab: list[str], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut text into non-overlapping windows: x (N, T) ids, y (N, T) the next id at each position."""
    lookup = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.from_numpy(np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text)))
    n = (len(ids) - 1) // seq_len
    x = ids[: n * seq_len].view(n, seq_len)
    y = ids[1: n * seq_len + 1].view(n, seq_len)
    return x, y


def _chars_info(seq_len=64, **_) -> DatasetInfo:
    text = _corpus()
    vocab = sorted(set(text))
    return DatasetInfo("chars", "Characters (Python docs)", "language_model", (seq_len,), "int64", (seq_len,),
                       len(vocab), None, vocab,
                       f"Next-character prediction on {len(text):,} characters of English: Python's help "
                       "topics (pydoc_data, ships with Python)", SOURCE, split_sizes((len(text) - 1) // seq_len))


@register("chars", _chars_info, _CHARS_OPTIONS)
def _load_chars(seed=0, workspace=None, progress=None, seq_len=64):
    t = _int_option("seq_len", seq_len, 4, 4096)
    info = _chars_info(t)
    x, y = char_windows(_corpus(), info.vocab, t)
    return make_dataset(info, x, y, seed)



# ---- majority: classifying token sequences ----------------------------------------------------------------

MAJORITY_CLASSES = ["more A", "more B"]
_MAJORITY_OPTIONS = {"num_samples": 4000, "seq_len": 32, "vocab_size": 10, "data_seed": 0}


def majority_vocab(vocab_size: int) -> list[str]:
    """Token 0 is the marker "A", token 1 the marker "B", the others are filler digits "0", "1", ..."""
    return ["A", "B", *TOKEN_ALPHABET[:vocab_size - 2]]


def _majority_info(num_samples=4000, seq_len=32, vocab_size=10, **_) -> DatasetInfo:
    return DatasetInfo("majority", "Majority (A or B)", "classification", (seq_len,), "int64", (), 2,
                       list(MAJORITY_CLASSES), majority_vocab(vocab_size),
                       f"{seq_len} tokens: an odd number (1 to {_max_markers(seq_len)}) of A and B markers among "
                       f"filler digits -> which marker occurs more often (attention: the markers; synthetic, "
                       "generated)", SOURCE, split_sizes(num_samples))


def _max_markers(seq_len: int) -> int:
    """At most a third of the sequence is markers, and an odd number, so there is never a tie."""
    m = max(1, seq_len // 3)
    return m if m % 2 else m - 1


def majority_tokens(labels: torch.Tensor, seq_len: int, vocab_size: int, g: torch.Generator) -> torch.Tensor:
    """(N, T) token ids where marker `labels[i]` (0 = A, 1 = B) occurs more often than the other one.

    Each row has an odd number m of markers; the winner takes k of them, k uniform from
    (m + 1) / 2 (a one-marker lead) to m (no marker of the other kind), at random positions.
    """
    n = len(labels)
    m = 2 * torch.randint(0, (_max_markers(seq_len) + 1) // 2, (n, 1), generator=g) + 1  # (N, 1) odd
    half = (m + 1) // 2
    k = half + (torch.rand(n, 1, generator=g) * (m - half + 1)).long().clamp_max(m - half)  # (N, 1)
    rank = torch.rand(n, seq_len, generator=g).argsort(1).argsort(1)  # each position's random rank
    winner, loser = labels.view(n, 1), 1 - labels.view(n, 1)
    filler = torch.randint(2, vocab_size, (n, seq_len), generator=g)
    markers = torch.where(rank < k, winner, loser)
    return torch.where(rank < m, markers, filler)


@register("majority", _majority_info, _MAJORITY_OPTIONS)
def _load_majority(seed=0, workspace=None, progress=None, num_samples=4000, seq_len=32, vocab_size=10, data_seed=0):
    n = _int_option("num_samples", num_samples, 50, 200_000)
    t = _int_option("seq_len", seq_len, 3, 512)
    v = _int_option("vocab_size", vocab_size, 3, len(TOKEN_ALPHABET) + 2)
    g = torch.Generator().manual_seed(_int_option("data_seed", data_seed, 0, 2**31 - 1))
    y = torch.arange(n) % 2  # balanced classes
    y = y[torch.randperm(n, generator=g)]
    return make_dataset(_majority_info(n, t, v), majority_tokens(y, t, v, g), y, seed)
