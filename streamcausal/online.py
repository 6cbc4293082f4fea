"""Estimates updated from rows that arrive in pieces.

:class:`OnlineEstimator` is :func:`~streamcausal.estimate` for a recording that is
still being written: each :meth:`~OnlineEstimator.update` folds in the next rows, the
last ``lag`` rows (and their step flags) carry over to the next piece, and
:meth:`~OnlineEstimator.result` is, at any time, the estimate of all rows so far.
The state saves to a Zarr group as an atomic checkpoint (two alternating slots, the
record written last, as :func:`~streamcausal.run` does) and two estimators over
consecutive parts of a recording merge exactly. Every matrix is ``[target, source]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np

from ._validation import as_numeric_array, check_flag, check_int, check_interval, check_real, describe
from .experiment import Trials
from .io.recording import _BATCH_VALUES, _as_range, _gather, _nonfinite_rows
from .moments import CrossMoments, block_size, chunk_moments
from .result import Result

__all__ = ["OnlineEstimator", "OnlineTrialEstimator"]

SCHEMA_VERSION = 1
_SLOTS = ("checkpoint_a", "checkpoint_b")
_MOMENT_KEYS = ("count", "mean_in", "mean_out", "m2_in", "m2_out", "comoment")


# --------------------------------------------------------------------------- the step estimate


class OnlineEstimator:
    """The step-based estimate of :func:`~streamcausal.estimate`, fed rows in pieces.

    The samples are the pairs ``(stimulation[t], activity[t + lag])`` over the
    perturbation steps ``t`` (``(activity[t], activity[t + lag])`` when
    ``observational``), exactly as :func:`~streamcausal.estimate` forms them on the
    concatenation of every piece so far: a pair is counted once its outcome row has
    arrived, whatever the cut between pieces.

    Parameters
    ----------
    lag : int
        Steps from input to outcome, ``>= 1``.
    observational : bool
        No stimulation: the inputs are the activity rows themselves.
    binary : bool
        The stimulation must hold only 0 and 1 on the perturbation steps (as
        :func:`~streamcausal.estimate`); False for real-valued clamps.
    skip_nonfinite : bool
        Drop (and count) the pairs that use a NaN or inf row, instead of refusing the piece.

    Notes
    -----
    A piece is checked when it arrives, whole, before anything changes: a refused
    piece (a ``ValueError``/``TypeError`` naming the argument and the value) leaves
    the estimator as it was. Rows are checked as :func:`~streamcausal.estimate` checks
    them (only rows that enter a pair), with one difference that comes from not
    knowing the future: a perturbation step's input row is checked when it arrives,
    even if the recording later ends before its outcome row (or, with
    ``skip_nonfinite``, the outcome is non-finite and the pair is dropped).

    Examples
    --------
    >>> import numpy as np
    >>> import streamcausal as sc
    >>> rng = np.random.default_rng(0)
    >>> stim = rng.integers(0, 2, size=(1000, 3), dtype=np.uint8)
    >>> act = np.roll(stim, 1, axis=0) + 0.1 * rng.normal(size=(1000, 3))
    >>> online = OnlineEstimator()
    >>> for start in range(0, 1000, 128):                   # pieces of any size
    ...     online.update(act[start:start + 128], stim[start:start + 128])
    >>> online.rows, online.samples
    (1000, 999)
    >>> whole = sc.estimate(act, stim)
    >>> bool(np.allclose(online.result().effect, whole.effect, rtol=0, atol=1e-12))
    True
    """

    def __init__(self, *, lag=1, observational=False, binary=True, skip_nonfinite=False):
        self.lag = check_int(lag, "lag", minimum=1)
        self.observational = check_flag(observational, "observational")
        self.binary = check_flag(binary, "binary")
        self.skip_nonfinite = check_flag(skip_nonfinite, "skip_nonfinite")
        self._moments: CrossMoments | None = None  # made once the first piece gives the widths
        self._rows = 0
        self._skipped = 0
        self._seconds = 0.0
        self._head = None  # first min(lag, rows) activity rows: outcomes of pairs across a merge cut
        self._tail = None  # last min(lag, rows) input rows: inputs of pairs completed by the next piece
        self._tail_steps = np.zeros(0, dtype=bool)

    # ------------------------------------------------------------------ properties

    @property
    def rows(self) -> int:
        """Rows consumed so far."""
        return self._rows

    @property
    def samples(self) -> int:
        """Pairs counted so far."""
        return 0 if self._moments is None else int(self._moments.count)

    @property
    def skipped_pairs(self) -> int:
        """Pairs dropped for a non-finite row (``skip_nonfinite=True``)."""
        return self._skipped

    @property
    def n_outputs(self) -> int | None:
        """Columns of the activity (None before the first piece)."""
        return None if self._moments is None else self._moments.n_outputs

    @property
    def n_inputs(self) -> int | None:
        """Columns of the stimulation, or of the activity when observational (None before the first piece)."""
        return None if self._moments is None else self._moments.n_inputs

    # ------------------------------------------------------------------ updates

    def update(self, activity, stimulation=None, steps=None) -> None:
        """Fold in the next rows.

        Parameters
        ----------
        activity : array, shape (k, n)
            The next ``k`` rows of the activity, time-major (``k`` may be 0, or less than ``lag``).
        stimulation : array, shape (k, n_inputs), or None
            Their stimulation; None exactly when the estimator is ``observational``.
        steps : None, array of bool, shape (k,), or array of int
            Which of these ``k`` rows are perturbation steps: all (None), a mask, or
            sorted unique indices into the piece.

        Raises
        ------
        TypeError
            Non-numeric or complex arrays, ``steps`` of the wrong kind.
        ValueError
            Wrong dimensions or widths, a stimulation given to an observational
            estimator (or missing from another), bad ``steps``, non-finite rows that
            enter a pair (unless ``skip_nonfinite``), non-binary stimulation
            (``binary=True``). The estimator is then unchanged.
        """
        began = time.perf_counter()
        outputs, inputs, mask = self._check_piece(activity, stimulation, steps)
        k, n = outputs.shape
        n_in = inputs.shape[1]
        lag, start = self.lag, self._rows
        tail = self._tail if self._tail is not None else np.empty((0, n_in))
        m = tail.shape[0]
        flags = np.concatenate([self._tail_steps, mask])  # rows start - m ... start + k - 1
        # Steps t whose outcome t + lag is in this piece: the first m + k - lag of those rows.
        complete = max(0, m + k - lag)
        selected = _as_range(np.flatnonzero(flags[:complete]) + (start - m))

        def locate(name, t, column):
            return f"{name}[{t - start}, {column}] of this piece (time index {t})"

        check_binary = self.binary and not self.observational and inputs.dtype != np.bool_
        input_name = "activity" if self.observational else "stimulation"
        piece_moments, skipped = _fold_pairs(
            [(start - m, tail), (start, inputs)], [(start, outputs)], selected, lag, n_in, n,
            skip_nonfinite=self.skip_nonfinite, check_binary=check_binary, input_name=input_name, locate=locate,
        )
        # Steps whose outcome is still to come: refuse their bad inputs now, with this piece.
        first_pending = max(complete - m, 0)
        pending = np.flatnonzero(mask[first_pending:]) + first_pending
        if pending.size:
            _check_inputs(np.asarray(inputs[pending], dtype=np.float64), pending + start,
                          skip_nonfinite=self.skip_nonfinite, check_binary=check_binary,
                          input_name=input_name, locate=locate)

        # Every check passed: commit.
        if self._moments is None:
            self._moments = CrossMoments(n_in, n)
        self._moments += piece_moments
        self._skipped += skipped
        if start < lag:
            head = outputs[: lag - start].astype(np.float64)
            self._head = head if self._head is None else np.concatenate([self._head, head])
        if k >= lag:
            self._tail = inputs[k - lag :].astype(np.float64)
        else:
            self._tail = np.concatenate([tail, inputs.astype(np.float64)])[-lag:]
        self._tail_steps = flags[-lag:].copy()
        self._rows = start + k
        self._seconds += time.perf_counter() - began

    def _check_piece(self, activity, stimulation, steps):
        """The piece's arrays, checked against the estimator and each other: (activity, inputs, step mask)."""
        activity = as_numeric_array(activity, "activity")
        if activity.ndim != 2:
            raise ValueError(f"activity must be 2-D (k, n), time-major (a row per step), got shape {activity.shape}")
        k, n = activity.shape
        if n == 0:
            raise ValueError(f"activity must have at least one neuron (column), got shape {activity.shape}")
        if self._moments is not None and n != self._moments.n_outputs:
            raise ValueError(
                f"activity must have {self._moments.n_outputs} columns, as the rows before it, got shape {activity.shape}"
            )
        if self.observational:
            if stimulation is not None:
                raise ValueError(
                    f"stimulation must be None for an observational estimator, got {describe(stimulation)}"
                )
            inputs = activity
        else:
            if stimulation is None:
                raise ValueError(
                    "stimulation must be given (the estimator was made with observational=False), got None"
                )
            inputs = as_numeric_array(stimulation, "stimulation")
            if inputs.ndim != 2:
                raise ValueError(f"stimulation must be 2-D (k, n_inputs), time-major, got shape {inputs.shape}")
            if inputs.shape[0] != k:
                raise ValueError(
                    "stimulation must have as many rows as activity, "
                    f"got stimulation shape {inputs.shape} and activity shape {activity.shape}"
                )
            if inputs.shape[1] == 0:
                raise ValueError(f"stimulation must have at least one column, got shape {inputs.shape}")
            if self._moments is not None and inputs.shape[1] != self._moments.n_inputs:
                raise ValueError(
                    f"stimulation must have {self._moments.n_inputs} columns, as the rows before it, "
                    f"got shape {inputs.shape}"
                )
        return activity, inputs, _step_mask(steps, k)

    # ------------------------------------------------------------------ results

    def result(self) -> Result:
        """The estimate of every row so far: the same :class:`~streamcausal.Result` as :func:`~streamcausal.estimate`.

        ``n_steps`` is the rows so far; ``parameters`` records lag, binary,
        skip_nonfinite and ``skipped_pairs``. Below ``lag + 1`` rows there is no pair
        and every estimate is NaN. Raises ValueError before the first piece (the
        widths are not known yet).
        """
        if self._moments is None:
            raise ValueError("OnlineEstimator has no rows yet: call update() with a first piece before result()")
        parameters = {
            "source": "online",
            "steps": "per piece",
            "lag": self.lag,
            "binary": self.binary if not self.observational else None,
            "observational": self.observational,
            "skip_nonfinite": self.skip_nonfinite,
            "skipped_pairs": self._skipped,
            "n_neurons": self._moments.n_outputs,
            "n_inputs": self._moments.n_inputs,
        }
        return Result(self._moments.copy(), self._rows, self._seconds, parameters)

    # ------------------------------------------------------------------ merging

    def merge(self, later: OnlineEstimator) -> OnlineEstimator:
        """A new estimator of both parts: this one covers rows ``[0, a)``, ``later`` rows ``[a, b)``, started fresh.

        Exact: the pairs that straddle the cut (inputs among this one's last ``lag``
        rows, outcomes among ``later``'s first ``lag``) are formed here. ``later``
        must be a fresh estimator that was fed the rows right after this one's, with
        the same settings. Neither side changes.
        """
        if not isinstance(later, OnlineEstimator):
            raise TypeError(f"later must be an OnlineEstimator, got {describe(later)}")
        mine, theirs = self._settings(), later._settings()
        if mine != theirs:
            different = [name for name in mine if mine[name] != theirs[name]]
            raise ValueError(f"later must have the same settings, got {different} = "
                             f"{[theirs[name] for name in different]} against {[mine[name] for name in different]}")
        widths = {(e._moments.n_inputs, e._moments.n_outputs) for e in (self, later) if e._moments is not None}
        if len(widths) > 1:
            raise ValueError(f"later must have the same widths (n_inputs, n_outputs), got {sorted(widths)}")
        merged = OnlineEstimator(**mine)
        if not widths:
            return merged
        n_in, n = widths.pop()
        a, lag = self._rows, self.lag
        tail = self._tail if self._tail is not None else np.empty((0, n_in))
        head = later._head if later._head is not None else np.empty((0, n))
        m = tail.shape[0]
        # Steps t in [a - m, a) whose outcome t + lag is among later's first rows.
        usable = max(0, min(m, m - lag + head.shape[0]))
        selected = _as_range(np.flatnonzero(self._tail_steps[:usable]) + (a - m))

        def locate(name, t, column):
            return f"{name}[{t}, {column}] (time index {t}, row {t - a} of the later estimator)"

        cut, skipped = _fold_pairs(
            [(a - m, tail)], [(a, head)], selected, lag, n_in, n, skip_nonfinite=self.skip_nonfinite,
            check_binary=False, input_name="activity" if self.observational else "stimulation", locate=locate,
        )
        merged._moments = CrossMoments(n_in, n)
        for part in (self._moments, cut, later._moments):
            if part is not None:
                merged._moments += part
        merged._rows = a + later._rows
        merged._skipped = self._skipped + skipped + later._skipped
        merged._seconds = self._seconds + later._seconds
        heads = [h for h in (self._head, later._head) if h is not None]
        merged._head = np.concatenate(heads)[:lag] if self._rows < lag else self._head.copy()
        tails = [t for t in (self._tail, later._tail) if t is not None]
        merged._tail = np.concatenate(tails)[-lag:] if later._rows < lag else later._tail.copy()
        merged._tail_steps = np.concatenate([self._tail_steps, later._tail_steps])[-lag:]
        return merged

    def _settings(self) -> dict:
        return {"lag": self.lag, "observational": self.observational, "binary": self.binary,
                "skip_nonfinite": self.skip_nonfinite}

    # ------------------------------------------------------------------ checkpoints

    def save(self, group) -> None:
        """Write the state into ``group`` (a ``zarr.Group`` or a path) as an atomic checkpoint.

        The state goes into the slot (``checkpoint_a`` or ``checkpoint_b``) that does
        not hold the newest valid checkpoint; its record, with a checksum of the
        arrays, is written last, so a save torn by a crash never wins: :meth:`load`
        then takes the previous one. On local disk the arrays are flushed (``fsync``)
        before the record.
        """
        state = {**self._settings(), "rows": self._rows, "skipped": self._skipped, "seconds": self._seconds,
                 "widths": None if self._moments is None else [self._moments.n_inputs, self._moments.n_outputs]}
        arrays = {}
        if self._moments is not None:
            arrays.update(self._moments.to_arrays())
            arrays["head"] = self._head
            arrays["tail"] = self._tail
            arrays["tail_steps"] = self._tail_steps
        save_checkpoint(group, "online_estimator", state, arrays)

    @classmethod
    def load(cls, group) -> OnlineEstimator:
        """The estimator saved in ``group`` (a ``zarr.Group`` or a path): its newest valid checkpoint."""
        state, arrays = load_checkpoint(group, "online_estimator")
        try:
            self = cls(lag=state["lag"], observational=state["observational"], binary=state["binary"],
                       skip_nonfinite=state["skip_nonfinite"])
            self._rows = check_int(state["rows"], "rows", minimum=0)
            self._skipped = check_int(state["skipped"], "skipped", minimum=0)
            self._seconds = float(state["seconds"])
            if state["widths"] is not None:
                self._moments = CrossMoments.from_arrays({key: arrays[key] for key in _MOMENT_KEYS})
                self._head = np.asarray(arrays["head"], dtype=np.float64)
                self._tail = np.asarray(arrays["tail"], dtype=np.float64)
                self._tail_steps = np.asarray(arrays["tail_steps"], dtype=bool)
        except (KeyError, TypeError) as error:
            raise ValueError(f"group holds a malformed OnlineEstimator checkpoint: {error}") from error
        return self

    def __repr__(self) -> str:
        return (f"OnlineEstimator(lag={self.lag}, observational={self.observational}, rows={self._rows}, "
                f"samples={self.samples})")


# --------------------------------------------------------------------------- pairs and checks


def _step_mask(steps, k: int) -> np.ndarray:
    """``steps`` of a piece of ``k`` rows as a boolean mask: None (all), a mask, or sorted unique indices."""
    if steps is None:
        return np.ones(k, dtype=bool)
    if isinstance(steps, (str, bytes, slice)) or np.ndim(steps) != 1:
        raise TypeError(
            f"steps must be None, a boolean mask of the piece's {k} rows or an index array into them, "
            f"got {describe(steps)}"
        )
    index = np.asarray(steps)
    if index.dtype == np.bool_:
        if index.shape[0] != k:
            raise ValueError(f"steps mask must have one entry per row of the piece ({k}), got length {index.shape[0]}")
        return index.copy()
    mask = np.zeros(k, dtype=bool)
    if index.shape[0] == 0:
        return mask
    if not np.issubdtype(index.dtype, np.integer):
        raise TypeError(f"steps must be a boolean mask or an integer index array, got dtype {index.dtype}")
    outside = (index < 0) | (index >= k)
    if outside.any():
        j = int(np.argmax(outside))
        raise ValueError(f"steps must be indices in [0, {k}) (rows of this piece), got {index[j]} at steps[{j}]")
    if index.shape[0] > 1 and np.any(np.diff(index) <= 0):
        j = int(np.argmax(np.diff(index) <= 0)) + 1
        raise ValueError(f"steps index array must be sorted and unique, got steps[{j}]={index[j]} after {index[j - 1]}")
    mask[index] = True
    return mask


def _fold_pairs(input_pieces, output_pieces, selected, lag, n_in, n, *, skip_nonfinite, check_binary,
                input_name, locate):
    """Moments of the pairs ``(input row t, output row t + lag)`` over ``selected``, and how many were dropped.

    Pieces are ``[(first row, array)]``. The pairs are gathered into float64 batches
    and reduced by :func:`~streamcausal.moments.chunk_moments`, as
    :func:`~streamcausal.estimate` does.
    """
    total = CrossMoments(n_in, n)
    count = len(selected)
    if count == 0:
        return total, 0
    per_block = block_size(n)
    batch = min(count, max(1, _BATCH_VALUES // (max(n, n_in) * per_block)) * per_block)
    inputs_buffer, outputs_buffer = np.empty((batch, n_in)), np.empty((batch, n))
    dropped = 0
    for b in range(0, count, batch):
        chosen = selected[b : b + batch]
        k = len(chosen)
        inputs, outputs = inputs_buffer[:k], outputs_buffer[:k]
        _gather(input_pieces, 0, chosen, inputs)
        _gather(output_pieces, lag, chosen, outputs)
        bad_in, bad_out = _nonfinite_rows(inputs), _nonfinite_rows(outputs)
        if bad_in is not None or bad_out is not None:
            times = np.arange(chosen.start, chosen.stop, chosen.step) if isinstance(chosen, range) else chosen
            if not skip_nonfinite:
                found = []
                if bad_in is not None:
                    found.append(_first_nonfinite(inputs, bad_in, times, input_name))
                if bad_out is not None:
                    found.append(_first_nonfinite(outputs, bad_out, times + lag, "activity"))
                t, column, value, name = min(found)
                raise ValueError(
                    f"{name} must be finite, got {value} at {locate(name, t, column)}; "
                    "pass skip_nonfinite=True to drop the pairs that use non-finite rows"
                )
            keep = np.ones(k, dtype=bool)
            for rows in (bad_in, bad_out):
                if rows is not None:
                    keep &= ~rows
            chosen = times[keep]
            dropped += k - chosen.shape[0]
            k = chosen.shape[0]
            inputs[:k], outputs[:k] = inputs[keep], outputs[keep]
            inputs, outputs = inputs_buffer[:k], outputs_buffer[:k]
            if k == 0:
                continue
        if check_binary:
            _check_binary(inputs, chosen, input_name, locate)
        if k < per_block:  # under one block the parallel kernel's start-up costs more than the NumPy two-pass,
            with _one_blas_thread():  # whose small product is slower on a pool of BLAS threads on few cores
                total.update(inputs, outputs)
        else:
            total += chunk_moments(inputs, outputs, per_block, overwrite=True)
    return total, dropped


def _one_blas_thread():
    from .moments.reduce import one_blas_thread

    return one_blas_thread()


def _check_inputs(values, times, *, skip_nonfinite, check_binary, input_name, locate) -> None:
    """Checks of input rows whose pair is not complete yet (``values`` float64, rows at ``times``)."""
    bad = _nonfinite_rows(values)
    if bad is not None:
        if not skip_nonfinite:
            t, column, value, name = _first_nonfinite(values, bad, times, input_name)
            raise ValueError(
                f"{name} must be finite, got {value} at {locate(name, t, column)}; "
                "pass skip_nonfinite=True to drop the pairs that use non-finite rows"
            )
        values, times = values[~bad], times[~bad]
    if check_binary and values.shape[0]:
        _check_binary(values, times, input_name, locate)


def _first_nonfinite(values, bad_rows, times, name):
    k = int(np.argmax(bad_rows))
    column = int(np.argmax(~np.isfinite(values[k])))
    return int(times[k]), column, values[k, column], name


def _check_binary(values, times, name, locate) -> None:
    bad = (values != 0) & (values != 1)
    if not bad.any():
        return
    k = int(np.argmax(bad.any(axis=1)))
    column = int(np.argmax(bad[k]))
    t = int(times[k]) if not isinstance(times, range) else times[k]
    raise ValueError(
        f"{name} must hold only 0 and 1 (binary=True), got {values[k, column]:g} at {locate(name, t, column)}; "
        "pass binary=False to use real-valued clamps"
    )


# --------------------------------------------------------------------------- atomic checkpoints


def _open_group(group, mode: str):
    import zarr

    if isinstance(group, zarr.Group):
        return group
    if isinstance(group, (str, os.PathLike)):
        try:
            return zarr.open_group(os.fspath(group), mode=mode)
        except (FileNotFoundError, KeyError) as error:
            raise ValueError(f"group must be a Zarr group, found none at {describe(os.fspath(group))}") from error
    raise TypeError(f"group must be a zarr.Group or a path, got {describe(group)}")


def _checksum(state: dict, arrays: dict) -> str:
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode())
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(name.encode())
        digest.update(str(value.dtype).encode())
        digest.update(repr(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _records(group, kind: str):
    """Each slot's record ``(slot, record)`` whose attributes parse (valid or not)."""
    out = []
    for slot in _SLOTS:
        try:
            record = dict(group[slot].attrs).get(kind)
        except (KeyError, ValueError, OSError):
            continue
        if isinstance(record, dict) and isinstance(record.get("generation"), int):
            out.append((slot, record))
    return out


def _read_slot(group, slot, record):
    """``(state, arrays)`` of a slot whose arrays match the record's checksum, else None."""
    try:
        node = group[slot]
        arrays = {name: node[name][...] for name in record["arrays"]}
    except (KeyError, ValueError, OSError, TypeError):
        return None
    if _checksum(record["state"], arrays) != record.get("checksum"):
        return None
    return record["state"], arrays


def _newest(group, kind: str):
    """``(slot, state, arrays)`` of the newest checkpoint that verifies, or None."""
    best = None
    for slot, record in sorted(_records(group, kind), key=lambda item: -item[1]["generation"]):
        read = _read_slot(group, slot, record)
        if read is not None:
            best = (slot, *read)
            break
    return best


def save_checkpoint(group, kind: str, state: dict, arrays: dict) -> None:
    """Write ``state`` (JSON) and ``arrays`` into the slot of ``group`` not holding the newest valid checkpoint."""
    from .io.store import local_path

    group = _open_group(group, "a")
    header = dict(group.attrs).get("streamcausal")
    if header is not None and (not isinstance(header, dict) or header.get("kind") != kind):
        raise ValueError(f"group already holds something else ({describe(header)}); save a {kind} into its own group")
    if header is None:
        group.attrs["streamcausal"] = {"kind": kind, "schema_version": SCHEMA_VERSION}
    records = _records(group, kind)
    newest = _newest(group, kind)
    slot = _SLOTS[1] if newest is not None and newest[0] == _SLOTS[0] else _SLOTS[0]
    generation = 1 + max((record["generation"] for _, record in records), default=0)
    node = group.require_group(slot)
    node.attrs.clear()  # invalidate the slot before overwriting its arrays
    for name, value in arrays.items():
        value = np.asarray(value)
        existing = node.get(name)
        if existing is None or existing.shape != value.shape or existing.dtype != value.dtype:
            existing = node.create_array(name, shape=value.shape, dtype=value.dtype, overwrite=True)
        existing[...] = value
    root = local_path(group.store)
    if root is not None:  # the arrays reach the disk before the record that vouches for them
        directory = root / group.path / slot
        for path in directory.rglob("*"):
            if path.is_file() and not path.name.endswith(".partial"):
                descriptor = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
    record = {"generation": generation, "state": state, "arrays": sorted(arrays),
              "checksum": _checksum(state, {name: np.asarray(v) for name, v in arrays.items()}), "written": time.time()}
    node.attrs[kind] = record


def load_checkpoint(group, kind: str):
    """``(state, arrays)`` of the newest valid checkpoint of ``kind`` in ``group``; ValueError when there is none."""
    group = _open_group(group, "r")
    header = dict(group.attrs).get("streamcausal")
    if not isinstance(header, dict) or header.get("kind") != kind:
        raise ValueError(f"group must hold a saved {kind}, got attributes streamcausal={describe(header)}")
    if header.get("schema_version", 0) > SCHEMA_VERSION:
        raise ValueError(f"group holds a {kind} of schema {header['schema_version']}; this version reads "
                         f"schema {SCHEMA_VERSION} (upgrade streamcausal)")
    newest = _newest(group, kind)
    if newest is None:
        raise ValueError(f"group holds no valid {kind} checkpoint (every slot is missing or fails its checksum)")
    return newest[1], newest[2]


# --------------------------------------------------------------------------- the trial estimate


class _Held:
    """Frames held for open trials: float64 rows ``start .. start + len - 1`` (local frame numbers), with times."""

    def __init__(self, rows, bad, times, start, dropped_time=-np.inf):
        self.rows, self.bad, self.times, self.start = rows, bad, times, start
        self.dropped_time = dropped_time  # time of the last frame before these (timestamps only)

    @property
    def stop(self) -> int:
        return self.start + self.rows.shape[0]

    def then(self, rows, bad, times) -> _Held:
        """These frames followed by the next ones (a new object; this one is left as it is)."""
        joined_times = None if self.times is None else np.concatenate([self.times, times])
        return _Held(np.concatenate([self.rows, rows]), np.concatenate([self.bad, bad]), joined_times, self.start,
                     self.dropped_time)

    def since(self, frame: int) -> _Held:
        """The frames from ``frame`` on."""
        cut = max(0, frame - self.start)
        dropped_time = self.dropped_time if cut == 0 or self.times is None else float(self.times[cut - 1])
        return _Held(self.rows[cut:], self.bad[cut:], None if self.times is None else self.times[cut:],
                     self.start + cut, dropped_time)

    def until(self, frame: int) -> _Held:
        """The frames before ``frame``."""
        cut = max(0, frame - self.start)
        return _Held(self.rows[:cut], self.bad[:cut], None if self.times is None else self.times[:cut], self.start,
                     self.dropped_time)


class OnlineTrialEstimator:
    """The trial estimate of :func:`~streamcausal.estimate_trials`, fed frames and trials in pieces.

    Frames (rows of activity) arrive in pieces with their times (from ``rate``, or a
    ``times`` array per piece); trials are announced as they happen, before their
    windows are complete. A trial is folded in once every frame of its window (and
    baseline) has arrived, in whatever pieces; until then only the frames that open
    trials need are held (plus ``history`` seconds for trials announced late).

    Parameters
    ----------
    rate : float, optional
        Frames per second: frame ``f`` is at ``starting_time + f / rate``. Without it,
        every piece brings its frame times (``times=``), strictly increasing.
    starting_time : float
        Time of frame 0 (with ``rate``).
    first_frame : int
        Number of this estimator's first frame in the recording (with ``rate``): an
        estimator started on the rows after another one's, for :meth:`merge`.
    window, baseline, method
        As in :func:`~streamcausal.estimate_trials`.
    history : float
        Seconds a trial may be announced after its onset (beyond what the window and
        baseline reach before the onset); a trial announced later than its held frames
        is refused.
    ids : array_like, shape (n,), optional
        Names of the neurons (sources and responders), carried into results.

    Notes
    -----
    :meth:`result` is :func:`~streamcausal.estimate_trials` on every frame and trial so
    far: a trial whose window runs past the frames so far counts as ``off_recording``
    (``parameters["pending_trials"]`` says how many of those are still open). A
    non-finite value in a frame that an announced trial covers refuses the piece (or
    the announcement) that brings it, even if that trial later turns out to run off
    the recording.

    Examples
    --------
    >>> import numpy as np
    >>> import streamcausal as sc
    >>> rng = np.random.default_rng(0)
    >>> onsets = np.arange(1.0, 99.0, 0.5)
    >>> targets = [[k % 3] if k % 4 else [] for k in range(onsets.size)]
    >>> activity = rng.normal(size=(1000, 3)) * 0.1
    >>> for onset, chosen in zip(onsets, targets):
    ...     activity[int(onset * 10):int(onset * 10) + 3, chosen] += 1.0
    >>> online = OnlineTrialEstimator(rate=10.0, window=(0, 0.3))
    >>> for start in range(0, 1000, 64):                  # frames and trials as they happen
    ...     now = (onsets >= start / 10) & (onsets < (start + 64) / 10)
    ...     online.update(activity[start:start + 64],
    ...                   trials=sc.Trials(onsets[now], [targets[k] for k in np.flatnonzero(now)]))
    >>> whole = sc.estimate_trials(activity, sc.Trials(onsets, targets), rate=10.0, window=(0, 0.3))
    >>> online.result().n_trials, bool(np.allclose(online.result().effect, whole.effect, atol=1e-12))
    (196, True)
    """

    def __init__(self, *, rate=None, starting_time=0.0, first_frame=0, window=(0.0, 1.0), baseline=None,
                 method="regression", history=0.0, ids=None):
        from .io.responses import METHODS

        if rate is not None:
            rate = check_real(rate, "rate")
            if rate <= 0:
                raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self.starting_time = check_real(starting_time, "starting_time")
        self.first_frame = check_int(first_frame, "first_frame", minimum=0)
        self.window = check_interval(window, "window")
        self.baseline = check_interval(baseline, "baseline", optional=True)
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.history = check_real(history, "history")
        if self.history < 0:
            raise ValueError(f"history must be >= 0 seconds, got {self.history}")
        self.ids = None if ids is None else np.asarray(ids)
        if self.ids is not None and self.ids.ndim != 1:
            raise ValueError(f"ids must be 1-D (one per neuron), got shape {self.ids.shape}")
        parts = [self.window] + ([self.baseline] if self.baseline is not None else [])
        self._reach = max(0.0, -min(a for a, _ in parts))  # how far before its onset a trial reads
        self._span = max(b for _, b in parts) - min(a for a, _ in parts)  # a trial's whole extent
        self._moments = None  # TrialMoments once the first piece gives n
        self._rows = 0
        self._seconds = 0.0
        self._announced = 0
        self._dropped = {"off_recording": 0, "empty_window": 0, "empty_baseline": 0}
        self._pending = ([], [])  # (onsets, targets) of trials still open
        self._early = ([], [])  # trials that start before this estimator's first frame (kept for merge)
        self._held = None  # _Held frames for open trials and late announcements
        self._head = None  # _Held first frames (a trial's span), for a merge with an earlier estimator
        self._last_times = np.empty(0)  # times of the last two frames
        self._first_time = None

    # ------------------------------------------------------------------ properties

    @property
    def rows(self) -> int:
        """Frames consumed so far."""
        return self._rows

    @property
    def n_trials(self) -> int:
        """Trials folded in (complete windows)."""
        return 0 if self._moments is None else int(self._moments.count)

    @property
    def pending_trials(self) -> int:
        """Announced trials whose window (or baseline) has not fully arrived."""
        return len(self._pending[0])

    # ------------------------------------------------------------------ frame clock

    def _clock(self, rows, last_times, first_time):
        return {"rows": rows, "last_times": last_times, "first": first_time}

    def _first(self, clock):
        if self.rate is not None:
            return self.starting_time + self.first_frame / self.rate
        return clock["first"]

    def _bounds_final_end(self, clock):
        """``(final, end)``: bounds up to ``final`` have their frames for good; the recording so far ends at ``end``."""
        rows = clock["rows"]
        if self.rate is not None:
            end = self.starting_time + (self.first_frame + rows) / self.rate
            return end, end
        last = clock["last_times"]
        period = float(last[-1] - last[-2]) if last.shape[0] >= 2 else 0.0
        return float(last[-1]), float(last[-1]) + period

    def _frames_at(self, bounds, clock, held):
        """Local frame of each bound (first frame at or after it, ``rows`` if none); -1 where no longer known."""
        from .io.responses import _FrameClock

        rows = clock["rows"]
        if self.rate is not None:
            total = self.first_frame + rows
            frames = _FrameClock(total, self.rate, None, self.starting_time, 1).frames_at(bounds.ravel())
            return np.maximum(frames.reshape(bounds.shape) - self.first_frame, 0)
        frames = held.start + np.searchsorted(held.times, bounds.ravel(), side="left").reshape(bounds.shape)
        return np.where(bounds > held.dropped_time, frames, -1)

    def _last_time(self, clock) -> float:
        if self.rate is not None:
            return self.starting_time + (self.first_frame + clock["rows"] - 1) / self.rate
        return float(clock["last_times"][-1])

    # ------------------------------------------------------------------ updates

    def update(self, activity, times=None, trials=None) -> None:
        """Fold in the next frames, and announce trials.

        Parameters
        ----------
        activity : array, shape (k, n)
            The next ``k`` frames (``k`` may be 0, to announce trials only).
        times : array, shape (k,), optional
            Their times in seconds, strictly increasing after the previous frames;
            exactly when the estimator has no ``rate``.
        trials : Trials, optional
            Trials announced with this piece (any onsets: past, present or future);
            targets index the columns of ``activity``.

        Raises
        ------
        TypeError, ValueError
            A bad piece, bad times, bad trials, a trial announced after its frames were
            let go, a non-finite value in a frame an announced trial covers. The
            estimator is then unchanged.
        """
        began = time.perf_counter()
        rows, bad, times = self._check_frames(activity, times)
        k, n = rows.shape
        onsets, targets = self._check_trials(trials, n)
        held = (self._held if self._held is not None else self._empty(n)).then(rows, bad, times)
        clock = self._clock(self._rows + k, np.concatenate([self._last_times, times if times is not None else []])[-2:],
                            self._first_time if self._first_time is not None or times is None or k == 0 else times[0])
        pending = (self._pending[0] + onsets, self._pending[1] + targets)

        def locate(frame, column):
            if frame >= self._rows:
                return f"activity[{frame - self._rows}, {column}] of this piece (frame {frame})"
            return f"column {column} of frame {frame}, of an earlier piece"

        outcome = self._resolve(pending, clock, held, locate)
        # Every check passed: commit.
        if self._moments is None:
            from .moments.trials import TrialMoments

            self._moments = TrialMoments(n, n, same_neurons=True)
        self._fold(outcome)
        self._announced += len(onsets)
        self._early = (self._early[0] + outcome["early"][0], self._early[1] + outcome["early"][1])
        self._pending = outcome["pending"]
        if self._head is None or self._head.stop == self._rows:  # the head is still every frame so far
            head = (self._head if self._head is not None else self._empty(n)).then(rows, bad, times)
            self._head = head.until(self._head_stop(clock, head))
        self._rows = clock["rows"]
        self._last_times, self._first_time = clock["last_times"], clock["first"]
        self._held = self._trim(held, clock, outcome["pending"])
        self._seconds += time.perf_counter() - began

    def _empty(self, n) -> _Held:
        return _Held(np.empty((0, n)), np.zeros(0, dtype=bool), None if self.rate is not None else np.empty(0), 0)

    def _head_stop(self, clock, frames) -> int:
        """End of the head: the first frame a trial's span after the first frame (``frames`` holds every frame so far)."""
        if clock["rows"] == 0:
            return 0
        # one frame past the span, so that a trial begun before the first frame ends inside the head
        stop = int(self._frames_at(np.array([self._first(clock) + self._span]), clock, frames)[0]) + 1
        return min(stop, clock["rows"])

    def _check_frames(self, activity, times):
        activity = as_numeric_array(activity, "activity")
        if activity.ndim != 2:
            raise ValueError(f"activity must be 2-D (k, n), time-major (a row per frame), got shape {activity.shape}")
        k, n = activity.shape
        if n == 0:
            raise ValueError(f"activity must have at least one neuron (column), got shape {activity.shape}")
        if self._moments is not None and n != self._moments.n_responders:
            raise ValueError(f"activity must have {self._moments.n_responders} columns, as the frames before it, "
                             f"got shape {activity.shape}")
        if self.ids is not None and self.ids.shape[0] != n:
            raise ValueError(f"activity must have one column per id ({self.ids.shape[0]}), got shape {activity.shape}")
        rows = np.asarray(activity, dtype=np.float64)
        bad = ~np.isfinite(rows).all(axis=1) if k else np.zeros(0, dtype=bool)
        if self.rate is not None:
            if times is not None:
                raise ValueError(f"times must be None: the estimator has rate={self.rate:g}, got {describe(times)}")
            return rows, bad, None
        if times is None:
            raise ValueError("times must be given with every piece (the estimator has no rate), got None")
        times = as_numeric_array(times, "times").astype(np.float64)
        if times.shape != (k,):
            raise ValueError(f"times must have one time per row of activity ({k}), got shape {times.shape}")
        if k:
            if not np.all(np.isfinite(times)):
                j = int(np.argmax(~np.isfinite(times)))
                raise ValueError(f"times must be finite, got {times[j]} at times[{j}]")
            previous = self._last_times[-1] if self._last_times.shape[0] else -np.inf
            steps = np.diff(np.concatenate([[previous], times]))
            if np.any(steps <= 0):
                j = int(np.argmax(steps <= 0))
                before = previous if j == 0 else times[j - 1]
                raise ValueError(f"times must be strictly increasing, got times[{j}]={times[j]} after {before}")
        return rows, bad, times

    def _check_trials(self, trials, n):
        if trials is None:
            return [], []
        if not isinstance(trials, Trials):
            raise TypeError(f"trials must be a Trials or None, got {describe(trials)}")
        trials = trials.bound_to(n)
        return [float(t) for t in trials.onsets], [trials.targets_of(k).copy() for k in range(trials.n_trials)]

    def _resolve(self, pending, clock, held, locate) -> dict:
        """Sort announced trials into folded (with their responses), dropped, early and still open."""
        onsets, targets = pending
        out = {"responses": [], "targets": [], "dropped": dict.fromkeys(self._dropped, 0), "early": ([], []),
               "pending": ([], [])}
        if not onsets:
            return out
        if clock["rows"] == 0:
            out["pending"] = (list(onsets), list(targets))
            return out
        parts = [self.window] + ([self.baseline] if self.baseline is not None else [])
        onset_array = np.asarray(onsets, dtype=np.float64)
        bounds = np.stack([np.stack([onset_array + a, onset_array + b], axis=-1) for a, b in parts], axis=1)
        first = self._first(clock)
        final_bound, _ = self._bounds_final_end(clock)
        early = np.any(bounds[..., 0] < first, axis=1)
        final = ~early & np.all(bounds[..., 1] <= final_bound, axis=1)
        frames = self._frames_at(bounds, clock, held)
        starts = np.where(early, held.start, frames[..., 0].min(axis=1))
        gone = ~early & (starts < held.start)
        if gone.any():
            j = int(np.argmax(gone))
            raise ValueError(
                f"trials: the trial at onset {onsets[j]:g} s needs frames from {bounds[j, :, 0].min():g} s, which are "
                f"no longer held; announce trials by their onset, or make the estimator with a larger history= "
                f"(now {self.history:g} s)"
            )
        bad_before = np.concatenate([[0], np.cumsum(held.bad)])
        for j in range(len(onsets)):
            if early[j]:
                out["early"][0].append(onsets[j])
                out["early"][1].append(targets[j])
                continue
            ranges = [(max(a, held.start), min(b, held.stop)) for a, b in frames[j]]
            for a, b in ranges:  # a non-finite frame in an announced trial's window
                if b > a and bad_before[b - held.start] > bad_before[a - held.start]:
                    frame = a + int(np.argmax(held.bad[a - held.start : b - held.start]))
                    column = int(np.argmax(~np.isfinite(held.rows[frame - held.start])))
                    raise ValueError(
                        f"activity must be finite in the trials' windows, got {held.rows[frame - held.start, column]} "
                        f"at {locate(frame, column)}, in the window of the trial at onset "
                        f"{onsets[j]:g} s"
                    )
            if not final[j]:
                out["pending"][0].append(onsets[j])
                out["pending"][1].append(targets[j])
                continue
            empty = [b <= a for a, b in frames[j]]
            if empty[0]:
                out["dropped"]["empty_window"] += 1
            elif len(empty) == 2 and empty[1]:
                out["dropped"]["empty_baseline"] += 1
            else:
                out["responses"].append(self._response(frames[j], held))
                out["targets"].append(targets[j])
        return out

    @staticmethod
    def _response(frames, held):
        from .io.responses import _mean_rows

        means = [_mean_rows([held.rows[a - held.start : b - held.start]]) for a, b in frames]
        return means[0] - means[1] if len(means) == 2 else means[0]

    def _fold(self, outcome, moments=None) -> None:
        moments = self._moments if moments is None else moments
        for reason, count in outcome["dropped"].items():
            if moments is self._moments:
                self._dropped[reason] += count
        if outcome["responses"]:
            chosen = outcome["targets"]
            indptr = np.zeros(len(chosen) + 1, dtype=np.int64)
            np.cumsum([t.size for t in chosen], out=indptr[1:])
            indices = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
            moments.update_targets(indptr, indices, np.stack(outcome["responses"]))

    def _trim(self, held, clock, pending) -> _Held:
        """Let go of the frames no open trial, and no trial announced within ``history``, can need."""
        if clock["rows"] == 0:
            return held
        oldest = self._last_time(clock) - self._reach - self.history
        if pending[0]:
            parts = [self.window] + ([self.baseline] if self.baseline is not None else [])
            oldest = min(oldest, min(pending[0]) + min(a for a, _ in parts))
        keep_from = int(self._frames_at(np.array([oldest]), clock, held)[0])
        if keep_from <= held.start:  # nothing to let go (or already older than what is held)
            return held
        return held.since(min(keep_from, clock["rows"]))

    # ------------------------------------------------------------------ results

    def result(self):
        """The current :class:`~streamcausal.io.responses.TrialResult`: ``estimate_trials`` on every frame and trial so far."""
        from .io.responses import TrialResult

        if self._moments is None:
            raise ValueError("OnlineTrialEstimator has no frames yet: call update() with a first piece before result()")
        n = self._moments.n_responders
        clock = self._clock(self._rows, self._last_times, self._first_time)
        moments, dropped = self._moments.merge(self._moments.__class__(n, n, same_neurons=True)), dict(self._dropped)
        dropped["off_recording"] += len(self._early[0])
        if self._pending[0]:
            # As estimate_trials on the frames so far: open trials inside them are folded, the others run off.
            onsets = np.asarray(self._pending[0])
            parts = [self.window] + ([self.baseline] if self.baseline is not None else [])
            _, end = self._bounds_final_end(clock)
            inside = np.all(np.stack([onsets + b for _, b in parts], axis=1) <= end, axis=1)
            dropped["off_recording"] += int((~inside).sum())
            if inside.any():
                held = self._held
                frames = self._frames_at(np.stack([np.stack([onsets[inside] + a, onsets[inside] + b], axis=-1)
                                                    for a, b in parts], axis=1), clock, held)
                outcome = {"responses": [], "targets": []}
                chosen = [self._pending[1][j] for j in np.flatnonzero(inside)]
                for j, ranges in enumerate(frames):
                    empty = [b <= a for a, b in ranges]
                    if empty[0]:
                        dropped["empty_window"] += 1
                    elif len(empty) == 2 and empty[1]:
                        dropped["empty_baseline"] += 1
                    else:
                        outcome["responses"].append(self._response(ranges, held))
                        outcome["targets"].append(chosen[j])
                self._fold({"dropped": {}, **outcome}, moments)
        parameters = {
            "source": "online",
            "window": list(self.window),
            "baseline": None if self.baseline is None else list(self.baseline),
            "method": self.method,
            "timing": f"rate {self.rate:g} Hz from {self.starting_time:g} s" if self.rate is not None else "timestamps",
            "n_trials_given": self._announced,
            "pending_trials": len(self._pending[0]),
        }
        ids = self.ids if self.ids is not None else np.arange(n)
        return TrialResult(moments, self.method, sum(dropped.values()), dropped, ids.copy(), ids.copy(), self._rows,
                           self._seconds, parameters)

    # ------------------------------------------------------------------ merging

    def _settings(self) -> dict:
        return {"rate": self.rate, "starting_time": self.starting_time, "window": list(self.window),
                "baseline": None if self.baseline is None else list(self.baseline), "method": self.method,
                "history": self.history}

    def merge(self, later: OnlineTrialEstimator) -> OnlineTrialEstimator:
        """A new estimator of both parts: this one fed the first frames, ``later`` (started fresh) the next ones.

        ``later`` must have the same settings and, with ``rate``, ``first_frame`` equal
        to this one's ``first_frame + rows``. Exact: trials open at the cut (announced
        to this one) are finished with ``later``'s first frames, and trials announced to
        ``later`` that begin before its first frame with this one's last frames. A
        trial announced to this one that lies wholly in ``later``'s frames cannot be
        merged (ValueError): announce a trial to the estimator that gets its first frame.
        Neither side changes.
        """
        if not isinstance(later, OnlineTrialEstimator):
            raise TypeError(f"later must be an OnlineTrialEstimator, got {describe(later)}")
        mine, theirs = self._settings(), later._settings()
        if mine != theirs:
            different = [name for name in mine if mine[name] != theirs[name]]
            raise ValueError(f"later must have the same settings, got {different} = "
                             f"{[theirs[name] for name in different]} against {[mine[name] for name in different]}")
        if self.rate is not None and later.first_frame != self.first_frame + self._rows:
            raise ValueError(f"later must start at frame {self.first_frame + self._rows} (first_frame), "
                             f"got first_frame={later.first_frame}")
        if (self.rate is None and self._rows and later._rows
                and later._first_time <= float(self._last_times[-1])):
            raise ValueError(f"later's frames must come after this one's, got a first time {later._first_time} "
                             f"<= {float(self._last_times[-1])}")
        widths = {e._moments.n_responders for e in (self, later) if e._moments is not None}
        if len(widths) > 1:
            raise ValueError(f"later must have the same number of neurons, got {sorted(widths)}")
        ids = [e.ids for e in (self, later) if e.ids is not None]
        if len(ids) == 2 and not np.array_equal(ids[0], ids[1]):
            raise ValueError("later must have the same ids")
        merged = OnlineTrialEstimator(**{**mine, "window": self.window, "baseline": self.baseline},
                                      first_frame=self.first_frame, ids=ids[0] if ids else None)
        merged._announced = self._announced + later._announced
        merged._seconds = self._seconds + later._seconds
        if not widths:  # no frame on either side: only trials announced
            merged._pending = (self._pending[0] + later._pending[0], self._pending[1] + later._pending[1])
            return merged
        n = widths.pop()
        a = self._rows
        mine_held = self._held if self._held is not None else self._empty(n)
        later_head = later._head if later._head is not None else later._empty(n)
        later_held = later._held if later._held is not None else later._empty(n)
        near = mine_held.then(later_head.rows, later_head.bad, later_head.times)  # frames about the cut
        contiguous = later_held.start <= later_head.stop
        if contiguous:
            rest = later_held.since(later_head.stop)
            frames = near.then(rest.rows, rest.bad, rest.times)
            rows = a + later._rows
        else:
            frames, rows = near, a + later_head.stop
        last_times = np.concatenate([self._last_times, later._last_times])[-2:]
        if not contiguous and self.rate is None:
            last_times = np.concatenate([self._last_times, later_head.times])[-2:]
        first_time = self._first_time if self._first_time is not None else later._first_time
        clock = merged._clock(rows, last_times, first_time)

        def locate(frame, column):
            return f"column {column} of frame {frame} (frame {frame - a} of the later estimator)"

        candidates = (self._pending[0] + later._early[0], self._pending[1] + later._early[1])
        outcome = merged._resolve(candidates, clock, frames, locate)
        if not contiguous and outcome["pending"][0]:
            raise ValueError(
                f"later: the trial at onset {outcome['pending'][0][0]:g} s, announced to the earlier estimator, needs "
                "frames the later one no longer holds; announce trials to the estimator that gets their first frame"
            )
        from .moments.trials import TrialMoments

        merged._moments = TrialMoments(n, n, same_neurons=True)
        for part in (self._moments, later._moments):
            if part is not None:
                merged._moments += part
        merged._fold(outcome)
        for reason in merged._dropped:
            merged._dropped[reason] += self._dropped[reason] + later._dropped[reason]
        merged._early = (self._early[0] + outcome["early"][0], self._early[1] + outcome["early"][1])
        pending = (outcome["pending"][0] + later._pending[0], outcome["pending"][1] + later._pending[1])
        merged._pending = pending
        merged._rows = a + later._rows
        merged._last_times = np.concatenate([self._last_times, later._last_times])[-2:]
        merged._first_time = first_time
        full_clock = merged._clock(merged._rows, merged._last_times, first_time)
        if not contiguous:  # later's held frames, in the merged numbering
            frames = _Held(later_held.rows, later_held.bad, later_held.times, later_held.start + a,
                           later_held.dropped_time)
        merged._held = merged._trim(frames, full_clock, pending)
        mine_head = self._head if self._head is not None else self._empty(n)
        if mine_head.stop == a:  # this side's frames are all head: the head goes on into later's
            head = mine_head.then(later_head.rows, later_head.bad, later_head.times)
            merged._head = head.until(merged._head_stop(full_clock, head))
        else:
            merged._head = mine_head
        return merged

    # ------------------------------------------------------------------ checkpoints

    def save(self, group) -> None:
        """Write the state into ``group`` as an atomic checkpoint (as :meth:`OnlineEstimator.save`)."""
        state = {**self._settings(), "first_frame": self.first_frame, "rows": self._rows, "seconds": self._seconds,
                 "announced": self._announced, "dropped": dict(self._dropped),
                 "ids": None if self.ids is None else self.ids.tolist(), "first_time": self._first_time,
                 "n": None if self._moments is None else self._moments.n_responders}
        arrays = {"last_times": self._last_times}
        for name, (onsets, targets) in (("pending", self._pending), ("early", self._early)):
            arrays[f"{name}_onsets"] = np.asarray(onsets, dtype=np.float64)
            arrays[f"{name}_indptr"] = np.concatenate([[0], np.cumsum([len(t) for t in targets])]).astype(np.int64)
            arrays[f"{name}_indices"] = (np.concatenate(targets) if targets else np.empty(0)).astype(np.int64)
        if self._moments is not None:
            arrays.update({f"moments_{k}": v for k, v in self._moments.state_arrays().items()})
            for name, frames in (("held", self._held), ("head", self._head)):
                arrays.update({f"{name}_rows": frames.rows, f"{name}_bad": frames.bad,
                               f"{name}_where": np.array([frames.start, frames.dropped_time])})
                if frames.times is not None:
                    arrays[f"{name}_times"] = frames.times
        save_checkpoint(group, "online_trial_estimator", state, arrays)

    @classmethod
    def load(cls, group) -> OnlineTrialEstimator:
        """The estimator saved in ``group``: its newest valid checkpoint."""
        from .moments.trials import TrialMoments

        state, arrays = load_checkpoint(group, "online_trial_estimator")
        try:
            self = cls(rate=state["rate"], starting_time=state["starting_time"], first_frame=state["first_frame"],
                       window=tuple(state["window"]),
                       baseline=None if state["baseline"] is None else tuple(state["baseline"]),
                       method=state["method"], history=state["history"], ids=state["ids"])
            self._rows, self._seconds, self._announced = int(state["rows"]), float(state["seconds"]), int(state["announced"])
            self._dropped = {k: int(v) for k, v in state["dropped"].items()}
            self._first_time = state["first_time"]
            self._last_times = np.asarray(arrays["last_times"], dtype=np.float64)
            for name in ("pending", "early"):
                onsets, indptr = arrays[f"{name}_onsets"], arrays[f"{name}_indptr"]
                indices = np.asarray(arrays[f"{name}_indices"], dtype=np.int64)
                setattr(self, f"_{name}", ([float(t) for t in onsets],
                                           [indices[indptr[k] : indptr[k + 1]].copy() for k in range(len(onsets))]))
            if state["n"] is not None:
                moments = {k[len("moments_"):]: v for k, v in arrays.items() if k.startswith("moments_")}
                self._moments = TrialMoments.from_state_arrays(moments, same_neurons=True)
                for name in ("held", "head"):
                    start, dropped_time = arrays[f"{name}_where"]
                    times = arrays.get(f"{name}_times")
                    setattr(self, f"_{name}", _Held(np.asarray(arrays[f"{name}_rows"], dtype=np.float64),
                                                    np.asarray(arrays[f"{name}_bad"], dtype=bool),
                                                    None if times is None else np.asarray(times, dtype=np.float64),
                                                    int(start), float(dropped_time)))
        except (KeyError, TypeError) as error:
            raise ValueError(f"group holds a malformed OnlineTrialEstimator checkpoint: {error}") from error
        return self

    def __repr__(self) -> str:
        return (f"OnlineTrialEstimator(method={self.method!r}, rows={self._rows}, n_trials={self.n_trials}, "
                f"pending_trials={self.pending_trials})")
