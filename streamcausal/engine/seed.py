"""One seed's stream: chunks in order, checkpoints and trajectory rows to its store, convergence marks.

:func:`run_seed` is the unit of work, in this process or as a Dask task. It resumes
from the seed's last checkpoint when its store holds one, and produces the same
moments either way.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..moments import CrossMoments
from ..result import convergence_point
from .simulation import Simulation

__all__ = ["Plan", "SeedOutcome", "run_seed"]

# Storage types of a saved activity. float16 keeps 11 significant bits (relative error
# <= 2**-11, about 3 decimal digits) of values in (0, 1): half the bytes of float32.
DTYPES = ("float16", "float32", "float64")


@dataclass
class Plan:
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

    Casting, compressing, writing and flushing a chunk overlap the simulation of the next one; ``wait``
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


def run_seed(plan: Plan, seed: int, seed_store=None, on_chunk=None) -> SeedOutcome:
    """Stream one seed's chunks, resuming from and writing checkpoints when given a store.

    ``seed_store`` is that seed's :class:`~streamcausal.io.store.SeedStore` (or None);
    ``on_chunk(steps_done, moments)`` is called after every chunk. At the end the
    seed's estimates are written to its store.
    """
    began = time.perf_counter()
    simulation = Simulation(plan.A, plan.n_steps, plan.design, seed, plan.chunk_steps, plan.rng)
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
        # Two sets of chunk buffers, used in turn: the writer thread casts, compresses and
        # flushes one chunk's rows while the simulation fills the other set. A set is reused
        # two chunks later, after ``writer.write`` has waited for its write.
        rows = min(plan.chunk_steps, plan.n_steps)
        buffer_sets = [(np.empty((rows, n)), np.empty((rows, n)), np.empty(rows, dtype=np.bool_))
                       for _ in range(2)]
    last_checkpoint = time.perf_counter()
    chunk = first_chunk
    writer = _BackgroundWriter()
    try:
        while stopped_at is None and chunk < simulation.n_chunks:
            start, stop = simulation.chunk_bounds(chunk)
            trajectory = None
            if plan.save_trajectory:
                trajectory = tuple(buffer[: stop - start] for buffer in buffer_sets[chunk % 2])
            total += simulation.advance(chunk, trajectory)  # in place: one n x n array less, same bits
            if trajectory is not None:
                writer.write(seed_store.write_trajectory, start, *trajectory)
            chunk += 1
            if total.count >= next_mark:
                convergence.append(convergence_point(total, plan.A))
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
                convergence.append(convergence_point(total, plan.A))  # the final point, checkpointed too
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
        convergence.append(convergence_point(total, plan.A))
    steps_done = stopped_at if stopped_at is not None else plan.n_steps
    if seed_store is not None:
        seed_store.write_estimates(total)
    return SeedOutcome(seed, total, steps_done, time.perf_counter() - began, convergence,
                       snapshots, first_chunk)


