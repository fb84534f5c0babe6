"""The Source: a selection of a data set's items, their fingerprint, and batched decoding."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np

from .arrays import ArrayBackend
from .decode import Geometry
from .errors import BadImageError, BadImageWarning, DataError, check_positive_int
from .folder import FolderBackend

ON_ERROR = ("fail", "skip")
PREFETCH = 2  # batches decoded ahead of the one the caller is consuming
FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class Batch:
    """Consecutive items of a source (bad ones dropped under on_error='skip').

    index: (B,) int64 positions within the source; images: (B, H, W, C) uint8, C = 1 or 3;
    labels: (B,) int64; ids: (B,) str.
    """

    index: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray


class Source:
    """The items of one split (and subset) of a data set, in the data set's order.

    Attributes:
        spec, split, on_error: as given to open_source; selection: its per_class, limit, seed
            and val_fraction.
        class_names: every class of the data set (also those a subset lacks), or of `classes`.
        labels: (N,) int64.  ids: (N,) str.
        native_shape: (H, W, C) for array sources, None for folders (sizes vary).
        skipped: (id, reason) of bad images dropped by the latest iter_batches under on_error='skip'.
    """

    def __init__(self, spec: str, split: str, backend: ArrayBackend | FolderBackend, positions: np.ndarray,
                 params: dict, on_error: str, label_map: np.ndarray, class_names: list[str]) -> None:
        self.spec, self.split, self.on_error = spec, split, on_error
        self._backend, self._positions, self._params = backend, positions, params
        self.class_names: list[str] = list(class_names)
        self.labels: np.ndarray = label_map[backend.labels[positions]]
        self.ids: np.ndarray = backend.ids(positions)
        self.native_shape: tuple[int, int, int] | None = backend.native_shape
        self.skipped: list[tuple[str, str]] = []

    @property
    def selection(self) -> dict:
        """The parameters that chose the items: per_class, limit, seed, val_fraction."""
        return dict(self._params)

    def __len__(self) -> int:
        return len(self._positions)

    def __repr__(self) -> str:
        return f"Source({self.spec!r}, split={self.split!r}, n={len(self)}, classes={len(self.class_names)})"

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the selected items' content (image bytes, labels) in order, the spec kind,
        split, class names, subset parameters and seed. Recomputed on every access (folders: every
        selected file is read again), so it always reflects the data as it is now."""
        h = hashlib.sha256()
        header = dict(version=FINGERPRINT_VERSION, kind=self._backend.kind, split=self.split, n=len(self),
                      native_shape=self.native_shape, class_names=self.class_names, **self._params)
        h.update(json.dumps(header, sort_keys=True).encode())
        h.update(self.labels.astype("<i8").tobytes())
        for chunk in self._backend.content(self._positions):
            h.update(chunk)
        return h.hexdigest()

    def iter_batches(self, batch_size: int, *, start: int = 0, stop: int | None = None,
                     geometry: Geometry | None = None, num_threads: int = 4) -> Iterator[Batch]:
        """Yields the items from position `start` on, in order, decoded ahead of the caller.

        Args:
            batch_size: items per batch (batches hold fewer where bad images were skipped, and
                the last may be short).
            start: position of the first item (resume): the same items are always skipped.
            stop: position after the last item (default: the end).
            geometry: size of every image; required for folder sources; array sources keep
                their native size (and channels) when None.
            num_threads: decoding threads; up to PREFETCH batches are decoded ahead.
        Returns:
            an iterator of Batch; empty batches (all items bad) are not yielded.
        Raises:
            BadImageError: during iteration, under on_error='fail'.
        """
        check_positive_int("batch_size", batch_size)
        check_positive_int("num_threads", num_threads)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(self):
            raise DataError(f"start must be an int in [0, {len(self)}], got {start!r}")
        stop = len(self) if stop is None else stop
        if isinstance(stop, bool) or not isinstance(stop, int) or not start <= stop <= len(self):
            raise DataError(f"stop must be None or an int in [start={start}, {len(self)}], got {stop!r}")
        if geometry is None and self._backend.file_based:
            raise DataError(f"{self.spec}: images of a folder vary in size; pass "
                            "geometry=Geometry(resolution=..., resize=...)")
        if geometry is not None and not isinstance(geometry, Geometry):
            raise TypeError(f"geometry must be a Geometry or None, got {type(geometry).__name__}")
        self.skipped = []
        chunks = (np.arange(lo, min(lo + batch_size, stop)) for lo in range(start, stop, batch_size))
        return self._batches(chunks, geometry, num_threads)

    def _batches(self, chunks: Iterator[np.ndarray], geometry: Geometry | None, num_threads: int) -> Iterator[Batch]:
        """Keeps PREFETCH + 1 batches in flight in the pool and yields them in order."""
        pool = ThreadPoolExecutor(num_threads, thread_name_prefix="decode")

        def submit(chunk: np.ndarray) -> tuple[np.ndarray, list]:
            return chunk, self._backend.submit(self._positions[chunk], geometry, pool)

        try:
            pending = deque(submit(c) for c in islice(chunks, PREFETCH + 1))
            while pending:
                chunk, parts = pending.popleft()
                following = next(chunks, None)
                if following is not None:
                    pending.append(submit(following))
                batch = self._gather(chunk, parts)
                if batch is not None:
                    yield batch
        finally:  # the caller may stop early: drop what was not started
            pool.shutdown(wait=True, cancel_futures=True)

    def _gather(self, chunk: np.ndarray, parts: list) -> Batch | None:
        """Waits for one batch's decodes; applies the on_error policy."""
        kept, images = [], []
        offset = 0
        for count, future in parts:
            try:
                images.append(future.result())
                kept.append(chunk[offset:offset + count])
            except BadImageError as e:
                if self.on_error == "fail":
                    raise
                self.skipped.append((e.item_id, e.reason))
                warnings.warn(f"skipping {e}", BadImageWarning, stacklevel=3)  # the caller of next()
            offset += count
        if not images:
            return None
        index = np.concatenate(kept)
        return Batch(index=index, images=np.concatenate(images), labels=self.labels[index], ids=self.ids[index])
