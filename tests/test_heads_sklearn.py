"""The heads inside scikit-learn: check_estimator, clone, Pipeline, cross_val_score, GridSearchCV; and the
default linear head against LogisticRegression() on the same standardised features."""

import numpy as np
import pytest
from sklearn import datasets
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from helpers import assert_allclose
from pipeline import data
from pipeline.heads import KNNHead, LinearHead, MLPHead, RidgeHead, engine, knn_accuracy, ridge_sweep
from pipeline.heads.checks import stratified_holdout


@pytest.mark.parametrize("head", [LinearHead(), MLPHead(), RidgeHead(), KNNHead()],
                         ids=["linear", "mlp", "ridge", "knn"])
def test_check_estimator_passes(head):
    # Every check of scikit-learn's suite, none skipped (fit takes no sample_weight, so those checks do not run).
    check_estimator(head)


def _blobs(n=300, d=8, k=3, seed=0):
    X, y = datasets.make_blobs(n, d, centers=k, cluster_std=4.0, random_state=seed)
    return X.astype(np.float32), np.array(["a", "b", "c"])[y]


@pytest.mark.parametrize("head, grid", [(LinearHead(), {"linearhead__C": [0.01, 1.0]}),
                                        (MLPHead(hidden=(16,), epochs=10), {"mlphead__lr": [1e-3, 1e-2]}),
                                        (RidgeHead(), {"ridgehead__l2s": [(1.0,), (10.0, 100.0)]}),
                                        (KNNHead(), {"knnhead__k": [1, 5]})],
                         ids=["linear", "mlp", "ridge", "knn"])
def test_clone_pipeline_cross_val_score_and_grid_search(head, grid):
    X, y = _blobs()
    copy = clone(head.set_params(**({"seed": 3} if "seed" in head.get_params() else {"k": 3})))
    assert copy is not head and copy.get_params() == head.get_params()
    pipe = make_pipeline(StandardScaler(), head)
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    before = len(engine._EXECUTABLES)
    search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    # 2 values x 3 folds + the refit = 7 fits, but the 200-row folds and the 300-row refit fall in two padded
    # sizes: at most two programs each (L-BFGS step; or the MLP's init and epoch), compiled once.
    assert len(engine._EXECUTABLES) - before <= 4
    assert search.best_params_[next(iter(grid))] in next(iter(grid.values()))
    assert search.score(X, y) > 0.8 and set(search.predict(X)) <= {"a", "b", "c"}


def _digits():
    X, y = datasets.load_digits(return_X_y=True)
    return X[:1400], y[:1400], X[1400:], y[1400:]


def _fashion(n_train=2_000, n_test=10_000):
    # the whole test split: on 400 images (+-2 points) the converged head and scikit-learn's stop at its
    # 100 iterations differed by 2 images either way with the training set; 10,000 measure +-0.4
    if not data.FASHION_DIR.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    out = []
    for split, n in (("trainval", n_train), ("test", n_test)):
        source = data.open_source("fashion-mnist", split)
        batch = next(source.iter_batches(n))
        out += [batch.images.reshape(n, -1).astype(np.float32) / 255, np.asarray(source.labels[:n])]
    return out


@pytest.mark.parametrize("load", [_digits, _fashion], ids=["digits", "fashion-mnist"])
def test_default_linear_head_scores_at_least_logistic_regression(load):
    X, y, Xt, yt = load()
    scaler = StandardScaler().fit(X)
    sk = LogisticRegression().fit(scaler.transform(X), y).score(scaler.transform(Xt), yt)
    ours = LinearHead().fit(X, y).score(Xt, yt)  # standardises inside with the same statistics
    assert ours >= sk, (ours, sk)


def test_ridge_head_is_sklearns_ridge_classifier_and_picks_on_its_inner_split():
    X, y = _blobs()
    Xs = StandardScaler().fit_transform(X.astype(np.float64))
    ours = RidgeHead(l2s=(3.0,)).fit(Xs, y)
    sk = RidgeClassifier(alpha=3.0).fit(Xs, y)
    assert_allclose(ours.coef_, sk.coef_, rtol=1e-8, atol=1e-10)
    assert_allclose(ours.decision_function(Xs), sk.decision_function(Xs), rtol=1e-8, atol=1e-10)
    assert ours.l2_ == 3.0 and ours.val_accuracy_ is None
    picked = RidgeHead(l2s=[0.1, 1e3, 1e5], validation_fraction=0.25, seed=1).fit(X, y)
    keep, held = stratified_holdout(np.searchsorted(picked.classes_, y), 0.25, 1)
    sweep = ridge_sweep(X[keep], np.searchsorted(picked.classes_, y[keep]), X[held],
                        np.searchsorted(picked.classes_, y[held]), [0.1, 1e3, 1e5])
    assert picked.l2_ == sweep.best_l2 and (picked.val_accuracy_ == sweep.val_accuracy).all()
    with pytest.raises(ValueError, match=r"l2s must be a float in the range \(0.0, inf\); bad values: \[-1.0\]"):
        RidgeHead(l2s=(1.0, -1.0)).fit(X, y)
    with pytest.raises(ValueError, match="The 'l2s' parameter of RidgeHead must be an instance of 'tuple' or"):
        RidgeHead(l2s=5.0).fit(X, y)


def test_knn_head_predicts_what_knn_accuracy_scores():
    X, y = _blobs()
    head = KNNHead(k=5).fit(X[:200], y[:200])
    pred = head.predict(X[200:])
    classes, codes = np.unique(y, return_inverse=True)
    assert np.mean(pred == y[200:]) == knn_accuracy(X[:200], codes[:200], X[200:], codes[200:], 5)[5]
    sk = KNeighborsClassifier(5, metric="cosine").fit(X[:200], y[:200]).predict(X[200:])
    assert np.mean(pred == sk) > 0.97  # the same but for vote ties (broken by similarity here, by label there)
    with pytest.raises(ValueError, match="k=50 exceeds the 30 training samples"):
        KNNHead(k=50).fit(X[:30], y[:30])
