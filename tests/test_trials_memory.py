"""estimate_trials reads an HDF5 recording out of core: its peak memory does not grow with the recording's length."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

RATE = 30.0
N = 200
CHUNK_ROWS = 1024
SPACING = 0.25  # s between onsets: 7,900 trials in the shorter recording, two batches of 4,096 (batch_trials(200))

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import h5py
    import numpy as np
    import streamcausal as sc

    def high_water_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024

    path = sys.argv[1]
    warm = np.random.default_rng(0).random((600, 4))  # imports and first calls are not the estimate's
    sc.estimate_trials(warm, sc.Trials([2.0, 5.0, 9.0], [[0], [], [1]]), rate=30.0)
    with h5py.File(path, "r") as f:
        data = f["dff"]
        onsets = f["onsets"][...]
        targets = [list(f["targets"][k][f["targets"][k] >= 0]) for k in range(onsets.size)]
        trials = sc.Trials(onsets, targets, n_sources=data.shape[1])
        before = high_water_mb()  # the trials are the caller's input, as long as the recording
        result = sc.estimate_trials(data, trials, rate=30.0, window=(0.0, 1.0), baseline=(-0.5, 0.0))
    print(json.dumps({"grew_mb": high_water_mb() - before, "trials": result.n_trials}))
    """
)


# glibc raises its mmap threshold each time a large block is freed, so that later large
# blocks come from the heap, whose freed pages it keeps: the high-water mark then creeps up
# with the number of windows and batches. A fixed threshold makes it measure what is held.
_FIXED_MMAP_THRESHOLD = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}


def write_recording(path, n_frames):
    rng = np.random.default_rng(1)
    onsets = np.arange(1.0, n_frames / RATE - 2.0, SPACING)
    targets = np.full((onsets.size, 4), -1, dtype=np.int64)
    for k in range(onsets.size):
        count = rng.integers(0, 5)
        targets[k, :count] = rng.choice(N, size=count, replace=False)
    with h5py.File(path, "w") as f:
        data = f.create_dataset("dff", shape=(n_frames, N), dtype="f4", chunks=(CHUNK_ROWS, N))
        for start in range(0, n_frames, 16 * CHUNK_ROWS):
            stop = min(start + 16 * CHUNK_ROWS, n_frames)
            data[start:stop] = rng.normal(size=(stop - start, N)).astype(np.float32)
        f["onsets"] = onsets
        f["targets"] = targets
    return onsets.size


@pytest.mark.subprocess
@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_recording(tmp_path):
    grown = {}
    for n_frames in (60_000, 240_000):  # 48 MB and 192 MB of float32 on disk
        path = tmp_path / f"rec{n_frames}.h5"
        n_trials = write_recording(path, n_frames)
        done = subprocess.run([sys.executable, "-c", _SCRIPT, str(path)], capture_output=True, text=True,
                              check=True, timeout=300, env=_FIXED_MMAP_THRESHOLD)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        assert measured["trials"] > 0.95 * n_trials
        grown[n_frames] = measured["grew_mb"]
    # Four times the frames and trials: the growth is what the window buffers (two with
    # reading ahead, 16 MB each) and a batch of responses need, not the recording
    # (+144 MB) or the trials x neurons responses (+39 MB).
    assert grown[240_000] < grown[60_000] + 20, grown
    assert grown[240_000] < 100, grown
