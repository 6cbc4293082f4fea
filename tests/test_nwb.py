"""bin_spikes against a dense np.histogram reference, and read_nwb round trips through small NWB files.

The NWB files are written by ``nwb_files`` with pynwb's own API, the series chunked
along time so that the estimators' chunk-aligned reads are exercised.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from streamcausal.experiment import Recording, Trials
from streamcausal.io.nwb import read_nwb
from streamcausal.io.recording import _Source, estimate
from streamcausal.io.spikes import BinnedSpikes, bin_spikes

try:  # bin_spikes needs only NumPy; the NWB round trips need the [nwb] extra
    import h5py
    import nwb_files
    from pynwb import NWBHDF5IO, TimeSeries
except (ImportError, pytest.skip.Exception):
    nwb_files = None

needs_nwb = pytest.mark.skipif(nwb_files is None, reason="needs pynwb: pip install 'streamcausal[nwb]'")

# --------------------------------------------------------------------------- helpers


def reference_binned(units, bin_size, t_start=0.0, t_stop=None):
    """Dense (T, n) rates by np.histogram per unit, bins [t_start + k b, t_start + (k+1) b) cut at t_stop."""
    if t_stop is None:
        last = max(max((t for t in u if t >= t_start), default=-np.inf) for u in units)
        n_bins = 0
        while t_start + n_bins * bin_size <= last:  # the bin holding the last spike is the last bin
            n_bins += 1
        end = t_start + n_bins * bin_size
    else:
        n_bins = 0
        while t_start + n_bins * bin_size < t_stop:  # the bins that start before t_stop
            n_bins += 1
        end = t_stop
    edges = t_start + np.arange(n_bins + 1) * bin_size
    edges[-1] = min(edges[-1], end)
    dense = np.zeros((n_bins, len(units)))
    for u, times in enumerate(units):
        times = np.asarray(times, dtype=np.float64)
        inside = times[(times >= t_start) & (times < end)]
        dense[:, u] = np.histogram(inside, bins=edges)[0] / bin_size
    return dense


def random_units(rng, n=6, low=-0.5, high=3.0, bin_size=0.01):
    units = []
    for u in range(n):
        count = [0, 1, 40, 200, 7, 500][u % 6]
        times = rng.uniform(low, high, size=count)
        if count > 20:  # spikes exactly on bin edges, and two spikes at one time
            edges = np.round(rng.uniform(low, high, size=5) / bin_size) * bin_size
            times = np.concatenate([times, edges, edges[:1]])
        units.append(np.sort(times))
    return units


def open_files() -> int:
    return len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE))


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# --------------------------------------------------------------------------- bin_spikes


@pytest.mark.parametrize("bin_size", [0.001, 0.01, 0.1, 0.37])
@pytest.mark.parametrize("t_start, t_stop", [(0.0, None), (0.25, None), (-1.0, 3.0), (0.0, 2.999), (0.5, 1.0)])
def test_bin_spikes_matches_dense_histogram(rng, bin_size, t_start, t_stop):
    units = random_units(rng, bin_size=bin_size)
    binned = bin_spikes(units, bin_size, t_start=t_start, t_stop=t_stop)
    dense = reference_binned(units, bin_size, t_start, t_stop)
    assert isinstance(binned, BinnedSpikes)
    assert binned.shape == dense.shape and binned.dtype == np.float64 and binned.ndim == 2
    np.testing.assert_array_equal(binned[:], dense)
    T = dense.shape[0]
    for a, b in [(0, 1), (0, T), (T // 3, T // 2), (T - 1, T), (5, 5), (T // 2, T + 100)]:
        np.testing.assert_array_equal(binned[a:b], dense[a:b])
    np.testing.assert_allclose(binned.times(), t_start + np.arange(T) * bin_size, rtol=0, atol=1e-12)
    assert binned.t_start == t_start and binned.rate == 1 / bin_size
    kept = [np.count_nonzero((u >= t_start) & (u < binned.t_stop)) for u in units]
    assert binned.n_spikes.tolist() == kept == (dense.sum(axis=0) * bin_size).round().astype(int).tolist()


def test_bin_spikes_default_t_stop_ends_with_the_bin_of_the_last_spike():
    binned = bin_spikes([[0.05, 0.31], [0.12]], 0.1)
    assert binned.shape == (4, 2) and binned.t_stop == pytest.approx(0.4)
    assert binned[3].tolist() == [10.0, 0.0]
    # a spike on an edge opens a new bin: [0.2, 0.3) holds 0.2, not 0.3
    assert bin_spikes([[0.0, 0.5]], 0.25).shape == (3, 1)
    # spikes before t_start and at or after t_stop are ignored
    binned = bin_spikes([[-0.5, 0.1, 0.95, 1.0, 2.0]], 0.5, t_stop=1.0)
    assert binned[:].tolist() == [[2.0], [2.0]] and binned.n_spikes.tolist() == [2]


def test_partial_last_bin_is_cut_at_t_stop():
    binned = bin_spikes([[0.1, 0.25, 0.3]], 0.2, t_stop=0.3)
    assert binned.shape == (2, 1)
    assert binned[:].ravel().tolist() == [5.0, 5.0]  # 0.3 is at t_stop: left out; counts still / bin_size


def test_flat_spikes_with_nwb_index_equal_per_unit_arrays(rng):
    units = random_units(rng)
    ends = np.cumsum([u.size for u in units])
    flat = np.concatenate(units)
    per_unit = bin_spikes(units, 0.02, t_start=-0.5)
    from_flat = bin_spikes(flat, 0.02, t_start=-0.5, index=ends)
    assert from_flat.shape == per_unit.shape
    np.testing.assert_array_equal(from_flat[:], per_unit[:])
    object_array = np.empty(len(units), dtype=object)
    object_array[:] = units
    np.testing.assert_array_equal(bin_spikes(object_array, 0.02, t_start=-0.5)[:], per_unit[:])


def test_read_through_source_chunk_by_chunk(rng):
    units = random_units(rng)
    binned = bin_spikes(units, 0.01, chunk_rows=37)
    dense = reference_binned(units, 0.01)
    assert binned.chunks == (37, len(units))
    source = _Source(binned, "activity")
    assert source.kind == "array" and source.chunk_rows == 37 and source.shape == dense.shape
    for a in range(0, dense.shape[0], 37):
        np.testing.assert_array_equal(source.read(a, a + 37), dense[a : a + 37])
    default = bin_spikes(units, 0.01)
    assert default.chunks == (min(dense.shape[0], 2**18 // len(units)), len(units))


def test_estimate_on_binned_spikes_equals_estimate_on_the_dense_matrix(rng):
    units = random_units(rng, n=5)
    binned = bin_spikes(units, 0.005, chunk_rows=50)
    dense = reference_binned(units, 0.005)
    lazy = estimate(binned, None, chunk_steps=150)
    eager = estimate(dense, None, chunk_steps=150)
    np.testing.assert_allclose(lazy.correlation, eager.correlation, equal_nan=True)
    np.testing.assert_allclose(lazy.effect, eager.effect, equal_nan=True)
    assert lazy.n_samples == eager.n_samples == dense.shape[0] - 1


def test_huge_binned_array_is_never_dense():
    # 10**9 bins x 100 units would be 800 GB dense; construction and a slice are cheap
    rng = np.random.default_rng(1)
    units = [np.sort(rng.uniform(0, 1000, size=200)) for _ in range(100)]
    binned = bin_spikes(units, 1e-6, t_stop=1000.0)
    assert binned.shape == (10**9, 100)
    spike = units[3][0]
    row = int(np.floor(spike / 1e-6))
    window = binned[row - 2 : row + 3]
    assert window.shape == (5, 100) and window[:, 3].sum() == 1e6
    assert binned.nbytes == 8 * 10**11


def test_indexing_forms(rng):
    units = random_units(rng)
    binned = bin_spikes(units, 0.05)
    dense = reference_binned(units, 0.05)
    T = dense.shape[0]
    np.testing.assert_array_equal(binned[3], dense[3])
    np.testing.assert_array_equal(binned[-1], dense[-1])
    np.testing.assert_array_equal(binned[2:30:4], dense[2:30:4])
    np.testing.assert_array_equal(binned[30:2:-3], dense[30:2:-3])
    np.testing.assert_array_equal(binned[::-1], dense[::-1])
    np.testing.assert_array_equal(binned[5:9, :], dense[5:9, :])
    np.testing.assert_array_equal(binned[5:9, 2], dense[5:9, 2])
    np.testing.assert_array_equal(binned[5:9, [0, 3]], dense[5:9, [0, 3]])
    np.testing.assert_array_equal(binned[[4, 1, 9, -2]], dense[[4, 1, 9, -2]])
    mask = np.zeros(T, dtype=bool)
    mask[[2, 7]] = True
    np.testing.assert_array_equal(binned[mask], dense[mask])
    np.testing.assert_array_equal(binned[()], dense)
    assert binned[10:3].shape == (0, len(units)) and len(binned) == T
    for bad in (T, -T - 1):
        with pytest.raises(IndexError, match="out of range"):
            binned[bad]
    with pytest.raises(IndexError, match="2-D"):
        binned[1, 2, 3]
    with pytest.raises(IndexError, match="row indices"):
        binned[[0, T]]
    with pytest.raises(IndexError, match="boolean row mask"):
        binned[np.ones(3, dtype=bool)]
    assert "BinnedSpikes(6 units" in repr(binned)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"bin_size": 0.0}, ValueError, r"bin_size must be > 0 \(seconds\), got 0.0"),
        ({"bin_size": -0.1}, ValueError, r"bin_size must be > 0 \(seconds\), got -0.1"),
        ({"bin_size": float("nan")}, ValueError, "bin_size must be finite"),
        ({"bin_size": "10ms"}, TypeError, "bin_size must be a real number, got '10ms'"),
        ({"t_stop": 0.0}, ValueError, r"t_stop must be > t_start=0.0, got 0.0"),
        ({"t_start": 2.0, "t_stop": 1.0}, ValueError, r"t_stop must be > t_start=2.0, got 1.0"),
        ({"t_start": float("inf")}, ValueError, "t_start must be finite"),
        ({"chunk_rows": 0}, ValueError, "chunk_rows must be >= 1, got 0"),
        ({"spike_times": [[0.1, 0.3, 0.2]]}, ValueError, r"sorted within each unit, got 0.2 at spike_times\[0\]\[2\]"),
        ({"spike_times": [[0.1], [0.5, np.nan]]}, ValueError, r"finite, got nan at spike_times\[1\]\[1\]"),
        ({"spike_times": [[0.1], [np.inf]]}, ValueError, r"finite, got inf at spike_times\[1\]\[0\]"),
        ({"spike_times": np.array([0.1, 0.2])}, TypeError, "pass index=spike_times_index"),
        ({"spike_times": [0.1, 0.2]}, TypeError, r"spike_times\[0\] must be a 1-D array .* got the number 0.1"),
        ({"spike_times": []}, ValueError, "at least one unit"),
        ({"spike_times": "spikes"}, TypeError, "spike_times must be a sequence"),
        ({"spike_times": None}, TypeError, "spike_times must be a sequence"),
        ({"spike_times": [["a", "b"]]}, TypeError, r"spike_times\[0\] must be an array of spike times"),
        ({"spike_times": [[[0.1, 0.2]]]}, ValueError, r"spike_times\[0\] must be 1-D .* shape \(1, 2\)"),
        ({"spike_times": [[], []]}, ValueError, "t_stop is needed: no spikes at all"),
        ({"spike_times": [[0.1]], "t_start": 1.0}, ValueError, "no spike at or after t_start=1.0"),
    ],
)
def test_bin_spikes_bad_inputs(kwargs, error, match):
    arguments = {"spike_times": [[0.1, 0.2], [0.15]], "bin_size": 0.1, **kwargs}
    with pytest.raises(error, match=match):
        bin_spikes(**arguments)


@pytest.mark.parametrize(
    "flat, index, error, match",
    [
        ([0.1, 0.2, 0.3], [1, 2], ValueError, r"index must end at len\(spike_times\)=3 .* got index\[-1\]=2"),
        ([0.1, 0.2, 0.3], [2, 1, 3], ValueError, r"index must be non-decreasing .* index\[1\]=1 after 2"),
        ([0.1, 0.2, 0.3], [-1, 3], ValueError, r"end offsets >= 0, got -1 at index\[0\]"),
        ([0.1, 0.2, 0.3], [1.0, 3.0], TypeError, "index must be a 1-D array of integer end offsets"),
        ([0.1, 0.2, 0.3], [], ValueError, "one end offset per unit, got none"),
        ([0.1, 0.3, 0.2], [3], ValueError, r"sorted within each unit, got 0.2 at spike_times\[2\] \(unit 0\)"),
        ([0.1, 0.3, 0.2], [2, 3], None, None),  # 0.3 then 0.2 crosses units: fine
        ([[0.1, 0.2]], [2], ValueError, "spike_times must be 1-D .* when index is given"),
    ],
)
def test_bin_spikes_bad_flat_index(flat, index, error, match):
    if error is None:
        assert bin_spikes(flat, 0.1, index=index).n_spikes.tolist() == [2, 1]
        return
    with pytest.raises(error, match=match):
        bin_spikes(flat, 0.1, index=index)


# --------------------------------------------------------------------------- read_nwb: two-photon series


T, N = 300, 5
ROI_IDS = [11, 12, 13, 14, 15]
ONSETS = [2.0, 0.5, 1.0, 3.0, 1.5]
TARGETS = [[1, 3], [], [4], [], [0, 1, 2]]


@pytest.fixture(scope="module")
def activity():
    return np.random.default_rng(3).normal(size=(T, N)).astype(np.float32)


@pytest.fixture(scope="module")
def ophys_file(tmp_path_factory, activity):
    path = tmp_path_factory.mktemp("nwb") / "ophys.nwb"
    times = 0.1 + np.arange(T) / 30.0 + np.random.default_rng(4).uniform(0, 1e-3, T)
    nwb_files.write_ophys(path, activity, times=times, onsets=ONSETS, targets=TARGETS, trials_name="photostim",
                          roi_ids=ROI_IDS, chunk_rows=64)
    return path, times


@needs_nwb
def test_roi_series_with_timestamps_round_trip(ophys_file, activity):
    path, times = ophys_file
    recording = read_nwb(path, activity="dff", trials="photostim")
    try:
        assert isinstance(recording, Recording)
        assert isinstance(recording.activity, h5py.Dataset)  # the dataset itself: lazy
        assert recording.activity.chunks == (64, N) and recording.shape == (T, N)
        source = _Source(recording.activity, "activity")
        assert source.chunk_rows == 64
        np.testing.assert_array_equal(source.read(64, 128), activity[64:128])
        np.testing.assert_array_equal(recording.activity[:], activity)
        np.testing.assert_array_equal(recording.times, times)
        assert recording.rate is None
        assert recording.ids.tolist() == ROI_IDS
        trials = recording.trials
        assert isinstance(trials, Trials) and trials.n_sources == N and trials.ids.tolist() == ROI_IDS
        order = np.argsort(ONSETS, kind="stable")
        np.testing.assert_array_equal(trials.onsets, np.sort(ONSETS))
        assert [trials.targets_of(k).tolist() for k in range(5)] == [TARGETS[k] for k in order]
        assert trials.n_sham == 2
        assert recording.description == (
            "ophys.nwb: RoiResponseSeries 'dff' (300 frames x 5 ROIs, ~30 Hz, timestamps); trials 'photostim' (5, 2 sham)"
        )
        assert recording.io.__class__ is NWBHDF5IO
    finally:
        recording.io.close()


@needs_nwb
def test_estimate_reads_the_hdf5_dataset_in_chunks(ophys_file, activity):
    path, _ = ophys_file
    recording = read_nwb(path, activity="processing/ophys/DfOverF/dff", trials=None)
    try:
        assert recording.trials is None
        lazy = estimate(recording.activity, None, chunk_steps=100)
        eager = estimate(activity.astype(np.float64), None, chunk_steps=100)
        np.testing.assert_allclose(lazy.effect, eager.effect, rtol=1e-10)
        assert lazy.parameters["chunk_steps"] == 100
    finally:
        recording.io.close()


@needs_nwb
def test_roi_series_with_rate_and_plain_integer_targets(tmp_path, activity):
    path = nwb_files.write_ophys(tmp_path / "rate.nwb", activity, rate=15.0, starting_time=2.5, onsets=ONSETS,
                                 targets=TARGETS, plain_targets=True, chunk_rows=50)
    recording = read_nwb(path, activity="dff", trials="trials")
    try:
        assert recording.times is None and recording.rate == 15.0 and recording.starting_time == 2.5
        assert recording.activity.chunks == (50, N)
        assert recording.ids.tolist() == list(range(N))
        assert recording.trials.n_sham == 2 and recording.trials.targets_of(3).tolist() == [1, 3]
        assert "15 Hz" in recording.description and "trials 'trials' (5, 2 sham)" in recording.description
    finally:
        recording.io.close()


@needs_nwb
def test_region_targets_map_through_the_series_rois(tmp_path, activity):
    # the series' columns are ROI rows 4, 0, 2 of a 5-ROI table: target row 2 is column 2, row 4 column 0
    path = nwb_files.write_ophys(tmp_path / "rows.nwb", activity[:, :3], rate=30.0, onsets=[1.0, 2.0, 3.0],
                                 targets=[[2, 4], [], [0]], rows=[4, 0, 2], roi_ids=[20, 21, 22, 23, 24])
    recording = read_nwb(path, activity="dff", trials="trials")
    try:
        assert recording.ids.tolist() == [24, 20, 22]
        assert [recording.trials.targets_of(k).tolist() for k in range(3)] == [[2, 0], [], [1]]
    finally:
        recording.io.close()
    path = nwb_files.write_ophys(tmp_path / "rows_bad.nwb", activity[:, :3], rate=30.0, onsets=[1.0, 2.0],
                                 targets=[[0], [3]], rows=[4, 0, 2])
    before = open_files()
    with pytest.raises(ValueError, match=r"trials table 'trials' column 'targets': trial 1 targets row 3 of "
                                         r"'PlaneSegmentation', which is not a column of the activity"):
        read_nwb(path, activity="dff", trials="trials")
    assert open_files() == before


@needs_nwb
def test_any_time_series_anywhere(tmp_path):
    nwbfile = nwb_files.new_nwbfile()
    data = np.arange(40.0).reshape(20, 2)
    nwbfile.add_acquisition(TimeSeries(name="lfp", data=data, unit="V", rate=1000.0))
    nwbfile.add_acquisition(TimeSeries(name="speed", data=np.arange(20.0), unit="m/s", rate=10.0))
    nwb_files.add_trials(nwbfile, [0.001, 0.005], [[1], []], name="photostim")
    path = nwb_files.write(nwbfile, tmp_path / "acq.nwb")
    recording = read_nwb(path, activity="acquisition/lfp", trials="intervals/photostim")
    try:
        np.testing.assert_array_equal(recording.activity[:], data)
        assert recording.ids is None and recording.rate == 1000.0
        assert recording.trials.targets_of(0).tolist() == [1]
        assert recording.description == (
            "acq.nwb: TimeSeries 'lfp' (20 frames x 2 columns, 1000 Hz); trials 'photostim' (2, 1 sham)"
        )
    finally:
        recording.io.close()
    with pytest.raises(ValueError, match=r"activity 'speed' \(TimeSeries in acq.nwb\) must be 2-D .* got shape \(20,\)"):
        read_nwb(path, activity="speed", trials=None)


@needs_nwb
def test_same_name_in_two_places_needs_a_path(tmp_path, activity):
    nwbfile = nwb_files.new_nwbfile()
    rois = nwb_files.add_rois(nwbfile, N)
    nwb_files.add_roi_series(nwbfile, rois, activity, name="dff", rate=30.0)
    nwb_files.add_roi_series(nwbfile, rois, 2 * activity, name="dff", rate=30.0, container="Other")
    path = nwb_files.write(nwbfile, tmp_path / "twice.nwb")
    with pytest.raises(ValueError, match=r"activity 'dff' is ambiguous: 2 of that name in twice.nwb \(processing/ophys/"):
        read_nwb(path, activity="dff", trials=None)
    recording = read_nwb(path, activity="/processing/ophys/Other/dff", trials=None)
    try:
        np.testing.assert_array_equal(recording.activity[:], 2 * activity)
    finally:
        recording.io.close()


# --------------------------------------------------------------------------- read_nwb: units


UNITS = [[0.013, 0.5, 0.51, 1.7], [], [0.2, 0.9], [1.99]]


@needs_nwb
def test_units_binned_with_targets_into_the_units_table(tmp_path):
    path = nwb_files.write_units(tmp_path / "units.nwb", UNITS, onsets=[0.4, 1.0, 0.1], targets=[[0, 3], [], [2]],
                                 trials_name="photostim", unit_ids=[7, 8, 9, 10])
    recording = read_nwb(path, activity="units", trials="photostim", bin_size=0.05)
    try:
        assert isinstance(recording.activity, BinnedSpikes)
        np.testing.assert_array_equal(recording.activity[:], reference_binned(UNITS, 0.05))
        assert recording.rate == 20.0 and recording.starting_time == 0.0 and recording.times is None
        assert recording.ids.tolist() == [7, 8, 9, 10] and recording.trials.ids.tolist() == [7, 8, 9, 10]
        assert [recording.trials.targets_of(k).tolist() for k in range(3)] == [[2], [0, 3], []]
        assert recording.description == (
            "units.nwb: Units spike trains binned at 0.05 s (40 frames x 4 units, 20 Hz); trials 'photostim' (3, 1 sham)"
        )
    finally:
        recording.io.close()


@needs_nwb
def test_units_unsorted_or_negative_spike_times_in_the_file(tmp_path):
    units = [[0.5, 0.1, 0.3], [-0.12, 0.2]]
    path = nwb_files.write_units(tmp_path / "unsorted.nwb", units, onsets=[0.2], targets=[[1]], plain_targets=True)
    recording = read_nwb(path, activity="units", trials="trials", bin_size=0.1)
    try:
        assert recording.starting_time == pytest.approx(-0.2)
        expected = reference_binned([sorted(u) for u in units], 0.1, t_start=recording.starting_time)
        np.testing.assert_array_equal(recording.activity[:], expected)
    finally:
        recording.io.close()


# --------------------------------------------------------------------------- read_nwb: bad inputs


@needs_nwb
def test_missing_activity_lists_the_series(ophys_file):
    path, _ = ophys_file
    before = open_files()
    with pytest.raises(ValueError, match=r"activity 'deconvolved': no TimeSeries of that name in ophys.nwb; "
                                         r"TimeSeries in the file: processing/ophys/DfOverF/dff \(RoiResponseSeries\)$"):
        read_nwb(path, activity="deconvolved", trials="photostim")
    with pytest.raises(ValueError, match=r"activity 'units': the file ophys.nwb has no Units table; TimeSeries in "
                                         r"the file: processing/ophys/DfOverF/dff"):
        read_nwb(path, activity="units", trials="photostim", bin_size=0.1)
    assert open_files() == before


@needs_nwb
def test_missing_trials_table_lists_the_tables(ophys_file):
    path, _ = ophys_file
    with pytest.raises(ValueError, match=r"trials 'trials': no TimeIntervals table of that name in ophys.nwb; "
                                         r"TimeIntervals tables in the file: intervals/photostim \(TimeIntervals\)"):
        read_nwb(path, activity="dff", trials="trials")


@needs_nwb
def test_missing_targets_column_lists_the_columns(ophys_file):
    path, _ = ophys_file
    with pytest.raises(ValueError, match=r"trials table 'photostim' has no column 'cells'; its columns: "
                                         r"start_time, stop_time, targets"):
        read_nwb(path, activity="dff", trials="photostim", targets="cells")
    with pytest.raises(TypeError, match=r"column 'stop_time' must hold integer indices .* got dtype float64"):
        read_nwb(path, activity="dff", trials="photostim", targets="stop_time")


@needs_nwb
def test_units_table_listed_when_activity_is_missing(tmp_path):
    path = nwb_files.write_units(tmp_path / "u.nwb", UNITS)
    with pytest.raises(ValueError, match=r"no TimeSeries of that name in u.nwb; TimeSeries in the file: units \(Units table\)$"):
        read_nwb(path, activity="dff", trials=None)
    with pytest.raises(ValueError, match="TimeIntervals tables in the file: none$"):
        read_nwb(path, activity="units", trials="trials", bin_size=0.1)


@needs_nwb
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"activity": "units"}, ValueError, "bin_size is required with activity='units'"),
        ({"activity": "units", "bin_size": 0}, ValueError, r"bin_size must be > 0 \(seconds\), got 0.0"),
        ({"activity": "units", "bin_size": -1.0}, ValueError, r"bin_size must be > 0 \(seconds\), got -1.0"),
        ({"activity": "units", "bin_size": "1ms"}, TypeError, "bin_size must be a real number, got '1ms'"),
        ({"activity": "dff", "bin_size": 0.1}, ValueError,
         "bin_size applies only to activity='units' .* got bin_size=0.1 with activity='dff'"),
        ({"activity": 3}, TypeError, "activity must be a string naming a TimeSeries or 'units', got 3"),
        ({"activity": "dff", "trials": 1}, TypeError, "trials must be a string naming a TimeIntervals table"),
        ({"activity": "dff", "targets": None}, TypeError, "targets must be a string naming a column"),
    ],
)
def test_bad_arguments(ophys_file, kwargs, error, match):
    path, _ = ophys_file
    arguments = {"trials": "photostim", **kwargs}
    with pytest.raises(error, match=match):
        read_nwb(path, **arguments)


@needs_nwb
def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"path '.*nowhere.nwb': no such NWB file"):
        read_nwb(tmp_path / "nowhere.nwb", activity="dff", trials=None)
    text = tmp_path / "notes.nwb"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"path '.*notes.nwb' is not a readable NWB \(HDF5\) file"):
        read_nwb(text, activity="dff", trials=None)
    with pytest.raises(TypeError, match="path must be a path to an NWB file"):
        read_nwb(None, activity="dff", trials=None)


@needs_nwb
def test_targets_outside_the_activity(tmp_path, activity):
    path = nwb_files.write_ophys(tmp_path / "outside.nwb", activity, rate=30.0, onsets=[1.0, 2.0], targets=[[0], [7]],
                                 plain_targets=True)
    before = open_files()
    with pytest.raises(ValueError, match=r"trials table 'trials' column 'targets': targets must be in "
                                         r"\[0, n_sources=5\), got 7 in targets\[1\]"):
        read_nwb(path, activity="dff", trials="trials")
    assert open_files() == before


@needs_nwb
def test_units_targets_into_another_table(tmp_path):
    nwbfile = nwb_files.new_nwbfile()
    nwb_files.add_units(nwbfile, UNITS)
    rois = nwb_files.add_rois(nwbfile, 3)
    nwb_files.add_trials(nwbfile, [0.5], [[1]], table=rois)
    path = nwb_files.write(nwbfile, tmp_path / "mixed.nwb")
    with pytest.raises(ValueError, match="indexes the table 'PlaneSegmentation', but the activity is the Units table"):
        read_nwb(path, activity="units", trials="trials", bin_size=0.1)


def test_without_pynwb_a_clear_install_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynwb", None)
    with pytest.raises(ImportError, match=r"read_nwb needs pynwb: pip install 'streamcausal\[nwb\]'"):
        read_nwb(tmp_path / "any.nwb", activity="dff", trials="photostim")


@needs_nwb
def test_one_target_per_trial_column_and_bad_timestamps(tmp_path):
    nwbfile = nwb_files.new_nwbfile()
    data = np.ones((4, 3))
    nwbfile.add_acquisition(TimeSeries(name="raw", data=data, unit="a.u.", timestamps=[0.0, 0.1, 0.1, 0.3]))
    nwbfile.add_acquisition(TimeSeries(name="ok", data=data, unit="a.u.", timestamps=[0.0, 0.1, 0.2, 0.3]))
    for onset in (0.25, 0.05):
        nwbfile.add_trial(start_time=onset, stop_time=onset + 0.01)
    nwbfile.add_trial_column(name="target", description="one target per trial", data=[2, 0])
    path = nwb_files.write(nwbfile, tmp_path / "single.nwb")
    recording = read_nwb(path, activity="ok", trials="trials", targets="target")
    try:
        assert [recording.trials.targets_of(k).tolist() for k in range(2)] == [[0], [2]]
        np.testing.assert_array_equal(recording.times, [0.0, 0.1, 0.2, 0.3])
    finally:
        recording.io.close()
    with pytest.raises(ValueError, match=r"activity 'raw' timestamps must increase, got timestamps\[2\]=0.1 after 0.1"):
        read_nwb(path, activity="raw", trials=None)
