"""The score against the true A: one pass for small matrices, streamed over row blocks (dense or sparse) for large."""

import numpy as np
import pytest
import scipy.sparse as sp

from streamcausal import result


@pytest.fixture
def streamed(monkeypatch):
    monkeypatch.setattr(result, "_SCORE_IN_ONE_PASS", 0)


def _case(n=120, seed=3):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.2)
    estimate = A + 0.5 * rng.normal(size=A.shape)
    estimate[rng.random(A.shape) < 0.05] = np.nan
    return A, estimate


def test_streamed_score_equals_corrcoef(streamed):
    A, estimate = _case()
    keep = np.isfinite(estimate)
    expected = np.corrcoef(A[keep], estimate[keep])[0, 1]
    assert result.score(estimate, A) == pytest.approx(expected, rel=1e-12)
    assert result.score(estimate, sp.csr_array(A)) == pytest.approx(expected, rel=1e-12)


def test_small_scores_are_unchanged_bits():
    A, estimate = _case()
    keep = np.isfinite(estimate)
    assert result.score(estimate, A) == float(np.corrcoef(A[keep], estimate[keep])[0, 1])
    assert result.score(estimate, sp.coo_array(A)) == result.score(estimate, A)


@pytest.mark.parametrize("one_pass", [True, False])
def test_undefined_scores_are_nan(one_pass, monkeypatch):
    if not one_pass:
        monkeypatch.setattr(result, "_SCORE_IN_ONE_PASS", 0)
    A, estimate = _case(20)
    assert np.isnan(result.score(np.full_like(estimate, np.nan), A))
    assert np.isnan(result.score(np.ones_like(estimate), A))
    assert np.isnan(result.score(estimate, np.zeros_like(A)))
    with pytest.raises(ValueError, match="shape"):
        result.score(estimate[:5], A)


def test_convergence_point_mean_se_is_nanmean():
    from streamcausal import CrossMoments

    rng = np.random.default_rng(0)
    moments = CrossMoments(4, 3)
    moments.update((rng.random((50, 4)) < 0.5).astype(float), rng.random((50, 3)))
    stderr = moments.stderr()
    assert result.convergence_point(moments)["mean_se"] == float(np.nanmean(stderr))
