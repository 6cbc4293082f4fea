"""The kernels of streamcausal._kernels through their own functions, and how they are declared.

* The tutorial design's trajectory, which ``Simulation.advance`` writes from the parallel
  sample kernel (default streams, clamp="all", every=2), equals bit for bit (rows and
  each chunk's moments) the one that the sequential kernel gives when called directly,
  chunk by chunk.
* Every kernel is compiled with the shared options of ``streamcausal._jit`` (on-disk
  cache included) and takes at most 12 parameters.
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
