"""Careful readers for files users upload: CSV tables, zips of image folders, plain text.

Every reader takes bytes and either returns plain Python/numpy data or raises DataError saying what
is wrong with the file and how to fix it. Nothing here writes to disk: a zip is read entry by entry
in memory, so a hostile entry name (``../../evil.txt``, ``/etc/passwd``) can never become a path.
Caps are checked on the sizes a zip declares *and* on the bytes actually read, so a zip bomb is
stopped before it is expanded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import stat
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from studio.errors import DataError

MAX_UPLOAD_BYTES = 200 * 2**20
MAX_ZIP_FILES = 20_000  # entries in an archive
MAX_ZIP_TOTAL_BYTES = 1 * 2**30  # uncompressed, whole archive
MAX_ZIP_ENTRY_BYTES = 50 * 2**20  # uncompressed, one entry
MAX_IMAGE_PIXELS = 40_000_000  # one decoded image (Pillow's own bomb limit is higher)
# Decoded pixels of a whole archive, counted from the images' headers before any is decoded: a 35 KB PNG
# of zeros declares 6000x6000 pixels (about a second of CPU each), so a 1.4 MB zip took 80 s to decode.
MAX_ZIP_TOTAL_PIXELS = 1_000_000_000
MAX_CSV_COLUMNS = 10_000
MAX_CSV_ROWS = 1_000_000
MAX_CSV_CELLS = 10_000_000  # rows x columns: each cell is a Python string until the columns are converted
# Delimiters on one physical line, checked before the csv module splits it: a line of 20 million commas
# became a list of 20 million fields (0.5 GB) before any column count was compared. Twice the column
# limit leaves room for delimiters inside quoted text.
MAX_CSV_LINE_DELIMITERS = 2 * MAX_CSV_COLUMNS
CSV_CACHE_SIZE = 2  # parsed tables kept (the page's column list and the upload that follows share one parse)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def check_size(data: bytes, filename: str) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataError(f"{filename}: expected the file's bytes, got {type(data).__name__}")
    if len(data) == 0 or not bytes(data[:4096]).strip():
        raise DataError(f"{filename} is empty; upload a file with data in it")
    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(f"{filename} is {len(data) / 2**20:.0f} MB; uploads are limited to "
                        f"{MAX_UPLOAD_BYTES // 2**20} MB")


def decode_text(data: bytes, filename: str) -> str:
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{filename} is not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}); "
                        "save it as UTF-8 and upload it again") from None
    if not text.strip():
        raise DataError(f"{filename} is empty; upload a file with data in it")
    return text


# ---- CSV ------------------------------------------------------------------------------------------

@dataclass
class Table:
    """A CSV read as text columns, every row checked to have one field per column."""

    columns: list[str]
    cells: dict[str, list[str]]  # column -> values, stripped
    rows: int

    def require(self, column: str, role: str) -> list[str]:
        if column not in self.cells:
            raise DataError(f"{role} column {column!r} is not in the CSV; its columns are: "
                            f"{', '.join(self.columns)}")
        return self.cells[column]


def read_csv(data: bytes, filename: str, *, delimiter: str = ",") -> Table:
    """The CSV as a Table, parsed once per file: the same bytes, name and delimiter return the cached
    Table (callers must not modify it). Bounded by MAX_CSV_COLUMNS, MAX_CSV_ROWS and MAX_CSV_CELLS,
    checked while reading, so an oversized file is refused before it is held in memory."""
    check_size(data, filename)
    key = (hashlib.blake2b(data, digest_size=20).digest(), filename, delimiter)
    table = _CSV_CACHE.get(key)
    if table is None:
        table = _parse_csv(data, filename, delimiter)
        _CSV_CACHE[key] = table
        while len(_CSV_CACHE) > CSV_CACHE_SIZE:
            _CSV_CACHE.pop(next(iter(_CSV_CACHE)))
    else:
        _CSV_CACHE[key] = _CSV_CACHE.pop(key)  # most recently used last
    return table


_CSV_CACHE: dict[tuple, Table] = {}


def _parse_csv(data: bytes, filename: str, delimiter: str) -> Table:
    text = decode_text(data, filename)
    reader = csv.reader(_bounded_lines(text, delimiter, filename), delimiter=delimiter)
    try:
        header = next(reader)
        if len(header) > MAX_CSV_COLUMNS:
            raise DataError(f"{filename}: the header has {len(header):,} columns; the limit is {MAX_CSV_COLUMNS:,}; "
                            "keep the columns the model needs")
        max_rows = min(MAX_CSV_ROWS, MAX_CSV_CELLS // max(1, len(header)))
        rows: list[list[str]] = []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue  # blank lines
            if len(row) != len(header):
                raise DataError(f"{filename}: line {reader.line_num} has {len(row)} fields but the header has "
                                f"{len(header)} columns ({', '.join(header)[:200]}); every row needs the same "
                                "number of fields (quote values that contain the delimiter)")
            if len(rows) == max_rows:
                raise DataError(f"{filename}: more than {max_rows:,} data rows of {len(header):,} columns; the "
                                f"limits are {MAX_CSV_ROWS:,} rows and {MAX_CSV_CELLS:,} cells (rows x columns); "
                                "upload a sample of the rows or fewer columns")
            rows.append([c.strip() for c in row])
    except StopIteration:
        raise DataError(f"{filename} is empty; upload a file with data in it") from None
    except csv.Error as e:
        raise DataError(f"{filename}: not a readable CSV near line {reader.line_num}: {e}") from None
    columns = [c.strip() for c in header]
    if len(columns) < 2:
        raise DataError(f"{filename}: found {len(columns)} column ({columns[0]!r}) with delimiter "
                        f"{delimiter!r}; a dataset needs at least a feature and a target column")
    for i, name in enumerate(columns):
        if not name:
            raise DataError(f"{filename}: column {i + 1} has no name in the header row; name every column")
    counts = Counter(columns)  # one pass: columns.count(c) per column was quadratic (100k columns: minutes)
    dupes = sorted(c for c, k in counts.items() if k > 1)
    if dupes:
        raise DataError(f"{filename}: the header repeats column {dupes[0]!r}; give every column its own name")
    if not rows:
        raise DataError(f"{filename} has a header but no data rows")
    cells = {name: [r[i] for r in rows] for i, name in enumerate(columns)}
    return Table(columns, cells, len(rows))


def _bounded_lines(text: str, delimiter: str, filename: str):
    """The text's lines, refusing one with more delimiters than any table within the limits can have."""
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if len(line) > MAX_CSV_LINE_DELIMITERS and line.count(delimiter) > MAX_CSV_LINE_DELIMITERS:
            raise DataError(f"{filename}: line {number:,} holds {line.count(delimiter):,} delimiters "
                            f"({delimiter!r}); a table may have at most {MAX_CSV_COLUMNS:,} columns; check the "
                            "delimiter, or quote the text that contains it")
        yield line


def as_numbers(values: list[str]) -> np.ndarray | None:
    """The column as float64 if every cell is a finite number, else None."""
    try:
        arr = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return None
    return arr if np.isfinite(arr).all() else None


def check_no_missing(table: Table, column: str, filename: str) -> None:
    values = table.cells[column]
    missing = [i for i, v in enumerate(values) if v == "" or v.lower() in ("nan", "na", "null", "none")]
    if missing:
        raise DataError(f"{filename}: column {column!r} has {len(missing)} missing values (first on data row "
                        f"{missing[0] + 1}); fill them in or drop the column")


# ---- zips of image folders ------------------------------------------------------------------------

@dataclass
class ImageZip:
    """A checked zip of class folders, not yet decoded: what each image's class is, and what was skipped.

    `chunks(image_size, mode)` decodes the images in order, a chunk at a time, so a caller can write
    a large set out without holding every decoded image at once."""

    filename: str
    data: bytes
    entries: list  # zipfile.ZipInfo of each image, in order
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)  # entries that are not images

    def __len__(self) -> int:
        return len(self.entries)

    def chunks(self, image_size: int, mode: str, chunk: int = 256):
        """Yield (n, C, S, S) uint8 arrays covering the images in order (refused first when decoding them all
        would mean more than MAX_ZIP_TOTAL_PIXELS pixels)."""
        budget = MAX_ZIP_TOTAL_BYTES
        with zipfile.ZipFile(io.BytesIO(self.data)) as zf:
            self._check_pixels(zf, image_size, mode)
            for start in range(0, len(self.entries), chunk):
                out = []
                for info in self.entries[start:start + chunk]:
                    raw = _read_entry(zf, info, budget, self.filename)
                    budget -= len(raw)
                    out.append(_decode_image(raw, info.filename, self.filename, image_size, mode))
                yield np.stack(out)


    def _check_pixels(self, zf: zipfile.ZipFile, image_size: int, mode: str) -> None:
        """Sum the pixels each image will decode to (its header's size; JPEG's reduced draft size), reading
        only the headers; refuse past MAX_ZIP_TOTAL_PIXELS before the first image is decoded."""
        from PIL import Image

        total, biggest = 0, ("", 0)
        for info in self.entries:
            try:
                with zf.open(info) as f, warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    img = Image.open(f)
                    img.draft(mode, (image_size, image_size))
                    pixels = img.size[0] * img.size[1]
            except Exception:  # noqa: BLE001 (unreadable: the decode pass names the entry and the reason)
                continue
            total += pixels
            biggest = max(biggest, (info.filename, pixels), key=lambda b: b[1])
            if total > MAX_ZIP_TOTAL_PIXELS:
                raise DataError(
                    f"{self.filename}: its images hold more than {MAX_ZIP_TOTAL_PIXELS:,} pixels in all (the largest "
                    f"so far, {biggest[0]!r}, {biggest[1]:,}); decoding them would take minutes of CPU; shrink the "
                    f"images before zipping them (image_size is {image_size}) or upload fewer")


_DRIVE = re.compile(r"^[A-Za-z]:")


def _unsafe_name(name: str) -> bool:
    norm = name.replace("\\", "/")
    return norm.startswith("/") or bool(_DRIVE.match(norm)) or ".." in norm.split("/")


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, filename: str) -> bytes:
    """Read one entry, counting bytes: stops past the per-entry cap or the archive's remaining budget."""
    limit = min(MAX_ZIP_ENTRY_BYTES, budget)
    chunks, total = [], 0
    try:
        with zf.open(info) as f:
            while chunk := f.read(1 << 16):
                total += len(chunk)
                if total > limit:
                    raise DataError(
                        f"{filename}: entry {info.filename!r} expands past {limit:,} bytes although it declares "
                        f"{info.file_size:,}; refusing the archive (zip bomb caps: {MAX_ZIP_ENTRY_BYTES // 2**20} MB "
                        f"per file, {MAX_ZIP_TOTAL_BYTES // 2**20} MB in all)")
                chunks.append(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        # RuntimeError: encrypted entry; NotImplementedError: unsupported compression method
        raise DataError(f"{filename}: entry {info.filename!r} cannot be read ({e}); the archive is damaged, "
                        "encrypted or uses an unsupported compression; zip it again without a password") from None
    return b"".join(chunks)


def _decode_image(raw: bytes, name: str, filename: str, image_size: int, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DataError(f"{filename}: image {name!r} is {w}x{h} pixels, more than the "
                                f"{MAX_IMAGE_PIXELS:,} allowed; shrink it or remove it")
            img.draft(mode, (image_size, image_size))  # JPEG: decode at reduced size
            img = img.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{filename}: {name!r} is not a readable image ({e}); remove or replace it") from None
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, S, S)


def open_image_zip(data: bytes, filename: str) -> ImageZip:
    """A zip with one folder per class (a single enclosing folder is allowed), checked entry by entry
    (names, links, declared sizes) without decoding any image."""
    check_size(data, filename)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as e:
        raise DataError(f"{filename} is not a readable zip archive ({e}); upload a .zip with one folder per "
                        "class") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_FILES:
            raise DataError(f"{filename} holds {len(infos):,} entries; the limit is {MAX_ZIP_FILES:,}")
        declared = sum(i.file_size for i in infos)
        if declared > MAX_ZIP_TOTAL_BYTES:
            raise DataError(f"{filename} declares {declared:,} bytes uncompressed; the limit is "
                            f"{MAX_ZIP_TOTAL_BYTES:,} ({MAX_ZIP_TOTAL_BYTES // 2**20} MB)")
        for info in infos:
            if _unsafe_name(info.filename):
                raise DataError(f"{filename}: entry {info.filename!r} points outside the archive's folder "
                                "(absolute path or '..'); refusing the whole archive")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DataError(f"{filename}: entry {info.filename!r} is a symbolic link; refusing the archive")
            if info.file_size > MAX_ZIP_ENTRY_BYTES:
                raise DataError(f"{filename}: entry {info.filename!r} declares {info.file_size:,} bytes; "
                                f"the limit per file is {MAX_ZIP_ENTRY_BYTES:,}")

        skipped: list[str] = []
        candidates: list[tuple[zipfile.ZipInfo, list[str]]] = []
        for info in infos:
            if info.is_dir():
                continue
            parts = [p for p in info.filename.replace("\\", "/").split("/") if p]
            hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
            if hidden or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
                skipped.append(info.filename)
            else:
                candidates.append((info, parts[:-1]))
        if not candidates:
            raise DataError(f"{filename} contains no images ({len(skipped)} other files); expected folders of "
                            f"{', '.join(IMAGE_EXTENSIONS)} files, one folder per class")
        # Strip enclosing folders shared by every image ("pets/cat/1.png" -> class "cat").
        depth = 0
        while all(len(d) > depth + 1 for _, d in candidates) and len({d[depth] for _, d in candidates}) == 1:
            depth += 1
        at_top = [info.filename for info, d in candidates if len(d) <= depth]
        if at_top:
            raise DataError(f"{filename}: {len(at_top)} images are not inside a class folder (e.g. "
                            f"{at_top[0]!r}); put each class's images in a folder named after the class")
        class_names = sorted({d[depth] for _, d in candidates})
        if len(class_names) < 2:
            raise DataError(f"{filename}: all images are in one folder ({class_names[0]!r}); a classifier needs "
                            "at least 2 classes, one folder per class")
        lookup = {c: i for i, c in enumerate(class_names)}
    labels = np.array([lookup[d[depth]] for _, d in candidates], dtype=np.int64)
    return ImageZip(filename, bytes(data), [info for info, _ in candidates], labels, class_names, skipped)


def slug(text: str, max_len: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:max_len].strip("_")
    return s or "data"
