"""Ridge classification over many L2 values from one eigendecomposition (big_vision's few-shot trick).

Targets are one-hot rescaled to {-1, +1} (scikit-learn's RidgeClassifier and big_vision's coding);
features are standardised with the training mean and population std (a zero std becomes 1, as in
sklearn's StandardScaler). The bias is an exact, unpenalised intercept: with centred features it is
the mean target, and the weights solve `(Xs^T Xs + l2 I) W = Xs^T Y` — i.e. sklearn's
`RidgeClassifier(alpha=l2, fit_intercept=True)` fitted on the standardised features. (big_vision
instead appends a constant column of 100, so its bias carries a tiny penalty.)

The eigendecomposition is of `Xs^T Xs` (D x D) when D <= N, else of `Xs Xs^T` (N x N); either way
`W(l2) = lhs diag(1 / (eigvals + l2)) rhs`, so each extra L2 costs O(r D C) with r = min(N, D).
All arithmetic is float64 whatever the input dtype; training rows are standardised in chunks, so a
float32 training set is never copied whole to float64 when D <= N (the validation set is, once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from pipeline.heads.checks import (check_classes, check_features, check_labels, check_positive_int,
                                    check_split_pair)

CHUNK_ROWS = 8192


def _check_l2s(l2s: Sequence[float] | float) -> np.ndarray:
    """The L2 values as a 1-D float64 array; ValueError unless non-empty, finite and positive."""
    arr = np.atleast_1d(np.asarray(l2s, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"l2s must be a non-empty 1-D sequence of positive floats, got {l2s!r}")
    bad = arr[~(np.isfinite(arr) & (arr > 0))]
    if bad.size:
        raise ValueError(f"l2s must be positive and finite; bad values: {bad.tolist()}")
    return arr


def _standardized_chunks(x: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                         chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start row, float64 standardised rows) for consecutive row chunks of `x`."""
    for start in range(0, x.shape[0], chunk):
        yield start, (x[start:start + chunk].astype(np.float64) - mean) / scale


def _nonzero(std: np.ndarray) -> np.ndarray:
    """The std used for scaling: a constant column keeps scale 1 (it is all zeros once centred)."""
    return np.where(std > 0, std, 1.0)


class RidgeSolver:
    """Standardisation and eigendecomposition of one training set; weights for any L2 > 0 cheaply.

    Args:
      x: (N, D) training features, any real dtype.
      y: (N,) integer labels; `classes` (sorted, distinct) defaults to those present in `y`.
      chunk_size: rows standardised at a time when building X^T X.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: np.ndarray | None = None,
                 chunk_size: int = CHUNK_ROWS):
        x = check_features(x, "X_train")
        y = check_labels(y, x.shape[0], "y_train", "X_train")
        self.classes_ = check_classes(y, "y_train") if classes is None else np.asarray(classes)
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        targets = np.where(y[:, None] == self.classes_[None, :], 1.0, -1.0)
        self.intercept_ = targets.mean(axis=0)  # exact: the features are centred
        targets -= self.intercept_
        n, d = x.shape
        self.mean_ = x.mean(axis=0, dtype=np.float64)
        if d <= n:
            # One pass over the rows: the centred Gram gives the stds on its diagonal, then is rescaled.
            gram, xty = np.zeros((d, d)), np.zeros((d, self.classes_.size))
            for start, rows in _standardized_chunks(x, self.mean_, np.ones(d), self.chunk_size):
                gram += rows.T @ rows
                xty += rows.T @ targets[start:start + rows.shape[0]]
            self.scale_ = _nonzero(np.sqrt(np.diag(gram) / n))
            self.eigvals, q = np.linalg.eigh(gram / np.outer(self.scale_, self.scale_))
            self.lhs, self.rhs = q, q.T @ (xty / self.scale_[:, None])
        else:
            xs = x.astype(np.float64) - self.mean_
            self.scale_ = _nonzero(np.sqrt(np.mean(xs ** 2, axis=0)))
            xs /= self.scale_
            self.eigvals, q = np.linalg.eigh(xs @ xs.T)
            self.lhs, self.rhs = xs.T @ q, q.T @ targets
        # Round-off can leave tiny negative eigenvalues of a PSD matrix; l2 > 0 keeps the inverse safe anyway.
        self.eigvals = np.maximum(self.eigvals, 0.0)

    def _weights(self, l2: float) -> np.ndarray:
        """(D, C) weights on standardised features: lhs diag(1 / (eigvals + l2)) rhs."""
        return (self.lhs / (self.eigvals + l2)) @ self.rhs

    def coef(self, l2: float) -> tuple[np.ndarray, np.ndarray]:
        """Weights (D, C) and intercept (C,) on standardised features for one L2 value."""
        (l2,) = _check_l2s(l2)
        return self._weights(l2), self.intercept_.copy()

    def accuracies(self, x: np.ndarray, y: np.ndarray, l2s: Sequence[float]) -> np.ndarray:
        """Accuracy (L,) on (x, y) for each L2; x is standardised once; each L2 costs O((r + M) D C)."""
        l2s = _check_l2s(l2s)
        xs = np.empty(x.shape)
        for start, rows in _standardized_chunks(x, self.mean_, self.scale_, self.chunk_size):
            xs[start:start + rows.shape[0]] = rows
        acc = np.empty(l2s.size)
        for i, l2 in enumerate(l2s):
            logits = xs @ self._weights(l2) + self.intercept_
            acc[i] = np.mean(self.classes_[np.argmax(logits, axis=1)] == y)
        return acc


@dataclass(frozen=True)
class RidgeSweep:
    """Validation accuracy for each L2; the best is the largest L2 among those tied at the top accuracy."""

    l2s: np.ndarray  # (L,) as given
    val_accuracy: np.ndarray  # (L,)
    best_l2: float
    best_accuracy: float


@dataclass(frozen=True)
class RidgeModel:
    """A ridge classifier on raw features (standardisation folded in): logits = X @ coef_.T + intercept_."""

    coef_: np.ndarray  # (C, D), one row per class, also for two classes
    intercept_: np.ndarray  # (C,)
    classes_: np.ndarray  # (C,)
    l2_: float
    sweep: RidgeSweep | None = field(repr=False)  # None when fitted with one L2 (nothing to choose)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """(N, C) float64 scores of (N, D) features."""
        x = check_features(x, "X")
        if x.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X has {x.shape[1]} features but the model was fitted on {self.coef_.shape[1]}")
        return x.astype(np.float64) @ self.coef_.T + self.intercept_

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N,) predicted labels (values of classes_)."""
        return self.classes_[np.argmax(self.decision_function(x), axis=1)]

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy of predict(x) against (N,) labels y."""
        y = check_labels(y, np.asarray(x).shape[0], "y", "X")
        return float(np.mean(self.predict(x) == y))


def ridge_sweep(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                l2s: Sequence[float], *, chunk_size: int = CHUNK_ROWS) -> RidgeSweep:
    """Validation accuracy of ridge classifiers for many L2 values from one eigendecomposition.

    Args:
      X_train: (N, D) features; y_train: (N,) integer labels with at least 2 classes.
      X_val: (M, D) features; y_val: (M,) labels, all present in y_train.
      l2s: (L,) positive penalties.
      chunk_size: rows standardised at a time (memory O(chunk_size x D)).

    Returns:
      RidgeSweep with val_accuracy (L,), best_l2 and best_accuracy.
    """
    x_train, y_train, x_val, y_val, classes = check_split_pair(X_train, y_train, X_val, y_val)
    l2s = _check_l2s(l2s)
    acc = RidgeSolver(x_train, y_train, classes, chunk_size).accuracies(x_val, y_val, l2s)
    top = np.flatnonzero(acc == acc.max())
    best = top[np.argmax(l2s[top])]
    return RidgeSweep(l2s=l2s, val_accuracy=acc, best_l2=float(l2s[best]), best_accuracy=float(acc[best]))


def fit_ridge(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
              l2s: Sequence[float], *, chunk_size: int = CHUNK_ROWS) -> RidgeModel:
    """Picks the L2 with ridge_sweep on (train, val), then refits on train + val with it.

    The refit re-standardises on train + val; the returned model works on raw features.

    Args: as ridge_sweep.

    Returns:
      RidgeModel with coef_ (C, D), intercept_ (C,), classes_ (C,), l2_ and the sweep.
    """
    sweep = ridge_sweep(X_train, y_train, X_val, y_val, l2s, chunk_size=chunk_size)
    x_all = np.concatenate([np.asarray(X_train), np.asarray(X_val)])
    y_all = np.concatenate([np.asarray(y_train), np.asarray(y_val)])
    return ridge_model(x_all, y_all, sweep.best_l2, sweep, chunk_size=chunk_size)


def ridge_model(X: np.ndarray, y: np.ndarray, l2: float, sweep: RidgeSweep | None = None, *,
                chunk_size: int = CHUNK_ROWS) -> RidgeModel:
    """The ridge classifier with penalty `l2` on (X (N, D), y (N,)), standardisation folded into coef_ (C, D)."""
    solver = RidgeSolver(X, y, chunk_size=chunk_size)
    w, b = solver.coef(l2)
    coef = (w / solver.scale_[:, None]).T
    return RidgeModel(coef_=coef, intercept_=b - coef @ solver.mean_, classes_=solver.classes_, l2_=float(l2),
                      sweep=sweep)
