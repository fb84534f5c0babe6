"""Input checks shared by the closed-form evaluators (ridge, k-NN, LogME); numpy only."""

from __future__ import annotations

import numpy as np


def check_features(name: str, x: object) -> np.ndarray:
    """A 2-D, non-empty, finite, real array (n_samples, n_features); ValueError/TypeError naming `name` otherwise."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers (integer or float dtype), got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one feature, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.argwhere(bad)[0, 0])
            raise ValueError(f"{name} contains {int(bad.sum())} non-finite values (NaN or inf); first in row {row}")
    return arr


def check_labels(name: str, y: object, n_rows: int, features_name: str) -> np.ndarray:
    """A 1-D integer label array with one label per row of `features_name`."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{features_name} has {n_rows} rows but {name} has {arr.shape[0]} labels")
    return arr


def check_classes(name: str, y: np.ndarray) -> np.ndarray:
    """The sorted distinct labels of `y`; ValueError unless there are at least two."""
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"{name} must contain at least 2 classes, got {classes.size}: {classes.tolist()}")
    return classes


def check_same_width(name: str, x: np.ndarray, ref_name: str, ref: np.ndarray) -> None:
    """ValueError unless `x` has as many features (columns) as `ref`."""
    if x.shape[1] != ref.shape[1]:
        raise ValueError(f"{name} has {x.shape[1]} features but {ref_name} has {ref.shape[1]}")


def check_known_labels(name: str, y: np.ndarray, classes: np.ndarray, ref_name: str) -> None:
    """ValueError if `y` holds labels that never occur in `ref_name` (they could never be predicted)."""
    unknown = np.setdiff1d(np.unique(y), classes)
    if unknown.size:
        raise ValueError(f"{name} contains labels absent from {ref_name}: {unknown.tolist()}; "
                         f"known classes: {classes.tolist()}")


def check_positive_int(name: str, value: object) -> int:
    """`value` if it is an int >= 1 (bools refused); ValueError/TypeError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)
