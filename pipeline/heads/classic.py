"""RidgeHead and KNNHead: the closed-form ridge and cosine k-NN of ridge.py / knn.py as scikit-learn classifiers.

Both build on BaseEstimator + ClassifierMixin, declare `_parameter_constraints` from checks.CONSTRAINTS, and
reuse the numerics of `ridge_model`/`fit_ridge` and `knn_votes` (nothing is re-implemented here). They pass
`check_estimator` with no check skipped by us (fit takes no sample_weight, so those checks do not run;
scikit-learn itself skips check_array_api_input unless SCIPY_ARRAY_API is set), and work with clone, Pipeline,
cross_val_score and GridSearchCV. NaN/Inf features are rejected (scikit-learn's message); sparse input is not
supported (features from the store are dense).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from pipeline.heads import checks
from pipeline.heads.knn import check_ks, knn_votes, unit_rows
from pipeline.heads.ridge import fit_ridge, ridge_model

DEFAULT_L2S = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)


class _Classic(ClassifierMixin, BaseEstimator):
    """Shared input checks: fit's (X, y) to float arrays and class indices, predict's X against the fit."""

    def _fit_inputs(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_ = checks.check_classes(y)
        return X, np.searchsorted(self.classes_, y)

    def _inputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])


class RidgeHead(_Classic):
    """Ridge classification (one-hot targets in {-1, +1}, standardised features, unpenalised intercept).

    With one L2 value it fits on all rows (sklearn's RidgeClassifier(alpha=l2) on standardised features).
    With several, it holds out a stratified `validation_fraction`, picks the L2 with the best validation
    accuracy (ties: the largest) from one eigendecomposition, and refits on every row with it (`fit_ridge`).

    Args:
        l2s: penalties to choose from (positive). validation_fraction: held out to choose. seed: hold-out seed.
    Fitted attributes: classes_ (C,), coef_ (C, D) and intercept_ (C,) on raw features, l2_ (the L2 used),
    val_accuracy_ ((L,) per L2, or None with one L2).
    """

    _parameter_constraints = {"l2s": checks.CONSTRAINTS["l2s"],
                              "validation_fraction": checks.CONSTRAINTS["validation_fraction"],
                              "seed": checks.CONSTRAINTS["seed"]}

    def __init__(self, l2s: Sequence[float] = DEFAULT_L2S, validation_fraction: float = 0.2, seed: int = 0) -> None:
        self.l2s, self.validation_fraction, self.seed = l2s, validation_fraction, seed

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> "RidgeHead":
        """Fits on (N, D) features and (N,) labels (at least two classes); returns self."""
        X, y_idx = self._fit_inputs(X, y)
        l2s = checks.check_values("l2s", self.l2s, "l2")
        if len(l2s) == 1:
            model = ridge_model(X, y_idx, l2s[0])
        else:
            keep, held = checks.stratified_holdout(y_idx, self.validation_fraction, self.seed)
            model = fit_ridge(X[keep], y_idx[keep], X[held], y_idx[held], l2s)
        self.model_ = model
        self.coef_, self.intercept_, self.l2_ = model.coef_, model.intercept_, model.l2_
        self.val_accuracy_ = None if model.sweep is None else model.sweep.val_accuracy
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """(N, C) scores in the order of classes_, or (N,) for two classes (positive favours classes_[1])."""
        X = self._inputs(X)  # first: NotFittedError before model_ is touched
        scores = self.model_.decision_function(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict(self, X: Any) -> np.ndarray:
        """(N,) predicted labels, drawn from classes_."""
        X = self._inputs(X)
        return self.classes_[self.model_.predict(X)]


class KNNHead(_Classic):
    """k-nearest-neighbour classification by cosine similarity (majority vote; ties by summed similarity).

    Args:
        k: neighbours that vote (at most the training rows).
    Fitted attributes: classes_ (C,), n_features_in_; the unit-normed training rows are kept.
    """

    _parameter_constraints = {"k": checks.CONSTRAINTS["k"]}

    def __init__(self, k: int = 5) -> None:
        self.k = k

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> "KNNHead":
        """Keeps (N, D) features (unit-normed) and (N,) labels (at least two classes, N >= k); returns self."""
        X, y_idx = self._fit_inputs(X, y)
        check_ks(self.k, len(X))
        self.train_, self.train_idx_ = unit_rows(X, X.dtype), y_idx
        return self

    def predict(self, X: Any) -> np.ndarray:
        """(N,) predicted labels, drawn from classes_."""
        X = self._inputs(X)
        out = np.empty(len(X), np.intp)
        for start, votes in knn_votes(self.train_, self.train_idx_, self.classes_.size, X, [self.k]):
            out[start:start + len(votes[self.k])] = votes[self.k]
        return self.classes_[out]
