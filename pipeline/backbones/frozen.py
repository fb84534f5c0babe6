"""A frozen backbone as one jitted function: uint8 images in, pooled taps out."""

from __future__ import annotations

import functools
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pipeline.backbones.base import Backbone, Tap, resolve_taps

POOLS = ("avg", "max", "none")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def pool_features(x: jax.Array, pool: str) -> jax.Array:
    """Global pooling of a (B, H, W, C) map; vectors (B, D) pass unchanged."""
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
    if x.ndim != 4 or pool == "none":
        return x
    return jnp.mean(x, axis=(1, 2)) if pool == "avg" else jnp.max(x, axis=(1, 2))


def frozen_apply(model: Backbone, taps: Iterable[Tap], *, pool: str = "avg", dtype: str = "float32",
                 resolution: int | None = None) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """Compiles preprocessing + the network up to the deepest tap + pooling.

    Args:
      model: a backbone (inference mode).
      taps: names or indices.
      pool: 'avg' | 'max' | 'none' for spatial taps.
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
