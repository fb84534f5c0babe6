"""Image folders with one sub-folder per class, as Keras and torchvision's ImageFolder read them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .decode import Geometry, decode_file, read_file
from .errors import BadImageError, DataError, MissingDataError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_HASH_THREADS = 4


def _hidden(name: str) -> bool:
    """Dot-files and dot-folders (.DS_Store, .ipynb_checkpoints, ...) are never data."""
    return name.startswith(".")


def scan_folder(root: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Lists a class-per-folder tree.

    Args:
        root: holds one sub-folder per class; images may sit in nested folders below it.
    Returns:
        class_names (sorted sub-folder names), relative POSIX paths of the images (sorted within
        each class, classes in order) and their labels (N,) int64.
    Raises:
        MissingDataError: root is not a directory. DataError: no class folders or no images.
    """
    if not root.is_dir():
        raise MissingDataError(f"image folder not found: {root}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not _hidden(e.name))
    if not classes:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class name>/<image>"
                        f" with extensions {', '.join(EXTENSIONS)}")
    paths: list[str] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(classes):
        found = []
        # linked class folders are read; links below them are not followed, so a link cycle cannot loop
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = [d for d in dirnames if not _hidden(d)]
            found += [Path(dirpath, f).relative_to(root).as_posix() for f in filenames
                      if not _hidden(f) and f.lower().endswith(EXTENSIONS)]
        paths += sorted(found)
        labels += [label] * len(found)
        empty += [] if found else [name]
    if not paths:
        raise DataError(f"{root}: no images with extensions {', '.join(EXTENSIONS)} in the class folders "
                        f"{classes}")
    if empty:  # a class nothing can be learnt of would still be counted in accuracy and outputs
        raise DataError(f"{root}: class folders {empty} hold no images with extensions {', '.join(EXTENSIONS)}; "
                        "add images or remove the folders")
    return classes, paths, np.array(labels, dtype=np.int64)


def _file_digest(path: Path) -> bytes:
    """sha256 of a file's bytes; an unreadable file hashes its reason (it fails or is skipped when decoded)."""
    try:
        data = read_file(path, str(path))
    except BadImageError as e:
        data = b"bad image: " + e.reason.encode("utf-8", "replace")
    return hashlib.sha256(data).digest()


class FolderBackend:
    """Image files decoded lazily, in a thread pool, to RGB at a fixed geometry."""

    file_based = True
    kind = "folder"
    native_shape = None

    def __init__(self, root: Path) -> None:
        self.root = root
        self.class_names, self._paths, self.labels = scan_folder(root)

    def ids(self, idx: np.ndarray) -> np.ndarray:
        """Item ids: file paths relative to the root."""
        return np.array([self._paths[i] for i in idx], dtype=str)

    def submit(self, idx: np.ndarray, geometry: Geometry, pool: Executor) -> list[tuple[int, Future]]:
        """Schedules one decode per file; returns [(1, future of a (1, r, r, 3) image)] in order."""
        return [(1, pool.submit(decode_file, self.root / self._paths[i], self._paths[i], geometry))
                for i in idx]

    def content(self, idx: np.ndarray) -> Iterator[bytes]:
        """sha256 digests of the selected files' bytes in order, hashed in parallel threads."""
        with ThreadPoolExecutor(_HASH_THREADS) as pool:
            yield from pool.map(_file_digest, [self.root / self._paths[i] for i in idx])
