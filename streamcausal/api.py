"""``run()``: check and plan, then stream one seed here or many on Dask, then combine them into a Result.

:class:`Store` says where and how a run is kept; :class:`Seeds` says which seeds run
and where. Orientation: ``A[j, i]`` is the weight from source ``i`` onto target ``j``;
every estimate is ``[target, source]``.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_flag, check_int, check_real, check_seed, describe
from ._version import __version__
from .designs import Perturbation
from .engine import DTYPES, Plan, check_simulation_arguments, run_seed
from .moments import CrossMoments
from .network import connectivity_digest
from .progress import Progress
from .result import Result, convergence_point

__all__ = ["STORE_MODES", "Seeds", "Store", "run"]

# zarr's mode letters, read for a run: what to do with a run already in the store.
STORE_MODES = {
    "w-": "create a new run; refuse a store that already holds one",
    "w": "create a new run, replacing any run already in the store",
    "r+": "continue the run in the store (it must exist)",
    "a": "continue the run in the store if there is one, else create it",
}


@dataclass(frozen=True)
class Store:
    """Where and how a run is kept: a Zarr v3 group, opened in one of zarr's modes.

    Parameters
    ----------
    location : str, os.PathLike, zarr store or zarr.Group
        A path or URL (opened with :func:`zarr.open_group`), a store object, or a group
        (the run goes into that group). With several seeds on worker processes it must
        be one they can all reach: a path, URL or on-disk store, not an in-memory store
        (refused).
    mode : {"w-", "w", "r+", "a"}
        ``"w-"`` (default) creates a new run and refuses a store that holds one; ``"w"``
        replaces it; ``"r+"`` continues it after a crash, kill or Ctrl-C (refused if any
        parameter differs, ``target_se`` included; a finished run just returns its
        result); ``"a"`` continues it if there is one and creates it otherwise. A store
        whose creation was interrupted holds no run: every mode replaces it (``"r+"``
        only when the parameters agree).
    save_trajectory : bool
        Write ``activity``, ``stimulation`` and ``clamped`` ``(T, n)`` arrays.
    dtype : {"float32", "float64", "float16"}
        Storage type of activity. float16 keeps 11 significant bits (relative error <=
        2^-11, about 3 digits) of values in (0, 1); the run's own estimate is
        unaffected, estimates made later from the stored trajectory see the rounding.
    checkpoint_seconds : float
        Checkpoint after a chunk once at least this long has passed since the last one
        (so after every chunk when chunks are long); ``0`` checkpoints every chunk. It
        is per session: not stored, and a resume uses the value it is given (it changes
        only how much a kill loses, never the result).

    Examples
    --------
    >>> Store("run.zarr", mode="a", save_trajectory=True).mode
    'a'
    """

    location: object
    mode: str = "w-"
    save_trajectory: bool = False
    dtype: str = "float32"
    checkpoint_seconds: float = 5.0

    def __post_init__(self):
        if self.location is None or isinstance(self.location, bool):
            raise TypeError(f"location must be a path, URL or zarr store, got {describe(self.location)}")
        if isinstance(self.location, os.PathLike):
            object.__setattr__(self, "location", os.fspath(self.location))
        if not isinstance(self.mode, str) or self.mode not in STORE_MODES:
            raise ValueError(f"mode must be one of {list(STORE_MODES)}, got {self.mode!r}")
        check_flag(self.save_trajectory, "save_trajectory")
        dtype = self.dtype
        if isinstance(dtype, type) and dtype in (np.float16, np.float32, np.float64):
            dtype = np.dtype(dtype).name
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        object.__setattr__(self, "dtype", dtype)
        seconds = check_real(self.checkpoint_seconds, "checkpoint_seconds")
        if seconds < 0:
            raise ValueError(f"checkpoint_seconds must be >= 0, got {seconds}")
        object.__setattr__(self, "checkpoint_seconds", seconds)


@dataclass(frozen=True)
class Seeds:
    """Several independent seeds, run as Dask tasks and merged in the order given.

    Parameters
    ----------
    seeds : int or sequence of int
        ``K`` means the seeds ``0, 1, ..., K - 1``; a sequence (a ``range`` too) lists them.
        Each is in ``[0, 2**32)``, all distinct.
    client : None, dask.distributed.Client or str
        Where they run: ``None`` starts a ``LocalCluster`` sized to this machine, a
        string is a scheduler address to connect to.
    workers : int, optional
        Worker processes of the ``LocalCluster`` started when ``client`` is None
        (default: one per core).

    Examples
    --------
    >>> Seeds(3).seeds, Seeds(range(10, 12)).seeds
    ((0, 1, 2), (10, 11))
    """

    seeds: tuple = field()
    client: object = None
    workers: int | None = None

    def __post_init__(self):
        value = self.seeds
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            count = check_int(value, "seeds", minimum=1, maximum=2**32)
            value = range(count)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"seeds must be a count or a sequence of integers, got {describe(value)}")
        seeds = tuple(check_seed(item, "seeds") for item in value)
        if not seeds:
            raise ValueError("seeds must not be empty, got []")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {describe(list(seeds))}")
        object.__setattr__(self, "seeds", seeds)
        if self.workers is not None:
            if self.client is not None:
                raise ValueError("workers applies only when streamcausal starts the cluster (client=None), "
                                 f"got workers={self.workers}")
            object.__setattr__(self, "workers", check_int(self.workers, "workers", minimum=1))


def run(A, n_steps, *, design=Perturbation(), seed=0, chunk_steps=None, rng="default", store=None,
        target_se=None, progress=None) -> Result:
    """Simulate ``x_{t+1} = sigmoid(A x_t + eps_t)`` under ``design`` and stream its estimate.

    Nothing of size ``n_steps`` is allocated: each chunk of steps is simulated by Numba
    kernels and folded into mergeable :class:`~streamcausal.moments.CrossMoments`.

    Parameters
    ----------
    A : (n, n) array_like or scipy.sparse matrix/array
        Connectivity, ``A[j, i]`` = weight from source ``i`` onto target ``j``. A SciPy
        sparse ``A`` (any format) is checked and used without densifying (see
        :func:`~streamcausal.create_connectivity`, sparse above 1000 neurons); a run
        store keeps it as ``connectivity_sparse`` (CSC), a dense ``A`` as ``connectivity``.
    n_steps : int
        Length of the trajectory, ``>= 2`` (the tutorial's ``timesteps``); per seed.
    design : Perturbation or Observation
        When and how neurons are clamped. The default is the tutorial's design.
    seed : int or Seeds
        An int in ``[0, 2**32)`` runs that one seed in this process; chunk ``k`` draws
        from its own stream derived from ``(seed, k)``. A :class:`Seeds` runs several
        seeds as Dask tasks and merges them in its order.
    chunk_steps : int, optional
        Steps per chunk; defaults to :func:`~streamcausal.engine.default_chunk_steps`.
        Results depend on it (it fixes the random streams) but never on threads,
        workers or resumes.
    rng : {"default", "legacy"}
        "legacy" reproduces ``np.random.seed(seed)`` followed by the tutorial's
        ``simulate_neurons_perturb(A, n_steps)`` (or ``simulate_neurons`` when observing)
        draw for draw.
    store : None, path, zarr store, zarr.Group or Store
        Where checkpoints, estimates and (optionally) the trajectory go. A path, store
        object or group means ``Store(location)``: a new run.
    target_se : float, optional
        Stop a seed once the mean per-edge standard error of its ``effect`` is at most
        ``target_se * sqrt(number of seeds)`` (so the merged one is about ``target_se``),
        or at ``n_steps``; ``n_steps`` in each seed's result says when. A stored run
        keeps it: resuming with another ``target_se`` is refused like any other parameter.
    progress : callable, optional
        Called with a :class:`~streamcausal.progress.Progress` after every chunk (every
        half second per seed with several seeds).

    Returns
    -------
    Result
        ``.correlation``, ``.effect``, ``.stderr`` are ``[target, source]``. ``.per_seed``
        holds each seed's Result and, with several seeds, ``.stderr_between_seeds`` the
        seed-to-seed standard error.

    Examples
    --------
    >>> import streamcausal as sc
    >>> A = sc.create_connectivity(6)
    >>> result = sc.run(A, 200_000, seed=1)
    >>> result.n_samples, result.score(A) > 0.9
    (100000, True)
    """
    seeds = seed if isinstance(seed, Seeds) else None
    if store is not None and not isinstance(store, Store):
        store = Store(store)
    A, n_steps, design, first_seed, chunk_steps, rng = check_simulation_arguments(
        A, n_steps, design, seeds.seeds[0] if seeds is not None else seed, chunk_steps, rng, progress,
        save_trajectory=store is not None and store.save_trajectory, store=store is not None,
    )
    seed_list = list(seeds.seeds) if seeds is not None else [first_seed]
    if store is not None and seeds is not None:
        from .io.store import shared_between_processes

        if not shared_between_processes(store.location):
            # Each worker process would write into its own copy of the memory store, then lose it.
            raise ValueError(f"store must be reachable by Dask worker processes with several seeds; an in-memory "
                             f"store is not (got {describe(store.location)}): use a path or URL, or one seed")
    target = None if target_se is None else _check_target_se(target_se, len(seed_list))
    plan = Plan(A, n_steps, design, chunk_steps, rng,
                save_trajectory=store is not None and store.save_trajectory,
                dtype=store.dtype if store is not None else "float32",
                checkpoint_seconds=store.checkpoint_seconds if store is not None else 5.0,
                target_se=target)
    parameters = _parameters(plan, seed_list, target_se)
    began = time.perf_counter()
    tracker = _ProgressTracker(progress, seed_list, n_steps) if progress is not None else None
    if store is not None:  # zarr is imported only for a run that has a store
        from .io.store import RunStore, StoreLock, describe_store

        lock = StoreLock.for_store(store.location)
    else:
        lock = contextlib.nullcontext()
    with lock:
        run_store = None
        if store is not None:  # a sparse A is kept as connectivity_sparse, without densifying it
            run_store = RunStore.open(store.location, parameters, A, mode=store.mode)
        if seeds is not None:
            from .distributed import run_seeds

            outcomes = run_seeds(plan, seeds, store.location if store is not None else None,
                                 tracker.update if tracker is not None else None)
            if tracker is not None:
                for outcome in outcomes:  # task messages are throttled; end on the exact totals
                    tracker.update(outcome.seed, outcome.steps_done, outcome.convergence[-1])
        else:
            seed_store = run_store.seed(first_seed) if run_store is not None else None
            on_chunk = None
            if tracker is not None:
                def on_chunk(done, moments):
                    tracker.update(first_seed, done, convergence_point(moments, A))
            outcomes = [run_seed(plan, first_seed, seed_store, on_chunk)]
        result = _combine(outcomes, plan, parameters, time.perf_counter() - began, several=seeds is not None)
        if run_store is not None:
            run_store.write_estimates(result.moments, {"convergence": result.convergence,
                                                       "steps_done": {str(o.seed): o.steps_done for o in outcomes}})
            result.parameters["store"] = describe_store(store.location)
    return result


class _ProgressTracker:
    """Sums the seeds' progress into one :class:`Progress` event per report."""

    def __init__(self, progress, seeds, n_steps):
        self.progress = progress
        self.done = dict.fromkeys(seeds, 0)
        self.total = n_steps * len(seeds)

    def update(self, seed, steps_done, point):
        self.done[seed] = steps_done
        self.progress(Progress(sum(self.done.values()), self.total, seed, point["samples"],
                               point["score"], point["mean_se"]))


def _check_target_se(target_se, n_seeds):
    value = check_real(target_se, "target_se")
    if value <= 0:
        raise ValueError(f"target_se must be > 0, got {value}")
    return value * float(np.sqrt(n_seeds))


def merge_in_order(moments_list) -> CrossMoments:
    """The merge of ``moments_list`` in its order (the order fixes the bits)."""
    merged = moments_list[0]
    for moments in moments_list[1:]:
        merged = merged.merge(moments)
    return merged


def _merged_convergence(outcomes, merged_moments, A):
    """Score and mean SE of the merged moments at the marks every seed reached, then at the end."""
    if len(outcomes) == 1:
        return outcomes[0].convergence
    common = set.intersection(*(set(o.snapshots) for o in outcomes))
    points = [
        convergence_point(merge_in_order([CrossMoments.from_arrays(o.snapshots[samples]) for o in outcomes]), A)
        for samples in sorted(common)
    ]
    if not points or points[-1]["samples"] != merged_moments.count:
        points.append(convergence_point(merged_moments, A))
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
    merged = merge_in_order([outcome.moments for outcome in outcomes])
    steps = sum(outcome.steps_done for outcome in outcomes)
    summary = dict(parameters)
    if not several:
        summary.update(seed=outcomes[0].seed, resumed_from_chunk=outcomes[0].resumed_from_chunk)
    return Result(merged, steps, seconds, summary, convergence=_merged_convergence(outcomes, merged, plan.A),
                  per_seed=per_seed)


def _parameters(plan, seeds, target_se):
    """The run's parameters as stored and compared on resume (JSON-friendly); ``target_se`` as the user gave it."""
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
        "target_se": None if target_se is None else float(target_se),
        "package_version": __version__,
    }
