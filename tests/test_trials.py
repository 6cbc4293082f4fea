"""The streaming trial estimator (``estimate_trials``) against slow references, and on planted networks.

* the references (tests/reference.py) against each other and hand computations;
* ``estimate_trials`` against them to 1e-8, for several chunk sizes (which must agree
  to 1e-12), frame times as a rate or timestamps, with and without a baseline, on
  NumPy, Zarr and HDF5 arrays and on a Recording;
* planted networks (tests/experiments.py): effects track the planted weights, a null
  network yields essentially no discovery at FDR 0.05, and the difference estimator's
  responder exclusion is what removes the co-targeting bias;
* dropped trials and bad inputs.

Orientation: ``effect[j, i]`` is responder ``j``, source ``i``.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from experiments import planted_experiment
from reference import (
    reference_bh,
    reference_difference,
    reference_identifiable,
    reference_pvalues,
    reference_regression,
    reference_responses,
)

from streamcausal.experiment import Recording, Trials

CHUNKS = (7, 64, 1000, None)
WINDOW = (0.0, 1.0)
BASELINE = (-0.5, 0.0)


def estimate_trials(*args, **kwargs):
    import streamcausal as sc

    return sc.estimate_trials(*args, **kwargs)


def off_diagonal(n):
    return ~np.eye(n, dtype=bool)


def frame_times(n_frames, timing, starting_time=0.0):
    """(times, end) of a recording: timing is a rate (float) or the timestamps."""
    if np.ndim(timing) == 0:
        times = starting_time + np.arange(n_frames) / timing
        return times, times[-1] + 1.0 / timing
    times = np.asarray(timing, dtype=np.float64)
    return times, times[-1] + (times[-1] - times[-2])


def reference_result(activity, timing, trials, window=WINDOW, baseline=None, method="regression", starting_time=0.0):
    """Everything estimate_trials returns, from the references."""
    times, end = frame_times(activity.shape[0], timing, starting_time)
    responses, kept = reference_responses(activity, times, end, trials.onsets, window, baseline)
    indicators = trials.indicators(0, trials.n_trials, activity.shape[1])[kept]
    if method == "regression":
        effect, stderr = reference_regression(indicators, responses)
    else:
        effect, stderr = reference_difference(indicators, responses)
    p = reference_pvalues(effect, stderr)
    q = reference_bh(p, off_diagonal(activity.shape[1]))
    return {
        "effect": effect,
        "stderr": stderr,
        "pvalue": p,
        "qvalue": q,
        "n_trials": int(kept.sum()),
        "n_dropped": int((~kept).sum()),
        "trials_per_source": indicators.sum(axis=0),
    }


def timing_kwargs(timing):
    return {"rate": timing} if np.ndim(timing) == 0 else {"times": timing}


def assert_matches_reference(result, expected, rtol=1e-8):
    assert result.n_trials == expected["n_trials"]
    assert result.n_dropped == expected["n_dropped"]
    np.testing.assert_array_equal(np.asarray(result.trials_per_source), expected["trials_per_source"])
    for name in ("effect", "stderr", "pvalue", "qvalue"):
        got = np.asarray(getattr(result, name))
        want = expected[name]
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{name}: NaN pattern")
        scale = np.nanmax(np.abs(want)) if np.isfinite(want).any() else 1.0
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3 * scale, equal_nan=True, err_msg=name)
    np.testing.assert_array_equal(np.asarray(result.undefined_edges), np.isnan(expected["effect"]))


def assert_same_result(a, b, rtol=1e-12):
    for name in ("effect", "stderr", "pvalue", "qvalue"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        scale = np.nanmax(np.abs(y)) if np.isfinite(y).any() else 1.0
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * 1e-3 * scale, equal_nan=True, err_msg=name)
    assert (a.n_trials, a.n_dropped) == (b.n_trials, b.n_dropped)


# --------------------------------------------------------------------------- (a) the references


def exclusive_design(n_sources, n_trials, seed):
    """Indicators of trials that each target at most one source (about 1 in 5 sham)."""
    rng = np.random.default_rng(seed)
    which = rng.integers(-1, n_sources, size=n_trials)
    which[: n_sources + 1] = np.arange(-1, n_sources)  # every group present
    which[n_sources + 1 : 2 * n_sources + 2] = np.arange(-1, n_sources)  # twice
    S = np.zeros((n_trials, n_sources))
    S[which >= 0, which[which >= 0]] = 1.0
    return S, which


def test_reference_regression_is_group_means_without_cotargeting():
    """No co-targeting: the regression coefficient is mean(targeted i) - mean(sham), pooled-variance SE."""
    S, which = exclusive_design(3, 60, seed=1)
    Y = np.random.default_rng(2).normal(size=(60, 3)) + S @ np.array([[1.0, 0.3, 0], [0, 1, -0.4], [0.2, 0, 1]]).T
    effect, stderr = reference_regression(S, Y)
    sham = which == -1
    for j in range(3):
        # pooled residual variance over the 4 groups (sham, 0, 1, 2): N - 4 degrees of freedom
        rss = sum(((Y[which == g, j] - Y[which == g, j].mean()) ** 2).sum() for g in range(-1, 3))
        sigma2 = rss / (60 - 4)
        for i in range(3):
            on = which == i
            assert effect[j, i] == pytest.approx(Y[on, j].mean() - Y[sham, j].mean(), rel=1e-12)
            assert stderr[j, i] == pytest.approx(math.sqrt(sigma2 * (1 / on.sum() + 1 / sham.sum())), rel=1e-12)


def test_reference_difference_is_group_means():
    """The difference estimator's groups by hand: off the diagonal, trials targeting j are left out."""
    S, which = exclusive_design(3, 60, seed=3)
    Y = np.random.default_rng(4).normal(size=(60, 3))
    effect, stderr = reference_difference(S, Y)
    for j in range(3):
        for i in range(3):
            if i == j:
                a, b = Y[which == i, j], Y[which != i, j]
            else:
                a, b = Y[which == i, j], Y[(which != i) & (which != j), j]
            assert effect[j, i] == pytest.approx(a.mean() - b.mean(), rel=1e-12)
            assert stderr[j, i] == pytest.approx(math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size), rel=1e-12)
    plain, _ = reference_difference(S, Y, exclude_responder=False)
    for j in range(3):
        for i in range(3):
            assert plain[j, i] == pytest.approx(Y[which == i, j].mean() - Y[which != i, j].mean(), rel=1e-12)


def test_reference_regression_and_difference_agree_on_two_exclusive_sources():
    """Two sources, never co-targeted: off the diagonal both compare 'targeted i' with the shams."""
    S, _ = exclusive_design(2, 50, seed=5)
    Y = np.random.default_rng(6).normal(size=(50, 2))
    regression, _ = reference_regression(S, Y)
    difference, _ = reference_difference(S, Y)
    mask = off_diagonal(2)
    np.testing.assert_allclose(regression[mask], difference[mask], rtol=1e-12)
    assert not np.allclose(np.diag(regression), np.diag(difference))  # the diagonal compares with all others


def test_reference_regression_recovers_noiseless_effects():
    rng = np.random.default_rng(7)
    S = (rng.random((40, 4)) < 0.4).astype(float)
    E = rng.normal(size=(5, 4))
    Y = 2.0 + S @ E.T
    effect, stderr = reference_regression(S, Y)
    np.testing.assert_allclose(effect, E, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stderr, 0.0, atol=1e-7)


def test_reference_regression_singular_design_is_nan():
    """Sources 0 and 1 always targeted together, 3 never, 4 always: only 2 is identifiable.

    Source 2 is sometimes targeted with the pair, so its (estimable) coefficient needs the
    pair's combined column in the model: on noiseless data it is recovered exactly.
    """
    rng = np.random.default_rng(8)
    pair = rng.random(50) < 0.5
    single = rng.random(50) < 0.5
    single[:4] = [True, True, False, False]
    pair[:4] = [True, False, True, False]
    S = np.column_stack([pair, pair, single, np.zeros(50), np.ones(50)]).astype(float)
    np.testing.assert_array_equal(reference_identifiable(S), [False, False, True, False, False])
    E = rng.normal(size=(5, 5))
    Y = 1.0 + S @ E.T
    effect, stderr = reference_regression(S, Y)
    assert np.isnan(effect[:, [0, 1, 3, 4]]).all() and np.isnan(stderr[:, [0, 1, 3, 4]]).all()
    np.testing.assert_allclose(effect[:, 2], E[:, 2], rtol=1e-10)
    # with noise: degrees of freedom N - rank([1, S]) = 50 - 3
    Y = Y + rng.normal(size=Y.shape)
    effect, stderr = reference_regression(S, Y)
    X = np.column_stack([np.ones(50), pair, single]).astype(float)
    beta = np.linalg.solve(X.T @ X, X.T @ Y)
    rss = ((Y - X @ beta) ** 2).sum(axis=0)
    np.testing.assert_allclose(effect[:, 2], beta[2], rtol=1e-10)
    np.testing.assert_allclose(stderr[:, 2], np.sqrt(rss / 47 * np.linalg.inv(X.T @ X)[2, 2]), rtol=1e-10)


def test_reference_difference_needs_two_trials_per_group():
    S = np.array([[1, 0], [0, 0], [0, 0], [0, 1], [0, 1]], dtype=float)
    Y = np.arange(10.0).reshape(5, 2) ** 2
    effect, stderr = reference_difference(S, Y)
    assert np.isnan(effect[:, 0]).all() and np.isnan(stderr[:, 0]).all()  # source 0 targeted once
    assert np.isfinite(effect[1, 1]) and np.isfinite(effect[0, 1])


def test_reference_pvalues_by_hand():
    effect = np.array([[1.0, -2.0], [0.0, np.nan]])
    stderr = np.array([[0.5, 1.0], [1.0, 1.0]])
    p = reference_pvalues(effect, stderr)
    assert p[0, 0] == pytest.approx(math.erfc(2.0 / math.sqrt(2)), rel=1e-12)
    assert p[0, 1] == pytest.approx(math.erfc(2.0 / math.sqrt(2)), rel=1e-12)
    assert p[1, 0] == 1.0
    assert np.isnan(p[1, 1])
    assert np.isnan(reference_pvalues(np.array([1.0]), np.array([0.0]))[0])


def test_reference_bh_by_hand():
    p = np.array([[0.5, 0.001, 0.02], [0.02, 0.7, 0.3], [np.nan, 0.9, 0.0001]])
    q = reference_bh(p, off_diagonal(3))
    # five finite off-diagonal p-values sorted: .001 .02 .02 .3 .9 -> m p / rank: .005 .05 .0333 .375 .9
    expected = np.array([[np.nan, 0.005, 1 / 30], [1 / 30, np.nan, 0.375], [np.nan, 0.9, np.nan]])
    np.testing.assert_allclose(q, expected, rtol=1e-12, equal_nan=True)
    from scipy.stats import false_discovery_control

    values = p[off_diagonal(3) & np.isfinite(p)]
    np.testing.assert_allclose(np.sort(q[np.isfinite(q)]), np.sort(false_discovery_control(values)), rtol=1e-12)


def test_reference_responses_by_hand():
    """4 Hz frames at 0, .25, ..., 2.75 (end 3.0); activity column = frame index."""
    activity = np.column_stack([np.arange(12.0), np.arange(12.0) ** 2])
    times = np.arange(12) / 4
    responses, kept = reference_responses(activity, times, 3.0, [0.6, 1.0, 2.0, 2.5], (0.0, 1.0), (-0.5, 0.0))
    np.testing.assert_array_equal(kept, [True, True, True, False])  # the last window ends at 3.5 > 3.0
    # onset .6: window frames .75 1 1.25 1.5 (3..6), baseline frames .25 .5 (1, 2)
    np.testing.assert_allclose(responses[0], [4.5 - 1.5, (9 + 16 + 25 + 36) / 4 - 2.5])
    # onset 1: window frames 4..7, baseline frames 2, 3; onset 2: window 8..11, baseline 6, 7
    np.testing.assert_allclose(responses[1:, 0], [5.5 - 2.5, 9.5 - 6.5])
    _, kept = reference_responses(activity, times, 3.0, [0.2, 2.0], (0.0, 1.0), (-0.5, 0.0))
    np.testing.assert_array_equal(kept, [False, True])  # the baseline starts before the first frame


# --------------------------------------------------------------------------- (b) estimate_trials = references

_DATA = {}


def small_experiment(timestamps):
    """A small planted experiment (8 neurons, 150 trials, ~7000 frames), cached per timing."""
    if timestamps not in _DATA:
        activity, timing, trials, _ = planted_experiment(n=8, n_trials=150, timestamps=timestamps, seed=11)
        _DATA[timestamps] = activity, timing, trials
    return _DATA[timestamps]


@pytest.mark.parametrize("method", ["regression", "difference"])
@pytest.mark.parametrize("baseline", [None, BASELINE], ids=["no-baseline", "baseline"])
@pytest.mark.parametrize("timestamps", [False, True], ids=["rate", "timestamps"])
def test_estimate_trials_matches_reference(timestamps, baseline, method):
    activity, timing, trials = small_experiment(timestamps)
    expected = reference_result(activity, timing, trials, WINDOW, baseline, method)
    assert expected["n_trials"] > 140
    results = []
    for chunk_steps in CHUNKS:
        result = estimate_trials(activity, trials, window=WINDOW, baseline=baseline, method=method,
                                 chunk_steps=chunk_steps, **timing_kwargs(timing))
        assert_matches_reference(result, expected)
        results.append(result)
    for result in results[1:]:
        assert_same_result(result, results[0])
    significant = results[0].significant(0.05)
    np.testing.assert_array_equal(significant, np.nan_to_num(expected["qvalue"], nan=np.inf) <= 0.05)
    assert significant.dtype == bool and not np.diag(significant).any()


def test_estimate_trials_default_method_is_regression():
    activity, timing, trials = small_experiment(False)
    default = estimate_trials(activity, trials, rate=timing, window=WINDOW)
    assert_same_result(default, estimate_trials(activity, trials, rate=timing, window=WINDOW, method="regression"), 0)


def test_estimate_trials_default_window():
    activity, timing, trials = small_experiment(False)
    assert_same_result(estimate_trials(activity, trials, rate=timing),
                       estimate_trials(activity, trials, rate=timing, window=(0.0, 1.0)), 0)


@pytest.mark.parametrize("method", ["regression", "difference"])
def test_estimate_trials_on_zarr_and_hdf5(tmp_path, method):
    zarr = pytest.importorskip("zarr")
    h5py = pytest.importorskip("h5py")
    activity, timing, trials = small_experiment(True)
    expected = reference_result(activity, timing, trials, WINDOW, BASELINE, method)
    z = zarr.create_array(store=zarr.storage.MemoryStore(), shape=activity.shape, chunks=(50, activity.shape[1]),
                          dtype=activity.dtype)
    z[:] = activity
    with h5py.File(tmp_path / "activity.h5", "w") as f:
        f.create_dataset("activity", data=activity, chunks=(100, activity.shape[1]))
    reference = estimate_trials(activity, trials, times=timing, window=WINDOW, baseline=BASELINE, method=method)
    for chunk_steps in (64, None):
        result = estimate_trials(z, trials, times=timing, window=WINDOW, baseline=BASELINE, method=method,
                                 chunk_steps=chunk_steps)
        assert_matches_reference(result, expected)
        assert_same_result(result, reference)
    with h5py.File(tmp_path / "activity.h5", "r") as f:
        result = estimate_trials(f["activity"], trials, times=timing, window=WINDOW, baseline=BASELINE,
                                 method=method, chunk_steps=500)
    assert_matches_reference(result, expected)
    assert_same_result(result, reference)


@pytest.mark.parametrize("timestamps", [False, True], ids=["rate", "timestamps"])
def test_estimate_trials_on_a_recording(timestamps):
    """A Recording carries trials and times (and a starting time with a rate)."""
    activity, timing, trials = small_experiment(timestamps)
    if timestamps:
        shifted = Trials(trials.onsets + 2.5, [trials.targets_of(k) for k in range(trials.n_trials)], n_sources=8)
        recording = Recording(activity, shifted, times=timing + 2.5)
        expected = reference_result(activity, timing + 2.5, shifted, WINDOW, BASELINE)
    else:
        recording = Recording(activity, Trials(trials.onsets + 2.5,
                                               [trials.targets_of(k) for k in range(trials.n_trials)]),
                              rate=timing, starting_time=2.5)
        expected = reference_result(activity, timing, recording.trials, WINDOW, BASELINE, starting_time=2.5)
    result = estimate_trials(recording, window=WINDOW, baseline=BASELINE, chunk_steps=100)
    assert_matches_reference(result, expected)


def test_estimate_trials_singular_design():
    """Sources 0 and 1 always targeted together (sometimes with 2), 3 never: NaN except the identifiable ones.

    The identifiable coefficients are those of the joint least squares on all sources'
    indicators (the pair's combined column stays in the model).
    """
    rng = np.random.default_rng(12)
    n, n_trials, rate = 5, 80, 10.0
    onsets = 1.0 + 1.5 * np.arange(n_trials) + rng.uniform(0, 0.3, n_trials)
    activity = rng.normal(size=(int((onsets[-1] + 2) * rate), n)).astype(np.float32)
    targets = []
    for _ in range(n_trials):
        chosen = []
        if rng.random() < 0.5:
            chosen += [0, 1]
        chosen += [i for i in (2, 4) if rng.random() < 0.4]
        targets.append(chosen)
    trials = Trials(onsets, targets, n_sources=n)
    expected = reference_result(activity, rate, trials, (0.0, 0.5), None, "regression")
    assert np.isnan(expected["effect"][:, [0, 1, 3]]).all() and np.isfinite(expected["effect"][:, [2, 4]]).all()
    result = estimate_trials(activity, trials, rate=rate, window=(0.0, 0.5), chunk_steps=64)
    np.testing.assert_array_equal(np.asarray(result.undefined_edges), np.isnan(expected["effect"]))
    assert_matches_reference(result, expected)


def test_estimate_trials_difference_sparse_groups():
    """Groups with fewer than two trials give NaN effects and standard errors (and are undefined edges)."""
    rng = np.random.default_rng(13)
    n_trials, rate = 30, 10.0
    onsets = 1.0 + 1.5 * np.arange(n_trials)
    activity = rng.normal(size=(int((onsets[-1] + 2) * rate), 4))
    targets = [[0] if k % 3 == 0 else [] for k in range(n_trials)]
    targets[1] = [1]  # source 1 targeted once, 3 never; 2 twice (co-targeted with 0 once)
    targets[2] = [2]
    targets[3] = [0, 2]
    trials = Trials(onsets, targets, n_sources=4)
    for method in ("regression", "difference"):
        expected = reference_result(activity, rate, trials, (0.0, 1.0), None, method)
        result = estimate_trials(activity, trials, rate=rate, window=(0.0, 1.0), method=method, chunk_steps=16)
        assert_matches_reference(result, expected)


# --------------------------------------------------------------------------- (c, d) planted networks


def planted_result(method, **kwargs):
    activity, rate, trials, W = planted_experiment(**kwargs)
    result = estimate_trials(activity, trials, rate=rate, window=WINDOW, baseline=BASELINE, method=method)
    return result, W


@pytest.mark.parametrize("method", ["regression", "difference"])
def test_planted_network_is_recovered(method):
    result, W = planted_result(method, n=20, n_trials=600, seed=1)
    mask = off_diagonal(20)
    effect = np.asarray(result.effect)
    assert np.isfinite(effect).all()
    assert np.corrcoef(effect[mask], W[mask])[0, 1] > 0.6
    significant = result.significant(0.05)
    assert (significant & (W != 0)).sum() > 0.6 * (W != 0).sum()  # most planted edges found
    assert np.all(np.diag(effect) > 0)  # each neuron responds to its own stimulation
    assert result.score(W) > 0.6


@pytest.mark.parametrize("method", ["regression", "difference"])
@pytest.mark.parametrize("ensembles", [None, 5], ids=["independent", "co-targeted"])
def test_null_network_has_no_discoveries(method, ensembles):
    result, _ = planted_result(method, n=20, n_trials=600, weights="null", ensembles=ensembles, seed=2)
    assert np.count_nonzero(result.significant(0.05)) <= 2
    assert np.isnan(np.diag(np.asarray(result.qvalue))).all()


def test_reference_difference_without_exclusion_is_biased_by_cotargeting():
    """On a null network with co-targeted ensembles, comparing 'targets i' with 'does not' picks up j's
    own stimulation (trials targeting i often target j too): many false discoveries. Leaving out the
    trials that target j removes them; so does the joint regression."""
    activity, rate, trials, _ = planted_experiment(n=20, n_trials=600, weights="null", ensembles=5, seed=2)
    times, end = frame_times(activity.shape[0], rate)
    responses, kept = reference_responses(activity, times, end, trials.onsets, WINDOW, BASELINE)
    S = trials.indicators(0, trials.n_trials)[kept]
    mask = off_diagonal(20)

    def discoveries(effect, stderr):
        return np.count_nonzero(reference_bh(reference_pvalues(effect, stderr), mask) <= 0.05)

    assert discoveries(*reference_difference(S, responses, exclude_responder=False)) > 50
    assert discoveries(*reference_difference(S, responses)) <= 2
    assert discoveries(*reference_regression(S, responses)) <= 2


# --------------------------------------------------------------------------- (e) dropped trials


def test_dropped_trials_off_the_recording():
    """4 Hz, 40 frames: times 0 .. 9.75, the recording ends at 10.0."""
    rng = np.random.default_rng(14)
    activity = rng.normal(size=(40, 3))
    onsets = [0.0, 0.1, 2.0, 3.1, 4.0, 5.2, 6.0, 7.3, 8.0, 9.0, 9.5]
    targets = [[0], [1], [2], [0], [1], [2], [0, 1], [], [2], [1], [0]]
    trials = Trials(onsets, targets, n_sources=3)
    # no baseline: only 9.5 runs off the end (9.0 + 1.0 = 10.0 is inside)
    result = estimate_trials(activity, trials, rate=4.0, window=(0.0, 1.0), method="difference")
    assert (result.n_trials, result.n_dropped) == (10, 1)
    np.testing.assert_array_equal(np.asarray(result.trials_per_source), [3, 4, 3])
    assert_matches_reference(result, reference_result(activity, 4.0, trials, (0.0, 1.0), None, "difference"))
    # a baseline of [-0.5, 0) drops 0.0 and 0.1 too (they start before the first frame)
    result = estimate_trials(activity, trials, rate=4.0, window=(0.0, 1.0), baseline=(-0.5, 0.0), method="difference")
    assert (result.n_trials, result.n_dropped) == (8, 3)
    assert_matches_reference(result, reference_result(activity, 4.0, trials, (0.0, 1.0), (-0.5, 0.0), "difference"))
    # a window starting before the onset: [-0.25, 0.5) drops 0.0 and 0.1, keeps 9.5 (ends at 10.0)
    result = estimate_trials(activity, trials, rate=4.0, window=(-0.25, 0.5), method="difference")
    assert (result.n_trials, result.n_dropped) == (9, 2)
    assert_matches_reference(result, reference_result(activity, 4.0, trials, (-0.25, 0.5), None, "difference"))


def test_dropped_trials_in_a_gap_of_timestamps():
    """Frames every 0.25 s on [0, 5) and [8, 12): a window inside the gap holds no frame."""
    rng = np.random.default_rng(15)
    times = np.concatenate([np.arange(0, 5, 0.25), np.arange(8, 12, 0.25)])
    activity = rng.normal(size=(times.size, 3))
    onsets = [0.5, 1.0, 2.0, 3.0, 5.2, 6.0, 8.5, 9.0, 10.0, 10.6, 4.5]
    targets = [[0], [1], [2], [], [0], [1], [2], [0], [1], [2], [0]]
    trials = Trials(onsets, targets, n_sources=3)
    # 5.2 -> [5.2, 6.2) and 6.0 -> [6, 7) hold no frame; 4.5 -> [4.5, 5.5) holds 4.5 and 4.75
    result = estimate_trials(activity, trials, times=times, window=(0.0, 1.0), method="difference")
    assert (result.n_trials, result.n_dropped) == (9, 2)
    assert_matches_reference(result, reference_result(activity, times, trials, (0.0, 1.0), None, "difference"))
    # a baseline [-1, -0.5) in the gap drops 8.5 as well (and 0.5, which starts before the first frame)
    result = estimate_trials(activity, trials, times=times, window=(0.0, 1.0), baseline=(-1.0, -0.5),
                             method="difference")
    assert (result.n_trials, result.n_dropped) == (7, 4)
    assert_matches_reference(result, reference_result(activity, times, trials, (0.0, 1.0), (-1.0, -0.5),
                                                      "difference"))


# --------------------------------------------------------------------------- (f) bad inputs


def tiny():
    activity = np.random.default_rng(16).normal(size=(200, 4))
    trials = Trials([1.0, 3.0, 5.0, 7.0], [[0], [1], [2, 3], []], n_sources=4)
    return activity, trials


def raises_naming(error, *parts):
    """pytest.raises(error) whose message contains every part (argument names, values)."""
    pattern = "".join(f"(?=.*{re.escape(part)})" for part in parts)
    return pytest.raises(error, match=re.compile(pattern, re.DOTALL))


@pytest.mark.parametrize(
    "kwargs, error, parts",
    [
        pytest.param({"window": (1.0,)}, ValueError, ["window", "1.0"], id="window-one-value"),
        pytest.param({"window": (0.0, 1.0, 2.0)}, ValueError, ["window", "2.0"], id="window-three-values"),
        pytest.param({"window": (1.0, 0.5)}, ValueError, ["window", "1.0", "0.5"], id="window-reversed"),
        pytest.param({"window": (0.5, 0.5)}, ValueError, ["window", "0.5"], id="window-empty"),
        pytest.param({"window": (0.0, np.nan)}, ValueError, ["window", "nan"], id="window-nan"),
        pytest.param({"window": "late"}, (TypeError, ValueError), ["window", "late"], id="window-str"),
        pytest.param({"baseline": (-0.5,)}, ValueError, ["baseline", "-0.5"], id="baseline-one-value"),
        pytest.param({"baseline": (-0.5, 0.0, 0.5)}, ValueError, ["baseline", "0.5"], id="baseline-three-values"),
        pytest.param({"baseline": (0.0, -0.5)}, ValueError, ["baseline", "-0.5"], id="baseline-reversed"),
        pytest.param({"method": "ols"}, ValueError, ["method", "ols"], id="method-unknown"),
        pytest.param({"rate": 0.0}, ValueError, ["rate", "0"], id="rate-zero"),
        pytest.param({"rate": -5.0}, ValueError, ["rate", "-5"], id="rate-negative"),
        pytest.param({"chunk_steps": 0}, ValueError, ["chunk_steps", "0"], id="chunk-steps-zero"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, parts):
    activity, trials = tiny()
    kwargs = {"rate": 10.0, **kwargs}
    with raises_naming(error, *parts):
        estimate_trials(activity, trials, **kwargs)


def test_timing_must_be_rate_or_times():
    activity, trials = tiny()
    with raises_naming(ValueError, "rate", "times"):
        estimate_trials(activity, trials)
    with raises_naming(ValueError, "rate", "times"):
        estimate_trials(activity, trials, rate=10.0, times=np.arange(200) / 10)


def test_times_must_increase_and_match_the_frames():
    activity, trials = tiny()
    times = np.arange(200) / 10
    repeated = times.copy()
    repeated[50] = repeated[49]
    with raises_naming(ValueError, "times", "increasing"):
        estimate_trials(activity, trials, times=repeated)
    decreasing = times.copy()
    decreasing[120] = 1.0
    with raises_naming(ValueError, "times", "increasing"):
        estimate_trials(activity, trials, times=decreasing)
    with raises_naming(ValueError, "times", "199", "200"):
        estimate_trials(activity, trials, times=times[:-1])
    bad = times.copy()
    bad[3] = np.nan
    with raises_naming(ValueError, "times", "nan"):
        estimate_trials(activity, trials, times=bad)


def test_trials_must_fit_the_activity():
    activity, _ = tiny()
    out_of_range = Trials([1.0, 3.0], [[0], [6]])
    with raises_naming(ValueError, "6", "4"):
        estimate_trials(activity, out_of_range, rate=10.0)
    too_many = Trials([1.0, 3.0], [[0], [1]], n_sources=5)
    with raises_naming(ValueError, "n_sources=5", "4"):
        estimate_trials(activity, too_many, rate=10.0)
    with raises_naming(TypeError, "trials"):
        estimate_trials(activity, [[0], [1]], rate=10.0)


def test_activity_must_be_two_dimensional():
    _, trials = tiny()
    with raises_naming(ValueError, "activity", "(200,)"):
        estimate_trials(np.zeros(200), trials, rate=10.0)
