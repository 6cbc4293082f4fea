"""What an experiment hands the package: stimulation trials and a recording with frame times.

:class:`Trials` are the stimulation events (onset in seconds, the sources each one
targeted, none for a sham trial); :class:`Recording` is a lazy ``(T, n)`` activity array
with its frame times and trials, as :func:`~streamcausal.io.nwb.read_nwb` returns it.
Sources are indices into the recording's own neurons (ROIs or units), so source ``i``
and responder ``i`` are the same neuron.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._validation import check_int, check_real, describe

__all__ = ["Recording", "Trials"]


class Trials:
    """Stimulation trials: onset times and the sources each trial targeted.

    Parameters
    ----------
    onsets : array_like, shape (K,)
        Onset of each trial in seconds, finite. Unsorted onsets are sorted (stably,
        with their targets); ``order`` gives each sorted trial's original position.
    targets : sequence of K sequences of int
        The source indices each trial targeted, in ``[0, n_sources)``, without
        repeats; an empty sequence is a sham trial.
    n_sources : int, optional
        Number of sources. Default: the recording's number of neurons when estimating
        (targets index the recorded neurons), or ``max(target) + 1`` for ``n_sources``
        read before that.
    ids : array_like, shape (n_sources,), optional
        A name or number for each source (e.g. ROI ids), carried into results.

    Examples
    --------
    >>> trials = Trials([0.5, 2.0, 1.0], [[1], [], [0, 2]], n_sources=3)
    >>> trials.onsets.tolist(), trials.targets_of(1).tolist(), trials.n_sham
    ([0.5, 1.0, 2.0], [0, 2], 1)
    >>> trials.indicators(0, 3).tolist()
    [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """

    def __init__(self, onsets, targets, *, n_sources=None, ids=None):
        onsets = _as_1d_float(onsets, "onsets")
        if isinstance(targets, (str, bytes)) or not hasattr(targets, "__len__"):
            raise TypeError(f"targets must be a sequence of sequences of source indices, got {describe(targets)}")
        if len(targets) != onsets.shape[0]:
            raise ValueError(f"targets must have one entry per onset ({onsets.shape[0]}), got {len(targets)}")
        lists = [_target_list(entry, k) for k, entry in enumerate(targets)]
        flat = np.concatenate(lists) if lists else np.empty(0, dtype=np.int64)
        if flat.size and flat.min() < 0:
            k = next(k for k, entry in enumerate(lists) if entry.size and entry.min() < 0)
            raise ValueError(f"targets must be source indices >= 0, got {lists[k].min()} in targets[{k}]")
        if n_sources is not None:
            n_sources = check_int(n_sources, "n_sources", minimum=1)
            if flat.size and flat.max() >= n_sources:
                k = next(k for k, entry in enumerate(lists) if entry.size and entry.max() >= n_sources)
                raise ValueError(
                    f"targets must be in [0, n_sources={n_sources}), got {lists[k].max()} in targets[{k}]"
                )
        order = np.argsort(onsets, kind="stable")
        self.order = order
        self.onsets = onsets[order]
        sorted_lists = [lists[k] for k in order]
        self.indptr = np.zeros(len(sorted_lists) + 1, dtype=np.int64)
        np.cumsum([entry.size for entry in sorted_lists], out=self.indptr[1:])
        self.indices = np.concatenate(sorted_lists) if sorted_lists else np.empty(0, dtype=np.int64)
        self._n_sources = n_sources
        self.ids = None
        if ids is not None:
            ids = np.asarray(ids)
            if ids.ndim != 1:
                raise ValueError(f"ids must be 1-D (one per source), got shape {ids.shape}")
            if n_sources is not None and ids.shape[0] != n_sources:
                raise ValueError(f"ids must have one entry per source (n_sources={n_sources}), got {ids.shape[0]}")
            self.ids = ids

    @property
    def n_trials(self) -> int:
        return int(self.onsets.shape[0])

    @property
    def n_sources(self) -> int:
        """The number of sources: as given, else ``max(target) + 1`` (0 without any target)."""
        if self._n_sources is not None:
            return self._n_sources
        return int(self.indices.max()) + 1 if self.indices.size else 0

    @property
    def n_sham(self) -> int:
        return int(np.count_nonzero(np.diff(self.indptr) == 0))

    def targets_of(self, k: int) -> np.ndarray:
        """The sources targeted by (sorted) trial ``k``."""
        return self.indices[self.indptr[k] : self.indptr[k + 1]]

    def indicators(self, start: int, stop: int, n_sources: int | None = None) -> np.ndarray:
        """Dense 0/1 float64 ``(stop - start, n_sources)``: which sources trials ``start..stop-1`` targeted."""
        n_sources = self.n_sources if n_sources is None else n_sources
        out = np.zeros((stop - start, n_sources))
        rows = np.repeat(np.arange(stop - start), np.diff(self.indptr[start : stop + 1]))
        out[rows, self.indices[self.indptr[start] : self.indptr[stop]]] = 1.0
        return out

    def bound_to(self, n_neurons: int) -> Trials:
        """These trials checked against a recording of ``n_neurons`` neurons (the sources)."""
        if self._n_sources is not None and self._n_sources != n_neurons:
            raise ValueError(
                f"trials have n_sources={self._n_sources} but the activity has {n_neurons} neurons; "
                "targets index the recorded neurons, so the two must agree"
            )
        if self.indices.size and self.indices.max() >= n_neurons:
            k = int(np.searchsorted(self.indptr, int(np.argmax(self.indices >= n_neurons)), side="right")) - 1
            raise ValueError(
                f"trials target source {int(self.indices.max())} (trial {int(self.order[k])}) but the activity "
                f"has {n_neurons} neurons (columns)"
            )
        if self.ids is not None and self.ids.shape[0] != n_neurons:
            raise ValueError(f"trial ids name {self.ids.shape[0]} sources but the activity has {n_neurons} neurons")
        bound = object.__new__(Trials)
        bound.__dict__.update(self.__dict__)
        bound._n_sources = n_neurons
        return bound

    def __len__(self) -> int:
        return self.n_trials

    def __repr__(self) -> str:
        return f"Trials(n_trials={self.n_trials}, n_sources={self.n_sources}, n_sham={self.n_sham})"


class Recording:
    """A lazy ``(T, n)`` activity array with its frame times, trials and neuron ids.

    Parameters
    ----------
    activity : array, shape (T, n)
        Time-major activity: any array the estimators read chunk by chunk (NumPy,
        memmap, Zarr, Dask, h5py, :func:`~streamcausal.io.spikes.bin_spikes`).
    trials : Trials, optional
    times : array_like, shape (T,), optional
        Time of each frame in seconds, increasing. Give either ``times`` or ``rate``.
    rate : float, optional
        Frames per second: frame ``f`` is at ``starting_time + f / rate``.
    starting_time : float
        Time of frame 0 when ``rate`` is given.
    ids : array_like, shape (n,), optional
        ROI or unit ids of the columns.
    description : str
        One line saying what this is (file, series, units).
    """

    def __init__(self, activity, trials=None, *, times=None, rate=None, starting_time=0.0, ids=None,
                 description=""):
        if (times is None) == (rate is None):
            raise ValueError("give the frame times as exactly one of times= or rate=")
        if rate is not None:
            rate = check_real(rate, "rate")
            if rate <= 0:
                raise ValueError(f"rate must be > 0, got {rate}")
        if trials is not None and not isinstance(trials, Trials):
            raise TypeError(f"trials must be a Trials or None, got {describe(trials)}")
        self.activity = activity
        self.trials = trials
        self.times = times
        self.rate = rate
        self.starting_time = check_real(starting_time, "starting_time")
        self.ids = None if ids is None else np.asarray(ids)
        self.description = str(description)

    @property
    def shape(self):
        return tuple(self.activity.shape)

    def close(self):
        """Close the file the activity is read from (a Recording from :func:`~streamcausal.io.nwb.read_nwb`)."""
        handle = getattr(self, "io", None)
        if handle is not None:
            handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        timing = f"rate={self.rate:g} Hz" if self.rate is not None else "timestamps"
        return f"Recording({self.description or 'activity'}, shape={self.shape}, {timing}, trials={self.trials!r})"


def _as_1d_float(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a 1-D array of numbers, got {describe(value)}") from error
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"{name} must be finite, got {array[k]} at {name}[{k}]")
    return array


def _target_list(entry, k: int) -> np.ndarray:
    if isinstance(entry, numbers.Integral) and not isinstance(entry, bool):
        entry = [entry]
    if isinstance(entry, (str, bytes)) or not hasattr(entry, "__iter__"):
        raise TypeError(f"targets[{k}] must be a sequence of source indices, got {describe(entry)}")
    values = list(entry)
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            if not (isinstance(value, (float, np.floating)) and float(value).is_integer()):
                raise TypeError(f"targets[{k}] must hold integer source indices, got {describe(value)}")
    array = np.asarray(values, dtype=np.int64).reshape(-1)
    if np.unique(array).size != array.size:
        raise ValueError(f"targets[{k}] must not repeat a source, got {array.tolist()}")
    return array
