"""streamcausal.run() against the tutorial, against the floor of unavoidable work, and its memory.

Everything is measured side by side in one run of this script, after warming up Numba
(the kernels load from the on-disk cache, or compile once):

1. steps/s of ``run()`` vs ``streamcausal.tutorial`` (``np.random.seed(0)``,
   ``simulate_neurons_perturb(A, T)`` then ``get_perturbed_connectivity_all_neurons``)
   at n = 6, 100, 200, 1000, the tutorial on a short T because it is slow, ``run()``
   on enough steps for about 2 s. Targets: >= 2000x at n=6, >= 1000x at n=100, 200.
2. At n=1000, ``run()``'s time per sample vs the floor of unavoidable work on the same
   chunk of k samples: NumPy drawing the chunk's normals
   (``default_rng().standard_normal((k, n))``) and coins (the faster of ``integers``
   and unpacked random bits, as float64), plus one dense BLAS product
   ``outcome.T @ stimulation`` of the (k x n) blocks. Target: <= 1.3x the floor.
   A stricter floor (normals drawn into a preallocated array) is reported too, and
   the time of ``run()``'s own pieces per chunk.
3. Peak RSS (``ru_maxrss``) of a fresh process running ``run()`` at n=100 for 1e6 and
   for 1e8 steps (1e7 when the measured rate would make 1e8 take over ~2.5 min; the
   JSON says which). Target: within 10% of each other.
4. Time from ``import streamcausal`` to the first chunk done (``progress`` callback),
   in a fresh process with a warm Numba cache. Target: <= 2 s.

5. Sparse stimulation at n=1000 (``--sparse`` runs only this part and writes
   ``benchmarks/results/engine_sparse.json`` unless ``--json`` says otherwise): steps/s
   of ``run()`` with ``Perturbation(p=0.02)`` (the sparse path, chosen automatically),
   the same design forced onto the dense path, and the tutorial's ``p=0.5``, timed in
   turn within each repeat (median of ``--repeats``, default 5). Beside them the floor
   of that work per sample, on one chunk: NumPy drawing the normals alone; plus the
   coins (one uniform each, as the engine draws them); plus the O(stimulated x n)
   co-moment scatter (``scipy.sparse`` CSR of the stimulation times the outcomes).
   Then the crossover: sparse vs dense steps/s over a grid of n and p, which sets
   ``engine.simulation.SPARSE_MAX_P`` and ``SPARSE_MIN_NEURONS``. Target: >= 150,000
   steps/s at n=1000, p=0.02.

Medians of repeats; the machine's load average is recorded at start and end, because
other work on a 2-core machine skews timings. ``--quick`` is a smoke test (seconds).

    python benchmarks/bench_engine.py --json benchmarks/results/engine.json
    python benchmarks/bench_engine.py --sparse
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np

import streamcausal as sc
from streamcausal import engine, tutorial
from streamcausal._kernels import moments as moment_kernels
from streamcausal._kernels import network as kernels
from streamcausal.engine import simulation as engine_simulation
from streamcausal.moments import chunk_moments

TUTORIAL_STEPS = {6: 20_000, 100: 5_000, 200: 2_000, 1000: 60}
TARGET_RATIO = {6: 2000.0, 100: 1000.0, 200: 1000.0}
FLOOR_TARGET = 1.3
RSS_TOLERANCE = 0.10
IMPORT_TARGET = 2.0
SPARSE_TARGET = 150_000.0  # steps/s at n=1000, Perturbation(p=0.02)
SPARSE_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "engine_sparse.json")


def settle(seconds=0.5):
    """Pause so that idle BLAS/OpenMP worker threads of the last measurement stop spinning."""
    time.sleep(seconds)


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), times


# --------------------------------------------------------------------------- machine

def machine_info():
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "NUMBA_NUM_THREADS": numba.config.NUMBA_NUM_THREADS,
        "numba_threads_in_use": numba.get_num_threads(),
        "numba_threading_layer": None,
        "env": {k: os.environ[k] for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "MKL_NUM_THREADS") if k in os.environ},
        "load_average_start": os.getloadavg(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "num_threads")} for d in threadpool_info()]
    except ImportError:
        config = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
        blas = config.get("Build Dependencies", {}).get("blas", {}) if config else {}
        info["blas"] = {k: blas.get(k) for k in ("name", "version")} if blas else None
    return info


# --------------------------------------------------------------------------- 1. throughput

def tutorial_seconds(A, T, repeats):
    def once():
        np.random.seed(0)
        X = tutorial.simulate_neurons_perturb(A, T)
        tutorial.get_perturbed_connectivity_all_neurons(X)
    return median_time(once, repeats)[0]


def run_seconds(A, n_steps, repeats):
    result = None

    def once():
        nonlocal result
        result = sc.run(A, n_steps)
    seconds = median_time(once, repeats)[0]
    return seconds, result


def throughput(sizes, run_seconds_target, repeats, quick):
    rows = []
    for n in sizes:
        A = sc.create_connectivity(n)
        T = TUTORIAL_STEPS[n] if not quick else max(10, TUTORIAL_STEPS[n] // 20)
        tutorial_repeats = 1 if (n >= 1000 or quick) else repeats
        tutorial_s = tutorial_seconds(A, T, tutorial_repeats)
        tutorial_rate = T / tutorial_s
        settle()
        # calibrate run() on a few chunks, then run for about run_seconds_target
        chunk = engine.default_chunk_steps(n)
        probe_steps = 4 * chunk
        probe_s, _ = run_seconds(A, probe_steps, 1)
        n_steps = int(max(probe_steps, min(2e9, probe_steps * run_seconds_target / probe_s)))
        n_steps = -(-n_steps // chunk) * chunk
        seconds, result = run_seconds(A, n_steps, repeats)
        rate = n_steps / seconds
        ratio = rate / tutorial_rate
        target = TARGET_RATIO.get(n)
        rows.append({
            "n": n, "tutorial_steps": T, "tutorial_seconds": tutorial_s, "tutorial_steps_per_second": tutorial_rate,
            "run_steps": n_steps, "run_seconds": seconds, "run_steps_per_second": rate,
            "run_ns_per_sample": seconds / result.n_samples * 1e9, "ratio": ratio,
            "target_ratio": target, "met": None if target is None else ratio >= target,
            "run_score": result.score(A),
        })
        print(f"  n={n}: tutorial {tutorial_rate:,.0f} steps/s, run() {rate:,.0f} steps/s, {ratio:,.0f}x", flush=True)
    return rows


# --------------------------------------------------------------------------- 2. floor at n=1000

def floor_comparison(n, run_seconds_target, repeats):
    A = sc.create_connectivity(n)
    chunk = engine.default_chunk_steps(n)
    k = chunk // 2  # samples per chunk of the tutorial design
    rng = np.random.default_rng(0)

    def normals():
        return rng.standard_normal((k, n))

    normal_buffer = np.empty((k, n))

    def normals_into():
        return rng.standard_normal(out=normal_buffer)

    def coins_integers():
        return rng.integers(0, 2, size=(k, n), dtype=np.uint8).astype(np.float64)

    def coins_bits():
        return np.unpackbits(np.frombuffer(rng.bytes(-(-k * n // 8)), dtype=np.uint8))[: k * n].reshape(k, n).astype(np.float64)

    outcome, stimulation = normals(), coins_bits()

    def product():
        return outcome.T @ stimulation

    pieces = {}
    for name, fn in (("normals", normals), ("normals_preallocated", normals_into), ("coins_integers", coins_integers),
                     ("coins_bits", coins_bits), ("blas_product", product)):
        fn()
        pieces[name] = median_time(fn, max(5, repeats * 2))[0]
    settle()
    coins = min(pieces["coins_integers"], pieces["coins_bits"])
    floor = pieces["normals"] + coins + pieces["blas_product"]
    strict_floor = pieces["normals_preallocated"] + coins + pieces["blas_product"]

    # run() keeps log-spaced convergence points (score and standard errors, O(n^2) each,
    # about 40 ms at n=1000): a longer run amortises them as a real run would.
    n_steps = max(4 * chunk, int(3 * run_seconds_target * 40_000) // chunk * chunk)
    settle()
    seconds, result = run_seconds(A, n_steps, repeats)
    per_sample = seconds / result.n_samples

    # run()'s own pieces on one chunk: the sample kernel, then the moments (centring + BLAS product)
    simulation = engine.Simulation(A, n_steps, sc.Perturbation(), 0, chunk, "default")
    simulation.advance(0)  # allocates its buffers
    key_samples, _ = simulation._keys(0)
    kernel_times, moment_times = [], []
    for _ in range(max(5, repeats * 2)):
        began = time.perf_counter()
        kernels._clamp_all_samples(simulation._drive_tiles, 0.5, (n + 63) // 64, key_samples, k, simulation.block_size,
                                   simulation._scratch[:2], (simulation.inputs, simulation.outputs))
        middle = time.perf_counter()
        chunk_moments(simulation.inputs[:k], simulation.outputs[:k], simulation.block_size, overwrite=True)
        kernel_times.append(middle - began)
        moment_times.append(time.perf_counter() - middle)
    run_pieces = {
        "sample_kernel": statistics.median(kernel_times),
        "moments_blas": statistics.median(moment_times),
        "whole_chunk": median_time(lambda: simulation.advance(1), max(5, repeats * 2))[0],
    }
    row = {
        "n": n, "samples_per_chunk": k, "run_steps": n_steps, "run_seconds": seconds,
        "run_us_per_sample": per_sample * 1e6,
        "floor_us_per_sample": floor / k * 1e6, "strict_floor_us_per_sample": strict_floor / k * 1e6,
        "floor_pieces_us_per_sample": {key: value / k * 1e6 for key, value in pieces.items()},
        "run_pieces_us_per_sample": {key: value / k * 1e6 for key, value in run_pieces.items()},
        "ratio": per_sample / (floor / k), "strict_ratio": per_sample / (strict_floor / k),
        "target_ratio": FLOOR_TARGET,
    }
    row["met"] = row["ratio"] <= FLOOR_TARGET
    print(f"  n={n}: run() {row['run_us_per_sample']:.1f} us/sample, floor {row['floor_us_per_sample']:.1f} "
          f"(strict {row['strict_floor_us_per_sample']:.1f}), ratio {row['ratio']:.2f}", flush=True)
    return row


# --------------------------------------------------------------------------- 3, 4. subprocesses

_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    import streamcausal as sc
    A = sc.create_connectivity(int(sys.argv[1]))
    began = time.perf_counter()
    result = sc.run(A, int(float(sys.argv[2])))
    seconds = time.perf_counter() - began
    print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "seconds": seconds, "n_samples": result.n_samples}))
""")

_IMPORT_SCRIPT = textwrap.dedent("""
    import time
    began = time.perf_counter()
    import streamcausal as sc
    imported = time.perf_counter()
    import json, sys
    n = int(sys.argv[1])
    A = sc.create_connectivity(n)
    chunk = sc.engine.default_chunk_steps(n)
    first = []
    def progress(event):
        if not first:
            first.append(time.perf_counter())
    sc.run(A, 2 * chunk, progress=progress)
    print(json.dumps({"import_seconds": imported - began, "first_chunk_seconds": first[0] - began}))
""")


def subprocess_json(script, *args, timeout=900):
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"subprocess failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss(n, small, large, rate_hint, quick):
    # Skip 1e8 (use 1e7) if the measured rate says it would take more than ~150 s.
    if not quick and rate_hint and large / rate_hint > 150:
        large = int(small * 10)
    rows = {}
    for steps in (small, large):
        rows[f"{steps:.0e}"] = dict(subprocess_json(_RSS_SCRIPT, n, steps), steps=steps)
    small_kib = rows[f"{small:.0e}"]["maxrss_kib"]
    large_kib = rows[f"{large:.0e}"]["maxrss_kib"]
    growth = large_kib / small_kib - 1
    result = {"n": n, "small_steps": small, "large_steps": large, "runs": rows,
              "growth": growth, "target_growth": RSS_TOLERANCE, "met": abs(growth) <= RSS_TOLERANCE,
              "note": None if large >= 1e8 or quick else "1e8 steps would take too long at the measured rate; 1e7 used"}
    print(f"  n={n}: peak RSS {small_kib / 1024:.0f} MiB at {small:.0e} steps, {large_kib / 1024:.0f} MiB at "
          f"{large:.0e} steps ({growth:+.1%})", flush=True)
    return result


def import_to_first_chunk(n, repeats):
    runs = [subprocess_json(_IMPORT_SCRIPT, n) for _ in range(repeats)]
    first = statistics.median(r["first_chunk_seconds"] for r in runs)
    row = {"n": n, "runs": runs, "first_chunk_seconds": first,
           "import_seconds": statistics.median(r["import_seconds"] for r in runs),
           "target_seconds": IMPORT_TARGET, "met": first <= IMPORT_TARGET}
    print(f"  n={n}: import -> first chunk {first:.2f} s (import alone {row['import_seconds']:.2f} s)", flush=True)
    return row


# --------------------------------------------------------------------------- 5. sparse stimulation

@contextlib.contextmanager
def dense_path():
    """Every design on the dense path (sparse_stimulation() False), for comparison."""
    before = engine_simulation.SPARSE_MAX_P
    engine_simulation.SPARSE_MAX_P = -1.0
    try:
        yield
    finally:
        engine_simulation.SPARSE_MAX_P = before


def timed_run(A, n_steps, design, dense=False):
    with dense_path() if dense else contextlib.nullcontext():
        began = time.perf_counter()
        result = sc.run(A, n_steps, design=design)
        return time.perf_counter() - began, result


def sparse_floor(n, k, p, repeats):
    """Seconds per chunk of k samples of the unavoidable work, in NumPy/SciPy."""
    import scipy.sparse

    rng = np.random.default_rng(0)
    outcomes = rng.random((k, n))
    coins = rng.random((k, n)) < p

    def normals():
        return rng.standard_normal((k, n))

    def coin_draws():
        return rng.random((k, n)) < p

    def scatter():  # the co-moment's O(stimulated x n) part: each stimulated source adds its samples' rows
        return scipy.sparse.csr_matrix(coins.T) @ outcomes

    pieces = {}
    for name, fn in (("normals", normals), ("coins", coin_draws), ("scatter", scatter)):
        fn()
        pieces[name] = median_time(fn, max(5, repeats))[0]
    return pieces


def run_pieces(A, n, p, chunk, repeats):
    """Seconds per chunk of run()'s own pieces on the sparse path: the sample kernel, then the moments."""
    simulation = engine.Simulation(A, 4 * chunk, sc.Perturbation(p=p), 0, chunk, "default")
    simulation.advance(0)  # allocates its buffers
    coin_words, _, scratch = simulation._fast_setup()
    key_samples, _ = simulation._keys(1)
    k = simulation._samples_in(*simulation.chunk_bounds(1))
    moments = (np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty((n, n)))

    def samples():
        kernels._clamp_all_stimulated_samples(simulation.network, p, coin_words, key_samples, k,
                                              simulation.block_size, scratch, (simulation.stimulated, simulation.outputs))

    def reduce():
        moment_kernels._stimulated_moments(simulation.stimulated, simulation.outputs, k, moments)

    return k, {"sample_kernel": median_time(samples, max(5, repeats))[0],
               "moments": median_time(reduce, max(5, repeats))[0],
               "whole_chunk": median_time(lambda: simulation.advance(1), max(5, repeats))[0]}


def sparse_section(repeats, quick):
    n, p = 1000, 0.02
    A = sc.create_connectivity(n)
    chunk = engine.default_chunk_steps(n)
    sparse_design, tutorial_design = sc.Perturbation(p=p), sc.Perturbation()
    assert engine_simulation.sparse_stimulation(sparse_design, n)
    assert not engine_simulation.sparse_stimulation(tutorial_design, n)
    n_steps = (2 if quick else 32) * chunk  # long enough to amortise the log-spaced convergence points
    contenders = {"sparse p=0.02": (sparse_design, False), "dense p=0.02": (sparse_design, True),
                  "dense p=0.5 (tutorial)": (tutorial_design, False)}
    for design, dense in contenders.values():  # warm up: load or compile every kernel
        timed_run(A, 2 * chunk, design, dense)
    settle()
    times = {name: [] for name in contenders}
    for _ in range(repeats):  # in turn within each repeat, so that load from other processes hits all alike
        for name, (design, dense) in contenders.items():
            times[name].append(timed_run(A, n_steps, design, dense)[0])
            settle(0.2)
    rows = []
    for name, (design, dense) in contenders.items():
        seconds = statistics.median(times[name])
        sparse = engine_simulation.sparse_stimulation(design, n) and not dense
        rows.append({"contender": name, "p": design.p, "path": "sparse" if sparse else "dense",
                     "steps": n_steps, "seconds": seconds, "all_seconds": times[name],
                     "steps_per_second": n_steps / seconds})
    sparse_rate = rows[0]["steps_per_second"]
    for row in rows:
        row["sparse_speedup"] = sparse_rate / row["steps_per_second"]
    print("  " + ", ".join(f"{r['contender']}: {r['steps_per_second']:,.0f} steps/s" for r in rows), flush=True)

    settle()
    k, pieces = run_pieces(A, n, p, chunk, repeats)
    floor = sparse_floor(n, k, p, repeats)
    per_sample = rows[0]["seconds"] / sparse_design.n_samples(n_steps)
    floors = {"normals": floor["normals"], "normals_coins": floor["normals"] + floor["coins"],
              "normals_coins_scatter": floor["normals"] + floor["coins"] + floor["scatter"]}
    floor_row = {
        "samples_per_chunk": k,
        "run_us_per_sample": per_sample * 1e6,
        "floor_us_per_sample": {key: value / k * 1e6 for key, value in floors.items()},
        "floor_pieces_us_per_sample": {key: value / k * 1e6 for key, value in floor.items()},
        "run_pieces_us_per_sample": {key: value / k * 1e6 for key, value in pieces.items()},
        "run_over_floor": {key: per_sample / (value / k) for key, value in floors.items()},
    }
    print(f"  run() {per_sample * 1e6:.2f} us/sample; floor (normals + coins + scatter) "
          f"{floor_row['floor_us_per_sample']['normals_coins_scatter']:.2f} us/sample", flush=True)

    settle()
    grid = []
    sizes, ps = ((100, 1000), (0.02, 0.2)) if quick else ((100, 200, 1000), (0.02, 0.05, 0.1, 0.2))
    for n_grid in sizes:
        A_grid = sc.create_connectivity(n_grid)
        steps = (1 if quick else 3) * engine.default_chunk_steps(n_grid)
        for p_grid in ps:
            design = sc.Perturbation(p=p_grid)
            with contextlib.ExitStack() as stack:  # the sparse path forced on for every cell of the grid
                for name, value in (("SPARSE_MAX_P", 1.0), ("SPARSE_MIN_NEURONS", 0)):
                    before = getattr(engine_simulation, name)
                    setattr(engine_simulation, name, value)
                    stack.callback(setattr, engine_simulation, name, before)
                timed_run(A_grid, 2 * engine.default_chunk_steps(n_grid), design)
                sparse_s = statistics.median(timed_run(A_grid, steps, design)[0] for _ in range(max(3, repeats // 2)))
            timed_run(A_grid, 2 * engine.default_chunk_steps(n_grid), design, dense=True)
            dense_s = statistics.median(timed_run(A_grid, steps, design, dense=True)[0]
                                        for _ in range(max(3, repeats // 2)))
            grid.append({"n": n_grid, "p": p_grid, "steps": steps, "sparse_seconds": sparse_s, "dense_seconds": dense_s,
                         "sparse_over_dense_speed": dense_s / sparse_s,
                         "chosen": "sparse" if engine_simulation.sparse_stimulation(design, n_grid) else "dense"})
            print(f"  n={n_grid} p={p_grid}: sparse {steps / sparse_s:,.0f} steps/s, dense {steps / dense_s:,.0f} "
                  f"({dense_s / sparse_s:.2f}x)", flush=True)
    return {"n": n, "p": p, "rows": rows, "floor": floor_row, "crossover": grid,
            "rule": {"SPARSE_MAX_P": engine_simulation.SPARSE_MAX_P,
                     "SPARSE_MIN_NEURONS": engine_simulation.SPARSE_MIN_NEURONS},
            "target_steps_per_second": SPARSE_TARGET, "met": sparse_rate >= SPARSE_TARGET}


def print_sparse(report):
    r = report.get("sparse")
    if not r:
        return
    print()
    print(f"sparse stimulation, n={r['n']} (median of {len(r['rows'][0]['all_seconds'])}, contenders in turn):")
    print(f"{'contender':>24s} {'steps/s':>10s} {'sparse p=0.02 is':>17s}")
    for row in r["rows"]:
        print(f"{row['contender']:>24s} {row['steps_per_second']:10,.0f} {row['sparse_speedup']:16.2f}x")
    print(f"  target >= {r['target_steps_per_second']:,.0f} steps/s: {'yes' if r['met'] else 'NO'}")
    f = r["floor"]
    q, fl, ratio = f["run_pieces_us_per_sample"], f["floor_us_per_sample"], f["run_over_floor"]
    print(f"  us per sample ({f['samples_per_chunk']} samples per chunk): run() {f['run_us_per_sample']:.2f} "
          f"(sample kernel {q['sample_kernel']:.2f}, moments {q['moments']:.2f}, one whole chunk {q['whole_chunk']:.2f})")
    print(f"  floor: normals {fl['normals']:.2f} (run() is {ratio['normals']:.2f}x), + coins {fl['normals_coins']:.2f} "
          f"({ratio['normals_coins']:.2f}x), + scatter {fl['normals_coins_scatter']:.2f} "
          f"({ratio['normals_coins_scatter']:.2f}x)")
    print("  crossover, sparse speed / dense speed (chosen path in brackets):")
    ps = sorted({g["p"] for g in r["crossover"]})
    print(f"{'n':>8s} " + " ".join(f"{'p=' + str(p):>13s}" for p in ps))
    for n in sorted({g["n"] for g in r["crossover"]}):
        cells = {g["p"]: g for g in r["crossover"] if g["n"] == n}
        print(f"{n:8d} " + " ".join(f"{cells[p]['sparse_over_dense_speed']:6.2f}x [{cells[p]['chosen'][0]}]".rjust(13)
                                     for p in ps))


# --------------------------------------------------------------------------- report

def print_table(report):
    print()
    print(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, numba "
          f"{report['machine']['numba']} ({report['machine']['numba_threading_layer']}, "
          f"{report['machine']['numba_threads_in_use']} threads), numpy {report['machine']['numpy']}; "
          f"load average {report['machine']['load_average_start'][0]:.2f} -> {report['machine']['load_average_end'][0]:.2f}")
    print()
    print(f"{'n':>5s} {'tutorial T':>10s} {'tutorial steps/s':>16s} {'run() steps':>13s} {'run() steps/s':>14s} "
          f"{'ns/sample':>10s} {'ratio':>8s} {'target':>7s} {'met':>4s}")
    for r in report["throughput"]:
        target = f"{r['target_ratio']:.0f}x" if r["target_ratio"] else "-"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"{r['n']:5d} {r['tutorial_steps']:10,d} {r['tutorial_steps_per_second']:16,.0f} {r['run_steps']:13,d} "
              f"{r['run_steps_per_second']:14,.0f} {r['run_ns_per_sample']:10,.0f} {r['ratio']:7,.0f}x {target:>7s} {met:>4s}")
    f = report.get("floor")
    if f:
        p = f["floor_pieces_us_per_sample"]
        q = f["run_pieces_us_per_sample"]
        print()
        print(f"n={f['n']}, {f['samples_per_chunk']} samples per chunk, us per sample:")
        print(f"  run()                {f['run_us_per_sample']:8.2f}   (its pieces: sample kernel {q['sample_kernel']:.2f}, "
              f"BLAS moments {q['moments_blas']:.2f}, one whole chunk {q['whole_chunk']:.2f})")
        print(f"  floor                {f['floor_us_per_sample']:8.2f}   (normals {p['normals']:.2f}, coins "
              f"{min(p['coins_integers'], p['coins_bits']):.2f}, BLAS product {p['blas_product']:.2f})")
        print(f"  run() / floor        {f['ratio']:8.2f}   target <= {f['target_ratio']}  "
              f"{'yes' if f['met'] else 'NO'}")
        print(f"  strict floor         {f['strict_floor_us_per_sample']:8.2f}   (normals into a preallocated array "
              f"{p['normals_preallocated']:.2f}); run() / strict floor {f['strict_ratio']:.2f}")
    m = report.get("memory")
    if m:
        runs = list(m["runs"].values())
        print()
        print(f"peak RSS at n={m['n']}: " + ", ".join(f"{r['steps']:.0e} steps {r['maxrss_kib'] / 1024:.0f} MiB "
                                                     f"({r['seconds']:.1f} s)" for r in runs)
              + f"; growth {m['growth']:+.1%}, target within {m['target_growth']:.0%}  {'yes' if m['met'] else 'NO'}"
              + (f"  [{m['note']}]" if m["note"] else ""))
    s = report.get("startup")
    if s:
        print(f"import -> first chunk (n={s['n']}, warm cache): {s['first_chunk_seconds']:.2f} s "
              f"(import {s['import_seconds']:.2f} s), target <= {s['target_seconds']:.0f} s  "
              f"{'yes' if s['met'] else 'NO'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: short runs, 1e5 vs 1e6 steps for RSS")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--sizes", default="6,100,200,1000", help="comma-separated n for the throughput table")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median); default 3, quick 1")
    parser.add_argument("--seconds", type=float, default=None, help="target seconds per run() timing (default 2)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: throughput,floor,memory,startup,sparse")
    parser.add_argument("--sparse", action="store_true", help="run only part 5, sparse stimulation (JSON: "
                        "benchmarks/results/engine_sparse.json unless --json)")
    args = parser.parse_args()
    if args.sparse:
        return sparse_main(args)
    repeats = args.repeats or (1 if args.quick else 3)
    seconds = args.seconds or (0.2 if args.quick else 2.0)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    skip = set(filter(None, args.skip.split(",")))

    report = {"machine": machine_info(), "quick": args.quick, "repeats": repeats}
    began = time.perf_counter()
    print("warming up (Numba cache load or compile) ...", flush=True)
    for n in sorted(set(sizes) | {100}):
        A = sc.create_connectivity(n)
        sc.run(A, 2 * engine.default_chunk_steps(n) + 1)
    np.random.seed(0)
    tutorial.get_perturbed_connectivity_all_neurons(tutorial.simulate_neurons_perturb(sc.create_connectivity(6), 100))
    import numba

    report["machine"]["numba_threading_layer"] = numba.threading_layer()

    if "throughput" not in skip:
        print("1. run() vs the tutorial", flush=True)
        report["throughput"] = throughput(sizes, seconds, repeats, args.quick)
    if "floor" not in skip and 1000 in sizes:
        print("2. n=1000: run() vs the floor of unavoidable work", flush=True)
        report["floor"] = floor_comparison(1000, seconds, repeats)
    if "memory" not in skip:
        print("3. peak RSS", flush=True)
        rate = None
        for row in report.get("throughput", []):
            if row["n"] == 100:
                rate = row["run_steps_per_second"]
        small, large = (1e5, 1e6) if args.quick else (1e6, 1e8)
        report["memory"] = peak_rss(100, small, large, rate, args.quick)
    if "startup" not in skip:
        print("4. import to first chunk", flush=True)
        report["startup"] = import_to_first_chunk(100, 1 if args.quick else 3)
    if "sparse" not in skip:
        print("5. sparse stimulation", flush=True)
        report["sparse"] = sparse_section(max(5, repeats) if not args.quick else 1, args.quick)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["seconds"] = time.perf_counter() - began
    print_table(report)
    print_sparse(report)
    print(f"\n(benchmark took {report['seconds']:.0f} s)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=float)


def sparse_main(args):
    import numba

    repeats = args.repeats or (1 if args.quick else 5)
    report = {"machine": machine_info(), "quick": args.quick, "repeats": repeats}
    report["machine"]["numba_threading_layer"] = None
    began = time.perf_counter()
    print("5. sparse stimulation", flush=True)
    report["sparse"] = sparse_section(repeats, args.quick)
    report["machine"]["numba_threading_layer"] = numba.threading_layer()
    report["machine"]["load_average_end"] = os.getloadavg()
    report["seconds"] = time.perf_counter() - began
    m = report["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, numba {m['numba']} ({m['numba_threading_layer']}, "
          f"{m['numba_threads_in_use']} threads), numpy {m['numpy']}; load average "
          f"{m['load_average_start'][0]:.2f} -> {m['load_average_end'][0]:.2f}")
    print_sparse(report)
    print(f"\n(benchmark took {report['seconds']:.0f} s)")
    path = args.json or (None if args.quick else SPARSE_JSON)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(report, f, indent=2, default=float)


if __name__ == "__main__":
    main()
