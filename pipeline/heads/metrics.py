"""Classification metrics of a fitted head on labelled data: accuracy, top-k, per-class, confusion matrix."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def evaluate(head: Any, X: np.ndarray, y: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Metrics of `head` on (X, y), with labels y (N,) indexing class_names (K classes).

    The head's classes_ must be a subset of range(K) (a class absent from training is never predicted).
    Returns:
        {'n', 'accuracy', 'top5_accuracy' (only when K > 5), 'per_class_accuracy' {name: accuracy or None
        when the class has no rows}, 'confusion_matrix' (K, K) nested lists, rows true and columns predicted}.
    """
    k = len(class_names)
    proba = head.predict_proba(X)
    classes = np.asarray(head.classes_)
    ranked = classes[np.argsort(-proba, axis=1, kind="stable")]
    pred = ranked[:, 0]
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(axis=1)
    out: dict[str, Any] = {"n": int(len(y)), "accuracy": float(np.mean(pred == y))}
    if k > 5:
        out["top5_accuracy"] = float(np.mean((ranked[:, :5] == y[:, None]).any(axis=1)))
    out["per_class_accuracy"] = {name: (float(confusion[i, i] / support[i]) if support[i] else None)
                                 for i, name in enumerate(class_names)}
    out["confusion_matrix"] = confusion.tolist()
    return out
