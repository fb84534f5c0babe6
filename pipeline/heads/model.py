"""The heads' functional core: parameter init, forward pass and weighted cross-entropy.

Training runs in jax, prediction in numpy; jax is imported inside the functions that train, so prediction
and the default linear head's host route (logistic.py) never load it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import jax


def _gelu(h: Any, xp: Any) -> Any:
    """tanh-approximated GELU (jax.nn.gelu's default), in numpy or jax.numpy."""
    return 0.5 * h * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h ** 3)))


# Each takes (activations, array module), so one forward pass serves training (jax) and prediction (numpy).
ACTIVATIONS = {"relu": lambda h, xp: xp.maximum(h, 0), "gelu": _gelu, "tanh": lambda h, xp: xp.tanh(h)}

Params = list[dict[str, Any]]  # jax or numpy arrays, one {'w': (D_in, D_out), 'b': (D_out,)} per layer


def standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) float32 (D,) z-scoring of (N, D) training features; a constant column keeps scale 1."""
    mean, scale = X.mean(axis=0), X.std(axis=0)
    return mean.astype(np.float32), np.where(scale > 1e-12, scale, 1.0).astype(np.float32)


def init_params(key: jax.Array, n_features: int, n_classes: int, hidden: Sequence[int], activation: str,
                used_features: jax.Array | int | None = None) -> Params:
    """Layers of an MLP (no hidden layers: a linear head).

    Hidden kernels use He (relu) or LeCun (gelu, tanh) normal init; the output layer starts at zero,
    so a linear head starts from the same point as scikit-learn's logistic regression whatever the seed.
    used_features (may be traced): only the first that many inputs are real, the rest zero padding; the
    first kernel's rows past them start at zero (and, as their inputs are zero, stay there) and its
    fan-in is used_features.
    """
    import jax
    import jax.numpy as jnp

    sizes = [n_features, *hidden, n_classes]
    scale = 2.0 if activation == "relu" else 1.0
    init = jax.nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal")
    keys = jax.random.split(key, len(sizes) - 1)
    params = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        w = jnp.zeros((d_in, d_out), jnp.float32) if last else init(keys[i], (d_in, d_out), jnp.float32)
        if i == 0 and used_features is not None and not last:
            real = jnp.arange(d_in)[:, None] < used_features
            w = jnp.where(real, w * jnp.sqrt(d_in / used_features), 0.0)
        params.append({"w": w, "b": jnp.zeros((d_out,), jnp.float32)})
    return params


def forward(params: Params, x: jax.Array, activation: str, dropout: jax.Array | float = 0.0,
            key: jax.Array | None = None, xp: Any = None) -> jax.Array:
    """Logits (B, K) of (B, D) standardised features; inverted dropout on hidden activations when `key` is set.

    xp: the array module, jax.numpy when None; numpy computes in numpy (no tracing or compiling:
    prediction), dropout then needs key None.
    """
    if xp is None:
        import jax.numpy as xp
    act = ACTIVATIONS[activation]
    h = x
    for i, layer in enumerate(params):
        h = h @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            h = act(h, xp)
            if key is not None:
                import jax

                keep = 1.0 - dropout
                mask = jax.random.bernoulli(jax.random.fold_in(key, i), keep, h.shape)
                h = xp.where(mask, h / keep, 0.0)
    return h


def weighted_loss(params: Params, x: jax.Array, y: jax.Array, w: jax.Array, activation: str,
                  dropout: jax.Array | float = 0.0, key: jax.Array | None = None) -> jax.Array:
    """Weighted mean softmax cross-entropy; `w` (B,) folds class weights and the padding mask together."""
    import jax.numpy as jnp
    import optax

    ce = optax.softmax_cross_entropy_with_integer_labels(forward(params, x, activation, dropout, key), y)
    return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-12)


def l2_penalty(params: Params) -> jax.Array:
    """Half the squared norm of the kernels (biases are not penalised)."""
    import jax.numpy as jnp

    return 0.5 * sum(jnp.sum(layer["w"] ** 2) for layer in params)


def flatten(params: Any) -> dict[str, Any]:
    """{'layers.<i>.w': ..., 'layers.<i>.b': ...} for saving."""
    return {f"layers.{i}.{k}": v for i, layer in enumerate(params) for k, v in layer.items()}


def unflatten(flat: dict[str, Any]) -> list[dict[str, Any]]:
    """Inverse of flatten; a missing or unexpected key raises ValueError naming it."""
    n = len({k.split(".")[1] for k in flat if k.startswith("layers.")})
    params = []
    for i in range(n):
        missing = [f"layers.{i}.{k}" for k in ("w", "b") if f"layers.{i}.{k}" not in flat]
        if missing:
            raise ValueError(f"head parameters are missing {missing}; present: {sorted(flat)}")
        params.append({"w": flat[f"layers.{i}.w"], "b": flat[f"layers.{i}.b"]})
    extra = sorted(set(flat) - set(flatten(params)))
    if extra:
        raise ValueError(f"unexpected head parameters {extra}")
    return params
