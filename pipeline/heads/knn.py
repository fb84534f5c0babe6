"""k-NN classification accuracy with cosine similarity, several k at once, in test-row chunks.

Votes: each of the k most similar training rows gives one vote to its class; a tie in votes goes to
the tied class with the larger summed similarity of its voters, then to the smallest label.
(scikit-learn's KNeighborsClassifier breaks vote ties by the smallest label only, so the two can
differ on tied votes.) Neighbours tied in similarity at the k-th place are taken in arbitrary order.
A zero feature vector has similarity 0 to every row (as with sklearn's cosine metric).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from pipeline.heads.checks import check_positive_int, check_split_pair

CHUNK_ROWS = 512


def unit_rows(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero."""
    x = x.astype(dtype)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1)


def check_ks(k: int | Sequence[int], n_train: int) -> list[int]:
    """Sorted distinct ks, each a positive int no larger than the training set."""
    ks = [k] if isinstance(k, (int, np.integer)) else list(k)
    if not ks:
        raise ValueError("k must be a positive int or a non-empty sequence of them, got []")
    ks = sorted({check_positive_int(v, "k") for v in ks})
    if ks[-1] > n_train:
        raise ValueError(f"k={ks[-1]} exceeds the {n_train} training samples")
    return ks


def _vote(nb_labels: np.ndarray, nb_sims: np.ndarray, n_classes: int) -> np.ndarray:
    """Class index (B,) by majority vote of (B, k) neighbour labels; ties by summed similarity."""
    b = nb_labels.shape[0]
    flat = (np.arange(b)[:, None] * n_classes + nb_labels).ravel()
    counts = np.bincount(flat, minlength=b * n_classes).reshape(b, n_classes)
    sims = np.bincount(flat, weights=nb_sims.ravel(), minlength=b * n_classes).reshape(b, n_classes)
    tied = counts == counts.max(axis=1, keepdims=True)
    return np.argmax(np.where(tied, sims, -np.inf), axis=1)


def knn_accuracy(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 k: int | Sequence[int] = (1, 5, 20), *, chunk_size: int = CHUNK_ROWS) -> dict[int, float]:
    """Accuracy of cosine-similarity k-NN on the test set for each k.

    Args:
      X_train: (N, D) features; y_train: (N,) integer labels with at least 2 classes.
      X_test: (M, D) features; y_test: (M,) labels, all present in y_train.
      k: one k or several (each 1 <= k <= N).
      chunk_size: test rows per block; memory is O(chunk_size x N).

    Returns:
      {k: accuracy} for each distinct k, in increasing k. Similarities are computed in float64
      when either feature array is float64, else in float32.
    """
    x_train, y_train, x_test, y_test, classes = check_split_pair(X_train, y_train, X_test, y_test, "X_test")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    ks = check_ks(k, x_train.shape[0])

    dtype = np.float64 if np.float64 in (x_train.dtype, x_test.dtype) else np.float32
    correct = dict.fromkeys(ks, 0)
    for start, preds in knn_votes(unit_rows(x_train, dtype), np.searchsorted(classes, y_train), classes.size,
                                  x_test, ks, chunk_size):
        truth = y_test[start:start + chunk_size]
        for kk, pred in preds.items():
            correct[kk] += int(np.sum(classes[pred] == truth))
    return {kk: correct[kk] / x_test.shape[0] for kk in ks}


def knn_votes(train: np.ndarray, train_idx: np.ndarray, n_classes: int, x: np.ndarray, ks: Sequence[int],
              chunk_size: int = CHUNK_ROWS) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """(first row, {k: class index (B,)}) for consecutive chunks of `x` (M, D), voted by `train`'s (N, D)
    unit rows with class indices `train_idx` (N,); `ks` sorted, each <= N."""
    k_max = ks[-1]
    for start in range(0, x.shape[0], chunk_size):
        sims = unit_rows(x[start:start + chunk_size], train.dtype) @ train.T
        if k_max < sims.shape[1]:
            top = np.argpartition(sims, sims.shape[1] - k_max, axis=1)[:, -k_max:]
        else:
            top = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        top, top_sims = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)
        yield start, {kk: _vote(train_idx[top[:, :kk]], top_sims[:, :kk].astype(np.float64), n_classes) for kk in ks}
