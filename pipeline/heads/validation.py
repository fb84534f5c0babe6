"""Input checks shared by the heads: features, labels, class weights and a seeded stratified hold-out."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from pipeline.data.splits import stratified_pick


class NotFittedError(ValueError, AttributeError):
    """A head was used before `fit` (subclasses ValueError and AttributeError, like scikit-learn's)."""


def check_features(X: Any, name: str = "X") -> np.ndarray:
    """X as a finite (N, D) float32 array; errors name the shape, dtype or the non-finite rows."""
    X = np.asarray(X)
    if X.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}; "
                         "pool or flatten spatial features first")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}")
    X = X.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad.size:
        raise ValueError(f"{name} has non-finite values (NaN or Inf) in {bad.size} row(s): {bad[:10].tolist()}"
                         + (" ..." if bad.size > 10 else ""))
    return X


def check_labels(y: Any, n: int, name: str = "y") -> np.ndarray:
    """y as a 1-D array of n integer or string labels."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"{name} has {len(y)} labels but X has {n} rows")
    if y.dtype.kind == "O" and all(isinstance(v, str) for v in y):
        y = y.astype(str)
    if y.dtype.kind not in "iuU":
        raise TypeError(f"{name} must hold integer or string labels, got dtype {y.dtype}")
    return y


def encode_labels(y: np.ndarray, classes: np.ndarray, name: str = "y") -> np.ndarray:
    """Positions of y's labels in the sorted `classes`; labels outside them raise ValueError naming them."""
    if y.dtype.kind != classes.dtype.kind and {y.dtype.kind, classes.dtype.kind} != {"i", "u"}:
        raise TypeError(f"{name} holds {y.dtype} labels but the head was fitted on {classes.dtype} labels")
    unknown = np.setdiff1d(y, classes)
    if unknown.size:
        raise ValueError(f"{name} has labels the training data lacks: {unknown[:10].tolist()}; "
                         f"known classes: {classes.tolist()}")
    return np.searchsorted(classes, y).astype(np.int32)


def class_weights(spec: None | str | Mapping[Any, float], classes: np.ndarray, y_idx: np.ndarray) -> np.ndarray:
    """(K,) loss weight per class: None -> ones; 'balanced' -> N / (K * count); a dict -> given (others 1)."""
    k = len(classes)
    if spec is None:
        return np.ones(k, np.float32)
    if isinstance(spec, str):
        if spec != "balanced":
            raise ValueError(f"class_weight {spec!r} is not supported; valid: None, 'balanced' or a dict")
        return (len(y_idx) / (k * np.bincount(y_idx, minlength=k))).astype(np.float32)
    if not isinstance(spec, Mapping):
        raise TypeError(f"class_weight must be None, 'balanced' or a dict, got {type(spec).__name__}")
    unknown = [c for c in spec if c not in set(classes.tolist())]
    if unknown:
        raise ValueError(f"class_weight names classes {unknown} not in the training labels {classes.tolist()}")
    weights = np.array([float(spec.get(c, 1.0)) for c in classes.tolist()], np.float32)
    if not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
        raise ValueError(f"class weights must be finite and > 0, got {dict(zip(classes.tolist(), weights.tolist()))}")
    return weights


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) sorted row indices: round(N * fraction) rows (at least 1) drawn per class in proportion."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction!r}")
    n = len(y)
    if n < 2:
        raise ValueError(f"cannot hold out validation rows from {n} row(s)")
    held = stratified_pick(np.unique(y, return_inverse=True)[1], min(max(round(n * fraction), 1), n - 1),
                           np.random.default_rng([seed, 1]))
    return np.setdiff1d(np.arange(n), held), held
