"""Spike trains as a lazy, chunked ``(T, n)`` array of firing rates, binned on demand.

:func:`bin_spikes` turns per-unit spike times (or NWB's flat ``spike_times`` with its
``spike_times_index``) into a :class:`BinnedSpikes`: an array-like object with
``shape``, ``dtype``, ``chunks`` and row slicing that every estimator reads window by
window, like a Zarr or h5py array. The dense ``T x n`` matrix is never built: reading
rows ``[a, b)`` counts each unit's spikes in those bins only.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validation import check_int, check_real, describe

__all__ = ["BinnedSpikes", "bin_spikes"]

# Default rows per chunk: about this many values (2 MB of float64) per chunk.
_CHUNK_VALUES = 2**18


class BinnedSpikes:
    """Spike counts per bin divided by the bin size (spikes/s), as a lazy ``(T, n)`` float64 array.

    Made by :func:`bin_spikes`. Bin ``k`` covers ``[t_start + k * bin_size, t_start + (k + 1) *
    bin_size)`` (the last one ends at ``t_stop``) and its time is its start,
    :meth:`times`. ``binned[a:b]`` (or ``binned[a:b, cols]``) returns a NumPy array of
    those rows; ``chunks = (chunk_rows, n)`` tells readers how many rows to read at once.
    A :class:`~streamcausal.experiment.Recording` describes it with
    ``rate=binned.rate, starting_time=binned.t_start``.

    Attributes
    ----------
    shape : (T, n)
    dtype : float64
    chunks : (chunk_rows, n)
    bin_size, t_start, t_stop, rate : float
        ``rate = 1 / bin_size`` frames per second.
    n_spikes : ndarray of int64, shape (n,)
        Spikes of each unit inside ``[t_start, t_stop)``, the ones that are counted.

    Notes
    -----
    Held in memory: one int64 key per counted spike (``unit * T + bin``, sorted). Reading
    rows ``[a, b)`` finds each unit's spikes there by binary search and counts them:
    ``O(n log(spikes) + spikes in the rows + (b - a) n)``.
    """

    ndim = 2
    dtype = np.dtype(np.float64)

    def __init__(self, keys: np.ndarray, n_spikes: np.ndarray, n_bins: int, bin_size: float, t_start: float,
                 t_stop: float, chunk_rows: int):
        self._keys = keys
        self.n_spikes = n_spikes
        n_units = int(n_spikes.shape[0])
        self.shape = (int(n_bins), n_units)
        self.bin_size = float(bin_size)
        self.t_start = float(t_start)
        self.t_stop = float(t_stop)
        self.chunks = (int(chunk_rows), n_units)
        self._unit_offsets = np.arange(n_units, dtype=np.int64) * np.int64(n_bins)

    @property
    def rate(self) -> float:
        """Frames (bins) per second, ``1 / bin_size``."""
        return 1.0 / self.bin_size

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the dense array this stands for (never allocated whole)."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def times(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Start time in seconds of bins ``start .. stop - 1`` (all bins by default)."""
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        return self.t_start + np.arange(start, max(start, stop), dtype=np.float64) * self.bin_size

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (``0 <= start <= stop <= T``) as a new float64 array ``(stop - start, n)``."""
        n_bins, n_units = self.shape
        rows = stop - start
        if rows <= 0 or n_units == 0:
            return np.zeros((max(rows, 0), n_units))
        bounds = np.searchsorted(self._keys, np.concatenate([self._unit_offsets + start, self._unit_offsets + stop]))
        lo, hi = bounds[:n_units], bounds[n_units:]
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            return np.zeros((rows, n_units))
        # Positions of every spike in the window, unit by unit: lo[u], lo[u] + 1, ..., hi[u] - 1.
        first = np.cumsum(counts) - counts
        units = np.repeat(np.arange(n_units, dtype=np.int64), counts)
        positions = np.arange(total, dtype=np.int64) + np.repeat(lo - first, counts)
        bins = self._keys[positions] - self._unit_offsets[units] - start
        out = np.bincount(bins * n_units + units, minlength=rows * n_units).reshape(rows, n_units)
        return out / self.bin_size

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if len(key) == 0:
                return self[:]
            if len(key) > 2:
                raise IndexError(f"BinnedSpikes is 2-D, got {len(key)} indices")
            rows = self[key[0]]
            return rows[..., key[1]] if len(key) == 2 else rows
        n_bins = self.shape[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n_bins)
            if step == 1:
                return self.read(start, max(start, stop))
            if step > 0:
                return self.read(start, max(start, stop))[::step]
            index = np.arange(start, stop, step)
            if index.size == 0:
                return np.zeros((0, self.shape[1]))
            return self.read(int(index[-1]), int(index[0]) + 1)[::-1][:: -step]
        if isinstance(key, (numbers.Integral, np.integer)) and not isinstance(key, (bool, np.bool_)):
            k = int(key)
            if not -n_bins <= k < n_bins:
                raise IndexError(f"row {k} is out of range for {n_bins} bins")
            k %= n_bins
            return self.read(k, k + 1)[0]
        index = np.asarray(key)
        if index.dtype == np.bool_:
            if index.shape != (n_bins,):
                raise IndexError(f"a boolean row mask must have shape ({n_bins},), got {index.shape}")
            index = np.flatnonzero(index)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise IndexError(f"BinnedSpikes rows take an int, a slice or a 1-D integer array, got {describe(key)}")
        if index.size == 0:
            return np.zeros((0, self.shape[1]))
        index = np.where(index < 0, index + n_bins, index)
        if index.min() < 0 or index.max() >= n_bins:
            raise IndexError(f"row indices must be in [-{n_bins}, {n_bins}), got {describe(key)}")
        lo = int(index.min())
        return self.read(lo, int(index.max()) + 1)[index - lo]

    def __repr__(self) -> str:
        return (
            f"BinnedSpikes({self.shape[1]} units, {self.shape[0]} bins of {self.bin_size:g} s "
            f"from t_start={self.t_start:g} to t_stop={self.t_stop:g}, {int(self.n_spikes.sum())} spikes)"
        )


def bin_spikes(spike_times, bin_size, *, t_start=0.0, t_stop=None, index=None, chunk_rows=None) -> BinnedSpikes:
    """Bin spike trains into a lazy ``(T, n)`` array of firing rates (spikes/s) that estimators read chunk by chunk.

    Bin ``k`` covers ``[t_start + k * bin_size, t_start + (k + 1) * bin_size)`` (edges
    computed exactly so, in float64); its time is its start and its value is the number
    of the unit's spikes in it divided by ``bin_size``. Spikes outside ``[t_start,
    t_stop)`` are ignored. The dense matrix is never built.

    Parameters
    ----------
    spike_times : sequence of array_like, or array_like with ``index``
        One 1-D array of spike times in seconds per unit (a list, tuple or object array;
        a unit may have no spike), or, with ``index``, NWB's flat ``spike_times``: all
        units' spikes one after the other. Each unit's times must be finite and sorted
        (non-decreasing); unsorted times are an error, not sorted silently.
    bin_size : float
        Bin width in seconds, > 0.
    t_start : float
        Start of bin 0, in seconds.
    t_stop : float, optional
        End of the binned time, > ``t_start``: ``T = ceil((t_stop - t_start) / bin_size)``
        bins (exactly: the bins whose start edge is before ``t_stop``), the last one cut at
        ``t_stop`` (a partial last bin still divides by ``bin_size``). Default: the end
        of the bin that holds the latest spike at or after ``t_start``, so that bin is the
        last one (an error when there is no such spike).
    index : array_like of int, shape (n,), optional
        NWB's ``spike_times_index``: the END offset of each unit's spikes in the flat
        ``spike_times`` (unit ``u`` has ``spike_times[index[u-1]:index[u]]``, ``index[-1] ==
        len(spike_times)``).
    chunk_rows : int, optional
        Rows per chunk advertised in ``chunks``: the reading unit of the estimators.
        Default: about ``2**18`` values per chunk.

    Returns
    -------
    BinnedSpikes
        Lazy ``(T, n)`` float64 array; ``times()``, ``rate``, ``t_start`` give the frame times.

    Raises
    ------
    TypeError
        Non-numeric spike times; a flat 1-D array without ``index``; a non-integer index.
    ValueError
        ``bin_size <= 0``, ``t_stop <= t_start``, non-finite or unsorted spike times (the
        unit and position are named), a bad ``index``, no units, no spike to set a default
        ``t_stop``.

    Examples
    --------
    >>> binned = bin_spikes([[0.01, 0.02, 0.25], [0.35]], 0.1)
    >>> binned.shape, binned.chunks
    ((4, 2), (4, 2))
    >>> binned[:].tolist()
    [[20.0, 0.0], [0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]
    >>> bin_spikes([0.01, 0.02, 0.35], 0.1, index=[2, 3])[0:1].tolist()
    [[20.0, 0.0]]
    """
    bin_size = check_real(bin_size, "bin_size")
    if bin_size <= 0:
        raise ValueError(f"bin_size must be > 0 (seconds), got {bin_size!r}")
    t_start = check_real(t_start, "t_start")
    if t_stop is not None:
        t_stop = check_real(t_stop, "t_stop")
        if t_stop <= t_start:
            raise ValueError(f"t_stop must be > t_start={t_start!r}, got {t_stop!r}")
    flat, ends = _flat_spikes(spike_times, index)
    n_units = int(ends.shape[0])
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    counts_all = ends - starts
    _check_spikes(flat, starts, ends, index is not None)

    # The bin of every spike: floor((t - t_start) / b), corrected by one where rounding puts
    # it on the wrong side of an edge t_start + k * b, so that bins agree with the edges.
    with np.errstate(over="ignore", invalid="ignore"):
        k = np.floor((flat - t_start) / bin_size)
        k -= (t_start + k * bin_size) > flat
        k += (t_start + (k + 1) * bin_size) <= flat
    if t_stop is None:
        after = flat >= t_start
        if not after.any():
            where = "no spikes at all" if flat.size == 0 else f"no spike at or after t_start={t_start!r}"
            raise ValueError(f"t_stop is needed: {where}, so there is no last bin to end at; pass t_stop")
        n_bins = int(k[after].max()) + 1
        t_stop = t_start + n_bins * bin_size
    else:
        # The bins that start before t_stop: ceil((t_stop - t_start) / bin_size), up to rounding.
        n_bins = max(1, math.ceil((t_stop - t_start) / bin_size))
        while n_bins > 1 and t_start + (n_bins - 1) * bin_size >= t_stop:
            n_bins -= 1
        while t_start + n_bins * bin_size < t_stop:
            n_bins += 1
    if n_bins * max(n_units, 1) >= 2**62:
        raise ValueError(
            f"bin_size={bin_size!r} makes {n_bins} bins for {n_units} units: too many to index; use larger bins"
        )
    kept = (flat >= t_start) & (flat < t_stop) & (k < n_bins)
    units = np.repeat(np.arange(n_units, dtype=np.int64), counts_all)
    keys = units[kept] * np.int64(n_bins) + k[kept].astype(np.int64)
    n_spikes = np.bincount(units[kept], minlength=n_units).astype(np.int64)
    if chunk_rows is None:
        chunk_rows = max(1, min(n_bins, _CHUNK_VALUES // max(n_units, 1)))
    else:
        chunk_rows = check_int(chunk_rows, "chunk_rows", minimum=1)
    return BinnedSpikes(keys, n_spikes, n_bins, bin_size, t_start, t_stop, chunk_rows)


def _flat_spikes(spike_times, index):
    """All spikes as one float64 array and each unit's END offset in it (int64, shape (n,))."""
    if spike_times is None or isinstance(spike_times, (str, bytes, dict)):
        raise TypeError(f"spike_times must be a sequence of per-unit spike time arrays, got {describe(spike_times)}")
    if index is not None:
        flat = _float_array(spike_times, "spike_times")
        if flat.ndim != 1:
            raise ValueError(f"spike_times must be 1-D (all units' spikes, flat) when index is given, got shape {flat.shape}")
        try:
            ends = np.asarray(index)
        except Exception as error:
            raise TypeError(f"index must be a 1-D array of integer end offsets, got {describe(index)}") from error
        if ends.ndim != 1 or not (np.issubdtype(ends.dtype, np.integer) or ends.size == 0):
            raise TypeError(
                f"index must be a 1-D array of integer end offsets (NWB spike_times_index), got {describe(index)}"
                f" (dtype {ends.dtype}, shape {ends.shape})"
            )
        ends = ends.astype(np.int64)
        if ends.size == 0:
            raise ValueError("index must have one end offset per unit, got none (no units)")
        if ends.min() < 0:
            k = int(np.argmax(ends < 0))
            raise ValueError(f"index must hold end offsets >= 0, got {ends[k]} at index[{k}]")
        if ends.size > 1 and (np.diff(ends) < 0).any():
            k = int(np.argmax(np.diff(ends) < 0)) + 1
            raise ValueError(f"index must be non-decreasing (end offsets), got index[{k}]={ends[k]} after {ends[k - 1]}")
        if ends[-1] != flat.shape[0]:
            raise ValueError(
                f"index must end at len(spike_times)={flat.shape[0]} (its last entry is the end of the last unit), "
                f"got index[-1]={ends[-1]}"
            )
        return flat, ends
    if isinstance(spike_times, np.ndarray) and spike_times.dtype != object:
        raise TypeError(
            f"spike_times must be a sequence of per-unit arrays, got a numeric array of shape {spike_times.shape}; "
            "for NWB's flat spike_times pass index=spike_times_index, for a single unit pass [times]"
        )
    if not hasattr(spike_times, "__len__") or not hasattr(spike_times, "__getitem__"):
        raise TypeError(f"spike_times must be a sequence of per-unit spike time arrays, got {describe(spike_times)}")
    if len(spike_times) == 0:
        raise ValueError("spike_times must hold at least one unit, got an empty sequence")
    units = []
    for u in range(len(spike_times)):
        times = spike_times[u]
        if isinstance(times, numbers.Real) and not isinstance(times, (bool, np.bool_)):
            raise TypeError(
                f"spike_times[{u}] must be a 1-D array of one unit's spike times, got the number {times!r}; "
                "pass a list of arrays, one per unit, or the flat array with index="
            )
        array = _float_array(times, f"spike_times[{u}]")
        if array.ndim != 1:
            raise ValueError(f"spike_times[{u}] must be 1-D (one unit's spike times), got shape {array.shape}")
        units.append(array)
    ends = np.cumsum([array.shape[0] for array in units]).astype(np.int64)
    return np.concatenate(units), ends


def _float_array(value, name: str) -> np.ndarray:
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array of spike times in seconds, got {describe(value)}")
    try:
        array = np.asarray(value)
        if array.dtype == np.bool_ or array.dtype.kind in "OUSVcmM":
            raise TypeError(array.dtype)
        return array.astype(np.float64, copy=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be an array of spike times in seconds (numbers), got {describe(value)}") from error


def _check_spikes(flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, is_flat: bool) -> None:
    """Finite and sorted within each unit; errors name the unit and the spike."""

    def where(position: int) -> str:
        unit = int(np.searchsorted(ends, position, side="right"))
        if is_flat:
            return f"spike_times[{position}] (unit {unit})"
        return f"spike_times[{unit}][{position - int(starts[unit])}]"

    bad = ~np.isfinite(flat)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"spike times must be finite, got {flat[k]} at {where(k)}")
    if flat.size > 1:
        descending = flat[1:] < flat[:-1]
        descending[ends[:-1][(ends[:-1] > 0) & (ends[:-1] < flat.size)] - 1] = False  # across units
        if descending.any():
            k = int(np.argmax(descending)) + 1
            raise ValueError(
                f"spike times must be sorted within each unit, "
                f"got {float(flat[k])!r} at {where(k)} after {float(flat[k - 1])!r}; "
                "sort each unit's times first (np.sort)"
            )
