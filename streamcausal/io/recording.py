"""Out-of-core estimation from a recording: NumPy, memmap, Zarr or Dask arrays, read chunk by chunk.

:func:`estimate` folds the pairs ``(stimulation[t], activity[t + lag])`` (or
``(activity[t], activity[t + lag])`` when there is no stimulation) over the selected
steps ``t`` into the same :class:`~streamcausal.moments.CrossMoments` that
:func:`~streamcausal.run` streams, reading windows of rows aligned to the
recording's own chunks and never holding anything of length ``T``;
:func:`estimate_store` does the same for arrays named in a Zarr group. Every estimate
is ``[target, source]`` = ``(n_outputs, n_inputs)``, the orientation of ``A``.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .._validation import check_callable, check_flag, check_int, check_numeric_dtype, describe
from ..engine import default_chunk_steps
from ..moments import CrossMoments, block_size, chunk_moments
from ..progress import Progress
from ..result import Result

__all__ = ["estimate", "estimate_store"]

# A window of the recording is never larger than this many values just to align reads
# with the recording's own chunks (2**24 values = 64 MB of float32).
_MAX_ALIGNED_VALUES = 2**24
_MAX_LISTED = 20
# Pairs are reduced in batches of about this many values per side (2 MB of float64).
_BATCH_VALUES = 2**18
# Read the next window in a thread while this one is reduced: True, False (the sequential
# path), or None for "when some array is not in memory and at least _READ_AHEAD_CPUS CPUs
# are available". The benchmarks and tests switch it to compare the two paths.
_READ_AHEAD = None
_READ_AHEAD_CPUS = 2
# Cores left to the reader thread: while it runs, the caller's Numba kernels use this many
# threads fewer (at least one). Numba's OpenMP threads spin while they wait, so on 2 cores
# a 2-thread reduction and the reader slow each other down (measured: benchmarks/bench_estimate.py).
_READER_CORES = 1


# --------------------------------------------------------------------------- array sources


class _Source:
    """Rows ``[start, stop)`` of a time-major array of any kind, returned as NumPy."""

    __slots__ = ("array", "name", "kind", "shape", "dtype", "chunk_rows")

    def __init__(self, value, name: str):
        if value is None or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be an array (NumPy, memmap, Zarr or Dask), got {describe(value)}")
        if _is_dask(value):
            kind = "dask"
        elif isinstance(value, np.ndarray):
            kind = "memmap" if isinstance(value, np.memmap) else "numpy"
        elif type(value).__module__.split(".")[0] == "zarr" and hasattr(value, "chunks"):
            kind = "zarr"
        elif all(hasattr(value, attr) for attr in ("shape", "dtype", "__getitem__")):
            kind = "array"  # h5py datasets, xarray DataArrays, other duck arrays
        else:
            try:
                value = np.asarray(value)
            except Exception as error:  # ragged lists and other non-arrays
                raise TypeError(f"{name} must be a numeric array, got {describe(value)}") from error
            kind = "numpy"
        dtype = check_numeric_dtype(value.dtype, name)
        self.array, self.name, self.kind, self.dtype = value, name, kind, dtype
        if any(isinstance(size, float) and math.isnan(size) for size in value.shape):
            raise ValueError(f"{name} must have a known shape, got {value.shape} (call compute_chunk_sizes())")
        self.shape = tuple(int(size) for size in value.shape)
        self.chunk_rows = self._chunk_rows()

    def _chunk_rows(self) -> int:
        """Length along time of the array's own storage chunks (1 for in-memory arrays)."""
        if self.kind in ("numpy", "memmap") or not self.shape:
            return 1
        shards = getattr(self.array, "shards", None)  # Zarr 3 sharding: a shard is the unit of I/O
        chunks = shards if shards else getattr(self.array, "chunks", None)
        try:
            first = chunks[0]
            first = first[0] if isinstance(first, tuple) else first  # Dask: tuple of block lengths
            return max(1, int(first))
        except (TypeError, IndexError, ValueError):
            return 1

    @property
    def is_float(self) -> bool:
        return bool(np.issubdtype(self.dtype, np.floating))

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.kind in ("numpy", "memmap"):
            return self.array[start:stop]
        if self.kind == "dask":
            return np.asarray(self.array[start:stop].compute())
        return np.asarray(self.array[start:stop])

    def describe(self) -> str:
        shape = "x".join(map(str, self.shape))
        if self.kind == "zarr":
            where = getattr(self.array, "store_path", None)
            return f"zarr array {where} ({shape} {self.dtype}, chunks {self.array.chunks})"
        if self.kind == "memmap":
            return f"numpy memmap {getattr(self.array, 'filename', None)} ({shape} {self.dtype})"
        if self.kind == "dask":
            return f"dask-backed {type(self.array).__name__} ({shape} {self.dtype}, chunk rows {self.chunk_rows})"
        if self.kind == "array":
            return f"{type(self.array).__module__}.{type(self.array).__name__} ({shape} {self.dtype})"
        return f"numpy array ({shape} {self.dtype})"


class _ReadAhead:
    """``read(key)`` for each key in order, each read in a background thread while the caller uses the one before.

    Iterating yields ``read(key)`` for every key. With ``threaded``, one thread
    ("streamcausal-read") reads the next key while the caller works on the current one,
    so at most two windows are held. One thread: HDF5 serialises every call on a file
    anyway (h5py's lock), while zarr and h5py release the GIL as they decompress. An
    exception in ``read`` reaches the caller unchanged (same object, type and message)
    when it asks for that key, after every earlier key was yielded, as on the sequential
    path. Leaving the ``with`` block, normally, on an error or on KeyboardInterrupt,
    cancels what is queued and joins the thread (waiting for a read in progress), so no
    thread outlives the call. While the thread runs, the caller's Numba kernels run on
    ``_READER_CORES`` threads fewer. Without ``threaded`` each key is read when it is
    asked for: the sequential path.
    """

    def __init__(self, read, keys, *, threaded: bool):
        self.read, self.keys, self.threaded = read, list(keys), bool(threaded)
        self.pool = None
        self.numba_threads = None

    def __enter__(self):
        if self.threaded and len(self.keys) > 1:  # one window has nothing to overlap with
            self.numba_threads = numba.get_num_threads()  # this thread's own setting
            numba.set_num_threads(max(1, min(self.numba_threads, _available_cpus() - _READER_CORES)))
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamcausal-read")
        return self

    def __exit__(self, *exc_info):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.numba_threads is not None:
            numba.set_num_threads(self.numba_threads)
            self.numba_threads = None
        return False

    def __iter__(self):
        if self.pool is None:
            for key in self.keys:
                yield self.read(key)
            return
        pending = self.pool.submit(self.read, self.keys[0])
        for following in self.keys[1:] + [None]:
            value = pending.result()  # re-raises the reader's exception
            pending = None
            if following is not None:  # read the next window while this one is used
                pending = self.pool.submit(self.read, following)
            yield value
            value = None  # hold no more than the next window while waiting for it


def _read_ahead_by_default(sources) -> bool:
    """Whether to read ahead: ``_READ_AHEAD``, or when an array is not in memory and CPUs allow."""
    if _READ_AHEAD is not None:
        return bool(_READ_AHEAD)
    stored = any(source.kind not in ("numpy", "memmap") for source in sources)
    return stored and _available_cpus() >= _READ_AHEAD_CPUS


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _is_dask(value) -> bool:
    graph = getattr(value, "__dask_graph__", None)  # xarray objects have one, None unless dask-backed
    return callable(graph) and hasattr(value, "compute") and graph() is not None


# --------------------------------------------------------------------------- step selections


class _Selection:
    """Which steps ``t`` are perturbation steps: all, a range, sorted indices or a mask source."""

    def __init__(self, steps, n_steps: int):
        self.mask: _Source | None = None
        self.range: range | None = None
        self.index: np.ndarray | None = None
        if steps is None:
            self.range = range(0, n_steps)
            self.description = "all"
            return
        if isinstance(steps, slice):
            selected = range(*steps.indices(n_steps))
            self.range = selected if selected.step > 0 else selected[::-1]
            self.description = f"slice({steps.start}, {steps.stop}, {steps.step})"
            return
        if isinstance(steps, (list, tuple, range)):
            steps = np.asarray(steps)
        source = _Source(steps, "steps")
        if len(source.shape) != 1:
            raise ValueError(
                f"steps must be 1-D (a boolean mask of length T={n_steps} or an index array), "
                f"got shape {source.shape}"
            )
        if source.dtype == np.bool_:
            if source.shape[0] != n_steps:
                raise ValueError(
                    f"steps mask must have the length of activity, T={n_steps}, got length {source.shape[0]}"
                )
            self.mask = source
            self.description = f"mask: {source.describe()}"
            return
        if source.shape[0] == 0:  # np.asarray([]) is float64: an empty selection either way
            self.index = np.empty(0, dtype=np.int64)
        elif not np.issubdtype(source.dtype, np.integer):
            raise TypeError(
                "steps must be a boolean mask, a slice or an integer index array, "
                f"got dtype {source.dtype}"
            )
        else:
            # An index array is as long as the selection the user chose; it is read whole.
            index = source.read(0, source.shape[0]).astype(np.int64, copy=False)
            zeros_and_ones = index.shape[0] == n_steps and n_steps > 1 and np.all((index == 0) | (index == 1))
            # One-byte integers are how masks are stored (uint8 0/1); a 0/1 array that is not strictly
            # increasing is no index array either. Only int arrays like [0, 1] (both steps) stay indices.
            if zeros_and_ones and (source.dtype.itemsize == 1 or np.any(np.diff(index) <= 0)):
                raise ValueError(
                    f"steps looks like a 0/1 mask stored as integers (dtype {source.dtype}, length T={n_steps}), "
                    "which would be read as step indices; pass a boolean mask (steps.astype(bool)) or an "
                    "index array of the perturbation steps"
                )
            outside = (index < 0) | (index >= n_steps)
            if outside.any():
                k = int(np.argmax(outside))
                raise ValueError(f"steps must be indices in [0, {n_steps}), got {index[k]} at steps[{k}]")
            if index.shape[0] > 1:
                not_increasing = np.diff(index) <= 0
                if not_increasing.any():
                    k = int(np.argmax(not_increasing)) + 1
                    raise ValueError(
                        "steps index array must be sorted and unique (strictly increasing), "
                        f"got steps[{k}]={index[k]} after steps[{k - 1}]={index[k - 1]}"
                    )
            self.index = index
        self.description = f"index array of {source.shape[0]} steps"

    def select(self, lo: int, hi: int, mask_pieces):
        """The selected steps in ``[lo, hi)``: a range of absolute ``t`` or an int64 array of them."""
        if self.range is not None:
            r = self.range
            first = max(r.start, lo)
            first = r.start + -(-(first - r.start) // r.step) * r.step
            return range(first, max(first, min(r.stop, hi)), r.step)
        if self.index is not None:
            i0, i1 = np.searchsorted(self.index, (lo, hi))
            return _as_range(self.index[i0:i1])
        parts = []
        for row0, piece in mask_pieces:
            a, b = max(lo, row0), min(hi, row0 + piece.shape[0])
            if b > a:
                parts.append(np.flatnonzero(piece[a - row0 : b - row0]) + a)
        if not parts:
            return np.empty(0, dtype=np.int64)
        return _as_range(parts[0] if len(parts) == 1 else np.concatenate(parts))


def _as_range(index: np.ndarray):
    """Evenly spaced indices (e.g. every other step) as a range: strided copies beat fancy indexing."""
    if index.shape[0] < 2:
        return index
    step = int(index[1] - index[0])
    if int(index[-1] - index[0]) != step * (index.shape[0] - 1) or not np.all(np.diff(index) == step):
        return index
    return range(int(index[0]), int(index[-1]) + 1, step)


def _gather(pieces, shift: int, selected, out: np.ndarray) -> None:
    """``out[k] = rows[selected[k] + shift]``, with rows spread over ``pieces`` = [(row0, array)]."""
    k = 0
    for row0, piece in pieces:
        row1 = row0 + piece.shape[0]
        if isinstance(selected, range):
            r = selected
            # the steps of r whose rows t + shift fall in [row0, row1)
            first = max(r.start, row0 - shift)
            first = r.start + -(-(first - r.start) // r.step) * r.step
            stop = min(r.stop, row1 - shift)
            if stop <= first:
                continue
            m = len(range(first, stop, r.step))
            a = first + shift - row0
            out[k : k + m] = piece[a : a + (m - 1) * r.step + 1 : r.step]
        else:
            i0, i1 = np.searchsorted(selected, (row0 - shift, row1 - shift))
            m = int(i1 - i0)
            if m == 0:
                continue
            out[k : k + m] = piece[selected[i0:i1] + (shift - row0)]
        k += m


# --------------------------------------------------------------------------- checks


def _check_arguments(activity, stimulation, lag, chunk_steps, progress, binary, skip_nonfinite):
    activity = _Source(activity, "activity")
    if len(activity.shape) != 2:
        raise ValueError(f"activity must be 2-D (T, n), time-major, got shape {activity.shape}")
    n_steps, n = activity.shape
    if n == 0:
        raise ValueError(f"activity must have at least one neuron (column), got shape {activity.shape}")
    if stimulation is not None:
        stimulation = _Source(stimulation, "stimulation")
        if len(stimulation.shape) != 2:
            raise ValueError(f"stimulation must be 2-D (T, n_inputs), time-major, got shape {stimulation.shape}")
        if stimulation.shape[0] != n_steps:
            raise ValueError(
                "stimulation must have as many steps (rows) as activity, "
                f"got stimulation shape {stimulation.shape} and activity shape {activity.shape}"
            )
        if stimulation.shape[1] == 0:
            raise ValueError(f"stimulation must have at least one column, got shape {stimulation.shape}")
    lag = check_int(lag, "lag", minimum=1)
    if lag >= n_steps:
        raise ValueError(f"lag must be < the number of steps T={n_steps} of activity, got lag={lag}")
    if chunk_steps is not None:
        chunk_steps = check_int(chunk_steps, "chunk_steps", minimum=1)
    check_callable(progress, "progress")
    check_flag(binary, "binary")
    check_flag(skip_nonfinite, "skip_nonfinite")
    return activity, stimulation, lag, chunk_steps


def _default_chunk_steps(sources, width: int) -> int:
    """Rows of run()'s default chunk (about 2**22 values), a multiple of the recording's own chunk length when it can be."""
    target = default_chunk_steps(width)
    align = sources[0].chunk_rows
    for source in sources[1:]:
        joint = math.lcm(align, source.chunk_rows)
        if joint * width <= _MAX_ALIGNED_VALUES:
            align = joint
    if align * width > _MAX_ALIGNED_VALUES:
        return target
    return max(1, round(target / align)) * align


def _nonfinite_rows(buffer: np.ndarray) -> np.ndarray | None:
    """Boolean per row (True where a value is NaN or inf), or None when every value is finite."""
    if math.isfinite(buffer.sum()):  # one pass; an overflowing sum falls through to the exact check
        return None
    if np.isfinite(buffer).all():
        return None
    return ~np.isfinite(buffer).all(axis=1)


def _first_bad(buffer, bad_rows, times):
    k = int(np.argmax(bad_rows))
    column = int(np.argmax(~np.isfinite(buffer[k])))
    return int(times[k]), column, buffer[k, column]


def _times(selected) -> np.ndarray:
    return np.arange(selected.start, selected.stop, selected.step) if isinstance(selected, range) else selected


def _check_binary(inputs: np.ndarray, dtype: np.dtype, selected) -> None:
    if dtype == np.bool_:
        return
    if np.issubdtype(dtype, np.integer):
        ok = inputs.max() <= 1 and (np.issubdtype(dtype, np.unsignedinteger) or inputs.min() >= 0)
        if ok:
            return
    bad = (inputs != 0) & (inputs != 1)
    if not bad.any():
        return
    k = int(np.argmax(bad.any(axis=1)))
    column = int(np.argmax(bad[k]))
    t = int(_times(selected)[k])
    raise ValueError(
        f"stimulation must hold only 0 and 1 (binary=True), got {inputs[k, column]:g} at "
        f"stimulation[{t}, {column}]; pass binary=False to use real-valued clamps"
    )


# --------------------------------------------------------------------------- estimate


def estimate(
    activity,
    stimulation=None,
    *,
    steps=None,
    lag=1,
    chunk_steps=None,
    progress=None,
    skip_nonfinite=False,
    binary=True,
) -> Result:
    """Estimate connectivity from a recording of any length, reading it chunk by chunk.

    The samples are the pairs ``(stimulation[t], activity[t + lag])`` over the selected
    steps ``t`` with ``t + lag < T`` (with ``stimulation=None``, the observational pairs
    ``(activity[t], activity[t + lag])``). They are folded into the same
    :class:`~streamcausal.moments.CrossMoments` as :func:`~streamcausal.run`, one
    window of rows at a time, merged in window order, so the result is deterministic and
    peak memory does not depend on ``T``.

    Parameters
    ----------
    activity : array, shape (T, n)
        Time-major states: NumPy array, ``np.memmap``, Zarr array, Dask array, or any
        array with ``shape``, ``dtype`` and slicing (h5py, xarray). Any real dtype.
    stimulation : array, shape (T, n_inputs), optional
        The stimulation pattern (0/1 or clamped values) of each step, same kinds as
        ``activity``. ``None`` uses ``activity[t]`` as the inputs.
    steps : None, slice, array of bool, shape (T,), or array of int, shape (k,)
        The perturbation steps ``t``: all steps (``None``), a slice, a boolean mask
        (read window by window, any of the array kinds above), or sorted, unique
        indices in ``[0, T)``. Steps with ``t + lag >= T`` have no outcome and are left out.
    lag : int
        Steps from input to outcome, ``1 <= lag < T``.
    chunk_steps : int, optional
        Rows per window. By default about ``2**22`` values (as ``run()``'s chunks), rounded to a multiple of the
        recording's own chunk (shard) length along time so that every stored chunk is
        decoded once. Any value gives the same estimate up to rounding.
    progress : callable, optional
        Called after every window with a :class:`~streamcausal.progress.Progress`
        (``steps_done`` rows of ``steps_total = T``, ``samples`` so far).
    skip_nonfinite : bool
        By default a NaN or inf in a row that enters a selected pair raises ValueError
        naming the array and the time index. With True such pairs are dropped and counted
        in ``result.parameters["skipped_pairs"]``. Rows that enter no pair are not read for
        this check.
    binary : bool
        With True (default) the stimulation must hold only 0 and 1 on the selected steps
        (bool, integer or float dtype); set False for real-valued clamps. Ignored when
        ``stimulation`` is None.

    Returns
    -------
    Result
        ``.correlation``, ``.effect``, ``.stderr`` of shape ``(n, n_inputs)``,
        ``[target, source]`` (``A``'s orientation); ``n_steps = T``. With no pair at all
        (an empty selection) the moments are empty and every estimate is NaN; this is
        not an error. ``parameters`` records lag, chunk_steps, skipped_pairs and the
        sources.

    Notes
    -----
    Windows of ``chunk_steps`` rows are read in order, each row of each array once; pairs
    that straddle two windows use the last ``lag`` rows of the previous window. The pairs
    are reduced in small float64 batches by :func:`~streamcausal.moments.chunk_moments` and
    merged in order. When an array is not in memory (Zarr, HDF5, Dask) and there are 2 or
    more CPUs, one thread reads the next window while the current one is reduced, and the
    reduction's Numba kernels leave it a core; the estimate is bit-identical to reading
    one window after the other. At most two windows are held. A reader's error is raised
    here unchanged, and no thread outlives the call. A memmap's pages stay in the page
    cache and may count towards RSS; the process's own allocations do not grow with ``T``.

    Raises
    ------
    TypeError
        Non-array or non-numeric inputs, complex data, a ``steps`` of the wrong kind.
    ValueError
        Wrong dimensions, mismatched lengths, ``lag`` not in ``[1, T)``, unsorted or
        out-of-range ``steps``, non-finite data (unless skipped), non-binary stimulation.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> stim = rng.integers(0, 2, size=(1000, 3), dtype=np.uint8)
    >>> act = np.roll(stim, 1, axis=0) + 0.1 * rng.normal(size=(1000, 3))
    >>> result = estimate(act, stim, steps=slice(0, None, 2))
    >>> result.effect.shape, result.n_samples
    ((3, 3), 500)
    """
    activity, stimulation, lag, chunk_steps = _check_arguments(
        activity, stimulation, lag, chunk_steps, progress, binary, skip_nonfinite
    )
    n_steps, n = activity.shape
    selection = _Selection(steps, n_steps)
    began = time.perf_counter()
    inputs_source = stimulation if stimulation is not None else activity
    n_in = inputs_source.shape[1]
    sources = [activity] + [s for s in (stimulation, selection.mask) if s is not None]
    if chunk_steps is None:
        chunk_steps = _default_chunk_steps(sources, max(n, n_in))
    check_binary = stimulation is not None and bool(binary)

    # Rows [s, e) of every array are read once, in order. Pairs t in [s - lag, e - lag)
    # are folded with the window: outcomes are rows [s, e); inputs are rows t, taken from
    # the last `lag` rows of the previous window (carried) and this one. When lag exceeds
    # chunk_steps the input rows are read directly instead of carrying lag rows.
    carry_mode = lag <= chunk_steps
    input_sources = [inputs_source] + ([selection.mask] if selection.mask is not None else [])
    n_windows = -(-n_steps // chunk_steps)
    samples_per_block = block_size(n)
    # Pairs are gathered and reduced in batches of about _BATCH_VALUES values (a multiple of
    # the kernel's block size): small float64 buffers, whatever the window.
    batch_rows = max(1, _BATCH_VALUES // (max(n, n_in) * samples_per_block)) * samples_per_block
    batch_rows = min(batch_rows, max(1, min(chunk_steps, n_steps)))
    inputs_buffer = np.empty((batch_rows, n_in))
    outputs_buffer = np.empty((batch_rows, n))

    def fold(input_pieces, output_pieces, selected):
        """Moments of one batch of pairs (None when none is left) and how many pairs were dropped."""
        k = len(selected)
        inputs, outputs = inputs_buffer[:k], outputs_buffer[:k]
        _gather(input_pieces, 0, selected, inputs)
        _gather(output_pieces, lag, selected, outputs)
        bad_in = _nonfinite_rows(inputs) if inputs_source.is_float else None
        bad_out = _nonfinite_rows(outputs) if activity.is_float else None
        dropped = 0
        if bad_in is not None or bad_out is not None:
            if not skip_nonfinite:
                _raise_nonfinite(inputs, bad_in, outputs, bad_out, selected, lag, stimulation is None)
            keep = np.ones(k, dtype=bool)
            for rows in (bad_in, bad_out):
                if rows is not None:
                    keep &= ~rows
            selected = _times(selected)[keep]
            dropped = k - selected.shape[0]
            k = selected.shape[0]
            inputs[:k] = inputs[keep]
            outputs[:k] = outputs[keep]
            inputs, outputs = inputs_buffer[:k], outputs_buffer[:k]
        if k == 0:
            return None, dropped
        if check_binary:
            _check_binary(inputs, stimulation.dtype, selected)
        return chunk_moments(inputs, outputs, samples_per_block), dropped

    total = CrossMoments(n_in, n)
    skipped = 0

    def read_window(w):
        s, e = w * chunk_steps, min((w + 1) * chunk_steps, n_steps)
        blocks = {id(source): source.read(s, e) for source in sources}
        if not carry_mode:
            lo, hi = max(s - lag, 0), e - lag
            for source in input_sources:
                blocks[("direct", id(source))] = source.read(lo, hi) if hi > lo else None
        return s, e, blocks

    carried = {id(source): (0, None) for source in input_sources}

    def reduce_window(s, e, blocks):
        """Fold the pairs whose outcome rows are [s, e); a function, so that the window is let go on return."""
        nonlocal total, skipped
        lo, hi = max(s - lag, 0), e - lag
        pieces = {}
        for source in input_sources:
            if carry_mode:
                row0, tail = carried[id(source)]
                block = blocks[id(source)]
                pieces[id(source)] = ([(row0, tail)] if tail is not None else []) + [(s, block)]
                keep_from = max(e - lag, 0)  # the next window's first input row
                if keep_from >= s:
                    carried[id(source)] = (keep_from, block[keep_from - s :].copy())
                else:  # a window shorter than lag: keep part of the old tail too
                    carried[id(source)] = (keep_from, np.concatenate([tail[keep_from - row0 :], block]))
            elif hi > lo:
                pieces[id(source)] = [(lo, blocks[("direct", id(source))])]
        if hi > lo:
            mask_pieces = pieces[id(selection.mask)] if selection.mask is not None else None
            selected = selection.select(lo, hi, mask_pieces)
            input_pieces = pieces[id(inputs_source)]
            output_pieces = [(s, blocks[id(activity)])]
            for b in range(0, len(selected), batch_rows):
                moments, dropped = fold(input_pieces, output_pieces, selected[b : b + batch_rows])
                skipped += dropped
                if moments is not None:
                    total += moments

    with _ReadAhead(read_window, range(n_windows), threaded=_read_ahead_by_default(sources)) as windows:
        for s, e, blocks in windows:
            reduce_window(s, e, blocks)
            del blocks  # hold only the window being read while waiting for it
            if progress is not None:
                progress(Progress(e, n_steps, samples=total.count))

    parameters = {
        "source": "recording",
        "activity": activity.describe(),
        "stimulation": None if stimulation is None else stimulation.describe(),
        "steps": selection.description,
        "lag": lag,
        "chunk_steps": chunk_steps,
        "binary": bool(binary) if stimulation is not None else None,
        "skip_nonfinite": bool(skip_nonfinite),
        "skipped_pairs": skipped,
        "n_neurons": n,
        "n_inputs": n_in,
    }
    return Result(total, n_steps, time.perf_counter() - began, parameters)


def _raise_nonfinite(inputs, bad_in, outputs, bad_out, selected, lag, observational):
    times = _times(selected)
    found = []
    if bad_in is not None:
        t, column, value = _first_bad(inputs, bad_in, times)
        found.append((t, column, value, "activity" if observational else "stimulation"))
    if bad_out is not None:
        t, column, value = _first_bad(outputs, bad_out, times)
        found.append((t + lag, column, value, "activity"))
    t, column, value, name = min(found)
    raise ValueError(
        f"{name} must be finite, got {value} at time index {t} ({name}[{t}, {column}]); "
        "pass skip_nonfinite=True to drop the pairs that use non-finite rows"
    )


# --------------------------------------------------------------------------- stores


def estimate_store(
    path_or_group,
    activity="activity",
    stimulation="stimulation",
    steps="clamped",
    *,
    lag=1,
    chunk_steps=None,
    progress=None,
    skip_nonfinite=False,
    binary=True,
) -> Result:
    """Estimate connectivity from arrays named in a Zarr group, e.g. a saved run's trajectory.

    Parameters
    ----------
    path_or_group : str, os.PathLike, zarr store or zarr.Group
        Where the recording is: a path or URL that ``zarr.open_group`` accepts (opened
        read-only), a Zarr store, or an open group.
    activity : str
        Path of the ``(T, n)`` activity array inside the group, e.g. ``"seed_0/activity"``.
    stimulation : str or None
        Path of the ``(T, n_inputs)`` stimulation array; None for observational pairs.
    steps : str or None
        Path of the ``(T,)`` boolean mask (or integer index array) of perturbation steps;
        None for all steps.
    lag, chunk_steps, progress, skip_nonfinite, binary
        As in :func:`estimate`.

    Returns
    -------
    Result
        As :func:`estimate`, ``[target, source]``; ``parameters["store"]`` names the store.

    Raises
    ------
    ValueError
        No group at ``path_or_group``, or a named array missing (the message lists the arrays
        that are there), plus everything :func:`estimate` raises.
    """
    import zarr

    store = path_or_group
    if isinstance(store, zarr.Array):
        raise TypeError(
            f"path_or_group must be a Zarr group, path or store, got the array {store.store_path}; "
            "pass arrays to estimate() instead"
        )
    if isinstance(store, zarr.Group):
        group = store
    else:
        if isinstance(store, (str, os.PathLike)):
            store = os.fspath(store)
        try:
            group = zarr.open_group(store, mode="r")
        except (FileNotFoundError, KeyError) as error:
            raise ValueError(f"path_or_group must hold a Zarr group, found none at {describe(store)}") from error
    where = str(group.store_path)
    arrays = {}
    for argument, name, optional in (
        ("activity", activity, False),
        ("stimulation", stimulation, True),
        ("steps", steps, True),
    ):
        if name is None and optional:
            arrays[argument] = None
            continue
        if not isinstance(name, str):
            kind = "a string or None" if optional else "a string"
            raise TypeError(f"{argument} must be {kind} naming an array in the store, got {describe(name)}")
        arrays[argument] = _lookup(group, name, argument, where)
    result = estimate(
        arrays["activity"],
        arrays["stimulation"],
        steps=arrays["steps"],
        lag=lag,
        chunk_steps=chunk_steps,
        progress=progress,
        skip_nonfinite=skip_nonfinite,
        binary=binary,
    )
    result.parameters["store"] = where
    result.parameters["arrays"] = {"activity": activity, "stimulation": stimulation, "steps": steps}
    return result


def _lookup(group, name: str, argument: str, where: str):
    import zarr

    try:
        node = group[name]
    except KeyError:
        node = None
    if isinstance(node, zarr.Array):
        return node
    present = sorted(path for path, member in group.members(max_depth=None) if isinstance(member, zarr.Array))
    listed = ", ".join(present[:_MAX_LISTED]) + (f", ... ({len(present)} in all)" if len(present) > _MAX_LISTED else "")
    what = "is a group, not an array" if node is not None else "not found"
    raise ValueError(
        f"{argument} array {name!r} {what} in the Zarr store {where}; "
        f"arrays there: {listed or 'none'}"
    )
