"""LinearHead and MLPHead: classifiers on cached features with scikit-learn conventions.

`__init__` only stores hyperparameters; `fit` validates, standardises, trains (through the shared engine,
or L-BFGS for a linear head) and sets the fitted attributes, which end in an underscore.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from pipeline.heads import validation as v
from pipeline.heads.engine import train_heads
from pipeline.heads.lbfgs import fit_lbfgs
from pipeline.heads.model import ACTIVATIONS, forward

_forward = jax.jit(forward, static_argnames=("activation",))


def _check_range(name: str, value: Any, low: float, *, integer: bool = False, below: float | None = None) -> None:
    """value must be a number (an int when `integer`) >= low (and < below); the error names it."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= low or \
            (below is not None and not value < below):
        bound = f">= {low}" + (f" and < {below}" if below is not None else "")
        raise ValueError(f"{name} must be {'an int' if integer else 'a number'} {bound}, got {value!r}")


class _Head:
    """Shared fit/predict machinery; subclasses define their hyperparameters and `_train`."""

    activation = "relu"

    @classmethod
    def _param_names(cls) -> list[str]:
        """The __init__ argument names, in order."""
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters as passed to __init__."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "_Head":
        """Changes hyperparameters (unknown names raise ValueError listing the valid ones)."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(f"unknown hyperparameters {unknown} for {type(self).__name__}; "
                             f"valid: {self._param_names()}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={val!r}' for k, val in self.get_params().items())})"

    def _check_hyperparameters(self) -> None:
        """ValueError naming the first invalid hyperparameter (checked at fit, as scikit-learn does)."""
        _check_range("lr", self.lr, 0.0)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        _check_range("weight_decay", self.weight_decay, 0.0)
        _check_range("epochs", self.epochs, 1, integer=True)
        _check_range("batch_size", self.batch_size, 1, integer=True)
        _check_range("patience", self.patience, 1, integer=True)
        _check_range("validation_fraction", self.validation_fraction, 0.0, below=1.0)

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "_Head":
        """Trains the head.

        Args:
            X: (N, D) real features. y: (N,) integer or string labels (at least two classes).
            X_val, y_val: optional (M, D) / (M,) validation data, evaluated every epoch (history_) and used
                by early stopping; without them early stopping holds out a stratified `validation_fraction`.
        Returns:
            self, with classes_ (K,), n_features_in_, mean_ / scale_ (D,), params_, history_ (one dict per
            epoch: epoch, train_loss, val_loss, val_accuracy), best_epoch_ (1-based) and compile_seconds_.
        """
        self._check_hyperparameters()
        X = v.check_features(X)
        y = v.check_labels(y, len(X))
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"y needs at least two classes to train a classifier, got only {classes.tolist()}")
        y_idx = np.searchsorted(classes, y).astype(np.int32)
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        if X_val is not None:
            X_val = v.check_features(X_val, "X_val")
            if X_val.shape[1] != X.shape[1]:
                raise ValueError(f"X_val has {X_val.shape[1]} features but X has {X.shape[1]}")
            yv_idx = v.encode_labels(v.check_labels(y_val, len(X_val), "y_val"), classes, "y_val")
        elif self.early_stopping:
            keep, held = v.stratified_holdout(y_idx, self.validation_fraction, self.seed)
            X, X_val, y_idx, yv_idx = X[keep], X[held], y_idx[keep], y_idx[held]
        weights = v.class_weights(self.class_weight, classes, y_idx)
        mean = X.mean(axis=0) if self.standardize else np.zeros(X.shape[1], np.float32)
        scale = X.std(axis=0) if self.standardize else np.ones(X.shape[1], np.float32)
        scale = np.where(scale > 1e-12, scale, 1.0).astype(np.float32)  # constant features stay constant
        Xs = (X - mean) / scale
        Xv = None if X_val is None else (X_val - mean) / scale
        params, history, best_epoch, compile_s = self._train(Xs, y_idx, Xv, None if Xv is None else yv_idx,
                                                             len(classes), weights)
        self.classes_, self.n_features_in_ = classes, X.shape[1]
        self.mean_, self.scale_ = mean.astype(np.float32), scale
        self.params_ = params
        self.history_ = [{"epoch": e + 1, **{k: float(h[e]) for k, h in history.items()}}
                         for e in range(len(history["train_loss"]))]
        self.best_epoch_, self.compile_seconds_ = int(best_epoch), compile_s
        return self

    def _sweep(self, Xs, y, Xv, yv, n_classes, weights, hidden: Sequence[int], dropout: float):
        """Trains this head as H=1 of the shared engine."""
        result = train_heads(Xs, y, {"lr": [self.lr], "weight_decay": [self.weight_decay], "dropout": [dropout],
                                     "seed": [self.seed]}, n_classes=n_classes, hidden=tuple(hidden),
                             activation=self.activation, epochs=self.epochs, batch_size=self.batch_size,
                             class_weight=weights, X_val=Xv, y_val=yv, early_stopping=self.early_stopping,
                             patience=self.patience, seed=self.seed)
        return (result.head(0), {k: h[:, 0] for k, h in result.history.items()}, result.best_epoch[0],
                result.compile_seconds)

    def save(self, path: str | Path, info: Mapping[str, Any] | None = None) -> Path:
        """Writes the fitted head to a safetensors file (see pipeline.heads.persist.save_head)."""
        from pipeline.heads.persist import save_head

        return save_head(self, path, info)

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise v.NotFittedError(f"this {type(self).__name__} instance is not fitted yet; call fit(X, y) "
                                   "before predict, predict_proba, decision_function, score or save")

    def decision_function(self, X: Any) -> np.ndarray:
        """(N, K) logits of (N, D) features (columns in the order of classes_)."""
        self._check_fitted()
        X = v.check_features(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                             f"{self.n_features_in_} features")
        return np.asarray(_forward(self.params_, (X - self.mean_) / self.scale_, activation=self.activation))

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, K) class probabilities."""
        return np.asarray(jax.nn.softmax(self.decision_function(X), axis=-1))

    def predict(self, X: Any) -> np.ndarray:
        """(N,) predicted labels, drawn from classes_."""
        scores = self.decision_function(X)  # first: it raises NotFittedError on an unfitted head
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Mean accuracy on (X, y)."""
        y = v.check_labels(y, len(np.asarray(X)))
        return float(np.mean(self.predict(X) == y))


class LinearHead(_Head):
    """A softmax-linear classifier (multinomial logistic regression).

    Args:
        lr: peak learning rate (adamw). weight_decay: adamw's decoupled decay; for 'lbfgs' the L2 penalty
            lambda of mean cross-entropy + lambda/2 * ||W||^2 (scikit-learn's C = 1 / (lambda * N)).
        epochs, batch_size: adamw passes and minibatch size. solver: 'adamw' (minibatch, warm-up cosine) or
            'lbfgs' (full batch, optax.lbfgs with zoom line search, up to max_iter iterations).
        standardize: z-score features with training statistics. class_weight: None, 'balanced' or {label: w}.
        early_stopping, patience, validation_fraction: keep the best-validation-loss epoch (adamw only).
        seed: shuffling and hold-out seed.
    Fitted attributes beyond _Head.fit's: coef_ (D, K) and intercept_ (K,) in the original feature space.
    With 'lbfgs', history_ has one record per L-BFGS iteration (train_loss is the penalised objective)
    and best_epoch_ is the number of iterations run.
    """

    def __init__(self, lr: float = 1e-2, weight_decay: float = 1e-4, epochs: int = 30, batch_size: int = 256,
                 solver: str = "adamw", standardize: bool = True, class_weight: Any = None,
                 early_stopping: bool = False, patience: int = 5, validation_fraction: float = 0.1,
                 max_iter: int = 200, seed: int = 0) -> None:
        self.lr, self.weight_decay, self.epochs, self.batch_size = lr, weight_decay, epochs, batch_size
        self.solver, self.standardize, self.class_weight = solver, standardize, class_weight
        self.early_stopping, self.patience, self.validation_fraction = early_stopping, patience, validation_fraction
        self.max_iter, self.seed = max_iter, seed

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        if self.solver not in ("adamw", "lbfgs"):
            raise ValueError(f"solver {self.solver!r} is not supported; valid: 'adamw', 'lbfgs'")
        _check_range("max_iter", self.max_iter, 1, integer=True)

    def _train(self, Xs, y, Xv, yv, n_classes, weights):
        if self.solver == "adamw":
            return self._sweep(Xs, y, Xv, yv, n_classes, weights, (), 0.0)
        params, history, compile_s = fit_lbfgs(Xs, y, n_classes=n_classes, l2=self.weight_decay,
                                               class_weight=weights, max_iter=self.max_iter, X_val=Xv, y_val=yv)
        return params, history, len(history["train_loss"]), compile_s

    @property
    def coef_(self) -> np.ndarray:
        """(D, K) weights acting on unstandardised features."""
        self._check_fitted()
        return self.params_[0]["w"] / self.scale_[:, None]

    @property
    def intercept_(self) -> np.ndarray:
        """(K,) bias acting on unstandardised features."""
        self._check_fitted()
        return self.params_[0]["b"] - (self.mean_ / self.scale_) @ self.params_[0]["w"]


class MLPHead(_Head):
    """A multilayer perceptron classifier trained with minibatch AdamW (warm-up cosine schedule).

    Args:
        hidden: hidden layer widths. activation: 'relu', 'gelu' or 'tanh'. dropout: rate on hidden activations.
        The rest as LinearHead's (adamw solver).
    """

    def __init__(self, hidden: Sequence[int] = (256,), activation: str = "relu", dropout: float = 0.0,
                 lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 30, batch_size: int = 256,
                 standardize: bool = True, class_weight: Any = None, early_stopping: bool = False,
                 patience: int = 5, validation_fraction: float = 0.1, seed: int = 0) -> None:
        self.hidden, self.activation, self.dropout = hidden, activation, dropout
        self.lr, self.weight_decay, self.epochs, self.batch_size = lr, weight_decay, epochs, batch_size
        self.standardize, self.class_weight = standardize, class_weight
        self.early_stopping, self.patience, self.validation_fraction = early_stopping, patience, validation_fraction
        self.seed = seed

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not supported; valid: {sorted(ACTIVATIONS)}")
        hidden = list(self.hidden) if isinstance(self.hidden, (tuple, list)) else None
        if not hidden or not all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h > 0
                                 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive ints, got {self.hidden!r}")
        _check_range("dropout", self.dropout, 0.0, below=1.0)

    def _train(self, Xs, y, Xv, yv, n_classes, weights):
        return self._sweep(Xs, y, Xv, yv, n_classes, weights, self.hidden, float(self.dropout))


HEADS: Mapping[str, type[_Head]] = {"linear": LinearHead, "mlp": MLPHead}
