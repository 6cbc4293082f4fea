"""Cold start: `streamcausal run --steps 1e5` from an empty Numba cache against a warm one, side by side.

Every measurement is a fresh subprocess. Each repeat makes an empty temporary
NUMBA_CACHE_DIR and runs, in this order:

* ``import streamcausal`` alone (cold cache; the import compiles nothing);
* compile: ``streamcausal.distributed.compile_kernels`` for the command's default plan
  (n=6, the tutorial's design), cold, then again on the cache it filled (warm); it is
  what a run compiles, in the process that compiles it;
* the command ``streamcausal run --steps 1e5 --no-report`` (defaults: 6 neurons, the
  tutorial's design, one seed per core on a LocalCluster) on another empty cache (cold),
  then again on that cache (warm);
* ``run(A, 1e5, seed=Seeds(2, workers=2))`` on an empty cache, with the kernels compiled
  in this process before the workers run (the default) and, for comparison, by each
  worker; it counts the kernels each side compiled (Numba cache misses).

The table shows the median of the repeats, with CPU seconds of the compile (the
compile is single-threaded, so CPU time is what it costs on an idle core; wall time
also counts other processes on a shared machine). ``--kernels`` adds one more cold
compile that records the compile time of each kernel (Numba's ``numba:compile``
events: inclusive of the kernels it calls, and its own). ``--pythonpath DIR`` measures
a copy of the package placed in DIR instead of the installed one.

``--baseline DIR`` adds a side-by-side comparison of the package against another copy
of it (in DIR, e.g. ``git archive`` of an older commit), interleaved repeat by repeat so
both see the same machine load: per design (the default run; sparse stimulation at
n = 140, p = 0.05; observation), the CPU seconds of the cold compile
on an empty cache, and the warm speed of ``run()`` (CPU and wall seconds, cache filled).

    python benchmarks/bench_coldstart.py --kernels --baseline /tmp/before --json benchmarks/results/coldstart.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

TARGET_SECONDS = 20.0

_IMPORT = """
import time
began = time.perf_counter()
import streamcausal
print(time.perf_counter() - began)
"""

# The command's default plan: cli_chunk_steps and the library's Plan, as `streamcausal run --steps 1e5` builds them.
_COMPILE = """
import sys, time
import streamcausal as sc
from streamcausal.cli.run import RUN_DEFAULTS, cli_chunk_steps
from streamcausal.distributed import compile_kernels
from streamcausal.engine import Plan
steps = int(float(sys.argv[1]))
A = sc.create_connectivity(RUN_DEFAULTS["neurons"])
plan = Plan(A, steps, sc.Perturbation(), cli_chunk_steps(A.shape[0], steps), "default")
wall, cpu = time.perf_counter(), time.process_time()
compile_kernels(plan)
print(time.perf_counter() - wall, time.process_time() - cpu)
"""

# Two seeds on a LocalCluster of two workers started by streamcausal, as the command runs them; with
# "parent" the kernels are compiled here first (the default), with "workers" each worker compiles them.
# Prints the wall seconds and how many kernels this process and the workers compiled (cache misses).
_WORKERS = """
import sys, time
import numba
import streamcausal as sc
from streamcausal import distributed
from streamcausal._kernels import moments, network, rng

def compiled():
    return sum(sum(value.stats.cache_misses.values()) for module in (moments, network, rng)
               for value in vars(module).values() if isinstance(value, numba.core.dispatcher.Dispatcher))

def compiled_on_worker():
    from streamcausal._kernels import moments, network, rng
    return sum(sum(value.stats.cache_misses.values()) for module in (moments, network, rng)
               for value in vars(module).values() if isinstance(value, numba.core.dispatcher.Dispatcher))

if sys.argv[2] == "workers":
    distributed._workers_share_cache = lambda client: False
open_client = distributed.open_client
clients = []
distributed.open_client = lambda *args: clients.append(open_client(*args)) or (clients[-1][0], False)
if __name__ == "__main__":
    steps = int(float(sys.argv[1]))
    A = sc.create_connectivity(6)
    began = time.perf_counter()
    sc.run(A, steps, seed=sc.Seeds(2, workers=2), chunk_steps=4096)
    seconds = time.perf_counter() - began
    client = clients[0][0]
    on_workers = sum(client.run(compiled_on_worker).values())
    distributed.close_client(client)
    print(seconds, compiled(), on_workers)
"""

# One design's kernels compiled by compile_kernels (CPU seconds, this process), then the warm speed of
# run() on them: argv = steps, neurons, design, rng, repeats of the run, the package's directory.
_DESIGN = """
import sys, time
import streamcausal as sc
from streamcausal.distributed import compile_kernels
from streamcausal.engine import Plan
steps, n, design, rng, repeats = int(float(sys.argv[1])), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
design = {"default": sc.Perturbation(), "sparse": sc.Perturbation(p=0.05), "observation": sc.Observation()}[design]
if sys.argv[6] != "installed" and not sc.__file__.startswith(sys.argv[6]):
    raise RuntimeError(f"measured {sc.__file__}, not the copy in {sys.argv[6]}")
A = sc.create_connectivity(n, random_state=4)
cpu = time.process_time()
compile_kernels(Plan(A, steps, design, 4096, rng))
compile_cpu = time.process_time() - cpu
runs = []
for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    sc.run(A, steps, design=design, seed=1, rng=rng)
    runs.append((time.process_time() - cpu, time.perf_counter() - wall))
print(compile_cpu, *(min(runs) if runs else (float("nan"), float("nan"))))
"""

# (name, neurons, design, rng, steps of the warm run) of the --baseline comparison
_DESIGNS = [("default run (n=6)", 6, "default", "default", 2_000_000),
            ("sparse stimulation (n=140, p=0.05)", 140, "sparse", "default", 200_000),
            ("observation (n=6)", 6, "observation", "default", 1_000_000)]


def _compare(baseline, pythonpath, repeats, designs):
    """Cold compile CPU and warm run() speed of each of ``designs``, the baseline copy and this one interleaved."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="coldstart-compare-") as root:
        for name, n, design, rng, steps in _DESIGNS:
            if design not in designs:
                continue
            samples = {"before": [], "after": []}
            for repeat in range(repeats):
                for side, path in (("before", baseline), ("after", pythonpath)):
                    cache = os.path.join(root, f"{design}-{rng}-{side}-{repeat}")
                    os.makedirs(cache)
                    # cold: compiles, fills the cache
                    where = path or "installed"
                    compile_cpu = float(_python(_DESIGN, cache, path, steps, n, design, rng, 0, where).split()[0])
                    warm = _python(_DESIGN, cache, path, steps, n, design, rng, 3, where).split()
                    samples[side].append({"compile_cpu": compile_cpu, "run_cpu": float(warm[1]), "run_wall": float(warm[2])})
            row = {"design": name, "steps": steps, "samples": samples}
            for key in ("compile_cpu", "run_cpu", "run_wall"):
                before = statistics.median(sample[key] for sample in samples["before"])
                after = statistics.median(sample[key] for sample in samples["after"])
                row[key] = {"before": before, "after": after, "ratio": after / before}
            rows.append(row)
            print(f"{name:36s} compile CPU {row['compile_cpu']['before']:6.2f} -> {row['compile_cpu']['after']:6.2f} s "
                  f"({row['compile_cpu']['ratio']:.2f}x); warm run CPU {row['run_cpu']['before']:.3f} -> "
                  f"{row['run_cpu']['after']:.3f} s ({row['run_cpu']['ratio']:.2f}x), wall "
                  f"{row['run_wall']['before']:.3f} -> {row['run_wall']['after']:.3f} s ({row['run_wall']['ratio']:.2f}x)",
                  flush=True)
    return rows


_KERNELS = """
import json, sys, time
from numba.core import event
stack, rows = [], []

class Timer(event.Listener):
    def on_start(self, ev):
        function = ev.data["dispatcher"].py_func
        stack.append([f"{function.__module__}.{function.__qualname__}", time.process_time(), 0.0, str(ev.data["args"])])

    def on_end(self, ev):
        name, began, inner, args = stack.pop()
        total = time.process_time() - began
        if stack:
            stack[-1][2] += total
        rows.append({"kernel": name, "inclusive": total, "self": total - inner, "signature": args})

event.register("numba:compile", Timer())
""" + _COMPILE.replace("print(time.perf_counter() - wall, time.process_time() - cpu)", "print(json.dumps(rows))")


def _python(code, cache, pythonpath, *args):
    environment = {**os.environ, "NUMBA_CACHE_DIR": cache, "MPLBACKEND": "Agg"}
    if pythonpath:
        environment["PYTHONPATH"] = pythonpath + os.pathsep + environment.get("PYTHONPATH", "")
    # cwd: the cache directory, since `python -c` puts its cwd first on sys.path (a checkout would shadow --pythonpath)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=environment,
                          capture_output=True, text=True, check=True, cwd=cache)
    return done.stdout.strip()


def _command(cache, pythonpath, steps):
    """Wall seconds of `streamcausal run --steps STEPS --no-report`, and its stderr (the progress lines)."""
    environment = {**os.environ, "NUMBA_CACHE_DIR": cache, "MPLBACKEND": "Agg"}
    if pythonpath:
        environment["PYTHONPATH"] = pythonpath + os.pathsep + environment.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as work:
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "streamcausal", "run", "--steps", str(steps), "--no-report"],
                              env=environment, capture_output=True, text=True, check=True, cwd=work)
        return time.perf_counter() - began, done.stderr


def _kernel_table(rows):
    """Per kernel (summed over its signatures): signatures, inclusive and own compile CPU seconds."""
    table = {}
    for row in rows:
        entry = table.setdefault(row["kernel"], {"kernel": row["kernel"], "signatures": 0, "inclusive": 0.0, "self": 0.0})
        entry["signatures"] += 1
        entry["inclusive"] += row["inclusive"]
        entry["self"] += row["self"]
    return sorted(table.values(), key=lambda entry: -entry["self"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=float, default=1e5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kernels", action="store_true", help="also record each kernel's compile time")
    parser.add_argument("--pythonpath", default=None, help="measure the package copy in this directory")
    parser.add_argument("--baseline", default=None, help="also compare with the package copy in this directory")
    parser.add_argument("--designs", default="default,sparse,observation", help="designs of --baseline")
    parser.add_argument("--compare-only", action="store_true",
                        help="only the --baseline comparison; with --json, replace that part of the existing file")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    steps = int(args.steps)
    load_before = os.getloadavg()
    comparison = None
    if args.baseline:
        print(f"median of {args.repeats}, before = {args.baseline}, after = {args.pythonpath or 'installed'}")
        comparison = _compare(args.baseline, args.pythonpath, args.repeats, args.designs.split(","))
    if args.compare_only:
        if args.json:
            with open(args.json) as file:
                results = json.load(file)
            results.update({"baseline": args.baseline, "comparison": comparison, "comparison_load_average": {
                "before": load_before, "after": os.getloadavg()}})
            with open(args.json, "w") as file:
                json.dump(results, file, indent=2)
        return
    repeats = []
    with tempfile.TemporaryDirectory(prefix="coldstart-") as root:
        for repeat in range(args.repeats):
            caches = [os.path.join(root, f"{repeat}-{kind}") for kind in ("import", "compile", "command")]
            for cache in caches:
                os.makedirs(cache)
            row = {"import": float(_python(_IMPORT, caches[0], args.pythonpath))}
            for state in ("cold", "warm"):
                wall, cpu = map(float, _python(_COMPILE, caches[1], args.pythonpath, steps).split())
                row[f"compile_{state}"], row[f"compile_{state}_cpu"] = wall, cpu
            for state in ("cold", "warm"):
                row[f"command_{state}"], row[f"command_{state}_stderr"] = _command(caches[2], args.pythonpath, steps)
            for where in ("parent", "workers"):
                cache = os.path.join(root, f"{repeat}-{where}")
                os.makedirs(cache)
                seconds, here, on_workers = _python(_WORKERS, cache, args.pythonpath, steps, where).split()[-3:]
                row[f"seeds_compiled_in_{where}"] = float(seconds)
                row[f"seeds_compiled_in_{where}_kernels"] = {"this process": int(here), "workers": int(on_workers)}
            row["load"] = os.getloadavg()
            repeats.append(row)
            if args.json:  # the repeats so far, in case a long run on a busy machine is cut short
                with open(args.json + ".partial", "w") as file:
                    json.dump({"load_average_before": load_before, "repeats": repeats}, file, indent=2)
            print(f"repeat {repeat + 1}: " + ", ".join(f"{key} {value:.2f}" for key, value in row.items()
                                                       if isinstance(value, float)), flush=True)
        kernels = None
        if args.kernels:
            cache = os.path.join(root, "kernels")
            os.makedirs(cache)
            kernels = _kernel_table(json.loads(_python(_KERNELS, cache, args.pythonpath, steps).splitlines()[-1]))

    def median(key):
        return statistics.median(row[key] for row in repeats)

    table = [
        ("import streamcausal", median("import"), median("import"), None),
        ("compile the run's kernels (wall)", median("compile_cold"), median("compile_warm"), None),
        ("compile the run's kernels (CPU)", median("compile_cold_cpu"), median("compile_warm_cpu"), None),
        (f"streamcausal run --steps {steps:.0e}", median("command_cold"), median("command_warm"), TARGET_SECONDS),
    ]
    compiled_in = {where: median(f"seeds_compiled_in_{where}") for where in ("parent", "workers")}
    print(f"\nmedian of {args.repeats} (seconds); load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"{'':38s} {'empty cache':>12s} {'warm cache':>11s} {'ratio':>7s}")
    for name, cold, warm, _ in table:
        print(f"{name:38s} {cold:12.2f} {warm:11.2f} {cold / warm:7.1f}x")
    print(f"\nrun(Seeds(2)) on its own LocalCluster of 2 workers, empty cache: kernels compiled in this process "
          f"first {compiled_in['parent']:.2f} s, in each worker {compiled_in['workers']:.2f} s "
          f"({compiled_in['workers'] / compiled_in['parent']:.2f}x)")
    for where in ("parent", "workers"):
        counts = [row[f"seeds_compiled_in_{where}_kernels"] for row in repeats]
        print(f"  compiled in {where}: kernels compiled (cache misses) per repeat: {counts}")
    command_cold = median("command_cold")
    met = command_cold <= TARGET_SECONDS
    print(f"\ntarget: empty cache to the end of the command <= {TARGET_SECONDS:g} s: "
          f"{'met' if met else 'not met'} ({command_cold:.1f} s)")
    if kernels:
        print(f"\ncompile CPU seconds per kernel (one cold compile; {sum(k['self'] for k in kernels):.1f} s in all)")
        print(f"{'kernel':60s} {'sigs':>4s} {'inclusive':>9s} {'own':>6s}")
        for entry in kernels:
            if entry["self"] >= 0.1:
                print(f"{entry['kernel']:60s} {entry['signatures']:4d} {entry['inclusive']:9.2f} {entry['self']:6.2f}")
    if args.json:
        from numba import __version__ as numba_version

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as file:
            json.dump({
                "benchmark": "coldstart",
                "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(), "numba": numba_version},
                "load_average_before": load_before, "load_average_after": os.getloadavg(),
                "steps": steps, "repeats": repeats, "pythonpath": args.pythonpath,
                "median": {name: {"empty_cache": cold, "warm_cache": warm} for name, cold, warm, _ in table},
                "seeds_on_a_local_cluster_empty_cache": compiled_in,
                "target": {"seconds": TARGET_SECONDS, "measured": command_cold, "met": met},
                "kernels": kernels, "baseline": args.baseline, "comparison": comparison,
            }, file, indent=2)


if __name__ == "__main__":
    main()
