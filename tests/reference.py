"""Slow, obviously correct NumPy references that every fast path is checked against."""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------- moments
# Inputs U (T, n_in) and outputs V (T, n_out) are time-major; every matrix returned
# is (n_out, n_in) = [target, source], A's orientation.


def reference_cross_moments(U, V) -> dict:
    """Count, means, centred sums of squares and co-moment of the whole data, by brute force.

    Means and sums use ``math.fsum`` (exactly rounded) over explicit loops.
    """
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    count = U.shape[0]
    n_in, n_out = U.shape[1], V.shape[1]
    mean_in = np.array([math.fsum(U[:, i]) / count for i in range(n_in)])
    mean_out = np.array([math.fsum(V[:, j]) / count for j in range(n_out)])
    du = U - mean_in
    dv = V - mean_out
    m2_in = np.array([math.fsum(du[:, i] * du[:, i]) for i in range(n_in)])
    m2_out = np.array([math.fsum(dv[:, j] * dv[:, j]) for j in range(n_out)])
    comoment = np.empty((n_out, n_in))
    for j in range(n_out):
        for i in range(n_in):
            comoment[j, i] = math.fsum(dv[:, j] * du[:, i])
    return {
        "count": count,
        "mean_in": mean_in,
        "mean_out": mean_out,
        "m2_in": m2_in,
        "m2_out": m2_out,
        "comoment": comoment,
    }


def reference_correlation(U, V) -> np.ndarray:
    """Pearson ``corr(V[:, j], U[:, i])`` as ``[j, i]`` via ``np.corrcoef``; NaN for constant columns."""
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    n_in = U.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(np.hstack([U, V]).T)[n_in:, :n_in]
    # np.corrcoef centres with np.mean, which can miss a constant column's value by an ulp
    # and then returns noise instead of NaN; a constant column has no correlation.
    if U.shape[0] > 0:
        corr[:, np.all(U == U[0], axis=0)] = np.nan
        corr[np.all(V == V[0], axis=0), :] = np.nan
    return corr


def reference_effect(U, V) -> np.ndarray:
    """Difference in means ``E[V_j | U_i = 1] - E[V_j | U_i = 0]`` as ``[j, i]``, for 0/1 inputs ``U``.

    NaN where input ``i`` is never 1 or never 0.
    """
    U = np.asarray(U)
    V = np.asarray(V, dtype=np.float64)
    if not np.isin(U, (0, 1)).all():
        raise ValueError("reference_effect needs binary 0/1 inputs")
    effect = np.full((V.shape[1], U.shape[1]), np.nan)
    for i in range(U.shape[1]):
        on = U[:, i] == 1
        off = U[:, i] == 0
        if not on.any() or not off.any():
            continue
        for j in range(V.shape[1]):
            effect[j, i] = V[on, j].mean() - V[off, j].mean()
    return effect


def _ols_pair(x, y):
    """OLS of y on [1, x]: (slope, standard error of the slope), textbook formulas."""
    n = x.shape[0]
    X = np.column_stack([np.ones(n), x])
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    if n < 3:
        return beta[1], np.nan
    residual = y - X @ beta
    sigma2 = math.fsum(residual * residual) / (n - 2)
    covariance = sigma2 * np.linalg.inv(X.T @ X)
    return beta[1], math.sqrt(covariance[1, 1])


def reference_slope(U, V) -> np.ndarray:
    """Per-pair OLS slope (with intercept) of ``V[:, j]`` on ``U[:, i]`` as ``[j, i]``.

    NaN for constant inputs.
    """
    return _ols_matrix(U, V)[0]


def reference_stderr(U, V) -> np.ndarray:
    """Per-pair OLS standard error of that slope as ``[j, i]``.

    NaN for constant inputs or fewer than 3 samples.
    """
    return _ols_matrix(U, V)[1]


def _ols_matrix(U, V):
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    slope = np.full((V.shape[1], U.shape[1]), np.nan)
    stderr = np.full_like(slope, np.nan)
    for i in range(U.shape[1]):
        if np.all(U[:, i] == U[0, i]):
            continue
        for j in range(V.shape[1]):
            slope[j, i], stderr[j, i] = _ols_pair(U[:, i], V[:, j])
    return slope, stderr
