"""Significance of estimated edges: two-sided normal p-values and Benjamini–Hochberg q-values.

Every matrix is ``[responder (target), source]``. When sources and responders are the
same neurons the diagonal (each neuron's response to its own stimulation) is left out
of the false-discovery control, since it is not a connection.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_real

__all__ = ["bh_qvalues", "edge_mask", "pvalues", "qvalues", "significant_edges"]


def pvalues(effect, stderr) -> np.ndarray:
    """Two-sided p-value of ``effect / stderr`` under a standard normal; NaN where either is NaN or se <= 0."""
    from scipy.special import ndtr

    effect = np.asarray(effect, dtype=np.float64)
    stderr = np.asarray(stderr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(effect) / stderr
    p = 2.0 * ndtr(-z)
    p[~(np.isfinite(effect) & np.isfinite(stderr) & (stderr > 0))] = np.nan
    return p


def edge_mask(shape, same_neurons: bool) -> np.ndarray:
    """Which entries count as edges for false-discovery control: all, or the off-diagonal ones."""
    mask = np.ones(shape, dtype=bool)
    if same_neurons:
        np.fill_diagonal(mask, False)
    return mask


def bh_qvalues(p, mask=None) -> np.ndarray:
    """Benjamini–Hochberg q-values of the p-values under ``mask`` (finite ones only); NaN elsewhere.

    ``q_(k) = min over l >= k of p_(l) * m / l`` for the ``m`` p-values sorted ascending,
    clipped to 1: an edge is significant at false-discovery rate ``alpha`` when
    ``q <= alpha``.

    Examples
    --------
    >>> bh_qvalues(np.array([0.01, 0.04, 0.03, 0.5])).round(4).tolist()
    [0.04, 0.0533, 0.0533, 0.5]
    """
    p = np.asarray(p, dtype=np.float64)
    use = np.isfinite(p) if mask is None else (np.asarray(mask, dtype=bool) & np.isfinite(p))
    q = np.full(p.shape, np.nan)
    values = p[use]
    m = values.size
    if m == 0:
        return q
    order = np.argsort(values, kind="stable")
    scaled = values[order] * m / np.arange(1, m + 1)
    running = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(running, 1.0)
    q[use] = out
    return q


def qvalues(effect, stderr, same_neurons: bool) -> np.ndarray:
    """BH q-values of :func:`pvalues`, over the off-diagonal edges when sources are the responders."""
    p = pvalues(effect, stderr)
    return bh_qvalues(p, edge_mask(p.shape, same_neurons))


def significant_edges(qvalue, alpha) -> np.ndarray:
    """Boolean: ``qvalue <= alpha`` (false-discovery rate ``alpha`` in (0, 1)); False where q is NaN."""
    alpha = check_real(alpha, "alpha")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    with np.errstate(invalid="ignore"):
        return np.asarray(qvalue) <= alpha
