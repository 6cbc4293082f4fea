"""recording.estimate on recordings it did not write, against the slow references and run().

The Zarr stores here are written by the tests with zarr's own API, in their own layout
and chunking (333 rows), which does not line up with the ``chunk_steps`` used to read them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import dask.array as da
import numpy as np
import pytest
import zarr
from reference import reference_correlation, reference_cross_moments, reference_effect, reference_slope

import streamcausal
from streamcausal.designs import Observation, Perturbation
from streamcausal.engine import default_chunk_steps
from streamcausal.io import recording
from streamcausal.io.recording import estimate, estimate_store

T, N, N_IN, ZARR_ROWS = 1000, 4, 3, 333
KINDS = ("numpy", "memmap", "zarr", "dask")
STEPS = ("all", "mask", "slice", "index", "reversed")
MOMENT_KEYS = ("mean_in", "mean_out", "m2_in", "m2_out", "comoment")


# --------------------------------------------------------------------------- data and helpers


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2024)
    activity = 3.0 + rng.random((T, N))  # an offset, so that centring matters
    activity[:, 1] += 0.5 * np.roll(activity[:, 0], 1)  # some structure across time
    stimulation = rng.integers(0, 2, size=(T, N_IN), dtype=np.uint8)
    mask = rng.random(T) < 0.45
    return {"activity": activity, "stimulation": stimulation, "mask": mask}


@pytest.fixture(scope="module")
def containers(data, tmp_path_factory):
    """The same recording as NumPy arrays, memmaps, Zarr arrays (chunks of 333 rows) and Dask arrays."""
    root = tmp_path_factory.mktemp("recording")
    group = zarr.open_group(str(root / "recording.zarr"), mode="w")
    out = {"numpy": dict(data), "memmap": {}, "zarr": {}, "dask": {}}
    for name, array in data.items():
        chunks = (ZARR_ROWS,) + array.shape[1:]
        stored = group.create_array(name, shape=array.shape, chunks=chunks, dtype=array.dtype)
        stored[:] = array
        out["zarr"][name] = stored
        out["dask"][name] = da.from_zarr(stored)
        mm = np.memmap(root / f"{name}.dat", dtype=array.dtype, mode="w+", shape=array.shape)
        mm[:] = array
        mm.flush()
        out["memmap"][name] = np.memmap(root / f"{name}.dat", dtype=array.dtype, mode="r", shape=array.shape)
    return out


def steps_argument(kind, mask, containers_of_kind=None):
    if kind == "all":
        return None
    if kind == "mask":
        return containers_of_kind["mask"] if containers_of_kind is not None else mask
    if kind == "slice":
        return slice(3, 950, 3)
    if kind == "index":
        return np.flatnonzero(mask)
    if kind == "reversed":
        return slice(None, 10, -2)
    raise AssertionError(kind)


def selected_steps(steps, n_steps):
    """The steps a ``steps`` argument selects, sorted, by plain NumPy indexing."""
    every = np.arange(n_steps)
    if steps is None:
        return every
    return np.sort(every[np.asarray(steps) if not isinstance(steps, slice) else steps])


def reference_pairs(activity, stimulation, steps, lag):
    activity = np.asarray(activity, dtype=np.float64)
    t = selected_steps(steps, activity.shape[0])
    t = t[t + lag < activity.shape[0]]
    inputs = activity[t] if stimulation is None else np.asarray(stimulation, dtype=np.float64)[t]
    return inputs, activity[t + lag]


def assert_matches_reference(result, inputs, outputs, tol=1e-10):
    reference = reference_cross_moments(inputs, outputs)
    assert result.moments.count == reference["count"] == inputs.shape[0]
    for key in MOMENT_KEYS:
        np.testing.assert_allclose(getattr(result.moments, key), reference[key], rtol=tol, atol=tol, err_msg=key)
    np.testing.assert_allclose(result.correlation, reference_correlation(inputs, outputs), rtol=0, atol=tol)
    binary = np.isin(inputs, (0, 1)).all()
    expected_effect = reference_effect(inputs, outputs) if binary else reference_slope(inputs, outputs)
    np.testing.assert_allclose(result.effect, expected_effect, rtol=tol, atol=tol)


def assert_same_moments(a, b, tol):
    assert a.count == b.count
    for key in MOMENT_KEYS:
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=tol, atol=tol, err_msg=key)


# --------------------------------------------------------------------------- against the references


@pytest.mark.parametrize("observational", [False, True], ids=["stimulation", "observational"])
@pytest.mark.parametrize("lag", [1, 2, 5])
@pytest.mark.parametrize("steps_kind", STEPS)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference_for_every_array_kind(containers, data, kind, steps_kind, lag, observational):
    arrays = containers[kind]
    steps = steps_argument(steps_kind, data["mask"], arrays)
    stimulation = None if observational else arrays["stimulation"]
    result = estimate(arrays["activity"], stimulation, steps=steps, lag=lag, chunk_steps=250)
    inputs, outputs = reference_pairs(data["activity"], None if observational else data["stimulation"],
                                      steps_argument(steps_kind, data["mask"]), lag)
    assert_matches_reference(result, inputs, outputs)
    assert result.n_steps == T
    assert result.parameters["lag"] == lag and result.parameters["chunk_steps"] == 250
    assert result.effect.shape == (N, N if observational else N_IN)


@pytest.mark.parametrize("chunk_steps", [1, 3, 7, 250, 333, 999, 1000, 5000])
@pytest.mark.parametrize("lag", [1, 5])
def test_any_chunk_steps_gives_the_same_estimate(containers, data, tmp_path, chunk_steps, lag):
    arrays, rows = containers["zarr"], T
    if chunk_steps <= 3:  # one read per step: a shorter recording, stored in chunks of 33 rows
        rows = 150
        group = zarr.open_group(str(tmp_path / "short.zarr"), mode="w")
        arrays = {}
        for name, array in data.items():
            arrays[name] = group.create_array(name, shape=(rows,) + array.shape[1:], chunks=(33,) + array.shape[1:],
                                              dtype=array.dtype)
            arrays[name][:] = array[:rows]
    result = estimate(arrays["activity"], arrays["stimulation"], steps=arrays["mask"], lag=lag, chunk_steps=chunk_steps)
    inputs, outputs = reference_pairs(data["activity"][:rows], data["stimulation"][:rows], data["mask"][:rows], lag)
    assert_matches_reference(result, inputs, outputs)


@pytest.mark.parametrize("chunk_steps", [1, 4, 7])
def test_lag_longer_than_chunk_steps(data, chunk_steps):
    activity, stimulation = data["activity"][:200], data["stimulation"][:200]
    for lag in (5, 17):
        for stim in (stimulation, None):
            result = estimate(activity, stim, steps=slice(1, None, 2), lag=lag, chunk_steps=chunk_steps)
            assert_matches_reference(result, *reference_pairs(activity, stim, slice(1, None, 2), lag))


def test_float_and_bool_stimulation_and_list_steps(data):
    activity = data["activity"]
    for stimulation in (data["stimulation"].astype(np.float32), data["stimulation"].astype(bool)):
        result = estimate(activity, stimulation, steps=list(range(0, T, 4)), chunk_steps=100)
        assert_matches_reference(result, *reference_pairs(activity, data["stimulation"], np.arange(0, T, 4), 1))


def test_real_valued_clamps_with_binary_false(data):
    rng = np.random.default_rng(5)
    clamps = rng.normal(size=(T, N_IN))
    result = estimate(data["activity"], clamps, steps=data["mask"], lag=2, binary=False, chunk_steps=77)
    assert_matches_reference(result, *reference_pairs(data["activity"], clamps, data["mask"], 2))
    assert result.parameters["binary"] is False


def test_xarray_and_zarr_index_steps(containers, data, tmp_path):
    xr = pytest.importorskip("xarray")
    activity = xr.DataArray(data["activity"], dims=("time", "neuron"))
    index = np.flatnonzero(data["mask"])
    stored = zarr.open_group(str(tmp_path / "steps.zarr"), mode="w").create_array(
        "index", shape=index.shape, chunks=(50,), dtype=index.dtype
    )
    stored[:] = index
    result = estimate(activity, containers["zarr"]["stimulation"], steps=stored, chunk_steps=123)
    assert_matches_reference(result, *reference_pairs(data["activity"], data["stimulation"], data["mask"], 1))


def test_orientation_is_target_source():
    """Source 0 drives target 2 one step later: the estimate is large at [2, 0] only."""
    rng = np.random.default_rng(0)
    n_steps = 4000
    stimulation = rng.integers(0, 2, size=(n_steps, 2), dtype=np.uint8)
    activity = 0.1 * rng.random((n_steps, 3))
    activity[1:, 2] += stimulation[:-1, 0]
    result = estimate(activity, stimulation, chunk_steps=999)
    assert result.effect.shape == (3, 2)  # (n_outputs, n_inputs) = [target, source]
    assert result.effect[2, 0] > 0.9
    off = np.ones((3, 2), dtype=bool)
    off[2, 0] = False
    assert np.all(np.abs(result.effect[off]) < 0.05)


# --------------------------------------------------------------------------- reads


class RecordingReads:
    """A duck array that records the row ranges read from it."""

    def __init__(self, array, chunk_rows):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.chunks = (chunk_rows,) + array.shape[1:]
        self.reads = []

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        assert isinstance(rows, slice) and rows.step is None
        start, stop, _ = rows.indices(self.shape[0])
        self.reads.append((start, stop))
        return self.array[key]


@pytest.mark.parametrize("lag", [1, 3])
def test_reads_are_aligned_windows_each_row_once(data, lag):
    activity = RecordingReads(data["activity"], ZARR_ROWS)
    stimulation = RecordingReads(data["stimulation"], ZARR_ROWS)
    mask = RecordingReads(data["mask"], ZARR_ROWS)
    result = estimate(activity, stimulation, steps=mask, lag=lag)
    chunk_steps = result.parameters["chunk_steps"]
    assert chunk_steps % ZARR_ROWS == 0  # the default is aligned with the recording's chunks
    for source in (activity, stimulation, mask):
        starts = [start for start, _ in source.reads]
        assert starts == sorted(starts) and source.reads[0][0] == 0 and source.reads[-1][1] == T
        assert all(b[0] == a[1] for a, b in zip(source.reads, source.reads[1:]))  # each row once
        assert all(start % chunk_steps == 0 for start in starts)
    assert_matches_reference(result, *reference_pairs(data["activity"], data["stimulation"], data["mask"], lag))


def test_default_chunk_steps_is_a_multiple_of_the_stored_chunks():
    activity = RecordingReads(np.zeros((10**6, 100), dtype=np.float32), 20000)
    chunk_steps = recording._default_chunk_steps([recording._Source(activity, "activity")], 100)
    assert chunk_steps % 20000 == 0 and chunk_steps * 100 <= 2**22
    dask_activity = da.zeros((10**6, 10), chunks=(3000, 10))
    chunk_steps = recording._default_chunk_steps([recording._Source(dask_activity, "activity")], 10)
    assert chunk_steps % 3000 == 0
    huge = RecordingReads(np.zeros((10, 10)), 10**8)  # a chunk too large to align with
    assert recording._default_chunk_steps([recording._Source(huge, "activity")], 10) == default_chunk_steps(10)


def test_errors_in_the_read_ahead_thread_reach_the_caller(data, monkeypatch):
    monkeypatch.setattr(recording, "_READ_AHEAD", True)

    class Failing(RecordingReads):
        def __getitem__(self, key):
            if key.start >= 600:
                raise OSError("disk gone")
            return super().__getitem__(key)

    with pytest.raises(OSError, match="disk gone"):
        estimate(Failing(data["activity"], 100), data["stimulation"], chunk_steps=200)


def test_read_ahead_does_not_change_the_result(containers, monkeypatch):
    arrays = containers["zarr"]
    monkeypatch.setattr(recording, "_READ_AHEAD", True)
    first = estimate(arrays["activity"], arrays["stimulation"], steps=arrays["mask"], chunk_steps=333)
    again = estimate(arrays["activity"], arrays["stimulation"], steps=arrays["mask"], chunk_steps=333)
    monkeypatch.setattr(recording, "_READ_AHEAD", False)
    serial = estimate(arrays["activity"], arrays["stimulation"], steps=arrays["mask"], chunk_steps=333)
    monkeypatch.setattr(recording, "_READ_AHEAD", None)
    automatic = estimate(arrays["activity"], arrays["stimulation"], steps=arrays["mask"], chunk_steps=333)
    for other in (again, serial, automatic):
        for key, value in first.moments.to_arrays().items():
            np.testing.assert_array_equal(value, other.moments.to_arrays()[key])


def test_progress_is_called_once_per_window(data):
    calls = []
    estimate(data["activity"], data["stimulation"], chunk_steps=300,
             progress=lambda event: calls.append((event.steps_done, event.steps_total)))
    assert calls == [(300, T), (600, T), (900, T), (T, T)]


# --------------------------------------------------------------------------- against run()


def _write_run_store(path, trajectory, dtype):
    """A run-like store written with plain zarr: seed_0/{activity, stimulation, clamped}, 333-row chunks."""
    group = zarr.open_group(str(path), mode="w")
    seed = group.create_group("seed_0")
    n_steps, n = trajectory.activity.shape
    for name, array, array_dtype in (
        ("activity", trajectory.activity, dtype),
        ("stimulation", trajectory.stimulation, "uint8"),
        ("clamped", trajectory.clamped, "bool"),
    ):
        stored = seed.create_array(
            name, shape=array.shape, chunks=(ZARR_ROWS,) + array.shape[1:], dtype=array_dtype,
            dimension_names=("time", "neuron")[: array.ndim],
        )
        stored[:] = array.astype(array_dtype)
    return group


RUN_STEPS, RUN_CHUNK = 6001, 700
DESIGNS = {
    "tutorial": Perturbation(),
    "every3-stimulated": Perturbation(every=3, p=0.3, clamp="stimulated"),
    "observation": Observation(),
}


@pytest.mark.parametrize("design_name", list(DESIGNS))
def test_saved_float64_trajectory_equals_run(tmp_path, design_name):
    design = DESIGNS[design_name]
    A = streamcausal.create_connectivity(8)
    run = streamcausal.run(A, RUN_STEPS, design=design, seed=11, chunk_steps=RUN_CHUNK)
    trajectory = streamcausal.simulate(A, RUN_STEPS, design=design, seed=11, chunk_steps=RUN_CHUNK)
    _write_run_store(tmp_path / "run.zarr", trajectory, "float64")
    if isinstance(design, Observation):
        result = estimate_store(tmp_path / "run.zarr", "seed_0/activity", None, None, chunk_steps=500)
    else:
        result = estimate_store(tmp_path / "run.zarr", "seed_0/activity", "seed_0/stimulation", "seed_0/clamped")
    assert_same_moments(result.moments, run.moments, 1e-10)
    np.testing.assert_allclose(result.correlation, run.correlation, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.effect, run.effect, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.stderr, run.stderr, rtol=1e-10, atol=1e-12)
    assert result.score(A) == pytest.approx(run.score(A), abs=1e-10)
    assert result.parameters["store"].endswith("run.zarr")


# Float32 storage rounds each activity value x in [0, 1] to within half an ulp,
# |dx| <= 2**-25 (about 3e-8). The effect is a difference of two means of outcomes, so it
# moves by at most 2 * 2**-25. The correlation moves by at most 2 * 2**-25 / sd(outcome_j)
# (|d cov| <= sd(u) sd(dx) and |d sd(v)| <= sd(dx)). The inputs are 0/1 and exact.
FLOAT32_HALF_ULP = 2.0**-25


@pytest.mark.parametrize("design_name", ["tutorial", "every3-stimulated"])
def test_saved_float32_trajectory_is_within_rounding_of_run(tmp_path, design_name):
    design = DESIGNS[design_name]
    A = streamcausal.create_connectivity(8)
    run = streamcausal.run(A, RUN_STEPS, design=design, seed=3, chunk_steps=RUN_CHUNK)
    trajectory = streamcausal.simulate(A, RUN_STEPS, design=design, seed=3, chunk_steps=RUN_CHUNK)
    group = _write_run_store(tmp_path / "run32.zarr", trajectory, "float32")
    result = estimate_store(group, "seed_0/activity", "seed_0/stimulation", "seed_0/clamped")
    assert result.moments.count == run.moments.count
    np.testing.assert_allclose(result.moments.mean_out, run.moments.mean_out, rtol=0, atol=FLOAT32_HALF_ULP)
    effect_bound = 2 * FLOAT32_HALF_ULP + 1e-12
    assert np.nanmax(np.abs(result.effect - run.effect)) <= effect_bound
    sd_out = np.sqrt(run.moments.m2_out / (run.moments.count - 1))
    correlation_bound = 2 * FLOAT32_HALF_ULP / sd_out[:, None] + 1e-12
    assert np.all(np.abs(result.correlation - run.correlation) <= correlation_bound)
    assert np.array_equal(np.isnan(result.correlation), np.isnan(run.correlation))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_store_written_by_run_is_estimated_from_disk(tmp_path, dtype):
    """run(store=..., save_trajectory=True) then estimate_store: the run's own moments back."""
    A = streamcausal.create_connectivity(8)
    path = tmp_path / "run.zarr"
    run = streamcausal.run(A, RUN_STEPS, seed=4, chunk_steps=RUN_CHUNK,
                           store=streamcausal.Store(path, save_trajectory=True, dtype=dtype))
    result = estimate_store(path, activity="seed_4/activity", stimulation="seed_4/stimulation", steps="seed_4/clamped")
    assert result.moments.count == run.moments.count
    tol = 1e-10 if dtype == "float64" else 2 * FLOAT32_HALF_ULP
    np.testing.assert_allclose(result.effect, run.effect, rtol=0, atol=tol)
    if dtype == "float64":
        assert_same_moments(result.moments, run.moments, 1e-10)


# --------------------------------------------------------------------------- stores


def test_estimate_store_accepts_paths_stores_and_groups(tmp_path, data):
    path = tmp_path / "plain.zarr"
    group = zarr.open_group(str(path), mode="w")
    for name, array in data.items():
        stored = group.create_array(name, shape=array.shape, chunks=(128,) + array.shape[1:], dtype=array.dtype)
        stored[:] = array
    expected = reference_pairs(data["activity"], data["stimulation"], data["mask"], 1)
    for store in (path, str(path), zarr.storage.LocalStore(str(path), read_only=True), group):
        result = estimate_store(store, steps="mask")
        assert_matches_reference(result, *expected)


def test_estimate_store_missing_array_names_it_and_lists_the_store(tmp_path, data):
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    group.create_array("seed_0/activity", shape=(10, 2), dtype="f4")
    group.create_array("seed_0/stimulation", shape=(10, 2), dtype="u1")
    with pytest.raises(ValueError) as error:
        estimate_store(tmp_path / "s.zarr", "seed_0/activity", "seed_0/stimulation", "seed_0/clamped")
    message = str(error.value)
    assert "steps array 'seed_0/clamped' not found" in message
    assert "s.zarr" in message and "seed_0/activity" in message and "seed_0/stimulation" in message
    with pytest.raises(ValueError, match="activity array 'seed_0' is a group, not an array"):
        estimate_store(tmp_path / "s.zarr", "seed_0")
    with pytest.raises(ValueError, match="path_or_group must hold a Zarr group, found none at"):
        estimate_store(tmp_path / "missing.zarr")
    with pytest.raises(TypeError, match="stimulation must be a string or None"):
        estimate_store(tmp_path / "s.zarr", "seed_0/activity", 3)
    with pytest.raises(TypeError, match="path_or_group must be a Zarr group"):
        estimate_store(group["seed_0/activity"])


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda d: ((d["activity"][:, 0],), {}), ValueError, r"activity must be 2-D \(T, n\).*shape \(1000,\)"),
        (lambda d: ((d["activity"][None],), {}), ValueError, r"activity must be 2-D"),
        (lambda d: ((d["activity"][:, :0],), {}), ValueError, r"activity must have at least one neuron"),
        (lambda d: ((d["activity"].astype(str),), {}), TypeError, r"activity must be a numeric array, got dtype"),
        (lambda d: ((d["activity"] + 0j,), {}), TypeError, r"activity must be real, got complex"),
        (lambda d: ((None,), {}), TypeError, r"activity must be an array"),
        (lambda d: ((d["activity"], d["stimulation"][:-1]), {}), ValueError,
         r"stimulation must have as many steps \(rows\) as activity, got stimulation shape \(999, 3\) "
         r"and activity shape \(1000, 4\)"),
        (lambda d: ((d["activity"], d["stimulation"][:, 0]), {}), ValueError, r"stimulation must be 2-D"),
        (lambda d: ((d["activity"], np.array([["a"] * 3] * T)), {}), TypeError,
         r"stimulation must be a numeric array, got dtype"),
        (lambda d: ((d["activity"],), {"steps": d["mask"][:-1]}), ValueError,
         r"steps mask must have the length of activity, T=1000, got length 999"),
        (lambda d: ((d["activity"],), {"steps": d["mask"][:, None]}), ValueError, r"steps must be 1-D"),
        (lambda d: ((d["activity"],), {"steps": np.array([1.0, 2.0])}), TypeError,
         r"steps must be a boolean mask, a slice or an integer index array, got dtype float64"),
        (lambda d: ((d["activity"],), {"steps": np.array([5, 3, 9])}), ValueError,
         r"sorted and unique.*got steps\[1\]=3 after steps\[0\]=5"),
        (lambda d: ((d["activity"],), {"steps": np.array([1, 4, 4])}), ValueError, r"steps\[2\]=4 after steps\[1\]=4"),
        (lambda d: ((d["activity"],), {"steps": np.array([1, 1000])}), ValueError,
         r"steps must be indices in \[0, 1000\), got 1000 at steps\[1\]"),
        (lambda d: ((d["activity"],), {"steps": np.array([-1, 3])}), ValueError, r"got -1 at steps\[0\]"),
        (lambda d: ((d["activity"],), {"steps": "clamped"}), TypeError, r"steps must be an array"),
        (lambda d: ((d["activity"],), {"lag": 0}), ValueError, r"lag must be >= 1, got 0"),
        (lambda d: ((d["activity"],), {"lag": -2}), ValueError, r"lag must be >= 1, got -2"),
        (lambda d: ((d["activity"],), {"lag": 1.5}), TypeError, r"lag must be an integer"),
        (lambda d: ((d["activity"],), {"lag": "1"}), TypeError, r"lag must be an integer"),
        (lambda d: ((d["activity"],), {"lag": T}), ValueError, r"lag must be < the number of steps T=1000 .* got lag=1000"),
        (lambda d: ((d["activity"],), {"chunk_steps": 0}), ValueError, r"chunk_steps must be >= 1"),
        (lambda d: ((d["activity"],), {"progress": 3}), TypeError, r"progress must be callable or None"),
        (lambda d: ((d["activity"],), {"skip_nonfinite": "yes"}), TypeError, r"skip_nonfinite must be True or False"),
    ],
)
def test_bad_arguments_are_named(data, make, error, match):
    args, kwargs = make(data)
    with pytest.raises(error, match=match):
        estimate(*args, **kwargs)


def test_unknown_dask_chunks_are_refused(data):
    x = da.from_array(data["activity"], chunks=100)
    unknown = x[x[:, 0] > 3.5]
    with pytest.raises(ValueError, match=r"activity must have a known shape"):
        estimate(unknown)


@pytest.mark.parametrize("kind", ["numpy", "zarr"])
def test_non_binary_stimulation_is_refused_at_its_step(containers, data, kind, tmp_path):
    stimulation = data["stimulation"].copy()
    t = int(np.flatnonzero(data["mask"])[40])
    stimulation[t, 2] = 2
    if kind == "zarr":
        stored = zarr.open_group(str(tmp_path / "nb.zarr"), mode="w").create_array(
            "s", shape=stimulation.shape, chunks=(ZARR_ROWS, N_IN), dtype="uint8"
        )
        stored[:] = stimulation
        stimulation = stored
    with pytest.raises(ValueError, match=rf"stimulation must hold only 0 and 1 \(binary=True\), got 2 at "
                                         rf"stimulation\[{t}, 2\]; pass binary=False"):
        estimate(data["activity"], stimulation, steps=data["mask"], chunk_steps=100)
    result = estimate(data["activity"], stimulation, steps=data["mask"], chunk_steps=100, binary=False)
    assert result.n_samples == reference_pairs(data["activity"], data["stimulation"], data["mask"], 1)[0].shape[0]


def test_non_binary_float_stimulation_and_unselected_steps(data):
    stimulation = data["stimulation"].astype(np.float64)
    unselected = int(np.flatnonzero(~data["mask"])[3])
    stimulation[unselected, 0] = 0.5  # never used as an input: not checked, no error
    result = estimate(data["activity"], stimulation, steps=data["mask"])
    assert_matches_reference(result, *reference_pairs(data["activity"], stimulation, data["mask"], 1))
    with pytest.raises(ValueError, match=rf"got 0.5 at stimulation\[{unselected}, 0\]"):
        estimate(data["activity"], stimulation)


# --------------------------------------------------------------------------- non-finite data


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_activity_is_refused_with_its_time_index(containers, data, bad, tmp_path):
    activity = data["activity"].copy()
    t = int(np.flatnonzero(data["mask"][:-1])[20])
    activity[t + 1, 3] = bad  # the outcome of a selected step
    stored = zarr.open_group(str(tmp_path / "nan.zarr"), mode="w").create_array(
        "a", shape=activity.shape, chunks=(ZARR_ROWS, N), dtype="f8"
    )
    stored[:] = activity
    with pytest.raises(ValueError, match=rf"activity must be finite, got {bad} at time index {t + 1} "
                                         rf"\(activity\[{t + 1}, 3\]\); pass skip_nonfinite=True"):
        estimate(stored, data["stimulation"], steps=data["mask"], chunk_steps=250)


def test_nonfinite_stimulation_is_refused(data):
    stimulation = data["stimulation"].astype(np.float32)
    t = int(np.flatnonzero(data["mask"])[7])
    stimulation[t, 1] = np.nan
    with pytest.raises(ValueError, match=rf"stimulation must be finite, got nan at time index {t} "):
        estimate(data["activity"], stimulation, steps=data["mask"])


def test_skip_nonfinite_drops_exactly_the_affected_pairs(data):
    activity = data["activity"].copy()
    selected = np.flatnonzero(data["mask"][:-1])
    outcome_rows = selected[[5, 60, 200]] + 1
    activity[outcome_rows, 0] = np.nan
    unused = int(np.flatnonzero(~data["mask"][:-1] & ~np.isin(np.arange(1, T), selected + 1))[0]) + 1
    activity[unused, 2] = np.inf  # a row no selected pair uses as outcome: ignored
    result = estimate(activity, data["stimulation"], steps=data["mask"], chunk_steps=97, skip_nonfinite=True)
    assert result.parameters["skipped_pairs"] == 3
    keep = np.setdiff1d(selected, outcome_rows - 1)
    assert_matches_reference(result, data["stimulation"][keep].astype(float), activity[keep + 1])


def test_skip_nonfinite_observational_drops_both_pairs_of_a_row(data):
    activity = data["activity"].copy()
    activity[500, 1] = np.nan  # pairs (498, 500) and (500, 502) at lag 2
    result = estimate(activity, lag=2, chunk_steps=64, skip_nonfinite=True)
    assert result.parameters["skipped_pairs"] == 2
    t = np.setdiff1d(np.arange(T - 2), [498, 500])
    assert_matches_reference(result, activity[t], activity[t + 2])
    with pytest.raises(ValueError, match=r"activity must be finite, got nan at time index 500 \(activity\[500, 1\]\)"):
        estimate(activity, lag=2, chunk_steps=64)


# --------------------------------------------------------------------------- empty selections


@pytest.mark.parametrize(
    "steps", [np.array([], dtype=np.int64), [], np.zeros(T, dtype=bool), np.array([T - 1]), slice(5, 5)],
    ids=["empty-index", "empty-list", "all-false-mask", "last-step-only", "empty-slice"],
)
def test_empty_selection_gives_nan_estimates_not_an_error(data, steps):
    result = estimate(data["activity"], data["stimulation"], steps=steps, chunk_steps=300)
    assert result.n_samples == 0 and result.n_steps == T
    for estimate_ in (result.correlation, result.effect, result.stderr):
        assert estimate_.shape == (N, N_IN) and np.isnan(estimate_).all()
    assert result.parameters["skipped_pairs"] == 0


# --------------------------------------------------------------------------- memory

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from streamcausal.io.recording import estimate, estimate_store

    def high_water_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024

    rng = np.random.default_rng(0)  # load the kernels first: imports are not the estimate's
    estimate(rng.random((4096, 50)), rng.integers(0, 2, (4096, 50)), steps=slice(0, None, 2))
    before = high_water_mb()
    result = estimate_store(sys.argv[1], chunk_steps=int(sys.argv[2]))
    print(json.dumps({"before": before, "after": high_water_mb(), "pairs": result.n_samples}))
    """
)


def _write_large_recording(path, n_steps, n=50, rows=4096):
    group = zarr.open_group(str(path), mode="w")
    kwargs = {"compressors": None}
    activity = group.create_array("activity", shape=(n_steps, n), chunks=(rows, n), dtype="f4", **kwargs)
    stimulation = group.create_array("stimulation", shape=(n_steps, n), chunks=(rows, n), dtype="u1", **kwargs)
    clamped = group.create_array("clamped", shape=(n_steps,), chunks=(rows,), dtype="bool", **kwargs)
    rng = np.random.default_rng(1)
    for start in range(0, n_steps, rows * 8):
        stop = min(start + rows * 8, n_steps)
        activity[start:stop] = rng.random((stop - start, n), dtype=np.float32)
        stimulation[start:stop] = rng.integers(0, 2, (stop - start, n), dtype=np.uint8)
        clamped[start:stop] = np.arange(start, stop) % 2 == 0


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_peak_memory_does_not_grow_with_the_recording(tmp_path):
    """50 MB and 200 MB of float32 activity: the estimate's peak RSS increase is the same.

    Windows of 16384 rows (3 MB of float32) make both runs long enough (15 and 61 windows)
    for the allocator to reach its steady state, so what is compared is growth with T.
    """
    increases = {}
    for n_steps in (250_000, 1_000_000):
        path = tmp_path / f"rec{n_steps}.zarr"
        _write_large_recording(path, n_steps)
        done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(path), "16384"], capture_output=True, text=True,
                              check=True, timeout=120)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        assert measured["pairs"] == n_steps // 2
        increases[n_steps] = measured["after"] - measured["before"]
    # Holding the 1M-step recording would take >= 200 MB more (float32), >= 400 MB as float64.
    assert abs(increases[1_000_000] - increases[250_000]) < 15, increases
    assert increases[1_000_000] < 60, increases
