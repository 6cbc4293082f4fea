"""Sparse stimulation (few sources per sample): the same samples as the dense path, moments to 1e-12.

* ``_clamp_all_stimulated_samples`` gives, bit for bit, the inputs and outcomes of the
  dense ``_clamp_all_samples`` (same draws; the drive adds only stimulated columns).
* ``_stimulated_moments`` equals the slow reference (``tests/reference.py``) and the
  dense chunk reduction to 1e-12 (relative to the scale of each entry).
* ``run()`` on that path: against the reference on the samples of ``simulate()``,
  against the dense path, with and without a trajectory (bit for bit), on 1 and 2
  Numba threads (bit for bit, in subprocesses), resumed from a store (bit for bit), and
  at the edges: nothing stimulated, one sample per chunk, odd chunks, n = 1.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from reference import reference_cross_moments, reference_design_samples, reference_effect

import streamcausal as sc
from streamcausal import Observation, Perturbation
from streamcausal._kernels import moments as moment_kernels
from streamcausal._kernels import network as network_kernels
from streamcausal.engine import Simulation, simulation
from streamcausal.engine.simulation import compressed_columns, sparse_stimulation
from streamcausal.moments import CrossMoments, block_size, chunk_moments

A140 = sc.create_connectivity(140, random_state=4)
SPARSE = Perturbation(p=0.05)
KEY = np.uint64(0x1234_5678_9ABC_DEF0)


@pytest.fixture
def dense_path(monkeypatch):
    """sparse_stimulation() says False for every design: the dense path, for comparison."""
    monkeypatch.setattr(simulation, "SPARSE_MAX_P", -1.0)


@pytest.fixture
def sparse_path(monkeypatch):
    """sparse_stimulation() says True for any p <= 0.5 and any n (so n = 1 and p = 0.3 take it too)."""
    monkeypatch.setattr(simulation, "SPARSE_MAX_P", 0.5)
    monkeypatch.setattr(simulation, "SPARSE_MIN_NEURONS", 0)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_moments_bit_equal(a, b):
    a, b = a.to_arrays(), b.to_arrays()
    for key in a:
        assert same_bits(a[key], b[key]), key


def assert_moments_close(moments, ref, rtol=1e-12):
    """Means and sums of squares to rtol; each co-moment entry to rtol times its Cauchy-Schwarz scale."""
    if isinstance(ref, CrossMoments):
        ref = ref.to_arrays()
    assert moments.count == int(ref["count"])
    for key in ("mean_in", "mean_out", "m2_in", "m2_out"):
        np.testing.assert_allclose(getattr(moments, key), ref[key], rtol=rtol, atol=rtol, err_msg=key)
    scale = np.sqrt(np.outer(ref["m2_out"], ref["m2_in"]))
    assert np.all(np.abs(moments.comoment - ref["comoment"]) <= rtol * scale + 1e-14)


# =========================================================================== the rule


def test_the_rule_depends_on_p_and_n_only():
    assert sparse_stimulation(Perturbation(p=0.02), 1000)
    assert sparse_stimulation(Perturbation(p=simulation.SPARSE_MAX_P), 1000)
    assert sparse_stimulation(Perturbation(every=5, p=0.02, clamp="stimulated"), 1000)
    assert not sparse_stimulation(Perturbation(), 1000)  # the tutorial's p = 0.5: dense, golden bits
    assert not sparse_stimulation(Perturbation(p=0.3), 1000)
    assert not sparse_stimulation(Perturbation(p=0.02), simulation.SPARSE_MIN_NEURONS)
    assert not sparse_stimulation(Observation(), 1000)
    assert Simulation(A140, 100, SPARSE, 0, 50, "default").sparse
    assert not Simulation(A140, 100, Perturbation(), 0, 50, "default").sparse


# =========================================================================== kernels


def dense_and_sparse_samples(A, p, count, key=KEY):
    """The chunk's samples from the dense kernel and from the sparse one, on the same stream."""
    n = A.shape[0]
    bs = block_size(n)
    network = compressed_columns(A)
    coin_words = (n + 63) // 64 if p == 0.5 else n
    inputs, outputs = np.full((count, n), -1.0), np.full((count, n), -1.0)
    scratch = network_kernels._block_scratch(n, bs, sparse=True)
    network_kernels._clamp_all_samples(network_kernels._drive_tiles(network, n, bs), p, coin_words, key, count, bs,
                                       scratch[:2], (inputs, outputs))
    stimulated = np.full((n, count + 3), 7, dtype=np.uint8)
    sparse_outputs = np.full((count + 3, n), -1.0)
    network_kernels._clamp_all_stimulated_samples(network, p, coin_words, key, count, bs, scratch,
                                                  (stimulated, sparse_outputs))
    return (inputs, outputs), (stimulated, sparse_outputs)


@pytest.mark.parametrize("n, p, count", [(1, 0.05, 50), (7, 0.02, 1), (80, 0.05, 333), (150, 0.02, 1000),
                                         (33, 0.3, 777), (64, 0.5, 100)])
def test_sparse_samples_are_the_dense_kernels_bit_for_bit(n, p, count):
    A = sc.create_connectivity(n, random_state=2) if n > 1 else np.array([[-1.5]])
    (inputs, outputs), (stimulated, sparse_outputs) = dense_and_sparse_samples(A, p, count)
    assert set(np.unique(inputs)) <= {0.0, 1.0}
    assert same_bits(stimulated[:, :count].T.astype(np.float64), inputs)
    assert same_bits(sparse_outputs[:count], outputs)
    assert np.all(stimulated[:, count:] == 7) and np.all(sparse_outputs[count:] == -1.0)  # nothing past count


def test_sparse_samples_with_negative_and_cancelling_weights():
    # Weights that cancel exactly and a dense, negative A: the drive must still match bit for bit.
    A = 0.2 * np.eye(12) - 3 * sc.create_connectivity(12, density=1.0, random_state=5)
    A[3, 4], A[3, 5] = 0.75, -0.75
    (inputs, outputs), (stimulated, sparse_outputs) = dense_and_sparse_samples(A, 0.4, 500)
    assert same_bits(stimulated[:, :500].T.astype(np.float64), inputs)
    assert same_bits(sparse_outputs[:500], outputs)


def stimulated_moments(stimulated, outputs, count):
    n_in, n_out = stimulated.shape[0], outputs.shape[1]
    parts = (np.empty(n_in), np.empty(n_out), np.empty(n_in), np.empty(n_out), np.empty((n_out, n_in)))
    moment_kernels._stimulated_moments(stimulated, outputs, count, parts)
    return CrossMoments.from_parts(count, *parts)


@pytest.mark.parametrize("count", [1, 2, 3, 100, 1001])
@pytest.mark.parametrize("n_in, n_out", [(1, 1), (5, 40), (45, 33)])
def test_stimulated_moments_against_the_reference_and_the_dense_reduction(count, n_in, n_out):
    rng = np.random.default_rng(count + n_in)
    U = (rng.random((count, n_in)) < 0.1).astype(np.float64)
    U[:, 0] = 0.0  # never stimulated
    if n_in > 2:
        U[:, 1] = 1.0  # always stimulated
    V = rng.random((count, n_out)) * 4 - 1
    stimulated = np.zeros((n_in, count + 5), dtype=np.uint8)
    stimulated[:, :count] = U.T
    outputs = np.vstack([V, np.full((5, n_out), np.nan)])  # rows past count are never read
    kept = outputs.copy()
    moments = stimulated_moments(stimulated, outputs, count)
    assert same_bits(outputs, kept)  # left unchanged
    assert_moments_close(moments, reference_cross_moments(U, V))
    assert_moments_close(moments, chunk_moments(U, V, 16))
    assert np.all(moments.m2_in[0] == 0) and np.all(moments.comoment[:, 0] == 0)
    if n_in > 2:
        assert moments.m2_in[1] == 0 and np.all(moments.comoment[:, 1] == 0)
    if count == 1:
        assert np.all(moments.comoment == 0) and np.all(moments.m2_out == 0)


def test_stimulated_moments_with_a_large_offset_stay_accurate():
    # Outcomes near 1e6 with unit spread: centring first keeps the co-moment to 1e-12.
    rng = np.random.default_rng(3)
    U = (rng.random((2000, 20)) < 0.05).astype(np.float64)
    V = 1e6 + U @ rng.normal(size=(20, 30)) + rng.normal(size=(2000, 30))
    stimulated = np.ascontiguousarray(U.T).astype(np.uint8)
    assert_moments_close(stimulated_moments(stimulated, V, 2000), reference_cross_moments(U, V), rtol=1e-11)


# =========================================================================== run()


def reference_of(A, n_steps, design, **kwargs):
    """The samples of simulate() (its trajectory, read as the design says) and their reference moments."""
    trajectory = sc.simulate(A, n_steps, design=design, **kwargs)
    U, V = reference_design_samples(trajectory.activity, trajectory.stimulation, design)
    return U, V, reference_cross_moments(U, V)


@pytest.mark.parametrize("design", [SPARSE, Perturbation(every=3, p=0.08), Perturbation(every=4, p=0.1, clamp="stimulated")],
                         ids=["every2", "every3", "stimulated"])
@pytest.mark.parametrize("chunk_steps", [333, None])
def test_run_against_the_reference(design, chunk_steps):
    assert sparse_stimulation(design, 140)
    kwargs = dict(seed=6, chunk_steps=chunk_steps)
    U, V, ref = reference_of(A140, 3001, design, **kwargs)
    result = sc.run(A140, 3001, design=design, **kwargs)
    assert_moments_close(result.moments, ref)
    np.testing.assert_allclose(result.effect, reference_effect(U, V), rtol=0, atol=1e-10)


@pytest.mark.parametrize("design", [SPARSE, Perturbation(every=3, p=0.1)], ids=["every2", "every3"])
def test_run_equals_the_dense_path_to_1e_12(design, monkeypatch):
    kwargs = dict(design=design, seed=2, chunk_steps=1001)
    sparse = sc.run(A140, 6000, **kwargs)
    monkeypatch.setattr(simulation, "SPARSE_MAX_P", -1.0)
    dense = sc.run(A140, 6000, **kwargs)
    assert_moments_close(sparse.moments, dense.moments)
    assert not same_bits(sparse.moments.comoment, dense.moments.comoment)  # the two paths really differ


@pytest.mark.parametrize("every, chunk_steps", [(2, 333), (2, 1000), (3, 7), (2, 1)])
def test_chunk_moments_are_the_same_with_and_without_a_trajectory(every, chunk_steps):
    # Without a trajectory the fast kernel gives the samples; with one, the paired or the
    # sequential kernel does. The moments must not depend on which.
    design = Perturbation(every=every, p=0.05)
    n_steps = 2001
    fast = Simulation(A140, n_steps, design, 9, chunk_steps, "default")
    written = Simulation(A140, n_steps, design, 9, chunk_steps, "default")
    rows = (np.empty((chunk_steps, 140)), np.empty((chunk_steps, 140)), np.empty(chunk_steps, dtype=bool))
    for chunk in range(min(fast.n_chunks, 40)):
        start, stop = fast.chunk_bounds(chunk)
        assert_moments_bit_equal(fast.advance(chunk), written.advance(chunk, tuple(r[:stop - start] for r in rows)))


def test_one_sample_per_chunk_and_odd_chunks_give_the_reference():
    for chunk_steps in (2, 3, 5):  # one sample per chunk (or none), and odd chunks
        U, V, ref = reference_of(A140, 121, SPARSE, seed=1, chunk_steps=chunk_steps)
        assert_moments_close(sc.run(A140, 121, design=SPARSE, seed=1, chunk_steps=chunk_steps).moments, ref)


def test_nothing_stimulated_gives_nan_not_a_crash():
    result = sc.run(A140, 400, design=Perturbation(p=1e-9), seed=1, chunk_steps=101)
    assert result.n_samples == 200
    assert np.all(result.moments.m2_in == 0) and np.all(result.moments.comoment == 0)
    assert np.all(np.isnan(result.effect)) and result.undefined_edges.all()


def test_samples_that_stimulate_nothing_are_counted():
    # p n = 0.14: most samples stimulate no source at all, and still count as samples.
    design = Perturbation(p=0.001)
    U, V, ref = reference_of(A140, 4001, design, seed=3, chunk_steps=999)
    assert (U.sum(axis=1) == 0).mean() > 0.8
    assert_moments_close(sc.run(A140, 4001, design=design, seed=3, chunk_steps=999).moments, ref)


@pytest.mark.usefixtures("sparse_path")
def test_one_neuron_on_the_sparse_path():
    A = np.array([[0.9]])
    assert sparse_stimulation(Perturbation(p=0.3), 1)
    for design in (Perturbation(p=0.3), Perturbation(every=3, p=0.2)):
        U, V, ref = reference_of(A, 1001, design, seed=4, chunk_steps=77)
        result = sc.run(A, 1001, design=design, seed=4, chunk_steps=77)
        assert_moments_close(result.moments, ref)


@pytest.mark.usefixtures("sparse_path")
def test_legacy_streams_take_the_sparse_moments_and_stay_the_tutorials():
    A = sc.create_connectivity(6)
    design = Perturbation(p=0.3)
    U, V, ref = reference_of(A, 2001, design, seed=8, chunk_steps=250, rng="legacy")
    assert_moments_close(sc.run(A, 2001, design=design, seed=8, chunk_steps=250, rng="legacy").moments, ref)


def test_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    kwargs = dict(design=SPARSE, seed=5, chunk_steps=300)
    uninterrupted = sc.run(A140, 3001, **kwargs)
    path = tmp_path / "run.zarr"

    class Interrupted(Exception):
        pass

    advance, calls = Simulation.advance, []

    def interrupted_at_chunk_5(self, chunk, trajectory=None):
        calls.append(chunk)
        if len(calls) == 6:
            raise Interrupted
        return advance(self, chunk, trajectory)

    monkeypatch.setattr(Simulation, "advance", interrupted_at_chunk_5)
    with pytest.raises(Interrupted):
        sc.run(A140, 3001, store=sc.Store(path, checkpoint_seconds=0, save_trajectory=True), **kwargs)
    monkeypatch.setattr(Simulation, "advance", advance)
    resumed = sc.run(A140, 3001, store=sc.Store(path, checkpoint_seconds=0, save_trajectory=True, mode="r+"), **kwargs)
    assert resumed.parameters["resumed_from_chunk"] == 5
    assert_moments_bit_equal(resumed.moments, uninterrupted.moments)


THREADS_CHILD = textwrap.dedent("""
    import hashlib, numba, numpy as np, streamcausal as sc
    A = sc.create_connectivity(150, random_state=1)
    h = hashlib.sha256()
    for design in (sc.Perturbation(p=0.03), sc.Perturbation(every=3, p=0.1, clamp="stimulated")):
        arrays = sc.run(A, 6001, design=design, seed=3, chunk_steps=2999).moments.to_arrays()
        for name in sorted(arrays):
            h.update(np.ascontiguousarray(arrays[name]).tobytes())
    print(numba.get_num_threads(), h.hexdigest())
""")


@pytest.mark.subprocess
def test_bits_do_not_depend_on_the_thread_count():
    digests = {}
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        done = subprocess.run([sys.executable, "-c", THREADS_CHILD], capture_output=True, text=True, env=env,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        used, digest = done.stdout.split()
        assert used == threads
        digests[threads] = digest
    assert digests["1"] == digests["2"]
    assert digests["1"] != hashlib.sha256().hexdigest()
