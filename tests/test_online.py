"""The online estimators against estimate() / estimate_trials() on the whole recording, for every cut into pieces."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference_cross_moments

import streamcausal as sc
from streamcausal import online as online_module
from streamcausal.online import OnlineEstimator, OnlineTrialEstimator

TOL = 1e-10
MOMENT_KEYS = ("mean_in", "mean_out", "m2_in", "m2_out", "comoment")


# --------------------------------------------------------------------------- helpers


def recording(T, n=3, n_in=2, seed=0, *, nan_rows=()):
    rng = np.random.default_rng(seed)
    activity = 2.0 + rng.normal(size=(T, n))  # an offset, so that centring matters
    activity[1:, 0] += 0.8 * rng.integers(0, 2, size=T - 1)
    stimulation = rng.integers(0, 2, size=(T, n_in), dtype=np.uint8)
    activity[1:, 1] += stimulation[:-1, 0]
    for row in nan_rows:
        activity[row, row % n] = np.nan
    return activity, stimulation, rng.random(T) < 0.6


def compositions(T):
    """Every way of cutting ``range(T)`` into consecutive non-empty pieces (2**(T-1) of them)."""
    for r in range(T):
        for cuts in itertools.combinations(range(1, T), r):
            yield (0, *cuts, T)


def feed(estimator, bounds, activity, stimulation, mask, steps_kind):
    for s, e in zip(bounds[:-1], bounds[1:]):
        estimator.update(activity[s:e], None if stimulation is None else stimulation[s:e],
                         steps=piece_steps(mask, s, e, steps_kind))
    return estimator


def piece_steps(mask, s, e, kind):
    if kind == "all":
        return None
    if kind == "mask":
        return mask[s:e]
    return np.flatnonzero(mask[s:e])  # an index array into the piece


def whole_steps(mask, kind):
    return None if kind == "all" else (mask if kind == "mask" else np.flatnonzero(mask))


def assert_same(result, expected, tol=TOL):
    """Counts equal; moments and every estimate equal to ``tol`` (NaN in the same places)."""
    assert result.n_samples == expected.n_samples
    assert result.n_steps == expected.n_steps
    assert result.parameters["skipped_pairs"] == expected.parameters["skipped_pairs"]
    for key in MOMENT_KEYS:
        np.testing.assert_allclose(getattr(result.moments, key), getattr(expected.moments, key), rtol=0, atol=tol)
    for name in ("correlation", "effect", "stderr", "pvalue"):
        np.testing.assert_allclose(getattr(result, name), getattr(expected, name), rtol=0, atol=tol, equal_nan=True)


def snapshot(estimator):
    """Everything an update may change, for 'a refused piece leaves the state unchanged'."""
    parts = {"rows": estimator.rows, "samples": estimator.samples, "skipped": estimator.skipped_pairs}
    if estimator._moments is not None:
        parts.update(estimator._moments.to_arrays())
        parts.update(head=estimator._head.copy(), tail=estimator._tail.copy())
    parts["tail_steps"] = estimator._tail_steps.copy()
    return parts


def assert_unchanged(before, after):
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


# --------------------------------------------------------------------------- every cut


@pytest.mark.parametrize("lag", [1, 3])
@pytest.mark.parametrize("observational, steps_kind", [(False, "mask"), (False, "index"), (True, "all"), (True, "mask")])
def test_every_cut_of_a_short_recording_equals_estimate(lag, observational, steps_kind):
    T = 10
    activity, stimulation, mask = recording(T)
    stimulation = None if observational else stimulation
    expected = sc.estimate(activity, stimulation, steps=whole_steps(mask, steps_kind), lag=lag)
    assert expected.n_samples > 0
    for bounds in compositions(T):
        online = feed(OnlineEstimator(lag=lag, observational=observational), bounds, activity, stimulation,
                      mask, steps_kind)
        assert online.rows == T
        assert_same(online.result(), expected)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_cuts_steps_and_lags_equal_estimate(data):
    T = data.draw(st.integers(2, 40), label="T")
    lag = data.draw(st.integers(1, min(4, T - 1)), label="lag")
    observational = data.draw(st.booleans(), label="observational")
    steps_kind = data.draw(st.sampled_from(["all", "mask", "index"]), label="steps")
    cuts = data.draw(st.lists(st.integers(0, T), max_size=8), label="cuts")  # repeated cuts: empty pieces
    bounds = (0, *sorted(cuts), T)
    activity, stimulation, mask = recording(T, seed=data.draw(st.integers(0, 2**16), label="seed"))
    stimulation = None if observational else stimulation
    expected = sc.estimate(activity, stimulation, steps=whole_steps(mask, steps_kind), lag=lag)
    online = feed(OnlineEstimator(lag=lag, observational=observational), bounds, activity, stimulation,
                  mask, steps_kind)
    assert_same(online.result(), expected)


@pytest.mark.parametrize("lag", [1, 3])
def test_pieces_of_one_row_and_empty_pieces(lag):
    activity, stimulation, mask = recording(30, seed=3)
    expected = sc.estimate(activity, stimulation, steps=mask, lag=lag)
    online = OnlineEstimator(lag=lag)
    for t in range(30):
        online.update(activity[t : t + 1], stimulation[t : t + 1], steps=mask[t : t + 1])
        online.update(activity[t:t], stimulation[t:t], steps=mask[t:t])  # an empty piece changes nothing
        assert online.rows == t + 1
    assert_same(online.result(), expected)


def test_first_piece_empty_and_below_lag_rows():
    online = OnlineEstimator(lag=3)
    online.update(np.empty((0, 4)), np.empty((0, 2)))
    assert (online.rows, online.samples, online.n_outputs, online.n_inputs) == (0, 0, 4, 2)
    activity, stimulation, _ = recording(3, n=4)
    online.update(activity, stimulation)
    result = online.result()
    assert result.n_samples == 0 and result.n_steps == 3
    assert np.isnan(result.effect).all() and result.effect.shape == (4, 2)


def test_reference_moments_on_a_long_recording_in_random_pieces():
    """n = 150 (the BLAS product), float32 activity, pieces from 1 row to thousands: against estimate and the reference."""
    rng = np.random.default_rng(7)
    T, n = 6000, 150
    activity = (1.0 + rng.normal(size=(T, n))).astype(np.float32)
    stimulation = rng.integers(0, 2, size=(T, n), dtype=np.uint8)
    mask = np.zeros(T, dtype=bool)
    mask[::2] = True  # the tutorial's every-other-step design
    online = OnlineEstimator(lag=1)
    bounds = np.unique(np.concatenate([[0, T], rng.integers(0, T, size=12), [1, 2, 3]]))
    feed(online, bounds, activity, stimulation, mask, "mask")
    expected = sc.estimate(activity, stimulation, steps=mask, chunk_steps=777)
    assert_same(online.result(), expected)
    t = np.flatnonzero(mask[: T - 1])
    columns = slice(0, 150, 7)  # the brute-force reference on a subset of the columns
    reference = reference_cross_moments(stimulation[t][:, columns], activity[t + 1][:, columns].astype(float))
    moments = online.result().moments
    assert moments.count == reference["count"]
    np.testing.assert_allclose(moments.comoment[columns, columns], reference["comoment"], rtol=1e-10, atol=1e-9)
    for key in ("mean_in", "mean_out", "m2_in", "m2_out"):
        np.testing.assert_allclose(getattr(moments, key)[columns], reference[key], rtol=1e-10, atol=1e-9)


# --------------------------------------------------------------------------- non-finite and non-binary rows


@pytest.mark.parametrize("lag", [1, 3])
def test_skip_nonfinite_equals_estimate_for_every_cut(lag):
    T = 10
    activity, stimulation, mask = recording(T, nan_rows=(2, 6))
    stimulation = stimulation.astype(float)
    stimulation[4, 1] = np.inf
    expected = sc.estimate(activity, stimulation, steps=mask, lag=lag, skip_nonfinite=True)
    assert expected.parameters["skipped_pairs"] > 0
    for bounds in compositions(T):
        online = feed(OnlineEstimator(lag=lag, skip_nonfinite=True), bounds, activity, stimulation, mask, "mask")
        result = online.result()
        assert result.parameters["skipped_pairs"] == online.skipped_pairs
        assert_same(result, expected)


def test_nonfinite_outcome_refuses_the_piece_and_leaves_the_state():
    activity, stimulation, mask = recording(20)
    online = OnlineEstimator(lag=2)
    online.update(activity[:8], stimulation[:8])
    before = snapshot(online)
    bad = activity[8:14].copy()
    bad[3, 1] = np.nan  # time index 11: the outcome of step 9
    with pytest.raises(ValueError, match=r"activity must be finite, got nan at activity\[3, 1\] of this piece "
                                         r"\(time index 11\).*skip_nonfinite=True"):
        online.update(bad, stimulation[8:14])
    assert_unchanged(before, snapshot(online))
    with pytest.raises(ValueError, match="activity must be finite"):  # estimate agrees
        sc.estimate(np.concatenate([activity[:8], bad]), stimulation[:14], lag=2)
    online.update(activity[8:], stimulation[8:])  # the stream goes on with good rows
    assert_same(online.result(), sc.estimate(activity, stimulation, lag=2))


def test_nonfinite_rows_outside_every_pair_are_accepted_like_estimate():
    activity, stimulation, _ = recording(12)
    mask = np.zeros(12, dtype=bool)
    mask[[0, 4, 8]] = True
    activity[3] = np.nan  # neither an outcome (of step 2) nor, with stimulation, an input
    online = feed(OnlineEstimator(lag=1), (0, 5, 12), activity, stimulation, mask, "mask")
    assert_same(online.result(), sc.estimate(activity, stimulation, steps=mask))


def test_a_step_input_is_checked_when_it_arrives():
    activity, stimulation, _ = recording(12)
    stimulation = stimulation.astype(float)
    stimulation[9, 0] = np.nan  # step 9's outcome (row 12) has not arrived: refused now, with its own piece
    online = OnlineEstimator(lag=3)
    online.update(activity[:6], stimulation[:6])
    before = snapshot(online)
    with pytest.raises(ValueError, match=r"stimulation must be finite, got nan at stimulation\[3, 0\] of this piece "
                                         r"\(time index 9\)"):
        online.update(activity[6:10], stimulation[6:10])
    assert_unchanged(before, snapshot(online))


def test_non_binary_stimulation():
    activity, stimulation, mask = recording(16)
    stimulation = stimulation.astype(float)
    stimulation[5, 1] = 0.5
    online = OnlineEstimator()
    before = snapshot(online)
    with pytest.raises(ValueError, match=r"stimulation must hold only 0 and 1 \(binary=True\), got 0.5 at "
                                         r"stimulation\[5, 1\] of this piece \(time index 5\).*binary=False"):
        online.update(activity, stimulation)
    assert_unchanged(before, snapshot(online))
    # not a step: never checked, as in estimate
    mask[5] = False
    feed(online, (0, 5, 6, 16), activity, stimulation, mask, "mask")
    assert_same(online.result(), sc.estimate(activity, stimulation, steps=mask))
    real = feed(OnlineEstimator(binary=False), (0, 7, 16), activity, stimulation, mask, "all")
    assert_same(real.result(), sc.estimate(activity, stimulation, binary=False))


# --------------------------------------------------------------------------- bad pieces


def _bad_pieces():
    a, s, _ = recording(6, n=3, n_in=2)
    return [
        ("activity 1-D", dict(activity=a[0], stimulation=s[:1]), ValueError, "activity must be 2-D"),
        ("wrong n", dict(activity=a[:, :2], stimulation=s), ValueError, r"activity must have 3 columns"),
        ("wrong n_inputs", dict(activity=a, stimulation=s[:, :1]), ValueError, r"stimulation must have 2 columns"),
        ("rows differ", dict(activity=a, stimulation=s[:5]), ValueError, "stimulation must have as many rows"),
        ("no stimulation", dict(activity=a, stimulation=None), ValueError, "stimulation must be given"),
        ("complex", dict(activity=a + 0j, stimulation=s), TypeError, "activity must be real"),
        ("strings", dict(activity="abc", stimulation=s), TypeError, "activity must be a numeric array"),
        ("object", dict(activity=np.array([[1, None]], dtype=object), stimulation=s[:1]), TypeError,
         "activity must be a numeric array"),
        ("stimulation ragged", dict(activity=a[:2], stimulation=[[1, 0], [1]]), TypeError,
         "stimulation must be a numeric array"),
        ("mask length", dict(activity=a, stimulation=s, steps=np.ones(5, bool)), ValueError,
         r"steps mask must have one entry per row of the piece \(6\), got length 5"),
        ("index outside", dict(activity=a, stimulation=s, steps=[0, 6]), ValueError,
         r"steps must be indices in \[0, 6\).*got 6 at steps\[1\]"),
        ("index unsorted", dict(activity=a, stimulation=s, steps=[3, 1]), ValueError,
         "steps index array must be sorted and unique"),
        ("index float", dict(activity=a, stimulation=s, steps=[0.5]), TypeError, "steps must be a boolean mask or"),
        ("slice", dict(activity=a, stimulation=s, steps=slice(0, None, 2)), TypeError, "steps must be None, a boolean"),
        ("steps 2-D", dict(activity=a, stimulation=s, steps=np.ones((6, 1), bool)), TypeError, "steps must be None"),
    ]


@pytest.mark.parametrize("case", _bad_pieces(), ids=lambda case: case[0])
def test_bad_pieces_raise_and_leave_the_state_unchanged(case):
    _, arguments, error, match = case
    activity, stimulation, mask = recording(10, n=3, n_in=2)
    online = OnlineEstimator(lag=2)
    online.update(activity[:5], stimulation[:5], steps=mask[:5])
    before = snapshot(online)
    with pytest.raises(error, match=match):
        online.update(**arguments)
    assert_unchanged(before, snapshot(online))
    online.update(activity[5:], stimulation[5:], steps=mask[5:])
    assert_same(online.result(), sc.estimate(activity, stimulation, steps=mask, lag=2))


def test_observational_refuses_a_stimulation_and_bad_settings():
    activity, stimulation, _ = recording(5)
    with pytest.raises(ValueError, match="stimulation must be None for an observational estimator"):
        OnlineEstimator(observational=True).update(activity, stimulation)
    with pytest.raises(ValueError, match="lag must be >= 1, got 0"):
        OnlineEstimator(lag=0)
    with pytest.raises(TypeError, match="lag must be an integer"):
        OnlineEstimator(lag=1.5)
    with pytest.raises(TypeError, match="observational"):
        OnlineEstimator(observational="yes")
    with pytest.raises(ValueError, match="no rows yet"):
        OnlineEstimator().result()


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("lag", [1, 3])
def test_save_load_mid_stream_then_continue_is_bit_identical(tmp_path, lag):
    activity, stimulation, mask = recording(40, seed=5)
    bounds = (0, 1, 2, 9, 10, 23, 40)
    uninterrupted = feed(OnlineEstimator(lag=lag), bounds, activity, stimulation, mask, "mask")
    online = OnlineEstimator(lag=lag)
    group = zarr.open_group(str(tmp_path / "online.zarr"), mode="w")
    for s, e in zip(bounds[:-1], bounds[1:]):
        online.save(group)
        online = OnlineEstimator.load(str(tmp_path / "online.zarr"))  # a path works too
        online.update(activity[s:e], stimulation[s:e], steps=mask[s:e])
    assert_unchanged(snapshot(uninterrupted), snapshot(online))
    assert online.result().seconds >= 0
    assert_same(online.result(), sc.estimate(activity, stimulation, steps=mask, lag=lag))


def _saved_twice(tmp_path):
    activity, stimulation, mask = recording(30, seed=6)
    group = zarr.open_group(str(tmp_path / "online.zarr"), mode="w")
    online = OnlineEstimator(lag=2)
    online.update(activity[:11], stimulation[:11], steps=mask[:11])
    online.save(group)
    first = snapshot(online)
    online.update(activity[11:20], stimulation[11:20], steps=mask[11:20])
    online.save(group)
    return group, first, snapshot(online)


def _newest_slot(group):
    return max(online_module._records(group, "online_estimator"), key=lambda item: item[1]["generation"])[0]


@pytest.mark.parametrize("tear", ["record deleted", "record checksum", "array corrupted", "array deleted"])
def test_a_torn_save_falls_back_to_the_previous_slot(tmp_path, tear):
    group, first, second = _saved_twice(tmp_path)
    assert_unchanged(second, snapshot(OnlineEstimator.load(group)))
    slot = group[_newest_slot(group)]
    if tear == "record deleted":
        slot.attrs.clear()
    elif tear == "record checksum":
        record = dict(slot.attrs)["online_estimator"]
        slot.attrs["online_estimator"] = {**record, "checksum": "0" * 64}
    elif tear == "array corrupted":
        slot["comoment"][0, 0] = 12345.0
    else:
        del slot["tail"]
    loaded = OnlineEstimator.load(group)
    assert_unchanged(first, snapshot(loaded))
    # the next save goes into the torn slot, never over the only valid one
    loaded.save(group)
    assert_unchanged(first, snapshot(OnlineEstimator.load(group)))


def test_a_save_killed_while_writing_arrays_never_wins(tmp_path, monkeypatch):
    group, _, second = _saved_twice(tmp_path)
    online = OnlineEstimator.load(group)
    online.update(*recording(30, seed=6)[:2])
    calls = {"n": 0}
    original = zarr.Array.__setitem__

    def dying(self, key, value):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the process dies here, half-way through the arrays
        original(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", dying)
    with pytest.raises(KeyboardInterrupt):
        online.save(group)
    monkeypatch.undo()
    assert_unchanged(second, snapshot(OnlineEstimator.load(group)))


def test_load_and_save_refuse_other_groups(tmp_path):
    empty = zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(ValueError, match="group must hold a saved online_estimator"):
        OnlineEstimator.load(empty)
    with pytest.raises(ValueError, match="group must be a Zarr group, found none"):
        OnlineEstimator.load(str(tmp_path / "missing.zarr"))
    with pytest.raises(TypeError, match="group must be a zarr.Group or a path"):
        OnlineEstimator().save(42)
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.attrs["streamcausal"] = {"kind": "run"}
    with pytest.raises(ValueError, match="group already holds something else"):
        OnlineEstimator().save(other)
    fresh = zarr.open_group(str(tmp_path / "fresh.zarr"), mode="w")
    OnlineEstimator(lag=4, observational=True).save(fresh)  # before any row: settings only
    loaded = OnlineEstimator.load(fresh)
    assert (loaded.lag, loaded.observational, loaded.rows, loaded.n_outputs) == (4, True, 0, None)


# --------------------------------------------------------------------------- merge


@pytest.mark.parametrize("lag", [1, 3])
@pytest.mark.parametrize("observational", [False, True])
def test_merge_of_two_halves_equals_whole_at_every_cut(lag, observational):
    T = 12
    activity, stimulation, mask = recording(T, seed=8)
    stimulation = None if observational else stimulation
    expected = sc.estimate(activity, stimulation, steps=mask, lag=lag)
    for a in range(T + 1):
        first = feed(OnlineEstimator(lag=lag, observational=observational), (0, a), activity, stimulation,
                     mask, "mask")
        second = OnlineEstimator(lag=lag, observational=observational)
        if a < T:
            second.update(activity[a:] - 0.0, None if stimulation is None else stimulation[a:], steps=mask[a:])
        merged = first.merge(second)
        assert merged.rows == T
        assert_same(merged.result(), expected)
        assert first.rows == a  # neither side changes


def test_merge_is_associative_and_merged_estimators_go_on(tmp_path):
    activity, stimulation, mask = recording(30, seed=9)
    parts = [(0, 2), (2, 3), (3, 17), (17, 25)]
    pieces = [feed(OnlineEstimator(lag=3), bounds, activity, stimulation, mask, "mask") for bounds in parts]
    left = pieces[0].merge(pieces[1]).merge(pieces[2]).merge(pieces[3])
    right = pieces[0].merge(pieces[1].merge(pieces[2].merge(pieces[3])))
    for merged in (left, right):
        merged.update(activity[25:], stimulation[25:], steps=mask[25:])  # the merged estimator carries on
        assert_same(merged.result(), sc.estimate(activity, stimulation, steps=mask, lag=3))


def test_merge_across_a_nonfinite_outcome():
    activity, stimulation, mask = recording(12, seed=10)
    mask[:] = True
    activity[6, 0] = np.nan  # the outcome of step 5 across the cut at 6
    first = feed(OnlineEstimator(), (0, 6), activity, stimulation, mask, "all")
    second = feed(OnlineEstimator(), (0, 6), activity[6:], stimulation[6:], mask[6:], "all")
    with pytest.raises(ValueError, match=r"activity must be finite, got nan at activity\[6, 0\] \(time index 6, "
                                         r"row 0 of the later estimator\)"):
        first.merge(second)
    first = feed(OnlineEstimator(skip_nonfinite=True), (0, 6), activity, stimulation, mask, "all")
    second = feed(OnlineEstimator(skip_nonfinite=True), (0, 6), activity[6:], stimulation[6:], mask[6:], "all")
    assert_same(first.merge(second).result(), sc.estimate(activity, stimulation, skip_nonfinite=True))


def test_merge_refuses_other_settings_and_widths():
    activity, stimulation, _ = recording(6)
    with pytest.raises(TypeError, match="later must be an OnlineEstimator"):
        OnlineEstimator().merge("x")
    with pytest.raises(ValueError, match=r"later must have the same settings, got \['lag'\]"):
        OnlineEstimator(lag=1).merge(OnlineEstimator(lag=2))
    first, second = OnlineEstimator(), OnlineEstimator()
    first.update(activity, stimulation)
    second.update(activity[:, :2], stimulation)
    with pytest.raises(ValueError, match="later must have the same widths"):
        first.merge(second)
    assert OnlineEstimator().merge(OnlineEstimator()).rows == 0
    assert_same(OnlineEstimator().merge(first).result(), first.result())
    assert_same(first.merge(OnlineEstimator()).result(), first.result())


# --------------------------------------------------------------------------- the trial estimator

TRIAL_WINDOW = (0.0, 0.35)


def trial_recording(seed, T=60, n=3, K=14, timestamps=False):
    rng = np.random.default_rng(seed)
    activity = 1.0 + rng.normal(size=(T, n))
    onsets = np.sort(rng.uniform(-0.5, T / 10 + 0.3, size=K))  # some run off either end
    targets = [list(rng.choice(n, size=rng.integers(0, 3), replace=False)) for _ in range(K)]
    for onset, chosen in zip(onsets, targets):
        activity[int(np.clip(onset * 10, 0, T - 1)), chosen] += 1.0
    times = np.cumsum(rng.uniform(0.05, 0.15, size=T)) if timestamps else None
    return activity, onsets, targets, times


def trials_of(onsets, targets, chosen):
    return sc.Trials(onsets[chosen], [targets[k] for k in np.flatnonzero(chosen)], n_sources=3)


def assert_same_trials(result, expected, tol=TOL):
    assert result.n_trials == expected.n_trials
    assert result.dropped == expected.dropped
    for name in ("effect", "stderr", "pvalue", "qvalue"):
        np.testing.assert_allclose(getattr(result, name), getattr(expected, name), rtol=0, atol=tol, equal_nan=True)
    np.testing.assert_array_equal(result.trials_per_source, expected.trials_per_source)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_trials_in_random_pieces_equal_estimate_trials_at_every_piece(data):
    """Frames cut anywhere (windows split across pieces, one-frame pieces), trials announced up front or at their onset."""
    timestamps = data.draw(st.booleans(), label="timestamps")
    baseline = data.draw(st.sampled_from([None, (-0.3, 0.0)]), label="baseline")
    method = data.draw(st.sampled_from(["regression", "difference"]), label="method")
    announce = data.draw(st.sampled_from(["first", "onset"]), label="announce")
    activity, onsets, targets, times = trial_recording(data.draw(st.integers(0, 2**16), label="seed"),
                                                       timestamps=timestamps)
    T = activity.shape[0]
    bounds = (0, *sorted(data.draw(st.lists(st.integers(0, T), max_size=14), label="cuts")), T)
    rate = None if timestamps else 10.0
    clock = times if timestamps else np.arange(T) / 10.0
    settings_ = dict(window=TRIAL_WINDOW, baseline=baseline, method=method)
    online = OnlineTrialEstimator(rate=rate, **settings_)
    told = np.zeros(onsets.size, dtype=bool)
    for s, e in zip(bounds[:-1], bounds[1:]):
        now = ~told if announce == "first" else ~told & (onsets <= (clock[e - 1] if e else -np.inf))
        told |= now
        online.update(activity[s:e], times=None if rate else times[s:e], trials=trials_of(onsets, targets, now))
        if e >= 2:  # at any time, the result is estimate_trials on the frames and trials so far
            expected = sc.estimate_trials(activity[:e], trials_of(onsets, targets, told), rate=rate,
                                          times=None if rate else times[:e], **settings_)
            assert_same_trials(online.result(), expected)
    online.update(activity[:0], times=None if rate else times[:0], trials=trials_of(onsets, targets, ~told))
    expected = sc.estimate_trials(activity, sc.Trials(onsets, targets, n_sources=3), rate=rate, times=times,
                                  **settings_)
    assert_same_trials(online.result(), expected)
    assert online.rows == T and online.n_trials <= expected.n_trials


@pytest.mark.parametrize("timestamps", [False, True])
def test_trials_in_one_frame_pieces_hold_only_open_windows(timestamps):
    activity, onsets, targets, times = trial_recording(11, T=200, K=40, timestamps=timestamps)
    rate = None if timestamps else 10.0
    online = OnlineTrialEstimator(rate=rate, window=TRIAL_WINDOW, baseline=(-0.3, 0.0))
    online.update(activity[:0], times=None if rate else times[:0], trials=sc.Trials(onsets, targets, n_sources=3))
    most_held = 0
    for t in range(200):
        online.update(activity[t : t + 1], times=None if rate else times[t : t + 1])
        most_held = max(most_held, online._held.rows.shape[0])
    expected = sc.estimate_trials(activity, sc.Trials(onsets, targets, n_sources=3), rate=rate, times=times,
                                  window=TRIAL_WINDOW, baseline=(-0.3, 0.0))
    assert_same_trials(online.result(), expected)
    assert most_held < 40  # a window and a baseline (0.65 s, under 14 frames), never the recording


@pytest.mark.parametrize("timestamps", [False, True])
@pytest.mark.parametrize("baseline", [None, (-0.3, 0.0)])
def test_trial_merge_of_two_parts_equals_whole_at_every_cut(timestamps, baseline):
    activity, onsets, targets, times = trial_recording(4, timestamps=timestamps)
    T = activity.shape[0]
    rate = None if timestamps else 10.0
    clock = times if timestamps else np.arange(T) / 10.0
    settings_ = dict(window=TRIAL_WINDOW, baseline=baseline)
    expected = sc.estimate_trials(activity, sc.Trials(onsets, targets, n_sources=3), rate=rate, times=times,
                                  **settings_)
    for a in range(1, T):
        # each trial is announced to the estimator that gets its first frame
        mine = onsets + min(0.0, (baseline or (0.0,))[0]) < clock[a]
        first = OnlineTrialEstimator(rate=rate, **settings_)
        first.update(activity[:a], times=None if rate else times[:a], trials=trials_of(onsets, targets, mine))
        second = OnlineTrialEstimator(rate=rate, first_frame=a if rate else 0, **settings_)
        second.update(activity[a:], times=None if rate else times[a:], trials=trials_of(onsets, targets, ~mine))
        assert_same_trials(first.merge(second).result(), expected)


def test_trial_save_load_mid_stream_and_torn_save(tmp_path):
    activity, onsets, targets, times = trial_recording(5, timestamps=True)
    settings_ = dict(window=TRIAL_WINDOW, baseline=(-0.3, 0.0), method="difference")
    group = zarr.open_group(str(tmp_path / "trials.zarr"), mode="w")
    online = OnlineTrialEstimator(**settings_)
    online.update(activity[:17], times=times[:17], trials=sc.Trials(onsets, targets, n_sources=3))
    online.save(group)
    online.update(activity[17:33], times=times[17:33])
    online.save(group)
    group[_newest_slot_of(group, "online_trial_estimator")].attrs.clear()  # the newest save torn
    online = OnlineTrialEstimator.load(group)
    assert online.rows == 17
    online.update(activity[17:], times=times[17:])
    expected = sc.estimate_trials(activity, sc.Trials(onsets, targets, n_sources=3), times=times, **settings_)
    assert_same_trials(online.result(), expected)
    uninterrupted = OnlineTrialEstimator(**settings_)
    uninterrupted.update(activity[:17], times=times[:17], trials=sc.Trials(onsets, targets, n_sources=3))
    uninterrupted.update(activity[17:], times=times[17:])
    assert_same_trials(online.result(), uninterrupted.result(), tol=0)  # the same arithmetic on the same frames


def _newest_slot_of(group, kind):
    return max(online_module._records(group, kind), key=lambda item: item[1]["generation"])[0]


def test_trial_bad_input_refused_and_state_unchanged():
    activity, onsets, targets, times = trial_recording(6)
    online = OnlineTrialEstimator(rate=10.0, window=TRIAL_WINDOW)
    online.update(activity[:20], trials=sc.Trials(onsets, targets, n_sources=3))
    before = (online.rows, online.n_trials, online.pending_trials, online._held.rows.copy())
    bad = activity[20:30].copy()
    covered = int(np.ceil(onsets[(onsets > 2.0) & (onsets < 2.6)][0] * 10)) - 20
    bad[covered, 2] = np.nan
    cases = [
        (dict(activity=bad), ValueError, "activity must be finite in the trials' windows, got nan at "
                                         rf"activity\[{covered}, 2\] of this piece"),
        (dict(activity=activity[20:30, :2]), ValueError, "activity must have 3 columns"),
        (dict(activity=activity[20:30], times=np.arange(10.0)), ValueError, "times must be None"),
        (dict(activity=activity[20:30], trials=[1.0]), TypeError, "trials must be a Trials"),
        (dict(activity=activity[20:30], trials=sc.Trials([2.5], [[5]])), ValueError, "trials target source 5"),
        (dict(activity=activity[20:21], trials=sc.Trials([0.5], [[0]])), ValueError,
         r"trial at onset 0.5 s needs frames from 0.5 s, which are no longer held.*history="),
    ]
    for arguments, error, match in cases:
        with pytest.raises(error, match=match):
            online.update(**arguments)
        after = (online.rows, online.n_trials, online.pending_trials, online._held.rows)
        assert before[:3] == after[:3]
        np.testing.assert_array_equal(before[3], after[3])
    timed = OnlineTrialEstimator(window=TRIAL_WINDOW)
    with pytest.raises(ValueError, match="times must be given with every piece"):
        timed.update(activity[:3])
    timed.update(activity[:3], times=np.array([0.0, 0.1, 0.2]))
    with pytest.raises(ValueError, match=r"times must be strictly increasing, got times\[0\]=0.2 after 0.2"):
        timed.update(activity[3:5], times=np.array([0.2, 0.3]))
    with pytest.raises(ValueError, match="method must be one of"):
        OnlineTrialEstimator(rate=10.0, method="mean")
    with pytest.raises(ValueError, match="window must have start < stop"):
        OnlineTrialEstimator(rate=10.0, window=(1, 0))
    with pytest.raises(ValueError, match="no frames yet"):
        OnlineTrialEstimator(rate=10.0).result()
    with pytest.raises(ValueError, match="later must start at frame 20"):
        online.merge(OnlineTrialEstimator(rate=10.0, window=TRIAL_WINDOW, first_frame=3))


def test_trials_announced_late_within_history():
    activity, onsets, targets, _ = trial_recording(7)
    online = OnlineTrialEstimator(rate=10.0, window=TRIAL_WINDOW, history=2.0)
    online.update(activity)  # every frame first; the last 2 s of them are held
    late = (onsets >= 5.9 - 2.0) & (onsets < 6.0)
    with pytest.raises(ValueError, match="no longer held"):
        online.update(activity[:0], trials=sc.Trials(onsets, targets, n_sources=3))
    online.update(activity[:0], trials=trials_of(onsets, targets, late))
    expected = sc.estimate_trials(activity, trials_of(onsets, targets, late), rate=10.0, window=TRIAL_WINDOW)
    assert expected.n_trials > 0
    assert_same_trials(online.result(), expected)
