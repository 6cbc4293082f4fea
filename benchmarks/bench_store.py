"""What a store costs a run: run() with no store, with checkpoints, saving the trajectory, and zarr writing alone.

Side by side in one process on the same network, after a warm-up; medians of repeats,
the contenders interleaved within each repeat so that load from other processes falls
on all of them alike. Contenders (tutorial design, n=100, 2*10**6 steps by default):

- ``no store``: run() alone;
- ``checkpoints only``: a store checkpointed every ``--checkpoint-seconds`` (the count is
  checked to be more than one);
- ``trajectory float32`` / ``float16``: ``save_trajectory=True``;
- ``simulation + trajectory buffers``: the engine's part of those runs, no store (the
  tutorial design's trajectory path, which also scatters the samples into rows);
- ``zarr alone float32`` / ``float16``: the same arrays (one real chunk of the same run,
  already cast, written at every chunk position) with zarr into arrays made by the run
  store's own ``create_trajectory`` (same chunks, codecs), each chunk's files flushed
  (``fsync``) as the run does; ``(no fsync)`` rows leave the flush out.

The target: ``save_trajectory`` costs at most 1.15x the larger of ``no store`` and
``zarr alone`` (with fsync, the same work). Also measured: bytes per step on disk
(activity, stimulation, clamped) at several n, and what float16 activity does to the
estimate (estimate_store on the float16 trajectory against the run's float64 moments).
Prints tables, writes JSON.

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
from pathlib import Path

import numpy as np
import zarr

import streamcausal as sc
from streamcausal.engine import Simulation
from streamcausal.io import store as run_store


def _files_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and p.name != "zarr.json")


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    times = os.times()
    return times.user + times.system


def zarr_alone(directory, chunk, n_steps, chunk_steps, dtype, fsync):
    """Write ``chunk`` (activity, stimulation, clamped rows, already cast) at every chunk position of fresh arrays.

    The cheapest honest way with zarr: each chunk's three arrays in one round trip to
    zarr's event loop (their encodes on its threads at once), as the run store writes them.
    """
    group = zarr.open_group(directory, mode="w")
    arrays = run_store.create_trajectory(group, n_steps, chunk[0].shape[1], chunk_steps, dtype)
    began, cpu = time.perf_counter(), cpu_seconds()
    for start in range(0, n_steps, chunk_steps):
        stop = min(start + chunk_steps, n_steps)
        run_store.write_together((array, slice(start, stop), rows[: stop - start]) for array, rows in zip(arrays, chunk))
        if fsync:
            index = start // chunk_steps
            run_store.fsync_paths([Path(directory) / name / "c" / str(index) / "0" for name in ("activity", "stimulation")]
                                  + [Path(directory) / "clamped" / "c" / str(index)], stop_at=Path(directory))
    return time.perf_counter() - began, cpu_seconds() - cpu


def one_chunk(A, chunk_steps, dtype):
    """The first chunk of the benchmarked run's trajectory, cast as the store casts it."""
    simulation = Simulation(A, chunk_steps, sc.Perturbation(), 0, chunk_steps, "default")
    rows, n = chunk_steps, A.shape[0]
    activity, stimulation, clamped = np.empty((rows, n)), np.empty((rows, n)), np.empty(rows, dtype=np.bool_)
    simulation.advance(0, (activity, stimulation, clamped))
    return activity.astype(dtype), stimulation.astype(np.uint8), clamped


def simulate_with_trajectory(A, n_steps, chunk_steps, seed):
    """The run's simulation filling its trajectory buffers (as save_trajectory does), no store: the engine's share."""
    simulation = Simulation(A, n_steps, sc.Perturbation(), seed, chunk_steps, "default")
    rows, n = min(chunk_steps, n_steps), A.shape[0]
    buffers = (np.empty((rows, n)), np.empty((rows, n)), np.empty(rows, dtype=np.bool_))
    total = sc.CrossMoments(n, n)
    for chunk in range(simulation.n_chunks):
        start, stop = simulation.chunk_bounds(chunk)
        total = total.merge(simulation.advance(chunk, tuple(buffer[: stop - start] for buffer in buffers)))
    return total


class CheckpointCounter:
    """Counts SeedStore.write_checkpoint calls (to prove that 'checkpoints only' checkpoints more than once)."""

    def __init__(self):
        self.count = 0
        self.original = run_store.SeedStore.write_checkpoint

    def __enter__(self):
        counter = self

        def counting(store, *args, **kwargs):
            counter.count += 1
            return counter.original(store, *args, **kwargs)

        run_store.SeedStore.write_checkpoint = counting
        return self

    def __exit__(self, *exc):
        run_store.SeedStore.write_checkpoint = self.original


def timings(A, steps, repeats, workdir, checkpoint_seconds):
    chunk_steps = sc.engine.default_chunk_steps(A.shape[0])
    chunks = {dtype: one_chunk(A, chunk_steps, dtype) for dtype in ("float32", "float16")}
    runs = {
        "no store": None,
        "checkpoints only": {"checkpoint_seconds": checkpoint_seconds},
        "trajectory float32": {"save_trajectory": True, "dtype": "float32"},
        "trajectory float16": {"save_trajectory": True, "dtype": "float16"},
    }
    alone = {f"zarr alone {dtype}{'' if fsync else ' (no fsync)'}": (dtype, fsync)
             for dtype in ("float32", "float16") for fsync in (True, False)}
    times = {label: [] for label in [*runs, "simulation + trajectory buffers", *alone]}
    cpu = {label: [] for label in times}
    checkpoints = []
    path = os.path.join(workdir, "run.zarr")
    for repeat in range(repeats):
        for label, options in runs.items():
            shutil.rmtree(path, ignore_errors=True)
            store = None if options is None else sc.Store(path, **options)
            with CheckpointCounter() as counter:
                began, cpu_began = time.perf_counter(), cpu_seconds()
                sc.run(A, steps, seed=repeat, chunk_steps=chunk_steps, store=store)
                times[label].append(time.perf_counter() - began)
                cpu[label].append(cpu_seconds() - cpu_began)
            if label == "checkpoints only":
                checkpoints.append(counter.count)
                assert counter.count > 1, f"'checkpoints only' checkpointed {counter.count} time(s)"
        began, cpu_began = time.perf_counter(), cpu_seconds()
        simulate_with_trajectory(A, steps, chunk_steps, repeat)
        times["simulation + trajectory buffers"].append(time.perf_counter() - began)
        cpu["simulation + trajectory buffers"].append(cpu_seconds() - cpu_began)
        for label, (dtype, fsync) in alone.items():
            shutil.rmtree(path, ignore_errors=True)
            seconds, cpu_used = zarr_alone(path, chunks[dtype], steps, chunk_steps, dtype, fsync)
            times[label].append(seconds)
            cpu[label].append(cpu_used)
    shutil.rmtree(path, ignore_errors=True)
    return times, cpu, checkpoints, chunk_steps


def bytes_per_step(sizes, dtypes, workdir):
    """On-disk bytes per step of each trajectory array, from short runs."""
    rows = []
    for n, steps in sizes:
        A = sc.create_connectivity(n)
        for dtype in dtypes:
            path = Path(workdir) / f"bytes_{n}_{dtype}.zarr"
            shutil.rmtree(path, ignore_errors=True)
            sc.run(A, steps, seed=0, store=sc.Store(path, save_trajectory=True, dtype=dtype))
            sizes_of = {name: _files_bytes(path / "seed_0" / name) / steps for name in ("activity", "stimulation", "clamped")}
            rows.append({"neurons": n, "dtype": dtype, "steps": steps, **sizes_of,
                         "total": sum(sizes_of.values()),
                         "uncompressed": n * np.dtype(dtype).itemsize + n + 1})
            shutil.rmtree(path, ignore_errors=True)
    return rows


def float16_accuracy(n, steps, workdir):
    """max |effect from the stored trajectory - effect from the run's float64 moments|, against the standard error."""
    A = sc.create_connectivity(n)
    rows = []
    for dtype in ("float16", "float32"):
        path = Path(workdir) / f"accuracy_{dtype}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        result = sc.run(A, steps, seed=0, store=sc.Store(path, save_trajectory=True, dtype=dtype))
        trajectory = run_store.StoreReader.open_run(path).trajectory(0)
        stored = sc.estimate(trajectory.activity, trajectory.stimulation, steps=trajectory.clamped)
        difference = np.abs(stored.effect - result.effect)
        rows.append({"dtype": dtype, "neurons": n, "steps": steps, "samples": int(result.n_samples),
                     "max_abs_effect_difference": float(np.nanmax(difference)),
                     "median_stderr": float(np.nanmedian(result.stderr)),
                     "max_difference_over_stderr": float(np.nanmax(difference / result.stderr)),
                     "score_run": float(result.score(A, estimate="effect")),
                     "score_stored": float(stored.score(A, estimate="effect"))})
        shutil.rmtree(path, ignore_errors=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--steps", type=float, default=2e6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checkpoint-seconds", type=float, default=0.1)
    parser.add_argument("--skip-extras", action="store_true", help="only the timings (no bytes per step, no float16 accuracy)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    steps = int(args.steps)
    A = sc.create_connectivity(args.neurons)
    workdir = tempfile.mkdtemp(prefix="bench-store-", dir=os.environ.get("BENCH_STORE_DIR"))
    load_before = os.getloadavg()
    try:
        for dtype in ("float32", "float16"):  # compile, and open the codecs once
            sc.run(A, 20_000, store=sc.Store(os.path.join(workdir, f"warm_{dtype}.zarr"), save_trajectory=True,
                                             dtype=dtype))
        times, cpu, checkpoints, chunk_steps = timings(A, steps, args.repeats, workdir, args.checkpoint_seconds)
        load_after = os.getloadavg()
        extras = {}
        if not args.skip_extras:
            extras["bytes_per_step"] = bytes_per_step([(6, 1_000_000), (100, 200_000), (1000, 20_000)],
                                                      ("float32", "float16"), workdir)
            extras["float16_accuracy"] = float16_accuracy(args.neurons, 1_000_000, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    median = {label: statistics.median(values) for label, values in times.items()}
    base = median["no store"]
    cpu_median = {label: statistics.median(values) for label, values in cpu.items()}
    rows = [{"contender": label, "seconds": median[label], "slowdown": median[label] / base,
             "steps_per_second": steps / median[label], "cpu_seconds": cpu_median[label],
             "repeats": times[label], "cpu_repeats": cpu[label]} for label in times]
    targets = []
    for dtype in ("float32", "float16"):
        for fsync in (True, False):
            alone_label = f"zarr alone {dtype}{'' if fsync else ' (no fsync)'}"
            bound = max(base, median[alone_label])
            ratio = median[f"trajectory {dtype}"] / bound
            targets.append({"dtype": dtype, "against": alone_label, "bound_seconds": bound, "ratio": ratio,
                            "target": 1.15, "met": ratio <= 1.15})

    print(f"run() at n={args.neurons}, {steps:,} steps, tutorial design, chunks of {chunk_steps} steps, "
          f"{os.cpu_count()} cores; median of {args.repeats}; load {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(f"{'contender':34s} {'seconds':>8s} {'vs no store':>12s} {'CPU s':>7s}")
    for row in rows:
        print(f"{row['contender']:34s} {row['seconds']:8.2f} {row['slowdown']:11.2f}x {row['cpu_seconds']:7.2f}")
    print(f"checkpoints per 'checkpoints only' run: {checkpoints}")
    print(f"\n{'trajectory':12s} {'against the larger of no store and':44s} {'ratio':>6s}  target <= 1.15")
    for target in targets:
        print(f"{target['dtype']:12s} {target['against']:44s} {target['ratio']:6.2f}  {'met' if target['met'] else 'not met'}")
    if "bytes_per_step" in extras:
        print(f"\n{'n':>5s} {'dtype':8s} {'activity':>9s} {'stimulation':>12s} {'clamped':>8s} {'total':>8s} "
              f"{'raw':>6s}  bytes/step")
        for row in extras["bytes_per_step"]:
            print(f"{row['neurons']:5d} {row['dtype']:8s} {row['activity']:9.1f} {row['stimulation']:12.2f} "
                  f"{row['clamped']:8.3f} {row['total']:8.1f} {row['uncompressed']:6d}")
        print(f"\n{'dtype':8s} {'max |d effect|':>15s} {'median SE':>10s} {'max |d|/SE':>11s}  (estimate from the stored "
              "trajectory vs the run's float64 moments)")
        for row in extras["float16_accuracy"]:
            print(f"{row['dtype']:8s} {row['max_abs_effect_difference']:15.2e} {row['median_stderr']:10.2e} "
                  f"{row['max_difference_over_stderr']:11.4f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"machine": {"cores": os.cpu_count(), "processor": platform.processor(),
                                   "python": platform.python_version(), "zarr": zarr.__version__,
                                   "numpy": np.__version__},
                       "loadavg_before": load_before, "loadavg_after": load_after,
                       "neurons": args.neurons, "steps": steps, "chunk_steps": chunk_steps,
                       "checkpoint_seconds": args.checkpoint_seconds, "checkpoints": checkpoints,
                       "rows": rows, "targets": targets, **extras}, handle, indent=2)


if __name__ == "__main__":
    main()
