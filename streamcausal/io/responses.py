"""Trial responses read out of core: each trial's window (minus baseline) mean, folded into TrialMoments.

:func:`estimate_trials` makes one pass over a ``(T, n)`` recording in time order. A
trial's response is the mean of each neuron's activity over the frames whose time is
in ``[onset + window[0], onset + window[1])``, minus (with a ``baseline``) the mean
over ``[onset + baseline[0], onset + baseline[1])``. Only the rows of the trials still
open are held, never the trials x neurons response matrix: finished responses go to
:class:`~streamcausal.moments.trials.TrialMoments` in batches of fixed size, in trial
order, so the result does not depend on how the recording is chunked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .._validation import check_callable, check_int, check_interval, check_real, describe
from ..estimators import bh_qvalues, edge_mask, pvalues, significant_edges
from ..experiment import Recording, Trials
from ..moments.trials import TrialMoments
from ..progress import Progress
from ..result import score
from .recording import _default_chunk_steps, _read_ahead_by_default, _ReadAhead, _Source

__all__ = ["METHODS", "TrialResult", "estimate_trials"]

METHODS = ("regression", "difference")


def batch_trials(n_neurons: int) -> int:
    """Responses folded into the moments per batch: about 2**21 values (16 MB), 64 to 4096 trials.

    A function of ``n`` only, since the bits of the result depend on it.
    """
    return int(max(64, min(4096, 2**21 // n_neurons)))



@dataclass
class TrialResult:
    """Influence of each targeted source on each responder, from stimulation trials.

    Every matrix is ``[responder, source]`` (``effect[j, i]``: source ``i`` onto
    responder ``j``); the diagonal is each target's response to its own stimulation.

    Attributes
    ----------
    moments : TrialMoments
        The merged sufficient statistics.
    method : {"regression", "difference"}
    n_trials : int
        Trials used; ``n_dropped`` were dropped (``dropped`` says why: a window or
        baseline off the recording, or holding no frame).
    trials_per_source : ndarray, shape (n_sources,)
        Used trials that targeted each source.
    source_ids, responder_ids : ndarray
        Names of the sources and responders (ROI or unit ids, or 0..n-1).
    parameters : dict
        Window, baseline, chunking, the recording's description.
    """

    moments: TrialMoments
    method: str
    n_dropped: int
    dropped: dict
    source_ids: np.ndarray
    responder_ids: np.ndarray
    n_frames: int
    seconds: float
    parameters: dict = field(default_factory=dict)

    @property
    def n_trials(self) -> int:
        return int(self.moments.count)

    @property
    def trials_per_source(self) -> np.ndarray:
        return self.moments.targeted_count.copy()

    @cached_property
    def _estimate(self):
        return self.moments.regression() if self.method == "regression" else self.moments.difference()

    @property
    def effect(self) -> np.ndarray:
        return self._estimate[0]

    @property
    def stderr(self) -> np.ndarray:
        return self._estimate[1]

    @cached_property
    def pvalue(self) -> np.ndarray:
        """Two-sided normal p-value of ``effect / stderr``."""
        return pvalues(self.effect, self.stderr)

    @cached_property
    def qvalue(self) -> np.ndarray:
        """Benjamini–Hochberg q-value over the off-diagonal edges (sources are the responders)."""
        return bh_qvalues(self.pvalue, edge_mask(self.pvalue.shape, self.moments.same_neurons))

    def significant(self, alpha=0.05) -> np.ndarray:
        """Boolean ``[responder, source]``: ``qvalue <= alpha`` (never on the diagonal)."""
        return significant_edges(self.qvalue, alpha)

    @property
    def undefined_edges(self) -> np.ndarray:
        """Boolean ``[responder, source]``: True where the estimate is NaN."""
        return ~np.isfinite(self.effect)

    def score(self, A) -> float:
        """Pearson correlation of ``effect`` with a known ``A[j, i]`` over the off-diagonal edges."""
        estimate = self.effect.copy()
        if self.moments.same_neurons:
            np.fill_diagonal(estimate, np.nan)
        return score(estimate, A)

    def __repr__(self) -> str:
        return (f"TrialResult(method={self.method!r}, n_trials={self.n_trials}, n_dropped={self.n_dropped}, "
                f"n_sources={self.moments.n_sources}, n_responders={self.moments.n_responders})")


def estimate_trials(activity, trials=None, *, rate=None, times=None, window=(0.0, 1.0), baseline=None,
                    method="regression", chunk_steps=None, progress=None) -> TrialResult:
    """Estimate each targeted source's influence on every neuron from stimulation trials, out of core.

    Parameters
    ----------
    activity : array, shape (T, n), or Recording
        Time-major activity (NumPy, memmap, Zarr, Dask, h5py, binned spikes), or a
        :class:`~streamcausal.experiment.Recording`, which also brings the trials,
        the frame times and the ids.
    trials : Trials
        The stimulation trials; targets index the columns of ``activity``. Required
        unless ``activity`` is a Recording with trials.
    rate : float, optional
        Frames per second (frame ``f`` at ``f / rate`` s). Give ``rate`` or ``times``.
    times : array, shape (T,), optional
        Time of each frame in seconds, strictly increasing (any array kind; read in windows).
    window : (float, float)
        Response window relative to each onset, seconds, ``window[0] < window[1]``.
    baseline : (float, float), optional
        Baseline interval relative to each onset; its mean is subtracted.
    method : {"regression", "difference"}
        Joint least squares on all sources' indicators (default), or the difference
        in means leaving out trials that target the responder.
    chunk_steps : int, optional
        Rows read at a time (default: about 2**22 values, aligned with the array's chunks).
    progress : callable, optional
        Called with a :class:`~streamcausal.progress.Progress` (rows read of ``T``,
        ``samples`` = trials folded so far) after each window.

    Returns
    -------
    TrialResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> onsets = np.arange(1.0, 99.0, 0.5)
    >>> targets = [[k % 3] if k % 4 else [] for k in range(onsets.size)]  # every 4th trial is sham
    >>> activity = rng.normal(size=(1000, 3)) * 0.1
    >>> for onset, chosen in zip(onsets, targets):
    ...     activity[int(onset * 10):int(onset * 10) + 3, chosen] += 1.0
    >>> result = estimate_trials(activity, Trials(onsets, targets), rate=10.0, window=(0, 0.3))
    >>> result.n_trials, np.diag(result.effect).round(1).tolist(), int(result.significant().sum())
    (196, [1.0, 1.0, 1.0], 0)
    """
    began = time.perf_counter()
    opened = open_trials_input(activity, trials, rate, times, chunk_steps, progress)
    source, trials, clock, chunk_steps = opened.source, opened.trials, opened.clock, opened.chunk_steps
    n_frames, n = source.shape
    ids, description = opened.ids, opened.description
    window = check_interval(window, "window")
    baseline = check_interval(baseline, "baseline", optional=True)
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    plan = _plan_trials(trials, clock, window, baseline)
    moments = TrialMoments(n, n, same_neurons=True)
    batch = _ResponseBatch(trials, n, moments)
    intervals = plan["intervals"]  # (kept trials, parts, 2): frame ranges, trials in onset order
    kept = plan["kept"]
    open_trials = {}  # kept-trial position -> row blocks read so far, per part
    next_trial = 0
    # The windows read are those that some trial is open in: the same ones the loop asks for.
    needed = windows_holding(intervals[:, :, 0].min(axis=1), intervals[:, :, 1].max(axis=1), chunk_steps)
    with _ReadAhead(WindowReader(source, chunk_steps), needed, threaded=_read_ahead_by_default([source])) as reader:
        blocks = iter(reader)
        for start in range(0, n_frames, chunk_steps):
            stop = min(start + chunk_steps, n_frames)
            while next_trial < kept.size and intervals[next_trial, :, 0].min() < stop:
                open_trials[next_trial] = [[] for _ in range(intervals.shape[1])]
                next_trial += 1
            if open_trials:
                block = next_block(blocks, start)
                finished = []
                for k, pieces in open_trials.items():
                    for part, (a, b) in enumerate(intervals[k]):
                        lo, hi = max(a, start), min(b, stop)
                        if hi > lo:
                            pieces[part].append(block[lo - start : hi - start])
                    if intervals[k, :, 1].max() <= stop:
                        finished.append(k)
                del block  # the open trials keep what they need
                for k in finished:  # in trial order: every trial ends at onset + the same offset
                    means = [_mean_rows(rows) for rows in open_trials.pop(k)]
                    batch.add(kept[k], means[0] - means[1] if len(means) == 2 else means[0])
            if progress is not None:
                progress(Progress(stop, n_frames, samples=moments.count + batch.size))
    batch.flush()
    dropped = plan["dropped"]
    parameters = {
        "window": list(window),
        "baseline": None if baseline is None else list(baseline),
        "method": method,
        "chunk_steps": chunk_steps,
        "activity": description or source.describe(),
        "timing": clock.describe(),
        "n_trials_given": trials.n_trials,
    }
    source_ids = trials.ids if trials.ids is not None else (ids if ids is not None else np.arange(n))
    responder_ids = ids if ids is not None else np.arange(n)
    return TrialResult(moments, method, sum(dropped.values()), dropped, np.asarray(source_ids),
                       np.asarray(responder_ids), n_frames, time.perf_counter() - began, parameters)


@dataclass
class TrialsInput:
    """A checked trial estimator's input: the activity source, bound trials, frame clock and window size."""

    source: _Source
    trials: Trials
    clock: _FrameClock
    chunk_steps: int
    ids: object
    description: str


def open_trials_input(activity, trials, rate, times, chunk_steps, progress) -> TrialsInput:
    """Check the arguments every trial estimator shares (activity or Recording, trials, timing, chunking)."""
    starting_time, ids, description = 0.0, None, ""
    if isinstance(activity, Recording):
        recording = activity
        if rate is not None or times is not None:
            raise ValueError("rate and times come from the Recording; do not pass them too")
        trials = recording.trials if trials is None else trials
        rate, times, starting_time = recording.rate, recording.times, recording.starting_time
        ids, description = recording.ids, recording.description
        activity = recording.activity
    source = _Source(activity, "activity")
    if len(source.shape) != 2 or source.shape[1] == 0 or source.shape[0] == 0:
        raise ValueError(f"activity must be 2-D (T, n) with T >= 1 and n >= 1, got shape {source.shape}")
    n_frames, n = source.shape
    if not isinstance(trials, Trials):
        raise TypeError(f"trials must be a Trials (or come with a Recording), got {describe(trials)}")
    trials = trials.bound_to(n)
    if chunk_steps is not None:
        chunk_steps = check_int(chunk_steps, "chunk_steps", minimum=1)
    else:
        chunk_steps = _default_chunk_steps([source], n)
    check_callable(progress, "progress")
    clock = _FrameClock(n_frames, rate, times, starting_time, chunk_steps)
    return TrialsInput(source, trials, clock, chunk_steps, ids, description)


class WindowReader:
    """Window ``w`` of a source: ``(start, rows [start, start + chunk_steps))``, for :class:`_ReadAhead`."""

    def __init__(self, source: _Source, chunk_steps: int):
        self.source, self.chunk_steps = source, chunk_steps

    def __call__(self, window: int):
        start = int(window) * self.chunk_steps
        return start, self.source.read(start, min(start + self.chunk_steps, self.source.shape[0]))


def windows_holding(first, last, chunk_steps) -> np.ndarray:
    """Indices, in order, of the windows of ``chunk_steps`` frames that hold a frame of some ``[first[k], last[k])``.

    Ranges are non-empty; a window is held by a range when it holds any of its frames.
    """
    first = np.asarray(first, dtype=np.int64)
    last = np.asarray(last, dtype=np.int64)
    if first.size == 0:
        return np.empty(0, dtype=np.int64)
    begin, end = first // chunk_steps, (last - 1) // chunk_steps + 1
    n_windows = int(end.max())
    depth = np.zeros(n_windows + 1, dtype=np.int64)  # ranges open at each window: +1 at begin, -1 past end
    np.add.at(depth, begin, 1)
    np.add.at(depth, end, -1)
    return np.flatnonzero(np.cumsum(depth[:-1]) > 0)


def next_block(blocks, start: int) -> np.ndarray:
    """The next window from a :class:`WindowReader`, which must begin at ``start`` (the loop and the plan agree)."""
    read_start, block = next(blocks, (None, None))
    if read_start != start:
        raise RuntimeError(f"read the window at frame {read_start}, expected {start}: the plan of windows is wrong")
    return block


def _mean_rows(pieces) -> np.ndarray:
    """Mean over the rows of the pieces, always summed the same way (the bits do not depend on chunking)."""
    rows = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    rows = np.asarray(rows, dtype=np.float64)
    return np.add.reduce(rows, axis=0) / rows.shape[0]


class _ResponseBatch:
    """Finished trials (targets, response) folded into the moments every :func:`batch_trials` trials."""

    def __init__(self, trials, n, moments):
        self.trials, self.moments = trials, moments
        self.capacity = batch_trials(n)
        self.responses = np.empty((self.capacity, n))
        self.targets = []
        self.size = 0

    def add(self, trial, response):
        if not np.all(np.isfinite(response)):
            column = int(np.argmax(~np.isfinite(response)))
            raise ValueError(
                f"activity must be finite in the trials' windows, got {response[column]} in the response of "
                f"neuron {column} to trial {int(self.trials.order[trial])} (onset {self.trials.onsets[trial]:g} s)"
            )
        self.targets.append(self.trials.targets_of(trial))
        self.responses[self.size] = response
        self.size += 1
        if self.size == self.capacity:
            self.flush()

    def flush(self):
        if self.size:
            indptr = np.zeros(self.size + 1, dtype=np.int64)
            np.cumsum([t.size for t in self.targets], out=indptr[1:])
            indices = np.concatenate(self.targets)
            self.moments.update_targets(indptr, indices, self.responses[: self.size])
            self.targets, self.size = [], 0


class _FrameClock:
    """Frame times: ``starting_time + f / rate``, or a timestamps array read in windows."""

    def __init__(self, n_frames, rate, times, starting_time, chunk_steps):
        if (rate is None) == (times is None):
            raise ValueError("give the frame times as exactly one of rate= or times=, "
                             f"got rate={describe(rate)} and times={describe(times) if times is None else 'an array'}")
        self.n_frames, self.chunk_steps = n_frames, chunk_steps
        self.rate = None
        if rate is not None:
            self.rate = check_real(rate, "rate")
            if self.rate <= 0:
                raise ValueError(f"rate must be > 0, got {self.rate}")
            self.start = check_real(starting_time, "starting_time")
            self.first = self.start
            self.end = self.start + n_frames / self.rate
            self.times = None
            return
        self.times = _Source(times, "times")
        if len(self.times.shape) != 1 or self.times.shape[0] != n_frames:
            raise ValueError(f"times must be 1-D with one time per frame (T={n_frames}), got shape {self.times.shape}")
        head = np.asarray(self.times.read(0, min(2, n_frames)), dtype=np.float64)
        tail = np.asarray(self.times.read(max(0, n_frames - 2), n_frames), dtype=np.float64)
        self.first = float(head[0])
        period = float(tail[-1] - tail[-2]) if n_frames >= 2 else 0.0
        self.end = float(tail[-1]) + period

    def frames_at(self, bounds: np.ndarray) -> np.ndarray:
        """For each time bound, the first frame whose time is >= it (``n_frames`` if none); bounds sorted."""
        if self.rate is not None:
            guess = np.clip(np.ceil((bounds - self.start) * self.rate), 0, self.n_frames).astype(np.int64)
            for _ in range(2):  # the closed form can be one frame off by rounding
                earlier = (guess > 0) & (self.start + (guess - 1) / self.rate >= bounds)
                guess[earlier] -= 1
                later = (guess < self.n_frames) & (self.start + guess / self.rate < bounds)
                guess[later] += 1
            return guess
        out = np.full(bounds.shape, self.n_frames, dtype=np.int64)
        position, previous_last = 0, -np.inf
        for start in range(0, self.n_frames, self.chunk_steps):
            stop = min(start + self.chunk_steps, self.n_frames)
            block = np.asarray(self.times.read(start, stop), dtype=np.float64)
            _check_increasing(block, start, previous_last)
            previous_last = float(block[-1])
            end = np.searchsorted(bounds, previous_last, side="right")  # bounds <= this block's last time
            out[position:end] = start + np.searchsorted(block, bounds[position:end], side="left")
            position = end
        return out

    def describe(self) -> str:
        if self.rate is not None:
            return f"rate {self.rate:g} Hz from {self.start:g} s"
        return f"timestamps {self.first:g}..{self.end:g} s"


def _check_increasing(block, start, previous_last):
    if not np.all(np.isfinite(block)):
        k = int(np.argmax(~np.isfinite(block)))
        raise ValueError(f"times must be finite, got {block[k]} at times[{start + k}]")
    steps = np.diff(np.concatenate([[previous_last], block]))
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0))
        before = previous_last if k == 0 else block[k - 1]
        raise ValueError(f"times must be strictly increasing, got times[{start + k}]={block[k]} after {before}")


def _plan_trials(trials, clock, window, baseline):
    """Frame ranges of every trial's window (and baseline); which trials are dropped, and why."""
    parts = [window] + ([baseline] if baseline is not None else [])
    onsets = trials.onsets
    bounds = np.stack([np.stack([onsets + a, onsets + b], axis=-1) for a, b in parts], axis=1)  # (K, parts, 2)
    flat = bounds.reshape(-1)
    order = np.argsort(flat, kind="stable")
    frames = np.empty(flat.shape, dtype=np.int64)
    frames[order] = clock.frames_at(flat[order])
    frames = frames.reshape(bounds.shape)
    off = np.any((bounds[..., 0] < clock.first) | (bounds[..., 1] > clock.end), axis=1)
    empty = frames[..., 1] <= frames[..., 0]
    empty_window = ~off & empty[:, 0]
    empty_baseline = ~off & ~empty_window & (empty[:, 1] if baseline is not None else False)
    drop = off | empty_window | empty_baseline
    kept = np.flatnonzero(~drop)
    return {
        "kept": kept,
        "intervals": frames[kept],
        "dropped": {"off_recording": int(off.sum()), "empty_window": int(empty_window.sum()),
                    "empty_baseline": int(np.sum(empty_baseline))},
    }

