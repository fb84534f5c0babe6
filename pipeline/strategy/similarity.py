"""How close a target data set is to a backbone's source data, measured per tap.

Source-free: a pre-trained network's BatchNorm running statistics are the mean and variance of its
source data's activations at every normalised layer, so the target's statistics at the same layers
(the frozen network run on the target), compared with them, tell at which depth the target stops
looking like the source.
Task-aware: a quick linear probe and LogME per tap on cached features.
"""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pipeline.backbones import Backbone
from pipeline.backbones.stages import stage_params


def _batch_norms(model: nnx.Module) -> Iterator[tuple[str, nnx.BatchNorm]]:
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            yield ".".join(map(str, path)), node


class _Moments(nnx.Module):
    """Wraps a BatchNorm layer and records the per-channel mean and variance of its input batch."""

    def __init__(self, bn: nnx.BatchNorm):
        self.bn = bn
        self.mean = nnx.Variable(jnp.zeros(bn.num_features))
        self.var = nnx.Variable(jnp.zeros(bn.num_features))

    def __call__(self, x: jax.Array, **kwargs) -> jax.Array:
        axes = tuple(range(x.ndim - 1))
        self.mean[...], self.var[...] = jnp.mean(x, axes), jnp.var(x, axes)
        return self.bn(x, **kwargs)


def _parent(model: nnx.Module, path: str) -> tuple[object, str]:
    """'blocks.3.bn1' -> (model.blocks[3], 'bn1')."""
    *head, last = path.split(".")
    node = model
    for part in head:
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node, last


def target_bn_statistics(model: Backbone, images: np.ndarray, *, batch_size: int = 256,
                         resolution: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and variance of every BatchNorm layer's input over `images`, per channel, in the frozen network.

    A copy of `model` runs in inference mode (every layer normalised by the source's statistics, as
    extraction sees it) with each BatchNorm wrapped to record its input's moments; batches combine by
    their moments.

    Args:
      model: a backbone; images: uint8 (N, H, W, C) as its preprocessing takes them.
    Returns:
      {BatchNorm module path: (mean (C,), variance (C,))}; empty for a network without BatchNorm.
    """
    probe = nnx.clone(model)
    names = [name for name, _ in _batch_norms(probe)]
    if not names or len(images) == 0:
        return {}
    for name in names:
        parent, attr = _parent(probe, name)
        setattr(parent, attr, _Moments(getattr(parent, attr)))
    graph, state = nnx.split(probe)
    last = probe.tap_names()[-1]

    @jax.jit
    def moments(state, batch):
        m = nnx.merge(graph, state)
        m.features(m.preprocessing(batch, resolution), [last])
        recorders = [_parent(m, name) for name in names]
        return {name: (getattr(p, a).mean[...], getattr(p, a).var[...]) for name, (p, a) in zip(names, recorders)}

    sums = {name: [0.0, 0.0] for name in names}
    for start in range(0, len(images), batch_size):
        batch = jnp.asarray(images[start:start + batch_size])
        for name, (mean, var) in moments(state, batch).items():
            mean = np.asarray(mean, np.float64)
            sums[name][0] += mean * len(batch)
            sums[name][1] += (np.asarray(var, np.float64) + mean ** 2) * len(batch)
    n = len(images)
    return {name: (m1 / n, np.maximum(m2 / n - (m1 / n) ** 2, 0.0)) for name, (m1, m2) in sums.items()}


def bn_shift(model: Backbone, images: np.ndarray, *, batch_size: int = 256,
             resolution: int | None = None) -> dict[str, float | None]:
    """Per tap: how far the target's activation statistics sit from the source's, in source standard deviations.

    For each BatchNorm layer and channel, the 2-Wasserstein distance between the Gaussians of the source
    (running statistics) and the target (`target_bn_statistics`), divided by the source's standard
    deviation: sqrt((mu_t - mu_s)^2 + (sigma_t - sigma_s)^2) / sigma_s; averaged over channels, then over
    the BatchNorm layers a tap's stage holds. 0 means the same statistics; about 1 a one-sigma shift.

    Args:
      model: a pre-trained backbone; images: uint8 (N, H, W, C) of the target.
    Returns:
      {tap: shift, or None for a stage without BatchNorm}, in tap order.
    """
    target = target_bn_statistics(model, images, batch_size=batch_size, resolution=resolution)
    layer_shift = {}
    for name, bn in _batch_norms(model):
        if name not in target:
            continue
        mu_s = np.asarray(bn.mean[...], np.float64)
        sigma_s = np.sqrt(np.asarray(bn.var[...], np.float64) + bn.epsilon)
        mu_t, var_t = target[name]
        sigma_t = np.sqrt(var_t + bn.epsilon)
        layer_shift[name] = float(np.mean(np.hypot(mu_t - mu_s, sigma_t - sigma_s) / sigma_s))
    out: dict[str, float | None] = {}
    for tap, params in stage_params(model, resolution).items():
        layers = sorted({p.rpartition(".")[0] for p in params} & layer_shift.keys())
        out[tap] = float(np.mean([layer_shift[m] for m in layers])) if layers else None
    return out
