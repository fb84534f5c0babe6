"""Closed-form evaluators: ridge sweep against direct solves and sklearn, k-NN against sklearn, LogME
against a literal transcription of the paper's fixed-point equations."""

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from helpers import assert_allclose
from pipeline.heads.knn import knn_accuracy
from pipeline.heads.logme import logme
from pipeline.heads.ridge import RidgeSolver, fit_ridge, ridge_sweep

L2S = [1e-3, 0.1, 1.0, 10.0, 1e3]


def blobs(n, d, n_classes, seed, spread=1.0, labels=None):
    """Gaussian classes around random means; `labels` renames class i to labels[i]."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(1000 + n_classes * d).normal(size=(n_classes, d))
    y = rng.permutation(np.arange(n) % n_classes)
    x = means[y] + spread * rng.normal(size=(n, d))
    return x, (np.asarray(labels)[y] if labels is not None else y)


# ---------------------------------------------------------------- ridge

@pytest.mark.parametrize("n,d", [(80, 6), (20, 50)], ids=["primal", "dual"])
def test_ridge_weights_equal_direct_solve(n, d):
    x, y = blobs(n, d, 3, seed=0)
    x[:, 1] = 3.0  # a constant feature: scale 1 as in StandardScaler, weight 0
    xs = StandardScaler().fit_transform(x)
    targets = 2.0 * np.eye(3)[y] - 1.0
    solver = RidgeSolver(x, y)
    for l2 in L2S:
        w, b = solver.coef(l2)
        direct = np.linalg.solve(xs.T @ xs + l2 * np.eye(d), xs.T @ targets)
        assert_allclose(w, direct, rtol=1e-6, atol=1e-10, err_msg=f"l2={l2}")
        assert_allclose(b, targets.mean(axis=0), rtol=1e-12, atol=1e-12)
        assert np.abs(w[1]).max() < 1e-10 and np.abs(w).max() > 1e-3


@pytest.mark.parametrize("n,d,n_classes", [(90, 5, 3), (24, 40, 4), (60, 4, 2)])
def test_ridge_sweep_matches_sklearn_ridge_classifier(n, d, n_classes):
    # sklearn is fitted on the standardised features with fit_intercept=True: an unpenalised bias.
    x, y = blobs(n, d, n_classes, seed=1, spread=2.0)
    xv, yv = blobs(70, d, n_classes, seed=2, spread=2.0)
    scaler = StandardScaler().fit(x)
    sweep = ridge_sweep(x, y, xv, yv, L2S)
    solver = RidgeSolver(x, y)
    for i, l2 in enumerate(L2S):
        ref = RidgeClassifier(alpha=l2, fit_intercept=True, solver="svd").fit(scaler.transform(x), y)
        ref_scores = ref.decision_function(scaler.transform(xv)).reshape(len(xv), -1)
        w, b = solver.coef(l2)
        ours = scaler.transform(xv) @ w + b
        assert_allclose(ours[:, -ref_scores.shape[1]:], ref_scores, rtol=1e-6, atol=1e-9, err_msg=f"l2={l2}")
        assert sweep.val_accuracy[i] == ref.score(scaler.transform(xv), yv)
    assert 0.3 < sweep.val_accuracy.min() and sweep.val_accuracy.max() < 1.0  # not a trivial task


def test_ridge_sweep_best_is_largest_l2_among_ties():
    x, y = blobs(60, 4, 3, seed=3, spread=2.0)
    xv, yv = blobs(60, 4, 3, seed=4, spread=2.0)
    l2s = [0.01, 0.1, 1.0, 10.0, 100.0, 1e4, 1e6]
    sweep = ridge_sweep(x, y, xv, yv, l2s)
    top = np.flatnonzero(sweep.val_accuracy == sweep.val_accuracy.max())
    assert sweep.best_l2 == l2s[top[-1]] and sweep.best_accuracy == sweep.val_accuracy.max()
    assert_allclose(sweep.l2s, l2s, rtol=0, atol=0)
    easy_x, easy_y = blobs(40, 4, 2, seed=5, spread=0.01)
    easy = ridge_sweep(easy_x, easy_y, *blobs(40, 4, 2, seed=6, spread=0.01), [0.1, 10.0, 1.0])
    assert easy.val_accuracy.tolist() == [1.0, 1.0, 1.0] and easy.best_l2 == 10.0


def test_ridge_float32_and_chunking_agree_with_float64():
    x, y = blobs(50, 6, 3, seed=7)
    x32 = x.astype(np.float32)
    w64, _ = RidgeSolver(x32.astype(np.float64), y).coef(1.0)
    w32, _ = RidgeSolver(x32, y, chunk_size=7).coef(1.0)
    assert_allclose(w32, w64, rtol=1e-10, atol=1e-12)
    xv, yv = blobs(30, 6, 3, seed=8)
    model = fit_ridge(x32, y, xv.astype(np.float32), yv, L2S)
    assert model.coef_.dtype == np.float64 and model.decision_function(xv.astype(np.float32)).dtype == np.float64


def test_fit_ridge_refits_on_train_and_val_like_sklearn():
    labels = [3, 7, 11]
    x, y = blobs(60, 5, 3, seed=9, spread=2.0, labels=labels)
    xv, yv = blobs(45, 5, 3, seed=10, spread=2.0, labels=labels)
    xt, yt = blobs(50, 5, 3, seed=11, spread=2.0, labels=labels)
    model = fit_ridge(x, y, xv, yv, L2S)
    assert model.l2_ == model.sweep.best_l2
    assert model.coef_.shape == (3, 5) and model.intercept_.shape == (3,)
    assert model.classes_.tolist() == labels
    x_all, y_all = np.concatenate([x, xv]), np.concatenate([y, yv])
    scaler = StandardScaler().fit(x_all)
    ref = RidgeClassifier(alpha=model.l2_, fit_intercept=True, solver="svd").fit(scaler.transform(x_all), y_all)
    assert_allclose(model.decision_function(xt), ref.decision_function(scaler.transform(xt)), rtol=1e-6, atol=1e-9)
    assert model.predict(xt).tolist() == ref.predict(scaler.transform(xt)).tolist()
    assert model.score(xt, yt) == ref.score(scaler.transform(xt), yt)
    assert set(model.predict(xt).tolist()) <= set(labels)


@pytest.mark.parametrize("args,kwargs,exc,match", [
    ((np.zeros(5), np.zeros(5, int)), {}, ValueError, r"X_train must be 2-D \(n_samples, n_features\), got shape \(5,\)"),
    ((np.full((4, 2), np.nan), np.arange(4) % 2), {}, ValueError, r"X_train has non-finite values \(NaN or Inf\) in 4 row\(s\): \[0, 1, 2, 3\]"),
    ((np.ones((4, 2)), np.arange(3) % 2), {}, ValueError, r"y_train has 3 labels but X_train has 4 rows"),
    ((np.ones((4, 2)), np.zeros(4, int)), {}, ValueError, r"y_train needs at least 2 classes, got 1 class: \[0\]"),
    ((np.ones((4, 2)), np.arange(4) / 2.0), {}, ValueError,
     r"Unknown label type: y_train holds continuous values of dtype float64"),
    ((np.ones((4, 2)), np.arange(4) % 2), {"X_val": np.ones((2, 3))}, ValueError,
     r"X_val has 3 features but X_train has 2"),
    ((np.ones((4, 2)), np.arange(4) % 2), {"y_val": np.array([0, 5])}, ValueError,
     r"y_val has labels absent from y_train: \[5\]; known classes: \[0, 1\]"),
    ((np.ones((4, 2)), np.arange(4) % 2), {"l2s": [1.0, 0.0, -2.0]}, ValueError, r"bad values: \[0.0, -2.0\]"),
    ((np.ones((4, 2)), np.arange(4) % 2), {"l2s": []}, ValueError, r"l2s must be a non-empty"),
    ((np.ones((4, 2)), np.arange(4) % 2), {"l2s": [np.inf]}, ValueError, r"positive and finite; bad values: \[inf\]"),
    ((np.ones((4, 2)), np.arange(4) % 2), {"chunk_size": 0}, ValueError, r"chunk_size must be a positive int, got 0"),
    ((np.array([["a", "b"]] * 4), np.arange(4) % 2), {}, TypeError, r"X_train must hold real numbers"),
])
@pytest.mark.parametrize("fn", [ridge_sweep, fit_ridge])
def test_ridge_rejects_bad_input(fn, args, kwargs, exc, match):
    call = {"X_val": np.ones((2, 2)), "y_val": np.array([0, 1]), "l2s": [1.0], **kwargs}
    with pytest.raises(exc, match=match):
        fn(*args, call.pop("X_val"), call.pop("y_val"), call.pop("l2s"), **call)


def test_ridge_model_rejects_wrong_width():
    model = fit_ridge(*blobs(20, 3, 2, seed=12), *blobs(10, 3, 2, seed=13), [1.0])
    with pytest.raises(ValueError, match=r"X has 4 features but the model was fitted on 3"):
        model.predict(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"y has 3 labels but X has 2 rows"):
        model.score(np.ones((2, 3)), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match=r"positive and finite; bad values: \[-1.0\]"):
        RidgeSolver(*blobs(20, 3, 2, seed=12)).coef(-1.0)


# ---------------------------------------------------------------- k-NN

@pytest.mark.parametrize("n_classes,ks", [(2, (1, 3, 5, 7)), (4, (1,))])
def test_knn_matches_sklearn_cosine(n_classes, ks):
    # Two classes with odd k, or k = 1, and continuous data: no vote or distance ties, so the rules agree.
    x, y = blobs(60, 5, n_classes, seed=20, spread=1.5)
    xt, yt = blobs(40, 5, n_classes, seed=21, spread=1.5)
    ours = knn_accuracy(x, y, xt, yt, k=ks, chunk_size=7)
    assert list(ours) == list(ks)
    for k in ks:
        ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x, y)
        assert ours[k] == ref.score(xt, yt), f"k={k}"
    assert 0.3 < min(ours.values()) and max(ours.values()) < 1.0  # not a trivial task


def test_knn_chunking_dtype_and_scale_invariance():
    x, y = blobs(50, 6, 3, seed=22, spread=1.5)
    xt, yt = blobs(33, 6, 3, seed=23, spread=1.5)
    ref = knn_accuracy(x, y, xt, yt, k=[5, 1, 5, 50])
    assert list(ref) == [1, 5, 50]
    assert knn_accuracy(x, y, xt, yt, k=[1, 5, 50], chunk_size=1) == ref
    assert knn_accuracy(x.astype(np.float32), y, xt.astype(np.float32), yt, k=[1, 5, 50]) == ref
    scales = np.random.default_rng(0).uniform(0.1, 10.0, size=(50, 1))
    assert knn_accuracy(x * scales, y, xt, yt, k=[1, 5, 50]) == ref
    # k = N: classes 0 and 1 tie with 17 votes each (class 2 has 16), so summed similarity decides per row.
    assert np.bincount(y).tolist() == [17, 17, 16]
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    sims = unit(xt) @ unit(x).T
    pred = np.where(sims[:, y == 0].sum(1) > sims[:, y == 1].sum(1), 0, 1)
    assert ref[50] == np.mean(pred == yt) and 0.0 < ref[50] < 1.0


def test_knn_vote_ties_go_to_larger_summed_similarity():
    train = np.array([[1.0, 0.01], [0.1, 1.0], [0.1, -1.0], [-1.0, 0.0]])
    labels = np.array([5, 2, 2, 5])
    test = np.array([[1.0, 0.0]])
    # k=2: one vote each; label 5 (similarity ~1) beats label 2 (~0.1) although 2 < 5.
    assert knn_accuracy(train, labels, test, np.array([5]), k=2) == {2: 1.0}
    # k=3: two votes for 2 beat one far more similar vote for 5.
    assert knn_accuracy(train, labels, test, np.array([2]), k=3) == {3: 1.0}
    # zero vectors are similar to nothing: all similarities 0, the vote decides.
    assert knn_accuracy(train, labels, np.zeros((1, 2)), np.array([2]), k=3) == {3: 1.0}


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"k": 0}, ValueError, r"k must be a positive int, got 0"),
    ({"k": True}, TypeError, r"k must be a positive int, got True"),
    ({"k": []}, ValueError, r"non-empty sequence of them, got \[\]"),
    ({"k": (1, 9)}, ValueError, r"k=9 exceeds the 4 training samples"),
    ({"X_test": np.ones((2, 3))}, ValueError, r"X_test has 3 features but X_train has 2"),
    ({"y_test": np.array([0, 7])}, ValueError, r"y_test has labels absent from y_train: \[7\]"),
    ({"y_test": np.array([0])}, ValueError, r"y_test has 1 labels but X_test has 2 rows"),
    ({"chunk_size": -1}, ValueError, r"chunk_size must be a positive int, got -1"),
])
def test_knn_rejects_bad_input(kwargs, exc, match):
    call = {"X_train": np.eye(4, 2) + 1, "y_train": np.array([0, 1, 0, 1]), "X_test": np.ones((2, 2)),
            "y_test": np.array([0, 1]), **kwargs}
    with pytest.raises(exc, match=match):
        knn_accuracy(**call)


# ---------------------------------------------------------------- LogME

def logme_literal(f, labels):
    """The paper's fixed point written out with A = alpha I + beta F^T F inverted directly, no SVD.

    Same schedule as the reference code: alpha = beta = 1, at most 11 steps, stop at 1e-3 relative
    change of alpha / beta, final evidence with the new alpha, beta and the last m.
    """
    n, d = f.shape
    ftf = f.T @ f
    evidences = []
    for c in np.unique(labels):
        y = (labels == c).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            a_inv = np.linalg.inv(alpha * np.eye(d) + beta * ftf)
            m = beta * a_inv @ f.T @ y
            gamma = d - alpha * np.trace(a_inv)
            m2, res2 = m @ m, np.sum((y - f @ m) ** 2)
            t = alpha / beta
            alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        log_det = np.linalg.slogdet(alpha * np.eye(d) + beta * ftf)[1]
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * res2 - alpha / 2 * m2
                    - log_det / 2 - n / 2 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return np.mean(evidences)


@pytest.mark.parametrize("n,d,n_classes", [(60, 8, 3), (30, 50, 3), (45, 12, 4)])
def test_logme_matches_literal_fixed_point(n, d, n_classes):
    f, y = blobs(n, d, n_classes, seed=30, spread=1.5, labels=[1, 4, 6, 9][:n_classes])
    assert_allclose(logme(f, y), logme_literal(f, y), rtol=1e-6, atol=0)


def test_logme_rank_deficient_and_float32():
    f, y = blobs(40, 5, 3, seed=31)
    f = np.concatenate([f, f[:, :3] @ np.ones((3, 4))], axis=1)  # D = 9, rank 5
    assert_allclose(logme(f, y), logme_literal(f, y), rtol=1e-6, atol=0)
    f32 = f.astype(np.float32)
    assert_allclose(logme(f32, y), logme_literal(f32.astype(np.float64), y), rtol=1e-6, atol=0)


def test_logme_prefers_separating_features_and_ignores_label_names():
    good, y = blobs(120, 16, 4, seed=32, spread=0.5)
    noise = np.random.default_rng(33).normal(size=good.shape)
    assert logme(good, y) > logme(noise, y) + 0.1
    assert_allclose(logme(good, np.array([7, 3, 5, 0])[y]), logme(good, y), rtol=1e-12, atol=0)


@pytest.mark.parametrize("f,y,exc,match", [
    (np.zeros((4, 2)), np.array([0, 1, 0, 1]), ValueError, r"features are all zero"),
    (np.ones((4, 2)), np.zeros(4, int), ValueError, r"labels needs at least 2 classes, got 1 class: \[0\]"),
    (np.ones((4, 2)), np.array([0.5, 1, 0, 1]), ValueError, r"Unknown label type: labels holds continuous values"),
    (np.ones((4, 2)), np.array([0, 1, 0]), ValueError, r"labels has 3 labels but features has 4 rows"),
    (np.array([[1.0, np.inf]] * 4), np.array([0, 1, 0, 1]), ValueError, r"features has non-finite values \(NaN or Inf\) in 4 row\(s\)"),
    (np.ones((2, 2, 2)), np.array([0, 1]), ValueError, r"features must be 2-D"),
    (np.ones((0, 2)), np.zeros(0, int), ValueError, r"at least one sample and one feature, got shape \(0, 2\)"),
])
def test_logme_rejects_bad_input(f, y, exc, match):
    with pytest.raises(exc, match=match):
        logme(f, y)
