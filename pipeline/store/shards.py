"""The partial-extraction directory: a manifest plus row-range shards, each made visible by an atomic rename."""

import json
import os
import re
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .codec import canonical_json
from .errors import NO_SPACE, StoreSpaceError
from .spec import STORAGE_DTYPES, TapSpec

MANIFEST = "manifest.json"
SHARD_RE = re.compile(r"^(\d{8})\.npz$")
FEATURE_PREFIX = "features."


def shard_path(partial: Path, seq: int) -> Path:
    """Path of the seq-th shard; shards are numbered consecutively from 0."""
    return partial / f"{seq:08d}.npz"


def _durable_write(path: Path, write: Any, size: int = 0, tmp_suffix: str = ".tmp") -> None:
    """Write via a temp name, fsync, then rename: a reader sees the whole file or none of it.

    A full disk removes the temp file and raises StoreSpaceError naming `size` (the bytes to write).
    """
    tmp = path.with_name(path.name + tmp_suffix)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in NO_SPACE:
            raise StoreSpaceError(path.parent, size, what=f"{path.name}") from e
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(partial: Path, manifest: Mapping[str, Any]) -> None:
    """Record what this partial directory is extracting (key, tap layouts, class names)."""
    _durable_write(partial / MANIFEST, lambda f: f.write(canonical_json(manifest).encode("ascii")))


def read_manifest(partial: Path) -> dict[str, Any] | None:
    """The manifest, or None when it is missing or unreadable."""
    try:
        return json.loads((partial / MANIFEST).read_text("ascii"))
    except (OSError, ValueError):
        return None


def write_shard(partial: Path, seq: int, features: Mapping[str, np.ndarray], labels: np.ndarray,
                ids: Sequence[str], skipped: Sequence[tuple[str, str]]) -> None:
    """Durably store one appended batch (rows may be 0 when the batch only carries skipped items)."""
    write_shard_file(shard_path(partial, seq), features, labels, ids, skipped)


def write_shard_file(path: Path, features: Mapping[str, np.ndarray], labels: np.ndarray, ids: Sequence[str],
                     skipped: Sequence[tuple[str, str]], tmp_suffix: str = ".tmp") -> None:
    """Durably store one shard at `path`; writers that may race on one name pass a unique `tmp_suffix`."""
    arrays = {FEATURE_PREFIX + tap: x for tap, x in features.items()}
    arrays["labels"] = np.asarray(labels, dtype=np.int64)
    arrays["ids"] = np.array(list(ids), dtype=np.str_).reshape(len(ids))
    arrays["skipped"] = np.array([list(s) for s in skipped], dtype=np.str_).reshape(len(skipped), 2)
    _durable_write(path, lambda f: np.savez(f, **arrays), sum(a.nbytes for a in arrays.values()), tmp_suffix)


def read_shard(path: Path, taps: Mapping[str, TapSpec]) -> dict[str, np.ndarray] | None:
    """Load and check one shard; None when it is missing, truncated or does not match the tap layouts."""
    expected = {FEATURE_PREFIX + t for t in taps} | {"labels", "ids", "skipped"}
    try:
        with np.load(path, allow_pickle=False) as npz:
            if set(npz.files) != expected:
                return None
            data = {name: npz[name] for name in expected}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    rows = data["labels"].shape[0] if data["labels"].ndim == 1 else -1
    ok = (data["labels"].dtype == np.int64 and data["ids"].shape == (rows,) and data["ids"].dtype.kind == "U"
          and data["skipped"].ndim == 2 and data["skipped"].shape[1] == 2)
    for tap, spec in taps.items():
        x = data[FEATURE_PREFIX + tap]
        ok = ok and x.shape == (rows, *spec.shape) and x.dtype == np.dtype(STORAGE_DTYPES[spec.dtype])
    return data if ok else None


def shard_skipped(data: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """The (id, reason) pairs a shard carries."""
    return [(str(i), str(r)) for i, r in data["skipped"]]


def scan_shards(partial: Path, taps: Mapping[str, TapSpec]) -> tuple[int, int, list[tuple[str, str]]]:
    """Find the durable prefix of a partial extraction and delete everything after it.

    Returns:
        (number of valid consecutive shards, rows they hold, skipped items they carry).
    """
    for tmp in partial.glob("*.tmp"):
        tmp.unlink()
    seq, rows, skipped = 0, 0, []
    while (data := read_shard(shard_path(partial, seq), taps)) is not None:
        rows += data["labels"].shape[0]
        skipped += shard_skipped(data)
        seq += 1
    # Shards past the first bad one were written after a state we no longer trust; they are redone.
    for path in partial.iterdir():
        match = SHARD_RE.match(path.name)
        if match and int(match.group(1)) >= seq:
            path.unlink()
    return seq, rows, skipped


def count_rows(partial: Path) -> int:
    """Rows in the readable consecutive shards, reading only each shard's labels (for listings)."""
    seq, rows = 0, 0
    while True:
        try:
            with np.load(shard_path(partial, seq), allow_pickle=False) as npz:
                rows += npz["labels"].shape[0]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return rows
        seq += 1


def reset_partial(partial: Path, manifest: Mapping[str, Any]) -> None:
    """Start a fresh partial directory holding only the manifest."""
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_manifest(partial, manifest)
