"""A frozen backbone as one jitted function: uint8 images in, pooled taps out."""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pipeline.backbones.base import DTYPES, Backbone, Tap, TapInfo, resolve_taps

SPATIAL_POOLS = ("avg", "max", "grid", "none")  # for (B, H, W, C) maps
TOKEN_POOLS = ("cls", "mean", "cls+mean", "none", "grid")  # for ViT tokens (B, N, D)
POOLS = (*SPATIAL_POOLS, *TOKEN_POOLS[:3])
GRID = 4  # 'grid' pooling keeps a GRID x GRID map of region averages


def _region_means(size: int) -> np.ndarray:
    """(GRID, size) matrix averaging GRID near-equal regions of `size` positions (adaptive average
    pooling's bins: floor(i * size / GRID) .. ceil((i + 1) * size / GRID))."""
    m = np.zeros((GRID, size), np.float32)
    for i in range(GRID):
        lo, hi = (i * size) // GRID, -((-(i + 1) * size) // GRID)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def pool_features(x: jax.Array, pool: str, prefix: int = 0) -> jax.Array:
    """Pools one tap; `check_pool` has validated the choice for the tap.

    Maps (B, H, W, C): global 'avg'/'max' -> (B, C), 'grid' -> (B, GRID, GRID, C) region averages (keeps
    coarse layout, for early taps), 'none'. Tokens (B, N, D) whose first `prefix` are class/register
    tokens: 'cls' -> (B, D), 'mean' of the patch tokens -> (B, D), 'cls+mean' -> (B, 2D) (DINOv2's linear
    evaluation), 'none' -> the patch tokens as a map (B, g, g, D), 'grid' -> that map's region averages.
    Vectors (B, D) pass unchanged.
    """
    if x.ndim == 3:
        if pool in ("cls", "mean", "cls+mean"):
            mean = jnp.mean(x[:, prefix:], axis=1)
            return {"cls": x[:, 0], "mean": mean, "cls+mean": jnp.concatenate([x[:, 0], mean], -1)}[pool]
        side = math.isqrt(x.shape[1] - prefix)
        x = x[:, prefix:].reshape(x.shape[0], side, side, x.shape[-1])
    if x.ndim != 4 or pool == "none":
        return x
    if pool == "grid":
        rows, cols = _region_means(x.shape[1]), _region_means(x.shape[2])
        return jnp.einsum("ih,bhwc,jw->bijc", rows.astype(x.dtype), x, cols.astype(x.dtype))
    return jnp.mean(x, axis=(1, 2)) if pool == "avg" else jnp.max(x, axis=(1, 2))


def pooled_shape(info: TapInfo, pool: str) -> tuple[int, ...]:
    """The shape `pool_features` gives one example of the tap `info` describes; validates the choice.

    Raises:
      ValueError: an unknown pool, or one that does not apply to the tap's kind, listing the valid ones.
    """
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
    if info.tokens:
        valid = TOKEN_POOLS if info.prefix else tuple(p for p in TOKEN_POOLS if "cls" not in p)
        if pool not in valid:
            kind = "ViT tokens" if info.prefix else "ViT patch tokens without a class token"
            raise ValueError(f"pool {pool!r} does not apply to tap {info.name!r} ({kind}); valid: {', '.join(valid)}")
        n, d = info.shape
        side = math.isqrt(n - info.prefix)
        return {"cls": (d,), "mean": (d,), "cls+mean": (2 * d,), "none": (side, side, d), "grid": (GRID, GRID, d)}[pool]
    if not info.spatial:
        return info.shape
    if pool not in SPATIAL_POOLS:
        raise ValueError(f"pool {pool!r} does not apply to tap {info.name!r} (a spatial map); valid: "
                         f"{', '.join(SPATIAL_POOLS)}")
    return info.shape if pool == "none" else (GRID, GRID, info.shape[-1]) if pool == "grid" else info.shape[-1:]


def check_resolution(model: Backbone, resolution: int | None) -> int:
    """The input side to use: the backbone's own for None, else `resolution` if the network can run on it.

    The minimum is the largest stride among the taps at the native resolution (every spatial stage keeps
    at least one pixel); a side the network still cannot take (shape inference fails) is refused too.
    """
    if resolution is None:
        return model.preprocessing.resolution
    strides = [t.stride for t in model.tap_infos() if t.stride]
    minimum = max(strides, default=1)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < minimum:
        raise ValueError(f"resolution {resolution!r} is not usable by {model.name!r}: need an int >= {minimum} "
                         f"(its deepest stride), or None for its own {model.preprocessing.resolution}")
    try:
        model.tap_infos(resolution)
    except (TypeError, ValueError) as e:
        raise ValueError(f"resolution {resolution} is not usable by {model.name!r} ({e}); its own is "
                         f"{model.preprocessing.resolution}") from e
    return resolution


def check_program(model: Backbone, taps: Iterable[Tap], *, pool: str, dtype: str,
                  resolution: int | None) -> tuple[int, dict[str, TapInfo]]:
    """What `frozen_apply` computes, after validating its dtype, resolution and `pool` for every tap; needs
    only shapes, so `backbones.abstract(...)` serves (a Ray driver builds no model).

    Returns:
      (input side, {tap name: TapInfo at that side} for the requested taps, in network order).
    Raises:
      ValueError: naming the bad value and listing the valid ones.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    side = check_resolution(model, resolution)
    names = resolve_taps(model.tap_names(), taps)
    infos = {info.name: info for info in model.tap_infos(side) if info.name in names}
    for info in infos.values():
        pooled_shape(info, pool)
    return side, {name: infos[name] for name in names}


def frozen_apply(model: Backbone, taps: Iterable[Tap], *, pool: str = "avg", dtype: str = "float32",
                 resolution: int | None = None) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """Compiles preprocessing + the network up to the deepest tap + pooling.

    Args:
      model: a backbone (inference mode).
      taps: names or indices.
      pool: one of POOLS valid for every tap's kind (see pool_features).
      dtype: compute dtype, 'float32' or 'bfloat16'; outputs are always float32.
      resolution: input side (defaults to the backbone's).
    Returns:
      f(images uint8 (B, H, W, C)) -> {tap: float32 (B, ...)}; the parameters are arguments of the
      compiled program, not constants folded into it.
    """
    names = tuple(check_program(model, taps, pool=pool, dtype=dtype, resolution=resolution)[1])
    graph, state = nnx.split(model)
    static = {"names": names, "pool": pool, "dtype": dtype, "resolution": resolution}
    try:
        hash(graph)
        run = functools.partial(_run, graph, **static)
    except TypeError:
        # A module holding an unhashable attribute (a list, say) cannot be a static jit argument: compile
        # for this model alone rather than fail in use.
        run = jax.jit(functools.partial(_forward, graph, **static))
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


def _forward(graph, state, images, *, names, pool, dtype, resolution):
    """Preprocess, run up to the deepest tap in `dtype`, pool, return float32 taps."""
    compute = DTYPES[dtype]
    state = jax.tree.map(lambda a: a.astype(compute) if jnp.issubdtype(a.dtype, jnp.floating) else a, state)
    model = nnx.merge(graph, state)
    x = model.preprocessing(images, resolution).astype(compute)
    feats = model.features(x, names)
    return {k: pool_features(v, pool, model.prefix_tokens(k)).astype(jnp.float32) for k, v in feats.items()}



# One module-level program per (graph, taps, pool, dtype, resolution): repeated calls, even from new models
# with the same structure, reuse the compiled executable.
_run = jax.jit(_forward, static_argnums=0, static_argnames=("names", "pool", "dtype", "resolution"))
