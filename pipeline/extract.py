"""Run a frozen, truncated backbone over a data set once and store its taps in the feature cache."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import flax
import jax
import numpy as np

from pipeline import backbones
from pipeline.backbones.base import Tap
from pipeline.backbones.frozen import check_program, frozen_apply, pooled_shape
from pipeline.cluster.engine import RayEngine, check_available, resolve_engine
from pipeline.cluster.extraction import run_ray
from pipeline.data import Batch, Geometry, Source, open_source
from pipeline.store import Entry, FeatureStore, TapSpec

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExtractResult:
    """What `extract` served: the entry, whether it was a cache hit, and how fast it was computed."""

    entry: Entry
    hit: bool
    computed: int  # images run through the backbone by this call (0 on a hit)
    seconds: float  # the whole call: loading the model, fingerprinting the data, computing, writing
    compute_seconds: float = 0.0  # decoding, computing and writing only
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float | None:
        return self.computed / self.compute_seconds if self.computed and self.compute_seconds > 0 else None

    def summary(self) -> dict[str, Any]:
        """Plain values for `--json`."""
        return {"path": str(self.entry.path), "key": self.entry.digest, "n": self.entry.n, "hit": self.hit,
                "shapes": {t: list(info.shape) for t, info in self.entry.taps.items()},
                "computed": self.computed, "seconds": round(self.seconds, 3),
                "compute_seconds": round(self.compute_seconds, 3),
                "images_per_s": None if self.images_per_s is None else round(self.images_per_s, 1),
                "skipped": [list(s) for s in self.skipped]}


def entry_key(model: backbones.Backbone, weights_digest: str, source: Source, taps: Sequence[str], *, pool: str,
              dtype: str, resolution: int) -> dict[str, Any]:
    """Every input that changes the stored numbers; the store hashes it into the entry's name.

    `model` may be abstract (`backbones.abstract`): only its name and preprocessing are read.
    """
    return {"backbone": model.name, "weights_digest": weights_digest,
            "taps": list(taps), "pool": pool, "dtype": dtype,
            "preprocessing": {**model.preprocessing.as_dict(), "resolution": resolution},
            "dataset": source.spec, "data_fingerprint": source.fingerprint, "split": source.split,
            "subset": source.selection, "on_error": source.on_error}


def extract(backbone: str, dataset: str, taps: Sequence[Tap], *, weights: str | Path = "pretrained",
            split: str = "train", classes: Sequence[int] | None = None, limit: int | None = None,
            per_class: int | None = None, seed: int = 0, pool: str | None = None, dtype: str = "float32",
            batch_size: int = 64, resolution: int | None = None, cache_dir: str | Path | None = None,
            on_error: str = "fail", compression: str | None = None, lock_timeout: float | None = None,
            progress: Progress | None = None, engine: str | RayEngine = "local") -> ExtractResult:
    """Extracts (or finds in the cache) the activations of `taps` for one split of a data set.

    Args:
      backbone: registered name; weights: 'pretrained', 'random' or a checkpoint path.
      dataset, split, classes, limit, per_class, seed, on_error: see `pipeline.data.open_source`.
      taps: names or indices; all come from one pass that stops at the deepest.
      pool: spatial taps: 'avg' | 'max' (global), 'grid' (4x4 region averages) or 'none' (whole maps);
        ViT token taps: 'cls', 'mean' (patch tokens), 'cls+mean', 'grid' or 'none' (patch tokens as a map);
        None: the backbone's `default_pool` ('avg' for CNNs, 'cls' for ViTs). Part of the cache key.
      dtype: compute dtype 'float32' | 'bfloat16' (stored as float32).
      batch_size: images per compiled call (the last batch is padded, so one compile serves all).
      resolution: input side; default the backbone's own.
      cache_dir: the store; default $PIPELINE_CACHE_DIR or ./cache.
      compression: None | 'lzf' | 'gzip' for the HDF5 datasets.
      lock_timeout: seconds to wait for another process extracting the same entry (None: wait).
      progress: called as progress(items_done, items_total) after every stored batch.
      engine: 'local' (this process), 'ray' (a local Ray instance) or a RayEngine (a cluster's address,
        workers and their resources); every engine stores the same entry, bit for bit.
    Returns:
      The complete entry; an interrupted run resumes where it stopped when called again.
    """
    start = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ray_engine = resolve_engine(engine)
    if ray_engine is not None:
        check_available(ray_engine)  # a missing extra or a bad address fails before the model is built
    shape = backbones.abstract(backbone, weights)  # shapes only: a hit, or a Ray driver, builds no model
    pool = pool or shape.default_pool
    # before the key: a bad side must not be a hit on the default's, nor a bad pool or dtype fail after a pass
    side, infos = check_program(shape, taps, pool=pool, dtype=dtype, resolution=resolution)
    names = list(infos)
    source = open_source(dataset, split, classes=classes, limit=limit, per_class=per_class, seed=seed,
                         on_error=on_error)
    model = None
    digest = backbones.weights_digest(backbone, weights)
    if digest is None:  # random weights not built here before: building them is the only way to know them
        model = backbones.create(backbone, weights)
        digest = backbones.weights_digest(backbone, weights, built=model)
    key = entry_key(shape, digest, source, names, pool=pool, dtype=dtype, resolution=side)
    store = FeatureStore(cache_dir)
    hit = store.find(key, replace_damaged=True)  # a damaged entry is computed again, never served
    if hit is not None:
        return ExtractResult(hit, True, 0, time.perf_counter() - start, skipped=hit.skipped)

    if ray_engine is None:  # only a local miss needs the model and its program: Ray's workers build their own
        model = model or backbones.create(backbone, weights)
        apply = frozen_apply(model, names, pool=pool, dtype=dtype, resolution=resolution)
    specs = {t: TapSpec(pooled_shape(infos[t], pool), dtype, infos[t].stride, {"tap_index": i})
             for i, t in enumerate(shape.tap_names()) if t in names}
    attrs = {"jax_version": jax.__version__, "flax_version": flax.__version__, "weights": str(weights)}
    with store.writer(key, specs, class_names=source.class_names, attrs=attrs, compression=compression,
                      timeout=lock_timeout) as writer:
        if writer.complete:  # another process finished it while we waited for the lock
            return ExtractResult(writer.entry, True, 0, time.perf_counter() - start, skipped=writer.entry.skipped)
        p = shape.preprocessing
        geometry = Geometry(side, int(round(side * p.resize / p.resolution)) if p.resize else None, p.resample)
        geometry = None if source.native_shape else geometry
        compute_start = time.perf_counter()
        if ray_engine is None:
            batches = source.iter_batches(batch_size, start=writer.n_consumed, geometry=geometry)
            computed = _run(apply, batches, source, writer, batch_size, progress)
        else:
            source_args = dict(spec=dataset, split=split, classes=classes, limit=limit, per_class=per_class,
                               seed=seed, on_error=on_error)
            model_args = dict(backbone=backbone, weights=str(weights), names=tuple(names), pool=pool, dtype=dtype,
                              resolution=resolution, weights_digest=key["weights_digest"])
            computed = run_ray(ray_engine, writer, source_args=source_args, ids=source.ids,
                               image_shape=source.native_shape or (side, side, 3), geometry=geometry,
                               model_args=model_args, batch_size=batch_size, progress=progress)
        entry = writer.commit()
    end = time.perf_counter()
    return ExtractResult(entry, False, computed, end - start, end - compute_start, entry.skipped)


def _run(apply, batches, source: Source, writer, batch_size: int, progress: Progress | None) -> int:
    """Feeds batches through the compiled backbone one step ahead of the writes.

    JAX dispatches asynchronously, so batch i+1 computes while batch i is copied out and written.
    """
    pending: tuple[dict, Batch, list] | None = None
    seen_skips, computed = 0, 0
    for batch in batches:
        new_skips = source.skipped[seen_skips:]  # skips before and inside this batch (positions precede it)
        seen_skips = len(source.skipped)
        n = len(batch.index)
        images = batch.images
        if n < batch_size:  # pad so every call has the compiled shape
            images = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), images.dtype)])
        out = apply(images)
        if pending is not None:
            _write(writer, *pending, progress, len(source))
        pending = (out, batch, new_skips)
        computed += n
    if pending is not None:
        _write(writer, *pending, progress, len(source))
    leftover = source.skipped[seen_skips:]  # an all-bad final batch is never yielded
    if leftover:
        writer.append({t: np.zeros((0, *s.shape), np.float32) for t, s in writer.taps.items()},
                      np.zeros(0, np.int64), [], skipped=leftover)
    return computed


def _write(writer, out: dict, batch: Batch, skipped: list, progress: Progress | None, total: int) -> None:
    n = len(batch.index)
    features = {t: np.asarray(v)[:n] for t, v in out.items()}
    writer.append(features, batch.labels, [str(i) for i in batch.ids], skipped=skipped)
    if progress is not None:
        progress(writer.n_consumed, total)
