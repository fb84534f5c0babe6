"""Extraction on Ray Data: position ranges -> decoding tasks -> one frozen backbone per actor -> range shards.

The documented Ray Data pattern for offline batch inference with a stateful model. The dataset holds
only position ranges of the source (one row per `batch_size` positions, never pixels from the driver);
decoding tasks open the source themselves; each actor builds the frozen, jitted backbone once
(`frozen_apply`, as the local engine does) and keeps it for every range it is given; write tasks store
each range as one shard named by its positions (store.blocks) through a Datasink. Ranges finish in any
order; the driver then checks that every position has a shard holding exactly its items and adopts
them in position order, so the entry is assembled by the same code as a single-process run.

A range (not a single position) is the dataset's row so that every shard is one contiguous range: a
row's position is then known from its shard's name and the number of skipped items before it, which
is what the store's ordered assembly needs.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.cluster.engine import DECODE_CPUS, RayEngine, connect
from pipeline.data import Geometry
from pipeline.store.blocks import adopt_blocks, blocks_dir, gaps, scan_blocks, write_block
from pipeline.store.spec import STORAGE_DTYPES, TapSpec

FEATURE = "features."  # column prefix of a tap's features in the dataset


@functools.lru_cache(maxsize=4)
def _open_source(args: str):
    """The source, opened once per worker process (tasks of one job reuse it)."""
    from pipeline.data import open_source

    return open_source(**json.loads(args))


def _decode(batch: dict[str, np.ndarray], *, source_args: str, geometry: Geometry | None,
            shape: tuple[int, ...], size: int) -> dict[str, np.ndarray]:
    """Decodes each range's images, padded to `size` rows (the compiled batch), with labels, ids, skips."""
    source = _open_source(source_args)
    out: dict[str, list] = {k: [] for k in ("start", "stop", "n", "images", "labels", "ids", "skipped")}
    for lo, hi in zip(batch["start"].tolist(), batch["stop"].tolist()):
        decoded = list(source.iter_batches(hi - lo, start=lo, stop=hi, geometry=geometry, num_threads=1))
        images, labels, ids = np.zeros((size, *shape), np.uint8), np.zeros(size, np.int64), []
        if decoded:
            n = len(decoded[0].index)
            images[:n], labels[:n], ids = decoded[0].images, decoded[0].labels, decoded[0].ids.tolist()
        for key, value in (("start", lo), ("stop", hi), ("n", len(ids)), ("images", images), ("labels", labels),
                           ("ids", json.dumps(ids)), ("skipped", json.dumps(source.skipped))):
            out[key].append(value)
    return {k: np.array(v, dtype=object) if k in ("ids", "skipped") else np.stack(v) for k, v in out.items()}


class _FrozenBackbone:
    """A Ray actor's model: built once, then every range given to this actor runs through it."""

    def __init__(self, backbone: str, weights: str, names: tuple[str, ...], pool: str, dtype: str,
                 resolution: int | None, weights_digest: str) -> None:
        from flax import nnx

        from pipeline import backbones
        from pipeline.backbones.frozen import frozen_apply
        from pipeline.weights import params_digest
        from pipeline.weights.nnx_state import flatten_state

        model = backbones.create(backbone, weights)
        found = params_digest(flatten_state(nnx.state(model)))
        if found != weights_digest:  # e.g. a checkpoint path that holds another file on this node
            raise ValueError(f"weights {weights!r} on this node have digest {found}, the driver's have "
                             f"{weights_digest}: every node must see the same weights file")
        self.apply = frozen_apply(model, names, pool=pool, dtype=dtype, resolution=resolution)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: v for k, v in batch.items() if k != "images"}
        results = [self.apply(images) for images in batch["images"]]
        for tap in results[0]:
            out[FEATURE + tap] = np.stack([np.asarray(r[tap]) for r in results])
        return out


def _sink(directory: Path, taps: dict[str, TapSpec]):
    """A Datasink writing each range of its blocks as one shard (defined lazily: Ray is optional)."""
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    class ShardSink(Datasink):
        """Each write task stores its ranges; returns their starts."""

        def write(self, blocks, ctx) -> list[int]:
            written = []
            for block in blocks:
                batch = BlockAccessor.for_block(block).to_batch_format("numpy")
                for i, (lo, hi, n) in enumerate(zip(batch["start"], batch["stop"], batch["n"])):
                    features = {t: batch[FEATURE + t][i][:n].astype(STORAGE_DTYPES[s.dtype]) for t, s in taps.items()}
                    write_block(directory, int(lo), int(hi), features, batch["labels"][i][:n],
                                json.loads(batch["ids"][i]), [tuple(s) for s in json.loads(batch["skipped"][i])])
                    written.append(int(lo))
            return written

    return ShardSink()


def pending_ranges(directory: Path, taps: dict[str, TapSpec], ids: np.ndarray, start: int,
                   size: int) -> list[tuple[int, int]]:
    """Position ranges of at most `size` that no valid stored shard holds yet (resume after any crash)."""
    return gaps(scan_blocks(directory, taps, ids, start, len(ids)), start, len(ids), size)


def run_ray(engine: RayEngine, writer, *, source_args: dict[str, Any], ids: np.ndarray, image_shape: Sequence[int],
            geometry: Geometry | None, model_args: dict[str, Any], batch_size: int,
            progress: Callable[[int, int], None] | None = None) -> int:
    """Computes every position the writer does not hold yet on Ray, then adopts the shards into it.

    Args:
      engine: the Ray settings; writer: an entered, unfinished EntryWriter.
      source_args: `open_source` keyword arguments (plain values) reopening the same source on any node.
      ids: (N,) the source's item ids; image_shape: (H, W, C) of decoded images.
      model_args: _FrozenBackbone's arguments (backbone, weights, names, pool, dtype, resolution,
        weights_digest).
      batch_size: positions per range and images per compiled call.
    Returns:
      The number of positions computed by this call.
    """
    ray = connect(engine)
    directory = blocks_dir(writer.paths["partial"])
    ranges = pending_ranges(directory, writer.taps, ids, writer.n_consumed, batch_size)
    if ranges:
        from ray.data import ActorPoolStrategy

        resources = engine.actor_resources()
        dataset = ray.data.from_items([{"start": lo, "stop": hi} for lo, hi in ranges],
                                      override_num_blocks=len(ranges))
        dataset = dataset.map_batches(
            _decode, batch_size=1, num_cpus=DECODE_CPUS,
            fn_kwargs=dict(source_args=json.dumps(source_args), geometry=geometry, shape=tuple(image_shape),
                           size=batch_size))
        dataset = dataset.map_batches(
            _FrozenBackbone, batch_size=1, fn_constructor_kwargs=model_args,
            compute=ActorPoolStrategy(size=engine.worker_count(ray.cluster_resources())),
            num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"] or None,
            runtime_env={"env_vars": engine.actor_env()})
        dataset.write_datasink(_sink(directory, dict(writer.taps)), ray_remote_args={"num_cpus": DECODE_CPUS})
    adopt_blocks(writer, directory, ids)
    if progress is not None:
        progress(writer.n_consumed, len(ids))
    return sum(hi - lo for lo, hi in ranges)
