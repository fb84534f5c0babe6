"""A frozen backbone as one jitted function: uint8 images in, pooled taps out."""

from __future__ import annotations

import functools
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pipeline.backbones.base import DTYPES, Backbone, Tap, resolve_taps

POOLS = ("avg", "max", "grid", "none")
GRID = 4  # 'grid' pooling keeps a GRID x GRID map of region averages


def _region_means(size: int) -> np.ndarray:
    """(GRID, size) matrix averaging GRID near-equal regions of `size` positions (adaptive average
    pooling's bins: floor(i * size / GRID) .. ceil((i + 1) * size / GRID))."""
    m = np.zeros((GRID, size), np.float32)
    for i in range(GRID):
        lo, hi = (i * size) // GRID, -((-(i + 1) * size) // GRID)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def pool_features(x: jax.Array, pool: str) -> jax.Array:
    """Pooling of a (B, H, W, C) map: global 'avg'/'max' -> (B, C), 'grid' -> (B, GRID, GRID, C) region
    averages (keeps coarse layout, for early taps), 'none'; vectors (B, D) pass unchanged."""
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
    if x.ndim != 4 or pool == "none":
        return x
    if pool == "grid":
        rows, cols = _region_means(x.shape[1]), _region_means(x.shape[2])
        return jnp.einsum("ih,bhwc,jw->bijc", rows.astype(x.dtype), x, cols.astype(x.dtype))
    return jnp.mean(x, axis=(1, 2)) if pool == "avg" else jnp.max(x, axis=(1, 2))


def pooled_shape(shape: tuple[int, ...], pool: str) -> tuple[int, ...]:
    """The shape `pool_features` gives one example of `shape` (H, W, C) or (D,)."""
    if len(shape) != 3 or pool == "none":
        return shape
    return (GRID, GRID, shape[-1]) if pool == "grid" else shape[-1:]


def frozen_apply(model: Backbone, taps: Iterable[Tap], *, pool: str = "avg", dtype: str = "float32",
                 resolution: int | None = None) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """Compiles preprocessing + the network up to the deepest tap + pooling.

    Args:
      model: a backbone (inference mode).
      taps: names or indices.
      pool: one of POOLS for spatial taps (see pool_features).
      dtype: compute dtype, 'float32' or 'bfloat16'; outputs are always float32.
      resolution: input side (defaults to the backbone's).
    Returns:
      f(images uint8 (B, H, W, C)) -> {tap: float32 (B, ...)}; the parameters are arguments of the
      compiled program, not constants folded into it.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    pool_features(jnp.zeros((1, 1)), pool)  # validates `pool` before any compile
    names = tuple(resolve_taps(model.tap_names(), taps))
    graph, state = nnx.split(model)
    run = functools.partial(_run, graph, names=names, pool=pool, dtype=dtype, resolution=resolution)
    devices = jax.local_devices()
    if len(devices) < 2 or devices[0].platform != "cpu":
        return lambda images: run(state, images)
    # Several host devices (pipeline._xla): replicate the weights, split each batch across the cores.
    mesh = Mesh(np.array(devices), ("batch",))
    state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
    split = NamedSharding(mesh, PartitionSpec("batch"))

    def apply(images):
        if len(images) % len(devices):
            return run(jax.device_put(state, devices[0]), images)  # ragged: one device
        return run(state, jax.device_put(images, split))

    return apply


@functools.partial(jax.jit, static_argnums=0, static_argnames=("names", "pool", "dtype", "resolution"))
def _run(graph, state, images, *, names, pool, dtype, resolution):
    """One module-level program per (graph, taps, pool, dtype, resolution): repeated calls, even from
    new models with the same structure, reuse the compiled executable."""
    compute = DTYPES[dtype]
    state = jax.tree.map(lambda a: a.astype(compute) if jnp.issubdtype(a.dtype, jnp.floating) else a, state)
    model = nnx.merge(graph, state)
    x = model.preprocessing(images, resolution).astype(compute)
    feats = model.features(x, names)
    return {k: pool_features(v, pool).astype(jnp.float32) for k, v in feats.items()}
