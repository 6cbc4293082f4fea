"""Tests that would catch a regression of what the README promises, where the older tests would not.

* kill -9 and resume restores the network state (Observation, clamp="stimulated", odd chunks,
  legacy streams), with sparse checkpoints so that chunks after the last one are recomputed;
* kills at random moments, each followed by a resume that really continues;
* a Dask task whose worker dies is re-run, and resumes from its checkpoint;
* the BLAS branches of the chunk reduction against the references;
* run()'s peak memory does not grow with the number of steps;
* target_se with several seeds stops each at target * sqrt(K);
* every trajectory chunk is fsync'ed before the checkpoint record that counts it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from reference import reference_correlation, reference_cross_moments, reference_design_samples, reference_effect

import streamcausal as sc

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra):
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def assert_moments_bit_equal(a, b):
    a, b = a.to_arrays(), b.to_arrays()
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def moments_differ(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(a.to_arrays().values(), b.to_arrays().values()))


def assert_same_trajectory(path, reference_path, seed):
    got = zarr.open_group(str(path), mode="r")[f"seed_{seed}"]
    want = zarr.open_group(str(reference_path), mode="r")[f"seed_{seed}"]
    for name in ("activity", "stimulation", "clamped"):
        assert np.array_equal(got[name][...], want[name][...]), name


# =========================================================================== kill -9, then resume

KILL_A = sc.create_connectivity(8, density=0.5, random_state=2)
KILL_STEPS, KILL_CHUNK, KILL_SEED = 3001, 301, 4  # 10 chunks of an odd length, the last one short
N_KILL_CHUNKS = -(-KILL_STEPS // KILL_CHUNK)
CHECKPOINT_SECONDS = 2.0  # long enough that three small chunks never reach it, even on a loaded machine
STALL_AFTER, KILL_AFTER = 4, 8  # chunks done; chunk 5 starts at step 1505, on an outcome
KILL_DESIGNS = {  # name -> (design, rng)
    "observation": (sc.Observation(), "default"),
    "stimulated-legacy": (sc.Perturbation(clamp="stimulated"), "legacy"),  # the MT19937 state is restored too
    "tutorial-odd-chunks": (sc.Perturbation(), "default"),
}

# A run that prints one line per chunk (and then waits PAUSE seconds). After chunk STALL_AFTER
# it waits 1.5 checkpoint periods, so that the end of the next chunk, and no other, is due a
# checkpoint; after chunk KILL_AFTER it says "kill" and waits to be killed. The last
# checkpoint is then several chunks behind, and the trajectory writer may be writing the chunk
# just done.
KILL_CHILD = textwrap.dedent(
    f"""
    import sys, time
    import streamcausal as sc
    from streamcausal import Observation, Perturbation

    path, design, rng, mode = sys.argv[1], eval(sys.argv[2]), sys.argv[3], sys.argv[4]
    stall_after, kill_after, checkpoint_seconds, pause = int(sys.argv[5]), int(sys.argv[6]), *map(float, sys.argv[7:9])
    n_steps = int(sys.argv[9])
    done = [0]

    def progress(event):
        done[0] += 1
        print(done[0], event.steps_done, flush=True)
        time.sleep(pause)
        if done[0] == stall_after:
            time.sleep(1.5 * {CHECKPOINT_SECONDS})
        if done[0] == kill_after:
            print("kill", flush=True)
            time.sleep(600)

    A = sc.create_connectivity(8, density=0.5, random_state=2)
    sc.run(A, n_steps, design=design, seed={KILL_SEED}, chunk_steps={KILL_CHUNK}, rng=rng, progress=progress,
           store=sc.Store(path, mode=mode, save_trajectory=True, checkpoint_seconds=checkpoint_seconds))
    print("finished", flush=True)
    """
)


def start_child(script, path, design, rng="default", mode="w-", stall_after=-1, kill_after=-1,
                checkpoint_seconds=CHECKPOINT_SECONDS, pause=0.0, n_steps=KILL_STEPS):
    arguments = [path, repr(design), rng, mode, stall_after, kill_after, checkpoint_seconds, pause, n_steps]
    return subprocess.Popen([sys.executable, str(script), *map(str, arguments)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())


def progress_lines(child, count=None):
    """The child's lines up to its "kill" line, or its first ``count`` lines."""
    lines = []
    for line in child.stdout:
        lines.append(line.strip())
        if lines[-1] == "kill" or len(lines) == count:
            return lines
    child.wait(timeout=60)
    raise AssertionError(f"the child ended (status {child.returncode}) before the kill point: "
                         f"{lines} {child.stderr.read()[-2000:]}")


def kill(child):
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)  # reaped: a zombie would still hold the store's lock
    assert child.returncode == -signal.SIGKILL, child.stderr.read()[-2000:]


@pytest.fixture(scope="module")
def kill_script(tmp_path_factory):
    script = tmp_path_factory.mktemp("kill") / "child.py"
    script.write_text(KILL_CHILD)
    return script


def _zeroed_restore(restore):
    def zeroed(simulation, arrays):
        moments = restore(simulation, arrays)
        simulation.state[:] = 0.0
        return moments
    return zeroed


@pytest.mark.subprocess
def test_sigkill_resume_restores_the_network_state(kill_script, tmp_path, monkeypatch):
    """Several chunks after a sparse checkpoint are recomputed from the restored state, bit for bit."""
    children = {}
    for name, (design, rng) in KILL_DESIGNS.items():  # all at once: their waits overlap
        children[name] = start_child(kill_script, tmp_path / f"{name}.zarr", design, rng,
                                     stall_after=STALL_AFTER, kill_after=KILL_AFTER)
    for child in children.values():
        lines = progress_lines(child)
        assert len(lines) == KILL_AFTER + 1 and lines[-1] == "kill"  # a line per chunk, then "kill"
        kill(child)
    from streamcausal.engine import seed as seed_module

    for name, (design, rng) in KILL_DESIGNS.items():
        arguments = dict(design=design, seed=KILL_SEED, chunk_steps=KILL_CHUNK, rng=rng)
        reference_path = tmp_path / f"{name}-uninterrupted.zarr"
        uninterrupted = sc.run(KILL_A, KILL_STEPS, store=sc.Store(reference_path, save_trajectory=True), **arguments)
        killed = tmp_path / f"{name}.zarr"
        sabotaged = tmp_path / f"{name}-sabotaged.zarr"
        shutil.copytree(killed, sabotaged)
        resumed = sc.run(KILL_A, KILL_STEPS, store=sc.Store(killed, mode="r+", save_trajectory=True), **arguments)
        start = resumed.parameters["resumed_from_chunk"]
        assert 0 < start < N_KILL_CHUNKS, name
        assert start <= KILL_AFTER - 2, (name, start)  # at least two chunks done after it were recomputed
        assert start == STALL_AFTER + 1, (name, start)  # the checkpoint the child's stall made due
        assert_moments_bit_equal(resumed.moments, uninterrupted.moments)
        assert_same_trajectory(killed, reference_path, KILL_SEED)
        # The test has teeth: a resume that forgets the network state is caught.
        with monkeypatch.context() as patch:
            patch.setattr(seed_module, "_restore", _zeroed_restore(seed_module._restore))
            broken = sc.run(KILL_A, KILL_STEPS, store=sc.Store(sabotaged, mode="r+", save_trajectory=True), **arguments)
        assert moments_differ(broken.moments, uninterrupted.moments) or not np.array_equal(
            zarr.open_group(str(sabotaged), mode="r")[f"seed_{KILL_SEED}/activity"][...],
            zarr.open_group(str(reference_path), mode="r")[f"seed_{KILL_SEED}/activity"][...]), name


@pytest.mark.subprocess
def test_kills_at_random_moments_each_resumed(kill_script, tmp_path):
    """Three kills at random moments, each attempt resuming the last one (mode "a"), then a final resume."""
    path = tmp_path / "random.zarr"
    design = sc.Perturbation(clamp="stimulated")
    n_steps = 2 * KILL_STEPS  # 20 chunks: three attempts of a few chunks each never finish the run
    chances = random.Random(20250611)
    first_steps = []
    for _attempt in range(3):
        # a checkpoint after every chunk, and a 100 ms wait: killed at some moment of the next chunk or two
        child = start_child(kill_script, path, design, mode="a", checkpoint_seconds=0, pause=0.1, n_steps=n_steps)
        lines = progress_lines(child, count=chances.randint(1, 3))
        first_steps.append(int(lines[0].split()[1]))
        time.sleep(chances.uniform(0.0, 0.1))
        kill(child)
    # Attempts 2 and 3 continued where the one before stopped: their first chunk was not chunk 0.
    assert first_steps[0] == KILL_CHUNK
    assert first_steps[1] > first_steps[0] and first_steps[2] > first_steps[1], first_steps
    arguments = dict(design=design, seed=KILL_SEED, chunk_steps=KILL_CHUNK)
    resumed = sc.run(KILL_A, n_steps, store=sc.Store(path, mode="r+", save_trajectory=True), **arguments)
    assert 0 < resumed.parameters["resumed_from_chunk"] < -(-n_steps // KILL_CHUNK)
    reference_path = tmp_path / "uninterrupted.zarr"
    uninterrupted = sc.run(KILL_A, n_steps, store=sc.Store(reference_path, save_trajectory=True), **arguments)
    assert_moments_bit_equal(resumed.moments, uninterrupted.moments)
    assert_same_trajectory(path, reference_path, KILL_SEED)


# =========================================================================== a worker dies


@pytest.mark.slow  # a worker is killed and restarted: its replacement imports and loads the kernels again
def test_task_of_a_killed_worker_is_rerun_from_its_checkpoint(cluster_client, tmp_path):
    """SIGKILL the worker running a seed once that seed has checkpointed: Dask re-runs its task, which resumes."""
    client = cluster_client
    arguments = dict(design=sc.Observation(), chunk_steps=2000)
    A, n_steps, seeds = KILL_A[:6, :6], 100_001, [0, 1]
    client.run(lambda: __import__("streamcausal").run(np.eye(2), 100, design=sc.Observation()))  # load the kernels
    pids = client.run(os.getpid)
    killed = {}

    def progress(event):  # in this process, as the tasks report (every chunk is checkpointed before it reports)
        if killed or event.steps_done < 2000:
            return
        for worker, keys in client.processing().items():
            if any(key.startswith(f"streamcausal-seed-{event.seed}-") for key in keys):
                killed.update(seed=event.seed, worker=worker, at=event.steps_done)
                os.kill(pids[worker], signal.SIGKILL)
                return

    result = sc.run(A, n_steps, seed=sc.Seeds(seeds, client=client), progress=progress,
                    store=sc.Store(tmp_path / "rerun.zarr", checkpoint_seconds=0), **arguments)
    assert killed, "no worker was killed while it ran a seed"
    assert pids[killed["worker"]] not in client.run(os.getpid).values()  # the nanny started a new one
    rerun = result.per_seed[killed["seed"]]
    # Its task ran again, and resumed from the checkpoint that the killed attempt wrote.
    assert 0 < rerun.parameters["resumed_from_chunk"] < -(-n_steps // 2000)
    for seed in seeds:
        assert_moments_bit_equal(result.per_seed[seed].moments, sc.run(A, n_steps, seed=seed, **arguments).moments)


# =========================================================================== the BLAS branches


def assert_matches_reference(result, U, V, binary):
    """Every entry against np.corrcoef; means, sums of squares, co-moments and effects by the per-pair references.

    The per-pair references loop in Python, so they take 24 sources x 24 targets spread over
    the whole matrix (the first and the last included), all rows of each.
    """
    m = result.moments
    np.testing.assert_allclose(result.correlation, reference_correlation(U, V), rtol=0, atol=1e-10)
    picked = np.unique(np.r_[np.linspace(0, U.shape[1] - 1, 23).astype(int), U.shape[1] // 2])
    ref = reference_cross_moments(U[:, picked], V[:, picked])
    assert m.count == ref["count"] == U.shape[0]
    np.testing.assert_allclose(m.mean_in[picked], ref["mean_in"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.mean_out[picked], ref["mean_out"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.m2_in[picked], ref["m2_in"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.m2_out[picked], ref["m2_out"], rtol=1e-10, atol=1e-12)
    scale = np.sqrt(np.outer(ref["m2_out"], ref["m2_in"]))
    assert np.all(np.abs(m.comoment[np.ix_(picked, picked)] - ref["comoment"]) <= 1e-10 * scale + 1e-14)
    if binary:
        want = reference_effect(U[:, picked], V[:, picked])
        np.testing.assert_allclose(result.effect[np.ix_(picked, picked)], want, rtol=0, atol=1e-10)


A150 = sc.create_connectivity(150, random_state=5)


def test_clamp_all_blas_branch_against_the_reference():
    from streamcausal.moments.reduce import BLAS_PAIRS

    assert 150 * 150 > BLAS_PAIRS  # the clamp-all kernels write samples for one BLAS product
    design, n_steps, chunk_steps = sc.Perturbation(), 8195, 4097  # 2049 and 2048 samples per chunk
    result = sc.run(A150, n_steps, design=design, seed=8, chunk_steps=chunk_steps)
    trajectory = sc.simulate(A150, n_steps, design=design, seed=8, chunk_steps=chunk_steps)
    U, V = reference_design_samples(trajectory.activity, trajectory.stimulation, design)
    assert U.shape == (4097, 150)
    assert_matches_reference(result, U, V, binary=True)


def test_observation_blas_split_against_the_reference():
    design, n_steps, chunk_steps = sc.Observation(), 2201, 1100  # 1100 samples per chunk: the split product
    result = sc.run(A150, n_steps, design=design, seed=8, chunk_steps=chunk_steps)
    trajectory = sc.simulate(A150, n_steps, design=design, seed=8, chunk_steps=chunk_steps)
    U, V = reference_design_samples(trajectory.activity, trajectory.stimulation, design)
    assert U.shape == (2200, 150)
    assert_matches_reference(result, U, V, binary=False)


# =========================================================================== flat memory

MEMORY_CHILD = textwrap.dedent(
    """
    import resource, sys
    import streamcausal as sc
    A = sc.create_connectivity(10, random_state=1)
    sc.run(A, int(float(sys.argv[2])), seed=0, chunk_steps=25_000, store=sc.Store(sys.argv[1], save_trajectory=True))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


@pytest.mark.subprocess
@pytest.mark.slow  # 2 * 10**6 steps written to a store
def test_peak_memory_of_run_does_not_grow_with_steps(tmp_path):
    """Peak RSS of 2*10**6 steps within 10% of 10**5, with the trajectory written: nothing of size T is held.

    The same chunk_steps for both (4 and 80 chunks), so both have their chunk buffers and a chunk
    in the writer's hands; holding the trajectory would add 2*10**6 x 10 values (80 MB as float32,
    +40% here).
    """
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_CHILD)
    children = {steps: subprocess.Popen([sys.executable, str(script), str(tmp_path / f"{steps}.zarr"), steps],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
                for steps in ("1e5", "2e6")}
    peak = {}
    for steps, child in children.items():
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        peak[steps] = int(out.split()[-1])  # KiB
    assert zarr.open_group(str(tmp_path / "2e6.zarr"), mode="r")["seed_0/activity"].shape == (2_000_000, 10)
    assert peak["2e6"] <= 1.10 * peak["1e5"], peak


# =========================================================================== several seeds stop at target * sqrt(K)


def test_target_se_with_two_seeds_stops_each_at_target_times_sqrt2(cluster_client):
    A6 = sc.create_connectivity(6)
    target = 0.004 / np.sqrt(2)
    result = sc.run(A6, 10_000_001, seed=sc.Seeds([0, 1], client=cluster_client), chunk_steps=10_000,
                    target_se=target)
    for seed in (0, 1):
        part = result.per_seed[seed]
        alone = sc.run(A6, 10_000_001, seed=seed, chunk_steps=10_000, target_se=0.004)  # X * sqrt(K) for one
        assert part.n_steps == alone.n_steps < 10_000_001
        assert_moments_bit_equal(part.moments, alone.moments)
        shorter = sc.run(A6, part.n_steps - 10_000, seed=seed, chunk_steps=10_000)
        assert np.nanmean(part.stderr) <= 0.004 < np.nanmean(shorter.stderr)  # the first chunk that reached it
    assert result.n_steps == sum(result.per_seed[s].n_steps for s in (0, 1))
    assert 0.75 * target < np.nanmean(result.stderr) <= target  # the merged one is about the target
    assert result.parameters["target_se"] == target


# =========================================================================== fsync before the record


def record_events(monkeypatch):
    """Every fsync (by the path of its descriptor) and every file zarr writes, in order, from every thread.

    Each event is ``(kind, path, attributes)``: kind "sync" or "write"; ``attributes`` of a
    checkpoint slot's ``zarr.json``, else None.
    """
    import json

    from zarr.storage import _local

    events = []
    real_fsync, real_put = os.fsync, _local._put

    def fsync(descriptor):
        events.append(("sync", os.path.realpath(os.readlink(f"/proc/self/fd/{descriptor}")), None))
        return real_fsync(descriptor)

    def put(path, value, exclusive=False):
        written = real_put(path, value, exclusive=exclusive)
        attributes = None
        if Path(path).name == "zarr.json" and Path(path).parent.name.startswith("checkpoint_"):
            attributes = json.loads(bytes(value.as_buffer_like())).get("attributes", {})
        events.append(("write", os.path.realpath(path), attributes))
        return written

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(_local, "_put", put)
    return events


def is_record(event):
    """A checkpoint record a reader would take: its attributes hold next_chunk and the checksum."""
    return event[2] is not None and "next_chunk" in event[2] and "checksum" in event[2]


def test_every_trajectory_chunk_is_synced_before_the_record_that_counts_it(tmp_path, monkeypatch):
    events = record_events(monkeypatch)
    store = tmp_path / "synced.zarr"
    n_chunks = 6
    sc.run(KILL_A, n_chunks * 250, design=sc.Perturbation(clamp="stimulated"), seed=1, chunk_steps=250,
           store=sc.Store(store, save_trajectory=True, checkpoint_seconds=0))
    seed_dir = Path(os.path.realpath(store)) / "seed_1"
    records, seen = [], set()
    for position, event in enumerate(events):
        if is_record(event) and (event[1], event[2]["next_chunk"]) not in seen:  # its first write
            seen.add((event[1], event[2]["next_chunk"]))
            records.append((position, event[1], event[2]["next_chunk"]))
    assert [next_chunk for _, _, next_chunk in records] == list(range(1, n_chunks + 1))  # one after every chunk

    def assert_synced(path, before, what):
        writes = [k for k, event in enumerate(before) if event[:2] == ("write", path)]
        assert writes, f"{path} not written before the record of {what}"
        for synced in (path, os.path.dirname(path)):  # the file and its directory entry
            syncs = [k for k, event in enumerate(before) if event[:2] == ("sync", synced)]
            assert syncs and syncs[-1] > writes[-1], f"{synced} not synced after its last write, before {what}"

    for position, record_path, next_chunk in records:
        before = events[:position]
        what = f"the record of next_chunk={next_chunk}"
        for chunk in range(next_chunk):
            for name in ("activity/c/{}/0", "stimulation/c/{}/0", "clamped/c/{}"):
                assert_synced(str(seed_dir / name.format(chunk)), before, what)
        # ... and so are the checkpoint's own arrays, written into its slot since the slot's last record
        slot = os.path.dirname(record_path)
        previous = max([k for k, path, _ in records if path == record_path and k < position], default=-1)
        arrays = {event[1] for event in before[previous + 1:] if event[0] == "write"
                  and event[1].startswith(slot + os.sep) and event[1] != record_path}
        assert arrays, what
        for path in arrays:
            assert_synced(path, before, what)


def test_a_checkpoint_record_is_written_whole(tmp_path, monkeypatch):
    """A record that a reader would take (next_chunk and checksum) already holds the rest of it.

    Written key by key (zarr's attrs.update), a kill between the writes left a valid-looking record
    without convergence, stopped_at and steps_done.
    """
    events = record_events(monkeypatch)
    sc.run(KILL_A, 1000, design=sc.Observation(), seed=1, chunk_steps=250, target_se=1e-9,
           store=sc.Store(tmp_path / "whole.zarr", checkpoint_seconds=0))
    records = [event[2] for event in events if is_record(event)]
    assert len(records) >= 4
    for record in records:
        assert {"convergence", "stopped_at", "steps_done"} <= set(record), sorted(record)
