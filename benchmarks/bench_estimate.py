"""Out-of-core estimation of a stored recording, side by side with plain reading and dask.

On one Zarr store laid out like a saved run (``seed_0/activity`` (T, n) float32,
``seed_0/stimulation`` (T, n) uint8, ``seed_0/clamped`` (T,) bool, clamped every other
step, chunked along time and compressed), this times three contenders, each repeat in a
fresh subprocess so that its peak RSS (VmHWM, or ``ru_maxrss``) is its own:

* ``read``: read every chunk of the three arrays, in the windows ``estimate`` uses;
* ``estimate``: ``streamcausal.io.recording.estimate_store`` on the perturbation steps;
* ``dask``: ``dask.array.corrcoef`` over the stacked stimulation (selected steps) and
  outcome (selected steps + 1), what a user would write today.

Contenders alternate within each repeat; the table reports medians, ratios and peak RSS,
and ``--json`` writes everything. Example::

    python benchmarks/bench_estimate.py --neurons 100 --steps 2e6 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

CONTENDERS = ("read", "estimate", "dask")
TARGETS = {"speedup_vs_dask": 5.0, "ratio_vs_read": 1.5, "peak_rss_mb": 300.0}


def _rss_mb() -> float:
    """Peak RSS of this process so far, in MB.

    On Linux this is VmHWM: ``ru_maxrss`` survives ``exec``, so a worker started by a big
    parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / 2**20 if sys.platform == "darwin" else usage / 1024


def _store_path(args) -> str:
    if args.store:
        return args.store
    name = f"estimate_n{args.neurons}_T{args.steps}_{args.dtype}_c{args.chunk_rows}.zarr"
    return os.path.join(tempfile.gettempdir(), "streamcausal-bench", name)


def write_store(path: str, n: int, n_steps: int, dtype: str, chunk_rows: int, seed: int = 0) -> None:
    """A run-like recording: every even step clamps all neurons to a 0/1 pattern (p = 0.5),
    the next step is ``sigmoid(A x_t + eps)``; written chunk by chunk with zarr's default codecs."""
    import zarr

    from streamcausal import create_connectivity

    A = create_connectivity(n)
    group = zarr.open_group(path, mode="w")
    group.attrs.update({"schema": "bench_estimate/1", "n_neurons": n, "n_steps": n_steps, "every": 2, "p": 0.5})
    seed_group = group.create_group("seed_0")
    activity = seed_group.create_array(
        "activity", shape=(n_steps, n), chunks=(chunk_rows, n), dtype=dtype, dimension_names=("time", "neuron")
    )
    stimulation = seed_group.create_array(
        "stimulation", shape=(n_steps, n), chunks=(chunk_rows, n), dtype="uint8", dimension_names=("time", "neuron")
    )
    clamped = seed_group.create_array("clamped", shape=(n_steps,), chunks=(chunk_rows,), dtype="bool", dimension_names=("time",))
    seed_group.create_array("A", data=A)
    rng = np.random.default_rng(seed)
    chunk_rows += chunk_rows % 2  # whole (clamp, response) pairs per write
    for start in range(0, n_steps, chunk_rows):
        stop = min(start + chunk_rows, n_steps)
        rows = stop - start
        pairs = (rows + 1) // 2
        pattern = rng.integers(0, 2, size=(pairs, n), dtype=np.uint8)
        response = 1.0 / (1.0 + np.exp(-(pattern @ A.T + rng.standard_normal((pairs, n)))))
        x = np.empty((2 * pairs, n))
        x[0::2], x[1::2] = pattern, response
        s = np.zeros((2 * pairs, n), dtype=np.uint8)
        s[0::2] = pattern
        c = np.zeros(2 * pairs, dtype=bool)
        c[0::2] = True
        activity[start:stop] = x[:rows].astype(dtype)
        stimulation[start:stop] = s[:rows]
        clamped[start:stop] = c[:rows]


# --------------------------------------------------------------------------- contenders (run in a subprocess)


def _open(path):
    import zarr

    group = zarr.open_group(path, mode="r")
    return group["seed_0/activity"], group["seed_0/stimulation"], group["seed_0/clamped"]


def contender_read(path, out):
    from streamcausal.io.recording import _default_chunk_steps, _Source

    arrays = _open(path)
    sources = [_Source(a, name) for a, name in zip(arrays, ("activity", "stimulation", "steps"))]
    n_steps, n = arrays[0].shape
    window = _default_chunk_steps(sources, n)  # the windows estimate() reads
    baseline = _rss_mb()
    began = time.perf_counter()
    touched = 0
    for start in range(0, n_steps, window):
        for array in arrays:
            touched += array[start : start + window].nbytes
    return time.perf_counter() - began, baseline, {"bytes": touched}


def contender_estimate(path, out):
    from streamcausal.io.recording import estimate, estimate_store

    rng = np.random.default_rng(0)  # warm up: load Numba's cached kernels before timing
    estimate(rng.random((64, 4)), rng.integers(0, 2, (64, 4)), steps=slice(0, None, 2))
    baseline = _rss_mb()
    began = time.perf_counter()
    result = estimate_store(path, "seed_0/activity", "seed_0/stimulation", "seed_0/clamped")
    seconds = time.perf_counter() - began
    np.save(out, result.correlation)
    return seconds, baseline, {"pairs": result.n_samples, "chunk_steps": result.parameters["chunk_steps"]}


def contender_dask(path, out):
    import dask.array as da

    activity, stimulation, clamped = _open(path)
    n = activity.shape[1]
    baseline = _rss_mb()
    began = time.perf_counter()
    act, stim, mask = da.from_zarr(activity), da.from_zarr(stimulation), da.from_zarr(clamped)
    selected = mask[:-1].compute()  # the perturbation steps t with an outcome at t + 1
    inputs, outcomes = stim[:-1][selected], act[1:][selected]
    stacked = da.concatenate([inputs, outcomes], axis=1)
    correlation = da.corrcoef(stacked, rowvar=False)[n:, :n].compute()
    seconds = time.perf_counter() - began
    np.save(out, correlation)
    return seconds, baseline, {"pairs": int(selected.sum())}


def _worker(name, path, out):
    seconds, baseline, extra = globals()[f"contender_{name}"](path, out)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _rss_mb(), "baseline_rss_mb": baseline, **extra}))


# --------------------------------------------------------------------------- driver


def _run_worker(name, path, out, blas_threads=None):
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--store", path, "--out", out]
    env = dict(os.environ)
    if blas_threads is not None:  # the same for every contender
        for key in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[key] = str(blas_threads)
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--steps", type=float, default=2e6)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=None, help="store chunk length along time")
    parser.add_argument("--store", default=None, help="store path (written if absent)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--json", default=None, help="write the measurements here")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="set OPENBLAS/OMP/MKL_NUM_THREADS for every contender (default: leave as is)")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.store, args.out)
        return
    args.steps = int(args.steps)
    if args.chunk_rows is None:
        from streamcausal.engine import default_chunk_steps

        args.chunk_rows = default_chunk_steps(args.neurons)
    path = _store_path(args)
    if not os.path.exists(os.path.join(path, "zarr.json")):
        began = time.perf_counter()
        write_store(path, args.neurons, args.steps, args.dtype, args.chunk_rows)
        print(f"wrote {path} in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    contenders = [c for c in args.contenders.split(",") if c]
    _run_worker("read", path, os.devnull, args.blas_threads)  # warm the page cache for everyone

    load_before = os.getloadavg()
    runs = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as scratch:
        outs = {name: os.path.join(scratch, f"{name}.npy") for name in contenders}
        for _ in range(args.repeats):
            for name in contenders:
                runs[name].append(_run_worker(name, path, outs[name], args.blas_threads))
        agreement = None
        if "estimate" in contenders and "dask" in contenders:
            ours, theirs = np.load(outs["estimate"]), np.load(outs["dask"])
            agreement = float(np.nanmax(np.abs(ours - theirs)))

    load_after = os.getloadavg()
    summary = {}
    for name, measured in runs.items():
        seconds = [m["seconds"] for m in measured]
        summary[name] = {
            "median_s": statistics.median(seconds),
            "seconds": seconds,
            "peak_rss_mb": max(m["peak_rss_mb"] for m in measured),
            "baseline_rss_mb": max(m["baseline_rss_mb"] for m in measured),
            "details": measured[-1],
        }
    ratios = {}
    if "estimate" in summary and "dask" in summary:
        ratios["speedup_vs_dask"] = summary["dask"]["median_s"] / summary["estimate"]["median_s"]
    if "estimate" in summary and "read" in summary:
        ratios["ratio_vs_read"] = summary["estimate"]["median_s"] / summary["read"]["median_s"]
    mb = args.steps * args.neurons * np.dtype(args.dtype).itemsize / 1e6
    print(f"\nn={args.neurons} T={args.steps} {args.dtype} ({mb:.0f} MB activity), store chunks of "
          f"{args.chunk_rows} rows, {args.repeats} repeats, {os.cpu_count()} CPUs, BLAS threads "
          f"{args.blas_threads or 'default'}, "
          f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(f"{'contender':<10} {'median s':>9} {'peak RSS MB':>12} {'after imports MB':>17}")
    for name, row in summary.items():
        print(f"{name:<10} {row['median_s']:>9.3f} {row['peak_rss_mb']:>12.0f} {row['baseline_rss_mb']:>17.0f}")
    for key, value in ratios.items():
        goal = ">=" if key == "speedup_vs_dask" else "<="
        print(f"{key}: {value:.2f} (target {goal} {TARGETS[key]})")
    if agreement is not None:
        print(f"max |correlation(estimate) - correlation(dask)| = {agreement:.2e}")
    if args.json:
        record = {
            "benchmark": "bench_estimate",
            "config": {"neurons": args.neurons, "steps": args.steps, "dtype": args.dtype, "repeats": args.repeats,
                       "blas_threads": args.blas_threads,
                       "chunk_rows": args.chunk_rows, "store": path},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "load_average_before": load_before[0], "load_average_after": load_after[0],
                        "blas_threads_env": {k: os.environ.get(k)
                                             for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}},
            "contenders": summary,
            "ratios": ratios,
            "targets": TARGETS,
            "max_abs_correlation_difference": agreement,
        }
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
