"""LinearHead and MLPHead: input validation, accuracy on blobs, sklearn agreement, repeatability, save/load."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TOL_PORT, assert_allclose
from sklearn.linear_model import LogisticRegression

from pipeline.heads import LinearHead, MLPHead, NotFittedError, load_head
from pipeline.heads import lbfgs, logistic
from pipeline.heads.checks import class_weights
from pipeline.heads.logistic import fit_logistic
from pipeline.weights import save_params

ROOT = Path(__file__).resolve().parents[1]


def _blobs(n=300, d=20, k=3, seed=0, spread=2.0):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(100).normal(size=(k, d)) * spread
    y = rng.integers(0, k, n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


@pytest.fixture(scope="module")
def data():
    X, y = _blobs(spread=0.8)  # overlapping blobs (sklearn: 0.95): accuracy is informative, not trivially 1
    return X[:200], y[:200], X[200:], y[200:]


@pytest.mark.parametrize("solver", ["adamw", "lbfgs"])
def test_linear_head_beats_0_9_and_lbfgs_matches_sklearn(data, solver):
    X, y, Xt, yt = data
    head = LinearHead(solver=solver, C=0.5, weight_decay=1e-2, epochs=30, max_iter=500, tol=1e-6).fit(X, y, Xt, yt)
    acc = head.score(Xt, yt)
    assert acc > 0.9
    assert head.coef_.shape == (20, 3) and head.intercept_.shape == (3,) and head.n_features_in_ == 20
    assert_allclose(Xt @ head.coef_ + head.intercept_, head.decision_function(Xt), rtol=1e-4, atol=1e-4)
    assert_allclose(head.predict_proba(Xt).sum(axis=1), np.ones(len(Xt)), rtol=0, atol=1e-5)
    assert len(head.history_) == head.best_epoch_ and {"train_loss", "val_loss", "val_accuracy"} <= set(
        head.history_[-1])
    if solver == "lbfgs":
        mean, std = X.mean(0), X.std(0)
        # the same objective as scikit-learn's, solved to a tight tolerance by both (float32 here, float64 there)
        sk = LogisticRegression(C=0.5, max_iter=2000, tol=1e-8).fit((X - mean) / std, y)
        assert sk.score((Xt - mean) / std, yt) == acc
        assert_allclose(head.params_[0]["w"], sk.coef_.T, rtol=0, atol=2e-3)


def test_mlp_head_fits_blobs_with_string_labels(data):
    X, y, Xt, yt = data
    names = np.array(["ant", "bee", "cow"])
    head = MLPHead(hidden=(32, 16), activation="gelu", dropout=0.1, lr=3e-3, epochs=20, batch_size=32).fit(X, names[y])
    assert head.classes_.tolist() == ["ant", "bee", "cow"]
    assert head.score(Xt, names[yt]) > 0.9
    assert set(head.predict(Xt).tolist()) <= set(names.tolist())


def test_same_seed_gives_identical_params_and_another_seed_does_not(data):
    X, y, _, _ = data
    a, b, c = (MLPHead(hidden=(16,), dropout=0.3, epochs=3, seed=s).fit(X, y) for s in (5, 5, 6))
    for la, lb, lc in zip(a.params_, b.params_, c.params_):
        assert_allclose(la["w"], lb["w"], rtol=0, atol=0)
        assert_allclose(la["b"], lb["b"], rtol=0, atol=0)
    assert not np.allclose(a.params_[0]["w"], c.params_[0]["w"], atol=1e-3)


def test_early_stopping_holds_out_validation_rows(data):
    X, y, _, _ = data
    head = MLPHead(hidden=(16,), lr=0.3, epochs=40, early_stopping=True, patience=3).fit(X, y)
    losses = [r["val_loss"] for r in head.history_]
    assert head.best_epoch_ == int(np.argmin(losses)) + 1
    assert len(losses) <= head.best_epoch_ + 3


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_save_load_round_trip_gives_identical_predictions(data, tmp_path, kind):
    X, y, Xt, _ = data
    head = (LinearHead(epochs=3) if kind == "linear" else MLPHead(hidden=(8, 4), activation="tanh", epochs=3))
    head.fit(X, np.array(["no", "yes", "maybe"])[y])
    path = head.save(tmp_path / "head.safetensors", {"tap": "pool", "digest": "ab12", "metrics": {"acc": 0.5}})
    again = load_head(path)
    assert type(again) is type(head) and again.get_params() == head.get_params()
    assert again.classes_.tolist() == head.classes_.tolist() and again.history_ == head.history_
    assert again.info_ == {"tap": "pool", "digest": "ab12", "metrics": {"acc": 0.5}}
    assert_allclose(again.predict_proba(Xt), head.predict_proba(Xt), rtol=0, atol=0)
    assert again.predict(Xt).tolist() == head.predict(Xt).tolist()


def test_load_head_rejects_other_safetensors(tmp_path):
    save_params(tmp_path / "w.safetensors", {"w": np.zeros(2, np.float32)}, {"format": "weights"})
    with pytest.raises(ValueError, match=r"is not a saved head: metadata format is 'weights', "
                                         r"expected 'pipeline.head/1'"):
        load_head(tmp_path / "w.safetensors")


def test_unfitted_and_mismatched_predictions_raise(data):
    X, y, _, _ = data
    head = LinearHead()
    with pytest.raises(NotFittedError, match=r"this LinearHead instance is not fitted yet; call fit\(X, y\)"):
        head.predict(X)
    with pytest.raises(NotFittedError):
        head.coef_
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    with pytest.raises(NotFittedError):
        head.save("x.safetensors")
    head.set_params(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="X has 19 features, but LinearHead is expecting 20 features as input"):
        head.predict(X[:, :19])


def test_class_weights():
    classes, y = np.array([3, 7]), np.array([0, 0, 0, 1])
    assert_allclose(class_weights("balanced", classes, y), [4 / 6, 4 / 2], rtol=1e-6, atol=0)
    assert_allclose(class_weights({7: 5.0}, classes, y), [1.0, 5.0], rtol=0, atol=0)
    assert_allclose(class_weights(None, classes, y), [1.0, 1.0], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"class_weight names classes \[9\] not in the training labels \[3, 7\]"):
        class_weights({9: 1.0}, classes, y)
    with pytest.raises(ValueError, match=r"class_weight 'auto' is not supported; valid: None, 'balanced'"):
        class_weights("auto", classes, y)
    with pytest.raises(ValueError, match=r"class weights must be finite and > 0"):
        class_weights({3: 0.0}, classes, y)


def test_balanced_class_weight_raises_minority_recall():
    X, y = _blobs(n=400, spread=0.4, k=2, seed=1)
    keep = (y == 0) | (np.arange(len(y)) % 8 == 0)  # class 1 becomes rare
    X, y = X[keep], y[keep]
    plain = LinearHead(solver="lbfgs").fit(X, y)
    balanced = LinearHead(solver="lbfgs", class_weight="balanced").fit(X, y)
    recall = [np.mean(h.predict(X[y == 1]) == 1) for h in (plain, balanced)]
    assert recall[1] > recall[0]


BAD_FITS = [
    (lambda X, y: (X[:, :, None], y), ValueError, r"X must be 2-D \(n_samples, n_features\), got shape \(200, 20, 1\)"),
    (lambda X, y: (np.full(X.shape, "ant"), y), ValueError, "could not convert string to float: .*ant"),
    (lambda X, y: (X.astype(complex), y), ValueError, "Complex data not supported"),
    (lambda X, y: (np.where(np.arange(200)[:, None] % 50 == 3, np.nan, X), y), ValueError,
     r"X has non-finite values \(NaN or Inf\) in 4 row\(s\): \[3, 53, 103, 153\]"),
    (lambda X, y: (X, y[:-1]), ValueError, r"inconsistent numbers of samples: \[200, 199\]"),
    (lambda X, y: (X, np.zeros_like(y)), ValueError, r"y needs at least 2 classes, got 1 class: \[0\]"),
    (lambda X, y: (X, y + 0.5), ValueError, "Unknown label type: continuous"),
    (lambda X, y: (X, np.stack([y, y], 1)), ValueError, r"y should be a 1d array, got an array of shape \(200, 2\)"),
]


@pytest.mark.parametrize("make, error, message", BAD_FITS)
def test_bad_training_data_is_named(data, make, error, message):
    X, y, _, _ = data
    with pytest.raises(error, match=message):
        LinearHead().fit(*make(X, y))


def test_bad_validation_data_is_named(data):
    X, y, Xt, yt = data
    with pytest.raises(ValueError, match="give both X_val and y_val, or neither"):
        LinearHead().fit(X, y, Xt)
    with pytest.raises(ValueError, match="X_val has 19 features but X has 20"):
        LinearHead().fit(X, y, Xt[:, :19], yt)
    with pytest.raises(ValueError,
                       match=r"y_val has labels absent from the training labels: \[5\]; known classes: \[0, 1, 2\]"):
        LinearHead().fit(X, y, Xt, np.where(yt == 2, 5, yt))


@pytest.mark.parametrize("head, message", [
    (LinearHead(solver="sgd"), r"The 'solver' parameter of LinearHead must be a str among \{'(adamw|lbfgs)', "
                               r"'(adamw|lbfgs)'\}. Got 'sgd' instead."),
    (LinearHead(lr=0.0), r"The 'lr' parameter of LinearHead must be a float in the range \(0.0, inf\). Got 0.0"),
    (LinearHead(C=-1), r"The 'C' parameter of LinearHead must be a float in the range \(0.0, inf\). Got -1"),
    (LinearHead(epochs=0), r"The 'epochs' parameter of LinearHead must be an int in the range \[1, inf\). Got 0"),
    (LinearHead(batch_size=2.5), r"The 'batch_size' parameter of LinearHead must be an int in the range \[1, inf\)"),
    (LinearHead(weight_decay=-1), r"The 'weight_decay' parameter of LinearHead must be a float in the range \[0.0"),
    (MLPHead(activation="elu"), r"The 'activation' parameter of MLPHead must be a str among"),
    (MLPHead(hidden=(0,)), r"hidden must be a non-empty sequence of positive ints, got \(0,\)"),
    (MLPHead(dropout=1.0), r"The 'dropout' parameter of MLPHead must be a float in the range \[0.0, 1.0\). Got 1.0"),
])
def test_bad_hyperparameters_are_named_at_fit(data, head, message):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=message):
        head.fit(X, y)


def test_set_params_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"Invalid parameter 'alpha' for estimator MLPHead\(\). Valid parameters are: "
                                         r"\['activation', 'batch_size'"):
        MLPHead().set_params(alpha=1.0)


def test_public_names_are_the_objects_not_their_modules():
    import importlib
    import types

    import pipeline.heads as heads

    for module in ("bench", "checks", "engine", "estimators", "knn", "logme", "ridge", "run"):
        importlib.import_module(f"pipeline.heads.{module}")  # binds each submodule on the package
    assert [n for n in heads.__all__ if isinstance(getattr(heads, n), types.ModuleType)] == []
    assert heads.logme.__name__ == "logme" and heads.LinearHead.__name__ == "LinearHead"


# --- the default linear head's two routes (pipeline.heads.logistic) ---------------------------------------

def test_host_and_xla_routes_reach_the_same_head(data):
    X, y, Xt, yt = data
    weights = np.array([1.0, 2.0, 0.5], np.float32)
    kw = dict(n_classes=3, l2=1e-2, class_weight=weights, max_iter=500, tol=1e-6, X_val=Xt, y_val=yt)
    (host,), host_history, host_compile = fit_logistic(X, y, route="host", **kw)
    (xla,), xla_history, _ = fit_logistic(X, y, route="xla", **kw)
    # one objective, one stopping rule; float32 products on both routes (the port tolerance)
    assert_allclose(host["w"], xla["w"], **TOL_PORT)
    assert_allclose(host["b"], xla["b"], **TOL_PORT)
    assert host_compile == 0.0 and set(host_history) == set(xla_history) == {"train_loss", "val_loss", "val_accuracy"}
    assert_allclose(host_history["train_loss"][-1], xla_history["train_loss"][-1], rtol=1e-5, atol=1e-6)
    assert_allclose(host_history["val_accuracy"][-1], xla_history["val_accuracy"][-1], rtol=0, atol=1e-7)  # float32 there
    with pytest.raises(ValueError, match=r"unknown route 'gpu'; valid: 'host', 'xla', None \(by size and device\)"):
        fit_logistic(X, y, n_classes=3, l2=1e-2, route="gpu")


def test_the_route_is_chosen_by_size_and_device(data, monkeypatch):
    X, y, _, _ = data
    taken, xla = [], lbfgs.fit_lbfgs
    monkeypatch.setattr(lbfgs, "fit_lbfgs", lambda *a, **k: taken.append("xla") or xla(*a, **k))
    monkeypatch.setattr(logistic, "_default_backend", lambda: "gpu")
    monkeypatch.setattr(logistic, "HOST_MAX_ELEMENTS", X.size)
    host = LinearHead(tol=1e-6, max_iter=500).fit(X, y)  # at the bound: the host, whatever the device
    assert taken == [] and host.compile_seconds_ == 0.0
    monkeypatch.setattr(logistic, "HOST_MAX_ELEMENTS", X.size - 1)
    through_xla = LinearHead(tol=1e-6, max_iter=500).fit(X, y)  # past it, on an accelerator: XLA
    assert taken == ["xla"]
    assert_allclose(through_xla.coef_, host.coef_, **TOL_PORT)
    monkeypatch.setattr(logistic, "_default_backend", lambda: "cpu")
    LinearHead().fit(X, y)  # past it on a CPU: the host
    assert taken == ["xla"]


def test_a_small_default_linear_fit_imports_no_jax(tmp_path):
    # JAX's import and start-up were most of a small fit's process time (scripts/bench_heads.py); switching
    # the compile cache on (as every command does) must not import it either, yet reach JAX once imported
    code = ("import sys, numpy as np; from pipeline.compile_cache import enable_compile_cache; "
            "from pipeline.heads import LinearHead; enable_compile_cache(sys.argv[1]); "
            "X = np.random.default_rng(0).normal(size=(500, 64)).astype('f4'); y = (X[:, 0] > 0).astype(int); "
            "head = LinearHead().fit(X, y); head.predict(X); head.score(X, y); "
            "bad = [m for m in ('jax', 'optax', 'flax') if m in sys.modules]; "
            "import jax; assert jax.config.jax_compilation_cache_dir == sys.argv[1], jax.config.jax_compilation_cache_dir; "
            "sys.exit(str(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "jax-compile")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
