"""The Zarr v3 store of a run: layout, self-describing attributes, trajectories, checkpoints, lock.

Layout (all arrays time-major and chunked along time; every array names its dimensions)::

    <store>/                          root group; attrs "streamcausal" and "parameters"
      connectivity        (n, n) float64   [target, source], the ground-truth A
      estimates/          merged over seeds: correlation, effect, stderr (n, n) [target, source],
                          count () int64, undefined (n, n) bool
      seed_<s>/                       one group per seed
        activity          (T, n) float32|float64   state x_t after any clamp   [save_trajectory]
        stimulation       (T, n) uint8             0/1 pattern on clamped steps [save_trajectory]
        clamped           (T,)   bool              which steps were clamped    [save_trajectory]
        estimates/        this seed's estimates, as above
        checkpoint_a/, checkpoint_b/   alternating checkpoint slots (moments, state, RNG)

A checkpoint is written into the slot that does not hold the newest valid one, arrays
first and the slot's attributes (with a checksum of those arrays) last, so a reader
never takes a half-written checkpoint: a torn slot fails its checksum and the other
slot is used. A chunk's trajectory rows are written before the checkpoint that counts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import zarr

from ..network import connectivity_digest

__all__ = ["SCHEMA_VERSION", "RunStore", "SeedStore", "StoreLock", "StoreError"]

SCHEMA_VERSION = 1
# Fast compression for the (T, n) arrays: byte-shuffled LZ4 costs about half of zstd's
# time here for 7% more bytes (sigmoid outputs have near-random mantissas either way).
_TRAJECTORY_COMPRESSORS = [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
_SLOTS = ("checkpoint_a", "checkpoint_b")
_CHECKPOINT_ARRAYS = (
    "count", "mean_in", "mean_out", "m2_in", "m2_out", "comoment", "state", "mt", "mt_pos", "gauss",
)
# Parameters that must agree for a run to be resumed, in the order they are checked.
RESUME_PARAMETERS = ("n_neurons", "connectivity_sha256", "design", "seed", "seeds", "rng",
                     "chunk_steps", "n_steps", "dtype", "save_trajectory")


class StoreError(ValueError):
    """A store that cannot be used as asked: foreign, newer schema, locked, or mismatched.

    ``parameter`` names the run parameter that differs from the stored run (on a
    refused resume) or ``"mode"`` when the store's state contradicts the mode asked
    for; None otherwise. The command line maps it to its option.
    """

    def __init__(self, message, *, parameter=None):
        super().__init__(message)
        self.parameter = parameter


def local_path(store) -> Path | None:
    """The directory behind ``store`` when it is on local disk, else None."""
    if isinstance(store, (str, os.PathLike)):
        text = os.fspath(store)
        if "://" in text and not text.startswith("file://"):
            return None
        return Path(text.removeprefix("file://")).expanduser().resolve()
    if isinstance(store, zarr.storage.LocalStore):
        return Path(store.root).resolve()
    return None


def describe_store(store) -> str:
    path = local_path(store)
    return str(path) if path is not None else repr(store)


def _checksum(arrays: dict) -> str:
    digest = hashlib.sha256()
    for name in _CHECKPOINT_ARRAYS:
        value = np.ascontiguousarray(arrays[name])
        digest.update(name.encode())
        digest.update(str(value.dtype).encode())
        digest.update(repr(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


class StoreLock:
    """An exclusive lock file beside a local store (``<store>.lock``); stale locks of dead processes are taken over.

    It sits beside the store, not in it, so that recreating the store cannot remove it.
    Stores that are not on local disk are not locked (their backends have no
    portable exclusive create), which the README states.
    """

    def __init__(self, directory: Path | None):
        self.path = None if directory is None else directory.with_name(directory.name + ".lock")
        self.held = False

    @classmethod
    def for_store(cls, store) -> "StoreLock":
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


def _estimate_arrays(group, moments, prefix="estimates"):
    """Write a CrossMoments' estimates into ``group/prefix`` (overwriting)."""
    sub = group.require_group(prefix)
    sub.attrs.update({
        "orientation": "[target, source]: entry [j, i] is the estimate for source i onto target j",
    })
    for name, values in (
        ("correlation", moments.correlation()),
        ("effect", moments.effect()),
        ("stderr", moments.stderr()),
    ):
        array = sub.create_array(name, shape=values.shape, dtype="float64",
                                 dimension_names=["target", "source"], overwrite=True)
        array[...] = values
    undefined = moments.undefined_edges()
    array = sub.create_array("undefined", shape=undefined.shape, dtype="bool",
                             dimension_names=["target", "source"], overwrite=True)
    array[...] = undefined
    count = sub.create_array("count", shape=(), dtype="int64", overwrite=True)
    count[...] = moments.count


class SeedStore:
    """One seed's part of a run store: trajectory arrays, checkpoint slots, estimates."""

    def __init__(self, group, local_path=None):
        self.group = group
        self.directory = None if local_path is None else local_path / group.path
        self._unsynced = []

    def _fsync_written(self, extra_directories=()):
        """Flush to disk the files written since the last checkpoint (local stores only)."""
        if self.directory is None:
            return
        paths = list(self._unsynced)
        for directory in extra_directories:
            paths.extend(p for p in directory.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
        for path in paths + sorted({p.parent for p in paths}):
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # an all-fill chunk that zarr chose not to write
                continue
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        self._unsynced.clear()

    def write_trajectory(self, start, activity, stimulation, clamped):
        stop = start + activity.shape[0]
        self.group["activity"][start:stop] = activity
        self.group["stimulation"][start:stop] = stimulation
        self.group["clamped"][start:stop] = clamped
        if self.directory is not None:
            chunk_rows = self.group["activity"].chunks[0]
            for index in range(start // chunk_rows, -(-stop // chunk_rows)):
                for name in ("activity", "stimulation"):
                    self._unsynced.append(self.directory / name / "c" / str(index) / "0")
                self._unsynced.append(self.directory / "clamped" / "c" / str(index))

    def _slot_record(self, slot):
        if slot not in self.group:
            return None
        attrs = dict(self.group[slot].attrs)
        return attrs if "next_chunk" in attrs and "checksum" in attrs else None

    def read_checkpoint(self):
        """The newest checkpoint whose checksum verifies, as a dict, or None."""
        best = None
        for slot in _SLOTS:
            record = self._slot_record(slot)
            if record is None:
                continue
            try:
                arrays = {name: self.group[slot][name][...] for name in _CHECKPOINT_ARRAYS}
            except (KeyError, ValueError, OSError):
                continue
            if _checksum(arrays) != record["checksum"]:
                continue
            if best is None or record["next_chunk"] > best["next_chunk"]:
                best = {**record, "arrays": arrays, "slot": slot}
        return best

    def _slot_arrays(self, slot, arrays):
        """Handles to the slot's arrays, created once with the right shapes and types."""
        group = self.group.require_group(slot)
        handles = {}
        for name in _CHECKPOINT_ARRAYS:
            value = np.asarray(arrays[name])
            existing = group.get(name)
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
        group.attrs.clear()  # invalidate the slot before overwriting its arrays
        for name in _CHECKPOINT_ARRAYS:
            handles[name][...] = np.asarray(arrays[name])
        # The trajectory and these arrays reach the disk before the record that counts them.
        self._fsync_written([self.directory / slot] if self.directory is not None else [])
        group.attrs.update({"next_chunk": int(next_chunk), "checksum": _checksum(arrays),
                            "written": time.time(), **extra})
        self._newest_slot = slot

    def write_estimates(self, moments):
        _estimate_arrays(self.group, moments)

    def write_snapshot(self, samples, arrays):
        """Moments at a convergence mark (``samples``), for the merged convergence curve."""
        group = self.group.require_group(f"convergence/samples_{int(samples)}")
        for name, value in arrays.items():
            value = np.asarray(value)
            group.create_array(name, shape=value.shape, dtype=value.dtype, overwrite=True)[...] = value
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
            try:
                snapshots[int(name.removeprefix("samples_"))] = {k: v[...] for k, v in group.arrays()}
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
        directory = local_path(store)
        where = describe_store(store)
        if directory is not None and directory.exists():
            if not directory.is_dir():
                raise StoreError(f"store {where} is a file, not a Zarr store directory")
            if any(directory.iterdir()) and not (directory / "zarr.json").exists():
                raise StoreError(f"store {where} is a directory that is not a Zarr store; "
                                 f"it is left untouched")
        try:
            existing = zarr.open_group(store, mode="r")
            attrs = dict(existing.attrs)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
            existing, attrs = None, None
        except Exception as error:  # a path holding something that is not a zarr group
            raise StoreError(f"store {where} is not a Zarr group: {error}") from None
        if existing is not None and not (attrs == {} and len(list(existing.keys())) == 0):
            header = attrs.get("streamcausal")
            if not isinstance(header, dict) or "schema_version" not in header:
                raise StoreError(f"store {where} is not a streamcausal run store (no 'streamcausal' attributes)")
            version = header["schema_version"]
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"store {where} has schema version {version!r}; this streamcausal "
                    f"(version {parameters['package_version']}) reads schema {SCHEMA_VERSION}"
                )
            if header.get("kind") != "run":
                raise StoreError(f"store {where} holds a {header.get('kind')!r}, not a run")
            if mode in ("r+", "a"):
                cls._check_same(attrs.get("parameters", {}), parameters, where)
                return cls(zarr.open_group(store, mode="r+"), directory)
            if mode != "w":
                raise StoreError(
                    f"store {where} already holds a run; open it with mode 'r+' to continue it "
                    f"or 'w' to replace it",
                    parameter="mode",
                )
        if mode == "r+":
            raise StoreError(f"cannot resume store {where}: it holds no run yet", parameter="mode")
        group = zarr.open_group(store, mode="w")
        run_store = cls(group, directory)
        run_store._create(parameters, A)
        return run_store

    @classmethod
    def reopen(cls, store):
        """Open an existing run store for writing, without checks (on Dask workers)."""
        return cls(zarr.open_group(store, mode="r+"), local_path(store))

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
        connectivity = self.group.create_array(
            "connectivity", shape=(n, n), dtype="float64", dimension_names=["target", "source"],
            attributes={"description": "ground-truth A; entry [j, i] is the weight from source i onto target j"},
        )
        connectivity[...] = A
        save = parameters["save_trajectory"]
        n_steps, chunk_steps = parameters["n_steps"], parameters["chunk_steps"]
        for seed in parameters["seeds"]:
            seed_group = self.group.create_group(f"seed_{seed}", attributes={"seed": seed})
            if save:
                seed_group.create_array(
                    "activity", shape=(n_steps, n), chunks=(chunk_steps, n), dtype=parameters["dtype"],
                    compressors=_TRAJECTORY_COMPRESSORS,
                    dimension_names=["time", "neuron"], fill_value=np.nan,
                    attributes={"description": "state x_t after any clamp; sigmoid output in [0, 1]",
                                "units": "dimensionless activity"},
                )
                seed_group.create_array(
                    "stimulation", shape=(n_steps, n), chunks=(chunk_steps, n), dtype="uint8",
                    compressors=_TRAJECTORY_COMPRESSORS,
                    dimension_names=["time", "neuron"],
                    attributes={"description": "1 where a neuron was stimulated on a clamped step"},
                )
                seed_group.create_array(
                    "clamped", shape=(n_steps,), chunks=(chunk_steps,), dtype="bool",
                    dimension_names=["time"],
                    attributes={"description": "True on the steps where the design clamped"},
                )
        # The attributes go last: a store killed while being created is not mistaken for a run.
        self.group.attrs.update({
            "streamcausal": {"schema_version": SCHEMA_VERSION, "kind": "run",
                             "package_version": parameters["package_version"]},
            "parameters": json.loads(json.dumps(parameters)),
            "model": "x[t+1] = sigmoid(A @ x[t] + eps[t]), eps[t] ~ N(0, I), x[0] = 0",
            "orientation": "A[j, i] and every estimate [j, i]: source i onto target j",
        })

    def seed(self, seed) -> SeedStore:
        return SeedStore(self.group[f"seed_{seed}"], self.local_path)

    def write_estimates(self, moments, extra_attrs=None):
        _estimate_arrays(self.group, moments)
        if extra_attrs:
            self.group.attrs.update(extra_attrs)
