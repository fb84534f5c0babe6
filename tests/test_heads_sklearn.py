"""The heads inside scikit-learn: check_estimator, clone, Pipeline, cross_val_score, GridSearchCV; and the
default linear head against LogisticRegression() on the same standardised features."""

import numpy as np
import pytest
from sklearn import datasets
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from pipeline import data
from pipeline.heads import LinearHead, MLPHead, engine


@pytest.mark.parametrize("head", [LinearHead(), MLPHead()], ids=["linear", "mlp"])
def test_check_estimator_passes(head):
    # Every check of scikit-learn's suite, none skipped (fit takes no sample_weight, so those checks do not run).
    check_estimator(head)


def _blobs(n=300, d=8, k=3, seed=0):
    X, y = datasets.make_blobs(n, d, centers=k, cluster_std=4.0, random_state=seed)
    return X.astype(np.float32), np.array(["a", "b", "c"])[y]


@pytest.mark.parametrize("head, grid", [(LinearHead(), {"linearhead__C": [0.01, 1.0]}),
                                        (MLPHead(hidden=(16,), epochs=10), {"mlphead__lr": [1e-3, 1e-2]})],
                         ids=["linear", "mlp"])
def test_clone_pipeline_cross_val_score_and_grid_search(head, grid):
    X, y = _blobs()
    copy = clone(head.set_params(seed=3))
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


def _fashion(n_train=600, n_test=400):
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
