"""Reading a finished entry: validation on open, metadata, full loads and a finiteness re-check."""

import json
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from pipeline.taps import resolve_taps

from .codec import canonical_json, read_attrs
from .errors import CorruptEntryError, NonFiniteFeaturesError, remove_hint
from .keys import digest_of
from .spec import RESERVED_TAP_ATTRS

REQUIRED_ATTRS = ("key", "key_digest", "n", "skipped", "created")
REQUIRED_DATASETS = ("features", "labels", "ids", "class_names")


class TapInfo(NamedTuple):
    """One stored tap: per-item shape, declared compute dtype, stride (or None) and the caller's extra attrs."""

    shape: tuple[int, ...]
    dtype: str
    stride: int | None
    attrs: dict[str, Any]


def corrupt(path: Path, why: str) -> CorruptEntryError:
    """The error for an unusable file, naming it and the command that removes it."""
    return CorruptEntryError(f"{path} is not a usable feature-cache entry: {why}; delete it with "
                             f"`{remove_hint(str(path))}` and extract again")


def read_rows(path: Path, ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    """ds[start:stop]; a failed read (checksum mismatch, truncation) becomes CorruptEntryError."""
    try:
        return ds[start:stop]
    except OSError as e:
        raise corrupt(path, f"reading {ds.name}[{start}:{stop}] failed ({e})") from e


class Entry:
    """A finished cache entry. Metadata is read on open; labels, ids and features on demand.

    Attributes:
        path: the .h5 file. key: the key components (with format_version). n: number of rows.
        taps: tap name -> TapInfo, in declared order. class_names: (C,) label names.
        skipped: (id, reason) of items left out. attrs: every file attribute, decoded.
    """

    def __init__(self, path: Path, key: dict[str, Any], n: int, taps: dict[str, TapInfo],
                 class_names: list[str], skipped: list[tuple[str, str]], attrs: dict[str, Any]) -> None:
        self.path, self.key, self.n, self.taps = path, key, n, taps
        self.class_names, self.skipped, self.attrs = class_names, skipped, attrs

    def __repr__(self) -> str:
        return f"Entry({self.path.name}, n={self.n}, taps={list(self.taps)})"

    @property
    def digest(self) -> str:
        """Full sha256 hex digest of the key."""
        return self.attrs["key_digest"]

    @property
    def created(self) -> str:
        """Creation time, ISO 8601 UTC."""
        return self.attrs["created"]

    def open(self) -> h5py.File:
        """The file opened read-only for direct h5py access (use as a context manager)."""
        # Entries are immutable once renamed into place, so HDF5's own file locking (which fails on some
        # network filesystems) buys nothing.
        return h5py.File(self.path, "r", locking=False)

    def resolve_tap(self, tap: str | int) -> str:
        """The name of a tap given by name or index (negative allowed, as `extract --layer`); an unknown tap
        raises ValueError listing the entry's taps."""
        try:
            (name,) = resolve_taps(list(self.taps), [tap])
        except ValueError:
            raise ValueError(f"tap {tap!r} is not in {self.path.name}; its taps: {list(self.taps)}") from None
        return name

    def tap(self, name: str | int) -> TapInfo:
        """TapInfo of a tap given by name or index; an unknown tap raises ValueError listing the entry's taps."""
        return self.taps[self.resolve_tap(name)]

    @cached_property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels."""
        with self.open() as f:
            return read_rows(self.path, f["labels"], 0, self.n)

    @cached_property
    def ids(self) -> list[str]:
        """(N,) item ids."""
        with self.open() as f:
            return read_rows(self.path, f["ids"].asstr(), 0, self.n).tolist()

    def features(self, tap: str | int) -> np.ndarray:
        """All features of one tap (name or index), (N, *shape), in the stored dtype (float32 for bfloat16 taps)."""
        tap = self.resolve_tap(tap)
        with self.open() as f:
            return read_rows(self.path, f[f"features/{tap}"], 0, self.n)

    def verify(self) -> None:
        """Re-read every feature chunk and the labels; raise on NaN/Inf (naming ids) or on corruption."""
        bad_labels = np.flatnonzero((self.labels < 0) | (self.labels >= len(self.class_names)))
        if bad_labels.size:
            raise corrupt(self.path, f"{bad_labels.size} label(s) outside [0, {len(self.class_names)}), "
                                     f"ids {[self.ids[i] for i in bad_labels[:10]]}")
        with self.open() as f:
            for tap in self.taps:
                ds = f[f"features/{tap}"]
                step = ds.chunks[0] if ds.chunks else max(1, self.n)
                bad: list[int] = []
                for start in range(0, self.n, step):
                    x = read_rows(self.path, ds, start, start + step)
                    bad += (start + np.flatnonzero(~np.isfinite(x).all(axis=tuple(range(1, x.ndim))))).tolist()
                if bad:
                    raise NonFiniteFeaturesError(tap, [self.ids[i] for i in bad], context=f" in {self.path}")


def _tap_info(path: Path, ds: Any) -> TapInfo:
    """TapInfo of one stored dataset, checking its shape against the recorded per-item shape."""
    if not isinstance(ds, h5py.Dataset):
        raise corrupt(path, f"{ds.name} is not a dataset")
    a = read_attrs(ds.attrs)
    shape = tuple(a.get("shape_per_item", ()))
    if "compute_dtype" not in a or tuple(ds.shape[1:]) != shape:
        raise corrupt(path, f"{ds.name} has shape {ds.shape}, recorded per-item shape {shape}")
    return TapInfo(shape, a["compute_dtype"], a.get("stride"),
                   {k: v for k, v in a.items() if k not in RESERVED_TAP_ATTRS})


def _read_entry(path: Path, f: h5py.File) -> Entry:
    """Validate an open file's metadata and build its Entry."""
    attrs = read_attrs(f.attrs)
    if attrs.get("complete") is not True:
        raise corrupt(path, "attribute 'complete' is missing (the write never finished)")
    missing = [a for a in REQUIRED_ATTRS if a not in attrs] + [d for d in REQUIRED_DATASETS if d not in f]
    if missing:
        raise corrupt(path, f"missing {missing}")
    key = json.loads(attrs["key"])
    if not isinstance(key, dict) or digest_of(canonical_json(key)) != attrs["key_digest"]:
        raise corrupt(path, "its stored key does not match its key_digest")
    n = attrs["n"]
    if not isinstance(n, int) or n < 0:
        raise corrupt(path, f"attribute n={n!r} is not a row count")
    taps = {name: _tap_info(path, ds) for name, ds in f["features"].items()}
    if not taps:
        raise corrupt(path, "it has no features/<tap> datasets")
    rows = {"labels": f["labels"].shape, "ids": f["ids"].shape,
            **{f"features/{t}": f[f"features/{t}"].shape[:1] for t in taps}}
    wrong = {name: shape for name, shape in rows.items() if shape != (n,)}
    if wrong:
        raise corrupt(path, f"row counts disagree with n={n}: {wrong}")
    if f["labels"].dtype != np.int64 or h5py.check_string_dtype(f["ids"].dtype) is None:
        raise corrupt(path, f"labels must be int64 and ids strings, got {f['labels'].dtype} and {f['ids'].dtype}")
    class_names = f["class_names"].asstr()[...].tolist()
    return Entry(path, key, n, taps, class_names, [tuple(s) for s in attrs["skipped"]], attrs)


def open_entry(path: str | Path) -> Entry:
    """Open and validate one entry file.

    Args:
        path: an .h5 entry file.
    Returns:
        The Entry; a truncated, non-HDF5, unfinished or inconsistent file raises CorruptEntryError
        (naming the file and `python -m pipeline cache rm`), a missing one FileNotFoundError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no cache entry file at {path}")
    try:
        with h5py.File(path, "r", locking=False) as f:
            return _read_entry(path, f)
    except CorruptEntryError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise corrupt(path, f"{type(e).__name__}: {e}") from e


def check_key(entry: Entry, key: Mapping[str, Any]) -> Entry:
    """Guard against digest collisions and edited files: the stored key must equal the requested one."""
    if entry.key != key:
        differing = sorted(k for k in set(entry.key) | set(key) if entry.key.get(k) != key.get(k))
        raise corrupt(entry.path, f"its stored key differs from the requested key in {differing}")
    return entry
