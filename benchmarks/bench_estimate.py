"""Out-of-core estimation of a stored recording: reading, reducing, both in turn and overlapped, and dask.

On one Zarr store laid out like a saved run (``seed_0/activity`` (T, n) float32,
``seed_0/stimulation`` (T, n) uint8, ``seed_0/clamped`` (T,) bool, clamped every other
step, chunked along time and compressed), each contender runs in a fresh subprocess
(so that its peak RSS, VmHWM, is its own), in an order that rotates from repeat to
repeat; the table gives medians of wall and CPU seconds:

* ``read``: read every row of the three arrays once, in the windows ``estimate`` uses;
* ``reduce``: ``estimate`` on the same arrays already in memory (read first, untimed):
  the reduction alone, on as many Numba threads as ``overlapped`` reduces on;
* ``sequential``: ``estimate_store`` reading one window, then reducing it (the old path,
  ``recording._READ_AHEAD = False``), default Numba threads;
* ``overlapped``: ``estimate_store`` as shipped: one thread reads the next window while
  this one is reduced, on one Numba thread fewer (``_READER_CORES = 1``);
* ``overlapped_all_threads``: the same with every Numba thread (``_READER_CORES = 0``);
* ``overlapped_nogil``: ``overlapped`` on a copy of the package whose kernels release
  the GIL (``nogil=True`` added in the copy's ``_jit.py``; the repository is not
  touched): what the GIL held by the reduction kernels costs the reader;
* ``dask``: ``dask.array.corrcoef`` over the stacked stimulation (selected steps) and
  outcome (selected steps + 1), what a user would write today.

Bounds printed with the table: ``read + reduce`` (nothing overlaps), ``max(read,
reduce)`` (perfect overlap) and ``(CPU of read + CPU of reduce) / cores`` (both cores
busy all the time). The estimates of every contender agree bit for bit (checked), and
with dask to rounding. Example::

    python benchmarks/bench_estimate.py --repeats 5 --json benchmarks/results/estimate.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONTENDERS = ("read", "reduce", "sequential", "overlapped", "overlapped_all_threads", "overlapped_nogil", "dask")
ESTIMATES = ("reduce", "sequential", "overlapped", "overlapped_all_threads", "overlapped_nogil")
TARGETS = {"overlapped_vs_read": 1.2, "peak_rss_mb": 300.0}
REPOSITORY = Path(__file__).resolve().parents[1]


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


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _warm_up():
    """Load Numba's cached kernels (both paths of the moments) before timing."""
    from streamcausal.io.recording import estimate

    rng = np.random.default_rng(0)
    estimate(rng.random((4096, 100)), rng.integers(0, 2, (4096, 100)), steps=slice(0, None, 2))


def _windows(arrays):
    from streamcausal.io.recording import _default_chunk_steps, _Source

    sources = [_Source(array, name) for array, name in zip(arrays, ("activity", "stimulation", "steps"))]
    return _default_chunk_steps(sources, arrays[0].shape[1])  # the windows estimate() reads


def contender_read(path, out):
    arrays = _open(path)
    window = _windows(arrays)
    n_steps = arrays[0].shape[0]
    touched = 0
    baseline = _rss_mb()
    began, cpu = time.perf_counter(), _cpu_seconds()
    for start in range(0, n_steps, window):
        for array in arrays:
            touched += array[start : start + window].nbytes
    return time.perf_counter() - began, _cpu_seconds() - cpu, baseline, {"bytes": touched, "chunk_steps": window}


def contender_reduce(path, out):
    import numba

    from streamcausal.io import recording

    _warm_up()
    arrays = _open(path)
    window = _windows(arrays)
    activity, stimulation, clamped = (array[...] for array in arrays)
    threads = max(1, min(numba.get_num_threads(), recording._available_cpus() - recording._READER_CORES))
    numba.set_num_threads(threads)  # as many as the overlapped path reduces on
    baseline = _rss_mb()  # with the recording in memory
    began, cpu = time.perf_counter(), _cpu_seconds()
    result = recording.estimate(activity, stimulation, steps=clamped, chunk_steps=window)
    seconds, cpu = time.perf_counter() - began, _cpu_seconds() - cpu
    np.save(out, result.moments.comoment)
    return seconds, cpu, baseline, {"pairs": result.n_samples, "chunk_steps": window, "numba_threads": threads}


def _estimate_store(path, out, read_ahead, reader_cores=1):
    from streamcausal.io import recording

    _warm_up()
    recording._READ_AHEAD, recording._READER_CORES = read_ahead, reader_cores
    baseline = _rss_mb()
    began, cpu = time.perf_counter(), _cpu_seconds()
    result = recording.estimate_store(path, "seed_0/activity", "seed_0/stimulation", "seed_0/clamped")
    seconds, cpu = time.perf_counter() - began, _cpu_seconds() - cpu
    np.save(out, result.moments.comoment)
    return seconds, cpu, baseline, {"pairs": result.n_samples, "chunk_steps": result.parameters["chunk_steps"],
                                    "package": os.path.dirname(recording.__file__)}


def contender_sequential(path, out):
    return _estimate_store(path, out, read_ahead=False)


def contender_overlapped(path, out):
    return _estimate_store(path, out, read_ahead=True)


def contender_overlapped_all_threads(path, out):
    return _estimate_store(path, out, read_ahead=True, reader_cores=0)


contender_overlapped_nogil = contender_overlapped  # run against the patched copy (see _nogil_copy)


def contender_dask(path, out):
    import dask.array as da

    activity, stimulation, clamped = _open(path)
    n = activity.shape[1]
    baseline = _rss_mb()
    began, cpu = time.perf_counter(), _cpu_seconds()
    act, stim, mask = da.from_zarr(activity), da.from_zarr(stimulation), da.from_zarr(clamped)
    selected = mask[:-1].compute()  # the perturbation steps t with an outcome at t + 1
    inputs, outcomes = stim[:-1][selected], act[1:][selected]
    stacked = da.concatenate([inputs, outcomes], axis=1)
    correlation = da.corrcoef(stacked, rowvar=False)[n:, :n].compute()
    seconds, cpu = time.perf_counter() - began, _cpu_seconds() - cpu
    np.save(out, correlation)
    return seconds, cpu, baseline, {"pairs": int(selected.sum())}


def _worker(name, path, out):
    seconds, cpu, baseline, extra = globals()[f"contender_{name}"](path, out)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": _rss_mb(), "baseline_rss_mb": baseline,
                      "load_average": os.getloadavg()[0], **extra}))


# --------------------------------------------------------------------------- driver


_JIT_OPTIONS = '"error_model": "numpy", **options}'


def _nogil_copy() -> str | None:
    """A copy of the package whose Numba kernels are compiled with ``nogil=True``; None if _jit.py has changed shape.

    Kept in the temp folder under a digest of the sources, so its Numba cache is compiled once.
    """
    sources = sorted((REPOSITORY / "streamcausal").rglob("*.py"))
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / "streamcausal-bench" / f"nogil-{digest}"
    jit = root / "streamcausal" / "_jit.py"
    if not jit.exists():
        text = (REPOSITORY / "streamcausal" / "_jit.py").read_text()
        if _JIT_OPTIONS not in text or '"nogil"' in text:
            return None
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(REPOSITORY / "streamcausal", root / "streamcausal",
                        ignore=shutil.ignore_patterns("__pycache__"))
        jit.write_text(text.replace(_JIT_OPTIONS, '"error_model": "numpy", "nogil": True, **options}'))
    return str(root)


def _run_worker(name, path, out, nogil_root=None):
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--store", path, "--out", out]
    env = dict(os.environ)
    if name == "overlapped_nogil":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [nogil_root, env.get("PYTHONPATH")]))
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summarise(runs):
    summary = {}
    for name, measured in runs.items():
        summary[name] = {
            "median_s": statistics.median(m["seconds"] for m in measured),
            "median_cpu_s": statistics.median(m["cpu_seconds"] for m in measured),
            "seconds": [m["seconds"] for m in measured],
            "cpu_seconds": [m["cpu_seconds"] for m in measured],
            "peak_rss_mb": max(m["peak_rss_mb"] for m in measured),
            "baseline_rss_mb": max(m["baseline_rss_mb"] for m in measured),
            "details": measured[-1],
        }
    return summary


def _ratios(summary, cpus):
    ratios, bounds = {}, {}
    read = summary.get("read", {}).get("median_s")
    dask = summary.get("dask", {}).get("median_s")
    for name in ESTIMATES + ("dask",):
        if name in summary and read:
            ratios[f"{name}_vs_read"] = summary[name]["median_s"] / read
        if name in summary and dask and name != "dask":
            ratios[f"dask_vs_{name}"] = dask / summary[name]["median_s"]
    if "read" in summary and "reduce" in summary:
        reduce, cpu = summary["reduce"], summary["read"]["median_cpu_s"] + summary["reduce"]["median_cpu_s"]
        bounds = {
            "read_plus_reduce_s": read + reduce["median_s"],
            "max_read_reduce_s": max(read, reduce["median_s"]),
            "cpu_bound_s": cpu / cpus,
            "best_possible_vs_read": max(read, reduce["median_s"], cpu / cpus) / read,
        }
    return ratios, bounds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--steps", type=float, default=2e6)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-rows", type=int, default=None, help="store chunk length along time")
    parser.add_argument("--store", default=None, help="store path (written if absent)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--json", default=None, help="write the measurements here")
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
    nogil_root = _nogil_copy() if "overlapped_nogil" in contenders else None
    if "overlapped_nogil" in contenders and nogil_root is None:
        print("overlapped_nogil left out: _jit.py already has nogil or has changed shape", file=sys.stderr)
        contenders.remove("overlapped_nogil")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as scratch:
        # warm the page cache for everyone, and compile the nogil copy's kernels once
        _run_worker("read", path, os.devnull)
        if nogil_root:
            _run_worker("overlapped_nogil", path, os.path.join(scratch, "warm.npy"), nogil_root)
        load_before = os.getloadavg()
        runs = {name: [] for name in contenders}
        outs = {name: os.path.join(scratch, f"{name}.npy") for name in contenders}
        for repeat in range(args.repeats):
            shift = repeat % len(contenders)
            for name in contenders[shift:] + contenders[:shift]:  # no contender always runs first
                runs[name].append(_run_worker(name, path, outs[name], nogil_root))
            print(f"repeat {repeat + 1}/{args.repeats}, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
        load_after = os.getloadavg()
        ours = [name for name in ESTIMATES if name in contenders]
        identical = all(np.array_equal(np.load(outs[ours[0]]), np.load(outs[name])) for name in ours[1:])
        agreement = None
        if "dask" in contenders and "sequential" in contenders:
            from streamcausal.io.recording import estimate_store

            correlation = estimate_store(path, "seed_0/activity", "seed_0/stimulation", "seed_0/clamped").correlation
            agreement = float(np.nanmax(np.abs(correlation - np.load(outs["dask"]))))

    summary = _summarise(runs)
    ratios, bounds = _ratios(summary, cpus)
    mb = args.steps * args.neurons * np.dtype(args.dtype).itemsize / 1e6
    print(f"\nn={args.neurons} T={args.steps} {args.dtype} ({mb:.0f} MB activity), store chunks of "
          f"{args.chunk_rows} rows, medians of {args.repeats}, {cpus} CPUs, "
          f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    read = summary.get("read", {}).get("median_s")
    print(f"{'contender':<24} {'wall s':>7} {'CPU s':>6} {'vs read':>8} {'peak RSS MB':>12} {'before timing MB':>17}")
    for name, row in summary.items():
        versus = f"{row['median_s'] / read:7.2f}x" if read else "       -"
        print(f"{name:<24} {row['median_s']:>7.2f} {row['median_cpu_s']:>6.2f} {versus:>8} "
              f"{row['peak_rss_mb']:>12.0f} {row['baseline_rss_mb']:>17.0f}")
    if "overlapped_vs_read" in ratios:
        print(f"overlapped / read: {ratios['overlapped_vs_read']:.2f} (target <= {TARGETS['overlapped_vs_read']})")
    if "dask_vs_overlapped" in ratios:
        print(f"dask.array.corrcoef / overlapped: {ratios['dask_vs_overlapped']:.2f}x")
    if bounds:
        print(f"bounds: read + reduce {bounds['read_plus_reduce_s']:.2f} s, max(read, reduce) "
              f"{bounds['max_read_reduce_s']:.2f} s, (CPU read + CPU reduce) / {cpus} cores "
              f"{bounds['cpu_bound_s']:.2f} s: the best overlap is {bounds['best_possible_vs_read']:.2f}x the read")
    print(f"the estimates of {', '.join(ours)} are bit-identical: {identical}")
    if agreement is not None:
        print(f"max |correlation(estimate) - correlation(dask)| = {agreement:.2e}")
    if args.json:
        record = {
            "benchmark": "bench_estimate",
            "config": {"neurons": args.neurons, "steps": args.steps, "dtype": args.dtype, "repeats": args.repeats,
                       "chunk_rows": args.chunk_rows, "store": path},
            "machine": {"cpus": cpus, "python": platform.python_version(), "platform": platform.platform(),
                        "load_average_before": load_before, "load_average_after": load_after,
                        "threads_env": {k: os.environ.get(k) for k in
                                        ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}},
            "contenders": summary,
            "ratios": ratios,
            "bounds": bounds,
            "targets": TARGETS,
            "bit_identical": identical,
            "max_abs_correlation_difference": agreement,
        }
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
