"""estimate_trials on NWB files written with pynwb, against the slow references, for several chunkings.

dF/F series with timestamps or a rate, Units spike trains binned at a bin size, and
TimeIntervals trials tables whose ragged targets column is a DynamicTableRegion (with
sham trials) or plain integers.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pynwb")

from experiments import planted_experiment  # noqa: E402
from nwb_files import write_ophys, write_units  # noqa: E402
from test_trials import BASELINE, WINDOW, assert_matches_reference, assert_same_result, reference_result  # noqa: E402

import streamcausal as sc  # noqa: E402


def target_lists(trials):
    return [trials.targets_of(k).tolist() for k in range(trials.n_trials)]


@pytest.mark.parametrize("timestamps", [False, True], ids=["rate", "timestamps"])
@pytest.mark.parametrize("plain_targets", [False, True], ids=["region", "plain"])
@pytest.mark.parametrize("method", ["regression", "difference"])
def test_dff_series_matches_reference(tmp_path, timestamps, plain_targets, method):
    activity, timing, trials, _ = planted_experiment(n=8, n_trials=150, sham=0.2, timestamps=timestamps, seed=3)
    assert trials.n_sham > 0
    path = write_ophys(tmp_path / "ophys.nwb", activity, onsets=trials.onsets, targets=target_lists(trials),
                       trials_name="photostim", plain_targets=plain_targets, chunk_rows=50,
                       **({"times": timing} if timestamps else {"rate": timing}))
    expected = reference_result(activity.astype(np.float64), timing, trials, WINDOW, BASELINE, method=method)
    results = []
    with sc.read_nwb(path, activity="dff", trials="photostim") as recording:
        assert recording.trials.n_sham == trials.n_sham
        for chunk_steps in (13, 100, None):
            results.append(sc.estimate_trials(recording, window=WINDOW, baseline=BASELINE, method=method,
                                              chunk_steps=chunk_steps))
    assert_matches_reference(results[0], expected)
    for other in results[1:]:
        assert_same_result(other, results[0])


def test_units_binned_match_reference(tmp_path):
    rng = np.random.default_rng(5)
    n, duration, bin_size = 6, 240.0, 0.05
    onsets = np.sort(rng.uniform(2.0, duration - 3.0, size=120))
    targets = [sorted(rng.choice(n, size=rng.integers(0, 3), replace=False).tolist()) for _ in onsets]
    spikes = []
    for unit in range(n):
        background = np.sort(rng.uniform(0, duration, size=int(5 * duration)))
        driven = [onset + rng.uniform(0, 0.3, size=4) for onset, chosen in zip(onsets, targets) if unit in chosen]
        spikes.append(np.sort(np.concatenate([background] + driven)))
    path = write_units(tmp_path / "units.nwb", spikes, onsets=onsets, targets=targets)
    with sc.read_nwb(path, activity="units", trials="trials", bin_size=bin_size) as recording:
        dense = np.asarray(recording.activity[0 : recording.activity.shape[0]])
        expected = reference_result(dense, recording.rate, recording.trials, (0.0, 0.5), (-0.5, 0.0),
                                    starting_time=recording.starting_time)
        result = sc.estimate_trials(recording, window=(0.0, 0.5), baseline=(-0.5, 0.0), chunk_steps=97)
    assert_matches_reference(result, expected)
    assert np.all(np.diag(result.effect)[result.trials_per_source > 5] > 3)  # 4 driven spikes in 0.5 s: +8 Hz
