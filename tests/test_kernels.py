"""The kernels of streamcausal._kernels through their own functions, and how they are declared.

* The tutorial design's trajectory, which ``Simulation.advance`` writes from the parallel
  sample kernel (default streams, clamp="all", every=2), equals bit for bit (rows and
  each chunk's moments) the one that the sequential kernel gives when called directly,
  chunk by chunk.
* Every kernel is compiled with the shared options of ``streamcausal._jit`` (on-disk
  cache included) and takes at most 12 parameters.
* ``_chan_merge`` (explicit loops, for a shorter compile) equals its formulas written as
  NumPy array expressions, bit for bit.
* ``moments.reduce.stimulated_moments`` equals the slow reference to 1e-12 and its
  kernel bit for bit, and names bad arguments; ``one_blas_thread`` holds the BLAS to
  one thread and restores it.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

import streamcausal as sc
from streamcausal._kernels import moments, network, rng
from streamcausal.engine import Simulation
from streamcausal.engine.simulation import compressed_columns
from streamcausal.moments import block_size, chunk_moments

SEED = 2
LENGTHS = (2, 3, 5, 101, 1000, 1001)
CHUNK_STEPS = (1, 2, 3, 7, 64, 5000)


def empty_rows(T, n):
    return np.full((T, n), -1.0), np.full((T, n), -1.0), np.zeros(T, dtype=bool)


def chunk_keys(seed, chunk):
    """(key_samples, key_other) of a chunk: the first two words of its SeedSequence."""
    words = np.random.SeedSequence(seed, spawn_key=(chunk,)).generate_state(2, np.uint64)
    return np.uint64(words[0]), np.uint64(words[1])


def sequential_trajectory(A, T, chunk_steps, seed):
    """Rows and per-chunk moments from ``network._sequential_chunk`` called chunk by chunk."""
    n = A.shape[0]
    design = (network.CLAMP_ALL, 2, 0.5)  # Perturbation(): clamp all, every 2, p = 0.5
    bs = block_size(n)
    state = np.zeros(n)
    unused_legacy_state = (np.zeros(624, dtype=np.uint32), np.zeros(2, dtype=np.int64), np.zeros(1))
    samples = (np.empty((chunk_steps, n)), np.empty((chunk_steps, n)))
    rows = empty_rows(T, n)
    chunk_arrays = []
    for chunk, start in enumerate(range(0, T, chunk_steps)):
        stop = min(start + chunk_steps, T)
        key_samples, key_other = chunk_keys(seed, chunk)
        count = network._sequential_chunk(
            start, stop, T, design, compressed_columns(A), state, (False, key_samples, key_other, bs),
            unused_legacy_state, samples, True, tuple(r[start:stop] for r in rows),
        )
        chunk_arrays.append(chunk_moments(samples[0][:count], samples[1][:count], bs).to_arrays())
    return rows, chunk_arrays


def simulation_trajectory(A, T, chunk_steps, seed):
    """Rows and per-chunk moments from ``Simulation.advance`` (the parallel paired path)."""
    simulation = Simulation(A, T, sc.Perturbation(), seed, chunk_steps, "default")
    rows = empty_rows(T, A.shape[0])
    chunk_arrays = []
    for chunk in range(simulation.n_chunks):
        start, stop = simulation.chunk_bounds(chunk)
        chunk_arrays.append(simulation.advance(chunk, tuple(r[start:stop] for r in rows)).to_arrays())
    return rows, chunk_arrays


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("n", [6, 100])
def test_tutorial_trajectory_from_the_parallel_path_equals_the_sequential_kernel(n):
    A = sc.create_connectivity(n)
    for T in LENGTHS:
        for chunk_steps in CHUNK_STEPS:
            rows_p, moments_p = simulation_trajectory(A, T, chunk_steps, SEED)
            rows_s, moments_s = sequential_trajectory(A, T, chunk_steps, SEED)
            assert all(same_bits(a, b) for a, b in zip(rows_p, rows_s)), (T, chunk_steps)
            assert not (rows_s[0] == -1.0).any()  # every row was written
            assert len(moments_p) == len(moments_s) == -(-T // chunk_steps)
            for a, b in zip(moments_p, moments_s):
                assert a.keys() == b.keys()
                assert all(same_bits(a[k], b[k]) for k in a), (T, chunk_steps)


def kernels():
    """(name, dispatcher) of every Numba kernel of streamcausal._kernels."""
    found = []
    for module in (rng, network, moments):
        for name, value in vars(module).items():
            if isinstance(value, CPUDispatcher) and value.py_func.__module__ == module.__name__:
                found.append((f"{module.__name__}.{name}", value))
    return found


def test_every_kernel_is_cached_and_takes_at_most_12_parameters():
    found = kernels()
    assert len(found) > 30
    for name, dispatcher in found:
        assert type(dispatcher._cache).__name__ == "FunctionCache", name  # cache=True
        assert dispatcher.targetoptions.get("error_model") == "numpy", name
        assert len(inspect.signature(dispatcher.py_func).parameters) <= 12, name


# --- What each kernel compiles, and the thin public wrappers ------------------------------------
def numpy_chan_merge(count_a, moments, count_b, moments_b):
    """``_chan_merge`` by NumPy array expressions, term by term in the kernel's order."""
    mean_u, mean_v, m2_u, m2_v, comoment = (part.copy() for part in moments)
    mean_u_b, mean_v_b, m2_u_b, m2_v_b, comoment_b = moments_b
    if count_b == 0:
        return count_a, (mean_u, mean_v, m2_u, m2_v, comoment)
    if count_a == 0:
        return count_b, tuple(part.copy() for part in moments_b)
    count = count_a + count_b
    weight = np.float64(count_a) * np.float64(count_b) / np.float64(count)
    fraction_b = np.float64(count_b) / np.float64(count)
    delta_u = mean_u_b - mean_u
    delta_v = mean_v_b - mean_v
    comoment += comoment_b + delta_v[:, None] * delta_u[None, :] * weight
    m2_u += m2_u_b + delta_u * delta_u * weight
    m2_v += m2_v_b + delta_v * delta_v * weight
    mean_u += delta_u * fraction_b
    mean_v += delta_v * fraction_b
    return count, (mean_u, mean_v, m2_u, m2_v, comoment)


@pytest.mark.parametrize("counts", [(0, 7), (7, 0), (5, 3), (1, 1), (4096, 17)])
def test_chan_merge_equals_its_formulas_by_numpy_bit_for_bit(counts):
    generator = np.random.default_rng(3)
    n_in, n_out = 5, 3

    def random_moments():
        return (generator.normal(size=n_in), generator.normal(size=n_out), generator.random(n_in),
                generator.random(n_out), generator.normal(size=(n_out, n_in)))

    moments_a, moments_b = random_moments(), random_moments()
    expected_count, expected = numpy_chan_merge(counts[0], moments_a, counts[1], moments_b)
    merged = tuple(part.copy() for part in moments_a)
    assert moments._chan_merge(counts[0], merged, counts[1], moments_b) == expected_count
    for got, want in zip(merged, expected):
        np.testing.assert_array_equal(got, want)  # bit for bit: the same operations, in the same order


def test_stimulated_moments_equals_the_reference_and_the_kernel():
    from reference import reference_cross_moments

    from streamcausal.moments.reduce import stimulated_moments

    generator = np.random.default_rng(5)
    count, n_in, n_out = 300, 40, 37  # two output tiles, the second one partial
    U = (generator.random((count + 4, n_in)) < 0.05).astype(np.float64)
    V = generator.normal(size=(count + 4, n_out))
    stimulated = np.ascontiguousarray(U.T.astype(np.uint8))
    got = stimulated_moments(stimulated, V, count)
    want = reference_cross_moments(U[:count], V[:count])
    parts = got.to_arrays()
    assert int(parts["count"]) == count
    for name in ("mean_in", "mean_out", "m2_in", "m2_out", "comoment"):
        np.testing.assert_allclose(parts[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)
    kernel_moments = (np.empty(n_in), np.empty(n_out), np.empty(n_in), np.empty(n_out), np.empty((n_out, n_in)))
    moments._stimulated_moments(stimulated, V, count, kernel_moments)
    for name, part in zip(("mean_in", "mean_out", "m2_in", "m2_out", "comoment"), kernel_moments):
        np.testing.assert_array_equal(parts[name], part)  # a thin wrapper: the kernel's bits
    empty = stimulated_moments(stimulated, V, 0)
    assert empty.count == 0 and empty.n_inputs == n_in and empty.n_outputs == n_out


@pytest.mark.parametrize("stimulated, outputs, count, error, match", [
    (np.zeros((3, 10), dtype=np.float64), np.zeros((10, 2)), 5, TypeError, "stimulated must be .* uint8"),
    (np.zeros((10, 3), dtype=np.uint8).T, np.zeros((10, 2)), 5, TypeError, "stimulated must be .*not C-contiguous"),
    (np.zeros((3, 10), dtype=np.uint8), np.zeros((10, 2), dtype=np.float32), 5, TypeError, "outputs must be .*float32"),
    (np.zeros((3, 10), dtype=np.uint8), [[0.0, 1.0]], 1, TypeError, "outputs must be"),
    (np.zeros((3, 10), dtype=np.uint8), np.zeros((8, 2)), 9, ValueError, "count must be at most .* got 9"),
    (np.zeros((3, 10), dtype=np.uint8), np.zeros((10, 2)), -1, ValueError, "count"),
    (np.zeros((3, 10), dtype=np.uint8), np.zeros((10, 2)), 2.5, TypeError, "count"),
])
def test_stimulated_moments_rejects_bad_arguments(stimulated, outputs, count, error, match):
    from streamcausal.moments.reduce import stimulated_moments

    with pytest.raises(error, match=match):
        stimulated_moments(stimulated, outputs, count)


def test_one_blas_thread_holds_the_blas_to_one_thread_and_restores_it():
    from threadpoolctl import threadpool_info

    from streamcausal.moments.reduce import one_blas_thread

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    with one_blas_thread():
        assert all(threads == 1 for threads in blas_threads())
    assert blas_threads() == before
