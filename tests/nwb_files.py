"""Small synthetic NWB files for tests: dF/F ROI series, spike-sorted units, photostimulation trials.

Building blocks (:func:`new_nwbfile`, :func:`add_rois`, :func:`add_roi_series`,
:func:`add_units`, :func:`add_trials`, :func:`write`) and two one-call writers,
:func:`write_ophys` and :func:`write_units`, so any test can put its own planted
experiment into an NWB file and read it back with ``streamcausal.io.nwb.read_nwb``.
Everything is ``(T, n)`` time-major. Needs pynwb (``pip install 'streamcausal[nwb]'``).
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest

pytest.importorskip("pynwb")  # collected for doctests too: skipped, not an error, without the [nwb] extra

from hdmf.backends.hdf5 import H5DataIO  # noqa: E402
from pynwb import NWBHDF5IO, NWBFile  # noqa: E402
from pynwb.epoch import TimeIntervals  # noqa: E402
from pynwb.ophys import DfOverF, ImageSegmentation, OpticalChannel  # noqa: E402

__all__ = [
    "add_rois",
    "add_roi_series",
    "add_trials",
    "add_units",
    "new_nwbfile",
    "write",
    "write_ophys",
    "write_units",
]


def new_nwbfile(identifier: str = "streamcausal-test") -> NWBFile:
    """An empty NWB file starting on 2024-01-01 UTC."""
    return NWBFile(
        session_description="synthetic photostimulation experiment",
        identifier=identifier,
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )


def _ophys_module(nwbfile: NWBFile):
    if "ophys" not in nwbfile.processing:
        nwbfile.create_processing_module(name="ophys", description="optical physiology")
    return nwbfile.processing["ophys"]


def add_rois(nwbfile: NWBFile, n: int, *, roi_ids=None, name: str = "PlaneSegmentation"):
    """A PlaneSegmentation of ``n`` ROIs (ids ``roi_ids``, default 0..n-1) in processing/ophys/ImageSegmentation."""
    device = nwbfile.create_device(name=f"microscope_{name}")
    channel = OpticalChannel(name="green", description="GCaMP emission", emission_lambda=520.0)
    plane = nwbfile.create_imaging_plane(
        name=f"plane_{name}", optical_channel=channel, description="layer 2/3", device=device,
        excitation_lambda=920.0, indicator="GCaMP6s", location="V1",
    )
    module = _ophys_module(nwbfile)
    if "ImageSegmentation" not in module.data_interfaces:
        module.add(ImageSegmentation())
    segmentation = module["ImageSegmentation"].create_plane_segmentation(
        name=name, description="ROIs", imaging_plane=plane
    )
    ids = range(n) if roi_ids is None else roi_ids
    for roi_id in ids:
        segmentation.add_roi(pixel_mask=[(0, 0, 1.0)], id=int(roi_id))
    return segmentation


def add_roi_series(nwbfile: NWBFile, rois, activity, *, name: str = "dff", times=None, rate=None, starting_time=0.0,
                   chunk_rows: int = 64, rows=None, container: str = "DfOverF"):
    """A RoiResponseSeries of ``activity`` ``(T, n)`` in processing/ophys/<container>, chunked ``(chunk_rows, n)``.

    Give the frame times as ``times`` (timestamps, ``(T,)``) or ``rate`` (Hz, with
    ``starting_time``). ``rows`` are the PlaneSegmentation rows of the columns (default
    0..n-1): a subset or another order maps targets to other columns.
    """
    activity = np.asarray(activity)
    n_frames, n = activity.shape
    module = _ophys_module(nwbfile)
    if container not in module.data_interfaces:
        module.add(DfOverF(name=container))
    region = rois.create_roi_table_region(
        description="ROIs of the series", region=list(range(n)) if rows is None else [int(r) for r in rows]
    )
    data = H5DataIO(activity, chunks=(max(1, min(chunk_rows, n_frames)), n))
    timing = {"timestamps": np.asarray(times, dtype=np.float64)} if times is not None else {
        "rate": float(rate), "starting_time": float(starting_time)}
    return module[container].create_roi_response_series(name=name, data=data, rois=region, unit="n.a.", **timing)


def add_units(nwbfile: NWBFile, spike_times, *, unit_ids=None):
    """The Units table: one row per unit with its spike times (``unit_ids``, default 0..n-1)."""
    ids = range(len(spike_times)) if unit_ids is None else unit_ids
    for unit_id, times in zip(ids, spike_times):
        nwbfile.add_unit(spike_times=np.asarray(times, dtype=np.float64), id=int(unit_id))
    return nwbfile.units


def add_trials(nwbfile: NWBFile, onsets, targets, *, name: str = "trials", table=None, column: str = "targets",
               duration: float = 0.01):
    """A TimeIntervals table of trials (``start_time`` = onset) with a ragged ``column`` of targets.

    ``targets`` holds one list per trial (empty for a sham trial). With ``table`` (a
    PlaneSegmentation or the Units table) the column is a DynamicTableRegion of that
    table's rows; with ``table=None`` it holds plain integers. ``name="trials"`` writes
    ``nwbfile.trials``; any other name writes ``intervals/<name>``.
    """
    lists = [np.asarray(entry, dtype=np.int64).reshape(-1) for entry in targets]
    flat = np.concatenate(lists) if lists else np.empty(0, dtype=np.int64)
    ends = np.cumsum([entry.size for entry in lists]).astype(np.int64)
    if name == "trials":
        for onset in onsets:
            nwbfile.add_trial(start_time=float(onset), stop_time=float(onset) + duration)
        intervals = nwbfile.trials
    else:
        intervals = TimeIntervals(name=name, description="photostimulation trials")
        for onset in onsets:
            intervals.add_row(start_time=float(onset), stop_time=float(onset) + duration)
        nwbfile.add_time_intervals(intervals)
    kwargs = {"table": table} if table is not None else {}
    intervals.add_column(name=column, description="targeted sources", data=flat, index=ends, **kwargs)
    return intervals


def write(nwbfile: NWBFile, path):
    """Write ``nwbfile`` to ``path`` and return ``path``."""
    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwbfile)
    return path


def write_ophys(path, activity, *, times=None, rate=None, starting_time=0.0, onsets=None, targets=None,
                trials_name="trials", series_name="dff", plain_targets=False, chunk_rows=64, roi_ids=None, rows=None):
    """One call: ROIs, a dF/F RoiResponseSeries of ``activity`` ``(T, n)``, and trials; returns ``path``.

    Targets are a DynamicTableRegion into the ROIs (``plain_targets=True``: plain integers).
    ``onsets=None`` writes no trials.
    """
    nwbfile = new_nwbfile()
    n = np.asarray(activity).shape[1]
    n_rois = n if rows is None else max(int(max(rows)) + 1, n)
    rois = add_rois(nwbfile, n_rois, roi_ids=roi_ids)
    add_roi_series(nwbfile, rois, activity, name=series_name, times=times, rate=rate, starting_time=starting_time,
                   chunk_rows=chunk_rows, rows=rows)
    if onsets is not None:
        add_trials(nwbfile, onsets, targets, name=trials_name, table=None if plain_targets else rois)
    return write(nwbfile, path)


def write_units(path, spike_times, *, onsets=None, targets=None, trials_name="trials", plain_targets=False,
                unit_ids=None):
    """One call: a Units table of ``spike_times`` (one array per unit) and trials targeting units; returns ``path``."""
    nwbfile = new_nwbfile()
    units = add_units(nwbfile, spike_times, unit_ids=unit_ids)
    if onsets is not None:
        add_trials(nwbfile, onsets, targets, name=trials_name, table=None if plain_targets else units)
    return write(nwbfile, path)
