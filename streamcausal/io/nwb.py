"""Read an NWB recording with photostimulation trials into a :class:`~streamcausal.experiment.Recording`.

:func:`read_nwb` finds the activity (a ``RoiResponseSeries`` or any ``TimeSeries``,
or the ``Units`` table's spike trains binned by :func:`~streamcausal.io.spikes.bin_spikes`)
and a ``TimeIntervals`` table of trials, and returns them lazily: the activity is the
HDF5 dataset itself, read by the estimators in chunk-aligned slabs. ``pynwb`` is an
optional dependency: ``pip install 'streamcausal[nwb]'``.
"""

from __future__ import annotations

import os

import numpy as np

from .._validation import check_real, describe
from ..experiment import Recording, Trials

__all__ = ["read_nwb"]

_MAX_LISTED = 20
_MISSING = "read_nwb needs pynwb: pip install 'streamcausal[nwb]'"


def read_nwb(path, *, activity, trials, targets="targets", bin_size=None) -> Recording:
    """Open an NWB file and return its activity, frame times and stimulation trials as a lazy :class:`Recording`.

    Parameters
    ----------
    path : str or os.PathLike
        The NWB (HDF5) file. It stays open while the recording is used: close it with
        ``recording.io.close()`` when done.
    activity : str
        The name (or HDF5 path, e.g. ``"processing/ophys/DfOverF/dff"``) of a
        ``RoiResponseSeries`` or any ``TimeSeries`` anywhere in the file, with data
        ``(T, n)``: frames by ROIs (channels). Its HDF5 dataset is the activity, never
        read whole. Frame ``f`` is at ``timestamps[f]``, or ``starting_time + f / rate``.
        Column ids are the ids of the ROIs (or electrodes) its region names.
        ``"units"`` means the ``Units`` table's spike trains, binned at ``bin_size`` into
        firing rates (spikes/s) from ``t_start = 0`` (or the first bin edge before the
        earliest spike, if negative) to the end of the bin holding the last spike; column
        ``u`` is unit row ``u`` and the ids are the unit ids. Each unit's spike times are
        sorted on reading.
    trials : str or None
        The name (or path, e.g. ``"intervals/photostim"``) of a ``TimeIntervals`` table
        (``trials``, ``epochs``, or one under ``intervals``): one row per trial, its
        ``start_time`` the onset. None reads no trials.
    targets : str
        The trials table's column of targeted sources, ragged (one list per trial, an
        empty list for a sham trial). A ``DynamicTableRegion`` holds rows of the ROI
        table (or ``Units`` table), mapped to the activity's columns through the
        series' region; plain integers are the activity's column indices. A non-ragged
        column is one target per trial.
    bin_size : float, optional
        Bin width in seconds for ``activity="units"``, where it is required; an error
        with any other activity.

    Returns
    -------
    Recording
        ``activity`` (the h5py dataset, or a :class:`~streamcausal.io.spikes.BinnedSpikes`),
        ``times`` (timestamps) or ``rate`` and ``starting_time``, ``trials`` with
        ``n_sources = n`` and the column ``ids``, ``ids``, a one-line ``description``,
        and ``io``: the open ``pynwb.NWBHDF5IO``.

    Raises
    ------
    ImportError
        pynwb is not installed.
    FileNotFoundError
        No file at ``path``.
    TypeError
        Arguments of the wrong type; a targets column that does not hold integers.
    ValueError
        Not an NWB file; no series, table or column of that name (the message lists
        what the file holds); ``"units"`` without ``bin_size``, or ``bin_size`` with a
        series; activity that is not 2-D; bad timestamps; targets outside the activity.
        The file is closed again on every error.
    """
    try:
        import pynwb
    except ImportError as error:
        raise ImportError(_MISSING) from error
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path to an NWB file (str or os.PathLike), got {describe(path)}")
    if not isinstance(activity, str):
        raise TypeError(f"activity must be a string naming a TimeSeries or 'units', got {describe(activity)}")
    if trials is not None and not isinstance(trials, str):
        raise TypeError(f"trials must be a string naming a TimeIntervals table, or None, got {describe(trials)}")
    if not isinstance(targets, str):
        raise TypeError(f"targets must be a string naming a column of the trials table, got {describe(targets)}")
    if bin_size is not None:
        bin_size = check_real(bin_size, "bin_size")
        if bin_size <= 0:
            raise ValueError(f"bin_size must be > 0 (seconds), got {bin_size!r}")
        if activity != "units":
            raise ValueError(
                f"bin_size applies only to activity='units' (spike trains), got bin_size={bin_size!r} "
                f"with activity={activity!r}"
            )
    elif activity == "units":
        raise ValueError("bin_size is required with activity='units': the bin width in seconds for the spike trains")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path {path!r}: no such NWB file")
    try:
        io = pynwb.NWBHDF5IO(path, mode="r")
    except Exception as error:
        raise ValueError(f"path {path!r} is not a readable NWB (HDF5) file: {_one_line(error)}") from error
    try:
        try:
            nwbfile = io.read()
        except Exception as error:
            raise ValueError(f"path {path!r} is not a readable NWB file: {_one_line(error)}") from error
        recording = _read(io, nwbfile, os.path.basename(path), activity, trials, targets, bin_size)
    except BaseException:
        io.close()
        raise
    recording.io = io
    return recording


def _read(io, nwbfile, filename, activity, trials_name, targets, bin_size) -> Recording:
    from pynwb.base import TimeSeries
    from pynwb.epoch import TimeIntervals

    containers = [(_path(io, obj), obj) for obj in nwbfile.objects.values()]
    units_table = nwbfile.units
    if activity == "units":
        if units_table is None:
            raise ValueError(f"activity 'units': the file {filename} has no Units table; {_listing(containers, TimeSeries)}")
        data, timing, ids, region_table, what = _units(units_table, bin_size, filename)
    else:
        series = _find(containers, TimeSeries, activity, "activity", "TimeSeries", filename,
                       extra=["units (Units table)"] if units_table is not None else [])
        data, timing, ids, region_table, what = _series(series, activity, filename)
    n = int(data.shape[1])

    trials = None
    if trials_name is not None:
        table = _find(containers, TimeIntervals, trials_name, "trials", "TimeIntervals table", filename)
        trials = _trials(table, trials_name, targets, n, ids, region_table, units_table if activity == "units" else None)
        what += f"; trials {table.name!r} ({trials.n_trials}, {trials.n_sham} sham)"
    return Recording(data, trials, ids=ids, description=f"{filename}: {what}", **timing)


# --------------------------------------------------------------------------- activity


def _series(series, name, filename):
    """The series' HDF5 dataset, its frame times, column ids and the table its region points into."""
    data = series.data
    shape = tuple(getattr(data, "shape", ()))
    kind = type(series).__name__
    if len(shape) != 2:
        raise ValueError(f"activity {name!r} ({kind} in {filename}) must be 2-D (frames x ROIs), got shape {shape}")
    n_frames, n = shape
    if n_frames == 0 or n == 0:
        raise ValueError(f"activity {name!r} ({kind} in {filename}) is empty, shape {shape}")
    timestamps = series.timestamps
    if timestamps is not None and hasattr(timestamps, "timestamps"):  # linked to another series' timestamps
        timestamps = timestamps.timestamps
    if timestamps is not None:
        times = np.asarray(timestamps[:], dtype=np.float64)
        if times.shape != (n_frames,):
            raise ValueError(
                f"activity {name!r} has {n_frames} frames but {times.shape[0] if times.ndim == 1 else times.shape} "
                "timestamps; they must be one per frame"
            )
        bad = ~np.isfinite(times)
        if bad.any():
            k = int(np.argmax(bad))
            raise ValueError(f"activity {name!r} timestamps must be finite, got {times[k]} at timestamps[{k}]")
        if n_frames > 1 and (np.diff(times) <= 0).any():
            k = int(np.argmax(np.diff(times) <= 0)) + 1
            raise ValueError(
                f"activity {name!r} timestamps must increase, "
                f"got timestamps[{k}]={float(times[k])!r} after {float(times[k - 1])!r}"
            )
        timing = {"times": times}
        step = float(np.median(np.diff(times))) if n_frames > 1 else 0.0
        rate_text = f"~{1.0 / step:.3g} Hz, timestamps" if step > 0 else "timestamps"
    else:
        rate = series.rate
        starting_time = series.starting_time if series.starting_time is not None else 0.0
        if rate is None or not np.isfinite(rate) or rate <= 0:
            raise ValueError(f"activity {name!r} has neither timestamps nor a rate > 0 (rate={rate!r})")
        timing = {"rate": float(rate), "starting_time": float(starting_time)}
        rate_text = f"{float(rate):g} Hz"
    region = getattr(series, "rois", None)
    if region is None:
        region = getattr(series, "electrodes", None)
    ids, region_table, what = None, None, "columns"
    if region is not None:
        rows = np.asarray(region.data[:], dtype=np.int64)
        if rows.shape != (n,):
            raise ValueError(
                f"activity {name!r} has {n} columns but its region {region.name!r} names {rows.shape[0]} rows"
            )
        ids = np.asarray(region.table.id.data[:])[rows]
        region_table = (region.table, rows)
        what = "ROIs" if region.name == "rois" else "channels"
    description = f"{kind} {series.name!r} ({n_frames} frames x {n} {what}, {rate_text})"
    return data, timing, ids, region_table, description


def _units(units, bin_size, filename):
    from .spikes import bin_spikes

    if "spike_times" not in units.colnames:
        raise ValueError(f"activity 'units': the Units table in {filename} has no spike_times; columns: "
                         f"{', '.join(units.colnames) or 'none'}")
    flat = np.asarray(units.spike_times.data[:], dtype=np.float64)
    ends = np.asarray(units.spike_times_index.data[:], dtype=np.int64)
    ids = np.asarray(units.id.data[:])
    if ends.size == 0:
        raise ValueError(f"activity 'units': the Units table in {filename} has no units")
    unit_of = np.repeat(np.arange(ends.size), np.diff(ends, prepend=0))
    if flat.size > 1 and np.isfinite(flat).all() and (np.diff(flat)[unit_of[1:] == unit_of[:-1]] < 0).any():
        flat = flat[np.lexsort((flat, unit_of))]  # counts per bin do not depend on the order
    t_start = 0.0
    if flat.size and np.isfinite(flat).all() and flat.min() < 0:
        t_start = float(np.floor(flat.min() / bin_size) * bin_size)
    try:
        binned = bin_spikes(flat, bin_size, index=ends, t_start=t_start)
    except (TypeError, ValueError) as error:
        raise type(error)(f"activity 'units' (the Units table in {filename}): {error}") from error
    timing = {"rate": binned.rate, "starting_time": binned.t_start}
    n_frames, n = binned.shape
    description = (
        f"Units spike trains binned at {bin_size:g} s ({n_frames} frames x {n} units, {binned.rate:g} Hz)"
    )
    return binned, timing, ids, None, description


# --------------------------------------------------------------------------- trials


def _trials(table, name, targets, n, ids, region_table, units_table) -> Trials:
    from hdmf.common.table import DynamicTableRegion, VectorIndex

    where = f"trials table {name!r}"
    if targets not in table.colnames:
        raise ValueError(f"{where} has no column {targets!r}; its columns: {', '.join(table.colnames) or 'none'}")
    onsets = np.asarray(table["start_time"].data[:], dtype=np.float64)
    column = table[targets]
    if isinstance(column, VectorIndex):
        inner = column.target
        if isinstance(inner, VectorIndex):
            raise ValueError(f"{where} column {targets!r} is doubly ragged; it must hold one list of targets per trial")
        ends = np.asarray(column.data[:], dtype=np.int64)
        flat = np.asarray(inner.data[:])
    else:
        inner = column
        flat = np.asarray(column.data[:])
        ends = np.arange(1, flat.shape[0] + 1, dtype=np.int64)
    if flat.ndim != 1 or (flat.size and not np.issubdtype(flat.dtype, np.integer)):
        raise TypeError(
            f"{where} column {targets!r} must hold integer indices of ROIs or units, got dtype {flat.dtype}, "
            f"shape {flat.shape}"
        )
    flat = flat.astype(np.int64)
    if ends.shape != onsets.shape or (ends.size and ends[-1] != flat.size):
        raise ValueError(f"{where} column {targets!r} has {ends.shape[0]} rows for {onsets.shape[0]} trials")
    if isinstance(inner, DynamicTableRegion):
        flat = _region_to_columns(flat, inner, ends, where, targets, region_table, units_table)
    lists = np.split(flat, ends[:-1]) if ends.size else []
    try:
        return Trials(onsets, lists, n_sources=n, ids=ids)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where} column {targets!r}: {error}") from error


def _region_to_columns(rows, region, ends, where, targets, region_table, units_table):
    """Rows of the table a DynamicTableRegion points into, as column indices of the activity."""
    table = region.table
    if units_table is not None:
        if not _same(table, units_table):
            raise ValueError(
                f"{where} column {targets!r} indexes the table {table.name!r}, but the activity is the Units table"
            )
        return rows
    if region_table is None:
        return rows  # a series without a region: its columns are the rows of that table
    series_table, series_rows = region_table
    if not _same(table, series_table):
        raise ValueError(
            f"{where} column {targets!r} indexes the table {table.name!r}, but the activity's ROIs are rows of "
            f"{series_table.name!r}"
        )
    size = max(int(series_rows.max()), int(rows.max()) if rows.size else 0) + 1
    column_of = np.full(size, -1, dtype=np.int64)
    column_of[series_rows] = np.arange(series_rows.shape[0])
    mapped = np.where(rows >= 0, column_of[np.clip(rows, 0, size - 1)], -1)
    if (mapped < 0).any():
        k = int(np.argmax(mapped < 0))
        trial = int(np.searchsorted(ends, k, side="right"))
        raise ValueError(
            f"{where} column {targets!r}: trial {trial} targets row {rows[k]} of {table.name!r}, "
            "which is not a column of the activity"
        )
    return mapped


def _same(a, b) -> bool:
    return a is b or (getattr(a, "object_id", None) is not None and a.object_id == getattr(b, "object_id", None))


# --------------------------------------------------------------------------- lookup


def _path(io, obj) -> str:
    try:
        builder = io.manager.get_builder(obj)
    except Exception:  # pragma: no cover - objects without a builder
        builder = None
    path = getattr(builder, "path", None) or obj.name
    return path[len("root/"):] if path.startswith("root/") else path


def _find(containers, cls, name, argument, what, filename, extra=()):
    wanted = name.strip("/")
    matches = [(path, obj) for path, obj in containers if isinstance(obj, cls) and (obj.name == name or path == wanted)]
    exact = [(path, obj) for path, obj in matches if path == wanted]
    if len(exact) == 1:
        return exact[0][1]
    if len(matches) == 1:
        return matches[0][1]
    if len(matches) > 1:
        paths = ", ".join(path for path, _ in matches)
        raise ValueError(f"{argument} {name!r} is ambiguous: {len(matches)} of that name in {filename} ({paths}); pass one path")
    raise ValueError(f"{argument} {name!r}: no {what} of that name in {filename}; {_listing(containers, cls, extra)}")


def _listing(containers, cls, extra=()) -> str:
    present = sorted(f"{path} ({type(obj).__name__})" for path, obj in containers if isinstance(obj, cls)) + list(extra)
    kind = "TimeSeries" if cls.__name__ == "TimeSeries" else "TimeIntervals tables"
    listed = ", ".join(present[:_MAX_LISTED])
    if len(present) > _MAX_LISTED:
        listed += f", ... ({len(present)} in all)"
    return f"{kind} in the file: {listed or 'none'}"


def _one_line(error) -> str:
    return " ".join(str(error).split()) or type(error).__name__
