"""Array-backed items: scikit-learn digits, .npz and HDF5 files (idx files build on this too)."""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np

from .decode import Geometry, resize_array
from .errors import DataError, MissingDataError

Reader = Callable[[np.ndarray], np.ndarray]
_CHUNK = 1024  # items per read when hashing, to bound memory on lazily read files


class ArrayBackend:
    """Items of one array (N, H, W, C) uint8, C = 1 or 3, read by index through `reader`."""

    file_based = False

    def __init__(self, kind: str, class_names: list[str], labels: np.ndarray,
                 native_shape: tuple[int, int, int], reader: Reader, id_prefix: str = "") -> None:
        self.kind, self.class_names, self.labels = kind, class_names, labels
        self.native_shape, self._reader, self._prefix = native_shape, reader, id_prefix

    def ids(self, idx: np.ndarray) -> np.ndarray:
        """Item ids: the index within the original file, as a string."""
        return np.array([f"{self._prefix}{i}" for i in idx], dtype=str)

    def read(self, idx: np.ndarray, geometry: Geometry | None = None) -> np.ndarray:
        """Images at increasing indices `idx`: (n, H, W, C) uint8, resized when a geometry is given."""
        images = self._reader(np.asarray(idx, dtype=np.int64))
        return images if geometry is None else resize_array(images, geometry)

    def submit(self, idx: np.ndarray, geometry: Geometry | None, pool: Executor) -> list[tuple[int, Future]]:
        """Schedules one read of a whole batch; returns [(item count, future of the images)]."""
        return [(len(idx), pool.submit(self.read, idx, geometry))]

    def content(self, idx: np.ndarray) -> Iterator[bytes]:
        """The selected images' bytes in order, in chunks (for fingerprints)."""
        for lo in range(0, len(idx), _CHUNK):
            yield np.ascontiguousarray(self.read(idx[lo:lo + _CHUNK])).tobytes()


def to_uint8(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 passes through; float in [0, 1] becomes round(x * 255) (half to even); others raise."""
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
        if not (0.0 <= lo and hi <= 1.0):  # also rejects NaN
            raise DataError(f"{where}: float images must lie in [0, 1], found range [{lo}, {hi}]")
        return np.rint(images.astype(np.float64) * 255.0).astype(np.uint8)
    raise DataError(f"{where}: images dtype {images.dtype} not supported; valid: uint8, or float in [0, 1]")


def image_shape(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    """(H, W, C) from an images array shape (N, H, W) or (N, H, W, C) with C in (1, 3)."""
    if len(shape) in (3, 4) and min(shape[1:3]) >= 1 and (len(shape) == 3 or shape[3] in (1, 3)):
        return (shape[1], shape[2], shape[3] if len(shape) == 4 else 1)
    raise DataError(f"{where}: images must have shape (N, H, W) or (N, H, W, C) with H, W >= 1 and C = 1 or 3, "
                    f"got {shape}")


def check_labels(labels: np.ndarray, n: int, class_names: list[str] | None, where: str) -> tuple[np.ndarray, list[str]]:
    """Validates labels (N,) against N and the class names; returns int64 labels and the names."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise DataError(f"{where}: labels must have shape ({n},) to match the images, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if n and labels.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, found {labels.min()}")
    top = int(labels.max()) + 1 if n else 0
    if class_names is None:
        if top > n:  # names would be made for classes without images: a label of 10**7 means 10**7 names
            raise DataError(f"{where}: labels go up to {top - 1} but there are only {n} images; without class_names "
                            "labels must number the classes 0..K-1 (relabel them, or store class_names)")
        class_names = [str(i) for i in range(top)]
    elif top > len(class_names):
        raise DataError(f"{where}: label {top - 1} has no class name; {len(class_names)} class_names given")
    return labels, class_names


def _names(raw: np.ndarray | None) -> list[str] | None:
    """Class names from a str or bytes array (None stays None)."""
    if raw is None:
        return None
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(raw).ravel().tolist()]


def _as_channels(images: np.ndarray) -> np.ndarray:
    """(n, H, W) -> (n, H, W, 1); (n, H, W, C) unchanged."""
    return images[..., None] if images.ndim == 3 else images


def load_digits() -> ArrayBackend:
    """scikit-learn's bundled 8x8 digits, 0..16 scaled to uint8 as round(v * 255 / 16)."""
    from sklearn.datasets import load_digits as sk_digits
    bunch = sk_digits()
    images = np.floor(bunch.images * 255.0 / 16.0 + 0.5).astype(np.uint8)[..., None]
    labels, names = check_labels(bunch.target, len(images), [str(i) for i in range(10)], "digits")
    return ArrayBackend("digits", names, labels, (8, 8, 1), lambda idx: images[idx])


def _existing(path: Path, kind: str) -> Path:
    """The path, or a MissingDataError naming it."""
    if not path.is_file():
        raise MissingDataError(f"{kind} file not found: {path}")
    return path


def load_npz(path: Path) -> ArrayBackend:
    """Arrays `images`, `labels` and optional `class_names` from an .npz file."""
    where = str(_existing(path, "npz"))
    if not zipfile.is_zipfile(path):  # np.load would guess 'pickled data' for any other bytes
        raise DataError(f"{where}: not an .npz file (a zip archive of .npy arrays, as numpy.savez writes)")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("images", "labels") if k not in z.files]
        if missing:
            raise DataError(f"{where}: missing arrays {missing}; found {z.files}; required: images, labels "
                            "(optional: class_names)")
        try:
            images, labels = z["images"], z["labels"]
            names = _names(z["class_names"]) if "class_names" in z.files else None
        except ValueError as e:  # object arrays need pickle, which is never allowed
            raise DataError(f"{where}: cannot read arrays without pickle ({e}); store class_names as "
                            "a unicode string array") from e
    shape = image_shape(images.shape, where)
    images = _as_channels(to_uint8(images, where))
    labels, names = check_labels(labels, len(images), names, where)
    return ArrayBackend("npz", names, labels, shape, lambda idx: images[idx])


def load_h5(path: Path) -> ArrayBackend:
    """Datasets `images`, `labels` and optional `class_names` of an HDF5 file; images read lazily."""
    import h5py
    where = str(_existing(path, "h5"))
    if not h5py.is_hdf5(path):
        raise DataError(f"{where}: not an HDF5 file")
    with h5py.File(path, "r") as f:
        missing = [k for k in ("images", "labels") if not isinstance(f.get(k), h5py.Dataset)]
        missing += [k for k in ("class_names",) if k in f and not isinstance(f.get(k), h5py.Dataset)]
        if missing:
            raise DataError(f"{where}: missing datasets {missing}; found {sorted(f)}; required: images, labels "
                            "(optional: class_names), each a dataset, not a group")
        shape, dtype = image_shape(f["images"].shape, where), f["images"].dtype
        if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
            raise DataError(f"{where}: images dtype {dtype} not supported; valid: uint8, or float in [0, 1]")
        labels, names = check_labels(f["labels"][()], f["images"].shape[0],
                                     _names(f["class_names"][()]) if "class_names" in f else None, where)
    lock = threading.Lock()  # one reader at a time: HDF5 serialises anyway, this keeps handles simple

    def reader(idx: np.ndarray) -> np.ndarray:
        with lock, h5py.File(path, "r") as f:
            return _as_channels(to_uint8(f["images"][idx], where))

    return ArrayBackend("h5", names, labels, shape, reader)
