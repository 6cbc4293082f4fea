"""Reading ahead: the next window is read in a background thread while the current one is reduced.

The overlapped path must give the bits of the sequential one (the arithmetic is the same,
only the reading overlaps) on every kind of input; a reader's error must reach the caller
as it is; and no reader thread may outlive a call, whatever ends it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import zarr

import streamcausal as sc
from streamcausal.io import recording
from streamcausal.io.peristimulus import peristimulus
from streamcausal.io.recording import estimate, estimate_store
from streamcausal.io.responses import estimate_trials, windows_holding

READER = "streamcausal-read"
T, N, CHUNK = 3000, 7, 256
RATE = 20.0


def reader_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith(READER)]


def same_bits(a, b):
    """Arrays (or dicts of them) equal bit for bit, NaNs included."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_bits(a[key], b[key]) for key in a)
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def both_paths(monkeypatch, call):
    """``call(progress)`` sequentially, then reading ahead; the second must have run a reader thread."""
    monkeypatch.setattr(recording, "_READ_AHEAD", False)
    sequential = call(lambda event: None)
    assert not reader_threads()
    seen = []
    monkeypatch.setattr(recording, "_READ_AHEAD", True)
    overlapped = call(lambda event: seen.append(len(reader_threads())))
    assert max(seen) == 1, seen  # exactly one reader, alive while the windows were reduced
    assert not reader_threads()
    return sequential, overlapped


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    stimulation = (rng.random((T, N)) < 0.5).astype(np.uint8)
    activity = (0.3 * np.roll(stimulation, 1, axis=0) + rng.normal(size=(T, N))).astype(np.float32)
    clamped = np.arange(T) % 2 == 0
    return {"activity": activity, "stimulation": stimulation, "clamped": clamped}


@pytest.fixture(scope="module")
def stored(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap")
    group = zarr.open_group(str(root / "rec.zarr"), mode="w")
    for name, values in data.items():
        chunks = (CHUNK,) + values.shape[1:]
        group.create_array(name, shape=values.shape, chunks=chunks, dtype=values.dtype)[...] = values
    h5py = pytest.importorskip("h5py")
    with h5py.File(root / "rec.h5", "w") as f:
        for name, values in data.items():
            f.create_dataset(name, data=values, chunks=(CHUNK,) + values.shape[1:], compression="gzip")
    return root


def open_kind(kind, stored, data):
    if kind == "numpy":
        return dict(data), None
    if kind == "zarr":
        group = zarr.open_group(str(stored / "rec.zarr"), mode="r")
        return {name: group[name] for name in data}, None
    import h5py

    handle = h5py.File(stored / "rec.h5", "r")
    return {name: handle[name] for name in data}, handle


# --------------------------------------------------------------------------- bits


@pytest.mark.parametrize("kind", ["numpy", "zarr", "h5py"])
@pytest.mark.parametrize(
    "case",
    [
        {"steps": "clamped"},  # a mask read window by window
        {"steps": slice(0, None, 2), "chunk_steps": 300},
        {"stimulation": None, "lag": 2, "chunk_steps": 500},  # observational pairs
        {"steps": "clamped", "lag": 700, "chunk_steps": 256},  # lag > window: inputs read directly
    ],
    ids=["mask", "slice", "observational", "long-lag"],
)
def test_estimate_overlapped_is_sequential_bit_for_bit(monkeypatch, stored, data, kind, case):
    arrays, handle = open_kind(kind, stored, data)
    try:
        stimulation = arrays["stimulation"] if case.get("stimulation", "given") is not None else None
        steps = arrays["clamped"] if case.get("steps") == "clamped" else case.get("steps")
        chunk_steps = case.get("chunk_steps", 256)

        def call(progress):
            return estimate(arrays["activity"], stimulation, steps=steps, lag=case.get("lag", 1),
                            chunk_steps=chunk_steps, progress=progress)

        sequential, overlapped = both_paths(monkeypatch, call)
    finally:
        if handle is not None:
            handle.close()
    assert sequential.n_samples > 0
    assert same_bits(sequential.moments.to_arrays(), overlapped.moments.to_arrays())
    assert same_bits(sequential.correlation, overlapped.correlation)
    assert sequential.parameters == overlapped.parameters


def test_a_single_window_starts_no_reader(monkeypatch, stored):
    """With default windows this small store is one window: there is nothing to overlap."""
    monkeypatch.setattr(recording, "_READ_AHEAD", True)
    seen = []
    result = estimate_store(stored / "rec.zarr", progress=lambda event: seen.append(len(reader_threads())))
    assert result.parameters["chunk_steps"] >= T and seen == [0]


def test_progress_events_are_the_same_on_both_paths(monkeypatch, stored):
    group = zarr.open_group(str(stored / "rec.zarr"), mode="r")
    events = {}
    for read_ahead in (False, True):
        monkeypatch.setattr(recording, "_READ_AHEAD", read_ahead)
        got = []
        estimate(group["activity"], group["stimulation"], steps=group["clamped"], chunk_steps=700, progress=got.append)
        events[read_ahead] = [(e.steps_done, e.steps_total, e.samples) for e in got]
    assert events[False] == events[True]
    assert [done for done, _, _ in events[True]] == [700, 1400, 2100, 2800, 3000]


def nwb_recording(tmp_path, *, units=False):
    nwb_files = pytest.importorskip("nwb_files")
    rng = np.random.default_rng(3)
    n, frames = 6, 2400
    onsets = np.arange(2.0, frames / RATE - 3.0, 0.7)
    targets = [[int(k % n)] if k % 5 else [] for k in range(onsets.size)]
    if units:
        spikes = [np.sort(rng.uniform(0, frames / RATE, size=400)) for _ in range(n)]
        path = nwb_files.write_units(tmp_path / "units.nwb", spikes, onsets=onsets, targets=targets)
        return sc.read_nwb(path, activity="units", trials="trials", bin_size=1 / RATE)
    activity = rng.normal(size=(frames, n)).astype(np.float32)
    for onset, chosen in zip(onsets, targets):
        activity[int(onset * RATE) : int(onset * RATE) + 8, chosen] += 1.0
    path = nwb_files.write_ophys(tmp_path / "ophys.nwb", activity, rate=RATE, onsets=onsets, targets=targets)
    return sc.read_nwb(path, activity="dff", trials="trials")


@pytest.mark.parametrize("units", [False, True], ids=["dff", "binned-units"])
@pytest.mark.parametrize("method", ["regression", "difference"])
def test_trials_overlapped_is_sequential_bit_for_bit(monkeypatch, tmp_path, units, method):
    with nwb_recording(tmp_path, units=units) as rec:
        sequential, overlapped = both_paths(
            monkeypatch,
            lambda progress: estimate_trials(rec, window=(0.0, 0.5), baseline=(-0.4, 0.0), method=method,
                                             chunk_steps=150, progress=progress),
        )
    assert sequential.n_trials > 50
    assert same_bits(sequential.moments.to_arrays(), overlapped.moments.to_arrays())
    assert same_bits(sequential.effect, overlapped.effect) and same_bits(sequential.stderr, overlapped.stderr)


def test_peristimulus_overlapped_is_sequential_bit_for_bit(monkeypatch, tmp_path):
    with nwb_recording(tmp_path) as rec:
        sequential, overlapped = both_paths(
            monkeypatch,
            lambda progress: peristimulus(rec, None, [(1, 1), (0, 1), (2, 3)], span=(-0.5, 1.0), chunk_steps=97,
                                          progress=progress),
        )
    for name in ("mean", "stderr", "count", "control_mean", "control_stderr", "control_count"):
        assert same_bits(getattr(sequential, name), getattr(overlapped, name)), name


def test_estimate_on_an_nwb_series_is_bit_identical(monkeypatch, tmp_path):
    with nwb_recording(tmp_path) as rec:
        sequential, overlapped = both_paths(
            monkeypatch, lambda progress: estimate(rec.activity, lag=3, chunk_steps=333, progress=progress)
        )
    assert same_bits(sequential.moments.to_arrays(), overlapped.moments.to_arrays())


@pytest.mark.parametrize("chunk", [1, 5, 64, 10_000])
def test_windows_holding_matches_the_open_ranges(chunk):
    rng = np.random.default_rng(chunk)
    first = np.sort(rng.integers(0, 900, size=40))
    last = first + rng.integers(1, 120, size=40)
    expected = [w for w in range(-(-1020 // chunk))
                if np.any((first < (w + 1) * chunk) & (last > w * chunk))]
    assert windows_holding(first, last, chunk).tolist() == expected
    assert windows_holding([], [], chunk).size == 0


# --------------------------------------------------------------------------- errors and cancellation


class CorruptRead(OSError):
    pass


class FailingArray:
    """A duck (T, n) array whose rows from ``bad_row`` on raise, as a corrupt chunk would; ``delay`` per read."""

    def __init__(self, values, bad_row, *, delay=0.0, error=None):
        self.values, self.bad_row, self.delay = values, bad_row, delay
        self.error = error or CorruptRead(f"checksum mismatch in the chunk holding row {bad_row}")
        self.shape, self.dtype = values.shape, values.dtype
        self.reads = []

    def __getitem__(self, key):
        start = key.start or 0
        self.reads.append(start)
        time.sleep(self.delay)
        if key.stop > self.bad_row:
            raise self.error
        return self.values[key]


@pytest.mark.parametrize("read_ahead", [False, True])
def test_a_reader_error_reaches_the_caller_unchanged_and_no_thread_is_left(monkeypatch, data, read_ahead):
    monkeypatch.setattr(recording, "_READ_AHEAD", read_ahead)
    activity = FailingArray(data["activity"], bad_row=1000)  # fails at window 3 of 256 rows
    windows = []
    with pytest.raises(CorruptRead, match="checksum mismatch in the chunk holding row 1000") as caught:
        estimate(activity, data["stimulation"], steps=slice(0, None, 2), chunk_steps=256,
                 progress=lambda event: windows.append(event.steps_done))
    assert caught.value is activity.error  # the very exception the reader raised
    assert windows == [256, 512, 768]  # every window before the bad one was reduced, on both paths
    assert not reader_threads()


def test_a_corrupt_zarr_chunk_raises_the_same_error_on_both_paths(monkeypatch, data, tmp_path):
    group = zarr.open_group(str(tmp_path / "rec.zarr"), mode="w")
    stored = group.create_array("activity", shape=(T, N), chunks=(CHUNK, N), dtype="f4")
    stored[...] = data["activity"]
    chunk_file = tmp_path / "rec.zarr" / "activity" / "c" / "5" / "0"
    assert chunk_file.exists()
    chunk_file.write_bytes(b"\x00 not a compressed chunk" * 4)
    errors = {}
    for read_ahead in (False, True):
        monkeypatch.setattr(recording, "_READ_AHEAD", read_ahead)
        with pytest.raises(Exception) as caught:
            estimate(stored, data["stimulation"], chunk_steps=CHUNK)
        errors[read_ahead] = (type(caught.value), str(caught.value))
        assert not reader_threads()
    assert errors[False] == errors[True]


@pytest.mark.parametrize("target", ["estimate", "estimate_trials"])
def test_an_interrupt_in_the_reader_stops_the_call_and_leaves_no_thread(monkeypatch, data, target):
    monkeypatch.setattr(recording, "_READ_AHEAD", True)
    activity = FailingArray(data["activity"], bad_row=600, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        if target == "estimate":
            estimate(activity, chunk_steps=200)
        else:
            trials = sc.Trials(np.arange(1.0, 140.0, 2.0), [[k % N] for k in range(70)])
            estimate_trials(activity, trials, rate=RATE, chunk_steps=200)
    assert not reader_threads()


def test_an_interrupt_while_a_read_is_in_progress_waits_for_it_and_leaves_no_thread(monkeypatch, data):
    """KeyboardInterrupt in the caller (here from its progress callback) while the reader is mid-read."""
    monkeypatch.setattr(recording, "_READ_AHEAD", True)
    activity = FailingArray(data["activity"], bad_row=T + 1, delay=0.05)

    def interrupt(event):
        if event.steps_done >= 512:
            assert len(reader_threads()) == 1
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        estimate(activity, chunk_steps=256, progress=interrupt)
    assert not reader_threads()
    assert len(activity.reads) <= 3  # windows 0 and 1, and the one read ahead: nothing more was read


def test_the_caller_keeps_its_numba_thread_count(monkeypatch, stored):
    import numba

    monkeypatch.setattr(recording, "_READ_AHEAD", True)
    before = numba.get_num_threads()
    during = []
    estimate_store(stored / "rec.zarr", chunk_steps=500, progress=lambda event: during.append(numba.get_num_threads()))
    assert numba.get_num_threads() == before
    assert set(during) == {max(1, min(before, recording._available_cpus() - recording._READER_CORES))}


_SIGINT_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    from streamcausal.io import recording

    class Slow:
        shape, dtype = (100_000, 4), np.dtype("float32")
        def __getitem__(self, key):
            time.sleep(0.05)
            return np.zeros((key.stop - key.start, 4), dtype=np.float32)

    recording._READ_AHEAD = True
    started = lambda event: print("started", flush=True) if event.steps_done == 1000 else None
    try:
        recording.estimate(Slow(), chunk_steps=1000, progress=started)
    except KeyboardInterrupt:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("streamcausal-read")]
        print("interrupted", alive, flush=True)
        sys.exit(3)
    """
)


@pytest.mark.subprocess
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_stops_an_overlapped_estimate_and_leaves_no_thread():
    child = subprocess.Popen([sys.executable, "-c", _SIGINT_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 3, err
    assert out.strip() == "interrupted []"


# --------------------------------------------------------------------------- memory

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from streamcausal.io import recording

    def high_water_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024

    path, mode = sys.argv[1], sys.argv[2]
    recording._READ_AHEAD = mode == "ahead"
    rng = np.random.default_rng(0)  # load the kernels first: imports are not the estimate's
    recording.estimate(rng.random((4096, 100)), rng.integers(0, 2, (4096, 100)), steps=slice(0, None, 2))
    before = high_water_mb()
    if mode == "read":  # zarr alone, reading the same default windows
        import zarr
        arrays = [zarr.open_group(path, mode="r")[name] for name in ("activity", "stimulation", "clamped")]
        window = int(sys.argv[3])
        for start in range(0, arrays[0].shape[0], window):
            for array in arrays:
                array[start : start + window]
        measured = {}
    else:
        result = recording.estimate_store(path)  # default windows
        measured = {"pairs": result.n_samples, "chunk_steps": result.parameters["chunk_steps"]}
    print(json.dumps({"grew_mb": high_water_mb() - before, **measured}))
    """
)


# glibc raises its mmap threshold whenever a large block is freed and then keeps freed heap
# pages: a fixed threshold makes the high-water mark measure what is held.
_FIXED_MMAP_THRESHOLD = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_estimate_with_default_windows_holds_a_few_windows(tmp_path):
    """n=100, 240,000 steps (96 MB of float32 activity, 24 MB of stimulation) in 4096-row chunks.

    A default window is about 2**22 values: 40,960 rows, 16 MB of float32 activity and
    4 MB of stimulation (19.5 MiB). zarr itself needs buffers to read one (compressed
    and decoded chunks, the output); the estimate adds less than a window to that, and
    reading ahead one window more. It never holds the recording (120 MB) or its float64
    pairs (384 MB).
    """
    n, n_steps, rows = 100, 240_000, 4096
    group = zarr.open_group(str(tmp_path / "rec.zarr"), mode="w")
    activity = group.create_array("activity", shape=(n_steps, n), chunks=(rows, n), dtype="f4")
    stimulation = group.create_array("stimulation", shape=(n_steps, n), chunks=(rows, n), dtype="u1")
    clamped = group.create_array("clamped", shape=(n_steps,), chunks=(rows,), dtype="bool")
    rng = np.random.default_rng(2)
    for start in range(0, n_steps, 8 * rows):
        stop = min(start + 8 * rows, n_steps)
        activity[start:stop] = rng.random((stop - start, n), dtype=np.float32)
        stimulation[start:stop] = rng.integers(0, 2, (stop - start, n), dtype=np.uint8)
        clamped[start:stop] = np.arange(start, stop) % 2 == 0
    window = 40_960  # the default: ~2**22 values, a multiple of the chunk
    grew = {}
    for mode in ("read", "sequential", "ahead"):
        done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "rec.zarr"), mode, str(window)],
                              capture_output=True, text=True, check=True, timeout=300, env=_FIXED_MMAP_THRESHOLD)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        if mode != "read":
            assert measured["pairs"] == n_steps // 2
            assert measured["chunk_steps"] == window
        grew[mode] = measured["grew_mb"]
    window_mb = window * n * (4 + 1) / 2**20
    # measured: read 36 MB, sequential 42, ahead 57: one window more than reading alone
    assert grew["sequential"] < grew["read"] + 1.5 * window_mb, grew
    assert grew["ahead"] < grew["read"] + 2.5 * window_mb, grew
    assert grew["ahead"] < 150, grew  # far from the recording (120 MB) plus zarr's buffers, or the float64 pairs (384 MB)
