"""The backbone contract: ordered named stages, tap metadata, preprocessing (the tap resolver is pipeline.taps)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pipeline.taps import Tap, resolve_taps  # the one resolver, shared with the store and heads

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # compute dtypes of extraction and fine-tuning


@dataclass(frozen=True)
class TapInfo:
    """One named intermediate: its per-image shape at the native resolution and its stride."""

    name: str
    shape: tuple[int, ...]
    stride: int | None  # input pixels per output pixel (per patch for tokens); None for vectors
    prefix: int = 0  # token taps (N, D): class and register tokens before the N - prefix patch tokens

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3

    @property
    def tokens(self) -> bool:
        return len(self.shape) == 2


@dataclass(frozen=True)
class Preprocessing:
    """What a backbone's weights expect: resolution, geometry, channels and normalisation.

    Photos are resized so the shorter side is `resize` (bicubic) and centre-cropped to `resolution`
    (on the CPU while decoding). Whole small images (array data sets) are resized straight to
    `resolution` on the accelerator. Pixels then become (pixel - mean) / std, per channel.
    """

    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    resize: int | None = None
    resample: str = "bicubic"

    def as_dict(self) -> dict:
        """Plain values, for cache keys and file attributes."""
        return {"resolution": self.resolution, "resize": self.resize, "resample": self.resample,
                "channels": self.channels, "mean": list(self.mean), "std": list(self.std)}

    def __call__(self, images: jax.Array, resolution: int | None = None) -> jax.Array:
        """uint8 (B, H, W, C) with C in {1, 3} -> normalised float32 (B, R, R, channels).

        Args:
          images: uint8 or float pixel values in [0, 255], shape (B, H, W, C).
          resolution: output side; defaults to `self.resolution` (fine-tuning may use less).
        """
        side = resolution or self.resolution
        x = images.astype(jnp.float32)
        if x.shape[-1] != self.channels:
            x = _convert_channels(x, self.channels)
        if x.shape[1:3] != (side, side):
            # antialias matters when shrinking photos; for upscaling 28 px data it is a no-op.
            x = jax.image.resize(x, (x.shape[0], side, side, x.shape[-1]), method=self.resample, antialias=True)
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        return (x - mean) / std


def _convert_channels(x: jax.Array, channels: int) -> jax.Array:
    """Grey -> RGB by replication, RGB -> grey by ITU-R 601 luma (what PIL's convert('L') does)."""
    have = x.shape[-1]
    if have == 1 and channels == 3:
        return jnp.repeat(x, 3, axis=-1)
    if have == 3 and channels == 1:
        return x @ jnp.asarray([[0.299], [0.587], [0.114]], x.dtype)
    raise ValueError(f"cannot convert images with {have} channels to {channels}; valid inputs have 1 or 3 channels")


class Backbone(nnx.Module):
    """A network as an ordered list of named stages; every stage output is a tap.

    Subclasses set `name` and `preprocessing` and implement `stages()`. The last stage gives the
    network's output (logits for classifiers). `features` runs only up to the deepest requested tap.
    """

    name: str = ""
    preprocessing: Preprocessing
    default_pool: str = "avg"  # how `extract` pools taps unless told otherwise
    has_classifier: bool = True  # the last stage is a classifier (not so for DINOv2 or CLIP towers)

    def stages(self) -> list[tuple[str, Callable[[jax.Array], jax.Array]]]:
        raise NotImplementedError

    def __call__(self, x: jax.Array) -> jax.Array:
        """Plain forward pass: (B, R, R, C) normalised images -> (B, num_outputs)."""
        for _, stage in self.stages():
            x = stage(x)
        return x

    def features(self, x: jax.Array, taps: Iterable[Tap]) -> dict[str, jax.Array]:
        """All requested taps from one pass that stops at the deepest of them.

        Args:
          x: normalised images (B, R, R, C).
          taps: names or indices of `tap_infos()`.
        Returns:
          {tap name: activation (B, H, W, C) or (B, D)}.
        """
        stages = self.stages()
        wanted = set(resolve_taps([n for n, _ in stages], taps))
        out: dict[str, jax.Array] = {}
        for name, stage in stages:
            x = stage(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out

    def adapt_state(self, flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Weights of the same network at another input size, fitted to this one's shapes where the family
        knows how (a ViT resamples its position embeddings); unchanged otherwise."""
        return flat

    def prefix_tokens(self, tap: str) -> int:
        """Non-patch tokens (class, registers) leading a token tap (B, N, D); 0 for other taps."""
        return 0

    def tap_infos(self, resolution: int | None = None) -> tuple[TapInfo, ...]:
        """Tap names, per-image shapes and strides, found by shape inference (no compute, no weights needed)."""
        side = resolution or self.preprocessing.resolution
        dummy = jax.ShapeDtypeStruct((1, side, side, self.preprocessing.channels), jnp.float32)
        names = [n for n, _ in self.stages()]
        graph, state = nnx.split(self)  # state as an argument: an abstract module (`nnx.eval_shape`) works too
        shapes = jax.eval_shape(lambda s, x: _all_stage_shapes(nnx.merge(graph, s), x), state, dummy)
        infos = []
        for n, s in zip(names, shapes):
            prefix = self.prefix_tokens(n) if len(s.shape) == 3 else 0
            grid = {4: s.shape[1], 3: math.isqrt(s.shape[1] - prefix)}.get(len(s.shape))
            infos.append(TapInfo(n, tuple(s.shape[1:]), side // grid if grid else None, prefix))
        return tuple(infos)

    def tap_names(self) -> list[str]:
        return [n for n, _ in self.stages()]


def _all_stage_shapes(model: Backbone, x: jax.Array) -> list[jax.Array]:
    outs = []
    for _, stage in model.stages():
        x = stage(x)
        outs.append(x)
    return outs

