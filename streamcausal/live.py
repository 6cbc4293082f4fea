"""Follow a growing Zarr recording: the appending convention, a writer that keeps it, and a Follower that estimates live.

The appending convention (any writer, in any language, can keep it):

1. The recording is a Zarr group holding time-major arrays (``activity`` ``(T, n)``,
   and optionally ``stimulation`` ``(T, n_inputs)`` and ``clamped`` ``(T,)`` bool, or
   any names), all growing together along axis 0.
2. To append ``k`` rows, the writer resizes every array to ``rows_complete + k`` rows,
   writes rows ``rows_complete:rows_complete + k`` of each, and only then sets the
   group attribute ``rows_complete`` (an int) to ``rows_complete + k``.
3. At the end it sets the attribute ``finished`` to ``true`` (with the final ``rows_complete``).

Rows at or past ``rows_complete`` are not part of the recording yet: a writer killed
mid-append leaves them half-written, and the next writer (:meth:`GrowingRecording.open`,
:func:`append_rows`) overwrites them from ``rows_complete``. A reader never reads them.

A run store written by ``streamcausal run --save-trajectory`` is followed too: its
arrays are preallocated to ``n_steps`` rows, and the complete rows of seed ``s`` are the
``steps_done`` of its newest valid checkpoint (the rows are flushed to disk before the
checkpoint that counts them); the run is finished when that seed reached ``n_steps``
(or stopped at its ``target_se``).

:class:`Follower` polls the recording, folds every complete new row exactly once into an
:class:`~streamcausal.online.OnlineEstimator`, publishes a :class:`LiveState` (what
:mod:`streamcausal.service` serves) and writes the current estimates and its own
checkpoint to an output Zarr group, atomically (two slots and a pointer), so that
following resumes after Ctrl-C or SIGKILL without counting a row twice.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_callable, check_flag, check_int, check_real, describe
from .result import convergence_point

__all__ = [
    "FINISHED", "FOLLOW_MODES", "ROWS_COMPLETE", "Follower", "GrowingRecording", "LiveState", "append_rows",
    "finish_recording", "read_follow_output",
]

ROWS_COMPLETE = "rows_complete"
FINISHED = "finished"
FOLLOW_MODES = ("w-", "w", "r+", "a")
OUTPUT_SCHEMA = 1
_SLOTS = ("estimates_a", "estimates_b")
_RECENT_SECONDS = 10.0  # rows per second are measured over this much recent time
_PUBLISH_SECONDS = 1.0  # during a long catch-up, publish at least this often
_RUN_SLOTS = ("checkpoint_a", "checkpoint_b")  # a run store's checkpoint slots (io/store.py)
_RUN_RETRIES = 5
_RUN_SEED_GROUP = re.compile(r"^seed_(\d+)$")


# ----------------------------------------------------------------------------- zarr helpers


def _as_store(store):
    return os.fspath(store) if isinstance(store, os.PathLike) else store


def _open_group(store, mode):
    import zarr

    if isinstance(store, zarr.Group):
        return store if mode == "r" else zarr.open_group(store.store, path=store.path, mode=mode)
    return zarr.open_group(_as_store(store), mode=mode, use_consolidated=False)


def _reopen(group):
    """The group re-read from its store (Zarr caches a group's attributes and an array's shape)."""
    import zarr

    return zarr.open_group(group.store, path=group.path, mode="r", use_consolidated=False)


# ----------------------------------------------------------------------------- the writer's side


def _rows_complete(attrs, where) -> int:
    value = attrs.get(ROWS_COMPLETE, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"attribute {ROWS_COMPLETE!r} of {where} must be an integer >= 0, got {describe(value)}")
    return value


def append_rows(group, **rows) -> int:
    """Append rows to the named arrays of a growing recording, keeping the appending convention; return ``rows_complete``.

    Each keyword names an array of ``group`` (a ``zarr.Group`` opened for writing) and
    gives its new rows, time-major, all with the same number of rows ``k``. Every array
    is resized to ``rows_complete + k`` rows, the rows are written, and then the group's
    ``rows_complete`` attribute is raised by ``k``: rows a killed writer left past
    ``rows_complete`` are overwritten, never read.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    >>> _ = group.create_array("activity", shape=(0, 3), chunks=(64, 3), dtype="float32")
    >>> append_rows(group, activity=np.ones((5, 3)))
    5
    """
    import zarr

    if not isinstance(group, zarr.Group):
        raise TypeError(f"group must be a zarr.Group opened for writing, got {describe(group)}")
    if not rows:
        raise ValueError("append_rows needs at least one array of rows, e.g. activity=rows")
    values = {}
    for name, value in rows.items():
        value = np.asarray(value)
        if value.ndim == 0:
            raise ValueError(f"{name} must be rows (time-major, at least 1-D), got a scalar {describe(value)}")
        values[name] = value
    lengths = {name: value.shape[0] for name, value in values.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every array must get the same number of rows, got {lengths}")
    start = _rows_complete(group.attrs, f"group {group.path or '/'}")
    stop = start + next(iter(lengths.values()))
    for name, value in values.items():
        try:
            array = group[name]
        except KeyError:
            array = None
        if not isinstance(array, zarr.Array):
            raise ValueError(f"{name}: no such array in group {group.path or '/'} (create it first, with 0 rows)")
        if value.shape[1:] != array.shape[1:]:
            raise ValueError(f"{name} rows must have shape (k, {', '.join(map(str, array.shape[1:]))}) "
                             f"to fit the array, got {value.shape}")
        if array.shape[0] != stop:
            array.resize((stop, *array.shape[1:]))
        if stop > start:
            array[start:stop] = value
    group.attrs[ROWS_COMPLETE] = stop  # last: the rows above are complete before they are counted
    return stop


def finish_recording(group) -> None:
    """Mark a growing recording finished (the attribute ``finished: true``): followers stop after its last rows."""
    group.attrs[FINISHED] = True


class GrowingRecording:
    """A writer of a growing recording that keeps the appending convention (for acquisition scripts and tests).

    Create one with :meth:`create`, or continue one after a writer died with
    :meth:`open`; then :meth:`append` rows and :meth:`finish`.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> recording = GrowingRecording.create(zarr.storage.MemoryStore(), n_neurons=3)
    >>> recording.append(np.zeros((4, 3)), stimulation=np.ones((4, 3)), clamped=np.ones(4, bool))
    4
    >>> recording.finish(); recording.rows_complete
    4
    """

    def __init__(self, group):
        self.group = group
        self.names = [name for name in ("activity", "stimulation", "clamped") if name in group]

    @classmethod
    def create(cls, store, n_neurons, *, n_inputs=None, stimulation=True, clamped=True, dtype="float32",
               chunk_rows=4096, attrs=None, overwrite=False) -> GrowingRecording:
        """A new recording at ``store`` with empty ``activity`` (0, n) and, when asked, ``stimulation`` and ``clamped``.

        ``n_inputs`` is the stimulation's width (default ``n_neurons``); ``chunk_rows`` the
        arrays' chunk length along time; ``overwrite`` replaces a store already there.
        """
        import zarr

        n = check_int(n_neurons, "n_neurons", minimum=1)
        n_in = n if n_inputs is None else check_int(n_inputs, "n_inputs", minimum=1)
        rows = check_int(chunk_rows, "chunk_rows", minimum=1)
        if np.dtype(dtype).kind != "f":
            raise ValueError(f"dtype must be a floating dtype for activity, got {dtype!r}")
        check_flag(overwrite, "overwrite")
        store = _as_store(store)
        if not overwrite:
            try:
                zarr.open_group(store, mode="r")
            except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
                pass
            else:
                raise ValueError(f"store {describe(store)} already holds a Zarr group; pass overwrite=True to replace it")
        header = {ROWS_COMPLETE: 0, FINISHED: False, **(attrs or {})}
        group = zarr.open_group(store, mode="w", attributes=header)
        group.create_array("activity", shape=(0, n), chunks=(rows, n), dtype=dtype, dimension_names=["time", "neuron"],
                           fill_value=np.nan)
        if stimulation:
            group.create_array("stimulation", shape=(0, n_in), chunks=(rows, n_in), dtype="uint8",
                               dimension_names=["time", "input"])
        if clamped:
            group.create_array("clamped", shape=(0,), chunks=(rows,), dtype="bool", dimension_names=["time"])
        return cls(group)

    @classmethod
    def open(cls, store) -> GrowingRecording:
        """Continue the recording at ``store``: the next append starts at its ``rows_complete``."""
        group = _open_group(store, "r+")
        if ROWS_COMPLETE not in group.attrs:
            raise ValueError(f"store {describe(store)} is not a growing recording (no {ROWS_COMPLETE!r} attribute)")
        return cls(group)

    @property
    def rows_complete(self) -> int:
        return _rows_complete(self.group.attrs, "the recording")

    def append(self, activity, stimulation=None, clamped=None) -> int:
        """Append ``k`` rows (activity ``(k, n)``, stimulation ``(k, n_inputs)``, clamped ``(k,)``); return ``rows_complete``.

        Every array the recording has must get its rows.
        """
        rows = {"activity": activity, "stimulation": stimulation, "clamped": clamped}
        missing = [name for name in self.names if rows[name] is None]
        if missing:
            raise ValueError(f"{missing[0]} rows are required: the recording has a {missing[0]!r} array")
        extra = [name for name, value in rows.items() if value is not None and name not in self.names]
        if extra:
            raise ValueError(f"{extra[0]} was given but the recording has no {extra[0]!r} array")
        return append_rows(self.group, **{name: rows[name] for name in self.names})

    def finish(self) -> None:
        finish_recording(self.group)


# ----------------------------------------------------------------------------- what the follower reads


def _lookup(group, name, argument, where):
    import zarr

    try:
        node = group[name]
    except KeyError:
        node = None
    if not isinstance(node, zarr.Array):
        what = "is a group, not an array" if node is not None else "not found"
        raise ValueError(f"{argument} array {name!r} {what} in {where}")
    return node


class _Source:
    """The named arrays of a recording, their shapes checked; rows read by window, arrays reopened when they grew."""

    def __init__(self, group, names, where):
        self.group, self.names, self.where = group, names, where
        self.arrays = None
        self.n_neurons = self.n_inputs = None

    def _open(self, group):
        arrays = {argument: _lookup(group, name, argument, self.where)
                  for argument, name in self.names.items() if name is not None}
        activity = arrays["activity"]
        if activity.ndim != 2 or activity.shape[1] == 0:
            raise ValueError(f"activity array {self.names['activity']!r} must be (T, n), time-major, "
                             f"got shape {activity.shape}")
        if "stimulation" in arrays and arrays["stimulation"].ndim != 2:
            raise ValueError(f"stimulation array {self.names['stimulation']!r} must be (T, n_inputs), "
                             f"got shape {arrays['stimulation'].shape}")
        if "steps" in arrays and (arrays["steps"].ndim != 1 or arrays["steps"].dtype != np.bool_):
            raise TypeError(f"steps array {self.names['steps']!r} must be a (T,) boolean mask, "
                            f"got shape {arrays['steps'].shape} dtype {arrays['steps'].dtype}")
        self.n_neurons = activity.shape[1]
        self.n_inputs = arrays["stimulation"].shape[1] if "stimulation" in arrays else self.n_neurons
        self.arrays = arrays

    def ensure(self, rows: int, group=None) -> None:
        """Make sure every array is open and holds at least ``rows`` rows (the writer resizes before it counts)."""
        if self.arrays is not None and all(array.shape[0] >= rows for array in self.arrays.values()):
            return
        self._open(group if group is not None else _reopen(self.group))
        short = {self.names[a]: array.shape[0] for a, array in self.arrays.items() if array.shape[0] < rows}
        if short:
            name, length = next(iter(short.items()))
            raise ValueError(f"array {name!r} of {self.where} has {length} rows but {rows} are counted complete: "
                             "its writer does not keep the appending convention")

    def _array_sources(self):
        """The arrays as :func:`~streamcausal.estimate` sees them (their kind and chunk length along time)."""
        from .io.recording import _Source as ArraySource

        return [ArraySource(array, argument) for argument, array in self.arrays.items()]

    def window_rows(self) -> int:
        """Rows per read when catching up: the window :func:`~streamcausal.estimate` would read from these arrays.

        About ``run()``'s chunk of values, a multiple of every array's own chunk (shard)
        length along time when that fits, so each stored chunk is decoded once.
        """
        from .io.recording import _default_chunk_steps

        return _default_chunk_steps(self._array_sources(), max(self.n_neurons, self.n_inputs))

    def read_ahead(self) -> bool:
        """Whether a catch-up of several windows reads the next one in a thread, as :func:`~streamcausal.estimate` decides."""
        from .io.recording import _read_ahead_by_default

        return _read_ahead_by_default(self._array_sources())

    def read(self, start, stop):
        arrays = self.arrays
        activity = np.asarray(arrays["activity"][start:stop])
        stimulation = np.asarray(arrays["stimulation"][start:stop]) if "stimulation" in arrays else None
        steps = np.asarray(arrays["steps"][start:stop]) if "steps" in arrays else None
        return activity, stimulation, steps


class _GrowingRecordingSource(_Source):
    """A recording that keeps the appending convention: complete rows are its ``rows_complete`` attribute."""

    kind = "growing recording"

    def poll(self):
        group = _reopen(self.group)
        attrs = dict(group.attrs)
        rows = _rows_complete(attrs, self.where)
        if rows > 0:
            self.ensure(rows, group)
        return rows, attrs.get(FINISHED) is True

    def connectivity(self):
        return None


class _RunSource(_Source):
    """One seed's trajectory in a run store: complete rows are its newest valid checkpoint's ``steps_done``."""

    kind = "run store"

    def __init__(self, group, names, where, seed, n_steps):
        super().__init__(group, names, where)
        self.seed, self.n_steps = seed, n_steps
        self.rows = 0

    def poll(self):
        # A record is written after the rows it counts are flushed, and only the slot that is not
        # the newest is ever cleared, so the largest steps_done never goes back. Zarr writes a
        # record key by key (steps_done last, and cleared last), so any steps_done seen is a true
        # count. Only the records are read, not the checkpoint's arrays: reading those can race a
        # writer that checkpoints after every chunk, and the rows are final once counted.
        best = None
        for attempt in range(_RUN_RETRIES):
            seed_group = _reopen(self.group)[f"seed_{self.seed}"]
            for slot in _RUN_SLOTS:
                try:
                    record = dict(seed_group[slot].attrs)
                except KeyError:
                    continue
                done = record.get("steps_done")
                if isinstance(done, int) and (best is None or done > best["steps_done"]):
                    best = record
            if best is not None and best["steps_done"] >= self.rows:
                break
            time.sleep(0.01 * attempt)  # a slot was being rewritten as it was read: look again
        if best is None:
            return 0, False
        rows = best["steps_done"]
        finished = best.get("stopped_at") is not None or rows >= self.n_steps
        if rows > 0:
            self.ensure(rows)
        self.rows = max(self.rows, rows)
        return rows, finished

    def connectivity(self):
        from .io.store import read_connectivity

        A = read_connectivity(self.group)
        return None if A is None or (hasattr(A, "toarray") and A.shape[0] > 2000) else np.asarray(
            A.toarray() if hasattr(A, "toarray") else A, dtype=np.float64)


def _open_source(recording, activity, stimulation, steps):
    from .io.store import StoreError, StoreReader

    try:
        reader = StoreReader.open(recording)
    except StoreError as error:
        raise ValueError(f"recording: {error}") from None
    names = {"activity": activity, "stimulation": stimulation, "steps": steps}
    for argument, name in names.items():
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{argument} must be a string naming an array in the recording"
                            f"{' or None' if argument != 'activity' else ''}, got {describe(name)}")
    if activity is None:
        raise TypeError("activity must name the (T, n) activity array in the recording, got None")
    where = reader.where
    if reader.is_run:
        parent = activity.rsplit("/", 1)[0] if "/" in activity else ""
        match = _RUN_SEED_GROUP.match(parent)
        if match is None or int(match.group(1)) not in reader.seeds:
            raise ValueError(f"activity {activity!r}: in a run store the arrays of one seed are followed, "
                             f"e.g. 'seed_{(reader.seeds or [0])[0]}/activity'")
        source = _RunSource(reader.group, names, where, int(match.group(1)), int(reader.parameters["n_steps"]))
        source.ensure(0)  # the arrays exist from the start: check the names now
        return source
    if ROWS_COMPLETE not in reader.attrs:
        raise ValueError(f"recording {where} is not a growing recording: it has no {ROWS_COMPLETE!r} attribute "
                         "(writers append rows, then raise rows_complete; see streamcausal.live), "
                         "and it is not a run store")
    return _GrowingRecordingSource(reader.group, names, where)


# ----------------------------------------------------------------------------- the published state


@dataclass(frozen=True)
class LiveState:
    """What the follower knows now, as plain arrays (safe to read from another thread).

    Matrices are ``[target, source]`` (``effect[j, i]``: source ``i`` onto target ``j``);
    None until the first sample.
    """

    version: int
    rows_consumed: int
    rows_complete: int
    rows_per_second: float
    samples: int
    finished: bool
    stop_reason: str | None
    target_se: float | None
    alpha: float
    effect: np.ndarray | None = None
    stderr: np.ndarray | None = None
    pvalue: np.ndarray | None = None
    qvalue: np.ndarray | None = None
    significant: np.ndarray | None = None
    source_mean_se: np.ndarray | None = None
    source_samples: np.ndarray | None = None
    reached_target: np.ndarray | None = None
    last_to_reach: tuple = ()
    convergence: tuple = ()
    updated: float = field(default_factory=time.time)
    description: str = ""

    @property
    def mean_se(self) -> float | None:
        if self.stderr is None or not np.isfinite(self.stderr).any():
            return None
        return float(np.nanmean(self.stderr))


def _source_mean_se(stderr):
    """Mean standard error of each source's edges (its column); NaN for a source with none defined."""
    finite = np.isfinite(stderr)
    counts = finite.sum(axis=0)
    sums = np.where(finite, stderr, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# ----------------------------------------------------------------------------- the follower


class Follower:
    """Follow a growing recording (or a run store being written) and keep a live estimate of its connectivity.

    Parameters
    ----------
    recording : str, os.PathLike, zarr store or zarr.Group
        A growing recording (see the module's appending convention) or a run store
        written with ``save_trajectory``.
    output : str, os.PathLike, zarr store or None
        Where the current estimates and the follower's checkpoint go (a Zarr group), or
        None to keep them in memory only.
    activity, stimulation, steps : str or None
        Paths of the arrays in ``recording`` (in a run store: ``seed_<s>/activity`` and
        so on). ``stimulation=None`` uses the observational pairs
        ``(activity[t], activity[t + lag])``; ``steps=None`` uses every step.
    lag, binary, skip_nonfinite
        As in :func:`streamcausal.estimate`.
    target_se : float, optional
        Stop once every source's mean standard error (over its edges) is at most this.
    alpha : float
        False-discovery rate of the significant edges that are published and written.
    write_seconds : float
        Write the output at most this often while rows arrive (and always at the end).
    mode : {"w-", "w", "r+", "a"}
        For ``output``, as zarr's: create it (refusing one there), replace it, resume from
        its checkpoint, or resume when there is one and create it otherwise.
    on_state : callable, optional
        Called with every new :class:`LiveState` (e.g. ``EstimateServer.publish``).

    The estimate after the last row equals :func:`streamcausal.estimate` on the finished
    recording (to rounding): every complete row is folded exactly once, in order.
    """

    def __init__(self, recording, output=None, *, activity="activity", stimulation="stimulation", steps="clamped",
                 lag=1, binary=True, skip_nonfinite=False, target_se=None, alpha=0.05, write_seconds=2.0,
                 mode="w-", on_state=None):
        from .online import OnlineEstimator

        self.lag = check_int(lag, "lag", minimum=1)
        check_flag(binary, "binary")
        check_flag(skip_nonfinite, "skip_nonfinite")
        if target_se is not None:
            target_se = check_real(target_se, "target_se")
            if target_se <= 0:
                raise ValueError(f"target_se must be > 0, got {target_se}")
        self.target_se = target_se
        self.alpha = check_real(alpha, "alpha")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        self.write_seconds = check_real(write_seconds, "write_seconds")
        if self.write_seconds < 0:
            raise ValueError(f"write_seconds must be >= 0, got {self.write_seconds}")
        if mode not in FOLLOW_MODES:
            raise ValueError(f"mode must be one of {FOLLOW_MODES}, got {mode!r}")
        self.on_state = check_callable(on_state, "on_state") if on_state is not None else None
        self.source = _open_source(recording, activity, stimulation, steps)
        self.parameters = {
            "recording": self.source.where, "activity": activity, "stimulation": stimulation, "steps": steps,
            "lag": self.lag, "binary": bool(binary), "skip_nonfinite": bool(skip_nonfinite),
            "observational": stimulation is None, "kind": self.source.kind,
        }
        self.estimator = OnlineEstimator(lag=self.lag, observational=stimulation is None, binary=bool(binary),
                                         skip_nonfinite=bool(skip_nonfinite))
        self.rows_complete = 0
        self.finished = False
        self.stop_reason = None
        self.convergence = []
        self.reached_at_row = None  # per source: rows consumed when its mean SE first reached target_se
        self.last_to_reach = ()
        self._next_mark = 1
        self._A = self.source.connectivity() if isinstance(self.source, _RunSource) else None
        self._version = 0
        self._recent = deque()
        self._state = None
        self._output = None
        self._current_slot = None
        self._slot_handles = {}
        self._written_rows = -1
        self._last_write = time.monotonic()
        self._last_publish = 0.0
        if output is not None:
            self._open_output(output, mode)
        self._publish()

    # ------------------------------------------------------------------ properties

    @property
    def rows_consumed(self) -> int:
        """Rows folded into the estimate so far (the estimator's own count)."""
        return int(self.estimator.rows)

    @property
    def state(self) -> LiveState:
        """The latest published :class:`LiveState`."""
        return self._state

    @property
    def current_slot(self) -> str | None:
        """The output group that holds the newest complete estimates and checkpoint (None before the first write)."""
        return self._current_slot

    @property
    def where(self) -> str:
        return self.source.where

    # ------------------------------------------------------------------ output and checkpoint

    def _open_output(self, output, mode):
        import zarr

        existing = None
        try:
            existing = zarr.open_group(_as_store(output), mode="r", use_consolidated=False)
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
            existing = None
        header = dict(existing.attrs).get("streamcausal") if existing is not None else None
        is_follow = isinstance(header, dict) and header.get("kind") == "follow"
        if existing is not None and (len(list(existing.keys())) or dict(existing.attrs)) and not is_follow:
            raise ValueError(f"output {describe(output)} holds a Zarr group that is not a follow output; "
                             "it is left untouched")
        resumable = is_follow and existing.attrs.get("current") in _SLOTS
        if mode == "r+" and not resumable:
            raise ValueError(f"output {describe(output)} holds no follow checkpoint to resume (mode 'r+')")
        if mode == "w-" and is_follow:
            raise ValueError(f"output {describe(output)} already holds a follow output; resume it with mode 'r+' "
                             "or replace it with mode 'w'")
        if mode in ("r+", "a") and resumable:
            self._output = zarr.open_group(_as_store(output), mode="r+", use_consolidated=False)
            self._resume()
            return
        from ._version import __version__

        self._output = zarr.open_group(_as_store(output), mode="w", attributes={
            "streamcausal": {"kind": "follow", "schema_version": OUTPUT_SCHEMA, "package_version": __version__},
            "parameters": self.parameters,
            "orientation": "[target, source]: entry [j, i] is the estimate for source i onto target j",
            "layout": "the newest complete estimates and checkpoint are in the group named by attribute 'current'",
        })

    def _resume(self):
        from .online import OnlineEstimator

        stored = dict(self._output.attrs.get("parameters", {}))
        for name, value in self.parameters.items():
            if name != "recording" and stored.get(name) != value:
                raise ValueError(f"cannot resume the follow output: {name} differs (stored {stored.get(name)!r}, "
                                 f"given {value!r})")
        slot = self._output.attrs["current"]
        group = self._output[slot]
        self.estimator = OnlineEstimator.load(group["state"])
        attrs = dict(group.attrs)
        if int(attrs.get("rows_consumed", -1)) != self.rows_consumed:
            raise ValueError(f"the follow checkpoint {slot} is inconsistent: rows_consumed "
                             f"{attrs.get('rows_consumed')} but its estimator holds {self.rows_consumed} rows")
        self.convergence = list(attrs.get("convergence", []))
        while self.convergence and self._next_mark <= self.convergence[-1]["samples"]:
            self._next_mark *= 2
        reached = attrs.get("reached_at_row")
        self.reached_at_row = None if reached is None else np.array(
            [-1 if r is None else r for r in reached], dtype=np.int64)
        self._current_slot = slot
        self._written_rows = self.rows_consumed

    def write(self, force=False) -> bool:
        """Write the current estimates and checkpoint into the output's other slot, then point ``current`` at it.

        Skipped (returns False) without an output, or when nothing changed since the last
        write and ``force`` is False.
        """
        if self._output is None or (not force and self._written_rows == self.rows_consumed
                                    and self._current_slot is not None):
            return False
        state = self._state
        slot = _SLOTS[1] if self._current_slot == _SLOTS[0] else _SLOTS[0]
        group = self._output.require_group(slot)
        edges = ["target", "source"]
        arrays = {}
        if state.effect is not None:
            arrays = {"effect": (state.effect, edges), "stderr": (state.stderr, edges), "pvalue": (state.pvalue, edges),
                      "qvalue": (state.qvalue, edges), "significant": (state.significant, edges),
                      "source_mean_se": (state.source_mean_se, ["source"])}
        for name, (values, dims) in arrays.items():
            self._put(group, slot, name, np.asarray(values), dims)
        self.estimator.save(group.require_group("state"))
        group.update_attributes(_jsonable({
            "rows_consumed": self.rows_consumed, "rows_complete": self.rows_complete, "samples": state.samples,
            "finished": self.finished, "stop_reason": self.stop_reason, "target_se": self.target_se,
            "alpha": self.alpha, "written": time.time(), "convergence": self.convergence,
            "reached_at_row": None if self.reached_at_row is None else [
                None if r < 0 else int(r) for r in self.reached_at_row],
            "last_to_reach": list(self.last_to_reach),
        }))
        # The pointer moves last: a follower killed before this line leaves the previous slot current.
        self._output.update_attributes({"current": slot, "rows_consumed": self.rows_consumed, "samples": state.samples,
                                   "finished": self.finished, "stop_reason": self.stop_reason})
        self._current_slot = slot
        self._written_rows = self.rows_consumed
        self._last_write = time.monotonic()
        return True

    def _put(self, group, slot, name, values, dims):
        handle = self._slot_handles.get((slot, name))
        if handle is None or handle.shape != values.shape or handle.dtype != values.dtype:
            handle = group.create_array(name, shape=values.shape, dtype=values.dtype, dimension_names=dims,
                                        overwrite=True)
            self._slot_handles[(slot, name)] = handle
        handle[...] = values

    # ------------------------------------------------------------------ folding rows

    def _windows(self, start, stop) -> list:
        """The reads ``[(a, b)]`` that cover rows ``[start, stop)``: whole windows aligned to multiples of the window."""
        window = self.source.window_rows()
        edges = [start, *range((start // window + 1) * window, stop, window), stop]
        return list(zip(edges[:-1], edges[1:]))

    def poll(self, stop=None) -> int:
        """Fold every complete row not folded yet; return how many. ``stop`` (an Event) ends a long catch-up early."""
        from .io.recording import _ReadAhead

        rows, finished = self.source.poll()
        if rows < self.rows_consumed:
            raise ValueError(f"recording {self.where} now counts {rows} complete rows, fewer than the "
                             f"{self.rows_consumed} already folded: it was replaced or truncated")
        self.rows_complete = rows
        before = self.rows_consumed
        if rows > before:
            windows = self._windows(before, rows)
            # While one window is folded the next is read in a thread (as estimate() does); a
            # window read ahead and not folded (stop was set) is dropped, never counted.
            with _ReadAhead(lambda bounds: self.source.read(*bounds), windows,
                            threaded=self.source.read_ahead()) as reads:
                for (start, stop_row), (activity, stimulation, steps) in zip(windows, reads):
                    self.estimator.update(activity, stimulation, steps)
                    del activity, stimulation, steps  # hold only the window being read while waiting for it
                    if self.rows_consumed != stop_row:
                        raise RuntimeError(f"the online estimator counts {self.rows_consumed} rows after rows "
                                           f"{start}:{stop_row}")
                    if stop is not None and stop.is_set():
                        break
                    if time.monotonic() - self._last_publish >= _PUBLISH_SECONDS and self.rows_consumed < rows:
                        self._publish()
        self.finished = finished and self.rows_consumed == rows
        if self.finished and self.stop_reason is None:
            self.stop_reason = "finished"
        if self.rows_consumed > before or self.finished:
            self._publish()
        return self.rows_consumed - before

    def _rows_per_second(self, now) -> float:
        self._recent.append((now, self.rows_consumed))
        while len(self._recent) > 2 and now - self._recent[1][0] >= _RECENT_SECONDS:
            self._recent.popleft()
        then, rows_then = self._recent[0]
        if now - then > 0 and len(self._recent) > 1:
            return (self.rows_consumed - rows_then) / (now - then)
        return 0.0

    def _publish(self) -> LiveState:
        now = time.monotonic()
        self._last_publish = now
        self._version += 1
        common = dict(version=self._version, rows_consumed=self.rows_consumed, rows_complete=self.rows_complete,
                      rows_per_second=self._rows_per_second(now), finished=self.finished,
                      stop_reason=self.stop_reason, target_se=self.target_se, alpha=self.alpha,
                      description=f"{self.source.kind} {self.where}")
        if self.estimator.samples == 0:
            state = LiveState(samples=0, convergence=tuple(self.convergence), **common)
        else:
            state = self._estimate_state(common)
        self._state = state
        if self.on_state is not None:
            self.on_state(state)
        return state

    def _estimate_state(self, common) -> LiveState:
        from .estimators import significant_edges

        result = self.estimator.result()
        moments = result.moments
        effect = np.array(result.effect, dtype=np.float64)
        stderr = np.array(result.stderr, dtype=np.float64)
        pvalue, qvalue = np.array(result.pvalue), np.array(result.qvalue)
        samples = int(result.n_samples)
        if samples >= self._next_mark:
            self.convergence.append(convergence_point(moments, self._A))
            while self._next_mark <= samples:
                self._next_mark *= 2
        source_se = _source_mean_se(stderr)
        source_samples = None
        if self.parameters["stimulation"] is not None and self.parameters["binary"]:
            source_samples = np.rint(samples * np.asarray(moments.mean_in, dtype=np.float64)).astype(np.int64)
        reached = None
        if self.target_se is not None:
            reached = np.isfinite(source_se) & (source_se <= self.target_se)
            if self.reached_at_row is None or self.reached_at_row.shape != reached.shape:
                self.reached_at_row = np.full(reached.shape, -1, dtype=np.int64)
            newly = reached & (self.reached_at_row < 0)
            self.reached_at_row[newly] = self.rows_consumed
            if reached.all() and self.stop_reason in (None, "finished"):
                last = self.reached_at_row.max()
                order = np.flatnonzero(self.reached_at_row == last)
                self.last_to_reach = tuple(int(i) for i in order[np.argsort(-source_se[order], kind="stable")])
                self.stop_reason = "target_se"
        points = list(self.convergence)
        if not points or points[-1]["samples"] != samples:
            points.append(convergence_point(moments, self._A))
        return LiveState(
            samples=samples, effect=effect, stderr=stderr, pvalue=pvalue, qvalue=qvalue,
            significant=significant_edges(qvalue, self.alpha), source_mean_se=source_se,
            source_samples=source_samples, reached_target=reached, last_to_reach=self.last_to_reach,
            convergence=tuple(points), **common,
        )

    # ------------------------------------------------------------------ the loop

    def follow(self, *, interval=0.5, stop=None, timeout=None, on_poll=None) -> str:
        """Poll every ``interval`` seconds until the recording is finished, ``target_se`` is reached, or ``stop`` is set.

        Returns why it stopped: ``"finished"``, ``"target_se"``, ``"stopped"`` (``stop``, a
        ``threading.Event``, was set) or ``"timeout"`` (``timeout`` seconds passed). The
        output is written at least every ``write_seconds`` while rows arrive, and at the
        end. ``on_poll(follower)`` is called after every poll (e.g. a progress display).
        A KeyboardInterrupt propagates without writing: the last written checkpoint stays
        the one to resume from.
        """
        interval = check_real(interval, "interval")
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        if timeout is not None:
            timeout = check_real(timeout, "timeout")
        if stop is None:
            stop = threading.Event()
        began = time.monotonic()
        reason = self.stop_reason if self.stop_reason == "target_se" else None
        while reason is None:
            self.poll(stop)
            if on_poll is not None:
                on_poll(self)
            if self.stop_reason == "target_se":
                reason = "target_se"
            elif self.finished:
                reason = "finished"
            elif stop.is_set():
                reason = "stopped"
            elif timeout is not None and time.monotonic() - began >= timeout:
                reason = "timeout"
            if reason is None and time.monotonic() - self._last_write >= self.write_seconds:
                self.write()
            if reason is None:
                stop.wait(interval)
                if stop.is_set():
                    reason = "stopped"
        self.write(force=True)
        return reason


def _jsonable(value):
    """Attributes as JSON allows them: NaN and inf become None."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def read_follow_output(store) -> dict:
    """The current estimates of a follow output: ``{"effect", "stderr", "pvalue", "qvalue", ..., "attrs", "slot"}``.

    Reads the group named by the root attribute ``current``, then checks that ``current``
    did not move while reading (a writer flips it only after a slot is complete).
    """
    import zarr

    root = zarr.open_group(_as_store(store), mode="r", use_consolidated=False)
    for _ in range(5):
        slot = root.attrs.get("current")
        if slot not in _SLOTS:
            raise ValueError(f"store {describe(store)} holds no follow estimates yet (no 'current' slot)")
        group = root[slot]
        values = {name: array[...] for name, array in group.arrays()}
        values["attrs"] = dict(group.attrs)
        values["slot"] = slot
        root = _reopen(root)
        if root.attrs.get("current") == slot:
            return values
    raise ValueError(f"store {describe(store)} kept changing while it was read")
