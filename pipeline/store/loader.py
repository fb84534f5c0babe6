"""Batches for training code, read from an entry's HDF5 file block by block (never the whole dataset)."""

from collections.abc import Iterator

import numpy as np

from .entry import Entry, read_rows

# Rows of one shuffle window: this many bytes of features are held in memory and shuffled together.
BUFFER_BYTES = 16 << 20


def _selected_rows(n: int, rows: np.ndarray | None) -> np.ndarray:
    """Sorted row indices to serve: all rows, or a validated subset (1-D ints in [0, n), no repeats)."""
    if rows is None:
        return np.arange(n)
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise TypeError(f"rows must be a 1-D integer array, got shape {rows.shape} dtype {rows.dtype}")
    bad = rows[(rows < 0) | (rows >= n)]
    if bad.size:
        raise ValueError(f"rows must be in [0, {n}); out of range: {bad[:10].tolist()}")
    out = np.sort(rows.astype(np.int64))
    repeated = np.unique(out[1:][out[1:] == out[:-1]])
    if repeated.size:
        raise ValueError(f"rows must not repeat; repeated: {repeated[:10].tolist()}")
    return out


def _batches(entry: Entry, tap: str, batch_size: int, rng: np.random.Generator | None, drop_last: bool,
             selected: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The generator behind iter_batches (arguments already validated)."""
    labels = entry.labels
    with entry.open() as f:
        ds = f[f"features/{tap}"]
        block = ds.chunks[0] if ds.chunks else max(1, entry.n)
        # One group per HDF5 chunk that holds selected rows; a group is read as one contiguous slice.
        cuts = np.flatnonzero(np.diff(selected // block)) + 1
        groups = np.split(selected, cuts) if selected.size else []
        order = rng.permutation(len(groups)) if rng is not None else np.arange(len(groups))
        row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
        per_window = max(1, BUFFER_BYTES // (row_bytes * block))
        pending_x, pending_y = np.empty((0, *ds.shape[1:]), ds.dtype), labels[0:0]
        for w in range(0, len(order), per_window):
            window = [groups[i] for i in order[w:w + per_window]]
            xs = [read_rows(entry.path, ds, g[0], g[-1] + 1)[g - g[0]] for g in window]
            x = np.concatenate([pending_x, *xs])
            y = np.concatenate([pending_y, *(labels[g] for g in window)])
            if rng is not None:
                perm = rng.permutation(len(x))
                x, y = x[perm], y[perm]
            full = len(x) // batch_size * batch_size
            for s in range(0, full, batch_size):
                yield x[s:s + batch_size], y[s:s + batch_size]
            pending_x, pending_y = x[full:], y[full:]
        if len(pending_x) and not drop_last:
            yield pending_x, pending_y


def iter_batches(entry: Entry, tap: str, batch_size: int, *, seed: int | None = 0, shuffle: bool = True,
                 drop_last: bool = False, rows: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (features, labels) batches, streamed from the file.

    Shuffling permutes the HDF5 chunks (so reads stay contiguous) and then rows within a window of
    about BUFFER_BYTES of chunks. Every selected row appears exactly once per epoch; the order is a
    function of `seed` (vary it per epoch, e.g. seed + epoch; None draws fresh entropy).

    Args:
        entry: a complete Entry. tap: one of entry.taps. batch_size: rows per batch (> 0).
        seed: shuffle seed. shuffle: False serves rows in stored order.
        drop_last: skip a final batch smaller than batch_size.
        rows: optional subset of row indices (1-D, unique, in [0, entry.n)); default all rows.
    Returns:
        An iterator of (features (B, *shape), labels (B,) int64).
    """
    tap = entry.resolve_tap(tap)
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    selected = _selected_rows(entry.n, rows)
    rng = np.random.default_rng(seed) if shuffle else None
    return _batches(entry, tap, int(batch_size), rng, drop_last, selected)


def load(entry: Entry, tap: str) -> tuple[np.ndarray, np.ndarray]:
    """All features and labels of one tap, for data that fits in memory.

    Returns:
        (X (N, *shape), y (N,) int64).
    """
    return entry.features(tap), entry.labels
