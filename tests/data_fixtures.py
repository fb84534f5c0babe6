"""Writers of tiny data sets in their real formats, shared by the data tests (it holds no tests)."""

import gzip
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False, magic: bytes | None = None) -> Path:
    """Writes a uint8 array as an idx file (big-endian dims), gzipped when gz."""
    head = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    data = head + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.astype(np.uint8).tobytes()
    path = Path(str(path) + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_idx_dir(directory: Path, *, gz: bool, n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict:
    """Writes train/t10k images and labels (every class 0..9 present) and returns the arrays."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 7, 5), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
        out[prefix] = (images, labels)
    return out


def make_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 10), seed: int = 0) -> dict:
    """Writes RGB PNGs root/<class>/<i>.png; returns {relative path: (H, W, 3) array}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
            written[f"{name}/{i:02d}.png"] = pixels
    return written


def make_npz(path: Path, counts: list[int], shape: tuple[int, ...] = (6, 5), seed: int = 0, **extra) -> dict:
    """Writes images (N, *shape) uint8 and labels with counts[c] items of class c, interleaved."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    rng.shuffle(labels)
    arrays = dict(images=rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8), labels=labels, **extra)
    np.savez(path, **arrays)
    return arrays
