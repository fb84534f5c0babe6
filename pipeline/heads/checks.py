"""Every input check of the heads and evaluators, in one place (numpy and scikit-learn only).

Hyperparameter constraints are declared once, in scikit-learn's parameter-validation style
(`CONSTRAINTS`): the estimators' `_parameter_constraints` are drawn from it, and the sweep engine checks
its per-head arrays against the same objects. Data checks take the value first and its name second.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, Mapping

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import type_of_target

from pipeline.data.splits import stratified_pick

__all__ = ["CONSTRAINTS", "NotFittedError", "options", "check_features", "check_labels", "check_classes", "check_same_width",
           "check_known_labels", "check_positive_int", "check_values", "encode_labels", "class_weights",
           "stratified_holdout", "finite_rows"]

POSITIVE_INT = Interval(Integral, 1, None, closed="left")
CONSTRAINTS: dict[str, list[Any]] = {
    "lr": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "C": [Interval(Real, 0, None, closed="neither")],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "epochs": [POSITIVE_INT],
    "batch_size": [POSITIVE_INT],
    "max_iter": [POSITIVE_INT],
    "patience": [POSITIVE_INT],
    "tol": [Interval(Real, 0, None, closed="left")],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "seed": [Interval(Integral, 0, None, closed="left")],
    "standardize": ["boolean"],
    "early_stopping": ["boolean"],
    "class_weight": [StrOptions({"balanced"}), dict, None],
    "solver": [StrOptions({"lbfgs", "adamw"})],
    "activation": [StrOptions({"relu", "gelu", "tanh"})],
    "hidden": [tuple, list],
    "l2": [Interval(Real, 0, None, closed="neither")],
    "l2s": [tuple, list],  # of "l2" values, checked with check_values at fit
    "k": [POSITIVE_INT],
    "width": [POSITIVE_INT],  # one hidden layer's width
}
"""Each hyperparameter's allowed values (scikit-learn constraint objects), shared by every head."""


def options(name: str) -> list[str]:
    """The allowed strings of a string-valued hyperparameter (for the CLI's choices), in sorted order."""
    return sorted(next(c for c in CONSTRAINTS[name] if isinstance(c, StrOptions)).options)


def check_values(name: str, values: Any, constraint: str | None = None) -> list:
    """The distinct values of a grid or per-head array, in order; ValueError unless it is non-empty and every
    value satisfies CONSTRAINTS[constraint or name] (the message lists the bad ones)."""
    values = np.asarray(values).tolist() if isinstance(values, np.ndarray) else list(values)
    if not values:
        raise ValueError(f"{name} needs at least one value")
    (rule,) = CONSTRAINTS[constraint or name]
    bad = [v for v in values if isinstance(v, bool) or not rule.is_satisfied_by(v)]
    if bad:
        raise ValueError(f"{name} must be {rule}; bad values: {bad}")
    return list(dict.fromkeys(values))


def finite_rows(X: np.ndarray, name: str) -> None:
    """ValueError naming the rows of X that hold NaN or Inf (at most ten of them)."""
    if X.dtype.kind != "f":
        return
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad.size:
        raise ValueError(f"{name} has non-finite values (NaN or Inf) in {bad.size} row(s): {bad[:10].tolist()}"
                         + (" ..." if bad.size > 10 else ""))


def check_features(X: Any, name: str = "X", dtype: Any = None) -> np.ndarray:
    """X as a finite, non-empty (N, D) real array (cast to `dtype` when given).

    Raises:
        ValueError: not 2-D, complex, empty or non-finite (the message names the shape or the rows).
        TypeError: not real numbers.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}; "
                         "pool or flatten spatial features first")
    if X.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
    if X.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} needs at least one sample and one feature, got shape {X.shape}")
    X = X if dtype is None else X.astype(dtype, copy=False)
    finite_rows(X, name)
    return X


def check_labels(y: Any, n: int, name: str = "y", features: str = "X") -> np.ndarray:
    """y as a 1-D array of n class labels: integers, strings, or floats holding integers.

    Raises:
        ValueError: wrong shape or count, or continuous values ('Unknown label type', as scikit-learn says).
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"{name} has {len(y)} labels but {features} has {n} rows")
    if y.dtype.kind == "O" and all(isinstance(v, str) for v in y):
        y = y.astype(str)
    if y.dtype.kind not in "iuU" and type_of_target(y) not in ("binary", "multiclass"):
        raise ValueError(f"Unknown label type: {name} holds {type_of_target(y)} values of dtype {y.dtype}; "
                         "a classifier needs integer or string labels")
    return y


def check_classes(y: np.ndarray, name: str = "y") -> np.ndarray:
    """The sorted distinct labels of y; ValueError unless there are at least two."""
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"{name} needs at least 2 classes, got 1 class: {classes.tolist()}")
    return classes


def check_same_width(X: np.ndarray, name: str, ref: np.ndarray, ref_name: str) -> None:
    """ValueError unless X has as many features (columns) as ref."""
    if X.shape[1] != ref.shape[1]:
        raise ValueError(f"{name} has {X.shape[1]} features but {ref_name} has {ref.shape[1]}")


def check_known_labels(y: np.ndarray, name: str, classes: np.ndarray, ref_name: str) -> None:
    """ValueError if y holds labels that never occur in ref_name (they could never be predicted)."""
    unknown = np.setdiff1d(np.unique(y), classes)
    if unknown.size:
        raise ValueError(f"{name} has labels absent from {ref_name}: {unknown[:10].tolist()}; "
                         f"known classes: {classes.tolist()}")


def check_split_pair(X_train: Any, y_train: Any, X_other: Any, y_other: Any, other: str = "X_val") -> tuple:
    """Validated (x_train, y_train, x_other, y_other, classes): features, labels of matching lengths, one
    width, and no label in the other split that training never saw. `other` names it ('X_val', 'X_test')."""
    y_other_name = "y" + other[1:]
    x_train = check_features(X_train, "X_train")
    y_train = check_labels(y_train, x_train.shape[0], "y_train", "X_train")
    x_other = check_features(X_other, other)
    y_other = check_labels(y_other, x_other.shape[0], y_other_name, other)
    check_same_width(x_other, other, x_train, "X_train")
    classes = check_classes(y_train, "y_train")
    check_known_labels(y_other, y_other_name, classes, "y_train")
    return x_train, y_train, x_other, y_other, classes


def check_positive_int(value: Any, name: str) -> int:
    """value if it is an int >= 1 (bools refused); ValueError/TypeError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def encode_labels(y: np.ndarray, classes: np.ndarray, name: str = "y") -> np.ndarray:
    """(N,) int32 positions of y's labels in the sorted classes; unknown labels raise ValueError naming them."""
    if (y.dtype.kind == "U") != (classes.dtype.kind == "U"):
        raise TypeError(f"{name} holds {y.dtype} labels but the training labels are {classes.dtype}")
    check_known_labels(y, name, classes, "the training labels")
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
