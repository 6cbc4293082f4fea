"""Large networks: create_connectivity's sparse draw against the tutorial's path, and run() at n = 10^4.

Each measurement runs in a fresh child process (so that its peak RSS, ``ru_maxrss``, is its
own), on the same machine and in the same run of this script:

- ``create``: ``create_connectivity(n, density)`` above ``TUTORIAL_MAX_NEURONS`` (the sparse
  draw and the power-iteration scale), median of ``--repeats``; its scale is checked
  against NumPy's full SVD (n <= 3000) or ARPACK (``svds``, tol=0) above;
- ``tutorial path``: the tutorial's draw at the same n (``n^2`` coins, full LAPACK SVD),
  once, where feasible (``--tutorial-max``, default 3000; about 45 s there);
- ``--run``: ``run(A, --run-steps)`` at ``--run-n`` (tutorial design, default chunk_steps)
  with ``A = create_connectivity(n)`` (sparse): steps/s and peak RSS, beside the floor of
  the same work per chunk measured in the same child afterwards (the ``n x n`` product
  ``outcome.T @ stimulation`` of a chunk's samples with the BLAS on every core, plus the
  chunk's normal draws), median of 3; ``--run-only`` skips the ``create`` part.

    python benchmarks/bench_network.py --json benchmarks/results/network.json [--run]
    python benchmarks/bench_network.py --run --run-only --json benchmarks/results/network_run.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

SIZES = [(3000, 0.1), (10_000, 0.1), (100_000, 0.001)]
TARGETS = {(10_000, 0.1): 5.0, (100_000, 0.001): 30.0}


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


# --------------------------------------------------------------------------- children


def child_create(n, density, repeats):
    import scipy.sparse.linalg

    import streamcausal as sc

    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        A = sc.create_connectivity(n, density, random_state=42)
        times.append(time.perf_counter() - began)
    pattern = A.copy()
    pattern.data[:] = 1.0
    scale = 1.0 / (1.01 * A.data[0])  # the largest singular value create_connectivity used
    if n <= 3000:
        reference, how = float(np.linalg.svd(pattern.toarray(), compute_uv=False)[0]), "numpy full SVD"
    else:
        reference = float(scipy.sparse.linalg.svds(pattern, k=1, tol=0, return_singular_vectors=False,
                                                    v0=np.ones(n) / math.sqrt(n))[0])
        how = "ARPACK svds tol=0"
    return {"n": n, "density": density, "seconds": times, "median_seconds": statistics.median(times),
            "connections": int(A.nnz), "fraction": A.nnz / n**2, "largest_singular_value": scale,
            "reference": reference, "reference_method": how, "relative_error": abs(scale - reference) / reference,
            "peak_rss_bytes": peak_rss_bytes(), "dense_bytes": 8 * n * n}


def child_tutorial(n, density):
    from streamcausal import network

    began = time.perf_counter()
    network._tutorial_connectivity(n, density, 42)
    return {"n": n, "density": density, "seconds": time.perf_counter() - began, "peak_rss_bytes": peak_rss_bytes()}


def child_run(n, steps, wiring):
    import streamcausal as sc
    from streamcausal.engine import default_chunk_steps
    from streamcausal.moments.reduce import product_tn

    A = sc.create_connectivity(n)
    sc.run(sc.create_connectivity(6), 1000)  # compile (cached) and warm up outside the measurement
    rss_before = peak_rss_bytes()
    began = time.perf_counter()
    result = sc.run(A, steps, seed=0)
    seconds = time.perf_counter() - began
    peak = peak_rss_bytes()
    chunk_steps = default_chunk_steps(n)
    samples = chunk_steps // 2
    rng = np.random.default_rng(0)
    stimulation = (rng.random((samples, n)) < 0.5).astype(np.float64)
    outcome = rng.random((samples, n))
    out = np.empty((n, n))
    product, normals, kernel_product = [], [], []
    for _ in range(3):
        t = time.perf_counter()
        np.matmul(outcome.T, stimulation, out=out)  # the BLAS on every core
        product.append(time.perf_counter() - t)
        t = time.perf_counter()
        rng.standard_normal((samples, n))
        normals.append(time.perf_counter() - t)
        t = time.perf_counter()
        product_tn(outcome, stimulation, out)  # the engine's own product (two halves, one BLAS thread each)
        kernel_product.append(time.perf_counter() - t)
    floor_chunk = statistics.median(product) + statistics.median(normals)
    return {"wiring": wiring, "n": n, "steps": steps, "chunk_steps": chunk_steps, "samples": result.n_samples,
            "seconds": seconds, "steps_per_second": steps / seconds,
            "floor": {"product_seconds": statistics.median(product), "normals_seconds": statistics.median(normals),
                      "engine_product_seconds": statistics.median(kernel_product),
                      "steps_per_second": chunk_steps / floor_chunk},
            "ratio_to_floor": (chunk_steps / floor_chunk) / (steps / seconds),
            "peak_rss_bytes": peak, "peak_rss_before_run_bytes": rss_before, "target_bytes": 4 * n * n * 8,
            "score": result.score(A)}


def spawn(*args, timeout=None):
    """Run this script as a child with ``args``; return the JSON it prints last."""
    done = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tutorial-max", type=int, default=3000, help="largest n timed on the tutorial's path")
    parser.add_argument("--run", action="store_true", help="also measure run() at --run-n (minutes)")
    parser.add_argument("--run-n", type=int, default=10_000)
    parser.add_argument("--run-steps", type=int, default=100_000)
    parser.add_argument("--run-only", action="store_true", help="skip create_connectivity; only the run() measurement")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "create":
            out = child_create(int(rest[0]), float(rest[1]), int(rest[2]))
        elif kind == "tutorial":
            out = child_tutorial(int(rest[0]), float(rest[1]))
        else:
            out = child_run(int(rest[0]), int(rest[1]), rest[2])
        print(json.dumps(out))
        return

    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "numpy": np.__version__},
              "loadavg_start": os.getloadavg(), "create": [], "tutorial": [], "run": []}
    print("create_connectivity (each in a fresh process)")
    print(f"{'n':>8} {'density':>8} {'connections':>12} {'sparse path s':>14} {'tutorial path s':>16} {'ratio':>7} "
          f"{'target s':>9} {'peak RSS MB':>12} {'n^2*8 MB':>10} {'sigma rel. err':>15}")
    for n, density in ([] if args.run_only else SIZES):
        created = spawn("create", n, density, args.repeats)
        report["create"].append(created)
        tutorial = None
        if n <= args.tutorial_max:
            tutorial = spawn("tutorial", n, density)
            report["tutorial"].append(tutorial)
        target = TARGETS.get((n, density))
        created["target_seconds"] = target
        created["target_met"] = None if target is None else created["median_seconds"] <= target
        tutorial_s = f"{tutorial['seconds']:.2f}" if tutorial else "-"
        ratio = f"{tutorial['seconds'] / created['median_seconds']:.0f}x" if tutorial else "-"
        print(f"{n:>8} {density:>8} {created['connections']:>12,} {created['median_seconds']:>14.2f} {tutorial_s:>16} "
              f"{ratio:>7} {target or '-':>9} {created['peak_rss_bytes'] / 2**20:>12.0f} "
              f"{created['dense_bytes'] / 2**20:>10.0f} {created['relative_error']:>15.1e}", flush=True)
        write(report, args.json)
    if args.run:
        print(f"\nrun() at n = {args.run_n} (tutorial design, default chunk_steps; fresh process each)")
        print(f"{'wiring':>9} {'steps':>8} {'steps/s':>8} {'floor steps/s':>14} {'floor/run':>10} "
              f"{'peak RSS MB':>12} {'target MB':>10} {'met':>4}")
        for wiring, steps in (("as wired", args.run_steps),):
            measured = spawn("run", args.run_n, steps, wiring)
            measured["target_met"] = measured["peak_rss_bytes"] <= measured["target_bytes"]
            report["run"].append(measured)
            print(f"{wiring:>9} {steps:>8} {measured['steps_per_second']:>8.1f} "
                  f"{measured['floor']['steps_per_second']:>14.1f} {measured['ratio_to_floor']:>10.2f} "
                  f"{measured['peak_rss_bytes'] / 2**20:>12.0f} {measured['target_bytes'] / 2**20:>10.0f} "
                  f"{'yes' if measured['target_met'] else 'no':>4}", flush=True)
            write(report, args.json)
    report["loadavg_end"] = os.getloadavg()
    print(f"\nload average: start {report['loadavg_start']}, end {report['loadavg_end']}")
    write(report, args.json)


def write(report, path):
    """Write what is measured so far (a long --run leaves its first rows behind if stopped)."""
    if path:
        with open(path, "w") as file:
            json.dump({**report, "loadavg_now": os.getloadavg()}, file, indent=1)


if __name__ == "__main__":
    main()
