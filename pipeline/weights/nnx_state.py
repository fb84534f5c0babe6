"""Flat '.'-joined key maps to and from Flax NNX state: the one place in weights/ that imports flax.

RNG streams (``nnx.RngState``: keys and counters) are not weights: they are left out of flat maps and
left untouched in the model. Everything else (``nnx.Param``, ``nnx.BatchStat``, custom variables)
round-trips.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from pipeline.weights.keys import check_keys, check_shapes, check_values

# Filter for the variables that are weights: all but the RNG streams.
_WEIGHTS = nnx.Not(nnx.RngState)


def _key(path: tuple) -> str:
    """('blocks', 0, 'conv', 'kernel') -> 'blocks.0.conv.kernel'."""
    return ".".join(str(part) for part in path)


def _weight_items(state: nnx.State) -> list[tuple[str, nnx.Variable]]:
    """(flat key, variable) pairs of a state, RNG streams dropped."""
    return [(_key(path), var) for path, var in nnx.to_flat_state(state)
            if not isinstance(var, nnx.RngState)]


def _value(var: object) -> np.ndarray:
    """A writable numpy copy of a variable's (or a bare leaf's) array."""
    return np.array(var.get_value() if isinstance(var, nnx.Variable) else var)


def flatten_state(state: nnx.State) -> dict[str, np.ndarray]:
    """Turns an NNX state into a flat map with '.'-joined string keys.

    Args:
        state: from ``nnx.state(model)`` or ``nnx.split(model)[1]`` (or any filtered sub-state).

    Returns:
        key -> numpy array, e.g. ``'blocks.0.conv.kernel'`` -> array of the kernel's shape;
        RNG stream variables are left out.

    Raises:
        ValueError: two paths map to the same key (a name containing '.').
    """
    items = _weight_items(state)
    flat = {key: _value(var) for key, var in items}
    if len(flat) != len(items):
        keys = [key for key, _ in items]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"state paths collide after '.'-joining: {dupes}")
    return flat


def cast_like(model: nnx.Module, flat: Mapping[str, np.ndarray], *, source: str) -> dict[str, np.ndarray]:
    """A flat map checked against a model's variables and cast to their dtypes: what the model holds
    once :func:`assign_flat` has written it. The model may be abstract (``nnx.eval_shape``).

    Raises:
        KeyMismatchError, ShapeMismatchError, ValueError: as :func:`assign_flat`.
    """
    current = [(_key(path), var.get_value()) for path, var in nnx.to_flat_state(nnx.state(model, _WEIGHTS))]
    check_keys([key for key, _ in current], flat.keys(), source=source)
    check_shapes({key: np.shape(value) for key, value in current}, flat, source=source)
    check_values({key: value.dtype for key, value in current}, flat, source=source)
    return {key: np.asarray(flat[key]).astype(value.dtype, copy=False) for key, value in current}


def assign_flat(model: nnx.Module, flat: Mapping[str, np.ndarray], *, source: str) -> None:
    """Writes a flat map into a model's variables in place, after checking keys and shapes.

    Each value is cast to the dtype of the variable it replaces (e.g. a float16 checkpoint into a
    float32 model). RNG streams are neither expected nor changed.

    Args:
        model: the NNX module to update.
        flat: key -> array with keys as :func:`flatten_state` makes them.
        source: where ``flat`` came from (a file name), for error messages.

    Raises:
        KeyMismatchError: keys missing from or unexpected in ``flat``.
        ShapeMismatchError: arrays whose shape differs from the model's variables.
        ValueError: an integer array for a float variable (or the reverse), or NaN/Inf values.
    """
    cast = cast_like(model, flat, source=source)
    updated = [(path, var.replace(jnp.asarray(cast[_key(path)])))
               for path, var in nnx.to_flat_state(nnx.state(model, _WEIGHTS))]
    nnx.update(model, nnx.from_flat_state(updated))
