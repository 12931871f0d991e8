"""Datasets fetched on first use: MNIST, Fashion-MNIST and CIFAR-10.

Files are downloaded with urllib into `workspace/datasets/<id>/`, checked against their published
MD5 and kept there; nothing downloaded is ever unpickled (CIFAR-10 comes from its binary version,
read with tarfile + numpy). Without a network the error names the built-in alternatives and where to
place the files by hand. The parsers (`parse_idx`, `parse_cifar_records`) are plain functions on
bytes so tests can feed them files generated in the same formats.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from studio.data.types import DatasetInfo, make_dataset, register, split_sizes
from studio.errors import DataError

ProgressFn = Callable[[int, int], None]
CHUNK = 1 << 20
TIMEOUT_S = 30
OFFLINE_ALTERNATIVES = ("digits (8x8 handwritten digits, 10 classes) or shapes (32x32 synthetic images, "
                        "5 classes), which are built in and work offline")


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str
    size: int  # published size in bytes, for progress before the server answers
    urls: tuple[str, ...]  # mirrors, tried in order


@dataclass(frozen=True)
class Remote:
    """A downloadable dataset: its files and what it holds."""

    name: str
    files: tuple[RemoteFile, ...]
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    train_size: int
    test_size: int
    description: str


def _mirrored(bases: tuple[str, ...], name: str, md5: str, size: int) -> RemoteFile:
    return RemoteFile(name, md5, size, tuple(base + name for base in bases))


_MNIST_BASES = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_BASES = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                  "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then R, G and B planes of 32x32

REMOTES: dict[str, Remote] = {
    "mnist": Remote(
        "MNIST",
        tuple(_mirrored(_MNIST_BASES, n, md5, size) for n, md5, size in zip(IDX_NAMES, (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
            (9912422, 28881, 1648877, 4542), strict=True)),
        (1, 28, 28), tuple(str(i) for i in range(10)), 60000, 10000,
        "Handwritten digits, 28x28 grayscale in [0, 1] (LeCun, Cortes & Burges; downloaded, 11 MB)"),
    "fashion_mnist": Remote(
        "Fashion-MNIST",
        tuple(_mirrored(_FASHION_BASES, n, md5, size) for n, md5, size in zip(IDX_NAMES, (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
            (26421880, 29515, 4422102, 5148), strict=True)),
        (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"), 60000, 10000,
        "Clothing images, 28x28 grayscale in [0, 1], 10 classes (Zalando Research; downloaded, 30 MB)"),
    "cifar10": Remote(
        "CIFAR-10",
        (RemoteFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", 170052171,
                    ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)),),
        (3, 32, 32),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"), 50000, 10000,
        "Small colour photos, 32x32 RGB in [0, 1], 10 classes (Krizhevsky 2009, binary version; "
        "downloaded, 162 MB)"),
}


def cache_dir(dataset_id: str, workspace: Path) -> Path:
    return Path(workspace) / "datasets" / dataset_id


def is_downloaded(dataset_id: str, workspace: Path) -> bool:
    """True when every file of the dataset is in the cache (so loading needs no network)."""
    folder = cache_dir(dataset_id, workspace)
    return all((folder / f.name).is_file() for f in REMOTES[dataset_id].files)


# ---- fetching -----------------------------------------------------------------------------------------

def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, remote: RemoteFile, on_bytes: Callable[[int], None]) -> None:
    """Download `url` to `dest` through a temp file; the file appears only once its MD5 is right."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest = hashlib.md5(usedforsecurity=False)
    limit = int(remote.size * 1.05) + CHUNK  # a server sending far more than published is refused
    received = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if received > limit:
                    raise DataError(f"{url} sent more than the {remote.size:,} bytes published for "
                                    f"{remote.name}; download stopped at {received:,} bytes")
                digest.update(chunk)
                out.write(chunk)
                on_bytes(len(chunk))
        if digest.hexdigest() != remote.md5:
            raise DataError(f"checksum mismatch for {remote.name} from {url}: expected MD5 {remote.md5}, "
                            f"got {digest.hexdigest()} ({received:,} bytes); the download was corrupted or "
                            "the file changed on the server; try again later")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def download(dataset_id: str, workspace: Path, progress: ProgressFn | None = None) -> Path:
    """Fetch the files of `dataset_id` that are not cached yet; return the cache folder.

    `progress(done_bytes, total_bytes)` is called after every chunk, counting all missing files.
    """
    remote = REMOTES[dataset_id]
    folder = cache_dir(dataset_id, workspace)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [f for f in remote.files if not (folder / f.name).is_file()]
    total = sum(f.size for f in missing)
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, max(total, done))

    for f in missing:
        failures: list[str] = []
        unreachable = 0  # mirrors that could not be reached at all (as opposed to bad content)
        start = done
        for url in f.urls:
            done = start  # a failed mirror's partial bytes do not count
            try:
                _fetch(url, folder / f.name, f, on_bytes)
                break
            except DataError as e:
                failures.append(str(e))
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                unreachable += 1
                failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
        else:
            hint = "This machine seems to be offline. " if unreachable == len(f.urls) else ""
            raise DataError(
                f"cannot download {remote.name} ({f.name}): {'; '.join(failures)}. {hint}Use {OFFLINE_ALTERNATIVES}; "
                f"or copy {f.name} (MD5 {f.md5}) into {folder} by hand and load it again.")
    if progress is not None and total:
        progress(done, max(total, done))
    return folder


# ---- parsers ----------------------------------------------------------------------------------------

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
MAX_IDX_ITEMS = 500_000_000


def parse_idx(data: bytes, *, name: str = "IDX file") -> np.ndarray:
    """Read an IDX array (the MNIST format): magic 0x0000 <type> <ndim>, big-endian int32 dims, data.

    Gzip-compressed input is recognised by its magic and decompressed first.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{name} is not a valid gzip file ({e}); delete it and download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{name} is not an IDX file: its magic number is {data[:4].hex() or 'missing'}, "
                        "expected 0000 then a type code (08 for unsigned bytes) and the number of dimensions")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{name}: IDX header declares {ndim} dimensions but the file has {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    items = int(np.prod(dims, dtype=np.int64))
    if items > MAX_IDX_ITEMS:
        raise DataError(f"{name}: IDX header declares shape {dims}, more than {MAX_IDX_ITEMS:,} values")
    expected = header + items * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{name}: IDX header declares shape {dims} ({expected:,} bytes) but the file has "
                        f"{len(data):,} bytes; it is truncated or corrupted, delete it and download it again")
    return np.frombuffer(data, dtype=dtype, count=items, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def parse_cifar_records(data: bytes, *, name: str = "CIFAR-10 batch") -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 binary records: (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    if not data or len(data) % CIFAR_RECORD:
        raise DataError(f"{name} has {len(data):,} bytes, not a whole number of {CIFAR_RECORD}-byte records "
                        "(1 label byte + 3072 pixel bytes); it is truncated or corrupted")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{name}: label {int(labels.max())} found; CIFAR-10 labels are 0 to 9")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def read_cifar_tar(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The train (5 batches) and test records of cifar-10-binary.tar.gz, read in one pass, never extracted."""
    wanted = {f"{CIFAR_DIR}/data_batch_{i}.bin": "train" for i in range(1, 6)}
    wanted[f"{CIFAR_DIR}/test_batch.bin"] = "test"
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    if member.size % CIFAR_RECORD or member.size > 10_000 * CIFAR_RECORD:
                        raise DataError(f"{path.name}: {member.name} has {member.size:,} bytes; expected "
                                        f"{10_000 * CIFAR_RECORD:,} (10,000 records)")
                    found[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable tar.gz archive ({e}); delete it and download it again") from None
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise DataError(f"{path.name} lacks {', '.join(missing)}; it is not the CIFAR-10 binary version "
                        "(cifar-10-binary.tar.gz)")
    parts: dict[str, list] = {"train": [], "test": []}
    for member_name in sorted(found):
        parts[wanted[member_name]].append(parse_cifar_records(found[member_name], name=member_name))
    return {k: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for k, v in parts.items()}


# ---- loading ------------------------------------------------------------------------------------------

def _info(dataset_id: str) -> DatasetInfo:
    r = REMOTES[dataset_id]
    sizes = split_sizes(r.train_size, has_test=True)
    sizes["test"] = r.test_size
    return DatasetInfo(dataset_id, r.name, "classification", r.input_shape, "float32", (), len(r.class_names),
                       list(r.class_names), None, r.description, "download", sizes)


def _load_idx_pair(folder: Path, images_name: str, labels_name: str, shape: tuple[int, ...]):
    images = parse_idx((folder / images_name).read_bytes(), name=images_name)
    labels = parse_idx((folder / labels_name).read_bytes(), name=labels_name)
    if images.ndim != 3 or images.shape[1:] != shape[1:] or labels.shape != (len(images),):
        raise DataError(f"{images_name} and {labels_name} hold shapes {images.shape} and {labels.shape}; "
                        f"expected (N, {shape[1]}, {shape[2]}) and (N,)")
    x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)  # (N, 1, H, W) uint8, scaled per batch
    return x, torch.from_numpy(labels.astype(np.int64))


def load_downloaded(dataset_id: str, *, seed: int, workspace: Path, progress: ProgressFn | None = None):
    folder = download(dataset_id, workspace, progress) if not is_downloaded(dataset_id, workspace) \
        else cache_dir(dataset_id, workspace)
    info = _info(dataset_id)
    if dataset_id == "cifar10":
        parts = read_cifar_tar(folder / REMOTES[dataset_id].files[0].name)
        (x, y), (xt, yt) = ((torch.from_numpy(a), torch.from_numpy(b)) for a, b in (parts["train"], parts["test"]))
    else:
        x, y = _load_idx_pair(folder, IDX_NAMES[0], IDX_NAMES[1], info.input_shape)
        xt, yt = _load_idx_pair(folder, IDX_NAMES[2], IDX_NAMES[3], info.input_shape)
    info = dataclasses.replace(info, sizes={**split_sizes(len(y), has_test=True), "test": len(yt)})
    return make_dataset(info, x, y, seed, test=(xt, yt))


def _register(dataset_id: str) -> None:
    @register(dataset_id, lambda: _info(dataset_id))
    def load(seed=0, workspace=None, progress=None):
        return load_downloaded(dataset_id, seed=seed, workspace=workspace, progress=progress)


for _id in REMOTES:
    _register(_id)
