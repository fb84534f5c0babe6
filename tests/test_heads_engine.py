"""The vmapped engine (optax.adamw under inject_hyperparams): H heads at once equal the same heads trained one
by one; hyperparameter checks."""

import numpy as np
import pytest
from helpers import assert_allclose

from pipeline.heads import LinearHead, train_heads

# vmap turns each head's matmuls into one batched matmul, whose float32 reductions may differ from the
# unbatched ones in the last bits; a few epochs of Adam keep that well inside this tolerance.
TOL_VMAP = dict(rtol=1e-5, atol=1e-6)


def _blobs(n=300, d=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 2
    y = np.arange(n) % k
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def _standardised():
    X, y = _blobs()
    return (X - X.mean(0)) / X.std(0), y


@pytest.mark.parametrize("hidden", [(), (16,)])
def test_vmapped_heads_equal_heads_trained_one_by_one(hidden):
    X, y = _standardised()
    hp = {"lr": np.array([1e-2, 3e-3, 3e-2]), "weight_decay": np.array([0.0, 1e-2, 1e-3]),
          "dropout": np.array([0.0, 0.2, 0.5]) if hidden else np.zeros(3), "seed": np.array([0, 1, 2])}
    common = dict(n_classes=3, hidden=hidden, epochs=3, batch_size=64, X_val=X[:40], y_val=y[:40], seed=7)
    sweep = train_heads(X, y, hp, **common)
    assert sweep.history["train_loss"].shape == sweep.history["val_accuracy"].shape == (3, 3)
    for h in range(3):
        alone = train_heads(X, y, {k: v[h:h + 1] for k, v in hp.items()}, **common)
        for got, want in zip(sweep.head(h), alone.head(0)):
            assert_allclose(got["w"], want["w"], **TOL_VMAP)
            assert_allclose(got["b"], want["b"], **TOL_VMAP)
        for name, values in alone.history.items():
            assert_allclose(sweep.history[name][:, h], values[:, 0], rtol=1e-5, atol=1e-5)
    # hyperparameters matter: the heads did not all learn the same thing
    assert not np.allclose(sweep.params[-1]["w"][0], sweep.params[-1]["w"][1], atol=1e-3)


def test_single_linear_fit_is_one_head_of_the_engine():
    X, y = _blobs()
    head = LinearHead(solver="adamw", lr=0.02, weight_decay=1e-3, epochs=4, batch_size=50, seed=3).fit(X, y)
    Xs = (X - X.mean(0)) / X.std(0)
    alone = train_heads(Xs, y, {"lr": [0.02], "weight_decay": [1e-3], "seed": [3]}, n_classes=3, epochs=4,
                        batch_size=50, seed=3)
    assert_allclose(head.params_[0]["w"], alone.head(0)[0]["w"], rtol=1e-5, atol=1e-6)
    assert [r["train_loss"] for r in head.history_] == alone.history["train_loss"][:, 0].tolist()


def test_early_stopping_keeps_each_heads_best_epoch():
    X, y = _standardised()
    hp = {"lr": np.array([0.5, 1e-3]), "seed": np.array([0, 0])}
    run = train_heads(X[:200], y[:200], hp, n_classes=3, hidden=(32,), epochs=12, batch_size=32,
                      X_val=X[200:], y_val=y[200:], early_stopping=True, patience=2)
    val_loss = run.history["val_loss"]
    assert_allclose(run.best_epoch, np.argmin(val_loss, axis=0) + 1, rtol=0, atol=0)
    assert len(val_loss) <= min(12, run.best_epoch.max() + 2)
    again = train_heads(X[:200], y[:200], {k: v[:1] for k, v in hp.items()}, n_classes=3, hidden=(32,),
                        epochs=12, batch_size=32, X_val=X[200:], y_val=y[200:], early_stopping=True, patience=2)
    assert again.best_epoch[0] == run.best_epoch[0]
    assert_allclose(again.head(0)[0]["w"], run.head(0)[0]["w"], **TOL_VMAP)


def test_a_second_call_with_the_same_shapes_compiles_nothing():
    X, y = _standardised()
    train_heads(X, y, {"lr": [0.1, 0.2]}, n_classes=3, epochs=1, batch_size=100)
    assert train_heads(X, y, {"lr": [0.3, 0.4]}, n_classes=3, epochs=1, batch_size=100).compile_seconds == 0.0


@pytest.mark.parametrize("hp, message", [
    ({"weight_decay": [0.1]}, "hparams needs 'lr'"),
    ({"lr": [0.1], "momentum": [0.9]}, r"unknown per-head hyperparameters \['momentum'\]; valid: \['dropout', 'lr', "
                                       r"'seed', 'weight_decay'\]"),
    ({"lr": [0.1, 0.2], "weight_decay": [0.0, 0.1, 0.2]}, "1-D arrays of one length H; got"),
    ({"lr": [[0.1]]}, "1-D arrays of one length H"),
    ({"lr": [0.1, 0.0]}, r"lr must be a float in the range \(0.0, inf\); bad values: \[0.0\]"),
    ({"lr": [0.1], "dropout": [1.0]}, r"dropout must be a float in the range \[0.0, 1.0\); bad values: \[1.0\]"),
    ({"lr": [0.1], "weight_decay": [-1.0]},
     r"weight_decay must be a float in the range \[0.0, inf\); bad values: \[-1.0\]"),
])
def test_bad_hyperparameters_are_named(hp, message):
    X, y = _standardised()
    with pytest.raises(ValueError, match=message):
        train_heads(X, y, hp, n_classes=3, epochs=1)


def test_early_stopping_needs_validation_data():
    X, y = _standardised()
    with pytest.raises(ValueError, match=r"early_stopping needs validation data \(X_val, y_val\)"):
        train_heads(X, y, {"lr": [0.1]}, n_classes=3, early_stopping=True)
