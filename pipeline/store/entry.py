"""Reading a finished entry: validation on open (structure, digests), metadata, checked loads, verification,
and the pairing rule for entries evaluated together."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from pipeline.taps import resolve_taps

from .codec import canonical_json, read_attrs
from .digests import CONTENT_DIGEST, CONTENTS, ContentHasher, content_digest
from .errors import CorruptEntryError, NonFiniteFeaturesError, remove_hint
from .keys import digest_of
from .spec import RESERVED_TAP_ATTRS

REQUIRED_ATTRS = ("key", "key_digest", "n", "skipped", "created", CONTENTS, CONTENT_DIGEST)
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
    """A finished cache entry. Metadata, labels, ids and class names are read and checked against their
    digests on open; features on demand, checked against theirs.

    Attributes:
        path: the .h5 file. key: the key components (with format_version). n: number of rows.
        taps: tap name -> TapInfo, in declared order. class_names: (C,) label names.
        labels: (N,) int64 in [0, C). ids: (N,) item ids.
        skipped: (id, reason) of items left out. attrs: every file attribute, decoded.
    """

    def __init__(self, path: Path, key: dict[str, Any], n: int, taps: dict[str, TapInfo],
                 class_names: list[str], skipped: list[tuple[str, str]], attrs: dict[str, Any],
                 labels: np.ndarray, ids: list[str]) -> None:
        self.path, self.key, self.n, self.taps = path, key, n, taps
        self.class_names, self.skipped, self.attrs = class_names, skipped, attrs
        self.labels, self.ids = labels, ids  # (N,) int64 and (N,) str, checked against their digests on open

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

    def features(self, tap: str | int) -> np.ndarray:
        """All features of one tap (name or index), (N, *shape), in the stored dtype (float32 for bfloat16
        taps); checked against the tap's sha256, so a damaged entry is an error, never served."""
        tap = self.resolve_tap(tap)
        with self.open() as f:
            x = read_rows(self.path, f[f"features/{tap}"], 0, self.n)
        _check_digest(self.path, self.attrs[CONTENTS], f"features/{tap}", x)
        return x

    def verify(self) -> None:
        """Re-read every feature chunk; raise on NaN/Inf (naming ids), a failed checksum or a digest mismatch.

        (Labels, ids and class names were verified on open.)
        """
        with self.open() as f:
            for tap in self.taps:
                name = f"features/{tap}"
                ds, hasher = f[name], ContentHasher([name])
                step = ds.chunks[0] if ds.chunks else max(1, self.n)
                bad: list[int] = []
                for start in range(0, self.n, step):  # memory: one chunk at a time
                    x = read_rows(self.path, ds, start, start + step)
                    bad += (start + np.flatnonzero(~np.isfinite(x).all(axis=tuple(range(1, x.ndim))))).tolist()
                    hasher.update(name, x)
                if bad:
                    raise NonFiniteFeaturesError(tap, [self.ids[i] for i in bad], context=f" in {self.path}")
                _check_hasher(self.path, self.attrs[CONTENTS], name, hasher)


def _check_hasher(path: Path, contents: Mapping[str, Any], name: str, hasher: ContentHasher) -> None:
    """A dataset whose bytes differ from the digest recorded at commit is corruption."""
    if hasher.hexdigest(name) != contents[name]["sha256"]:
        raise corrupt(path, f"{name} does not match its sha256 recorded when the entry was written "
                            "(its content changed)")


def _check_digest(path: Path, contents: Mapping[str, Any], name: str, rows: np.ndarray) -> None:
    """_check_hasher for rows read whole."""
    hasher = ContentHasher([name])
    hasher.update(name, rows)
    _check_hasher(path, contents, name, hasher)


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
    contents = attrs[CONTENTS]
    if not isinstance(contents, dict) or content_digest(contents) != attrs[CONTENT_DIGEST]:
        raise corrupt(path, f"its '{CONTENTS}' attribute does not match its {CONTENT_DIGEST}")
    if not isinstance(f["features"], h5py.Group):
        raise corrupt(path, "/features is not a group")
    taps = {name: _tap_info(path, ds) for name, ds in f["features"].items()}
    if not taps:
        raise corrupt(path, "it has no features/<tap> datasets")
    rows = {"labels": f["labels"].shape, "ids": f["ids"].shape,
            **{f"features/{t}": f[f"features/{t}"].shape[:1] for t in taps}}
    wrong = {name: shape for name, shape in rows.items() if shape != (n,)}
    if wrong:
        raise corrupt(path, f"row counts disagree with n={n}: {wrong}")
    # Every dataset written at commit is still there with its shape, and nothing was added.
    stored = {"labels", "ids", "class_names", *(f"features/{t}" for t in taps)}
    missing, extra = sorted(set(contents) - stored), sorted(stored - set(contents))
    if missing or extra:
        raise corrupt(path, f"missing datasets {missing} and unexpected {extra} (written: {sorted(contents)})")
    shapes = {name: list(f[name].shape) for name in contents}
    wrong = {name: shape for name, shape in shapes.items() if shape != contents[name]["shape"]}
    if wrong:
        raise corrupt(path, f"dataset shapes {wrong} differ from those written "
                            f"{ {name: contents[name]['shape'] for name in wrong} }")
    if f["labels"].dtype != np.int64 or h5py.check_string_dtype(f["ids"].dtype) is None:
        raise corrupt(path, f"labels must be int64 and ids strings, got {f['labels'].dtype} and {f['ids'].dtype}")
    class_names = f["class_names"].asstr()[...].tolist()
    labels = read_rows(path, f["labels"], 0, n)
    ids = read_rows(path, f["ids"].asstr(), 0, n).tolist()
    bad = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if bad.size:
        raise corrupt(path, f"{bad.size} label(s) outside [0, {len(class_names)}), ids {[ids[i] for i in bad[:10]]}")
    for name, rows_read in (("labels", labels), ("ids", np.array(ids, dtype=object)),
                            ("class_names", np.array(class_names, dtype=object))):
        _check_digest(path, contents, name, rows_read)
    return Entry(path, key, n, taps, class_names, [tuple(s) for s in attrs["skipped"]], attrs, labels, ids)


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


# Key components that decide what a stored feature means. The taps themselves are compared by what is
# trained on (name, per-item shape, stride, dtype): a tap's values do not depend on which others were stored.
PAIRED_COMPONENTS = ("backbone", "weights_digest", "pool", "preprocessing", "dtype")


def check_pairing(train: Entry, other: Entry, role: str, taps: Sequence[str]) -> None:
    """Refuse a val/test entry that is not another split of the training entry's features.

    Args:
        train: the training entry. other: the entry evaluated against it. role: 'val' or 'test' (for messages).
        taps: the taps a head is trained on.
    Raises:
        ValueError: `other` is the training entry itself, or differs in a PAIRED_COMPONENTS key component, a
            tap's layout or the class names; the message names each difference.
    """
    if other.digest == train.digest:
        raise ValueError(f"the {role} entry {other.path.name} is the training entry itself; pass an entry of "
                         "another split (extract --split test)")
    diffs = [f"{k}: {other.key.get(k)!r:.100} vs {train.key.get(k)!r:.100}" for k in PAIRED_COMPONENTS
             if other.key.get(k) != train.key.get(k)]
    for tap in taps:
        mine, theirs = train.tap(tap), other.taps.get(tap)
        if theirs is None or theirs[:3] != mine[:3]:
            diffs.append(f"tap {tap!r}: {theirs and theirs[:3]} vs {mine[:3]}")
    if other.class_names != train.class_names:
        diffs.append(f"class names: {other.class_names!r:.200} vs {train.class_names!r:.200}")
    if diffs:
        raise ValueError(f"the {role} entry {other.path.name} does not hold the same features as the training entry "
                         f"{train.path.name} ({role} vs train): {'; '.join(diffs)}")
