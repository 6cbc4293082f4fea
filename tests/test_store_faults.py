"""Faults a store meets: torn checkpoint slots, an interrupted creation, missing and undecodable chunks.

Each fault is injected into a real store (or a real process is killed), and the outcome
is either the same bits as an uninterrupted run, or one line naming the store, the
array and the chunk (exit status 1 for damaged data, 2 for a user error), never data
read from a hole.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import zarr

import streamcausal as sc
from streamcausal import cli
from streamcausal.io.store import RunStore, StoreCorruptError, StoreError, StoreLock, StoreReader
from streamcausal.report import report_data

A6 = sc.create_connectivity(6)
RUN = dict(seed=5, chunk_steps=300)
N_STEPS = 3001  # 11 chunks, the last one short
CLI_RUN = ["run", "--neurons", "6", "--steps", "3001", "--chunk-steps", "300", "--seed", "5", "--seeds", "1",
           "--checkpoint-seconds", "0", "--no-report", "--no-progress"]


def stored(location, **options):
    return sc.Store(location, **{"checkpoint_seconds": 0, **options})


def assert_same_moments(a, b):
    for name, value in a.moments.to_arrays().items():
        assert np.array_equal(value, b.moments.to_arrays()[name]), name


@pytest.fixture(scope="module")
def uninterrupted():
    return sc.run(A6, N_STEPS, **RUN)


def finished_run(path, save_trajectory=False):
    sc.run(A6, N_STEPS, store=stored(path, save_trajectory=save_trajectory), **RUN)
    group = zarr.open_group(path, mode="r")
    slots = {slot: group[f"seed_5/{slot}"].attrs["next_chunk"] for slot in ("checkpoint_a", "checkpoint_b")}
    newest = max(slots, key=slots.get)
    return Path(path) / "seed_5", newest, min(slots.values())


def one_line(capsys, argv, status, *words):
    assert cli.main(argv) == status
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    return err


# ----------------------------------------------------------------------------- 1. a torn slot falls back


def empty_metadata(slot):
    (slot / "zarr.json").write_bytes(b"")


def partial_metadata(slot):
    text = (slot / "zarr.json").read_bytes()
    (slot / "zarr.json").write_bytes(text[: len(text) // 2])


def garbage_metadata(slot):
    (slot / "zarr.json").write_bytes(b"\x00\xff not json")


def record_without_checksum(slot):
    metadata = json.loads((slot / "zarr.json").read_text())
    del metadata["attributes"]["checksum"]
    (slot / "zarr.json").write_text(json.dumps(metadata))


def missing_chunk(slot):
    (slot / "comoment" / "c" / "0" / "0").unlink()


def truncated_chunk(slot):
    os.truncate(slot / "comoment" / "c" / "0" / "0", 10)


def empty_array_metadata(slot):
    (slot / "mean_in" / "zarr.json").write_bytes(b"")


SLOT_FAULTS = [empty_metadata, partial_metadata, garbage_metadata, record_without_checksum, missing_chunk,
               truncated_chunk, empty_array_metadata]


@pytest.mark.parametrize("fault", SLOT_FAULTS, ids=lambda f: f.__name__)
def test_an_unreadable_newest_slot_falls_back_to_the_other(tmp_path, uninterrupted, fault):
    path = tmp_path / "run.zarr"
    seed_dir, newest, older_chunk = finished_run(path)
    fault(seed_dir / newest)
    data = report_data(path)  # the report reads the checkpoints too
    assert data.convergence and data.effect.shape == (6, 6)
    resumed = sc.run(A6, N_STEPS, store=stored(path, mode="r+"), **RUN)
    assert resumed.parameters["resumed_from_chunk"] == older_chunk == 10
    assert_same_moments(resumed, uninterrupted)


def test_both_slots_unreadable_is_one_line_naming_the_store_and_what_to_do(tmp_path, capsys):
    path = tmp_path / "run.zarr"
    assert cli.main(CLI_RUN + ["--store", str(path)]) == 0
    capsys.readouterr()
    seed_dir = path / "seed_5"
    empty_metadata(seed_dir / "checkpoint_a")
    truncated_chunk(seed_dir / "checkpoint_b")
    with pytest.raises(StoreCorruptError, match="both checkpoint slots .* unreadable .*--overwrite"):
        StoreReader.open_run(path).checkpoint(5)
    with pytest.raises(StoreCorruptError, match=str(path.resolve())):
        sc.run(A6, N_STEPS, store=stored(path, mode="r+"), **RUN)
    one_line(capsys, ["report", str(path), "--out", str(tmp_path / "report")], 1, "checkpoint_a", "checkpoint_b",
             "--overwrite")
    one_line(capsys, CLI_RUN + ["--store", str(path), "--resume"], 1, "both checkpoint slots", "--overwrite")
    assert cli.main(CLI_RUN + ["--store", str(path), "--overwrite"]) == 0  # what the line says works


# ----------------------------------------------------------------------------- 2. an interrupted creation


KILLED_CREATION = textwrap.dedent(
    """
    import os, signal, sys
    import streamcausal as sc
    from streamcausal.io import store

    calls = {"n": 0}
    real = store.create_trajectory

    def create_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the third seed's arrays: killed while the store is being created
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    store.create_trajectory = create_then_die
    A = sc.create_connectivity(6)
    sc.run(A, 3001, seed=sc.Seeds(range(5, 69)), chunk_steps=300,
           store=sc.Store(sys.argv[1], save_trajectory=True, checkpoint_seconds=0))
    """
)


@pytest.fixture
def killed_creation(tmp_path):
    """A store whose creating process was SIGKILLed part way (64 seeds with trajectories)."""
    path = tmp_path / "created.zarr"
    child = subprocess.run([sys.executable, "-c", KILLED_CREATION, str(path)], capture_output=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    assert (path / "zarr.json").exists() and (path / "seed_6").exists() and not (path / "seed_68").exists()
    return path


def test_a_store_killed_while_being_created_is_recognised(killed_creation, capsys):
    path = killed_creation
    reader = StoreReader.open(path)
    assert reader.creating and not reader.is_run and not sc.io.store.is_run_store(path)
    with pytest.raises(StoreError, match="never started.*--overwrite"):
        StoreReader.open_run(path)
    cli_run = [word if word != "1" else "2" for word in CLI_RUN]  # two seeds, as a resume of part of it
    one_line(capsys, cli_run + ["--store", str(path), "--resume"], 2, "--resume", "never started", "--overwrite")


def test_a_store_killed_while_being_created_is_replaced_by_overwrite(killed_creation, uninterrupted, capsys):
    assert cli.main(CLI_RUN + ["--store", str(killed_creation), "--overwrite"]) == 0
    reader = StoreReader.open_run(killed_creation)
    assert reader.seeds == [5] and not reader.creating
    assert not (killed_creation / "seed_6").exists()


@pytest.mark.parametrize("mode", ["w-", "w", "a", "r+"])
def test_every_mode_starts_a_store_whose_creation_was_interrupted(tmp_path, uninterrupted, monkeypatch, mode):
    path = tmp_path / "created.zarr"

    class Killed(BaseException):
        pass

    def die(*args, **kwargs):
        raise Killed  # what a kill leaves: the header, the connectivity, no seed groups

    monkeypatch.setattr(sc.io.store, "create_trajectory", die)
    with pytest.raises(Killed):
        sc.run(A6, N_STEPS, store=stored(path, save_trajectory=True), **RUN)
    monkeypatch.undo()
    assert StoreReader.open(path).creating
    result = sc.run(A6, N_STEPS, store=stored(path, mode=mode, save_trajectory=True), **RUN)
    assert_same_moments(result, uninterrupted)
    assert StoreReader.open_run(path).trajectory(5).activity.shape == (N_STEPS, 6)
    if mode == "r+":  # r+ starts it only with the parameters it was created with
        monkeypatch.setattr(sc.io.store, "create_trajectory", die)
        with pytest.raises(Killed):
            sc.run(A6, N_STEPS, store=stored(path, mode="w", save_trajectory=True), **RUN)
        monkeypatch.undo()
        with pytest.raises(StoreError, match="n_steps differs") as refused:
            sc.run(A6, N_STEPS + 1, store=stored(path, mode="r+", save_trajectory=True), **RUN)
        assert refused.value.parameter == "n_steps"


# ----------------------------------------------------------------------------- 3. missing and undecodable chunks


@pytest.fixture
def saved_run(tmp_path):
    path = tmp_path / "run.zarr"
    finished_run(path, save_trajectory=True)
    return path


def test_a_missing_estimate_chunk_is_never_plotted(saved_run, tmp_path, capsys):
    (saved_run / "estimates" / "effect" / "c" / "0" / "0").unlink()
    with pytest.raises(StoreCorruptError, match="'estimates/effect' is damaged: chunk 'c/0/0' is missing"):
        report_data(saved_run)
    one_line(capsys, ["report", str(saved_run), "--out", str(tmp_path / "out")], 1, "estimates/effect", "c/0/0",
             "--resume")
    assert not (tmp_path / "out").exists()
    sc.run(A6, N_STEPS, store=stored(saved_run, mode="r+", save_trajectory=True), **RUN)  # the advice works
    assert report_data(saved_run).effect.shape == (6, 6)


@pytest.mark.parametrize("damage", ["missing", "truncated", "rewritten"])
def test_a_damaged_connectivity_is_never_read_as_A(saved_run, tmp_path, capsys, damage):
    chunk = saved_run / "connectivity" / "c" / "0" / "0"
    if damage == "missing":
        chunk.unlink()
    elif damage == "truncated":
        os.truncate(chunk, 10)
    else:  # valid bytes of other values, its checksum attribute as it was
        zarr.open_group(saved_run, mode="r+")["connectivity"][0, 1] = 7.0
    with pytest.raises(StoreCorruptError, match="connectivity"):
        StoreReader.open_run(saved_run).connectivity()
    one_line(capsys, ["report", str(saved_run), "--out", str(tmp_path / "out")], 1, "connectivity")
    one_line(capsys, ["estimate", str(saved_run), "--no-progress"], 1, "connectivity")
    if damage == "truncated":
        one_line(capsys, ["report", str(saved_run), "--out", str(tmp_path / "out")], 1, "'connectivity'",
                 "chunk 'c/0/0'", "cannot be decoded")


def test_the_connectivity_is_checked_against_the_runs_digest(saved_run):
    # both the array and its checksum rewritten (as by a tool that knows zarr but not the run)
    group = zarr.open_group(saved_run, mode="r+")
    group.create_array("connectivity", shape=(6, 6), dtype="float64", overwrite=True)[...] = A6 * 2
    with pytest.raises(StoreCorruptError, match="connectivity_sha256"):
        StoreReader.open_run(saved_run).connectivity()


@pytest.mark.parametrize("name, chunk", [("clamped", "c/3"), ("stimulation", "c/3/0"), ("activity", "c/10/0")])
def test_a_missing_trajectory_chunk_is_never_read(saved_run, capsys, name, chunk):
    (saved_run / "seed_5" / name / chunk).unlink()
    with pytest.raises(StoreCorruptError, match=f"'seed_5/{name}' has lost chunk '{chunk}'"):
        StoreReader.open_run(saved_run).trajectory(5)
    one_line(capsys, ["estimate", str(saved_run), "--no-progress"], 1, f"seed_5/{name}", chunk)


@pytest.mark.parametrize("name, chunk", [("activity", "c/2/0"), ("stimulation", "c/4/0"), ("clamped", "c/7")])
def test_an_undecodable_trajectory_chunk_is_one_line(saved_run, capsys, name, chunk):
    os.truncate(saved_run / "seed_5" / name / chunk, 10)
    one_line(capsys, ["estimate", str(saved_run), "--no-progress"], 1, f"'seed_5/{name}'", f"chunk '{chunk}'",
             "cannot be decoded")


def test_a_damaged_convergence_snapshot_only_loses_its_point(tmp_path):
    path = tmp_path / "run.zarr"
    sc.run(A6, N_STEPS, store=stored(path), **RUN)
    seed_store = RunStore.reopen(path).seed(5)
    marks = sorted(seed_store.read_snapshots())
    (path / "seed_5" / "convergence" / f"samples_{marks[0]}" / "comoment" / "c" / "0" / "0").unlink()
    assert sorted(seed_store.read_snapshots()) == marks[1:]


# ----------------------------------------------------------------------------- 6. parameters a resume respects


def test_resume_with_another_target_se_is_refused(tmp_path, capsys):
    path = tmp_path / "run.zarr"
    sc.run(A6, N_STEPS, store=stored(path), target_se=0.05, **RUN)
    with pytest.raises(StoreError, match="target_se differs") as refused:
        sc.run(A6, N_STEPS, store=stored(path, mode="r+"), target_se=0.01, **RUN)
    assert refused.value.parameter == "target_se"
    with pytest.raises(StoreError, match="target_se differs"):
        sc.run(A6, N_STEPS, store=stored(path, mode="r+"), **RUN)
    resumed = sc.run(A6, N_STEPS, store=stored(path, mode="r+", checkpoint_seconds=60), target_se=0.05, **RUN)
    assert resumed.parameters["target_se"] == 0.05  # checkpoint_seconds is per session: not compared


# ----------------------------------------------------------------------------- 7. smaller ones


def test_a_zarr_group_is_a_store_location(tmp_path, uninterrupted):
    root = zarr.open_group(tmp_path / "many.zarr", mode="w")
    group = root.require_group("runs/first")
    result = sc.run(A6, N_STEPS, store=stored(group, save_trajectory=True), **RUN)
    assert_same_moments(result, uninterrupted)
    assert (tmp_path / "many.zarr" / "runs" / "first" / "seed_5" / "activity").is_dir()
    assert StoreReader.open_run(group).seeds == [5]
    resumed = sc.run(A6, N_STEPS, store=stored(group, mode="r+", save_trajectory=True), **RUN)
    assert_same_moments(resumed, uninterrupted)
    with pytest.raises(StoreError, match="already holds a run"):
        sc.run(A6, N_STEPS, store=stored(group), **RUN)


@pytest.mark.parametrize("location", [zarr.storage.MemoryStore, lambda: zarr.group(zarr.storage.MemoryStore())])
def test_several_seeds_into_a_memory_store_are_refused(location):
    with pytest.raises(ValueError, match="store must be reachable by Dask worker processes"):
        sc.run(A6, 1000, seed=sc.Seeds(2), store=location())


def test_one_seed_into_a_memory_store_is_kept(uninterrupted):
    memory = zarr.storage.MemoryStore()
    result = sc.run(A6, N_STEPS, store=memory, **RUN)
    assert_same_moments(result, uninterrupted)
    assert StoreReader.open_run(memory).estimates().effect.shape == (6, 6)


def test_a_long_store_name_gets_a_lock_beside_it(tmp_path, uninterrupted):
    path = tmp_path / ("r" * 250)
    lock = StoreLock.for_store(path)
    assert len(lock.path.name) <= 255 - 24 and lock.path.parent == tmp_path
    assert StoreLock.for_store(tmp_path / ("r" * 249 + "s")).path != lock.path
    with lock:
        with pytest.raises(StoreError, match="another live process"):
            sc.run(A6, N_STEPS, store=stored(path), **RUN)
    result = sc.run(A6, N_STEPS, store=stored(path), **RUN)
    assert_same_moments(result, uninterrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # the lock is gone


def test_a_sparse_A_is_stored_sparse_and_resumes_with_its_dense_equal(tmp_path):
    path = tmp_path / "sparse.zarr"
    sparse = scipy.sparse.csr_array(A6)
    first = sc.run(sparse, N_STEPS, store=stored(path), **RUN)
    group = zarr.open_group(path, mode="r")
    assert "connectivity" not in group and "connectivity_sparse" in group
    resumed = sc.run(A6, N_STEPS, store=stored(path, mode="r+"), **RUN)
    assert_same_moments(resumed, first)
    data = report_data(path)
    assert isinstance(data.A, np.ndarray) and np.array_equal(data.A, A6)


def test_float16_is_accepted_as_a_numpy_type(tmp_path):
    assert sc.Store(tmp_path / "x.zarr", dtype=np.float16).dtype == "float16"
