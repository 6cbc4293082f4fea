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

from ._validation import as_numeric_array, check_flag, check_int, describe
from .io.recording import _BATCH_VALUES, _as_range, _gather, _nonfinite_rows
from .moments import CrossMoments, block_size, chunk_moments
from .result import Result

__all__ = ["OnlineEstimator"]

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
        if k < per_block:  # under one block the parallel kernel's start-up costs more than the NumPy two-pass
            total.update(inputs, outputs)
        else:
            total += chunk_moments(inputs, outputs, per_block, overwrite=True)
    return total, dropped


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
