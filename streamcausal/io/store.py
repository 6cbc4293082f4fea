"""The Zarr v3 store of a run: layout, self-describing attributes, trajectories, checkpoints, lock.

Layout (all arrays time-major and chunked along time; every array names its dimensions)::

    <store>/                          root group; attrs "streamcausal" (schema_version 2) and "parameters"
      connectivity        (n, n) float64   [target, source], the ground-truth A (a dense A)
      connectivity_sparse/            instead, for a scipy.sparse A: compressed sparse columns,
                                      attrs format="csc", shape=[n, n]
        indptr            (n + 1,) int64   column (source) i is entries indptr[i]:indptr[i + 1]
        indices           (nnz,) int32|int64  their targets (row indices), sorted within a column
        data              (nnz,) float64   their weights
      estimates/          merged over seeds: correlation, effect, stderr (n, n) [target, source],
                          count () int64, undefined (n, n) bool
      seed_<s>/                       one group per seed
        activity          (T, n) float16|float32|float64  state x_t after any clamp  [save_trajectory]
        stimulation       (T, n) uint8             0/1 pattern on clamped steps [save_trajectory]
        clamped           (T,)   bool              which steps were clamped    [save_trajectory]
        estimates/        this seed's estimates, as above
        checkpoint_a/, checkpoint_b/   alternating checkpoint slots (moments, state, RNG)

``stimulation`` and ``clamped`` hold one bit of information per byte, so they are
compressed with Blosc's bit shuffle (a standard Zarr v3 codec): the seven zero bit
planes of every byte compress to almost nothing, which leaves about the packed bits on
disk at a few ms of CPU per chunk, and any Zarr reader still sees plain 0/1 arrays.

Schema 2 added float16 activity and ``connectivity_sparse``; stores of schema 1 (dense
connectivity, float32/float64) are read and resumed as they are.

A checkpoint is written into the slot that does not hold the newest valid one: its
record is emptied (one write of its ``zarr.json``), its arrays are written, and its
record (with a checksum of those arrays) is written whole last, so a reader never takes
a half-written checkpoint. Any slot that cannot be read (an empty or partial
``zarr.json``, a missing or undecodable chunk, arrays failing the record's checksum) is
torn and the other slot is used; two torn slots raise :class:`StoreCorruptError`. A
chunk's trajectory rows are written and flushed to disk (``fsync``) before the
checkpoint that counts them.

Damage is never read as data. Every array written whole (connectivity, estimates,
convergence snapshots, trial estimates) keeps the sha256 of its values in its own
attribute ``sha256``, checked on every read; the connectivity is also checked against
the run's ``connectivity_sha256``. A trajectory's chunks are checked present up to the
newest checkpoint's ``next_chunk`` before they are read. Stores written before these
checks have no ``sha256`` attributes and are read as they are.

A new run store is created with its root attributes first, marked
``streamcausal.state = "creating"``, and the mark is removed once every array and
group is in place: a store killed while being created is recognised, replaced by a new
run (modes ``"w-"``, ``"w"``, ``"a"``) or started by ``"r+"`` when its parameters agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import socket
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import zarr

try:  # zarr's own bridge to its event loop, which every synchronous zarr call goes through
    from zarr.core.sync import sync as _zarr_sync
except ImportError:  # pragma: no cover - a zarr without it: one synchronous call per array
    _zarr_sync = None

__all__ = [
    "READABLE_SCHEMAS", "SCHEMA_VERSION", "Estimates", "RunStore", "SeedStore", "StoreCorruptError", "StoreError",
    "StoreLock", "StoreReader", "StoredTrajectory", "check_new_store", "check_run_location", "create_trajectory",
    "is_run_store", "is_sparse", "local_path", "read_array", "shared_between_processes", "write_estimates",
    "write_together", "write_trial_estimates",
]

SCHEMA_VERSION = 2
# A sparse connectivity is checked against connectivity_sha256 (a digest of all n^2
# dense entries) up to this many entries; above, its parts' own checksums vouch for it.
_DIGEST_ENTRIES = 2**26
READABLE_SCHEMAS = (1, 2)  # schema 1: no float16 activity, no connectivity_sparse; same otherwise
# Fast compression for the activity: byte-shuffled LZ4 costs about half of zstd's
# time here for 7% more bytes (sigmoid outputs have near-random mantissas either way).
_ACTIVITY_COMPRESSORS = [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
# 0/1 bytes: bit-shuffled, seven of every eight bit planes are zeros that LZ4 removes, so a
# chunk costs about its packed bits on disk (8.7 bytes a step at n = 100, against 27.5
# byte-shuffled) and 2 ms of CPU instead of 7; readers see plain uint8/bool.
_BINARY_COMPRESSORS = [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")]
# Each trajectory chunk is written once, whole, with data: zarr's check whether it equals
# the fill value (a full pass over the chunk, on zarr's event loop) would be wasted.
_TRAJECTORY_WRITE_CONFIG = {"write_empty_chunks": True}
_SLOTS = ("checkpoint_a", "checkpoint_b")
_CHECKPOINT_ARRAYS = (
    "count", "mean_in", "mean_out", "m2_in", "m2_out", "comoment", "state", "mt", "mt_pos", "gauss",
)
# Parameters that must agree for a run to be resumed, in the order they are checked.
# target_se is one of them: a run stops where its stored target says, so another target
# would make the stored parameters lie about the run (the README says so).
RESUME_PARAMETERS = ("n_neurons", "connectivity_sha256", "design", "seed", "seeds", "rng",
                     "chunk_steps", "n_steps", "dtype", "save_trajectory", "target_se")
# The header's state while a new store is being created (absent once it is complete).
CREATING = "creating"


class StoreError(ValueError):
    """A store that cannot be used as asked: foreign, newer schema, locked, or mismatched.

    ``parameter`` names the run parameter that differs from the stored run (on a
    refused resume) or ``"mode"`` when the store's state contradicts the mode asked
    for (a run, or a store, already there; no run to continue); None otherwise.
    ``argument`` names the argument of the call that the error is about (e.g.
    ``"estimates"`` of :func:`streamcausal.report`), when it is not the store itself.
    The command line maps both to its options.
    """

    def __init__(self, message, *, parameter=None, argument=None):
        super().__init__(message)
        self.parameter = parameter
        self.argument = argument


class StoreCorruptError(ValueError):
    """Data in a store that cannot be trusted: a missing or undecodable chunk, a failed checksum.

    Not the caller's mistake (the command line exits with status 1, a data error, not
    2); the message names the store, the array and the chunk, and says what to do.
    ``array`` and ``chunk`` (a chunk key such as ``"c/0/0"``) name what is damaged, when known.
    """

    def __init__(self, message, *, array=None, chunk=None):
        super().__init__(message)
        self.array = array
        self.chunk = chunk


def local_path(store, *, resolve=True) -> Path | None:
    """The directory behind ``store`` when it is on local disk, else None.

    ``resolve=False`` keeps a relative path relative (for names shown to a user).
    """
    if isinstance(store, (str, os.PathLike)):
        text = os.fspath(store)
        if "://" in text and not text.startswith("file://"):
            return None
        path = Path(text.removeprefix("file://")).expanduser()
        return path.resolve() if resolve else path
    if isinstance(store, zarr.storage.LocalStore):
        return Path(store.root).resolve() if resolve else Path(store.root)
    if isinstance(store, zarr.Group):
        root = local_path(store.store, resolve=resolve)
        return None if root is None else root / store.path if store.path else root
    return None


def describe_store(store) -> str:
    path = local_path(store)
    return str(path) if path is not None else repr(store)


def _open_group(location, mode, **options) -> zarr.Group:
    """``zarr.open_group`` of a path, URL, zarr store or zarr.Group (its store and path)."""
    if isinstance(location, zarr.Group):
        return zarr.open_group(location.store, path=location.path, mode=mode, **options)
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    return zarr.open_group(location, mode=mode, **options)


def shared_between_processes(location) -> bool:
    """Whether worker processes opening ``location`` see the same store (not a per-process memory store)."""
    store = location.store if isinstance(location, zarr.Group) else location
    if isinstance(store, zarr.storage.MemoryStore):
        return False
    return not (isinstance(store, str) and store.startswith("memory://"))


def _digest(values) -> str:
    """sha256 of an array's dtype, shape and C-order bytes: how a damaged or missing chunk is noticed."""
    values = np.ascontiguousarray(values)
    digest = hashlib.sha256(f"{values.dtype.str}{values.shape}".encode())
    digest.update(values.reshape(-1).view(np.uint8) if values.size else b"")
    return digest.hexdigest()


def _chunk_selection(array, coords):
    return tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(coords, array.chunks, array.shape))


def _stored_chunk_keys(array) -> set:
    """The chunk keys (``c/0/0``) that ``array`` holds in its store, from one listing."""
    prefix = array.store_path.path + "/" if array.store_path.path else ""
    store = array.store_path.store

    async def listed():
        return [key async for key in store.list_prefix(prefix + "c")]

    keys = _zarr_sync(listed()) if _zarr_sync is not None else []
    return {key[len(prefix):] for key in keys}


def missing_chunks(array, leading=None) -> list:
    """Keys of the chunks of ``array`` absent from its store (only the first ``leading`` along axis 0, when given)."""
    grid = [range(count) for count in array.cdata_shape]
    if leading is not None and grid:
        grid[0] = range(min(int(leading), len(grid[0])))
    stored = _stored_chunk_keys(array)
    return [key for coords in itertools.product(*grid)
            if (key := array.metadata.encode_chunk_key(coords)) not in stored]


def _one_line(error) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:200]


def _undecodable(array, where, error, advice) -> StoreCorruptError:
    """The error for ``array`` that failed to decode: which chunk, found by reading them one by one."""
    for coords in itertools.product(*(range(count) for count in array.cdata_shape)):
        try:
            array[_chunk_selection(array, coords)]
        except Exception as cause:  # noqa: BLE001 - any decoder's error marks the chunk
            key = array.metadata.encode_chunk_key(coords)
            return StoreCorruptError(
                f"store {where}: array {array.path!r}, chunk {key!r}, cannot be decoded ({_one_line(cause)}); {advice}",
                array=array.path, chunk=key,
            )
    return StoreCorruptError(f"store {where}: array {array.path!r} cannot be read ({_one_line(error)}); {advice}",
                             array=array.path)


def read_array(array, where=None, advice="the store is damaged; rerun the run with --overwrite (mode='w')"):
    """All of ``array``, checked: a chunk that cannot be decoded, or values failing the
    array's ``sha256`` attribute (a missing or damaged chunk), raise :class:`StoreCorruptError`."""
    where = where if where is not None else describe_store(array.store)
    try:
        values = array[...]
    except Exception as error:  # noqa: BLE001 - Blosc/Zstd raise RuntimeError, others ValueError
        raise _undecodable(array, where, error, advice) from None
    expected = array.attrs.get("sha256")
    if expected is not None and _digest(values) != expected:
        missing = missing_chunks(array)
        detail = f"chunk {missing[0]!r} is missing" if missing else "its values fail the checksum written with it"
        raise StoreCorruptError(f"store {where}: array {array.path!r} is damaged: {detail}; {advice}",
                                array=array.path, chunk=missing[0] if missing else None)
    return values


def _checksum(arrays: dict) -> str:
    digest = hashlib.sha256()
    for name in _CHECKPOINT_ARRAYS:
        value = np.ascontiguousarray(arrays[name])
        digest.update(name.encode())
        digest.update(str(value.dtype).encode())
        digest.update(repr(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _lock_name(directory: Path) -> str:
    """``<name>.lock``, or, when that is longer than a file name may be, a shortened name plus its hash."""
    name = directory.name + ".lock"
    try:
        limit = os.pathconf(directory.parent, "PC_NAME_MAX")
    except (OSError, ValueError):  # the parent does not exist yet, or no such limit here
        limit = 255
    if len(os.fsencode(name)) <= limit - 24:  # room for the ".stale-<pid>" of a takeover
        return name
    tag = hashlib.sha256(os.fsencode(directory.name)).hexdigest()[:16]
    head = os.fsencode(directory.name)[: max(0, limit - 64)].decode(errors="ignore")
    return f"{head}-{tag}.lock"


class StoreLock:
    """An exclusive lock file beside a local store (``<store>.lock``); stale locks of dead processes are taken over.

    It sits beside the store, not in it, so that recreating the store cannot remove it.
    Stores that are not on local disk are not locked (their backends have no
    portable exclusive create), which the README states.
    """

    def __init__(self, directory: Path | None):
        self.path = None if directory is None else directory.with_name(_lock_name(directory))
        self.held = False

    @classmethod
    def for_store(cls, store) -> StoreLock:
        return cls(local_path(store))

    def _owner(self):
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _alive(owner) -> bool:
        if owner is None:
            return False  # unreadable: written by a process killed mid-write
        if owner.get("host") != socket.gethostname():
            return True  # cannot tell; refuse rather than risk two writers
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def acquire(self):
        if self.path is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if self._alive(owner):
                    raise StoreError(
                        f"store {self.path.with_suffix('')} is being written by another live process "
                        f"(pid {owner.get('pid')} on {owner.get('host')}); wait for it, or delete "
                        f"{self.path} if that process is gone"
                    ) from None
                stale = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
                try:
                    os.replace(self.path, stale)  # take over the dead process's lock
                    stale.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(record)
            self.held = True
            return self
        raise StoreError(f"could not take the lock {self.path}")

    def release(self):
        if self.held and self.path is not None:
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _put(group, name, values, dimension_names=None, dtype=None, attributes=None):
    """Write ``values`` as array ``name`` of ``group`` (replacing one there), naming its dimensions."""
    values = np.asarray(values)
    if dtype is None:
        dtype = values.dtype
    stored = values.astype(dtype, copy=False)
    # The checksum goes in with the array's metadata, before its chunks: a kill in between
    # leaves an array that fails it, not one that reads as its fill value.
    if stored.dtype.kind in "biuf":  # numbers and flags (ids stored as strings come back in another type)
        attributes = {**(attributes or {}), "sha256": _digest(stored)}
    array = group.create_array(name, shape=values.shape, dtype=dtype, dimension_names=dimension_names,
                               attributes=attributes, overwrite=True)
    array[...] = stored
    return array


def _estimate_arrays(group, moments, prefix="estimates"):
    """Write a CrossMoments' estimates into ``group/prefix`` (``group`` itself for ``""``; overwriting)."""
    sub = group.require_group(prefix) if prefix else group
    sub.attrs.update({
        "orientation": "[target, source]: entry [j, i] is the estimate for source i onto target j",
    })
    edges = ["target", "source"]
    _put(sub, "correlation", moments.correlation(), edges, "float64")
    _put(sub, "effect", moments.effect(), edges, "float64")
    _put(sub, "stderr", moments.stderr(), edges, "float64")
    _put(sub, "undefined", moments.undefined_edges(), edges, "bool")
    _put(sub, "count", moments.count, None, "int64")
    return sub


def is_sparse(A) -> bool:
    """Whether ``A`` is a scipy.sparse matrix or array (checked without importing scipy)."""
    return type(A).__module__.startswith("scipy.sparse")


_CONNECTIVITY_DESCRIPTION = "ground-truth A; entry [j, i] is the weight from source i onto target j"


def write_connectivity(group, A) -> None:
    """Write ``A`` into ``group``: dense as array ``connectivity``, scipy.sparse as group ``connectivity_sparse`` (CSC)."""
    if not is_sparse(A):
        A = np.asarray(A, dtype=np.float64)
        _put(group, "connectivity", A, ["target", "source"], "float64",
             attributes={"description": _CONNECTIVITY_DESCRIPTION})
        return
    import scipy.sparse

    csc = scipy.sparse.csc_array(A, dtype=np.float64)
    csc.sum_duplicates()  # canonical: sorted targets within each source, no repeats
    n_rows, n_columns = csc.shape
    sparse = group.require_group("connectivity_sparse")
    sparse.attrs.update({
        "format": "csc", "shape": [int(n_rows), int(n_columns)], "description": _CONNECTIVITY_DESCRIPTION,
        "layout": "compressed sparse columns: source i's targets are indices[indptr[i]:indptr[i + 1]], "
                  "their weights data[indptr[i]:indptr[i + 1]]",
    })
    index_dtype = "int32" if max(csc.shape) < 2**31 else "int64"
    _put(sparse, "indptr", csc.indptr, ["source_pointer"], "int64")
    _put(sparse, "indices", csc.indices, ["nonzero"], index_dtype)
    _put(sparse, "data", csc.data, ["nonzero"], "float64")


def read_connectivity(group):
    """The connectivity in ``group``: a dense ndarray, a scipy.sparse ``csc_array``, or None."""
    try:
        node = group["connectivity"]
    except KeyError:
        node = None
    advice = "the run's connectivity cannot be trusted; rerun the run with --overwrite (mode='w')"
    if isinstance(node, zarr.Array):
        return read_array(node, advice=advice)
    try:
        sparse = group["connectivity_sparse"]
    except KeyError:
        return None
    if not isinstance(sparse, zarr.Group) or sparse.attrs.get("format") != "csc":
        return None
    import scipy.sparse

    shape = tuple(int(size) for size in sparse.attrs["shape"])
    parts = [read_array(sparse[name], advice=advice) for name in ("data", "indices", "indptr")]
    return scipy.sparse.csc_array(tuple(parts), shape=shape)


def write_together(writes) -> None:
    """Write each ``(array, selection, values)`` in one round trip to zarr's event loop.

    One ``array[selection] = values`` per array would hand each over to zarr's event loop
    thread and its codec threads in turn, several thread switches apiece; gathered, the
    arrays' encodes and file writes run concurrently and the caller waits once. On a
    loaded machine each switch waits for a core, so this is what keeps a chunk's writes
    from queueing behind other processes.
    """
    writes = list(writes)
    if _zarr_sync is None or len(writes) < 2:
        for array, selection, values in writes:
            array[selection] = values
        return

    async def gathered():
        await asyncio.gather(*(array.async_array.setitem(selection, values) for array, selection, values in writes))

    _zarr_sync(gathered())


class StoredTrajectory(NamedTuple):
    """A seed's saved trajectory as Zarr arrays, decoded lazily by slicing: ``activity`` (T, n),
    ``stimulation`` (T, n) 0/1, ``clamped`` (T,) bool."""

    activity: zarr.Array
    stimulation: zarr.Array
    clamped: zarr.Array


def create_trajectory(group, n_steps, n_neurons, chunk_steps, dtype) -> StoredTrajectory:
    """Create the empty trajectory arrays of one seed in ``group``, with the run store's chunks and codecs."""
    activity = group.create_array(
        "activity", shape=(n_steps, n_neurons), chunks=(chunk_steps, n_neurons), dtype=dtype,
        compressors=_ACTIVITY_COMPRESSORS, dimension_names=["time", "neuron"], fill_value=np.nan,
        attributes={"description": "state x_t after any clamp; sigmoid output in [0, 1]",
                    "units": "dimensionless activity"},
    )
    stimulation = group.create_array(
        "stimulation", shape=(n_steps, n_neurons), chunks=(chunk_steps, n_neurons), dtype="uint8",
        compressors=_BINARY_COMPRESSORS, dimension_names=["time", "neuron"],
        attributes={"description": "1 where a neuron was stimulated on a clamped step"},
    )
    clamped = group.create_array(
        "clamped", shape=(n_steps,), chunks=(chunk_steps,), dtype="bool",
        compressors=_BINARY_COMPRESSORS, dimension_names=["time"],
        attributes={"description": "True on the steps where the design clamped"},
    )
    return StoredTrajectory(*(array.with_config(_TRAJECTORY_WRITE_CONFIG) for array in (activity, stimulation, clamped)))


def fsync_paths(paths, stop_at=None) -> None:
    """Flush ``paths`` and their directories (up to ``stop_at``, included) to disk; missing files are skipped."""
    directories = set()
    for path in paths:
        for parent in path.parents:
            directories.add(parent)
            if stop_at is None or parent == stop_at:
                break
    for path in list(paths) + sorted(directories, key=lambda d: len(d.parts), reverse=True):
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # an all-fill chunk that zarr chose not to write
            continue
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class SeedStore:
    """One seed's part of a run store: trajectory arrays, checkpoint slots, estimates."""

    def __init__(self, group, local_path=None):
        self.group = group
        self.directory = None if local_path is None else local_path / group.path
        self._unsynced = []
        self._trajectory = None
        self._cast_buffers = {}

    def _fsync_written(self, extra_directories=()):
        """Flush to disk the files written since the last checkpoint (local stores only)."""
        if self.directory is None:
            return
        paths = list(self._unsynced)
        for directory in extra_directories:
            paths.extend(p for p in directory.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
        fsync_paths(paths, stop_at=self.directory)
        self._unsynced.clear()

    def trajectory_arrays(self) -> StoredTrajectory:
        """The seed's trajectory arrays, opened once (each open reads metadata from the store)."""
        if self._trajectory is None:
            self._trajectory = StoredTrajectory(*(self.group[name].with_config(_TRAJECTORY_WRITE_CONFIG)
                                                  for name in StoredTrajectory._fields))
        return self._trajectory

    def _cast(self, name, values, dtype):
        """``values`` as ``dtype``, in a buffer kept for the next chunk (a fresh one costs its page faults)."""
        if values.dtype == dtype:
            return values
        buffer = self._cast_buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.shape[0] < values.shape[0]:
            buffer = self._cast_buffers[name] = np.empty(values.shape, dtype)
        out = buffer[: values.shape[0]]
        np.copyto(out, values, casting="unsafe")
        return out

    def write_trajectory(self, start, activity, stimulation, clamped):
        """Write rows ``start:start + len(activity)`` (any real dtypes; cast to the stored ones) and flush them.

        Called on the background writer thread, so the casts, the compression and the
        ``fsync`` of the chunk files overlap the simulation of the next chunk; a
        checkpoint that counts these rows is written only after this returns.
        """
        stored = self.trajectory_arrays()
        stop = start + activity.shape[0]
        write_together((array, slice(start, stop), self._cast(name, np.asarray(values), array.dtype))
                       for name, array, values in zip(StoredTrajectory._fields, stored, (activity, stimulation, clamped)))
        if self.directory is not None:
            chunk_rows = stored.activity.chunks[0]
            chunks = range(start // chunk_rows, -(-stop // chunk_rows))
            paths = [self.directory / name / "c" / str(index) / "0"
                     for index in chunks for name in ("activity", "stimulation")]
            paths += [self.directory / "clamped" / "c" / str(index) for index in chunks]
            fsync_paths(paths, stop_at=self.directory)

    def _read_slot(self, slot):
        """``(checkpoint, None)``, ``(None, why the slot is torn)``, or ``(None, None)`` for no slot."""
        try:
            try:
                group = self.group[slot]
            except KeyError:  # no such slot (yet)
                return None, None
            record = dict(group.attrs)
            if "next_chunk" not in record or "checksum" not in record:
                return None, "no complete record"
            arrays = {name: group[name][...] for name in _CHECKPOINT_ARRAYS}
        except Exception as error:  # noqa: BLE001 - any unreadable part (metadata, record, chunk) tears the slot
            return None, _one_line(error)
        if _checksum(arrays) != record["checksum"]:
            return None, "its arrays fail the record's checksum"
        return {**record, "arrays": arrays, "slot": slot}, None

    def read_checkpoint(self):
        """The newest checkpoint that reads whole and verifies, as a dict, or None.

        A torn slot (unreadable metadata, record or arrays, or a failed checksum) is
        skipped: a kill tears at most the slot being written. Both slots torn is damage
        no kill leaves: :class:`StoreCorruptError`, naming the store and what to do.
        """
        best, torn = None, {}
        for slot in _SLOTS:
            checkpoint, why = self._read_slot(slot)
            if why is not None:
                torn[slot] = why
            if checkpoint is not None and (best is None or checkpoint["next_chunk"] > best["next_chunk"]):
                best = checkpoint
        if best is None and len(torn) == len(_SLOTS):
            reasons = "; ".join(f"{slot}: {why}" for slot, why in torn.items())
            raise StoreCorruptError(
                f"store {describe_store(self.group.store)}: both checkpoint slots of {self.group.path} are "
                f"unreadable ({reasons}); its progress cannot be recovered: rerun the run with --overwrite "
                "(mode='w') to start it again", array=self.group.path,
            )
        return best

    def _slot_arrays(self, slot, arrays):
        """Handles to the slot's arrays, created once with the right shapes and types.

        A torn slot (its metadata unreadable) is created afresh: it holds nothing to keep.
        """
        try:
            group = self.group.require_group(slot)
        except Exception:  # noqa: BLE001 - an unreadable zarr.json of the slot
            group = self.group.create_group(slot, overwrite=True)
        handles = {}
        for name in _CHECKPOINT_ARRAYS:
            value = np.asarray(arrays[name])
            try:
                existing = group.get(name)
            except Exception:  # noqa: BLE001 - an unreadable zarr.json of the array: written anew
                existing = None
            if existing is None or existing.shape != value.shape or existing.dtype != value.dtype:
                existing = group.create_array(name, shape=value.shape, dtype=value.dtype, overwrite=True)
            handles[name] = existing
        return group, handles

    def write_checkpoint(self, next_chunk, arrays, extra):
        """Write ``arrays`` (moments and state) as the checkpoint before chunk ``next_chunk``."""
        if not hasattr(self, "_newest_slot"):
            current = self.read_checkpoint()
            self._newest_slot = None if current is None else current["slot"]
            self._handles = {}
        slot = _SLOTS[1] if self._newest_slot == _SLOTS[0] else _SLOTS[0]
        if slot not in self._handles:
            self._handles[slot] = self._slot_arrays(slot, arrays)
        group, handles = self._handles[slot]
        group.attrs.put({})  # one write: the slot is invalid while its arrays are overwritten
        write_together((handles[name], Ellipsis, np.asarray(arrays[name])) for name in _CHECKPOINT_ARRAYS)
        # The trajectory and these arrays reach the disk before the record that counts them.
        self._fsync_written([self.directory / slot] if self.directory is not None else [])
        # One write of the whole record (attrs.update would write zarr.json once per key,
        # and a reader could take a record that has its checksum but not yet steps_done).
        group.attrs.put({"next_chunk": int(next_chunk), "checksum": _checksum(arrays),
                         "written": time.time(), **extra})
        self._newest_slot = slot

    def write_estimates(self, moments):
        _estimate_arrays(self.group, moments)

    def write_snapshot(self, samples, arrays):
        """Moments at a convergence mark (``samples``), for the merged convergence curve."""
        group = self.group.require_group(f"convergence/samples_{int(samples)}")
        for name, value in arrays.items():
            _put(group, name, value)
        if self.directory is not None:
            self._unsynced.extend(
                p for p in (self.directory / group.path.removeprefix(self.group.path + "/")).rglob("*")
                if p.is_file() and not p.name.endswith(".partial")
            )

    def read_snapshots(self):
        """{samples: moment arrays} of every stored convergence mark."""
        if "convergence" not in self.group:
            return {}
        snapshots = {}
        for name, group in self.group["convergence"].groups():
            try:  # a damaged snapshot only loses its point of the merged curve
                snapshots[int(name.removeprefix("samples_"))] = {k: read_array(v) for k, v in group.arrays()}
            except (ValueError, KeyError, OSError):
                continue
        return snapshots


class RunStore:
    """A run's Zarr group, created fresh or reopened for resume."""

    def __init__(self, group, directory):
        self.group = group
        self.local_path = directory

    @classmethod
    def open(cls, store, parameters, A, *, mode="w-"):
        """Open ``store`` for a run with ``parameters`` in a zarr-like ``mode`` (see ``api.STORE_MODES``).

        ``"w-"`` creates and refuses an existing run, ``"w"`` replaces it, ``"r+"``
        continues it (checking that the parameters agree), ``"a"`` continues it when
        there is one and creates it otherwise.
        """
        stored = check_run_location(store, mode)
        if stored is not None:
            cls._check_same(stored.get("parameters", {}), parameters, describe_store(store))
            if stored["streamcausal"].get("state") != CREATING:
                return cls(_open_group(store, "r+"), local_path(store))
        # The header goes first, marked as being created: a store killed now is recognised.
        group = _open_group(store, "w", attributes=_root_attributes(parameters, creating=True))
        run_store = cls(group, local_path(store))
        run_store._create(parameters, A)
        return run_store

    @classmethod
    def reopen(cls, store):
        """Open an existing run store for writing, without checks (on Dask workers)."""
        return cls(_open_group(store, "r+"), local_path(store))

    @staticmethod
    def _check_same(stored, wanted, where):
        for name in RESUME_PARAMETERS:
            if name not in wanted:
                continue
            have = stored.get(name)
            want = json.loads(json.dumps(wanted[name]))
            if have != want:
                shown = {"connectivity_sha256": "A (connectivity)"}.get(name, name)
                raise StoreError(
                    f"cannot resume store {where}: {shown} differs (stored {have!r}, given {want!r})",
                    parameter=name,
                )

    def _create(self, parameters, A):
        n = A.shape[0]
        write_connectivity(self.group, A)
        save = parameters["save_trajectory"]
        n_steps, chunk_steps = parameters["n_steps"], parameters["chunk_steps"]
        for seed in parameters["seeds"]:
            seed_group = self.group.create_group(f"seed_{seed}", attributes={"seed": seed})
            if save:
                create_trajectory(seed_group, n_steps, n, chunk_steps, parameters["dtype"])
        if self.local_path is not None:  # everything created reaches the disk before the mark goes
            fsync_paths([p for p in self.local_path.rglob("*") if p.is_file()], stop_at=self.local_path)
        self.group.attrs.put(_root_attributes(parameters, creating=False))  # one write: the run is complete

    def seed(self, seed) -> SeedStore:
        return SeedStore(self.group[f"seed_{seed}"], self.local_path)

    def write_estimates(self, moments, extra_attrs=None):
        _estimate_arrays(self.group, moments)
        if extra_attrs:  # one write of zarr.json, not one per key
            self.group.attrs.put({**dict(self.group.attrs), **json.loads(json.dumps(extra_attrs))})


def _root_attributes(parameters, *, creating) -> dict:
    """A run store's root attributes; ``creating`` marks a store whose creation has not finished."""
    header = {"schema_version": SCHEMA_VERSION, "kind": "run", "package_version": parameters["package_version"]}
    if creating:
        header["state"] = CREATING
    return {
        "streamcausal": header,
        "parameters": json.loads(json.dumps(parameters)),
        "model": "x[t+1] = sigmoid(A @ x[t] + eps[t]), eps[t] ~ N(0, I), x[0] = 0",
        "orientation": "A[j, i] and every estimate [j, i]: source i onto target j",
    }


# ----------------------------------------------------------------------------- checks before writing


def check_run_location(store, mode="w-"):
    """Check that a run can be opened at ``store`` in ``mode``, changing nothing.

    Returns the stored root attributes when ``store`` holds a run that ``mode``
    continues (``"r+"`` or ``"a"``), None when a new run will be created there. Raises
    :class:`StoreError` for a file, a directory that is not a Zarr store, a Zarr store
    that is not a streamcausal run (or of another schema), and with ``parameter="mode"``
    when the store's state contradicts ``mode`` (a run there under ``"w-"``, none under
    ``"r+"``). The run's parameters are compared later, by :meth:`RunStore.open`.

    A store whose creation was interrupted (header state ``"creating"``) holds no run:
    ``"w-"``, ``"w"`` and ``"a"`` replace it (None); ``"r+"`` gets its attributes, to start
    it when the parameters agree.
    """
    from .._version import __version__

    directory = local_path(store)
    where = describe_store(store)
    if directory is not None and directory.exists():
        if not directory.is_dir():
            raise StoreError(f"store {where} is a file, not a Zarr store directory")
        if any(directory.iterdir()) and not (directory / "zarr.json").exists():
            raise StoreError(f"store {where} is a directory that is not a Zarr store; "
                             f"it is left untouched")
    try:
        existing = _open_group(store, "r")
        attrs = dict(existing.attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        existing, attrs = None, None
    except Exception as error:  # noqa: BLE001 - a path holding something that is not a zarr group
        raise StoreError(f"store {where} is not a Zarr group: {_one_line(error)}") from None
    if existing is not None and not (attrs == {} and len(list(existing.keys())) == 0):
        header = attrs.get("streamcausal")
        if not isinstance(header, dict) or "schema_version" not in header:
            raise StoreError(f"store {where} is not a streamcausal run store (no 'streamcausal' attributes)")
        version = header["schema_version"]
        if version not in READABLE_SCHEMAS:
            raise StoreError(
                f"store {where} has schema version {version!r}; this streamcausal "
                f"(version {__version__}) reads schemas {', '.join(map(str, READABLE_SCHEMAS))}"
            )
        if header.get("kind") != "run":
            raise StoreError(f"store {where} holds a {header.get('kind')!r}, not a run")
        if header.get("state") == CREATING:  # killed while being created: nothing in it to keep
            return attrs if mode == "r+" else None
        if mode in ("r+", "a"):
            return attrs
        if mode != "w":
            raise StoreError(
                f"store {where} already holds a run; open it with mode 'r+' to continue it "
                f"or 'w' to replace it",
                parameter="mode",
            )
    if mode == "r+":
        raise StoreError(f"cannot resume store {where}: it holds no run yet", parameter="mode")
    return None


def check_new_store(store, *, replace=False, source=None) -> None:
    """Check that a new store (of estimates) may be created at ``store``, changing nothing.

    Refused (:class:`StoreError`): an existing store unless ``replace`` (then with
    ``parameter="mode"``), the ``source`` store itself, a file, and a non-empty directory
    that is not a Zarr store (creating a store there would empty it). Only local paths
    are checked.
    """
    directory = local_path(store)
    if directory is None or not directory.exists():
        return
    where = os.fspath(store) if isinstance(store, (str, os.PathLike)) else describe_store(store)
    if not directory.is_dir():
        raise StoreError(f"{where!r} is a file, not a Zarr store directory")
    if source is not None and local_path(source) == directory:
        raise StoreError(f"{where!r} is the source store itself; a new store there would replace it")
    if any(directory.iterdir()) and not (directory / "zarr.json").exists():
        raise StoreError(f"{where!r} is a non-empty directory that is not a Zarr store; it is left untouched")
    if not replace:
        raise StoreError(f"{where!r} already exists", parameter="mode")


# ----------------------------------------------------------------------------- reading


class Estimates:
    """Estimate arrays read from a group: ``correlation``, ``effect``, ``stderr`` (or None), ``count`` (or None)."""

    def __init__(self, group, path, where=None):
        self.path = path
        advice = ("a run's estimates are written again from its checkpoints by resuming it (--resume, mode='r+'); "
                  "estimates of `estimate --output` by estimating again")

        def read(name):
            return read_array(group[name], where, advice) if name in group else None

        self.correlation = read("correlation")
        self.effect = read("effect")
        self.stderr = read("stderr")
        count = read("count")
        self.count = None if count is None else int(count)


class StoreReader:
    """A read-only look at an existing Zarr group: a run store, estimates, or any recording.

    Open one with :meth:`open` (any existing group) or :meth:`open_run` (a run store
    this streamcausal can continue); both raise a one-line :class:`StoreError`.
    """

    def __init__(self, group, where=None):
        self.group = group
        self.where = where if where is not None else describe_store(group.store)

    @classmethod
    def open(cls, store) -> StoreReader:
        """Open the existing group at ``store`` (a path, URL, zarr store or group) read-only."""
        if isinstance(store, zarr.Group):  # opened again: its attributes may have changed since
            return cls(_open_group(store, "r"), describe_store(store))
        where = os.fspath(store) if isinstance(store, (str, os.PathLike)) else describe_store(store)
        directory = local_path(store)
        if directory is not None and not directory.exists():
            raise StoreError(f"no such store {where!r}")
        if directory is not None and not directory.is_dir():
            raise StoreError(f"{where!r} is a file, not a Zarr store directory")
        if isinstance(store, os.PathLike):
            store = os.fspath(store)
        try:
            return cls(zarr.open_group(store, mode="r"), where)
        except Exception as error:  # GroupNotFoundError, a foreign directory, a bad URL
            raise StoreError(f"{where!r} is not a Zarr store ({type(error).__name__}: {error})") from None

    @classmethod
    def open_run(cls, store) -> StoreReader:
        """Open the run store at ``store``; refuse anything else, another schema, or no ``connectivity``."""
        reader = cls.open(store)
        if reader.creating:
            raise StoreError(f"store {reader.where!r} was never started: its creation was interrupted; "
                             "rerun with --overwrite (mode 'w') to create it again", parameter="mode")
        if reader.header is None:
            raise StoreError(f"{reader.where!r} is not a streamcausal run store "
                             "(no 'streamcausal' run attributes)")
        version = reader.header.get("schema_version")
        if version not in READABLE_SCHEMAS:
            raise StoreError(f"store {reader.where!r} has schema version {version!r}; "
                             f"this streamcausal reads schemas {', '.join(map(str, READABLE_SCHEMAS))}")
        if not (reader.has_array("connectivity") or reader.has_group("connectivity_sparse")):
            raise StoreError(f"store {reader.where!r} has no 'connectivity' array (nor 'connectivity_sparse' group)")
        return reader

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def header(self) -> dict | None:
        """The ``streamcausal`` header of a run store, or None for any other group."""
        header = self.attrs.get("streamcausal")
        run = isinstance(header, dict) and header.get("kind") == "run" and header.get("state") != CREATING
        return header if run else None

    @property
    def creating(self) -> bool:
        """Whether this is a run store whose creation was interrupted (it holds no run)."""
        header = self.attrs.get("streamcausal")
        return isinstance(header, dict) and header.get("kind") == "run" and header.get("state") == CREATING

    @property
    def is_run(self) -> bool:
        return self.header is not None

    @property
    def parameters(self) -> dict:
        """The run's parameters ({} unless a run store)."""
        return dict(self.attrs.get("parameters", {})) if self.is_run else {}

    @property
    def seeds(self) -> list:
        return [int(seed) for seed in self.parameters.get("seeds", [])]

    def has_array(self, name) -> bool:
        return isinstance(self._node(name), zarr.Array)

    def has_group(self, name) -> bool:
        return isinstance(self._node(name), zarr.Group)

    def _node(self, name):
        try:
            return self.group[name]
        except KeyError:
            return None

    def connectivity(self):
        """The stored true connectivity ``[target, source]``, or None.

        A dense ndarray from array ``connectivity``, or a ``scipy.sparse.csc_array`` from
        group ``connectivity_sparse`` (a run of a scipy.sparse ``A``). Checked against
        the arrays' checksums and the run's ``connectivity_sha256`` (for a sparse A above
        ``_DIGEST_ENTRIES`` entries, whose digest streams all ``n^2``, the parts' checksums
        only): :class:`StoreCorruptError` when they differ.
        """
        A = read_connectivity(self.group)
        expected = self.parameters.get("connectivity_sha256")
        if A is None or expected is None or (is_sparse(A) and A.shape[0] * A.shape[1] > _DIGEST_ENTRIES):
            return A
        from ..network import connectivity_digest

        if connectivity_digest(A) != expected:
            raise StoreCorruptError(
                f"store {self.where}: its connectivity differs from the run's connectivity_sha256 (the store is "
                "damaged); rerun the run with --overwrite (mode='w')", array="connectivity")
        return A

    def has_trajectory(self, seed) -> bool:
        return self.has_array(f"seed_{seed}/activity")

    def trajectory(self, seed) -> StoredTrajectory | None:
        """Seed ``seed``'s saved trajectory as lazily decoded Zarr arrays, or None when none was saved.

        Slicing decodes only the chunks it touches, e.g. ``trajectory(0).activity[t0:t1]``;
        the arrays go as they are to :func:`streamcausal.estimate`. Schema 1 and 2 stores
        have the same arrays (only their codecs differ), so this reads both.
        """
        if not all(self.has_array(f"seed_{seed}/{name}") for name in StoredTrajectory._fields):
            return None
        self.check_trajectory(seed)
        return StoredTrajectory(*(self.group[f"seed_{seed}/{name}"] for name in StoredTrajectory._fields))

    def check_trajectory(self, seed) -> int:
        """Check that every trajectory chunk seed ``seed``'s newest checkpoint counts is in the store.

        Returns that number of chunks. A missing one (it would read as the fill value: NaN
        activity, zero stimulation, unclamped steps) raises :class:`StoreCorruptError`.
        """
        checkpoint = self.checkpoint(seed)
        written = 0 if checkpoint is None else int(checkpoint["next_chunk"])
        for name in StoredTrajectory._fields:
            array = self.group[f"seed_{seed}/{name}"]
            missing = missing_chunks(array, leading=written)
            if missing:
                rows = array.chunks[0]
                first = int(missing[0].split("/")[1])
                raise StoreCorruptError(
                    f"store {self.where}: array 'seed_{seed}/{name}' has lost chunk {missing[0]!r} (steps "
                    f"{first * rows:,} to {min((first + 1) * rows, array.shape[0]):,}) of the {written} its checkpoint "
                    f"counts{f', and {len(missing) - 1} more' if len(missing) > 1 else ''}; those steps cannot be "
                    "recovered: rerun the run with --overwrite (mode='w')",
                    array=f"seed_{seed}/{name}", chunk=missing[0])
        return written

    def find_damage(self, names) -> StoreCorruptError | None:
        """The first undecodable chunk among the arrays ``names`` (read chunk by chunk), as an error; else None.

        For an error path: after a read of these arrays failed, it says which chunk.
        """
        for name in names:
            if name is None or not self.has_array(name):
                continue
            array = self.group[name]
            error = _undecodable(array, self.where, None, "rerun the run with --overwrite (mode='w') "
                                 "to write it again")
            if error.chunk is not None:
                return error
        return None

    def estimates(self, path=None) -> Estimates | None:
        """The estimates in group ``path`` (one with an ``effect`` array), or None.

        ``path=None`` looks for the run's merged ``estimates`` group, then for estimates
        at the root (a store written by ``streamcausal estimate --output``). A ``path``
        given but holding no estimates raises :class:`StoreError` with ``argument="estimates"``.
        """
        if path is not None:
            node = self.group if path in ("", ".", "/") else self._node(path)
            if not isinstance(node, zarr.Group) or "effect" not in node:
                raise StoreError(f"no estimates group {path!r} (with an 'effect' array) in {self.where}",
                                 argument="estimates")
            return Estimates(node, path, self.where)
        if self.has_group("estimates") and "effect" in self.group["estimates"]:
            return Estimates(self.group["estimates"], "estimates", self.where)
        if "effect" in self.group and ("correlation" in self.group or "pvalue" in self.group):
            return Estimates(self.group, "", self.where)
        return None

    def checkpoint(self, seed):
        """Seed ``seed``'s newest valid checkpoint (see :meth:`SeedStore.read_checkpoint`), or None."""
        if not self.has_group(f"seed_{seed}"):
            return None
        return SeedStore(self.group[f"seed_{seed}"]).read_checkpoint()


def is_run_store(store) -> bool:
    """Whether ``store`` holds a streamcausal run (one that ``mode="r+"`` can continue or return)."""
    try:
        return StoreReader.open(store).is_run
    except StoreError:
        return False


# ----------------------------------------------------------------------------- writing estimates


def write_estimates(store, moments, *, path="", attrs=None, connectivity=None, new=False) -> str:
    """Write the estimates of ``moments`` (a CrossMoments) into group ``path`` of ``store``.

    The arrays are ``correlation``, ``effect``, ``stderr`` (float64 ``[target, source]``),
    ``undefined`` (bool) and ``count``; ``attrs`` are added to the group's attributes.
    ``new=True`` creates ``store`` afresh (replacing whatever Zarr store is there: check
    it with :func:`check_new_store` first) and writes ``connectivity``, when given, at
    its root (dense, or ``connectivity_sparse`` for a scipy.sparse one); otherwise
    ``store`` must exist and is opened for writing. Returns ``path``.
    """
    group = _open_for_estimates(store, new)
    written = _estimate_arrays(group, moments, path)
    if attrs:
        written.attrs.update(attrs)
    if connectivity is not None:
        write_connectivity(group, connectivity)
    return path


def _open_for_estimates(store, new):
    return _open_group(store, "w" if new else "r+")


def _ids(values):
    """Ids as stored: integers and floats as they are, anything else as strings."""
    values = np.asarray(values)
    if values.dtype.kind in "iuf":
        return values, None
    return np.asarray([str(v) for v in values.tolist()], dtype=str), str


def write_trial_estimates(store, result, *, path="", alpha=0.05, attrs=None, new=False) -> str:
    """Write a TrialResult's estimates into group ``path`` of ``store``; return ``path``.

    Arrays, each naming its dimensions (``responder``, ``source``): ``effect``,
    ``stderr``, ``pvalue``, ``qvalue`` (float64 ``[responder, source]``), ``significant``
    (``qvalue <= alpha``) and ``undefined`` (bool), ``trials_per_source`` (int64
    ``[source]``), ``source_ids`` and ``responder_ids``. Attributes: ``method``,
    ``window``, ``baseline``, ``alpha``, ``n_trials``, ``n_dropped``, ``dropped`` (by
    reason), ``recording`` (its description), ``timing`` and ``orientation``, plus
    ``attrs``. ``new=True`` creates ``store`` afresh (check it with
    :func:`check_new_store` first); otherwise ``store`` must exist.
    """
    from .._version import __version__

    significant = result.significant(alpha)  # checks alpha before anything is written
    group = _open_for_estimates(store, new)
    sub = group.require_group(path) if path else group
    edges = ["responder", "source"]
    _put(sub, "effect", result.effect, edges, "float64")
    _put(sub, "stderr", result.stderr, edges, "float64")
    _put(sub, "pvalue", result.pvalue, edges, "float64")
    _put(sub, "qvalue", result.qvalue, edges, "float64")
    _put(sub, "significant", significant, edges, "bool")
    _put(sub, "undefined", result.undefined_edges, edges, "bool")
    _put(sub, "trials_per_source", result.trials_per_source, ["source"], "int64")
    for name, values, dimension in (("source_ids", result.source_ids, "source"),
                                    ("responder_ids", result.responder_ids, "responder")):
        values, dtype = _ids(values)
        _put(sub, name, values, [dimension], dtype)
    parameters = result.parameters
    sub.attrs.update(json.loads(json.dumps({
        "streamcausal": {"kind": "trial_estimates", "schema_version": SCHEMA_VERSION, "package_version": __version__},
        "orientation": "[responder, source]: entry [j, i] is the influence of stimulating source i on responder j; "
                       "the diagonal is each target's response to its own stimulation",
        "method": result.method,
        "window": parameters.get("window"),
        "baseline": parameters.get("baseline"),
        "alpha": float(alpha),
        "significance": "Benjamini-Hochberg q-value <= alpha over the off-diagonal edges "
                        "(two-sided normal p-values of effect / stderr)",
        "n_trials": result.n_trials,
        "n_dropped": result.n_dropped,
        "dropped": {key: int(value) for key, value in result.dropped.items()},
        "n_trials_given": parameters.get("n_trials_given"),
        "recording": parameters.get("activity"),
        "timing": parameters.get("timing"),
        "n_frames": int(result.n_frames),
        **(attrs or {}),
    }, default=str)))
    return path
