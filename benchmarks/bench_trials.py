"""estimate_trials on a ~1 GB NWB/HDF5 recording, side by side with just reading it.

Contenders, each in a fresh subprocess on the same file (so peak RSS is its own):

* ``read``: ``read_nwb``, then every row of the dF/F dataset read once, in the windows
  ``estimate_trials`` uses — the I/O and decoding floor;
* ``read + window means``: the same, plus each trial's window and baseline means (the
  arithmetic every trial estimator has to do, with no statistics);
* ``estimate_trials (regression, sequential)``: the whole estimator, reading one window
  and then using it (``recording._READ_AHEAD = False``, the old path);
* ``estimate_trials (regression)`` and ``(difference)``: the whole estimator as shipped,
  one thread reading the next window while this one is used.

Times are of the pass over the data, after ``read_nwb`` opened the file (reported
apart: it is the same for all); medians of ``--repeats`` (default 5), the contenders
in an order that rotates between repeats, with CPU seconds and the load average. Peak
RSS is measured for the full recording and for its first quarter, to show it does not
depend on T. Usage::

    python benchmarks/bench_trials.py                      # ~1 GB: 100,000 frames x 2,500 ROIs
    python benchmarks/bench_trials.py --frames 20000 --rois 500 --repeats 1   # quick
    python benchmarks/bench_trials.py --json benchmarks/results/trials.json
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
import time
from pathlib import Path

import numpy as np

RATE = 30.0
WINDOW = (0.0, 1.0)
BASELINE = (-0.5, 0.0)

_CHILD = r"""
import json, sys, time
import numpy as np
import os
import streamcausal as sc
from streamcausal.io import recording as _recording
from streamcausal.io.responses import _FrameClock, _plan_trials, _mean_rows
from streamcausal.io.recording import _default_chunk_steps, _Source

def cpu_seconds():
    times = os.times()
    return times.user + times.system

def high_water_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

path, what = sys.argv[1], sys.argv[2]
warm = np.random.default_rng(0).random((600, 4))
sc.estimate_trials(warm, sc.Trials([2.0, 5.0, 9.0], [[0], [], [1]]), rate=30.0)
if what.endswith("-sequential"):
    _recording._READ_AHEAD = False
    what = what[: -len("-sequential")]
before = high_water_mb()
began = time.perf_counter()
with sc.read_nwb(path, activity="dff", trials="photostim") as recording:
    opened = time.perf_counter()
    cpu = cpu_seconds()
    source = _Source(recording.activity, "activity")
    T, n = source.shape
    chunk = _default_chunk_steps([source], n)
    if what == "read":
        for start in range(0, T, chunk):
            source.read(start, min(start + chunk, T))
        trials = recording.trials.n_trials
    elif what == "means":
        clock = _FrameClock(T, recording.rate, recording.times, recording.starting_time, chunk)
        plan = _plan_trials(recording.trials.bound_to(n), clock, (0.0, 1.0), (-0.5, 0.0))
        intervals, trials = plan["intervals"], 0
        k = 0
        for start in range(0, T, chunk):
            stop = min(start + chunk, T)
            block = source.read(start, stop)
            while k < len(intervals) and intervals[k, :, 1].max() <= stop:
                (a, b), (c, d) = intervals[k]
                if a >= start and c >= start:
                    _mean_rows([block[a - start:b - start]]) - _mean_rows([block[c - start:d - start]])
                k += 1
                trials += 1
    else:
        result = sc.estimate_trials(recording, window=(0.0, 1.0), baseline=(-0.5, 0.0), method=what)
        result.effect  # the estimator's linear algebra is part of the cost
        trials = result.n_trials
done = time.perf_counter()
print(json.dumps({"seconds": done - opened, "cpu_seconds": cpu_seconds() - cpu, "open_seconds": opened - began,
                  "rss_growth_mb": high_water_mb() - before, "trials": trials, "load_average": os.getloadavg()[0]}))
"""


def write_recording(path: Path, frames: int, rois: int, seed: int = 0) -> dict:
    """A dF/F RoiResponseSeries (float32, chunks of 256 frames) and a photostim trials table with DTR targets."""
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from hdmf.data_utils import DataChunkIterator

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from nwb_files import add_rois, add_trials, new_nwbfile, write

    rng = np.random.default_rng(seed)
    onsets = np.arange(2.0, frames / RATE - 2.0, 1.0 / 3.0)
    targets = [list(rng.choice(rois, size=rng.integers(1, 5), replace=False)) if rng.random() > 0.1 else []
               for _ in onsets]

    def rows():
        block_rng = np.random.default_rng(seed + 1)
        for start in range(0, frames, 4096):
            block = (0.2 * block_rng.standard_normal((min(4096, frames - start), rois))).astype(np.float32)
            yield from block

    nwbfile = new_nwbfile("bench-trials")
    rois_table = add_rois(nwbfile, rois)
    from pynwb.ophys import DfOverF

    module = nwbfile.create_processing_module("ophys", "dF/F") if "ophys" not in nwbfile.processing \
        else nwbfile.processing["ophys"]
    if "DfOverF" not in module.data_interfaces:
        module.add(DfOverF(name="DfOverF"))
    region = rois_table.create_roi_table_region(description="all ROIs", region=list(range(rois)))
    data = H5DataIO(DataChunkIterator(data=rows(), maxshape=(frames, rois), dtype=np.dtype("float32"),
                                      buffer_size=4096), chunks=(256, rois))
    module["DfOverF"].create_roi_response_series(name="dff", data=data, rois=region, unit="n.a.", rate=RATE,
                                                 starting_time=0.0)
    add_trials(nwbfile, onsets, targets, name="photostim", table=rois_table)
    write(nwbfile, path)
    return {"frames": frames, "rois": rois, "trials": len(onsets), "bytes": os.path.getsize(path)}


def run_child(path: Path, what: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), what], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list) -> dict:
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
            "open_seconds": statistics.median(r["open_seconds"] for r in runs),
            "rss_growth_mb": max(r["rss_growth_mb"] for r in runs), "trials": runs[0]["trials"],
            "all_seconds": [r["seconds"] for r in runs]}


CONTENDERS = (("read", "read"), ("read + window means", "means"),
              ("estimate_trials (regression, sequential)", "regression-sequential"),
              ("estimate_trials (regression)", "regression"),
              ("estimate_trials (difference)", "difference"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--rois", type=int, default=2_500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-trials-"))
    try:
        began = time.perf_counter()
        full = write_recording(workdir / "full.nwb", args.frames, args.rois)
        write_recording(workdir / "quarter.nwb", args.frames // 4, args.rois)
        print(f"wrote {full['bytes'] / 1e9:.2f} GB ({full['frames']:,} frames x {full['rois']:,} ROIs, "
              f"{full['trials']:,} trials) and its first quarter in {time.perf_counter() - began:.0f} s")
        run_child(workdir / "full.nwb", "read")  # into the page cache for everyone
        load_before = os.getloadavg()
        runs = {label: [] for label, _ in CONTENDERS}
        for repeat in range(args.repeats):
            shift = repeat % len(CONTENDERS)
            for label, what in CONTENDERS[shift:] + CONTENDERS[:shift]:  # no contender always runs first
                runs[label].append(run_child(workdir / "full.nwb", what))
            print(f"repeat {repeat + 1}/{args.repeats}, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
        load_after = os.getloadavg()
        rows = {label: summarise(measured) for label, measured in runs.items()}
        quarter_rss = run_child(workdir / "quarter.nwb", "regression")["rss_growth_mb"]
    finally:
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    read = rows["read"]["seconds"]
    print(f"medians of {args.repeats}, load average {load_before[0]:.1f} -> {load_after[0]:.1f}; "
          f"after read_nwb (median {rows['read']['open_seconds']:.2f} s, the same for all):")
    print(f"{'contender':42s} {'seconds':>8s} {'CPU s':>6s} {'vs read':>8s} {'RSS growth MB':>14s}")
    for label, row in rows.items():
        print(f"{label:42s} {row['seconds']:8.2f} {row['cpu_seconds']:6.2f} {row['seconds'] / read:7.2f}x "
              f"{row['rss_growth_mb']:14.0f}")
    sequential, overlapped = (rows[f"estimate_trials (regression{tail})"]["seconds"] for tail in (", sequential", ""))
    print(f"reading ahead: {overlapped:.2f} s against {sequential:.2f} s read then used ({sequential / overlapped:.2f}x)")
    print(f"peak RSS growth of estimate_trials: {rows['estimate_trials (regression)']['rss_growth_mb']:.0f} MB "
          f"for T={args.frames:,}, {quarter_rss:.0f} MB for T={args.frames // 4:,}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "recording": full, "repeats": args.repeats, "rows": rows, "rss_growth_mb_quarter": quarter_rss,
            "read_ahead_speedup": sequential / overlapped,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "load_average_before": load_before,
                        "load_average_after": load_after},
        }, indent=2))


if __name__ == "__main__":
    main()
