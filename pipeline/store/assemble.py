"""Commit: stream the shards of a partial extraction, in order, into one HDF5 file."""

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .codec import write_attrs
from .digests import CONTENT_DIGEST, CONTENTS, ContentHasher, content_digest
from .shards import FEATURE_PREFIX, read_shard, shard_path, shard_skipped
from .spec import COMPRESSIONS, STORAGE_DTYPES, TapSpec, chunk_rows

# HDF5 1.10 file format: readable by any h5py of the last years, and it stores large attributes (long
# skipped lists) densely instead of failing at 64 KiB.
LIBVER = ("v110", "v110")


def _create_tap(f: h5py.File, tap: str, spec: TapSpec, n: int, compression: str | None) -> h5py.Dataset:
    """Create `features/<tap>` with its metadata; chunks hold whole rows, checksummed (fletcher32)."""
    dtype = np.dtype(STORAGE_DTYPES[spec.dtype])
    rows = chunk_rows(spec.shape, dtype.itemsize, n)
    ds = f.create_dataset(f"features/{tap}", shape=(n, *spec.shape), dtype=dtype, chunks=(rows, *spec.shape),
                          fletcher32=True, **COMPRESSIONS[compression])
    write_attrs(ds.attrs, {"stride": spec.stride, "shape_per_item": list(spec.shape), "compute_dtype": spec.dtype,
                           **(spec.attrs or {})}, kind=f"tap {tap!r} attribute")
    return ds


def assemble(target: Path, partial: Path, n_shards: int, n: int, taps: Mapping[str, TapSpec],
             class_names: Sequence[str], file_attrs: Mapping[str, Any], compression: str | None) -> None:
    """Write the finished entry to `target` (a temp name; the caller renames it), reading one shard at a time.

    Args:
        target: output path, overwritten.
        partial: directory holding shards 0..n_shards-1 with n rows in total.
        taps: declared tap layouts; class_names: (C,) label names.
        file_attrs: key components, versions and caller attributes to store on the file.
        compression: one of COMPRESSIONS.
    """
    with h5py.File(target, "w", libver=LIBVER, locking=False) as f:
        f.create_group("features", track_order=True)  # taps list in declared (shallow-to-deep) order
        datasets = {tap: _create_tap(f, tap, spec, n, compression) for tap, spec in taps.items()}
        labels = f.create_dataset("labels", shape=(n,), dtype=np.int64)
        ids = f.create_dataset("ids", shape=(n,), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("class_names", data=list(class_names), dtype=h5py.string_dtype("utf-8"))
        shapes = {**{f"features/{t}": ds.shape for t, ds in datasets.items()}, "labels": (n,), "ids": (n,),
                  "class_names": (len(class_names),)}
        hasher = ContentHasher(shapes)
        hasher.update("class_names", np.array(list(class_names), dtype=object))
        start, skipped = 0, {}
        for seq in range(n_shards):
            data = read_shard(shard_path(partial, seq), taps)
            if data is None:
                raise RuntimeError(f"shard {shard_path(partial, seq)} disappeared or changed while committing")
            stop = start + data["labels"].shape[0]
            skipped.update(dict.fromkeys(shard_skipped(data)))
            if stop == start:
                continue
            if stop > n:
                raise RuntimeError(f"shards in {partial} hold more than the {n} rows counted at resume")
            for tap, ds in datasets.items():
                ds[start:stop] = data[FEATURE_PREFIX + tap]
                hasher.update(f"features/{tap}", data[FEATURE_PREFIX + tap])
            labels[start:stop] = data["labels"]
            ids[start:stop] = data["ids"].astype(object)
            hasher.update("labels", data["labels"])
            hasher.update("ids", data["ids"])
            start = stop
        if start != n:
            raise RuntimeError(f"shards in {partial} hold {start} rows, expected {n}")
        created = datetime.now(UTC).isoformat(timespec="seconds")
        contents = hasher.contents(shapes)
        write_attrs(f.attrs, {**file_attrs, "created": created, "skipped": [list(s) for s in skipped], "n": n,
                              CONTENTS: contents, CONTENT_DIGEST: content_digest(contents), "complete": True})
    with open(target, "rb+") as fh:
        os.fsync(fh.fileno())
