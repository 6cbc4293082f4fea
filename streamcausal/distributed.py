"""Dask: independent seeds as tasks on workers, their moments merged in a fixed order.

Each seed is one task that streams its own chunks (and writes its own ``seed_<s>``
part of the store). Results are gathered and merged in the order the seeds were
given, so the merged estimate is bit-identical whatever the number of workers.
A task whose worker dies is re-run by Dask; with a store it resumes from that
seed's last checkpoint, and either way it produces the same moments.

Before workers on this machine run a seed, this process compiles the run's kernels
(:func:`compile_kernels`), while the LocalCluster starts: Numba writes them to its
on-disk cache and every worker loads them from there, instead of each worker
compiling the same kernels at the same time on the same cores.

A LocalCluster started here keeps Dask's own logs quiet (its workers' "Compute Failed"
reports included): a failed task's exception reaches the caller once, with its own type
and message. Its worker processes re-import the caller's ``__main__`` module, so a
script must start runs of several seeds under ``if __name__ == "__main__":``; without
that guard the run stops with one error saying so (:data:`MAIN_GUARD_ADVICE`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
import uuid
from concurrent.futures import Future

import numpy as np

from ._validation import check_int, is_sparse
from .engine import run_seed
from .engine.simulation import Simulation, check_memory, memory_needed
from .io.store import RunStore
from .result import convergence_point

__all__ = ["MAIN_GUARD_ADVICE", "close_client", "compile_kernels", "open_client", "run_seeds"]

MAIN_GUARD_ADVICE = (
    "the Dask workers of run(..., seed=Seeds(...)) could not start; each worker process re-imports "
    "the script that started it, so a script must call run() under 'if __name__ == \"__main__\":'"
)
# Exit status of a worker process that stopped itself while re-importing an unguarded script.
_CHILD_EXIT = 3

_PROGRESS_INTERVAL = 0.5  # seconds between progress messages from a task


def _thread_environment(threads: int) -> dict:
    value = str(threads)
    return {"NUMBA_NUM_THREADS": value, "OMP_NUM_THREADS": value,
            "OPENBLAS_NUM_THREADS": value, "MKL_NUM_THREADS": value}


def open_client(client=None, workers=None):
    """Return ``(client, owned)`` for ``client``: None, a ``Client``, or a scheduler address.

    ``None`` starts a ``LocalCluster`` of ``workers`` processes (default: one per core),
    each with one task thread and ``cores // workers`` Numba/BLAS threads, so that
    workers x threads never oversubscribe the cores. ``owned`` says whether the caller
    must close it.
    """
    import distributed

    if isinstance(client, distributed.Client):
        if workers is not None:
            raise ValueError(f"workers applies only when streamcausal starts the cluster (client=None), got workers={workers}")
        return client, False
    if isinstance(client, str):
        if workers is not None:
            raise ValueError(f"workers applies only when streamcausal starts the cluster (client=None), got workers={workers}")
        try:
            return distributed.Client(client, timeout="10s"), True
        except (OSError, TimeoutError) as error:
            raise ValueError(f"client: cannot connect to the scheduler at {client!r}: {error}") from None
    if client is not None:
        raise TypeError(f"client must be None, a dask.distributed.Client or a scheduler address, got {client!r}")
    cores = os.cpu_count() or 1
    workers = cores if workers is None else check_int(workers, "workers", minimum=1)
    threads = max(1, cores // workers)
    if _importing_main_in_a_child():
        # A spawned process re-imports __main__ before it runs its own work; a script that
        # calls run() unguarded would start a cluster from every worker. Stop quietly: the
        # parent, whose workers then fail to start, raises the one error that says why.
        raise SystemExit(_CHILD_EXIT)
    try:
        # silence_logs quiets the scheduler's and nannies' logs here and the workers' there
        # (their "Compute Failed" reports): a task's error reaches the caller once, by gather.
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
            env=_thread_environment(threads), silence_logs=logging.CRITICAL,
        )
    except RuntimeError as error:
        if "failed to start" not in str(error):
            raise
        raise RuntimeError(f"{MAIN_GUARD_ADVICE} ({error})") from None
    return distributed.Client(cluster), True


def _importing_main_in_a_child() -> bool:
    """Whether this is a spawned process still importing the parent's ``__main__`` (as ``multiprocessing`` checks)."""
    # multiprocessing.spawn sets _inheriting while it re-imports __main__ (parent_process() is set only after).
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def close_client(client):
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def compile_kernels(plan) -> None:
    """Compile (or load from Numba's cache) the kernels that ``plan``'s seeds run, in this process.

    One chunk of ``2 * every + 1`` steps under the plan's connectivity, design, rng and
    trajectory setting takes the same code path as the seeds (it depends on n, the
    design, the rng and the trajectory only) and calls each kernel with the same
    argument types (they never depend on sizes), so Numba's cache then holds every
    kernel a seed needs. Takes milliseconds on a warm cache.
    """
    n_steps = 2 * getattr(plan.design, "every", 1) + 1  # two samples, and an odd-length run's last step
    simulation = Simulation(plan.A, n_steps, plan.design, 0, n_steps, plan.rng)
    trajectory = None
    if plan.save_trajectory:
        n = simulation.n
        trajectory = (np.empty((n_steps, n)), np.empty((n_steps, n)), np.empty(n_steps, dtype=np.bool_))
    simulation.advance(0, trajectory)


def _workers_share_cache(client) -> bool:
    """Whether the workers run on this machine with this environment (Numba's cache directory included)."""
    if client is None:
        return True  # open_client starts a LocalCluster
    import distributed

    return isinstance(client, distributed.Client) and isinstance(client.cluster, distributed.LocalCluster)


def _in_background(function, *args) -> Future:
    """``function(*args)`` on a daemon thread (Ctrl-C never waits for it); its outcome as a Future."""
    future = Future()

    def target():
        try:
            future.set_result(function(*args))
        except BaseException as error:  # handed to the caller, which re-raises it
            future.set_exception(error)

    threading.Thread(target=target, name="streamcausal-compile", daemon=True).start()
    return future


def _seed_task(plan, seed, store, topic):
    """Run one seed on a worker; the unit of work Dask schedules and, if its worker dies, re-runs."""
    seed_store = RunStore.reopen(store).seed(seed) if store is not None else None
    return run_seed(plan, seed, seed_store, _publisher(topic, seed, plan.A))


def _publisher(topic, seed, A):
    if topic is None:
        return None
    from distributed import get_worker

    worker = get_worker()
    last = [0.0]

    def publish(steps_done, moments):
        now = time.monotonic()
        if now - last[0] >= _PROGRESS_INTERVAL:
            last[0] = now
            worker.log_event(topic, (seed, steps_done, convergence_point(moments, A)))

    return publish


def _check_local_memory(plan, seeds, stored) -> None:
    """Refuse, before the cluster starts, seeds whose workers together would exceed this machine's memory."""
    n = plan.A.shape[0]
    nnz = plan.A.nnz if is_sparse(plan.A) else int(np.count_nonzero(plan.A))
    workers = min(seeds.workers or os.cpu_count() or 1, len(seeds.seeds))
    parts = memory_needed(n, plan.chunk_steps, plan.design, plan.save_trajectory, nnz, n_steps=plan.n_steps,
                          store=stored)
    # Every worker holds a copy of A besides its seed's buffers and moments.
    check_memory(workers * sum(parts.values()), f"{workers} workers with n_neurons={n}, chunk_steps={plan.chunk_steps}",
                 "fewer workers (Seeds(..., workers=...)), fewer neurons or a smaller chunk_steps")


def run_seeds(plan, seeds, store, on_progress=None):
    """Run every seed of ``seeds`` (a :class:`~streamcausal.api.Seeds`) as a Dask task.

    Returns their outcomes in the order of ``seeds.seeds``. ``store`` is the run
    store's path or URL (None for none); ``on_progress(seed, steps_done, point)`` is
    called in this thread as tasks report.

    When the workers share this machine's Numba cache, the kernels are compiled here
    first (:func:`compile_kernels`; on a thread while a LocalCluster starts), once.
    """
    if seeds.client is None:  # a LocalCluster here: its workers run seeds side by side on this machine
        _check_local_memory(plan, seeds, store is not None)
    compiled = _in_background(compile_kernels, plan) if _workers_share_cache(seeds.client) else None
    client, owned = open_client(seeds.client, seeds.workers)
    topic = f"streamcausal-progress-{uuid.uuid4().hex}" if on_progress is not None else None
    futures = []
    messages = queue.SimpleQueue()
    try:
        if compiled is not None:
            compiled.result()  # no task starts before the cache holds the kernels
        if topic is not None:
            client.subscribe_topic(topic, lambda event: messages.put(event[1]))
        futures = [
            client.submit(_seed_task, plan, seed, store, topic, pure=False,
                          key=f"streamcausal-seed-{seed}-{uuid.uuid4().hex[:8]}")
            for seed in seeds.seeds
        ]
        while topic is not None and not all(future.done() for future in futures):
            try:
                seed, steps_done, info = messages.get(timeout=0.2)
            except queue.Empty:
                continue
            on_progress(seed, steps_done, info)  # in this thread, not the client's event loop
        return client.gather(futures)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        if topic is not None:
            try:
                client.unsubscribe_topic(topic)
            except Exception:  # the client may already be closing
                pass
        if owned:
            close_client(client)

