"""The run store: layout read with plain zarr and xarray, checkpoints, kills and resumes, locks."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

import streamcausal as sc
from streamcausal.io.store import SCHEMA_VERSION, StoreError

A6 = sc.create_connectivity(6)
RUN = dict(seed=5, chunk_steps=300)
N_STEPS = 3001  # 11 chunks, the last one short


def stored(location, **options):
    """The run's store, checkpointed after every chunk."""
    return sc.Store(location, **{"checkpoint_seconds": 0, **options})


def arrays_of(result):
    return result.moments.to_arrays()


def assert_same_moments(a, b):
    for name, value in arrays_of(a).items():
        assert np.array_equal(value, arrays_of(b)[name]), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with its trajectory, for every resume to be compared against."""
    path = tmp_path_factory.mktemp("reference") / "run.zarr"
    result = sc.run(A6, N_STEPS, store=stored(path, save_trajectory=True), **RUN)
    return result, zarr.open_group(path, mode="r")


def test_store_layout_readable_with_plain_zarr_and_xarray(reference):
    result, group = reference
    attrs = dict(group.attrs)
    assert attrs["streamcausal"]["schema_version"] == SCHEMA_VERSION
    assert attrs["parameters"]["design"] == {"kind": "perturbation", "every": 2, "p": 0.5, "clamp": "all"}
    assert attrs["parameters"]["seeds"] == [5] and attrs["parameters"]["chunk_steps"] == 300
    np.testing.assert_array_equal(group["connectivity"][...], A6)
    assert group["connectivity"].metadata.dimension_names == ("target", "source")
    activity = group["seed_5/activity"]
    assert activity.shape == (N_STEPS, 6) and activity.dtype == np.float32
    assert activity.chunks == (300, 6)
    assert activity.metadata.dimension_names == ("time", "neuron")
    trajectory = sc.simulate(A6, N_STEPS, seed=5, chunk_steps=300)
    np.testing.assert_allclose(activity[...], trajectory.activity, atol=6e-8)
    np.testing.assert_array_equal(group["seed_5/stimulation"][...], trajectory.stimulation)
    np.testing.assert_array_equal(group["seed_5/clamped"][...], trajectory.clamped)
    np.testing.assert_array_equal(group["estimates/correlation"][...], result.correlation)
    assert int(group["estimates/count"][...]) == result.n_samples

    xr = pytest.importorskip("xarray")
    dataset = xr.open_zarr(group.store, group="seed_5", consolidated=False)
    assert dataset["activity"].dims == ("time", "neuron")
    estimates = xr.open_zarr(group.store, group="estimates", consolidated=False)
    assert estimates["effect"].dims == ("target", "source")


def test_store_without_trajectory_holds_checkpoints_and_estimates(tmp_path):
    sc.run(A6, 1001, store=stored(tmp_path / "s.zarr"), **RUN)
    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert "activity" not in group["seed_5"]
    assert "checkpoint_a" in group["seed_5"] and "correlation" in group["estimates"]


def test_float64_store_and_zarr_store_objects(tmp_path):
    store = zarr.storage.LocalStore(tmp_path / "s64.zarr")
    sc.run(A6, 1001, store=stored(store, save_trajectory=True, dtype="float64"), **RUN)
    trajectory = sc.simulate(A6, 1001, seed=5, chunk_steps=300)
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["seed_5/activity"][...], trajectory.activity)
    memory = zarr.storage.MemoryStore()
    result = sc.run(A6, 1001, store=stored(memory, save_trajectory=True), **RUN)
    assert_same_moments(result, sc.run(A6, 1001, **RUN))


def test_resume_of_finished_run_returns_its_result(reference, tmp_path):
    path = tmp_path / "done.zarr"
    first = sc.run(A6, N_STEPS, store=stored(path), **RUN)
    again = sc.run(A6, N_STEPS, store=stored(path, mode="r+"), **RUN)
    assert_same_moments(first, again)
    assert again.parameters["resumed_from_chunk"] == 11


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(seed=6), "seed"),
        (dict(chunk_steps=200), "chunk_steps"),
        (dict(design=sc.Perturbation(every=3)), "design"),
        (dict(dtype="float64"), "dtype"),
        (dict(rng="legacy"), "rng"),
        (dict(n_steps=4001), "n_steps"),
        (dict(A=sc.create_connectivity(6, random_state=1)), "A (connectivity)"),
        (dict(A=sc.create_connectivity(7)), "n_neurons"),
    ],
)
def test_resume_with_different_parameters_names_the_parameter(tmp_path, change, named):
    path = tmp_path / "p.zarr"
    sc.run(A6, 1001, store=stored(path, save_trajectory=True), **RUN)
    arguments = dict(RUN, n_steps=1001, A=A6, dtype="float32")
    arguments.update(change)
    dtype = arguments.pop("dtype")
    with pytest.raises(StoreError, match=f"cannot resume .*{named.split()[0]}") as refused:
        sc.run(arguments.pop("A"), arguments.pop("n_steps"), store=stored(path, mode="r+", save_trajectory=True,
                                                                          dtype=dtype), **arguments)
    assert refused.value.parameter == {"A (connectivity)": "connectivity_sha256", "seed": "seeds"}.get(named, named)


def test_existing_run_is_not_overwritten_by_accident(tmp_path):
    path = tmp_path / "o.zarr"
    sc.run(A6, 1001, store=stored(path), **RUN)
    with pytest.raises(StoreError, match="already holds a run"):
        sc.run(A6, 1001, store=stored(path), **RUN)
    sc.run(A6, 1001, store=stored(path, mode="w"), **dict(RUN, seed=1))
    assert zarr.open_group(path, mode="r").attrs["parameters"]["seeds"] == [1]


def test_foreign_and_newer_stores_are_refused(tmp_path):
    foreign = zarr.open_group(tmp_path / "foreign.zarr", mode="w")
    foreign.create_array("data", shape=(3,), dtype="f8")
    with pytest.raises(StoreError, match="not a streamcausal run store"):
        sc.run(A6, 1001, store=stored(tmp_path / "foreign.zarr", mode="r+"), **RUN)
    path = tmp_path / "newer.zarr"
    sc.run(A6, 1001, store=stored(path), **RUN)
    group = zarr.open_group(path, mode="r+")
    group.attrs["streamcausal"] = {"schema_version": 99, "kind": "run", "package_version": "9"}
    with pytest.raises(StoreError, match="schema version 99"):
        sc.run(A6, 1001, store=stored(path, mode="r+"), **RUN)
    (tmp_path / "file.zarr").write_text("not a store")
    with pytest.raises(StoreError):
        sc.run(A6, 1001, store=stored(tmp_path / "file.zarr"), **RUN)


def test_store_arguments_are_validated(tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of .* got 'int16'"):
        sc.Store(tmp_path / "d.zarr", dtype="int16")
    with pytest.raises(ValueError, match="checkpoint_seconds must be >= 0, got -1"):
        sc.Store(tmp_path / "d.zarr", checkpoint_seconds=-1)
    with pytest.raises(TypeError, match="save_trajectory must be True or False, got 'yes'"):
        sc.Store(tmp_path / "d.zarr", save_trajectory="yes")
    with pytest.raises(ValueError, match=r"mode must be one of \['w-', 'w', 'r\+', 'a'\], got 'resume'"):
        sc.Store(tmp_path / "d.zarr", mode="resume")
    with pytest.raises(TypeError, match="location must be a path, URL or zarr store, got None"):
        sc.Store(None)
    assert sc.Store(tmp_path / "d.zarr", dtype=np.float64).dtype == "float64"
    assert not (tmp_path / "d.zarr").exists()


def test_mode_a_creates_or_continues(tmp_path):
    path = tmp_path / "a.zarr"
    first = sc.run(A6, 1001, store=stored(path, mode="a"), **RUN)
    assert first.parameters["resumed_from_chunk"] == 0
    again = sc.run(A6, 1001, store=stored(path, mode="a"), **RUN)
    assert again.parameters["resumed_from_chunk"] == 4
    assert_same_moments(first, again)
    with pytest.raises(StoreError, match="holds no run yet") as refused:
        sc.run(A6, 1001, store=stored(tmp_path / "none.zarr", mode="r+"), **RUN)
    assert refused.value.parameter == "mode"


def test_torn_checkpoint_slot_is_ignored(tmp_path):
    path = tmp_path / "torn.zarr"
    uninterrupted = sc.run(A6, N_STEPS, **RUN)
    sc.run(A6, N_STEPS, store=stored(path, save_trajectory=True), **RUN)
    group = zarr.open_group(path, mode="r+")
    newest = max(("checkpoint_a", "checkpoint_b"), key=lambda s: group[f"seed_5/{s}"].attrs["next_chunk"])
    group[f"seed_5/{newest}/comoment"][0, 0] = 123.0  # as if killed after one array of a new checkpoint
    resumed = sc.run(A6, N_STEPS, store=stored(path, save_trajectory=True, mode="r+"), **RUN)
    assert resumed.parameters["resumed_from_chunk"] == 10
    assert_same_moments(resumed, uninterrupted)


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import streamcausal as sc
    from streamcausal.engine import Simulation
    from streamcausal.io import store

    point, when, path, rng, save = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
    calls = {"n": 0}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def counting(original, before_original):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == when and before_original:
                die()
            value = original(*args, **kwargs)
            if calls["n"] == when and not before_original:
                die()
            return value
        return wrapper

    if point == "mid-chunk":
        Simulation.advance = counting(Simulation.advance, True)
    elif point == "after-chunk":
        Simulation.advance = counting(Simulation.advance, False)
    elif point == "mid-trajectory-write":
        original = store.SeedStore.write_trajectory
        def half_written(self, start, activity, stimulation, clamped):
            calls["n"] += 1
            if calls["n"] == when:
                self.group["activity"][start:start + activity.shape[0]] = activity
                die()
            return original(self, start, activity, stimulation, clamped)
        store.SeedStore.write_trajectory = half_written
    elif point == "mid-checkpoint":
        # arrays of the new checkpoint written, its record not yet
        store.SeedStore._fsync_written = counting(store.SeedStore._fsync_written, False)
    elif point == "mid-checkpoint-arrays":
        original = store.SeedStore._slot_arrays
        def torn(self, slot, arrays):
            group, handles = original(self, slot, arrays)
            class Dying(dict):
                def __getitem__(inner, name):
                    if name == "m2_out":
                        calls["n"] += 1
                        if calls["n"] == when:
                            die()
                    return dict.__getitem__(inner, name)
            return group, Dying(handles)
        store.SeedStore._slot_arrays = torn
    sc.run(sc.create_connectivity(6), {n_steps}, rng=rng, seed=5, chunk_steps=300,
           store=sc.Store(path, save_trajectory=save, checkpoint_seconds=0))
    print("finished")
    """
).replace("{n_steps}", str(N_STEPS))


def run_child(tmp_path, point, when, path, rng="default", save=True):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    completed = subprocess.run(
        [sys.executable, str(script), point, str(when), str(path), rng, "1" if save else "0"],
        capture_output=True, text=True, timeout=120,
    )
    return completed


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize(
    "point, when",
    [
        ("mid-chunk", 1),
        ("mid-chunk", 4),
        ("after-chunk", 7),
        ("mid-trajectory-write", 3),
        ("mid-trajectory-write", 11),
        ("mid-checkpoint", 2),
        ("mid-checkpoint", 11),
        ("mid-checkpoint-arrays", 5),
    ],
)
def test_sigkill_then_resume_is_bit_identical(reference, tmp_path, point, when):
    uninterrupted, reference_group = reference
    path = tmp_path / "killed.zarr"
    completed = run_child(tmp_path, point, when, path)
    assert completed.returncode == -signal.SIGKILL, completed.stderr
    assert "finished" not in completed.stdout
    resumed = sc.run(A6, N_STEPS, store=stored(path, save_trajectory=True, mode="r+"), **RUN)
    assert_same_moments(resumed, uninterrupted)
    group = zarr.open_group(path, mode="r")
    for name in ("activity", "stimulation", "clamped"):
        assert np.array_equal(group[f"seed_5/{name}"][...], reference_group[f"seed_5/{name}"][...]), name
    np.testing.assert_array_equal(group["estimates/correlation"][...], uninterrupted.correlation)


@pytest.mark.subprocess
def test_sigkill_then_resume_in_legacy_mode(tmp_path):
    path = tmp_path / "legacy.zarr"
    completed = run_child(tmp_path, "after-chunk", 6, path, rng="legacy", save=False)
    assert completed.returncode == -signal.SIGKILL, completed.stderr
    resumed = sc.run(A6, N_STEPS, store=stored(path, mode="r+"), rng="legacy", **RUN)
    assert resumed.parameters["resumed_from_chunk"] == 5  # killed before chunk 5 was checkpointed
    assert_same_moments(resumed, sc.run(A6, N_STEPS, rng="legacy", **RUN))
    np.random.seed(5)
    X = sc.tutorial.simulate_neurons_perturb(A6, N_STEPS)
    np.testing.assert_allclose(resumed.correlation, sc.tutorial.get_perturbed_connectivity_all_neurons(X).T,
                               atol=1e-12)


@pytest.mark.subprocess
def test_live_lock_is_refused_and_stale_lock_taken_over(tmp_path):
    path = tmp_path / "locked.zarr"
    lock_path = tmp_path / "locked.zarr.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "since": 0}))
        with pytest.raises(StoreError, match=f"another live process \\(pid {holder.pid}"):
            sc.run(A6, 1001, store=stored(path), **RUN)
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: its lock is stale and is taken over
    result = sc.run(A6, 1001, store=stored(path), **RUN)
    assert result.n_samples == 500
    assert not lock_path.exists()
    lock_path.write_text("{torn")  # a lock file cut short by a kill
    sc.run(A6, 1001, store=stored(path, mode="r+"), **RUN)
    assert not lock_path.exists()
