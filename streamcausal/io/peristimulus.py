"""Peri-stimulus mean traces read out of core: responder j around the trials that target source i.

:func:`peristimulus` makes one pass over a ``(T, n)`` recording in time order and, for
each asked pair ``(j, i)`` (responder ``j``, source ``i``, the ``[responder, source]``
orientation of every estimate), averages ``activity[:, j]`` frame by frame around the
onsets of the trials that target ``i`` (and not ``j``, for ``j != i``), and around the
onsets of the control trials that target neither. Frames are placed as
:func:`~streamcausal.io.responses.estimate_trials` places them: the onset's frame is the
first frame whose time is at or after the onset, and offset ``k`` is ``k`` frames later.
Only the open trials' rows and ``len(pairs) x n_offsets`` accumulators are held, so
memory does not depend on ``T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._validation import as_numeric_array, check_interval
from ..progress import Progress
from .recording import _read_ahead_by_default, _ReadAhead
from .responses import WindowReader, next_block, open_trials_input, windows_holding

__all__ = ["PeriStimulus", "peristimulus"]


@dataclass
class PeriStimulus:
    """Mean traces of responders around stimulation onsets.

    Attributes
    ----------
    offsets : ndarray, shape (n_offsets,)
        Seconds from the onset of each frame of the traces: ``k / rate`` for frame
        offsets ``k`` (with timestamps, ``k`` times the mean frame period).
    pairs : ndarray, shape (n_pairs, 2)
        ``(j, i)``: responder ``j``, source ``i``.
    mean, stderr, count : ndarray, shape (n_pairs, n_offsets)
        Mean of ``activity[:, j]`` at each offset over the trials that target ``i``
        (and not ``j`` when ``j != i``), its standard error (NaN below 2 trials), and the
        number of finite values averaged (NaN and inf values are left out).
    control_mean, control_stderr, control_count : ndarray, shape (n_pairs, n_offsets)
        The same over the trials that target neither ``i`` nor ``j`` (sham trials included).
    span : (float, float)
        The span asked for, seconds relative to the onset.
    n_trials : int
        Trials whose whole span lies in the recording (the others are left out: ``n_dropped``).
    """

    offsets: np.ndarray
    pairs: np.ndarray
    mean: np.ndarray
    stderr: np.ndarray
    count: np.ndarray
    control_mean: np.ndarray
    control_stderr: np.ndarray
    control_count: np.ndarray
    span: tuple
    n_trials: int
    n_dropped: int
    parameters: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"PeriStimulus(n_pairs={self.pairs.shape[0]}, n_offsets={self.offsets.size}, "
                f"span={self.span}, n_trials={self.n_trials}, n_dropped={self.n_dropped})")


class _Running:
    """Count, mean and centred sum of squares per (pair, offset), updated one trial at a time (Welford)."""

    def __init__(self, shape):
        self.count = np.zeros(shape, dtype=np.int64)
        self.mean = np.zeros(shape)
        self.m2 = np.zeros(shape)

    def add(self, weight, values, columns):
        """Fold ``values`` (pairs, len(columns)) where ``weight`` (pairs,) and the value is finite."""
        use = weight[:, None] & np.isfinite(values)
        if not use.any():
            return
        count = self.count[:, columns] + use
        mean = self.mean[:, columns]
        values = np.where(use, values, mean)  # left-out values change nothing below
        delta = values - mean
        mean = mean + delta / np.maximum(count, 1)
        self.m2[:, columns] += delta * (values - mean)
        self.mean[:, columns] = mean
        self.count[:, columns] = count

    def finish(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(self.count > 0, self.mean, np.nan)
            stderr = np.where(self.count >= 2, np.sqrt(self.m2 / np.maximum(self.count - 1, 1) / self.count), np.nan)
        return mean, stderr, self.count.copy()


def peristimulus(activity, trials, pairs, *, rate=None, times=None, span=(-1.0, 2.0), chunk_steps=None,
                 progress=None) -> PeriStimulus:
    """Mean trace of responder ``j`` around the onsets of the trials that target source ``i``, per pair.

    Parameters
    ----------
    activity : array, shape (T, n), or Recording
        Time-major activity (NumPy, memmap, Zarr, Dask, h5py), or a
        :class:`~streamcausal.experiment.Recording` (which brings trials and frame times).
    trials : Trials or None
        The stimulation trials (None: the Recording's).
    pairs : array_like of int, shape (n_pairs, 2)
        ``(j, i)`` pairs: responder ``j`` and source ``i`` (``j == i``: a target's own response).
    rate : float, optional
        Frames per second; or give ``times`` (one time per frame, increasing).
    times : array, shape (T,), optional
    span : (float, float)
        Seconds around the onset, ``span[0] < span[1]``; offsets ``k`` with
        ``span[0] <= k / rate <= span[1]`` are traced.
    chunk_steps : int, optional
        Rows read at a time (default as :func:`~streamcausal.io.responses.estimate_trials`).
        The result does not depend on it.
    progress : callable, optional
        Called with a :class:`~streamcausal.progress.Progress` after each window.

    Returns
    -------
    PeriStimulus

    Examples
    --------
    >>> activity = np.zeros((100, 2))
    >>> activity[[20, 60], 1] = 1.0                    # neuron 1 fires on the frames of the onsets
    >>> from streamcausal import Trials
    >>> trials = Trials([2.0, 6.0, 4.0], [[1], [1], []])
    >>> traces = peristimulus(activity, trials, [(1, 1), (0, 1)], rate=10.0, span=(-0.1, 0.2))
    >>> traces.offsets.tolist(), traces.mean[0].tolist(), traces.control_mean[0].tolist()
    ([-0.1, 0.0, 0.1, 0.2], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    """
    opened = open_trials_input(activity, trials, rate, times, chunk_steps, progress)
    source, trials, clock, chunk_steps = opened.source, opened.trials, opened.clock, opened.chunk_steps
    n_frames, n = source.shape
    pairs = _check_pairs(pairs, n)
    span = check_interval(span, "span")

    period = _frame_period(clock, n_frames)
    first = math.ceil(span[0] / period - 1e-9)
    last = math.floor(span[1] / period + 1e-9)
    if last < first:
        raise ValueError(f"span {list(span)} holds no frame offset at a frame period of {period:g} s")
    offsets = np.arange(first, last + 1) * period
    width = offsets.size
    onset_frames = clock.frames_at(trials.onsets)
    starts = onset_frames + first
    keep = (trials.onsets >= clock.first) & (starts >= 0) & (starts + width <= n_frames)
    kept = np.flatnonzero(keep)
    starts = starts[kept]

    responders, sources = pairs[:, 0], pairs[:, 1]
    same = responders == sources
    targeted, control = _Running(pairs.shape[0:1] + (width,)), _Running(pairs.shape[0:1] + (width,))
    next_trial, first_open = 0, 0
    needed = windows_holding(starts, starts + width, chunk_steps)  # the windows some trial is open in
    with _ReadAhead(WindowReader(source, chunk_steps), needed, threaded=_read_ahead_by_default([source])) as reader:
        blocks = iter(reader)
        for start in range(0, n_frames, chunk_steps):
            stop = min(start + chunk_steps, n_frames)
            while next_trial < kept.size and starts[next_trial] < stop:
                next_trial += 1
            if first_open < next_trial:
                block = next_block(blocks, start)
                for q in range(first_open, next_trial):  # in onset order: sums per offset do not depend on chunking
                    lo, hi = max(starts[q], start), min(starts[q] + width, stop)
                    if hi <= lo:
                        continue
                    chosen = trials.targets_of(kept[q])
                    hits_source = np.isin(sources, chosen)
                    hits_responder = np.isin(responders, chosen)
                    values = np.asarray(block[lo - start : hi - start], dtype=np.float64)[:, responders].T
                    columns = slice(lo - starts[q], hi - starts[q])
                    targeted.add(hits_source & (same | ~hits_responder), values, columns)
                    control.add(~hits_source & ~hits_responder, values, columns)
                del block
                while first_open < next_trial and starts[first_open] + width <= stop:
                    first_open += 1
            if progress is not None:
                progress(Progress(stop, n_frames, samples=first_open))
    mean, stderr, count = targeted.finish()
    control_mean, control_stderr, control_count = control.finish()
    parameters = {"chunk_steps": chunk_steps, "timing": clock.describe(), "frame_period": period,
                  "first_offset_frames": first, "activity": source.describe()}
    return PeriStimulus(offsets, pairs, mean, stderr, count, control_mean, control_stderr, control_count,
                        span, int(kept.size), int(trials.n_trials - kept.size), parameters)


def _check_pairs(pairs, n) -> np.ndarray:
    array = as_numeric_array(pairs, "pairs", "(n_pairs, 2) array of (responder, source) indices")
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] == 0:
        raise ValueError(f"pairs must be a non-empty (n_pairs, 2) array of (responder, source), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not (np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array))
                and np.all(array == np.round(array))):
            raise TypeError(f"pairs must hold integer indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    bad = (array < 0) | (array >= n)
    if bad.any():
        row, column = (int(k) for k in np.argwhere(bad)[0])
        raise ValueError(f"pairs must index the activity's {n} neurons, got {array[row, column]} at "
                         f"pairs[{row}, {column}]")
    return array


def _frame_period(clock, n_frames) -> float:
    """Seconds per frame: ``1 / rate``, or the mean step of the timestamps."""
    if clock.rate is not None:
        return 1.0 / clock.rate
    if n_frames < 2:
        raise ValueError("times must hold at least 2 frames to trace around onsets, got 1")
    last = float(np.asarray(clock.times.read(n_frames - 1, n_frames), dtype=np.float64)[0])
    return (last - clock.first) / (n_frames - 1)
