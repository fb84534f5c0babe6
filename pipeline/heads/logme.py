"""LogME (You et al., ICML 2021): the maximised log evidence of a Bayesian linear model per sample.

For each class c, the targets are the indicator y = (labels == c) and the model is
y ~ N(F w, 1/beta), w ~ N(0, 1/alpha I). alpha and beta are found by the fixed-point iteration
    gamma = sum_i beta s_i / (alpha + beta s_i),  m = beta A^-1 F^T y,  A = alpha I + beta F^T F,
    alpha <- gamma / (m^T m + 1e-5),  beta <- (N - gamma) / (||y - F m||^2 + 1e-5),
with s_i the eigenvalues of F^T F, written in the eigenbasis so one decomposition serves all classes.
The evidence is
    L/N = [D/2 log alpha + N/2 log beta - beta/2 ||y - F m||^2 - alpha/2 m^T m
           - 1/2 log|A| - N/2 log 2 pi] / N,
and the score is its mean over classes.

Conventions follow the authors' reference code (github.com/thuml/LogME, `LogME._fit_fixed_point`):
float64 throughout; alpha = beta = 1 at start; at most 11 iterations; stop when t = alpha / beta
changes by at most 1e-3 relative; the final evidence uses the new alpha, beta with the m of the last
iteration (computed from the previous alpha, beta); the classes are the labels present.
One deliberate difference: log|A| here sums over all D eigenvalues, including the D - rank(F) zero
ones (each contributing log alpha), as the paper's formula says; the reference code drops those, so
for D > N (or rank-deficient F) its score is ours + (D - rank) log(alpha) / (2 N) per class.
"""

from __future__ import annotations

import numpy as np

from pipeline.heads.checks import check_classes, check_features, check_labels

EPSILON = 1e-5  # added to the denominators of the alpha/beta updates, as in the reference code
MAX_ITERATIONS = 11
TOLERANCE = 1e-3  # on the relative change of alpha / beta


def _spectrum(f: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nonzero eigenvalues s (k,) of F^T F and squared projections (k, C) of targets on F's left singular vectors."""
    n, d = f.shape
    if d <= n:
        s, v = np.linalg.eigh(f.T @ f)
        proj = v.T @ (f.T @ targets)  # = sqrt(s) * (U^T y); divided back below on the kept directions
    else:
        s, u = np.linalg.eigh(f @ f.T)
        proj = u.T @ targets
    # Directions below round-off are the null space: they add log(alpha) to log|A| and nothing else.
    keep = s > s.max() * max(n, d) * np.finfo(np.float64).eps
    if not keep.any():
        raise ValueError("features are all zero: LogME is undefined")
    s, proj = s[keep], proj[keep]
    x2 = proj ** 2 / s[:, None] if d <= n else proj ** 2
    return s, x2


def _class_evidence(s: np.ndarray, x2: np.ndarray, y2: float, n: int, d: int) -> float:
    """Maximised log evidence per sample for one target vector, given its squared projections x2 (k,)."""
    res_x2 = y2 - x2.sum()  # the part of y outside F's column space
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        t = alpha / beta
        gamma = np.sum(s / (s + t))
        m2 = np.sum(s * x2 / (t + s) ** 2)
        res2 = np.sum(x2 * (t / (t + s)) ** 2) + res_x2
        alpha = gamma / (m2 + EPSILON)
        beta = (n - gamma) / (res2 + EPSILON)
        if abs(alpha / beta - t) / t <= TOLERANCE:
            break
    log_det = np.sum(np.log(alpha + beta * s)) + (d - s.size) * np.log(alpha)
    evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * log_det
                - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * np.log(2 * np.pi))
    return float(evidence / n)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME score of features for a classification task (higher: features suit the labels better).

    Args:
      features: (N, D) real features (used as given: no standardisation, no bias column).
      labels: (N,) integer labels with at least 2 distinct values.

    Returns:
      The mean over the classes present of the maximised log evidence per sample.
    """
    f = check_features(features, "features").astype(np.float64)
    y = check_labels(labels, f.shape[0], "labels", "features")
    classes = check_classes(y, "labels")
    targets = (y[:, None] == classes[None, :]).astype(np.float64)
    s, x2 = _spectrum(f, targets)
    n, d = f.shape
    y2 = targets.sum(axis=0)  # = sum of squared 0/1 targets
    return float(np.mean([_class_evidence(s, x2[:, c], y2[c], n, d) for c in range(classes.size)]))
