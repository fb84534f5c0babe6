"""The idx file format of MNIST and Fashion-MNIST (gzipped or not), read and validated."""

from __future__ import annotations

import gzip
import math
import threading
import zlib
from pathlib import Path

import numpy as np

from .arrays import ArrayBackend, check_labels
from .errors import DataError, MissingDataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(i) for i in range(10)]
PREFIXES = {"train": "train", "test": "t10k"}  # partition -> file name prefix
_NDIM = {"images": 3, "labels": 1}
MAX_IDX_BYTES = 16 << 30  # far above any idx data set (EMNIST: 0.7 GB), far below what a header can claim
_DTYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def expected_files(directory: Path) -> list[str]:
    """The four idx file names looked for in a directory (each may also end in .gz)."""
    return [f"{PREFIXES[p]}-{k}-idx{_NDIM[k]}-ubyte[.gz]" for p in PREFIXES for k in _NDIM]


def find_file(directory: Path, partition: str, kind: str, hint: str) -> Path:
    """The idx file of a partition ('train'/'test') and kind ('images'/'labels'), plain preferred over .gz.

    Raises:
        MissingDataError: the directory or the file is missing; the message says what to do.
    """
    base = directory / f"{PREFIXES[partition]}-{kind}-idx{_NDIM[kind]}-ubyte"
    for path in (base, base.with_name(base.name + ".gz")):
        if path.is_file():
            return path
    what = "directory not found" if not directory.is_dir() else f"no {base.name}[.gz] in it"
    raise MissingDataError(f"idx data {directory}: {what}; expected files: {', '.join(expected_files(directory))}. "
                           f"{hint}")


def _read_bytes(path: Path, n: int = -1) -> bytes:
    """The file's first n bytes (all when n < 0), decompressed when it ends in .gz."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            return f.read(n)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: corrupt or truncated gzip file ({type(e).__name__}: {e})") from e


def _dims(data: bytes, path: Path, kind: str) -> tuple[int, ...]:
    """Validates the idx header at the start of `data` and returns its dims."""
    ndim = _NDIM[kind]
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{path}: truncated idx file: {len(data)} bytes, shorter than the 4-byte magic")
    magic = int.from_bytes(data[:4], "big")
    if data[:2] != b"\0\0" or data[3] != ndim:
        raise DataError(f"{path}: bad idx magic 0x{magic:08x}; expected 0x{0x800 + ndim:08x} for {kind}")
    if data[2] != 0x08:
        name = _DTYPES.get(data[2], "unknown")
        raise DataError(f"{path}: idx dtype code 0x{data[2]:02x} ({name}) not supported; valid: 0x08 (uint8)")
    if len(data) < header:
        raise DataError(f"{path}: truncated idx header: {len(data)} bytes, expected {header}")
    return tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))


def read_idx(path: Path, kind: str) -> np.ndarray:
    """Parses an idx file of uint8 data.

    Args:
        path: the file (.gz decompressed on the fly).
        kind: 'images' (magic 0x00000803, 3 dims) or 'labels' (magic 0x00000801, 1 dim).
    Returns:
        uint8 array of the header's big-endian dims: (N, H, W) or (N,).
    Raises:
        DataError: wrong magic, dtype code other than 0x08, or a size that disagrees with the header.
    """
    header = 4 + 4 * _NDIM[kind]
    dims = _dims(_read_bytes(path, header), path, kind)
    size = math.prod(dims)  # Python ints: a hostile header cannot overflow it
    if size > MAX_IDX_BYTES:
        raise DataError(f"{path}: dims {dims} claim {size} bytes, over the {MAX_IDX_BYTES}-byte limit")
    # Never more than the header promises (+1 to notice trailing bytes): a gzip bomb cannot inflate past it.
    data = _read_bytes(path, header + size + 1)
    found = len(data) - header
    if found < size:
        raise DataError(f"{path}: truncated idx file: dims {dims} need {size} data bytes, found {found}")
    if found > size:
        raise DataError(f"{path}: trailing bytes after the {size} data bytes of dims {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_idx(kind: str, directory: Path, partition: str, class_names: list[str], hint: str) -> ArrayBackend:
    """One partition ('train' or 'test') of an idx data set; images are read on first use.

    Args:
        kind: the spec kind ('fashion-mnist' or 'mnist').
        directory: holds the idx files.
        partition: 'train' or 'test'.
        class_names: the data set's class names.
        hint: appended to missing-file errors (what to install or pass).
    """
    images_path = find_file(directory, partition, "images", hint)
    labels_path = find_file(directory, partition, "labels", hint)
    raw = read_idx(labels_path, "labels")
    labels, names = check_labels(raw, len(raw), class_names, str(labels_path))
    dims = _dims(_read_bytes(images_path, 16), images_path, "images")  # full read waits for first use
    if dims[0] != len(labels):
        raise DataError(f"{images_path}: {dims[0]} images but {labels_path.name} has {len(labels)} labels")
    cache: list[np.ndarray] = []
    lock = threading.Lock()

    def reader(idx: np.ndarray) -> np.ndarray:
        with lock:  # decompress once, even when several threads ask at the same time
            if not cache:
                cache.append(read_idx(images_path, "images")[..., None])
        return cache[0][idx]

    return ArrayBackend(kind, names, labels, (dims[1], dims[2], 1), reader, id_prefix=f"{partition}:")
