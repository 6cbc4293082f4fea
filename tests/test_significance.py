"""p-values, BH q-values and significant() on the step-based results of run() and estimate()."""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference_bh, reference_pvalues

import streamcausal as sc
from streamcausal.estimators import bh_qvalues, pvalues


def test_run_result_significance_matches_the_references():
    A = sc.create_connectivity(12, density=0.2, random_state=4)
    result = sc.run(A, 200_000, seed=3)
    p = reference_pvalues(result.effect, result.stderr)
    np.testing.assert_allclose(result.pvalue, p, rtol=1e-10, atol=1e-300, equal_nan=True)
    off_diagonal = ~np.eye(12, dtype=bool)
    np.testing.assert_allclose(result.qvalue, reference_bh(p, off_diagonal), rtol=1e-10, equal_nan=True)
    assert np.all(np.isnan(np.diag(result.qvalue)))
    called = result.significant(0.05)
    assert not np.any(np.diag(called))
    true_edges = (A != 0) & off_diagonal
    assert called[true_edges].mean() > 0.9  # power on a long run
    assert called[~true_edges & off_diagonal].mean() < 0.1


def test_estimate_with_other_inputs_controls_every_edge():
    rng = np.random.default_rng(0)
    stimulation = rng.integers(0, 2, size=(4000, 3), dtype=np.uint8)
    activity = np.roll(stimulation @ rng.normal(size=(3, 5)), 1, axis=0) + rng.normal(size=(4000, 5))
    result = sc.estimate(activity, stimulation)  # 3 inputs, 5 outputs: not the same neurons
    p = reference_pvalues(result.effect, result.stderr)
    np.testing.assert_allclose(result.qvalue, reference_bh(p, np.ones((5, 3), dtype=bool)), rtol=1e-10)
    assert result.significant(0.01).shape == (5, 3)


def test_undefined_edges_have_no_p_or_q_value():
    activity = np.zeros((50, 2))
    activity[:, 0] = np.random.default_rng(1).normal(size=50)
    result = sc.estimate(activity)  # neuron 1 never varies
    assert np.all(np.isnan(result.pvalue[:, 1])) and np.all(np.isnan(result.qvalue[:, 1]))
    assert not result.significant().any()


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, float("nan")])
def test_bad_alpha_is_named(alpha):
    result = sc.estimate(np.random.default_rng(2).normal(size=(100, 2)))
    with pytest.raises(ValueError, match="alpha"):
        result.significant(alpha)


def test_estimator_functions_edge_cases():
    assert np.isnan(pvalues(np.array([1.0]), np.array([0.0]))[0])
    assert np.all(np.isnan(bh_qvalues(np.array([np.nan, np.nan]))))
    q = bh_qvalues(np.array([0.5, 0.01, np.nan]), np.array([True, True, True]))
    np.testing.assert_allclose(q[:2], [0.5, 0.02])
