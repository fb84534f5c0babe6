"""LinearHead and MLPHead: scikit-learn classifiers on cached features (BaseEstimator + ClassifierMixin).

`__init__` only stores hyperparameters; their constraints are declared once (`_parameter_constraints`, drawn
from checks.CONSTRAINTS) and checked by scikit-learn at `fit`. `fit` standardises, trains (L-BFGS for the
default linear head, the shared AdamW engine otherwise) and sets the fitted attributes, which end in an
underscore. Prediction runs in numpy, in the features' float dtype: nothing is traced or compiled, whatever the
batch size.

Both pass `sklearn.utils.estimator_checks.check_estimator` and work with clone, Pipeline, cross_val_score
and GridSearchCV. Deliberately unsupported: `sample_weight` in fit (class_weight covers the use), sparse
input (features from the store are dense), and NaN/Inf features (rejected, with the offending rows named).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from pipeline.heads import checks
from pipeline.heads.logistic import fit_logistic
from pipeline.heads.model import forward, standardizer

_NOT_FITTED = ("this %(name)s instance is not fitted yet; call fit(X, y) before predict, predict_proba, "
               "decision_function, score or save")
_COMMON = ("lr", "weight_decay", "epochs", "batch_size", "standardize", "class_weight", "early_stopping",
           "patience", "validation_fraction", "seed")


def _constraints(*names: str) -> dict[str, list[Any]]:
    return {name: checks.CONSTRAINTS[name] for name in names}


class _Head(ClassifierMixin, BaseEstimator):
    """Shared fit/predict machinery; subclasses define their hyperparameters and `_train`."""

    activation = "relu"

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "_Head":
        """Trains the head.

        Args:
            X: (N, D) real features. y: (N,) class labels (integers, strings; at least two classes).
            X_val, y_val: optional (M, D) / (M,) validation data, evaluated every epoch (history_) and used
                by early stopping; without them early stopping holds out a stratified `validation_fraction`.
        Returns:
            self, with classes_ (K,), n_features_in_, mean_ / scale_ (D,), params_, history_ (one dict per
            epoch: epoch, train_loss, val_loss, val_accuracy), n_iter_ (epochs or iterations run), best_epoch_
            (1-based) and compile_seconds_.
        """
        if getattr(X, "ndim", 2) > 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}; "
                             "pool or flatten spatial features first")
        X, y = validate_data(self, X, y, dtype=np.float32, ensure_all_finite=False)
        checks.finite_rows(X, "X")
        check_classification_targets(y)
        classes = checks.check_classes(y)
        y_idx = np.searchsorted(classes, y).astype(np.int32)
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        if X_val is not None:
            X_val = checks.check_features(X_val, "X_val", np.float32)
            checks.check_same_width(X_val, "X_val", X, "X")
            yv_idx = checks.encode_labels(checks.check_labels(y_val, len(X_val), "y_val", "X_val"), classes, "y_val")
        elif self.early_stopping:
            keep, held = checks.stratified_holdout(y_idx, self.validation_fraction, self.seed)
            X, X_val, y_idx, yv_idx = X[keep], X[held], y_idx[keep], y_idx[held]
        weights = checks.class_weights(self.class_weight, classes, y_idx)
        mean, scale = standardizer(X) if self.standardize else (np.zeros(X.shape[1], np.float32),
                                                                   np.ones(X.shape[1], np.float32))
        Xs = X - mean
        Xs /= scale  # in place: one array of X's size, not two
        Xv = None if X_val is None else (X_val - mean) / scale
        params, history, best_epoch, compile_s = self._train(Xs, y_idx, Xv, None if Xv is None else yv_idx,
                                                             len(classes), weights)
        self.classes_ = classes
        self.mean_, self.scale_ = mean, scale
        self.params_ = [{k: np.asarray(v) for k, v in layer.items()} for layer in params]
        self.history_ = [{"epoch": e + 1, **{k: float(h[e]) for k, h in history.items()}}
                         for e in range(len(history["train_loss"]))]
        self.n_iter_, self.best_epoch_, self.compile_seconds_ = len(self.history_), int(best_epoch), compile_s
        return self

    def _sweep(self, Xs, y, Xv, yv, n_classes, weights, hidden: Sequence[int], dropout: float):
        """Trains this head as H=1 of the shared engine."""
        from pipeline.heads.engine import train_heads  # JAX: not imported by the default linear head's host route

        result = train_heads(Xs, y, {"lr": [self.lr], "weight_decay": [self.weight_decay], "dropout": [dropout],
                                     "seed": [self.seed]}, n_classes=n_classes, hidden=tuple(hidden),
                             activation=self.activation, epochs=self.epochs, batch_size=self.batch_size,
                             class_weight=weights, X_val=Xv, y_val=yv, early_stopping=self.early_stopping,
                             patience=self.patience, seed=self.seed)
        return (result.head(0), {k: h[:, 0] for k, h in result.history.items()}, result.best_epoch[0],
                result.compile_seconds)

    def save(self, path: str | Path, info: Mapping[str, Any] | None = None) -> Path:
        """Writes the fitted head to a safetensors file (see pipeline.heads.persist.write_head).

        Args:
            path: the .safetensors file to write (its directory must exist).
            info: extra JSON-able provenance kept with the head, e.g. cache entry digest, tap, metrics.
        """
        from pipeline.heads.persist import write_head  # imports the weights package only when saving

        check_is_fitted(self, msg=_NOT_FITTED)
        config = {"class": type(self).__name__, "hyperparameters": self.get_params(),
                  "classes": self.classes_.tolist(), "classes_dtype": self.classes_.dtype.str,
                  "n_features_in": int(self.n_features_in_), "history": self.history_,
                  "best_epoch": self.best_epoch_}
        written = write_head(path, self.params_, self.mean_, self.scale_, config, info)
        self.info_ = dict(info or {})
        return written

    def _unstandardized(self) -> list[dict[str, np.ndarray]]:
        """The layers in float64 with the standardisation folded into the first: they act on raw features
        (cheaper than z-scoring every row at prediction)."""
        check_is_fitted(self, msg=_NOT_FITTED)
        params = [{k: v.astype(np.float64) for k, v in layer.items()} for layer in self.params_]
        mean, scale = self.mean_.astype(np.float64), self.scale_.astype(np.float64)
        first = params[0]
        params[0] = {"w": first["w"] / scale[:, None], "b": first["b"] - (mean / scale) @ first["w"]}
        return params

    def _logits(self, X: Any) -> np.ndarray:
        """(N, K) logits of (N, D) features, in numpy, in the features' float dtype (float32 or float64)."""
        check_is_fitted(self, msg=_NOT_FITTED)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], ensure_all_finite=False)
        checks.finite_rows(X, "X")
        # in the features' dtype: float32 features (the store's) are not copied to float64 first
        params = [{k: v.astype(X.dtype) for k, v in layer.items()} for layer in self._unstandardized()]
        return forward(params, X, self.activation, xp=np)

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits: (N, K) in the order of classes_, or (N,) for two classes (positive favours classes_[1])."""
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, K) class probabilities (softmax of the logits)."""
        logits = self._logits(X)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """(N,) predicted labels, drawn from classes_."""
        logits = self._logits(X)  # first: it raises NotFittedError on an unfitted head
        return self.classes_[np.argmax(logits, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy on (X, y); ClassifierMixin's (which imports sklearn.metrics) only with sample_weight."""
        if sample_weight is not None:
            return super().score(X, y, sample_weight)
        pred = self.predict(X)
        return float(np.mean(pred == checks.check_labels(y, len(pred))))


class LinearHead(_Head):
    """A softmax-linear classifier (multinomial logistic regression).

    The default (solver 'lbfgs', C=1) minimises scikit-learn's LogisticRegression() objective, mean
    cross-entropy + ||W||^2 / (2 C N) on standardised features, with full-batch L-BFGS until no gradient
    entry exceeds `tol` or `max_iter` iterations: on the host (scipy) for small problems, through XLA for
    large ones (`pipeline.heads.logistic`).

    Args:
        solver: 'lbfgs' (full batch; C, max_iter, tol apply) or 'adamw' (minibatch AdamW with warm-up cosine
            schedule; lr, weight_decay, epochs, batch_size, early_stopping, patience, validation_fraction apply).
        C: inverse L2 strength, as scikit-learn's. max_iter: 1000, not scikit-learn's 100, so the default
            converges (119 iterations on 600 Fashion-MNIST images' pixels, where scikit-learn stops unconverged
            at 100); L-BFGS usually stops at `tol` long before. lr: peak learning rate. weight_decay: AdamW's decoupled decay.
        standardize: z-score features with training statistics. class_weight: None, 'balanced' or {label: w}.
        seed: shuffling, init and hold-out seed.
    Fitted attributes beyond _Head.fit's: coef_ (D, K) and intercept_ (K,) in the original feature space.
    With 'lbfgs', history_ has one record per L-BFGS iteration (train_loss is the penalised objective)
    and best_epoch_ is the number of iterations run.
    """

    _parameter_constraints = _constraints("solver", "C", "max_iter", "tol", *_COMMON)

    def __init__(self, solver: str = "lbfgs", C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4,
                 lr: float = 1e-2, weight_decay: float = 1e-4, epochs: int = 30, batch_size: int = 256,
                 standardize: bool = True, class_weight: Any = None, early_stopping: bool = False,
                 patience: int = 5, validation_fraction: float = 0.1, seed: int = 0) -> None:
        self.solver, self.C, self.max_iter, self.tol = solver, C, max_iter, tol
        self.lr, self.weight_decay, self.epochs, self.batch_size = lr, weight_decay, epochs, batch_size
        self.standardize, self.class_weight = standardize, class_weight
        self.early_stopping, self.patience, self.validation_fraction = early_stopping, patience, validation_fraction
        self.seed = seed

    def _train(self, Xs, y, Xv, yv, n_classes, weights):
        if self.solver == "adamw":
            return self._sweep(Xs, y, Xv, yv, n_classes, weights, (), 0.0)
        params, history, compile_s = fit_logistic(Xs, y, n_classes=n_classes, l2=1.0 / (self.C * len(Xs)),
                                                  class_weight=weights, max_iter=self.max_iter, tol=self.tol,
                                                  X_val=Xv, y_val=yv)
        return params, history, len(history["train_loss"]), compile_s

    @property
    def coef_(self) -> np.ndarray:
        """(D, K) weights acting on unstandardised features."""
        return self._unstandardized()[0]["w"]

    @property
    def intercept_(self) -> np.ndarray:
        """(K,) bias acting on unstandardised features."""
        return self._unstandardized()[0]["b"]


class MLPHead(_Head):
    """A multilayer perceptron classifier trained with minibatch AdamW (warm-up cosine schedule).

    Args:
        hidden: hidden layer widths. activation: 'relu', 'gelu' or 'tanh'. dropout: rate on hidden activations.
        The rest as LinearHead's (adamw solver).
    """

    _parameter_constraints = _constraints("hidden", "activation", "dropout", *_COMMON)

    def __init__(self, hidden: Sequence[int] = (256,), activation: str = "relu", dropout: float = 0.0,
                 lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 30, batch_size: int = 256,
                 standardize: bool = True, class_weight: Any = None, early_stopping: bool = False,
                 patience: int = 5, validation_fraction: float = 0.1, seed: int = 0) -> None:
        self.hidden, self.activation, self.dropout = hidden, activation, dropout
        self.lr, self.weight_decay, self.epochs, self.batch_size = lr, weight_decay, epochs, batch_size
        self.standardize, self.class_weight = standardize, class_weight
        self.early_stopping, self.patience, self.validation_fraction = early_stopping, patience, validation_fraction
        self.seed = seed

    def _train(self, Xs, y, Xv, yv, n_classes, weights):
        if not self.hidden or not all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h > 0
                                      for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive ints, got {self.hidden!r}")
        return self._sweep(Xs, y, Xv, yv, n_classes, weights, self.hidden, float(self.dropout))


HEADS: Mapping[str, type[_Head]] = {"linear": LinearHead, "mlp": MLPHead}


def load_head(path: str | Path) -> _Head:
    """Reads a head written by `save`; its predictions equal the saved head's.

    Returns:
        The fitted head, with `info_` holding the provenance given at save time.
    """
    from pipeline.heads.persist import read_head

    params, mean, scale, config, info = read_head(path)
    classes = {cls.__name__: cls for cls in HEADS.values()}
    if config["class"] not in classes:
        raise ValueError(f"{path} holds an unknown head class {config['class']!r}; known: {sorted(classes)}")
    hyper = config["hyperparameters"]
    if "hidden" in hyper:
        hyper["hidden"] = tuple(hyper["hidden"])
    head = classes[config["class"]](**hyper)
    head.mean_, head.scale_, head.params_ = mean, scale, params
    head.classes_ = np.asarray(config["classes"], dtype=np.dtype(config["classes_dtype"]))
    head.n_features_in_, head.history_ = config["n_features_in"], config["history"]
    head.n_iter_, head.best_epoch_, head.compile_seconds_ = len(head.history_), config["best_epoch"], 0.0
    head.info_ = info
    return head
