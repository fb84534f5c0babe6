"""EntryWriter: streaming, validated, resumable and locked creation of one cache entry."""

import json
import os
import platform
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import filelock
import h5py
import numpy as np

from .assemble import assemble
from .codec import JSON_ATTRS, canonical_json, check_jsonable
from .digests import CONTENT_DIGEST, CONTENTS
from .entry import Entry, check_key, open_entry
from .errors import NO_SPACE, CorruptEntryError, EntryLockedError, NonFiniteFeaturesError, StoreSpaceError
from .keys import NAME_CHARS, digest_of, key_components
from .shards import (FEATURE_PREFIX, fsync_dir, read_manifest, read_shard, reset_partial, scan_shards, shard_path,
                     shard_skipped, write_shard)
from .spec import STORAGE_DTYPES, TapSpec, check_compression, normalize_taps, tap_spec_json

# File attributes the store writes itself; key components and caller attrs may not use these names.
RESERVED_FILE_ATTRS = frozenset({"key", "key_digest", "created", "skipped", "n", "complete", JSON_ATTRS, CONTENTS,
                                 CONTENT_DIGEST,
                                 "python_version", "numpy_version", "h5py_version", "hdf5_version"})


def entry_paths(root: Path, digest: str) -> dict[str, Path]:
    """Every path one key can occupy under the store root."""
    name = digest[:NAME_CHARS]
    return {"final": root / f"{name}.h5", "tmp": root / f"{name}.h5.tmp", "partial": root / f"{name}.partial",
            "lock": root / f"{name}.lock"}


def _check_names(key: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    """Key components and caller attrs share the file's attribute namespace with the store's own."""
    for what, names in (("key components", set(key) - {"format_version"}), ("attrs", set(attrs))):
        clash = sorted(names & RESERVED_FILE_ATTRS)
        if clash:
            raise ValueError(f"{what} {clash} clash with attributes the store writes: {sorted(RESERVED_FILE_ATTRS)}")
    clash = sorted(set(key) & set(attrs))
    if clash:
        raise ValueError(f"attrs {clash} clash with key components of the same name; rename them")
    for name, value in attrs.items():
        check_jsonable(value, name, kind="attribute")


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    """Class names: a non-empty sequence of distinct strings."""
    if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
        raise TypeError(f"class_names must be a sequence of str, got {class_names!r:.80}")
    names = _check_ids(class_names, "class_names")
    seen: set[str] = set()
    dupes = sorted({c for c in names if c in seen or seen.add(c)})  # linear: names may number millions
    if not names or dupes:
        raise ValueError(f"class_names must be non-empty and distinct; got {len(names)} names, duplicates {dupes}")
    return names


def _check_ids(ids: Sequence[str], what: str) -> list[str]:
    """Ids are str without NUL (HDF5 strings end at NUL, so such an id would not read back equal)."""
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str) or "\x00" in i]
    if bad:
        raise TypeError(f"{what} must be str without NUL characters; bad: {bad[:10]!r}")
    return ids


def _check_skipped(skipped: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Skipped items as (id, reason) string pairs."""
    pairs = [tuple(s) for s in skipped]
    bad = [s for s in pairs if len(s) != 2]
    if bad:
        raise ValueError(f"skipped items must be (id, reason) pairs; bad: {bad[:10]!r}")
    _check_ids([s for pair in pairs for s in pair], "skipped ids and reasons")
    return pairs


class EntryWriter:
    """Creates one entry; use as a context manager (it holds the per-key lock while open).

    On entering, either `complete` is True (another process finished the entry; `entry` serves it) or
    `n_done` rows are already durably stored from an earlier, interrupted run: the caller continues
    production after them (`n_consumed` = rows + skipped items, the source position when every source
    item was either appended or skipped), appends the rest, then calls `commit`. Leaving the block
    without committing keeps the appended rows for a later resume.
    """

    def __init__(self, root: Path, key: Mapping[str, Any], taps: Mapping[str, TapSpec], *,
                 class_names: Sequence[str], attrs: Mapping[str, Any] | None = None,
                 compression: str | None = None, timeout: float | None = None) -> None:
        self.key = key_components(key)
        self.digest = digest_of(canonical_json(self.key))
        self.taps = normalize_taps(taps)
        self.class_names = _check_class_names(class_names)
        self.attrs = dict(attrs or {})
        _check_names(self.key, self.attrs)
        check_compression(compression)
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be None (wait forever) or >= 0 seconds, got {timeout!r}")
        self.compression, self.timeout = compression, timeout
        self.root = Path(root)
        self.paths = entry_paths(self.root, self.digest)
        self.path = self.paths["final"]
        self._lock = filelock.FileLock(str(self.paths["lock"]), thread_local=False)
        self.entry: Entry | None = None
        self._open = False
        self._seq = self.n_done = 0
        self.skipped: list[tuple[str, str]] = []

    @property
    def complete(self) -> bool:
        """Whether the entry is finished (by this writer's commit or by another process)."""
        return self.entry is not None

    @property
    def n_consumed(self) -> int:
        """Source items accounted for so far: stored rows plus skipped items."""
        return self.n_done + len(self.skipped)

    def __enter__(self) -> "EntryWriter":
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=-1 if self.timeout is None else self.timeout)
        except filelock.Timeout:
            raise EntryLockedError(
                f"another process is extracting this entry: lock file {self.paths['lock']} is held "
                f"(waited {self.timeout:g} s); wait for it to finish or pass a longer timeout") from None
        try:
            if self.path.exists():
                self.entry = check_key(open_entry(self.path), self.key)
                self.n_done = self.entry.n
                self._finish()
            else:
                self._resume()
                self._open = True
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self._open = False
            self._lock.release()

    def _resume(self) -> None:
        """Recover the durable prefix of an earlier run of this key, or start a fresh partial directory."""
        partial = self.paths["partial"]
        manifest = json.loads(canonical_json({"key": self.key, "class_names": self.class_names,
                                              "taps": {t: tap_spec_json(s) for t, s in self.taps.items()}}))
        found = read_manifest(partial)
        if found is None:
            reset_partial(partial, manifest)
        elif found != manifest:
            differing = sorted(k for k in manifest if found.get(k) != manifest[k])
            raise ValueError(f"{partial} holds an interrupted extraction of this key with different {differing}; "
                             f"remove it with `python -m pipeline cache rm {partial.name}` to start over")
        self._seq, self.n_done, self.skipped = scan_shards(partial, self.taps)

    def _finish(self) -> None:
        """Drop leftovers of this key and the lock file; the lock is still held, so no writer is affected."""
        shutil.rmtree(self.paths["partial"], ignore_errors=True)
        self.paths["tmp"].unlink(missing_ok=True)
        # Waiters blocked on the unlinked lock file notice it is gone and retry on a fresh one.
        self.paths["lock"].unlink(missing_ok=True)
        self._open = False
        self._lock.release()

    def _check_writable(self) -> None:
        """Appends and commits need an entered, unfinished writer."""
        if self.complete:
            raise ValueError(f"{self.path} is already complete; serve writer.entry instead of appending")
        if not self._open:
            raise ValueError("use the writer as a context manager (`with store.writer(...) as w:`) before "
                             "appending or committing")

    def _features(self, features: Mapping[str, Any], rows: int, ids: list[str]) -> dict[str, np.ndarray]:
        """Check tap names, shapes and finiteness; return the batch in stored dtypes."""
        missing, extra = sorted(set(self.taps) - set(features)), sorted(set(features) - set(self.taps))
        if missing or extra:
            raise ValueError(f"features must have exactly the declared taps {list(self.taps)}; "
                             f"missing {missing}, extra {extra}")
        out = {}
        for tap, spec in self.taps.items():
            x = np.asarray(features[tap])
            if x.shape != (rows, *spec.shape):
                raise ValueError(f"features[{tap!r}] has shape {x.shape}; expected {(rows, *spec.shape)} "
                                 f"(batch of {rows}, per-item shape {spec.shape})")
            if x.dtype.kind in "OSUbMm":
                raise TypeError(f"features[{tap!r}] has dtype {x.dtype}; expected a numeric (float) array")
            with np.errstate(over="ignore"):  # overflow to inf is reported just below, naming the ids
                x = x.astype(STORAGE_DTYPES[spec.dtype], copy=False)
            bad = np.flatnonzero(~np.isfinite(x).all(axis=tuple(range(1, x.ndim))))
            if bad.size:
                raise NonFiniteFeaturesError(tap, [ids[i] for i in bad], context=f" (stored as {x.dtype})")
            out[tap] = x
        return out

    def append(self, features: Mapping[str, np.ndarray], labels: np.ndarray, ids: Sequence[str], *,
               skipped: Sequence[tuple[str, str]] = ()) -> None:
        """Validate one batch and store it durably (one shard); memory use is that of the batch.

        Args:
            features: tap name -> (B, *TapSpec.shape) array, exactly the declared taps.
            labels: (B,) integer labels in [0, len(class_names)).
            ids: B item ids (str).
            skipped: (id, reason) of source items dropped from this batch; they persist across resume.
        """
        self._check_writable()
        batch, labels, ids, skipped = self._checked(features, labels, ids, skipped)
        if not ids and not skipped:
            return
        write_shard(self.paths["partial"], self._seq, batch, labels, ids, skipped)
        self._count(len(ids), skipped)

    def adopt(self, path: Path) -> None:
        """Append a shard another process wrote (see store.blocks) by renaming it into place, no copy.

        The shard is read and checked exactly as `append` checks a batch; it must lie on this store's
        file system. Raises CorruptEntryError when it is unreadable or its layout differs.
        """
        self._check_writable()
        data = read_shard(Path(path), self.taps)
        if data is None:
            raise CorruptEntryError(f"{path}: missing, truncated or not of this entry's tap layout")
        features = {t: data[FEATURE_PREFIX + t] for t in self.taps}
        _, _, ids, skipped = self._checked(features, data["labels"], data["ids"].tolist(), shard_skipped(data))
        os.replace(path, shard_path(self.paths["partial"], self._seq))
        self._count(len(ids), skipped)

    def _count(self, rows: int, skipped: list[tuple[str, str]]) -> None:
        """Account for one more durable shard."""
        self._seq += 1
        self.n_done += rows
        self.skipped += skipped

    def _checked(self, features: Mapping[str, np.ndarray], labels: np.ndarray, ids: Sequence[str],
                 skipped: Sequence[tuple[str, str]]) -> tuple[dict[str, np.ndarray], np.ndarray, list, list]:
        """One batch validated: features in stored dtypes, labels, ids and skipped pairs."""
        labels = np.asarray(labels)
        ids = _check_ids(ids, "ids")
        if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
            raise TypeError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
        if len(ids) != len(labels):
            raise ValueError(f"batch lengths disagree: {len(labels)} labels, {len(ids)} ids")
        out_of_range = np.flatnonzero((labels < 0) | (labels >= len(self.class_names)))
        if out_of_range.size:
            raise ValueError(f"labels must be in [0, {len(self.class_names)}) (class_names); bad at ids "
                             f"{[ids[i] for i in out_of_range[:10]]}: {labels[out_of_range[:10]].tolist()}")
        return self._features(features, len(labels), ids), labels, ids, _check_skipped(skipped)

    def commit(self, skipped: Sequence[tuple[str, str]] = ()) -> Entry:
        """Assemble all stored rows into `<digest>.h5` atomically and return the finished Entry.

        Args:
            skipped: further (id, reason) items; merged with those appended (duplicates dropped).
        Returns:
            The Entry read back from the final file.
        """
        self._check_writable()
        if self.n_done == 0:
            raise ValueError(f"nothing to commit for {self.path.name}: no rows were appended "
                             f"({len(self.skipped) + len(skipped)} items skipped)")
        empty = {t: np.zeros((0, *s.shape), STORAGE_DTYPES[s.dtype]) for t, s in self.taps.items()}
        self.append(empty, np.zeros(0, np.int64), [], skipped=skipped)
        versions = {"python_version": platform.python_version(), "numpy_version": np.__version__,
                    "h5py_version": h5py.__version__, "hdf5_version": h5py.version.hdf5_version}
        file_attrs = {**self.key, "key": canonical_json(self.key), "key_digest": self.digest, **versions,
                      **self.attrs}
        # HDF5 can crash the process on a full disk, so the room is checked first: the file is about the
        # size of the shards (uncompressed); any failure still removes the temp file.
        needed = sum(p.stat().st_size for p in self.paths["partial"].glob("*.npz")) + (1 << 20)
        free = shutil.disk_usage(self.root).free
        if free < needed:
            raise StoreSpaceError(self.root, needed, free, what=self.paths["tmp"].name)
        try:
            assemble(self.paths["tmp"], self.paths["partial"], self._seq, self.n_done, self.taps, self.class_names,
                     file_attrs, self.compression)
            os.replace(self.paths["tmp"], self.path)
        except BaseException as e:
            self.paths["tmp"].unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno in NO_SPACE:
                raise StoreSpaceError(self.root, needed, shutil.disk_usage(self.root).free,
                                      what=self.paths["tmp"].name) from e
            raise
        fsync_dir(self.root)
        self.entry = open_entry(self.path)
        self.skipped = self.entry.skipped
        self._finish()
        return self.entry
