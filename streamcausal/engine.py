"""The streaming engine: advance a network chunk by chunk and fold samples into cross-moments.

Orientation: ``A[j, i]`` is the weight from source ``i`` onto target ``j``; the
estimates returned are ``[target, source]``. Arrays are time-major ``(T, n)``.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import kernels
from ._validation import check_connectivity, check_int, check_real, check_seed
from .designs import Observation, Perturbation, check_design
from .moments import CrossMoments
from .result import Result, score
from .store import RunStore, StoreLock, connectivity_digest, describe_store

__all__ = ["run", "simulate", "Trajectory", "default_chunk_steps"]

RNG_MODES = ("default", "legacy")
# Above this many input x output pairs the chunk's co-moment is one BLAS product; so it
# is above a quarter of it when the inputs are not all 0/1 (see chunk_moments).
_BLAS_PAIRS = 128 * 128


def default_chunk_steps(n_neurons: int) -> int:
    """Steps per chunk when none is given: about 2**22 state values, and at least 8192 steps.

    Each chunk has fixed costs: Python and kernel launches (at n = 6 about as much as
    10**4 samples) and an n x n merge (at n = 1000 about as much as 150 samples), so
    chunks are long: 2**22 // n steps, at least 8192 (at most 2**25 values, 256 MiB
    per buffer, for very large n) and at most 2**19.
    """
    n = n_neurons
    return int(max(1024, min(2**19, max(2**22 // n, min(8192, 2**25 // n)))))


def _block_size(n_neurons: int) -> int:
    # Samples per parallel block; a function of n only, so results never depend on threads.
    # A multiple of 16, so that the kernels' loops across a block's samples have no remainder.
    return int(max(16, min(4096, 2**16 // n_neurons)) // 16 * 16)


def _check_run_arguments(A, n_steps, design, seed, chunk_steps, rng, progress):
    A = check_connectivity(A)
    n_steps = check_int(n_steps, "n_steps", minimum=2)
    design = check_design(design)
    seed = check_seed(seed)
    if chunk_steps is None:
        chunk_steps = default_chunk_steps(A.shape[0])
    chunk_steps = check_int(chunk_steps, "chunk_steps", minimum=1)
    if not isinstance(rng, str) or rng not in RNG_MODES:
        raise ValueError(f"rng must be one of {RNG_MODES}, got {rng!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None, got {progress!r}")
    return A, n_steps, design, seed, chunk_steps, rng


def _compressed_columns(A):
    """A as compressed sparse columns: column i lists source i's targets and weights."""
    targets, sources = np.nonzero(A)
    order = np.lexsort((targets, sources))  # by source, then target
    sources, targets = sources[order], targets[order]
    col_ptr = np.zeros(A.shape[1] + 1, dtype=np.int64)
    np.add.at(col_ptr, sources + 1, 1)
    return np.cumsum(col_ptr), targets.astype(np.int64), A[targets, sources].copy()


@dataclass
class Trajectory:
    """A simulated trajectory held in memory, time-major.

    activity : (T, n) state x_t after any clamp; stimulation : (T, n) the 0/1 stimulation
    pattern on clamped steps (0 elsewhere); clamped : (T,) which steps were clamped.
    """

    activity: np.ndarray
    stimulation: np.ndarray
    clamped: np.ndarray


class _Simulation:
    """One seed's chunked simulation: its streams, carried state and reusable chunk buffers."""

    def __init__(self, A, n_steps, design, seed, chunk_steps, rng):
        self.n = A.shape[0]
        self.n_steps = n_steps
        self.design = design
        self.seed = seed
        self.chunk_steps = chunk_steps
        self.legacy = rng == "legacy"
        self.n_chunks = -(-n_steps // chunk_steps)
        self.col_ptr, self.row_idx, self.weights = _compressed_columns(A)
        if isinstance(design, Observation):
            self.clamp_mode, self.every, self.p = kernels.CLAMP_NONE, 1, 0.5
        else:
            self.every, self.p = design.every, design.p
            self.clamp_mode = kernels.CLAMP_ALL if design.clamp == "all" else kernels.CLAMP_STIMULATED
        self.block_size = _block_size(self.n)
        self.parallel_trajectory = True  # tests switch it off to compare with the sequential kernel
        self.state = np.zeros(self.n)
        legacy_state = np.random.RandomState(seed).get_state()
        self.mt = np.array(legacy_state[1], dtype=np.uint32)
        self.mt_pos = np.array([legacy_state[2], legacy_state[3]], dtype=np.int64)
        self.gauss = np.array([legacy_state[4]], dtype=np.float64)
        max_samples = min(chunk_steps, n_steps)
        self.inputs = np.empty((max_samples, self.n))
        self.outputs = np.empty((max_samples, self.n))

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
        parallel block kernels: for n * n <= ``_BLAS_PAIRS`` folded into moments inside
        the kernel, otherwise written to the chunk buffers for one BLAS product. Any
        other case steps through :func:`kernels._sequential_chunk`. Both give the same
        samples and take their moments the same way, so the moments are bit-identical.
        """
        start, stop = self.chunk_bounds(chunk)
        key_samples, key_other = self._keys(chunk)
        n, bs = self.n, self.block_size
        blas = n * n > _BLAS_PAIRS
        fast = trajectory is None and not self.legacy and self.clamp_mode == kernels.CLAMP_ALL
        if trajectory is not None and self.parallel_trajectory and not self.legacy \
                and self.clamp_mode == kernels.CLAMP_ALL and self.every == 2:
            return self._advance_paired(start, stop, key_samples, key_other, trajectory)
        if fast:
            count = self._samples_in(start, stop)
            if count == 0:
                return CrossMoments(n, n)
            coin_words, tiles, scratch = self._fast_setup()
            if not blas:
                parts = [np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty((n, n))]
                kernels._clamp_all_moments(self.p, coin_words, *tiles, key_samples, count, bs, *scratch, *parts)
                return CrossMoments.from_parts(count, *parts)
        else:
            write = trajectory is not None
            activity, stimulation, clamped = trajectory if write else (self.inputs[:0], self.inputs[:0], np.empty(0, np.bool_))
            count = kernels._sequential_chunk(
                start, stop, self.n_steps, self.every, self.clamp_mode, self.p,
                self.col_ptr, self.row_idx, self.weights, self.state,
                self.legacy, key_samples, key_other, bs, self.mt, self.mt_pos, self.gauss,
                self.inputs, self.outputs, write, activity, stimulation, clamped,
            )
        if fast:  # n * n > _BLAS_PAIRS here: the samples go to the chunk buffers for one BLAS product
            kernels._clamp_all_samples(self.p, coin_words, *tiles, key_samples, count, bs, *scratch[:2],
                                       self.inputs, self.outputs)
        # The buffers are scratch once the moments are taken, so they may be centred in place.
        return chunk_moments(self.inputs[:count], self.outputs[:count], bs, overwrite=True)

    def _fast_setup(self):
        """Per-run tables of the parallel clamp-all kernels, made on first use."""
        if getattr(self, "_drive_tiles", None) is None:
            self._drive_tiles = kernels._drive_tiles(self.col_ptr, self.row_idx, self.weights, self.n,
                                                     self.block_size)
        if getattr(self, "_scratch", None) is None:
            self._scratch = kernels._block_scratch(self.n, self.block_size, moments=self.n * self.n <= _BLAS_PAIRS)
        coin_words = (self.n + 63) // 64 if self.p == 0.5 else self.n
        return coin_words, self._drive_tiles, self._scratch

    def _advance_paired(self, start, stop, key_samples, key_other, trajectory):
        """The tutorial's design (clamp all, every 2) with its trajectory, samples in parallel.

        Every even step is a clamp and every odd one its outcome, so the parallel sample
        kernel gives the whole trajectory; only the last step of an odd-length run (no
        clamp, no outcome) is one sequential step. Rows, state and moments equal those
        of :func:`kernels._sequential_chunk`, which the tests check.
        """
        activity, stimulation, clamped = trajectory
        count = self._samples_in(start, stop)
        stimulation[...] = 0.0
        clamped[...] = False
        if count:
            coin_words, tiles, scratch = self._fast_setup()
            kernels._clamp_all_samples(self.p, coin_words, *tiles, key_samples, count, self.block_size,
                                       *scratch[:2], self.inputs, self.outputs)
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
            kernels._sequential_chunk(
                last_transition, stop, self.n_steps, self.every, self.clamp_mode, self.p,
                self.col_ptr, self.row_idx, self.weights, self.state,
                False, key_samples, key_other, self.block_size, self.mt, self.mt_pos, self.gauss,
                self.inputs[count:], self.outputs[count:], True,
                activity[row:], stimulation[row:], clamped[row:],
            )
        return chunk_moments(self.inputs[:count], self.outputs[:count], self.block_size, overwrite=True)


def chunk_moments(inputs, outputs, block_size, *, overwrite=False):
    """Moments of one chunk of time-major samples, inputs (k, n_in) and outputs (k, n_out).

    Up to ``_BLAS_PAIRS`` input x output pairs (a quarter of it unless the inputs are
    all 0/1), blocks of ``block_size`` samples get two-pass moments in parallel
    (:func:`kernels._block_moments`), merged in block order. Above, the columns are
    centred (:func:`kernels._centre_columns`; in place if ``overwrite``, else on
    copies) and the co-moment is one BLAS product (:func:`streamcausal._blas.product_tn`).
    Either way the bits depend on the data and ``block_size`` only.
    """
    (count, n_in), n_out = inputs.shape, outputs.shape[1]
    if count == 0:
        return CrossMoments(n_in, n_out)
    pairs = n_in * n_out
    if pairs > _BLAS_PAIRS or (4 * pairs > _BLAS_PAIRS and not kernels._is_binary(inputs, 0, count)):
        from . import _blas

        if not overwrite:
            inputs = np.array(inputs, dtype=np.float64, order="C")
            outputs = np.array(outputs, dtype=np.float64, order="C")
        mean_in, mean_out = np.empty(n_in), np.empty(n_out)
        m2_in, m2_out = np.empty(n_in), np.empty(n_out)
        kernels._centre_columns(inputs, mean_in, m2_in)  # in place: the columns are now centred
        kernels._centre_columns(outputs, mean_out, m2_out)
        comoment = _blas.product_tn(outputs, inputs, np.empty((n_out, n_in)))
        if count < 2:
            return CrossMoments.from_parts(count, mean_in, mean_out, m2_in, m2_out, comoment)
        moments = CrossMoments(n_in, n_out)  # the parts are valid by construction: skip from_parts' checks
        moments._set(count, mean_in, mean_out, m2_in, m2_out, comoment)
        return moments
    mean_in, mean_out = np.empty(n_in), np.empty(n_out)
    m2_in, m2_out = np.empty(n_in), np.empty(n_out)
    comoment = np.empty((n_out, n_in))
    kernels._blocked_moments(inputs, outputs, count, block_size, mean_in, mean_out, m2_in, m2_out, comoment)
    return CrossMoments.from_parts(count, mean_in, mean_out, m2_in, m2_out, comoment)


DTYPES = ("float32", "float64")


@dataclass
class _Plan:
    """Validated parameters of a run, shared by every seed (and shipped to Dask workers)."""

    A: np.ndarray
    n_steps: int
    design: object
    chunk_steps: int
    rng: str
    save_trajectory: bool = False
    dtype: str = "float32"
    checkpoint_seconds: float = 5.0
    target_se: float | None = None


def _snapshot(simulation, moments):
    """Everything a resume needs, as plain arrays."""
    arrays = moments.to_arrays()
    arrays.update(state=simulation.state.copy(), mt=simulation.mt.copy(),
                  mt_pos=simulation.mt_pos.copy(), gauss=simulation.gauss.copy())
    return arrays


def _restore(simulation, arrays):
    simulation.state[:] = arrays["state"]
    simulation.mt[:] = arrays["mt"]
    simulation.mt_pos[:] = arrays["mt_pos"]
    simulation.gauss[:] = arrays["gauss"]
    return CrossMoments.from_arrays(arrays)


def _convergence_point(moments, A):
    stderr = moments.stderr()
    return {
        "samples": int(moments.count),
        "score": None if A is None else _finite_or_none(score(moments.correlation(), A)),
        "mean_se": _finite_or_none(float(np.nanmean(stderr)) if np.isfinite(stderr).any() else float("nan")),
    }


def _finite_or_none(value):
    return float(value) if np.isfinite(value) else None


# Per-seed snapshots of the moments at doubling sample counts are kept (for the merged
# convergence curve) only while they stay small.
_SNAPSHOT_PAIRS = 256 * 256


@dataclass
class SeedOutcome:
    """What one seed's stream produced (also what a Dask task sends back)."""

    seed: int
    moments: CrossMoments
    steps_done: int
    seconds: float
    convergence: list
    snapshots: dict
    resumed_from_chunk: int


class _BackgroundWriter:
    """Writes trajectory chunks on one background thread, one chunk in flight at a time.

    Compressing and writing a chunk overlaps the simulation of the next one; ``wait``
    (before every checkpoint, and at the end) returns once everything handed over is
    written, and re-raises a write's error.
    """

    def __init__(self):
        self._pool = None
        self._pending = None

    def write(self, function, *args):
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamcausal-writer")
        self._pending = self._pool.submit(function, *args)

    def wait(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _run_seed(plan, seed, seed_store=None, on_chunk=None):
    """Stream one seed's chunks, resuming from and writing checkpoints when given a store.

    ``on_chunk(steps_done, moments)`` is called after every chunk.
    """
    began = time.perf_counter()
    simulation = _Simulation(plan.A, plan.n_steps, plan.design, seed, plan.chunk_steps, plan.rng)
    n = simulation.n
    keep_snapshots = n * n <= _SNAPSHOT_PAIRS
    total = CrossMoments(n, n)
    first_chunk, convergence, snapshots, stopped_at = 0, [], {}, None
    if seed_store is not None:
        checkpoint = seed_store.read_checkpoint()
        if checkpoint is not None:
            total = _restore(simulation, checkpoint["arrays"])
            first_chunk = checkpoint["next_chunk"]
            convergence = checkpoint.get("convergence", [])
            stopped_at = checkpoint.get("stopped_at")
            if keep_snapshots:
                marks = {point["samples"] for point in convergence}
                snapshots = {k: v for k, v in seed_store.read_snapshots().items() if k in marks}
    next_mark = 1
    while convergence and next_mark <= convergence[-1]["samples"]:
        next_mark *= 2
    if plan.save_trajectory:
        rows = min(plan.chunk_steps, plan.n_steps)
        buffers = (np.empty((rows, n)), np.empty((rows, n)), np.empty(rows, dtype=np.bool_))
    last_checkpoint = time.perf_counter()
    chunk = first_chunk
    writer = _BackgroundWriter()
    try:
        while stopped_at is None and chunk < simulation.n_chunks:
            start, stop = simulation.chunk_bounds(chunk)
            trajectory = None
            if plan.save_trajectory:
                trajectory = tuple(buffer[: stop - start] for buffer in buffers)
            total = total.merge(simulation.advance(chunk, trajectory))
            if trajectory is not None:
                activity, stimulation, clamped = trajectory
                writer.write(seed_store.write_trajectory, start, activity.astype(plan.dtype),
                             stimulation.astype(np.uint8), clamped.copy())
            chunk += 1
            if total.count >= next_mark:
                convergence.append(_convergence_point(total, plan.A))
                if keep_snapshots:
                    snapshots[total.count] = total.to_arrays()
                    if seed_store is not None:
                        seed_store.write_snapshot(total.count, snapshots[total.count])
                while next_mark <= total.count:
                    next_mark *= 2
            if plan.target_se is not None and total.count > 2:
                mean_se = np.nanmean(total.stderr()) if np.isfinite(total.stderr()).any() else np.inf
                if mean_se <= plan.target_se:
                    stopped_at = stop
            finished = stopped_at is not None or chunk == simulation.n_chunks
            if finished and (not convergence or convergence[-1]["samples"] != total.count):
                convergence.append(_convergence_point(total, plan.A))  # the final point, checkpointed too
            if seed_store is not None and (
                finished or time.perf_counter() - last_checkpoint >= plan.checkpoint_seconds
            ):
                writer.wait()  # the chunks a checkpoint counts are on disk before it
                seed_store.write_checkpoint(
                    chunk, _snapshot(simulation, total),
                    {"convergence": convergence, "stopped_at": stopped_at, "steps_done": stop},
                )
                last_checkpoint = time.perf_counter()
            if on_chunk is not None:
                on_chunk(stop, total)
        writer.wait()
    finally:
        writer.close()
    if not convergence or convergence[-1]["samples"] != total.count:
        convergence.append(_convergence_point(total, plan.A))
    steps_done = stopped_at if stopped_at is not None else plan.n_steps
    return SeedOutcome(seed, total, steps_done, time.perf_counter() - began, convergence,
                       snapshots, first_chunk)


def progress_info(moments, A):
    """What a progress display shows: samples so far, score (A known) and mean standard error."""
    return _convergence_point(moments, A)


def run(A, n_steps, *, design=Perturbation(), seed=0, chunk_steps=None, rng="default", progress=None,
        store=None, save_trajectory=False, dtype="float32", resume=False, overwrite=False,
        checkpoint_seconds=5.0, seeds=None, n_seeds=None, client=None, workers=None, target_se=None):
    """Simulate ``x_{t+1} = sigmoid(A x_t + eps_t)`` under ``design`` and stream its estimate.

    Nothing of size ``n_steps`` is allocated: each chunk of steps is simulated by Numba
    kernels and folded into mergeable :class:`CrossMoments`.

    Parameters
    ----------
    A : (n, n) array_like
        Connectivity, ``A[j, i]`` = weight from source ``i`` onto target ``j``.
    n_steps : int
        Length of the trajectory, ``>= 2`` (the tutorial's ``timesteps``); per seed.
    design : Perturbation or Observation
        When and how neurons are clamped. The default is the tutorial's design.
    seed : int
        In ``[0, 2**32)``. Chunk ``k`` draws from its own stream derived from ``(seed, k)``.
        With ``n_seeds`` it is the first of the seeds ``seed, seed + 1, ...``.
    chunk_steps : int, optional
        Steps per chunk; defaults to :func:`default_chunk_steps`. Results depend on it
        (it fixes the random streams) but never on threads, workers or resumes.
    rng : {"default", "legacy"}
        "legacy" reproduces ``np.random.seed(seed)`` followed by the tutorial's
        ``simulate_neurons_perturb(A, n_steps)`` (or ``simulate_neurons`` when observing)
        draw for draw.
    progress : callable, optional
        Called after every chunk (every half second per seed with several seeds) as
        ``progress(steps_done, total_steps)``, or ``progress(steps_done, total_steps, info)``
        if it takes three arguments; ``info`` has ``samples``, ``score`` and ``mean_se``.
    store : str, os.PathLike or zarr store, optional
        Zarr v3 store for checkpoints, estimates and (with ``save_trajectory``) the
        trajectory. A path or URL opens with :func:`zarr.open_group`. With several
        seeds on worker processes it must be a path or URL they can all reach.
    save_trajectory : bool
        Write ``activity``, ``stimulation`` and ``clamped`` ``(T, n)`` arrays to the store.
    dtype : {"float32", "float64"}
        Storage type of ``activity``.
    resume : bool
        Continue the run already in ``store`` (after a crash, kill or Ctrl-C), each seed
        from its own last checkpoint. Refused if any parameter differs; a finished run
        just returns its result.
    overwrite : bool
        Replace a run already in ``store`` instead of refusing.
    checkpoint_seconds : float
        Checkpoint after a chunk when at least this long has passed since the last
        checkpoint (so after every chunk when chunks are long). ``0`` checkpoints every chunk.
    seeds : sequence of int, optional
        Run these independent seeds as Dask tasks and merge them in this order.
    n_seeds : int, optional
        Shorthand for ``seeds=range(seed, seed + n_seeds)``.
    client : None, dask.distributed.Client or str
        Where seeds run: ``None`` starts a ``LocalCluster`` sized to the machine, a
        string is a scheduler address to connect to.
    workers : int, optional
        Worker processes of the ``LocalCluster`` started when ``client`` is None.
    target_se : float, optional
        Stop a seed once the mean per-edge standard error of its ``effect`` is at most
        ``target_se * sqrt(number of seeds)`` (so the merged one is about ``target_se``),
        or at ``n_steps``; ``steps_done`` in the result says when.

    Returns
    -------
    Result
        ``.correlation``, ``.effect``, ``.stderr`` are ``[target, source]``. With several
        seeds, ``.per_seed`` holds each seed's Result and ``.stderr_between_seeds`` the
        seed-to-seed standard error.
    """
    A, n_steps, design, seed, chunk_steps, rng = _check_run_arguments(
        A, n_steps, design, seed, chunk_steps, rng, progress
    )
    seed_list, several = _check_seeds(seed, seeds, n_seeds)
    if not several and (client is not None or workers is not None):
        raise ValueError("client and workers apply to several seeds; pass seeds=[...] or n_seeds=K")
    target = None if target_se is None else _check_target_se(target_se, len(seed_list))
    plan = _Plan(A, n_steps, design, chunk_steps, rng, bool(save_trajectory),
                 _check_storage(store, save_trajectory, dtype, resume, overwrite),
                 _check_checkpoint_seconds(checkpoint_seconds), target)
    parameters = _parameters(plan, seed_list)
    parameters["target_se"] = None if target_se is None else float(target_se)
    began = time.perf_counter()
    tracker = _ProgressTracker(progress, seed_list, n_steps)
    lock = StoreLock.for_store(store) if store is not None else contextlib.nullcontext()
    with lock:
        run_store = None
        if store is not None:
            run_store = RunStore.open(store, parameters, A, resume=resume, overwrite=overwrite)
        if several:
            from .parallel import run_seeds

            store_for_workers = os.fspath(store) if isinstance(store, os.PathLike) else store
            outcomes = run_seeds(plan, seed_list, store_for_workers if store is not None else None,
                                 client, workers, tracker.update if progress is not None else None)
            if progress is not None:
                for outcome in outcomes:  # task messages are throttled; end on the exact totals
                    tracker.update(outcome.seed, outcome.steps_done, outcome.convergence[-1])
        else:
            seed_store = run_store.seed(seed) if run_store is not None else None
            on_chunk = None
            if progress is not None:
                on_chunk = lambda done, moments: tracker.update(seed, done, progress_info(moments, A))  # noqa: E731
            outcomes = [_run_seed(plan, seed, seed_store, on_chunk)]
            if seed_store is not None:
                seed_store.write_estimates(outcomes[0].moments)
        result = _combine(outcomes, plan, parameters, time.perf_counter() - began, several)
        if run_store is not None:
            run_store.write_estimates(result.moments, {"convergence": result.convergence,
                                                       "steps_done": {str(o.seed): o.steps_done for o in outcomes}})
            result.parameters["store"] = describe_store(store)
    return result


class _ProgressTracker:
    """Sums the seeds' progress into one ``progress(done, total[, info])`` call."""

    def __init__(self, progress, seeds, n_steps):
        from .parallel import accepts_info

        self.progress = progress
        self.with_info = progress is not None and accepts_info(progress)
        self.done = dict.fromkeys(seeds, 0)
        self.total = n_steps * len(seeds)

    def update(self, seed, steps_done, info):
        self.done[seed] = steps_done
        done = sum(self.done.values())
        if self.with_info:
            self.progress(done, self.total, dict(info, seed=seed))
        else:
            self.progress(done, self.total)


def _check_seeds(seed, seeds, n_seeds):
    if seeds is not None and n_seeds is not None:
        raise ValueError(f"give seeds or n_seeds, not both (got seeds={seeds!r}, n_seeds={n_seeds!r})")
    if n_seeds is not None:
        n_seeds = check_int(n_seeds, "n_seeds", minimum=1)
        if seed + n_seeds - 1 > 2**32 - 1:
            raise ValueError(f"n_seeds={n_seeds} from seed={seed} runs past the largest seed 2**32 - 1")
        return list(range(seed, seed + n_seeds)), True
    if seeds is None:
        return [seed], False
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be a sequence of integers, got {seeds!r}")
    seed_list = [check_seed(value, "seeds") for value in seeds]
    if not seed_list:
        raise ValueError("seeds must not be empty, got []")
    if len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds must be distinct, got {seed_list}")
    return seed_list, True


def _check_target_se(target_se, n_seeds):
    value = check_real(target_se, "target_se")
    if value <= 0:
        raise ValueError(f"target_se must be > 0, got {value}")
    return value * float(np.sqrt(n_seeds))


def _merged_convergence(outcomes, merged_moments, A):
    """Score and mean SE of the merged moments at the marks every seed reached, then at the end."""
    if len(outcomes) == 1:
        return outcomes[0].convergence
    common = set.intersection(*(set(o.snapshots) for o in outcomes))
    points = []
    for samples in sorted(common):
        merged = CrossMoments.from_arrays(outcomes[0].snapshots[samples])
        for outcome in outcomes[1:]:
            merged = merged.merge(CrossMoments.from_arrays(outcome.snapshots[samples]))
        points.append(_convergence_point(merged, A))
    if not points or points[-1]["samples"] != merged_moments.count:
        points.append(_convergence_point(merged_moments, A))
    return points


def _combine(outcomes, plan, parameters, seconds, several):
    """The Result of a run: per-seed Results and their merge, in the seeds' order."""
    per_seed = {}
    for outcome in outcomes:
        per_seed[outcome.seed] = Result(
            outcome.moments, outcome.steps_done, outcome.seconds,
            {**parameters, "seed": outcome.seed, "resumed_from_chunk": outcome.resumed_from_chunk},
            convergence=outcome.convergence,
        )
    merged = outcomes[0].moments
    for outcome in outcomes[1:]:
        merged = merged.merge(outcome.moments)
    steps = sum(outcome.steps_done for outcome in outcomes)
    summary = dict(parameters)
    if not several:
        summary.update(seed=outcomes[0].seed, resumed_from_chunk=outcomes[0].resumed_from_chunk)
    return Result(merged, steps, seconds, summary, convergence=_merged_convergence(outcomes, merged, plan.A),
                  per_seed=per_seed)


def _check_storage(store, save_trajectory, dtype, resume, overwrite):
    for name, value in (("save_trajectory", save_trajectory), ("resume", resume), ("overwrite", overwrite)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if store is None and (save_trajectory or resume):
        flag = "save_trajectory" if save_trajectory else "resume"
        raise ValueError(f"{flag}=True needs a store, got store=None")
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True contradict each other; choose one")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        dtype = np.dtype(dtype).name if isinstance(dtype, type) and dtype in (np.float32, np.float64) else dtype
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return dtype


def _check_checkpoint_seconds(value):
    value = check_real(value, "checkpoint_seconds")
    if value < 0:
        raise ValueError(f"checkpoint_seconds must be >= 0, got {value}")
    return value


def _parameters(plan, seeds):
    """The run's parameters as stored and compared on resume (JSON-friendly)."""
    return {
        "n_neurons": int(plan.A.shape[0]),
        "connectivity_sha256": connectivity_digest(plan.A),
        "design": plan.design.to_dict(),
        "seeds": [int(s) for s in seeds],
        "rng": plan.rng,
        "chunk_steps": plan.chunk_steps,
        "n_steps": plan.n_steps,
        "dtype": plan.dtype,
        "save_trajectory": plan.save_trajectory,
        "target_se": plan.target_se,
        "package_version": _package_version(),
    }


def _package_version():
    from . import __version__

    return __version__


def simulate(A, n_steps, *, design=Perturbation(), seed=0, chunk_steps=None, rng="default"):
    """The trajectory that :func:`run` with the same arguments streams, held in memory.

    Returns a :class:`Trajectory` of ``(n_steps, n)`` arrays, for plots and checks on
    short runs; :func:`run` gives the same estimate without holding it.
    """
    A, n_steps, design, seed, chunk_steps, rng = _check_run_arguments(
        A, n_steps, design, seed, chunk_steps, rng, None
    )
    simulation = _Simulation(A, n_steps, design, seed, chunk_steps, rng)
    n = simulation.n
    activity, stimulation = np.empty((n_steps, n)), np.empty((n_steps, n))
    clamped = np.empty(n_steps, dtype=np.bool_)
    for chunk in range(simulation.n_chunks):
        start, stop = simulation.chunk_bounds(chunk)
        simulation.advance(chunk, (activity[start:stop], stimulation[start:stop], clamped[start:stop]))
    return Trajectory(activity, stimulation, clamped)
