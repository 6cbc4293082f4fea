"""Seeds across Dask workers: the same total work on 1 worker and on W workers, side by side.

For each design, K seeds of T steps run on a LocalCluster of one worker process and
then of W worker processes (each worker with cores // W Numba/BLAS threads, as
``streamcausal.run`` sizes its own cluster). The merged moments must be bit-identical;
the table reports the median wall time of the repeats, steps/s and the speed-up. Prints
a table, writes JSON (with every repeat's time and the load average before and after).
The defaults are the README's table: n=100, 4 seeds x 10**6 steps, 1 worker vs one per
core, median of 5.

    python benchmarks/bench_parallel.py --json benchmarks/results/parallel.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
from distributed import Client, LocalCluster

import streamcausal as sc
from streamcausal.distributed import _thread_environment


def timed_run(A, steps, seeds, design, workers, threads, repeats, chunk_steps):
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0", env=_thread_environment(threads)) as cluster:
        with Client(cluster) as client:
            sc.run(A, 4 * chunk_steps, seed=sc.Seeds(workers, client=client), design=design,
                   chunk_steps=chunk_steps)  # compile / load the Numba cache on every worker
            times, result = [], None
            for _ in range(repeats):
                began = time.perf_counter()
                result = sc.run(A, steps, seed=sc.Seeds(seeds, client=client), design=design, chunk_steps=chunk_steps)
                times.append(time.perf_counter() - began)
    return times, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--steps", type=float, default=1e6, help="steps per seed")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    steps = int(args.steps)
    A = sc.create_connectivity(args.neurons)
    chunk_steps = sc.engine.default_chunk_steps(args.neurons)
    designs = {
        "stimulated (sequential within a seed)": sc.Perturbation(clamp="stimulated"),
        "observation (sequential within a seed)": sc.Observation(),
        "tutorial clamp-all (parallel within a seed)": sc.Perturbation(),
    }
    rows = []
    load_before = os.getloadavg()
    for label, design in designs.items():
        one_times, one = timed_run(A, steps, list(range(args.seeds)), design, 1, cores, args.repeats, chunk_steps)
        many_times, many = timed_run(A, steps, list(range(args.seeds)), design, args.workers,
                                     max(1, cores // args.workers), args.repeats, chunk_steps)
        one_time, many_time = statistics.median(one_times), statistics.median(many_times)
        identical = all(np.array_equal(a, b) for a, b in zip(one.moments.to_arrays().values(),
                                                              many.moments.to_arrays().values()))
        rows.append({
            "design": label, "seeds": args.seeds, "steps_per_seed": steps,
            "one_worker_seconds": one_time, "workers": args.workers, "many_workers_seconds": many_time,
            "one_worker_steps_per_second": args.seeds * steps / one_time,
            "many_workers_steps_per_second": args.seeds * steps / many_time,
            "speedup": one_time / many_time, "bit_identical": identical,
            "one_worker_repeats": one_times, "many_workers_repeats": many_times,
        })
    header = f"{'design':46s} {'1 worker s':>10s} {args.workers:>2d} workers s {'speed-up':>8s} {'identical':>9s}"
    print(f"n={args.neurons}, {args.seeds} seeds x {steps:,} steps, {cores} cores "
          f"({platform.processor() or platform.machine()}), median of {args.repeats}, "
          f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(header)
    for row in rows:
        print(f"{row['design']:46s} {row['one_worker_seconds']:10.2f} {row['many_workers_seconds']:13.2f} "
              f"{row['speedup']:8.2f} {str(row['bit_identical']):>9s}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"machine": {"cores": cores, "processor": platform.processor(),
                                   "python": platform.python_version()},
                       "neurons": args.neurons, "repeats": args.repeats, "chunk_steps": chunk_steps,
                       "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
                       "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
