"""Follow mode against estimate(), and the delay from a row marked complete to the served estimate.

1. **Throughput.** On one finished growing recording (``activity`` (T, n) float32,
   ``stimulation`` (T, n) uint8, ``clamped`` (T,) bool, the tutorial's design, chunked
   along time), this times, alternating within each repeat in this one process:

   * ``estimate``: ``streamcausal.estimate_store`` on the recording;
   * ``follow``: a :class:`streamcausal.live.Follower` with an output store, from the
     first poll to its return (every row read and folded, the output and checkpoint written);
     each repeat writes a new output store, as a first follow does (removing the previous
     repeat's store is timed apart: ``output_removal_seconds``, what ``--overwrite`` adds);
   * ``follow, no output``: the same without an output store;
   * ``follow, serial reads``: the same with the read-ahead thread off
     (``io.recording._READ_AHEAD = False``): each window read, then folded, as before it was added.

   Ratio = estimate seconds / follow seconds (follow's speed as a share of estimate's). The
   process's CPU seconds (all threads) are recorded too: on a loaded machine they show
   extra work where wall time may only show waiting for a core.
2. **Delay.** A writer process appends pieces at random intervals, logging the time it
   raised ``rows_complete``; ``streamcausal follow --serve`` runs at its default settings
   in another process; this process polls ``/estimate.json`` and records when
   ``rows_consumed`` first covers each piece. Delay = seen - marked.

Example::

    python benchmarks/bench_follow.py --neurons 100 --steps 1e6 --repeats 5 --json benchmarks/results/follow.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request

import numpy as np

TARGETS = {"throughput_ratio": 0.8, "delay_seconds": 2.0}

WRITER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from streamcausal.live import GrowingRecording
    store, data, pieces, rows, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    saved = np.load(data)
    recording = GrowingRecording.open(store)
    rng = np.random.default_rng(seed)
    t = recording.rows_complete
    for _ in range(pieces):
        time.sleep(float(rng.uniform(0.2, 0.6)))
        k = int(rng.integers(rows // 2, rows * 3 // 2))
        recording.append(saved["activity"][t:t + k], saved["stimulation"][t:t + k], saved["clamped"][t:t + k])
        t += k
        print(json.dumps({"rows": t, "time": time.time()}), flush=True)
    recording.finish()
""")

FOLLOW = ("from streamcausal import cli; from streamcausal.cli import follow; "
          "cli.SUBCOMMANDS.setdefault('follow', follow); raise SystemExit(cli.main())")


def count(text: str) -> int:
    return int(float(text))


def build_recording(directory, n, steps, chunk_rows, *, finished=True, rows=None):
    """A growing recording of the tutorial's design; the trajectory is also saved for the writer process."""
    import streamcausal as sc
    from streamcausal.live import GrowingRecording

    A = sc.create_connectivity(n, density=0.1)
    trajectory = sc.simulate(A, steps, design=sc.Perturbation(), seed=0)
    store = os.path.join(directory, f"recording_n{n}.zarr")
    recording = GrowingRecording.create(store, n, chunk_rows=chunk_rows, overwrite=True)
    stop = steps if rows is None else rows
    for start in range(0, stop, 50_000):
        end = min(stop, start + 50_000)
        recording.append(trajectory.activity[start:end].astype(np.float32),
                         trajectory.stimulation[start:end].astype(np.uint8), trajectory.clamped[start:end])
    if finished:
        recording.finish()
    data = os.path.join(directory, f"trajectory_n{n}.npz")
    np.savez(data, activity=trajectory.activity.astype(np.float32), stimulation=trajectory.stimulation.astype(np.uint8),
             clamped=trajectory.clamped)
    return store, data


def throughput(store, directory, repeats):
    import streamcausal as sc
    from streamcausal.live import Follower

    outputs = iter(range(10**6))
    removals = []

    def fresh_output():
        """A new output path; the previous one is removed here, outside the timed follow."""
        number = next(outputs)
        previous = os.path.join(directory, f"follow-output-{number - 1}.zarr")
        if os.path.exists(previous):
            began = time.perf_counter()
            shutil.rmtree(previous)
            removals.append(time.perf_counter() - began)
        return os.path.join(directory, f"follow-output-{number}.zarr")

    def run_estimate():
        return sc.estimate_store(store).effect

    def run_follow(output):
        follower = Follower(store, output, mode="w")
        assert follower.follow(interval=0.05) == "finished"
        return follower.state.effect

    def run_follow_serial(_):
        import streamcausal.io.recording as recording

        recording._READ_AHEAD = False
        try:
            return run_follow(None)
        finally:
            recording._READ_AHEAD = None

    # Each contender is (prepare, run): prepare() is not timed (it makes a new output path).
    contenders = {"estimate": (lambda: None, lambda _: run_estimate()), "follow": (fresh_output, run_follow),
                  "follow, no output": (lambda: None, run_follow), "follow, serial reads": (lambda: None, run_follow_serial)}
    effects = {name: run(prepare()) for name, (prepare, run) in contenders.items()}  # warm-up (Numba, page cache)
    times = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (prepare, run) in contenders.items():
            argument = prepare()
            began, began_cpu = time.perf_counter(), time.process_time()
            run(argument)
            times[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - began_cpu)
    difference = max(float(np.nanmax(np.abs(effects[name] - effects["estimate"]))) for name in contenders)
    return times, cpu, difference, removals


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def delay(directory, n, steps, chunk_rows, pieces, piece_rows, seed):
    """Writer process + `streamcausal follow --serve` (defaults) + this process polling /estimate.json."""
    store, data = build_recording(directory, n, steps, chunk_rows, finished=False, rows=piece_rows)
    out = os.path.join(directory, "delay-output.zarr")
    shutil.rmtree(out, ignore_errors=True)
    port = _free_port()
    follow = subprocess.Popen([sys.executable, "-c", FOLLOW, "follow", store, "--output", out, "--serve", str(port),
                               "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/estimate.json"
    deadline = time.monotonic() + 120
    while True:  # up once it serves an estimate of the first rows
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if json.loads(response.read())["rows_consumed"] >= piece_rows:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or follow.poll() is not None:
            raise RuntimeError(f"streamcausal follow did not start: {follow.stderr.read() if follow.poll() else ''}")
        time.sleep(0.1)
    script = os.path.join(directory, "writer.py")
    with open(script, "w") as handle:
        handle.write(WRITER)
    writer = subprocess.Popen([sys.executable, script, store, data, str(pieces), str(piece_rows), str(seed)],
                              stdout=subprocess.PIPE, text=True)
    marks = []  # the writer's {"rows", "time"} lines, read as they come
    reader = threading.Thread(target=lambda: marks.extend(json.loads(line) for line in writer.stdout if line.strip()),
                              daemon=True)
    reader.start()
    seen = []  # (time, rows_consumed) at every poll
    while writer.poll() is None or reader.is_alive() or (marks and seen[-1][1] < marks[-1]["rows"]):
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
        seen.append((time.time(), json.loads(body)["rows_consumed"]))
        time.sleep(0.02)
    follow.wait(timeout=60)
    delays = []
    for mark in marks:
        first = next((when for when, rows in seen if rows >= mark["rows"]), None)
        if first is not None:
            delays.append(first - mark["time"])
    return delays


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--steps", type=count, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pieces", type=int, default=20, help="appends timed for the delay")
    parser.add_argument("--piece-rows", type=int, default=2_000)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)

    directory = tempfile.mkdtemp(prefix="streamcausal-bench-follow-")
    try:
        store, _ = build_recording(directory, args.neurons, args.steps, args.chunk_rows)
        load_before = os.getloadavg()
        times, cpu, difference, removals = throughput(store, directory, args.repeats)
        load_after = os.getloadavg()
        delays = delay(directory, args.neurons, args.pieces * args.piece_rows * 2, args.chunk_rows, args.pieces,
                       args.piece_rows, seed=1)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    ratio = medians["estimate"] / medians["follow"]
    print(f"n = {args.neurons}, T = {args.steps:,}, chunks of {args.chunk_rows} rows, median of {args.repeats}; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, on {os.cpu_count()} CPUs")
    print(f"{'contender':<22} {'seconds':>8} {'rows/s':>12} {'speed vs estimate':>18} {'CPU s':>7} {'CPU vs estimate':>16}")
    for name, seconds in medians.items():
        print(f"{name:<22} {seconds:8.3f} {args.steps / seconds:12,.0f} {medians['estimate'] / seconds:17.2f}x "
              f"{cpu_medians[name]:7.3f} {cpu_medians[name] / cpu_medians['estimate']:15.2f}x")
    print(f"max |difference in effect| {difference:.2e}")
    removal = statistics.median(removals) if removals else float("nan")
    print(f"removing a previous output store (what replacing one with --overwrite adds): median {removal:.3f} s")
    median_delay = statistics.median(delays) if delays else float("nan")
    print(f"delay from rows_complete to /estimate.json over {len(delays)} appends: median {median_delay:.3f} s, "
          f"max {max(delays) if delays else float('nan'):.3f} s (defaults: --interval 0.5, --write-seconds 2)")
    met = "met" if ratio >= TARGETS["throughput_ratio"] else "NOT met"
    print(f"targets: throughput >= {TARGETS['throughput_ratio']}x: {met} "
          f"({ratio:.2f}x); delay < {TARGETS['delay_seconds']} s: "
          f"{'met' if median_delay < TARGETS['delay_seconds'] else 'NOT met'} ({median_delay:.3f} s)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({
                "benchmark": "follow", "neurons": args.neurons, "steps": args.steps, "chunk_rows": args.chunk_rows,
                "repeats": args.repeats, "seconds": times, "median_seconds": medians, "throughput_ratio": ratio,
                "cpu_seconds": cpu, "median_cpu_seconds": cpu_medians, "output_removal_seconds": removals,
                "throughput_ratio_serial_reads": medians["estimate"] / medians["follow, serial reads"],
                "loadavg_throughput": {"before": load_before, "after": load_after},
                "max_abs_difference": difference, "delays_seconds": delays, "median_delay_seconds": median_delay,
                "max_delay_seconds": max(delays) if delays else None, "targets": TARGETS,
                "loadavg": os.getloadavg(), "cpus": os.cpu_count(), "python": platform.python_version(),
                "machine": platform.platform(),
            }, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
