"""One seed's chunked simulation: the network stepped chunk by chunk, each chunk reduced to its moments.

Orientation: ``A[j, i]`` is the weight from source ``i`` onto target ``j``; the
estimates returned are ``[target, source]``. Arrays are time-major ``(T, n)``.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

import numba
import numpy as np

from .._kernels import network as kernels
from .._validation import check_callable, check_connectivity, check_int, check_seed, is_sparse
from ..designs import Observation, Perturbation, check_design
from ..moments import CrossMoments, block_size, chunk_moments
from ..moments.reduce import BLAS_PAIRS, stimulated_moments
from ..network import compressed_columns

__all__ = [
    "MAX_STEPS", "RNG_MODES", "Simulation", "Trajectory", "available_memory", "check_memory",
    "check_simulation_arguments", "default_chunk_steps", "format_bytes", "memory_needed", "simulate",
    "sparse_stimulation",
]

RNG_MODES = ("default", "legacy")

# The most steps a run may have: step counts stay exact in float64 (rates, JSON
# readers) and far inside the kernels' int64 step indices and the checkpoint record.
MAX_STEPS = 2**53

# n x n float64 matrices a seed holds at its peak: the running co-moment, a chunk's, their
# merge, and the standard error and correlation of a convergence point; up to
# SCORE_IN_ONE_PASS entries its score also takes a dense A and copies of both (measured).
MOMENT_MATRICES = 5
MOMENT_MATRICES_SMALL = 9
SCORE_IN_ONE_PASS = 2**22


def default_chunk_steps(n_neurons: int) -> int:
    """Steps per chunk when none is given: about 2**22 state values, and at least 8192 steps.

    Each chunk has fixed costs: Python and kernel launches (at n = 6 about as much as
    10**4 samples) and an n x n merge (at n = 1000 about as much as 150 samples), so
    chunks are long: 2**22 // n steps, at least 8192 (at most 2**25 values, 256 MiB
    per buffer, for very large n) and at most 2**19.
    """
    n = n_neurons
    return int(max(1024, min(2**19, max(2**22 // n, min(8192, 2**25 // n)))))



# Sparse stimulation: at most this fraction of the sources stimulated per sample, on more than
# SPARSE_MIN_NEURONS neurons (measured crossovers, see sparse_stimulation).
SPARSE_MAX_P = 0.1
SPARSE_MIN_NEURONS = 128


def sparse_stimulation(design, n_neurons: int) -> bool:
    """Whether a chunk's work follows the stimulated sources only (few of them per sample).

    True for ``Perturbation`` designs with ``p <= SPARSE_MAX_P`` on more than
    ``SPARSE_MIN_NEURONS`` neurons. Then a chunk's co-moment adds, for each source,
    the centred outcomes of the samples that stimulated it
    (``_kernels.moments._stimulated_moments``, O(p n^2) per sample instead of a dense
    O(n^2) product), and under ``clamp="all"`` (default streams) the drive adds only the
    stimulated sources' columns of ``A`` (``_kernels.network._clamp_all_stimulated_samples``).
    The samples are the same, bit for bit; the moments differ from the dense path's by
    rounding only. The rule depends on the design and ``n`` alone (never on the RNG mode
    or on a trajectory being written), so a run's bits do not depend on how it is stored.
    ``p = 0.5``, the tutorial's design, always takes the dense path.

    The thresholds are measured crossovers (``benchmarks/bench_engine.py --sparse``;
    CPU time of ``run()``, dense over sparse): at n = 200 to 1000 the sparse path is
    1.4-3.2x faster at p = 0.02, about 1.1x at p = 0.1 and 0.6-0.8x at p = 0.2-0.3; at
    n = 100 (n * n <= ``BLAS_PAIRS``, where the dense path folds the moments into the
    sample kernel by input pattern) it is 0.9x even at p = 0.02.
    """
    return isinstance(design, Perturbation) and design.p <= SPARSE_MAX_P and n_neurons > SPARSE_MIN_NEURONS


def check_simulation_arguments(A, n_steps, design, seed, chunk_steps, rng, progress=None, *,
                               save_trajectory=False, store=False, processes=1):
    """The checked ``(A, n_steps, design, seed, chunk_steps, rng)`` of a simulation.

    Also refuses, before anything is allocated, a run whose memory
    (:func:`memory_needed`, times ``processes`` seeds at once, with the trajectory
    buffers when ``save_trajectory`` and A's dense copy for a ``store``) exceeds
    :func:`available_memory`.
    """
    A = check_connectivity(A)
    n_steps = check_int(n_steps, "n_steps", minimum=2, maximum=MAX_STEPS)
    design = check_design(design)
    seed = check_seed(seed)
    if chunk_steps is None:
        chunk_steps = default_chunk_steps(A.shape[0])
    chunk_steps = check_int(chunk_steps, "chunk_steps", minimum=1, maximum=MAX_STEPS)
    if not isinstance(rng, str) or rng not in RNG_MODES:
        raise ValueError(f"rng must be one of {RNG_MODES}, got {rng!r}")
    check_callable(progress, "progress")
    n = A.shape[0]
    nnz = A.nnz if is_sparse(A) else int(np.count_nonzero(A))
    parts = memory_needed(n, chunk_steps, design, save_trajectory, nnz, n_steps=n_steps, store=store)
    parts.pop("connectivity")  # A is already in memory
    check_memory(processes * sum(parts.values()), f"n_neurons={n}, chunk_steps={chunk_steps}",
                 "fewer neurons, a smaller chunk_steps, or a sparse connectivity "
                 "(create_connectivity(..., sparse=True))")
    return A, n_steps, design, seed, chunk_steps, rng


def memory_needed(n, chunk_steps, design, save_trajectory=False, nnz=None, *, n_steps=None, store=False) -> dict:
    """Bytes one seed's run allocates, by part, for ``n`` neurons and chunks of ``chunk_steps`` steps.

    ``nnz`` is the number of connections of a sparse ``A`` (None: a dense ``A``, all
    ``n^2`` entries). Parts: ``connectivity`` (A itself: dense ``n^2`` float64, or a
    CSC array), ``network tables`` (the compressed columns and drive tiles the kernels
    step with), ``moments`` (``MOMENT_MATRICES`` n x n float64, more for small n), ``chunk buffers``
    (inputs and outputs, ``min(chunk_steps, n_steps) x n`` float64 each, as
    allocated, though a design that clamps every k-th step fills 1/k of them; and the 0/1
    stimulation of sparse designs), ``trajectory buffers`` (with ``save_trajectory``: two
    sets of activity/stimulation rows and the writer's cast and compressed copies),
    ``store`` (the copy of A the store encodes) and ``scratch`` (per-thread blocks).
    """
    rows = chunk_steps if n_steps is None else min(chunk_steps, n_steps)
    entries = n * n if nnz is None else nnz
    connectivity = 8 * n * n if nnz is None else 12 * nnz + 8 * (n + 1)
    parts = {
        "connectivity": connectivity,
        "network tables": 32 * entries + 16 * (n + 1),
        "moments": (MOMENT_MATRICES if n * n > SCORE_IN_ONE_PASS else MOMENT_MATRICES_SMALL) * 8 * n * n,
        "chunk buffers": 2 * 8 * rows * n + (rows * n if sparse_stimulation(design, n) else 0),
        "trajectory buffers": (2 * (16 * rows * n + rows) + 10 * rows * n) if save_trajectory else 0,
        "store": connectivity if store else 0,
        "scratch": max(1, numba.config.NUMBA_NUM_THREADS) * (5 * 8 + 4) * n * block_size(n),
    }
    return parts


def available_memory() -> int | None:
    """Bytes this process may still allocate: the least of free RAM, the cgroup's and RLIMIT_AS's headroom.

    None when nothing can be read (the check is then skipped).
    """
    limits = []
    meminfo = _read_numbers("/proc/meminfo")
    if "MemAvailable" in meminfo:
        limits.append(1024 * meminfo["MemAvailable"])
    else:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    cgroup_max, cgroup_now = _read_text("/sys/fs/cgroup/memory.max"), _read_text("/sys/fs/cgroup/memory.current")
    if cgroup_max.isdigit() and cgroup_now.isdigit():
        limits.append(int(cgroup_max) - int(cgroup_now))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft - 1024 * _read_numbers("/proc/self/status").get("VmSize", 0))
    return max(0, min(limits)) if limits else None


def _read_text(path) -> str:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return ""


def _read_numbers(path) -> dict:
    """``Name: value kB`` lines (``/proc/meminfo``, ``/proc/self/status``) as {name: value}."""
    numbers = {}
    for line in _read_text(path).splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            numbers[name] = int(words[0])
    return numbers


def format_bytes(count) -> str:
    """``count`` bytes as a short human reading (``1.5 GiB``)."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_memory(needed, what, advice) -> None:
    """Refuse with a ValueError when ``needed`` bytes exceed :func:`available_memory`."""
    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(f"{what} needs about {format_bytes(needed)} of memory but {format_bytes(available)} "
                         f"is available; use {advice}")


@dataclass
class Trajectory:
    """A simulated trajectory held in memory, time-major.

    activity : (T, n) state x_t after any clamp; stimulation : (T, n) the 0/1 stimulation
    pattern on clamped steps (0 elsewhere); clamped : (T,) which steps were clamped.
    """

    activity: np.ndarray
    stimulation: np.ndarray
    clamped: np.ndarray


class Simulation:
    """One seed's chunked simulation: its streams, carried state and reusable chunk buffers."""

    def __init__(self, A, n_steps, design, seed, chunk_steps, rng):
        self.n = A.shape[0]
        self.n_steps = n_steps
        self.design = design
        self.seed = seed
        self.chunk_steps = chunk_steps
        self.legacy = rng == "legacy"
        self.n_chunks = -(-n_steps // chunk_steps)
        self.network = compressed_columns(A)  # (col_ptr, row_idx, weights)
        if isinstance(design, Observation):
            self.clamp_mode, self.every, self.p = kernels.CLAMP_NONE, 1, 0.5
        else:
            self.every, self.p = design.every, design.p
            self.clamp_mode = kernels.CLAMP_ALL if design.clamp == "all" else kernels.CLAMP_STIMULATED
        self.block_size = block_size(self.n)
        self.sparse = sparse_stimulation(design, self.n)
        self.state = np.zeros(self.n)
        state = np.random.RandomState(seed).get_state()  # the legacy stream, see _kernels.rng
        self.mt = np.array(state[1], dtype=np.uint32)
        self.mt_pos = np.array([state[2], state[3]], dtype=np.int64)
        self.gauss = np.array([state[4]], dtype=np.float64)
        self.legacy_state = (self.mt, self.mt_pos, self.gauss)  # checkpoints restore them in place
        max_samples = min(chunk_steps, n_steps)
        self.inputs = np.empty((max_samples, self.n))
        self.outputs = np.empty((max_samples, self.n))
        # With sparse stimulation: each source's 0/1 stimulation along the chunk's samples.
        self.stimulated = np.empty((self.n, max_samples), dtype=np.uint8) if self.sparse else None
        self._drive_tiles = self._scratch = None  # made on first use by _fast_setup

    def chunk_bounds(self, chunk):
        start = chunk * self.chunk_steps
        return start, min(start + self.chunk_steps, self.n_steps)

    def _keys(self, chunk):
        words = np.random.SeedSequence(self.seed, spawn_key=(chunk,)).generate_state(2, np.uint64)
        return np.uint64(words[0]), np.uint64(words[1])

    def _samples_in(self, start, stop):
        last = min(stop, self.n_steps - 1)  # clamped steps are multiples of every in [start, last)
        if last <= start:
            return 0
        return (last + self.every - 1) // self.every - (start + self.every - 1) // self.every

    def advance(self, chunk, trajectory=None):
        """Run one chunk; return its moments. ``trajectory`` = (activity, stimulation, clamped) rows to fill.

        The clamp-all design's samples (default streams, no trajectory) come from the
        parallel block kernels: with :func:`sparse_stimulation` as stimulated sources and
        outcomes, for their moments by stimulated sources; otherwise, for n * n <=
        ``BLAS_PAIRS``, folded into moments inside the kernel, else written to the chunk
        buffers for one BLAS product. Any other case steps through
        ``_kernels.network._sequential_chunk``. All give the same samples and take their
        moments the same way (:meth:`_buffer_moments`), so the moments are bit-identical.
        """
        start, stop = self.chunk_bounds(chunk)
        key_samples, key_other = self._keys(chunk)
        n, bs = self.n, self.block_size
        blas = n * n > BLAS_PAIRS
        fast = trajectory is None and not self.legacy and self.clamp_mode == kernels.CLAMP_ALL
        if trajectory is not None and not self.legacy \
                and self.clamp_mode == kernels.CLAMP_ALL and self.every == 2:
            return self._advance_paired(start, stop, key_samples, key_other, trajectory)
        if fast:
            count = self._samples_in(start, stop)
            if count == 0:
                return CrossMoments(n, n)
            coin_words, tiles, scratch = self._fast_setup()
            if self.sparse:
                kernels._clamp_all_stimulated_samples(self.network, self.p, coin_words, key_samples, count, bs,
                                                      scratch, (self.stimulated, self.outputs))
                return self._stimulated_moments(count)
            if not blas:
                moments = (np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty((n, n)))
                kernels._clamp_all_moments(tiles, self.p, coin_words, key_samples, count, bs, scratch, moments)
                return CrossMoments.from_parts(count, *moments)
        else:
            count = self._sequential(start, stop, (self.legacy, key_samples, key_other, bs), trajectory)
        if fast:  # n * n > BLAS_PAIRS here: the samples go to the chunk buffers for one BLAS product
            kernels._clamp_all_samples(tiles, self.p, coin_words, key_samples, count, bs, scratch[:2],
                                       (self.inputs, self.outputs))
        return self._buffer_moments(count)

    def _buffer_moments(self, count):
        """Moments of the first ``count`` samples of the chunk buffers ``inputs`` and ``outputs``.

        The buffers are scratch once the moments are taken, so they may be centred in place.
        """
        if self.sparse:
            self.stimulated[:, :count] = self.inputs[:count].T != 0.0
            return self._stimulated_moments(count)
        return chunk_moments(self.inputs[:count], self.outputs[:count], self.block_size, overwrite=True)

    def _stimulated_moments(self, count):
        """Moments of ``count`` samples from the ``stimulated`` and ``outputs`` buffers, by stimulated source."""
        return stimulated_moments(self.stimulated, self.outputs, count)

    def _sequential(self, start, stop, streams, trajectory=None, first_sample=0):
        """Steps [start, stop) by ``_sequential_chunk``, samples from row ``first_sample``; returns their count."""
        write = trajectory is not None
        if not write:
            trajectory = (self.inputs[:0], self.inputs[:0], np.empty(0, np.bool_))
        return kernels._sequential_chunk(
            start, stop, self.n_steps, (self.clamp_mode, self.every, self.p), self.network, self.state,
            streams, self.legacy_state, (self.inputs[first_sample:], self.outputs[first_sample:]),
            write, trajectory,
        )

    def _fast_setup(self):
        """Per-run tables of the parallel clamp-all kernels, made on first use."""
        if self._drive_tiles is None:
            self._drive_tiles = kernels._drive_tiles(self.network, self.n, self.block_size)
        if self._scratch is None:
            fused = self.n * self.n <= BLAS_PAIRS and not self.sparse  # moments folded in by _clamp_all_moments
            self._scratch = kernels._block_scratch(self.n, self.block_size, moments=fused, sparse=self.sparse)
        coin_words = (self.n + 63) // 64 if self.p == 0.5 else self.n
        return coin_words, self._drive_tiles, self._scratch

    def _advance_paired(self, start, stop, key_samples, key_other, trajectory):
        """The tutorial's design (clamp all, every 2) with its trajectory, samples in parallel.

        Every even step is a clamp and every odd one its outcome, so the parallel sample
        kernel gives the whole trajectory; only the last step of an odd-length run (no
        clamp, no outcome) is one sequential step. Rows, state and moments equal those
        of ``_kernels.network._sequential_chunk``, which ``tests/test_kernels.py`` checks.
        """
        activity, stimulation, clamped = trajectory
        count = self._samples_in(start, stop)
        stimulation[...] = 0.0
        clamped[...] = False
        if count:
            coin_words, tiles, scratch = self._fast_setup()
            kernels._clamp_all_samples(tiles, self.p, coin_words, key_samples, count, self.block_size, scratch[:2],
                                       (self.inputs, self.outputs))
        first = start + start % 2  # the first clamped step of the chunk
        clamp_rows = np.arange(first - start, first - start + 2 * count, 2)
        if start % 2 or count == 0:
            activity[0] = self.state  # the previous chunk's last outcome, or the final unclamped step
        activity[clamp_rows] = self.inputs[:count]
        stimulation[clamp_rows] = self.inputs[:count]
        clamped[clamp_rows] = True
        outcome_rows = clamp_rows + 1
        inside = outcome_rows < stop - start
        activity[outcome_rows[inside]] = self.outputs[:count][inside]
        if count and not inside[-1]:
            self.state[:] = self.outputs[count - 1]  # x_stop, the first row of the next chunk
        last_transition = self.n_steps - 2
        if last_transition % 2 and start <= last_transition < stop:
            # An odd-length run ends with one unclamped step, drawn from the chunk's other stream.
            row = last_transition - start
            self.state[:] = activity[row]
            self._sequential(last_transition, stop, (False, key_samples, key_other, self.block_size),
                             (activity[row:], stimulation[row:], clamped[row:]), first_sample=count)
        return self._buffer_moments(count)


def simulate(A, n_steps, *, design=Perturbation(), seed=0, chunk_steps=None, rng="default"):
    """The trajectory that :func:`run` with the same arguments streams, held in memory.

    Returns a :class:`Trajectory` of ``(n_steps, n)`` arrays, for plots and checks on
    short runs; :func:`~streamcausal.run` gives the same estimate without holding it.

    Examples
    --------
    >>> import streamcausal as sc
    >>> trajectory = sc.simulate(sc.create_connectivity(6), 5)
    >>> trajectory.activity.shape, trajectory.clamped.tolist()
    ((5, 6), [True, False, True, False, False])
    """
    A, n_steps, design, seed, chunk_steps, rng = check_simulation_arguments(
        A, n_steps, design, seed, chunk_steps, rng
    )
    simulation = Simulation(A, n_steps, design, seed, chunk_steps, rng)
    n = simulation.n
    activity, stimulation = np.empty((n_steps, n)), np.empty((n_steps, n))
    clamped = np.empty(n_steps, dtype=np.bool_)
    for chunk in range(simulation.n_chunks):
        start, stop = simulation.chunk_bounds(chunk)
        simulation.advance(chunk, (activity[start:stop], stimulation[start:stop], clamped[start:stop]))
    return Trajectory(activity, stimulation, clamped)

