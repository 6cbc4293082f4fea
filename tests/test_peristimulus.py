"""Peri-stimulus traces: one streaming pass, the same numbers as a plain NumPy reference, any chunking."""

import math
import warnings

import numpy as np
import pytest
from experiments import planted_experiment

from streamcausal.experiment import Recording, Trials
from streamcausal.io.peristimulus import peristimulus


def reference(activity, times, trials, pairs, span):
    """Plain NumPy: gather every trial's rows around its onset frame, then nanmean / nanstd per pair."""
    activity = np.asarray(activity, dtype=np.float64)
    n_frames = activity.shape[0]
    period = (times[-1] - times[0]) / (n_frames - 1)
    first = math.ceil(span[0] / period - 1e-9)
    last = math.floor(span[1] / period + 1e-9)
    rows, chosen = [], []
    for k in range(trials.n_trials):
        onset = trials.onsets[k]
        f0 = int(np.searchsorted(times, onset, side="left"))
        if onset < times[0] or f0 + first < 0 or f0 + last >= n_frames:
            continue
        rows.append(activity[f0 + first : f0 + last + 1])
        chosen.append(set(trials.targets_of(k).tolist()))
    rows = np.stack(rows)  # (trials, offsets, n)
    out = {name: [] for name in ("mean", "stderr", "count", "control_mean", "control_stderr", "control_count")}
    for j, i in pairs:
        hit = np.array([i in c and (j == i or j not in c) for c in chosen])
        neither = np.array([i not in c and j not in c for c in chosen])
        for prefix, mask in (("", hit), ("control_", neither)):
            values = rows[mask, :, j]
            values = np.where(np.isfinite(values), values, np.nan)
            count = np.isfinite(values).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(values, axis=0) if values.size else np.full(rows.shape[1], np.nan)
                sd = np.nanstd(values, axis=0, ddof=1) if values.size else np.full(rows.shape[1], np.nan)
            out[prefix + "mean"].append(np.where(count > 0, mean, np.nan))
            out[prefix + "stderr"].append(np.where(count >= 2, sd / np.sqrt(np.maximum(count, 1)), np.nan))
            out[prefix + "count"].append(count)
    offsets = np.arange(first, last + 1) * period
    return offsets, {name: np.array(values) for name, values in out.items()}, len(chosen)


def assert_matches(traces, expected_offsets, expected, used):
    np.testing.assert_allclose(traces.offsets, expected_offsets, rtol=0, atol=1e-12)
    for name, values in expected.items():
        got = getattr(traces, name)
        assert got.shape == values.shape, name
        if name.endswith("count"):
            np.testing.assert_array_equal(got, values, err_msg=name)
        else:
            np.testing.assert_allclose(got, values, rtol=1e-9, atol=1e-12, err_msg=name)
    assert traces.n_trials == used


PAIRS = [(3, 3), (5, 3), (0, 7), (7, 7), (2, 11), (11, 2)]


@pytest.fixture(scope="module")
def experiment():
    return planted_experiment(n=12, n_trials=120, rate=20.0, seed=3)


def test_matches_numpy_reference_with_a_rate(experiment):
    activity, rate, trials, _ = experiment
    times = np.arange(activity.shape[0]) / rate
    traces = peristimulus(activity, trials, PAIRS, rate=rate, span=(-0.5, 1.5))
    assert_matches(traces, *reference(activity, times, trials, PAIRS, (-0.5, 1.5)))
    assert traces.offsets[0] == pytest.approx(-0.5) and traces.offsets[-1] == pytest.approx(1.5)
    assert traces.mean.shape == (len(PAIRS), traces.offsets.size)
    # The stimulated neuron's own trace rises after its onsets and not before.
    self_trace = traces.mean[0] - traces.control_mean[0]
    before, after = self_trace[traces.offsets < 0], self_trace[(traces.offsets > 0) & (traces.offsets < 0.5)]
    assert after.mean() > 0.2 > 0.05 > abs(before.mean())


@pytest.mark.parametrize("chunk_steps", [1, 7, 64, 10_000])
def test_does_not_depend_on_chunking(experiment, chunk_steps):
    activity, rate, trials, _ = experiment
    whole = peristimulus(activity, trials, PAIRS, rate=rate, span=(-0.5, 1.5), chunk_steps=10**7)
    chunked = peristimulus(activity, trials, PAIRS, rate=rate, span=(-0.5, 1.5), chunk_steps=chunk_steps)
    for name in ("mean", "stderr", "count", "control_mean", "control_stderr", "control_count"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)


def test_matches_numpy_reference_with_timestamps():
    activity, times, trials, _ = planted_experiment(n=8, n_trials=60, rate=25.0, timestamps=True, seed=5)
    pairs = [(1, 1), (4, 1), (6, 0)]
    traces = peristimulus(activity, trials, pairs, times=times, span=(-0.3, 0.8), chunk_steps=33)
    assert_matches(traces, *reference(activity, times, trials, pairs, (-0.3, 0.8)))


def test_recording_with_a_starting_time_and_edge_trials():
    rng = np.random.default_rng(1)
    activity = rng.normal(size=(400, 4))
    start = 10.0
    onsets = [10.05, 11.0, 15.3, 20.0, 34.8, 30.0]  # the recording is 10..35 s: 10.05 and 34.8 do not fit
    targets = [[0], [1], [0, 2], [], [3], [1]]
    trials = Trials(onsets, targets)
    recording = Recording(activity, trials, rate=16.0, starting_time=start)
    pairs = [(0, 0), (2, 0), (1, 3)]
    traces = peristimulus(recording, None, pairs, span=(-0.25, 0.5), chunk_steps=50)
    times = start + np.arange(400) / 16.0
    expected = reference(activity, times, trials, pairs, (-0.25, 0.5))
    assert_matches(traces, *expected)
    assert (traces.n_trials, traces.n_dropped) == (4, 2)
    # (2, 0): trial 15.3 targets 0 and 2, so it is neither a "0 and not 2" trial nor a control.
    assert traces.count[1].max() == 0 and np.isnan(traces.mean[1]).all()


def test_nonfinite_values_are_left_out():
    activity, rate, trials, _ = planted_experiment(n=6, n_trials=40, rate=10.0, seed=2)
    activity = activity.astype(np.float64)
    activity[::17, 2] = np.nan
    activity[5::23, 2] = np.inf
    times = np.arange(activity.shape[0]) / rate
    pairs = [(2, 2), (2, 4), (1, 4)]
    traces = peristimulus(activity, trials, pairs, rate=rate, span=(-1.0, 2.0), chunk_steps=13)
    offsets, expected, used = reference(activity, times, trials, pairs, (-1.0, 2.0))
    assert_matches(traces, offsets, expected, used)
    assert traces.count[0].min() < traces.count[0].max()


class CountingArray:
    """A (T, n) duck array that records every row window read from it."""

    def __init__(self, array):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.reads = []

    def __getitem__(self, key):
        self.reads.append((key.start, key.stop))
        return self.array[key]


def test_one_pass_in_windows_of_chunk_steps(experiment):
    activity, rate, trials, _ = experiment
    counting = CountingArray(activity)
    traces = peristimulus(counting, trials, PAIRS, rate=rate, span=(-0.5, 1.5), chunk_steps=100)
    starts = [start for start, _ in counting.reads]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # each window once, in order
    assert all(stop - start <= 100 for start, stop in counting.reads)
    np.testing.assert_array_equal(traces.mean, peristimulus(activity, trials, PAIRS, rate=rate, span=(-0.5, 1.5)).mean)


def test_progress_events(experiment):
    activity, rate, trials, _ = experiment
    events = []
    peristimulus(activity, trials, [(0, 0)], rate=rate, span=(0, 1), chunk_steps=500, progress=events.append)
    assert events[-1].steps_done == events[-1].steps_total == activity.shape[0]
    assert [e.steps_done for e in events] == sorted(e.steps_done for e in events)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(pairs=[(0, 1, 2)]), ValueError, "pairs"),
        (dict(pairs=np.zeros((0, 2), dtype=int)), ValueError, "pairs"),
        (dict(pairs=[(0, 4)]), ValueError, r"pairs\[0, 1\]"),
        (dict(pairs=[(-1, 0)]), ValueError, r"pairs\[0, 0\]"),
        (dict(pairs=[(0.5, 0)]), TypeError, "pairs"),
        (dict(pairs="ab"), TypeError, "pairs"),
        (dict(span=(1.0, 0.0)), ValueError, "span"),
        (dict(span=(0.01, 0.02)), ValueError, "span"),
        (dict(span=1.0), ValueError, "span"),
        (dict(trials=None), TypeError, "trials"),
        (dict(rate=None), ValueError, "rate"),
        (dict(chunk_steps=0), ValueError, "chunk_steps"),
        (dict(progress="yes"), TypeError, "progress"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, error, words):
    arguments = dict(trials=Trials([1.0, 2.0], [[0], [1]]), pairs=[(0, 1)], rate=10.0)
    arguments.update(kwargs)
    trials, pairs = arguments.pop("trials"), arguments.pop("pairs")
    with pytest.raises(error, match=words):
        peristimulus(np.zeros((50, 4)), trials, pairs, **arguments)


def test_recording_refuses_a_second_timing():
    recording = Recording(np.zeros((50, 2)), Trials([1.0], [[0]]), rate=10.0)
    with pytest.raises(ValueError, match="rate and times"):
        peristimulus(recording, None, [(0, 0)], rate=10.0)
