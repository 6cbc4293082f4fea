"""What a store costs a run: run() with no store, with checkpoints only, and saving the trajectory.

Side by side in one process on the same network and seed, after a warm-up; medians of
repeats. The target for the tutorial's design at n=100 is at most 1.5x slower with
``save_trajectory=True``. Prints a table, writes JSON.

    python benchmarks/bench_store.py --json benchmarks/results/store.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import streamcausal as sc


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--steps", type=float, default=2e6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    steps = int(args.steps)
    A = sc.create_connectivity(args.neurons)
    workdir = tempfile.mkdtemp(prefix="bench-store-")
    contenders = {
        "no store": {},
        "store, checkpoints only": {"store": True},
        "store + trajectory float32": {"store": True, "save_trajectory": True, "dtype": "float32"},
        "store + trajectory float64": {"store": True, "save_trajectory": True, "dtype": "float64"},
    }
    sc.run(A, 20_000, store=sc.Store(os.path.join(workdir, "warm.zarr"), save_trajectory=True))  # compile
    times = {label: [] for label in contenders}
    try:
        for repeat in range(args.repeats):
            for label, options in contenders.items():
                options = dict(options)
                if options.pop("store", False):
                    path = os.path.join(workdir, f"run{repeat}.zarr")
                    shutil.rmtree(path, ignore_errors=True)
                    options = {"store": sc.Store(path, **options)}
                began = time.perf_counter()
                sc.run(A, steps, seed=repeat, **options)
                times[label].append(time.perf_counter() - began)
                if "store" in options:
                    shutil.rmtree(options["store"].location, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = statistics.median(times["no store"])
    rows = [{"contender": label, "seconds": statistics.median(values),
             "steps_per_second": steps / statistics.median(values),
             "slowdown": statistics.median(values) / base} for label, values in times.items()]
    print(f"run() at n={args.neurons}, {steps:,} steps, tutorial design, {os.cpu_count()} cores; median of {args.repeats}")
    print(f"{'contender':30s} {'seconds':>8s} {'steps/s':>12s} {'vs no store':>12s}")
    for row in rows:
        print(f"{row['contender']:30s} {row['seconds']:8.2f} {row['steps_per_second']:12,.0f} {row['slowdown']:11.2f}x")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"machine": {"cores": os.cpu_count(), "processor": platform.processor()},
                       "neurons": args.neurons, "steps": steps, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
