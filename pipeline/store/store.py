"""FeatureStore: a directory of entries; lookup, writers, listing, resolving, removal and garbage collection."""

import os
import re
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from ..paths import cache_dir
from .codec import canonical_json
from .entry import Entry, check_key, open_entry
from .errors import CorruptEntryError, DamagedEntryWarning, EntryLockedError, NonFiniteFeaturesError
from .keys import NAME_CHARS, digest_of, key_components
from .shards import count_rows, read_manifest
from .spec import TapSpec
from .writer import EntryWriter, entry_paths

ARTIFACT_RE = re.compile(rf"^([0-9a-f]{{{NAME_CHARS}}})\.(h5|h5\.tmp|partial|lock)$")


@dataclass
class EntryInfo:
    """One listed entry.

    Attributes:
        path: the .h5 file, or the .partial directory (or leftover .h5.tmp) of an unfinished entry.
        digest: the 16 hex characters naming the files. status: 'complete', 'partial' or 'corrupt'.
        key: key components (None when unreadable). n: rows stored so far (None when unknown).
        feature_shapes: tap -> per-item shape. size_bytes: bytes of all the entry's files.
        age_s: seconds since last modification. created: ISO 8601 UTC creation time of complete entries.
        locked: a live writer holds it. error: why a corrupt entry is unusable.
    """

    path: Path
    digest: str
    status: str
    key: dict[str, Any] | None
    n: int | None
    feature_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    size_bytes: int = 0
    age_s: float = 0.0
    created: str | None = None
    locked: bool = False
    error: str | None = None

    @property
    def complete(self) -> bool:
        """Whether the entry can be served."""
        return self.status == "complete"

    @property
    def taps(self) -> list[str]:
        """Tap names in declared order."""
        return list(self.feature_shapes)

    def _component(self, name: str) -> Any:
        """One key component, or None when unknown or absent."""
        return (self.key or {}).get(name)

    @property
    def backbone(self) -> Any:
        """Key component 'backbone'."""
        return self._component("backbone")

    @property
    def dataset(self) -> Any:
        """Key component 'dataset' (the data source spec)."""
        return self._component("dataset")

    @property
    def split(self) -> Any:
        """Key component 'split'."""
        return self._component("split")


def _size(path: Path) -> int:
    """Bytes of a file, or of all files under a directory."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _mtime(path: Path) -> float:
    """Last modification of a file, or of the newest file in a directory."""
    if path.is_dir():
        return max([p.stat().st_mtime for p in path.iterdir()] + [path.stat().st_mtime])
    return path.stat().st_mtime


def _is_locked(lock_path: Path) -> bool:
    """Whether a live writer holds the lock (a dead process's flock is released by the kernel)."""
    if not lock_path.exists():
        return False
    lock = filelock.FileLock(str(lock_path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return True
    lock.release()
    return False


class FeatureStore:
    """A directory of cache entries, one `<digest16>.h5` per key.

    Args:
        root: store directory; None -> $PIPELINE_CACHE_DIR, else ./cache. Created when first written.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    def path_for(self, key: Mapping[str, Any]) -> Path:
        """The .h5 path the entry of `key` has (whether or not it exists)."""
        return entry_paths(self.root, digest_of(canonical_json(key_components(key))))["final"]

    def writer(self, key: Mapping[str, Any], taps: Mapping[str, TapSpec], *, class_names: Sequence[str],
               attrs: Mapping[str, Any] | None = None, compression: str | None = None,
               timeout: float | None = None) -> EntryWriter:
        """A writer for the entry of `key`; use it as a context manager (see EntryWriter).

        Args:
            key: plain JSON-able key components (see entry_key).
            taps: tap name -> TapSpec(shape per item, dtype, stride, attrs), in shallow-to-deep order.
            class_names: (C,) label names; labels must lie in [0, C).
            attrs: extra JSON-able file attributes (e.g. jax/flax versions).
            compression: None (fastest), 'lzf' or 'gzip' (level 1).
            timeout: seconds to wait for another writer of the same key; None waits forever.
        Returns:
            An EntryWriter (not yet holding the lock; entering it does).
        """
        return EntryWriter(self.root, key, taps, class_names=class_names, attrs=attrs, compression=compression,
                           timeout=timeout)

    def find(self, key: Mapping[str, Any], *, replace_damaged: bool = False) -> Entry | None:
        """The complete, verified entry of `key`, or None.

        Partial extractions are never served. Every dataset is re-read and checked against its digest
        (Entry.verify), so a hit is exactly what was written. A damaged file, or one whose stored key differs,
        raises CorruptEntryError naming `cache rm`; with replace_damaged (the extractor's choice) it is
        removed with a warning and None is returned, so the caller computes the entry again.
        """
        components = key_components(key)
        path = self.path_for(components)
        if not path.is_file():
            return None
        try:
            entry = check_key(open_entry(path), components)
            entry.verify()
        except (CorruptEntryError, NonFiniteFeaturesError) as err:
            if not replace_damaged:
                raise
            warnings.warn(f"{err} -- removing it and computing the entry again", DamagedEntryWarning, stacklevel=2)
            try:
                self._remove_digest(self.root, path.name[:NAME_CHARS])
            except EntryLockedError:
                pass  # another extraction holds the key: it is replacing the file; our writer waits for it
            return None
        return entry

    def _groups(self) -> dict[str, dict[str, Path]]:
        """Digest -> {'h5'|'h5.tmp'|'partial'|'lock': path} for everything under the root."""
        groups: dict[str, dict[str, Path]] = {}
        if self.root.is_dir():
            for path in sorted(self.root.iterdir()):
                if match := ARTIFACT_RE.match(path.name):
                    groups.setdefault(match.group(1), {})[match.group(2)] = path
        return groups

    def _info(self, digest: str, parts: dict[str, Path], now: float) -> EntryInfo:
        """Describe one digest's artifacts."""
        size = sum(_size(p) for kind, p in parts.items() if kind != "lock")
        locked = "lock" in parts and _is_locked(parts["lock"])
        if "h5" in parts:
            path = parts["h5"]
            age = now - _mtime(path)
            try:
                e = open_entry(path)
            except CorruptEntryError as err:
                return EntryInfo(path, digest, "corrupt", None, None, {}, size, age, locked=locked, error=str(err))
            shapes = {t: info.shape for t, info in e.taps.items()}
            return EntryInfo(path, digest, "complete", e.key, e.n, shapes, size, age, e.created, locked)
        path = parts.get("partial") or parts.get("h5.tmp") or parts["lock"]
        manifest = read_manifest(path) if path.is_dir() else None
        shapes = {t: tuple(s["shape"]) for t, s in (manifest or {}).get("taps", {}).items()}
        n = count_rows(path) if path.is_dir() else None
        return EntryInfo(path, digest, "partial", (manifest or {}).get("key"), n, shapes, size,
                         now - _mtime(path), None, locked)

    def entries(self) -> list[EntryInfo]:
        """Every entry under the root, complete, partial or corrupt, sorted by digest."""
        now = time.time()
        return [self._info(d, parts, now) for d, parts in self._groups().items()
                if set(parts) != {"lock"}]

    def resolve(self, ref: str | os.PathLike) -> Path:
        """The entry path a user reference names (for reading: a path may point into another store).

        Args:
            ref: a unique digest prefix, a file name in the store (`<digest>.h5`, `.partial`), or a path.
        Returns:
            The .h5 file, or the .partial directory of an entry that has no finished file.
        """
        text = os.fspath(ref)
        path = Path(text)
        for candidate in (path, self.root / text):
            if ARTIFACT_RE.match(candidate.name) and (candidate.exists() or candidate.is_symlink()):
                return candidate
        groups = self._groups()
        available = sorted(d for d, parts in groups.items() if set(parts) != {"lock"})
        prefix = text.lower()
        matches = [d for d in available if prefix and d.startswith(prefix)]
        if len(matches) > 1:
            raise ValueError(f"{text!r} matches several entries: {matches}; give more digest characters")
        if not matches:
            listing = available if available else f"none (the store {self.root} is empty)"
            raise ValueError(f"no cache entry matches {text!r} in {self.root}; available: {listing}")
        parts = groups[matches[0]]
        return parts.get("h5") or parts.get("partial") or parts["h5.tmp"]

    def artifact(self, ref: str | os.PathLike) -> Path:
        """resolve(ref), only if it names something this store wrote: directly inside the root once every
        link and `..` is resolved, with a store-written name, and of that kind (not a link); else ValueError.

        This is the rule `cache rm` and `cache info` act under, so they can never touch a file elsewhere.
        """
        path = self.resolve(ref)
        match = ARTIFACT_RE.match(path.name)
        kind_ok = match is not None and not path.is_symlink() and (
            path.is_dir() if match.group(2) == "partial" else path.is_file())
        if path.parent.resolve() != self.root.resolve() or not kind_ok:
            raise ValueError(
                f"{os.fspath(ref)!r} ({path.resolve()}) is not an artifact of the store {self.root.resolve()}: "
                "cache commands act only on what the store writes directly inside its root (<16 hex digits>.h5 "
                "and .h5.tmp files, .partial directories), never on links or paths elsewhere")
        return path

    def _remove_digest(self, directory: Path, name: str, keep_final: bool = False) -> list[Path]:
        """Delete one digest's artifacts while holding its lock, so no writer is cut off mid-way."""
        paths = entry_paths(directory, name)
        lock = filelock.FileLock(str(paths["lock"]), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise EntryLockedError(f"{paths['lock']} is held: a process is writing this entry; "
                                   "retry once it has finished") from None
        removed = []
        try:
            for kind in ("tmp", "partial") if keep_final else ("final", "tmp", "partial"):
                path = paths[kind]
                if path.is_symlink() or path.is_file():
                    path.unlink()  # a link is removed itself: what it points to is not the store's
                    removed.append(path)
                elif path.is_dir():
                    shutil.rmtree(path)
                    removed.append(path)
            # Waiters on the unlinked lock file notice it is gone and retry on a fresh one.
            paths["lock"].unlink(missing_ok=True)
        finally:
            lock.release()
        return removed

    def remove(self, ref: str | os.PathLike) -> list[Path]:
        """Delete the entry `ref` names (see artifact: only inside the store) with its partial directory,
        temp file and lock.

        Returns:
            The removed paths (the lock file not included).
        """
        path = self.artifact(ref)
        return self._remove_digest(self.root, path.name[:NAME_CHARS])

    def gc(self, *, incomplete: bool = True, older_than_s: float | None = None) -> list[Path]:
        """Delete what cannot or should not be served; entries a live writer holds are left alone.

        Args:
            incomplete: remove partial extractions, leftover temp files and corrupt files.
            older_than_s: also remove entries (complete or not) last modified more than this many seconds ago.
        Returns:
            The removed paths.
        """
        if older_than_s is not None and not older_than_s >= 0:
            raise ValueError(f"older_than_s must be None or >= 0 seconds, got {older_than_s!r}")
        removed: list[Path] = []
        groups = self._groups()
        for digest, parts in groups.items():
            info = self._info(digest, parts, time.time()) if set(parts) != {"lock"} else None
            old = info is not None and older_than_s is not None and info.age_s > older_than_s
            # A crash after the final rename can leave the partial directory or temp file of a complete entry.
            leftovers = incomplete and set(parts) - {"h5", "lock"}
            if not (old or leftovers or (incomplete and (info is None or not info.complete))):
                continue
            try:
                removed += self._remove_digest(self.root, digest, keep_final=not old and info is not None
                                               and info.complete)
            except EntryLockedError:
                continue  # a live writer owns it
        return removed
