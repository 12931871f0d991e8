"""studio.data: built-ins, splits, batches, augmentation, download parsers and errors, graph fit."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import struct
import tarfile
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from studio.data import (
    Augment,
    DatasetInfo,
    apply_dataset,
    check_graph_fits,
    downloads,
    get_dataset,
    get_info,
    list_datasets,
)
from studio.data.registry import registered_ids
from studio.errors import DataError
from studio.graph import parse_graph

BUILTINS = ["digits", "iris", "wine", "breast_cancer", "shapes", "reverse", "sort", "copy", "sine", "adding", "chars",
            "majority"]
DOWNLOADS = ["mnist", "fashion_mnist", "cifar10"]
# id -> (task, input_shape, input_dtype, target_shape, num_classes)
EXPECTED = {
    "digits": ("classification", (1, 8, 8), "float32", (), 10),
    "iris": ("classification", (4,), "float32", (), 3),
    "wine": ("classification", (13,), "float32", (), 3),
    "breast_cancer": ("classification", (30,), "float32", (), 2),
    "shapes": ("classification", (1, 32, 32), "float32", (), 5),
    "reverse": ("sequence", (12,), "int64", (12,), 10),
    "sort": ("sequence", (12,), "int64", (12,), 10),
    "copy": ("sequence", (12,), "int64", (12,), 10),
    "sine": ("regression", (32, 1), "float32", (1,), None),
    "adding": ("regression", (50, 2), "float32", (1,), None),
    "chars": ("language_model", (64,), "int64", (64,), 103),
    "majority": ("classification", (32,), "int64", (), 2),
}


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    return ws


@pytest.fixture(scope="module")
def loaded():
    """Each built-in loaded once for the module (seed 0)."""
    return {dataset_id: get_dataset(dataset_id, workspace="unused-by-builtins", seed=0) for dataset_id in BUILTINS}


# ---- registry and built-ins ----------------------------------------------------------------------------

def test_registry_holds_every_design_id():
    assert registered_ids() == BUILTINS + DOWNLOADS
    assert [i.id for i in list_datasets()] == BUILTINS + DOWNLOADS


@pytest.mark.parametrize("dataset_id", BUILTINS)
def test_builtin_loads_with_declared_shapes(loaded, dataset_id):
    ds = loaded[dataset_id]
    info = ds.info
    task, in_shape, in_dtype, target_shape, num_classes = EXPECTED[dataset_id]
    assert (info.task, info.input_shape, info.input_dtype, info.target_shape, info.num_classes) == \
        (task, in_shape, in_dtype, target_shape, num_classes)
    assert info == get_info(dataset_id)  # the static info matches what loading produces
    assert info.source == "builtin" and info.description and info.name
    for name in ("train", "val", "test"):
        split = ds.split(name)
        assert len(split) == info.sizes[name] > 0
        assert tuple(split.x.shape[1:]) == in_shape
        assert split.x.dtype == getattr(torch, in_dtype)
        assert tuple(split.y.shape[1:]) == target_shape
        if task == "regression":
            assert split.y.dtype == torch.float32
        else:
            assert split.y.dtype == torch.int64
            assert 0 <= int(split.y.min()) and int(split.y.max()) < num_classes
        if in_dtype == "int64":  # token ids index the vocabulary
            assert 0 <= int(split.x.min()) and int(split.x.max()) < len(info.vocab)
        else:
            assert torch.isfinite(split.x).all()
    if task == "classification":
        assert len(info.class_names) == num_classes
        assert set(ds.train.y.tolist()) == set(range(num_classes))  # every class is in training
    if in_dtype == "int64":
        assert all(isinstance(t, str) and t for t in info.vocab) and len(set(info.vocab)) == len(info.vocab)
        if task != "classification":  # token targets: the classes are the vocabulary
            assert len(info.vocab) == num_classes


def test_dataset_info_round_trips_and_names_metrics():
    for info in list_datasets():
        assert DatasetInfo.from_dict(info.to_dict()) == info
    assert get_info("digits").metrics == ("accuracy",)
    assert get_info("sine").metrics == ("mae",)
    assert get_info("reverse").metrics == get_info("chars").metrics == ("token_accuracy", "perplexity")
    assert get_info("digits").output_shape == (10,)
    assert get_info("reverse").output_shape == (12, 10)
    assert get_info("sine").output_shape == (1,)


def test_sequence_targets_follow_their_rule(loaded):
    for dataset_id, rule in (("reverse", lambda x: x.flip(1)), ("sort", lambda x: x.sort(1).values),
                             ("copy", lambda x: x)):
        split = loaded[dataset_id].train
        assert torch.equal(split.y, rule(split.x))
    chars = loaded["chars"]
    text = "".join(chars.info.vocab[i] for i in chars.train.x[0].tolist())
    assert len(text) == 64
    assert torch.equal(chars.train.x[0, 1:], chars.train.y[0, :-1])  # targets are the next characters


def test_adding_and_sine_targets(loaded):
    x, y = loaded["adding"].train.x, loaded["adding"].train.y
    assert torch.equal(x[:, :, 1].sum(1), torch.full((len(x),), 2.0))  # exactly two markers
    torch.testing.assert_close(y[:, 0], (x[:, :, 0] * x[:, :, 1]).sum(1))
    sine = get_dataset("sine", options={"window": 16, "horizon": 4, "noise": 0.0, "num_samples": 100})
    assert sine.info.input_shape == (16, 1) and sine.info.target_shape == (4,)
    assert sine.train.y.shape == (sine.info.sizes["train"], 4)


def test_majority_labels_the_marker_that_occurs_more_often(loaded):
    ds = loaded["majority"]
    assert ds.info.vocab[:2] == ["A", "B"] and ds.info.class_names == ["more A", "more B"]
    assert ds.info.description.endswith("synthetic, generated)")
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    a, b = (x == 0).sum(1), (x == 1).sum(1)
    markers = a + b
    assert torch.equal(y, (b > a).long())  # the rule, with no tie to break
    assert (markers % 2 == 1).all() and markers.max() == 9 and markers.min() == 1  # 1 to seq_len // 3, odd
    assert set(((a - b).abs()).tolist()) >= {1, 3, 5, 7, 9}  # close calls and clear ones
    assert abs(y.float().mean().item() - 0.5) < 0.02  # balanced classes
    # the position of a marker carries no information: they are spread over the whole sequence
    first_half = ((x[:, :16] < 2).sum() / (x < 2).sum()).item()
    assert 0.45 < first_half < 0.55


def test_majority_is_deterministic_and_its_splits_are_disjoint():
    opts = {"num_samples": 300, "seq_len": 20, "vocab_size": 6}
    a, b = get_dataset("majority", options=opts), get_dataset("majority", options=opts)
    other_data = get_dataset("majority", options={**opts, "data_seed": 1})
    other_split = get_dataset("majority", seed=1, options=opts)
    assert a.info.input_shape == (20,) and a.info.vocab == ["A", "B", "0", "1", "2", "3"]
    assert a.info == get_info("majority", options=opts)
    for name in ("train", "val", "test"):
        assert torch.equal(a.split(name).x, b.split(name).x) and torch.equal(a.split(name).y, b.split(name).y)
    assert not torch.equal(a.train.x, other_data.train.x)
    assert not torch.equal(a.val.x, other_split.val.x)
    rows = [{tuple(r) for r in s.x.tolist()} for s in (a.train, a.val, a.test)]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    assert sum(map(len, rows)) == 300  # no sample repeated
    with pytest.raises(DataError, match=r"vocab_size=2 is out of range; use an integer from 3 to 38"):
        get_dataset("majority", options={"vocab_size": 2})


# ---- the reconstruction form: {"target": "input"} ----------------------------------------------------------

def test_reconstruction_form_targets_the_input_with_the_same_splits(loaded):
    plain = loaded["digits"]
    ds = get_dataset("digits", options={"target": "input"})
    info = ds.info
    assert (info.id, info.task, info.target_shape, info.num_classes, info.class_names, info.metrics) == \
        ("digits", "regression", (1, 8, 8), None, None, ("mae",))
    assert info.output_shape == info.input_shape == (1, 8, 8)
    assert info.description.startswith("Reconstruction form") and plain.info.description in info.description
    assert info.sizes == plain.info.sizes
    assert info == get_info("digits", options={"target": "input"})
    for name in ("train", "val", "test"):
        split = ds.split(name)
        assert torch.equal(split.x, plain.split(name).x)  # the same samples in the same splits
        assert torch.equal(split.y, split.x) and split.y.dtype == torch.float32 and len(split) == len(split.x)
    for x, y in ds.batches("train", 500, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(x, y) and x.data_ptr() != y.data_ptr()  # a model writing into x leaves y alone
    # an augmented input is still its own target (a flipped image is reconstructed flipped)
    x, y = next(ds.batches("train", 64, shuffle=False, generator=torch.Generator().manual_seed(0),
                           augment=Augment(flip=True, flip_prob=1.0, noise=True)))
    assert torch.equal(x, y) and not torch.equal(x, ds.train.x[:64])
    x, y = next(ds.batches("val", 64, shuffle=False, augment=Augment(flip=True, flip_prob=1.0)))
    assert torch.equal(x, y) and torch.equal(x, ds.val.x[:64])


def test_reconstruction_form_combines_with_options_and_keeps_uint8_storage():
    from studio.data.registry import reconstruction_form
    from studio.data.types import Dataset, Split

    shapes = get_dataset("shapes", options={"num_samples": 60, "image_size": 28, "target": "input"})
    assert shapes.info.input_shape == shapes.info.target_shape == (1, 28, 28)
    assert shapes.info == get_info("shapes", options={"num_samples": 60, "image_size": 28, "target": "input"})
    raw = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    split = Split(raw, torch.zeros(10, dtype=torch.int64))
    ds = reconstruction_form(Dataset(get_info("digits"), split, split, split))
    x, y = next(ds.batches("val", 4, shuffle=False))
    torch.testing.assert_close(y, raw[:4].float() / 255)
    assert torch.equal(x, y)


def test_reconstruction_option_errors():
    with pytest.raises(DataError, match=r"option target='label' is not known; use target='input'"):
        get_dataset("digits", options={"target": "label"})
    with pytest.raises(DataError, match=r"dataset 'reverse' has int64 inputs of shape \(12,\), which cannot be a "
                                        r"regression target"):
        get_info("reverse", options={"target": "input"})
    with pytest.raises(DataError, match=r"has no option 'size'; its options are: num_samples, image_size, noise, "
                                        r"data_seed, target"):
        get_info("shapes", options={"size": 8, "target": "input"})
    with pytest.raises(DataError, match=r"dataset 'digits' has no option 'size'; its options are: target"):
        get_dataset("digits", options={"size": 8})  # image_size and channels apply to every image set (issue 18)
    with pytest.raises(DataError, match=r"option image_size=2 must be a whole number from 4 to 256"):
        get_info("digits", options={"image_size": 2})
    with pytest.raises(DataError, match=r"apply to image datasets only"):
        get_info("reverse", options={"image_size": 28})


def test_regression_loss_and_mae_on_image_outputs():
    from studio.training import Task

    g = torch.Generator().manual_seed(0)
    out, y = torch.rand(6, 1, 8, 8, generator=g), torch.rand(6, 1, 8, 8, generator=g)
    task = Task("regression")
    torch.testing.assert_close(task.loss(out, y, train=True), torch.nn.functional.mse_loss(out, y))
    model = torch.nn.Identity()
    metrics = task.evaluate(model, [(out[:4], y[:4]), (out[4:], y[4:])], torch.device("cpu"),
                            contextlib.nullcontext)
    torch.testing.assert_close(metrics["mae"], (out - y).abs().mean().item())
    torch.testing.assert_close(metrics["loss"], torch.nn.functional.mse_loss(out, y).item())


def test_tabular_features_standardised_with_train_statistics(loaded):
    x = loaded["wine"].train.x
    torch.testing.assert_close(x.mean(0), torch.zeros(13), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(13), atol=1e-5, rtol=0)


def test_splits_disjoint_and_stable_for_a_seed():
    def rows(ds):
        return [{tuple(r) for r in s.x.flatten(1).tolist()} for s in (ds.train, ds.val, ds.test)]

    a, b, c = (get_dataset("digits", seed=s) for s in (0, 0, 1))
    train, val, test = rows(a)
    assert not (train & val) and not (train & test) and not (val & test)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.val.x, c.val.x)  # another seed, another split of the same data
    assert sum(len(s) for s in rows(c)) == sum(len(s) for s in rows(a))


def test_shapes_options_and_data_seed():
    small = get_dataset("shapes", options={"num_samples": 100, "image_size": 16})
    assert small.info.input_shape == (1, 16, 16) and sum(small.info.sizes.values()) == 100
    again = get_dataset("shapes", options={"num_samples": 100, "image_size": 16})
    other = get_dataset("shapes", options={"num_samples": 100, "image_size": 16, "data_seed": 1})
    assert torch.equal(small.train.x, again.train.x)
    assert not torch.equal(small.train.x, other.train.x)
    with pytest.raises(DataError, match=r"image_size=7 is out of range; use an integer from 16 to 128"):
        get_dataset("shapes", options={"image_size": 7})
    with pytest.raises(DataError, match=r"has no option 'size'; its options are: num_samples, image_size"):
        get_dataset("shapes", options={"size": 8})


def test_unknown_and_malformed_ids():
    with pytest.raises(DataError, match=r"unknown dataset 'mnsit'; use one of digits, iris"):
        get_dataset("mnsit")
    with pytest.raises(DataError, match="unknown dataset"):
        get_dataset("upload_../../etc")
    with pytest.raises(DataError, match=r"no upload 'upload_missing'"):
        get_dataset("upload_missing")


# ---- batches ---------------------------------------------------------------------------------------------

def test_batches_cover_the_split_once(loaded):
    ds = loaded["digits"]
    g = torch.Generator().manual_seed(3)
    seen = [(x, y) for x, y in ds.batches("train", 100, shuffle=True, generator=g)]
    assert [len(y) for _, y in seen] == [100] * 12 + [57]
    assert ds.num_batches("train", 100) == 13 and ds.num_batches("train", 100, drop_last=True) == 12
    xs = torch.cat([x for x, _ in seen])
    # same multiset of samples, in a new order
    key = lambda t: sorted(map(tuple, t.flatten(1).tolist()))  # noqa: E731
    assert key(xs) == key(ds.train.x)
    assert not torch.equal(xs, ds.train.x)
    in_order = torch.cat([x for x, _ in ds.batches("train", 100, shuffle=False)])
    assert torch.equal(in_order, ds.train.x)
    dropped = list(ds.batches("train", 100, shuffle=True, generator=g, drop_last=True))
    assert len(dropped) == 12 and all(len(y) == 100 for _, y in dropped)


def test_shuffle_is_reproducible_with_a_generator(loaded):
    ds = loaded["reverse"]
    first = [y for _, y in ds.batches("train", 64, shuffle=True, generator=torch.Generator().manual_seed(7))]
    second = [y for _, y in ds.batches("train", 64, shuffle=True, generator=torch.Generator().manual_seed(7))]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with pytest.raises(DataError, match=r"batch_size must be a positive integer, got 0"):
        next(ds.batches("train", 0, shuffle=False))
    with pytest.raises(DataError, match=r"unknown split 'valid'"):
        next(ds.batches("valid", 8, shuffle=False))


def test_probe_batch_is_fixed_and_spans_classes(loaded):
    ds = loaded["digits"]
    x, y = ds.probe_batch(8)
    x2, y2 = ds.probe_batch(8)
    assert torch.equal(x, x2) and x.shape == (8, 1, 8, 8)
    assert len(set(y.tolist())) == 8
    tx, ty = loaded["sine"].probe_batch(4)
    assert torch.equal(tx, loaded["sine"].val.x[:4])


def test_uint8_splits_are_scaled_per_batch():
    from studio.data.types import Dataset, Split

    raw = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    info = get_info("digits")
    split = Split(raw, torch.zeros(10, dtype=torch.int64))
    ds = Dataset(info, split, split, split)
    x, _ = next(ds.batches("val", 4, shuffle=False))
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, raw[:4].float() / 255)
    torch.testing.assert_close(split.x, raw.float() / 255)


# ---- augmentation ----------------------------------------------------------------------------------------

def test_augmentation_keeps_shape_and_changes_training_batches_only(loaded):
    ds = loaded["shapes"]
    aug = Augment(crop=True, flip=True, affine=True, noise=True)
    g = torch.Generator().manual_seed(0)
    x_aug, y_aug = next(ds.batches("train", 32, shuffle=False, generator=g, augment=aug))
    x_plain, y_plain = next(ds.batches("train", 32, shuffle=False))
    assert x_aug.shape == x_plain.shape == (32, 1, 32, 32) and x_aug.dtype == torch.float32
    assert torch.equal(y_aug, y_plain) and not torch.equal(x_aug, x_plain)
    for split in ("val", "test"):
        x_val, _ = next(ds.batches(split, 32, shuffle=False, generator=g, augment=aug))
        assert torch.equal(x_val, ds.split(split).x[:32])


def test_augment_transforms_match_their_definition():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    g = torch.Generator().manual_seed(0)
    flipped = Augment(flip=True, flip_prob=1.0)(x, g)
    assert torch.equal(flipped, x.flip(-1))
    assert torch.equal(Augment(crop=True, crop_padding=0)(x, g), x)
    # a crop is a shifted window of the zero-padded image, per sample
    cropped = Augment(crop=True, crop_padding=2)(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        assert any(torch.equal(cropped[b], padded[b, :, i:i + 5, j:j + 5]) for i in range(5) for j in range(5))
    # no rotation, no zoom, no shift: the affine warp is the identity
    same = Augment(affine=True, rotation_degrees=0.0, scale=0.0)(x, g)
    torch.testing.assert_close(same, x)
    noisy = Augment(noise=True, noise_std=0.1)(x, g)
    assert 0.05 < (noisy - x).std() < 0.15
    assert Augment()(x, g) is x


def test_augment_config_validates_and_refuses_non_images():
    assert Augment.from_dict(Augment(flip=True).to_dict()) == Augment(flip=True)
    with pytest.raises(DataError,
                       match=r"augmentation rotation_degrees=400 is out of range; expected rotation_degrees <= 180"):
        Augment.from_dict({"affine": True, "rotation_degrees": 400})
    with pytest.raises(DataError, match="unknown augmentation setting 'rotate'"):
        Augment.from_dict({"rotate": 3})
    with pytest.raises(DataError, match=r"needs image inputs \(C, H, W\) of float32, but the dataset's input is \(4"):
        Augment(flip=True).check_input((4,), "float32")
    Augment(flip=True).check_input((1, 8, 8), "float32")
    with pytest.raises(DataError, match=r"needs a batch \(B, C, H, W\) of floats, got \(4, 12\)"):
        Augment(flip=True)(torch.zeros(4, 12, dtype=torch.int64))


# ---- download parsers, generated in the real formats -----------------------------------------------------

def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">HBB", 0, type_code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_parse_idx_reads_images_labels_and_gzip():
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    data = idx_bytes(images)
    assert data[:4] == b"\x00\x00\x08\x03"  # MNIST's image magic number 2051
    assert np.array_equal(downloads.parse_idx(data), images)
    assert idx_bytes(labels)[:4] == b"\x00\x00\x08\x01"  # label magic 2049
    assert np.array_equal(downloads.parse_idx(gzip.compress(idx_bytes(labels))), labels)
    ints = np.array([[1, -2], [300000, 4]], dtype=np.int32)
    assert np.array_equal(downloads.parse_idx(idx_bytes(ints, 0x0C)), ints)


def test_parse_idx_rejects_bad_files():
    good = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="is not an IDX file: its magic number is 504b0304"):
        downloads.parse_idx(b"PK\x03\x04rest")
    with pytest.raises(DataError, match=r"declares shape \(3, 4, 4\) \(64 bytes\) but the file has 60 bytes"):
        downloads.parse_idx(good[:-4])
    with pytest.raises(DataError, match="not a valid gzip file"):
        downloads.parse_idx(gzip.compress(good)[:-10])


def cifar_records(n: int, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    data = b"".join(bytes([labels[i]]) + images[i].tobytes() for i in range(n))  # R, G, B planes
    return data, images, labels


def test_parse_cifar_records():
    data, images, labels = cifar_records(5)
    assert len(data) == 5 * 3073
    x, y = downloads.parse_cifar_records(data)
    assert np.array_equal(x, images) and np.array_equal(y, labels) and y.dtype == np.int64
    with pytest.raises(DataError, match="not a whole number of 3073-byte records"):
        downloads.parse_cifar_records(data[:-1])
    with pytest.raises(DataError, match="label 12 found; CIFAR-10 labels are 0 to 9"):
        downloads.parse_cifar_records(bytes([12]) + data[1:])


def cifar_tar(batches: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in batches.items():
            member = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buf.getvalue()


def test_read_cifar_tar_never_extracts(tmp_path):
    parts = {f"data_batch_{i}.bin": cifar_records(4, seed=i)[0] for i in range(1, 6)}
    parts["test_batch.bin"], test_images, test_labels = cifar_records(3, seed=9)
    parts["batches.meta.txt"] = b"airplane\n"
    path = tmp_path / "cifar.tar.gz"
    path.write_bytes(cifar_tar(parts))
    out = downloads.read_cifar_tar(path)
    assert out["train"][0].shape == (20, 3, 32, 32) and out["train"][1].shape == (20,)
    assert np.array_equal(out["test"][0], test_images) and np.array_equal(out["test"][1], test_labels)
    assert not list(tmp_path.rglob("*.bin"))  # read in memory, nothing extracted
    del parts["test_batch.bin"]
    path.write_bytes(cifar_tar(parts))
    with pytest.raises(DataError, match="lacks cifar-10-batches-bin/test_batch.bin"):
        downloads.read_cifar_tar(path)


# ---- downloading -----------------------------------------------------------------------------------------

class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def small_mnist_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))),
        "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.arange(40, dtype=np.uint8) % 10)),
        "t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.arange(10, dtype=np.uint8))),
    }


def fake_remote(monkeypatch, files: dict[str, bytes], md5s: dict[str, str] | None = None):
    """Point 'mnist' at generated files with their real checksums (or the given ones)."""
    remote = downloads.REMOTES["mnist"]
    new_files = tuple(
        downloads.RemoteFile(f.name, (md5s or {}).get(f.name) or hashlib.md5(files[f.name]).hexdigest(),
                             len(files[f.name]), (f"https://mirror.test/{f.name}",))
        for f in remote.files)
    monkeypatch.setitem(downloads.REMOTES, "mnist", dataclasses.replace(remote, files=new_files))


def test_download_checks_md5_reports_progress_and_parses(monkeypatch, workspace):
    files = small_mnist_files()
    fake_remote(monkeypatch, files)
    requested = []

    def urlopen(url, timeout=None):
        requested.append(url)
        return FakeResponse(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    calls = []
    ds = get_dataset("mnist", seed=0, progress=lambda done, total: calls.append((done, total)))
    total = sum(len(b) for b in files.values())
    assert calls[-1] == (total, total) and all(d <= t for d, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(requested) == 4
    assert ds.info.sizes == {"train": 34, "val": 6, "test": 10}
    x, y = next(ds.batches("train", 8, shuffle=False))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(ds.test.y, torch.arange(10))
    cached = sorted(p.name for p in (workspace / "datasets" / "mnist").iterdir())
    assert cached == sorted(files)  # no temp files left behind
    get_dataset("mnist", seed=0)  # cached: no network needed
    assert len(requested) == 4


def test_offline_error_names_builtin_alternatives(monkeypatch, workspace):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"cannot download Fashion-MNIST .*This machine seems to be offline\. "
                                        r"Use digits .* or shapes") as e:
        get_dataset("fashion_mnist")
    assert "Temporary failure in name resolution" in str(e.value)
    assert str(workspace / "datasets" / "fashion_mnist") in str(e.value)  # where to put the files by hand
    assert list((workspace / "datasets" / "fashion_mnist").iterdir()) == []


def test_checksum_mismatch_keeps_nothing(monkeypatch, workspace):
    files = small_mnist_files()
    fake_remote(monkeypatch, files, md5s={"train-labels-idx1-ubyte.gz": "0" * 32})
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: FakeResponse(files[url.rsplit("/", 1)[1]]))
    with pytest.raises(DataError, match=r"checksum mismatch for train-labels-idx1-ubyte.gz .* expected MD5 0{32}, got"):
        get_dataset("mnist")
    assert not (workspace / "datasets" / "mnist" / "train-labels-idx1-ubyte.gz").exists()
    assert not any(p.name.endswith(".part") for p in (workspace / "datasets" / "mnist").iterdir())


def test_oversized_download_is_stopped(monkeypatch, workspace):
    files = small_mnist_files()
    fake_remote(monkeypatch, files)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: FakeResponse(b"x" * (3 << 20)))
    with pytest.raises(DataError, match="sent more than the"):
        get_dataset("mnist")


# ---- graph fit -------------------------------------------------------------------------------------------

def graph(nodes, edges=None):
    if edges is None:
        edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return parse_graph({"format": "studio.graph/1", "name": "t", "nodes": nodes, "edges": edges})


def mlp(shape, out, *, softmax=False):
    nodes = [{"id": "input", "type": "Input", "params": {"shape": list(shape)}},
             {"id": "flat", "type": "Flatten"},
             {"id": "fc", "type": "Linear", "params": {"out_features": out}}]
    if softmax:
        nodes.append({"id": "probs", "type": "Softmax"})
    return graph(nodes)


def stand_in(input_shape, output_shape, input_dtype="float32", output_id=None):
    return SimpleNamespace(input_shape=input_shape, input_dtype=input_dtype, output_shape=output_shape, nodes={},
                           output_id=output_id)


def test_apply_dataset_sets_input_on_a_copy():
    g = mlp((1, 28, 28), 10)
    out = apply_dataset(g, get_info("reverse"))
    assert out.node("input").params == {"shape": [12], "dtype": "int64"}
    assert g.node("input").params == {"shape": [1, 28, 28]}  # the original is untouched
    two_inputs = graph([{"id": "a", "type": "Input"}, {"id": "b", "type": "Input"}], edges=[])
    with pytest.raises(Exception, match=r"exactly one Input node .* found 2 \(a, b\)"):
        apply_dataset(two_inputs, get_info("iris"))


def test_fit_messages_with_a_stand_in_analysis():
    info = get_info("digits")
    assert check_graph_fits(mlp((1, 8, 8), 10), stand_in((1, 8, 8), (10,)), info) == []
    issues = check_graph_fits(mlp((1, 8, 8), 3), stand_in((1, 8, 8), (3,)), info)
    assert [str(i) for i in issues] == [
        "fc: output (3,) does not fit dataset 'digits' (10 classes); expected (10,); set out_features=10"]
    assert issues[0].param == "out_features" and issues[0].severity == "error"
    issues = check_graph_fits(mlp((1, 28, 28), 10), stand_in((1, 28, 28), (10,)), info)
    assert len(issues) == 1 and issues[0].node_id == "input" and issues[0].param == "shape"
    assert "takes (1, 28, 28) float32 but dataset 'digits' has samples of (1, 8, 8) float32" in issues[0].message
    assert "use the dataset's input ('Use with current graph'" in issues[0].message
    issues = check_graph_fits(mlp((12,), 10), stand_in((12,), (10,), "float32"), get_info("reverse"))
    assert issues[0].param == "dtype" and "(12,) float32" in issues[0].message


def test_fit_softmax_warning_and_sequence_outputs():
    g = mlp((4,), 3, softmax=True)
    issues = check_graph_fits(g, stand_in((4,), (3,), output_id="probs"), get_info("iris"))
    assert [(i.node_id, i.severity) for i in issues] == [("probs", "warning")]
    assert "cross-entropy) expects logits" in issues[0].message
    # wrong size behind the Softmax: the fix goes on the Linear in front of it
    issues = check_graph_fits(g, stand_in((4,), (5,), output_id="probs"), get_info("iris"))
    assert str(issues[0]) == ("fc: output (5,) does not fit dataset 'iris' (3 classes); expected (3,); "
                              "set out_features=3 on 'fc'")
    pooled = check_graph_fits(mlp((12,), 10), stand_in((12,), (10,), "int64"), get_info("reverse"))
    assert "expected (12, 10); keep the sequence dimension" in pooled[0].message
    regression = check_graph_fits(mlp((32, 1), 1, softmax=True), stand_in((32, 1), (1,), output_id="probs"),
                                  get_info("sine"))
    assert regression == []  # no logits warning for regression


def test_fit_with_the_real_analysis():
    analysis = pytest.importorskip("studio.analysis")
    info = get_info("digits")
    cnn = graph([
        {"id": "input", "type": "Input", "params": {"shape": [1, 28, 28]}},
        {"id": "conv1", "type": "Conv2d", "params": {"out_channels": 4, "kernel_size": 3}},
        {"id": "relu1", "type": "ReLU"},
        {"id": "flat", "type": "Flatten"},
        {"id": "fc", "type": "Linear", "params": {"out_features": 3}},
        {"id": "probs", "type": "Softmax"},
    ])
    issues = check_graph_fits(cnn, analysis.analyze(cnn), info)
    assert [(i.node_id, i.param, i.severity) for i in issues] == [
        ("input", "shape", "error"), ("fc", "out_features", "error"), ("probs", None, "warning")]
    fixed = apply_dataset(cnn, info)
    fixed.node("fc").params["out_features"] = 10
    issues = check_graph_fits(fixed, analysis.analyze(fixed), info)
    assert [(i.node_id, i.severity) for i in issues] == [("probs", "warning")]

    autoencoder = graph([
        {"id": "input", "type": "Input", "params": {"shape": [1, 28, 28]}},
        {"id": "enc", "type": "Conv2d", "params": {"out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1}},
        {"id": "dec", "type": "ConvTranspose2d",
         "params": {"out_channels": 1, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1}},
        {"id": "sigmoid", "type": "Sigmoid"},
    ])
    recon = get_info("shapes", options={"image_size": 28, "target": "input"})
    assert check_graph_fits(autoencoder, analysis.analyze(autoencoder), recon) == []
    autoencoder.node("dec").params["out_channels"] = 3
    issues = check_graph_fits(autoencoder, analysis.analyze(autoencoder), recon)
    assert [(str(i), i.param) for i in issues] == [
        ("dec: output (3, 28, 28) does not fit dataset 'shapes' (regression targets (1, 28, 28)); expected "
         "(1, 28, 28); set out_channels=1 on 'dec'", "out_channels")]
    autoencoder.node("dec").params.update(out_channels=1, output_padding=0)
    issues = check_graph_fits(autoencoder, analysis.analyze(autoencoder), recon)
    assert [str(i) for i in issues] == [
        "sigmoid: output (1, 27, 27) does not fit dataset 'shapes' (regression targets (1, 28, 28)); expected "
        "(1, 28, 28); make the last layers give (1, 28, 28): out_channels sets the channels, and kernel_size, "
        "stride, padding (and output_padding of ConvTranspose2d) the spatial size"]

    rev = get_info("reverse")
    seq = apply_dataset(graph([
        {"id": "input", "type": "Input"},
        {"id": "emb", "type": "Embedding", "params": {"num_embeddings": 8, "embedding_dim": 16}},
        {"id": "fc", "type": "Linear", "params": {"out_features": 10}},
    ]), rev)
    issues = check_graph_fits(seq, analysis.analyze(seq), rev)
    assert [str(i) for i in issues] == [
        "emb: num_embeddings=8 is smaller than the vocabulary of dataset 'reverse' (10 tokens), so token ids up "
        "to 9 would fail; set num_embeddings=10"]
