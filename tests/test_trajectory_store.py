"""The trajectory store (schema 2): bit-shuffled 0/1 arrays, float16 activity, schema 1 stores, sparse connectivity."""

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse
import zarr

import streamcausal as sc
from streamcausal.io.store import (
    READABLE_SCHEMAS,
    SCHEMA_VERSION,
    RunStore,
    StoreError,
    StoreReader,
    write_estimates,
)
from streamcausal.network import connectivity_digest

A6 = sc.create_connectivity(6)
RUN = dict(seed=5, chunk_steps=300)
N_STEPS = 3001  # 11 chunks, the last one short


def stored(location, **options):
    return sc.Store(location, **{"checkpoint_seconds": 0, "save_trajectory": True, **options})


def stored_bytes(directory):
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and p.name != "zarr.json")


def assert_same_moments(a, b):
    for name, value in a.moments.to_arrays().items():
        assert np.array_equal(value, b.moments.to_arrays()[name]), name


@pytest.fixture(scope="module")
def trajectory():
    return sc.simulate(A6, N_STEPS, **RUN)


def interrupted_run(path, after_chunks, **options):
    """A run stopped by Ctrl-C after ``after_chunks`` chunks (each one checkpointed)."""
    calls = []

    def interrupt(event):
        calls.append(event)
        if len(calls) == after_chunks:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sc.run(A6, N_STEPS, store=stored(path, **options), progress=interrupt, **RUN)


def test_stimulation_and_clamped_are_exact_and_bit_shuffled(tmp_path, trajectory):
    path = tmp_path / "s.zarr"
    sc.run(A6, N_STEPS, store=stored(path), **RUN)
    reader = StoreReader.open_run(path)
    assert reader.header["schema_version"] == SCHEMA_VERSION == 2
    stored_trajectory = reader.trajectory(5)
    assert stored_trajectory.stimulation.dtype == np.uint8 and stored_trajectory.clamped.dtype == np.bool_
    np.testing.assert_array_equal(stored_trajectory.stimulation[...], trajectory.stimulation)  # bit-exact 0/1
    np.testing.assert_array_equal(stored_trajectory.clamped[...], trajectory.clamped)
    for name in ("stimulation", "clamped"):
        (codec,) = getattr(stored_trajectory, name).compressors
        assert codec.to_dict()["configuration"]["shuffle"] == "bitshuffle", name
    # one bit of information a byte: on disk about the packed bits, far below a byte a value
    raw = N_STEPS * 6
    assert stored_bytes(path / "seed_5" / "stimulation") < 0.35 * raw
    assert stored_bytes(path / "seed_5" / "clamped") < 0.15 * N_STEPS  # 11 chunks of blosc headers, mostly
    # and any Zarr reader sees plain arrays: a slice decodes only what it touches
    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["seed_5/stimulation"][1000:1010], trajectory.stimulation[1000:1010])
    assert reader.trajectory(99) is None


def test_float16_activity_within_its_precision_and_estimate_within_the_error(tmp_path, trajectory):
    path = tmp_path / "f16.zarr"
    result = sc.run(A6, N_STEPS, store=stored(path, dtype="float16"), **RUN)
    assert_same_moments(result, sc.run(A6, N_STEPS, **RUN))  # the moments are float64 either way
    activity = StoreReader.open_run(path).trajectory(5).activity
    assert activity.dtype == np.float16
    values = activity[...].astype(np.float64)
    # round to nearest: relative error <= 2**-11 (half a unit in the last of 11 significant bits)
    np.testing.assert_allclose(values, trajectory.activity, rtol=2.0**-11, atol=0)
    np.testing.assert_array_equal(values == 0, trajectory.activity == 0)
    from_store = sc.estimate_store(path, "seed_5/activity", "seed_5/stimulation", "seed_5/clamped")
    assert from_store.n_samples == result.n_samples
    assert np.nanmax(np.abs(from_store.effect - result.effect) / result.stderr) < 0.05


def test_interrupted_float16_run_resumes_bit_identical(tmp_path):
    reference = tmp_path / "reference.zarr"
    uninterrupted = sc.run(A6, N_STEPS, store=stored(reference, dtype="float16"), **RUN)
    path = tmp_path / "interrupted.zarr"
    interrupted_run(path, 4, dtype="float16")
    resumed = sc.run(A6, N_STEPS, store=stored(path, dtype="float16", mode="r+"), **RUN)
    assert resumed.parameters["resumed_from_chunk"] == 4
    assert_same_moments(resumed, uninterrupted)
    for name in ("activity", "stimulation", "clamped"):
        a = zarr.open_group(path, mode="r")[f"seed_5/{name}"][...]
        b = zarr.open_group(reference, mode="r")[f"seed_5/{name}"][...]
        assert a.dtype == b.dtype and np.array_equal(a, b), name


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import streamcausal as sc
    from streamcausal.io import store

    original, calls = store.SeedStore.write_trajectory, {"n": 0}

    def dying(self, start, activity, stimulation, clamped):
        calls["n"] += 1
        if calls["n"] == 6:  # half of chunk 5's rows written, none of them flushed
            self.trajectory_arrays().activity[start:start + activity.shape[0]] = activity
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, start, activity, stimulation, clamped)

    store.SeedStore.write_trajectory = dying
    sc.run(sc.create_connectivity(6), 3001, seed=5, chunk_steps=300,
           store=sc.Store(sys.argv[1], save_trajectory=True, dtype="float16", checkpoint_seconds=0))
    print("finished")
    """
)


@pytest.mark.subprocess
def test_sigkill_mid_write_of_a_float16_run_then_resume_is_bit_identical(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = tmp_path / "killed.zarr"
    completed = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == -signal.SIGKILL, completed.stderr
    resumed = sc.run(A6, N_STEPS, store=stored(path, dtype="float16", mode="r+"), **RUN)
    assert resumed.parameters["resumed_from_chunk"] == 5
    reference = tmp_path / "reference.zarr"
    assert_same_moments(resumed, sc.run(A6, N_STEPS, store=stored(reference, dtype="float16"), **RUN))
    for name in ("activity", "stimulation", "clamped"):
        assert np.array_equal(zarr.open_group(path, mode="r")[f"seed_5/{name}"][...],
                              zarr.open_group(reference, mode="r")[f"seed_5/{name}"][...]), name


def as_schema_1(path):
    """Rewrite a run store into the layout of schema 1: header version 1, 0/1 arrays byte-shuffled (as stores were)."""
    group = zarr.open_group(path, mode="r+")
    header = dict(group.attrs["streamcausal"])
    group.attrs["streamcausal"] = {**header, "schema_version": 1}
    old = [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    seed = group["seed_5"]
    for name, dtype, compressors in (("stimulation", "uint8", old), ("clamped", "bool", "auto")):
        values, array = seed[name][...], seed[name]
        replacement = seed.create_array(name, shape=array.shape, chunks=array.chunks, dtype=dtype,
                                        compressors=compressors, dimension_names=array.metadata.dimension_names,
                                        attributes=dict(array.attrs), overwrite=True)
        written = np.flatnonzero(np.any(values != 0, axis=-1) if values.ndim == 2 else values)
        stop = 0 if written.size == 0 else -(-(written[-1] + 1) // array.chunks[0]) * array.chunks[0]
        replacement[:stop] = values[:stop]  # only the chunks a run had written
    return group


def test_schema_1_store_is_read_and_resumed_in_its_own_layout(tmp_path):
    assert READABLE_SCHEMAS == (1, 2)
    reference = tmp_path / "reference.zarr"
    uninterrupted = sc.run(A6, N_STEPS, store=stored(reference), **RUN)
    path = tmp_path / "old.zarr"
    interrupted_run(path, 5)
    as_schema_1(path)
    reader = StoreReader.open_run(path)
    assert reader.header["schema_version"] == 1
    assert reader.trajectory(5).stimulation.compressors[0].to_dict()["configuration"]["shuffle"] == "shuffle"
    resumed = sc.run(A6, N_STEPS, store=stored(path, mode="r+"), **RUN)
    assert_same_moments(resumed, uninterrupted)
    group = zarr.open_group(path, mode="r")
    assert group.attrs["streamcausal"]["schema_version"] == 1  # continued in its own layout
    for name in ("activity", "stimulation", "clamped"):
        assert np.array_equal(group[f"seed_5/{name}"][...], zarr.open_group(reference, mode="r")[f"seed_5/{name}"][...])
    estimated = sc.estimate_store(path, "seed_5/activity", "seed_5/stimulation", "seed_5/clamped")
    assert estimated.n_samples == uninterrupted.n_samples
    np.testing.assert_allclose(estimated.effect, uninterrupted.effect, atol=1e-6)
    np.testing.assert_array_equal(StoreReader.open_run(path).connectivity(), A6)


def test_unknown_schema_is_refused_with_the_readable_ones(tmp_path):
    path = tmp_path / "future.zarr"
    sc.run(A6, 1001, store=stored(path, save_trajectory=False), **RUN)
    group = zarr.open_group(path, mode="r+")
    group.attrs["streamcausal"] = {"schema_version": 3, "kind": "run", "package_version": "9"}
    with pytest.raises(StoreError, match="schema version 3; .*reads schemas 1, 2"):
        StoreReader.open_run(path)
    with pytest.raises(StoreError, match="schema version 3"):
        sc.run(A6, 1001, store=stored(path, mode="r+", save_trajectory=False), **RUN)


def sparse_parameters(A):
    # the run's own digest (that of the dense equal), which every read of the connectivity checks
    return {"n_neurons": A.shape[0], "connectivity_sha256": connectivity_digest(A),
            "design": sc.Perturbation().to_dict(), "seeds": [0], "rng": "default", "chunk_steps": 100,
            "n_steps": 1000, "dtype": "float16", "save_trajectory": True, "target_se": None, "package_version": "test"}


def test_sparse_connectivity_round_trip_and_resume_check(tmp_path):
    dense = np.zeros((7, 7))
    dense[[0, 3, 6, 2, 5], [1, 1, 4, 6, 6]] = [0.5, -0.25, 1.5, 2.0, -1.0]
    A = scipy.sparse.coo_array(dense)  # any scipy.sparse form is stored as CSC
    path = tmp_path / "sparse.zarr"
    parameters = sparse_parameters(A)
    RunStore.open(path, parameters, A)
    group = zarr.open_group(path, mode="r")
    assert "connectivity" not in group
    sparse = group["connectivity_sparse"]
    assert sparse.attrs["format"] == "csc" and sparse.attrs["shape"] == [7, 7]
    np.testing.assert_array_equal(sparse["indptr"][...], [0, 0, 2, 2, 2, 3, 3, 5])
    np.testing.assert_array_equal(sparse["indices"][...], [0, 3, 6, 2, 5])  # targets, sorted in each column
    read = StoreReader.open_run(path).connectivity()
    assert isinstance(read, scipy.sparse.csc_array) and read.shape == (7, 7)
    np.testing.assert_array_equal(read.toarray(), dense)
    assert StoreReader.open_run(path).trajectory(0).activity.dtype == np.float16
    # resume: the same A continues, another is refused by its digest
    RunStore.open(path, parameters, A, mode="r+")
    other = sparse_parameters(scipy.sparse.coo_array(dense * 2))
    with pytest.raises(StoreError, match="A \\(connectivity\\) differs") as refused:
        RunStore.open(path, other, A, mode="r+")
    assert refused.value.parameter == "connectivity_sha256"
    # an estimates store written with a sparse true connectivity keeps it sparse
    estimates = tmp_path / "estimates.zarr"
    write_estimates(estimates, sc.CrossMoments(7, 7), connectivity=A, new=True)
    np.testing.assert_array_equal(StoreReader.open(estimates).connectivity().toarray(), dense)


def test_dense_connectivity_is_still_an_array(tmp_path):
    path = tmp_path / "dense.zarr"
    sc.run(A6, 1001, store=stored(path, save_trajectory=False), **RUN)
    read = StoreReader.open_run(path).connectivity()
    assert isinstance(read, np.ndarray)
    np.testing.assert_array_equal(read, A6)
