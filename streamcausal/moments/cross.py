"""Mergeable accumulator of paired-sample cross-moments.

:class:`CrossMoments` holds the count, means, centred sums of squares and the centred
co-moment of paired samples (input ``u``, output ``v``). Each batch is reduced with a
two-pass (centred) computation and folded in with the Chan–Golub–LeVeque pairwise
formulas, so merging is exact up to rounding, associative, and stable for data with a
large offset; raw sums of squares are never accumulated. Every matrix it returns has
``A``'s orientation, ``[target, source]`` = ``[output j, input i]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._validation import check_float_array, check_int, describe

__all__ = ["CrossMoments"]

_ARRAY_KEYS = ("count", "mean_in", "mean_out", "m2_in", "m2_out", "comoment")
_MERGE_BLOCK_VALUES = 2**18  # entries of the outer-product term made at a time by a merge (2 MiB)


def _batch_moments(inputs: np.ndarray, outputs: np.ndarray):
    """Two-pass moments of one non-empty batch: (count, mean_in, mean_out, m2_in, m2_out, comoment)."""
    count = inputs.shape[0]
    mean_in = inputs.mean(axis=0)
    mean_out = outputs.mean(axis=0)
    # A constant column's mean is its value exactly (np.mean may be off by an ulp), so its
    # centred values, sums of squares and co-moments are exactly zero.
    const_in = np.all(inputs == inputs[0], axis=0)
    const_out = np.all(outputs == outputs[0], axis=0)
    mean_in[const_in] = inputs[0, const_in]
    mean_out[const_out] = outputs[0, const_out]
    centred_in = inputs - mean_in
    centred_out = outputs - mean_out
    m2_in = np.einsum("ki,ki->i", centred_in, centred_in)
    m2_out = np.einsum("kj,kj->j", centred_out, centred_out)
    comoment = centred_out.T @ centred_in
    return count, mean_in, mean_out, m2_in, m2_out, comoment


class CrossMoments:
    """Streaming, mergeable cross-moments of paired samples ``(u, v)``.

    ``u`` (the input, e.g. the stimulation of each source neuron) has ``n_inputs``
    entries and ``v`` (the output, e.g. the next activity of each target neuron) has
    ``n_outputs``. Estimators return ``(n_outputs, n_inputs)`` matrices in ``A``'s
    orientation, ``[target j, source i]``, so that ``estimate ~ A``.

    Parameters
    ----------
    n_inputs : int
        Length of each input sample, ``>= 1``.
    n_outputs : int
        Length of each output sample, ``>= 1``.

    Attributes
    ----------
    count : int
        Number of samples folded in.
    mean_in : ndarray, shape (n_inputs,)
        Mean of each input.
    mean_out : ndarray, shape (n_outputs,)
        Mean of each output.
    m2_in : ndarray, shape (n_inputs,)
        Centred sums of squares ``sum_t (u_ti - mean_in_i) ** 2``.
    m2_out : ndarray, shape (n_outputs,)
        Centred sums of squares of the outputs.
    comoment : ndarray, shape (n_outputs, n_inputs)
        ``comoment[j, i] = sum_t (v_tj - mean_out_j) (u_ti - mean_in_i)``, ``[target, source]``.

    Examples
    --------
    >>> import numpy as np
    >>> u, v = np.random.default_rng(0).normal(size=(2, 100, 3))
    >>> whole = CrossMoments(3, 3).update(u, v)
    >>> parts = CrossMoments(3, 3).update(u[:40], v[:40]) + CrossMoments(3, 3).update(u[40:], v[40:])
    >>> bool(np.allclose(whole.correlation(), parts.correlation()))
    True
    """

    __slots__ = ("n_inputs", "n_outputs", "count", "mean_in", "mean_out", "m2_in", "m2_out", "comoment")

    def __init__(self, n_inputs, n_outputs):
        self.n_inputs = check_int(n_inputs, "n_inputs", minimum=1)
        self.n_outputs = check_int(n_outputs, "n_outputs", minimum=1)
        self.count = 0
        self.mean_in = np.zeros(self.n_inputs)
        self.mean_out = np.zeros(self.n_outputs)
        self.m2_in = np.zeros(self.n_inputs)
        self.m2_out = np.zeros(self.n_outputs)
        self.comoment = np.zeros((self.n_outputs, self.n_inputs))

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_parts(cls, count, mean_in, mean_out, m2_in, m2_out, comoment, *, validate=True) -> CrossMoments:
        """Build an accumulator directly from its moments (copied, as float64).

        Parameters
        ----------
        count : int
            Number of samples, ``>= 0`` (a 0-d or one-element integer array is accepted).
        mean_in : array_like, shape (n_inputs,)
        mean_out : array_like, shape (n_outputs,)
        m2_in : array_like, shape (n_inputs,)
            Centred sums of squares, ``>= 0``.
        m2_out : array_like, shape (n_outputs,)
            Centred sums of squares, ``>= 0``.
        comoment : array_like, shape (n_outputs, n_inputs)
            Centred co-moment, ``[target, source]``.

        With ``count == 0`` every array must be zero; with ``count == 1`` the sums of
        squares and the co-moment must be zero.

        ``validate=False`` is for parts that are valid by construction (float64,
        C-contiguous, right shapes, as the chunk reduction makes them): they are taken
        as they are, without checks or copies.
        """
        if not validate:
            self = cls.__new__(cls)
            self.n_inputs, self.n_outputs = mean_in.shape[0], mean_out.shape[0]
            self._set(count, mean_in, mean_out, m2_in, m2_out, comoment)
            return self
        if isinstance(count, np.ndarray):  # a 0-d or one-element array, as stored
            if count.size != 1 or count.ndim > 1:
                raise ValueError(f"count must be a single integer, got shape {count.shape}")
            count = count.reshape(()).item()
        count = check_int(count, "count", minimum=0)
        mean_in = check_float_array(mean_in, "mean_in", None, 1)
        mean_out = check_float_array(mean_out, "mean_out", None, 1)
        n_inputs, n_outputs = mean_in.shape[0], mean_out.shape[0]
        if n_inputs == 0:
            raise ValueError(f"mean_in must not be empty, got shape {mean_in.shape}")
        if n_outputs == 0:
            raise ValueError(f"mean_out must not be empty, got shape {mean_out.shape}")
        m2_in = check_float_array(m2_in, "m2_in", (n_inputs,), 1)
        m2_out = check_float_array(m2_out, "m2_out", (n_outputs,), 1)
        comoment = check_float_array(comoment, "comoment", (n_outputs, n_inputs), 2)
        for name, m2 in (("m2_in", m2_in), ("m2_out", m2_out)):
            if np.any(m2 < 0):
                k = int(np.argmax(m2 < 0))
                raise ValueError(f"{name} must be >= 0, got {m2[k]} at {name}[{k}]")
        if count <= 1:
            parts = {"m2_in": m2_in, "m2_out": m2_out, "comoment": comoment}
            if count == 0:
                parts.update(mean_in=mean_in, mean_out=mean_out)
            for name, array in parts.items():
                if np.any(array != 0):
                    raise ValueError(f"{name} must be all zero when count is {count}, got {describe(array)}")
        _check_cauchy_schwarz(m2_in, m2_out, comoment)
        self = cls(n_inputs, n_outputs)
        self._set(count, mean_in.copy(), mean_out.copy(), m2_in.copy(), m2_out.copy(), comoment.copy())
        return self

    @classmethod
    def from_arrays(cls, arrays: Mapping) -> CrossMoments:
        """Inverse of :meth:`to_arrays`: rebuild from any mapping holding its six keys.

        The values may be NumPy arrays, Zarr arrays or anything ``np.asarray`` accepts;
        ``count`` may be a 0-d (or one-element) integer array.
        """
        if not isinstance(arrays, Mapping):
            raise TypeError(
                f"arrays must be a mapping with keys {list(_ARRAY_KEYS)}, got {describe(arrays)}"
            )
        missing = [key for key in _ARRAY_KEYS if key not in arrays]
        if missing:
            raise ValueError(f"arrays is missing key(s) {missing}; it has {sorted(map(str, arrays))}")
        return cls.from_parts(
            np.asarray(arrays["count"]),
            np.asarray(arrays["mean_in"]),
            np.asarray(arrays["mean_out"]),
            np.asarray(arrays["m2_in"]),
            np.asarray(arrays["m2_out"]),
            np.asarray(arrays["comoment"]),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain NumPy copies of the state: ``count`` (0-d int64) and the five float64 arrays."""
        return {
            "count": np.array(self.count, dtype=np.int64),
            "mean_in": self.mean_in.copy(),
            "mean_out": self.mean_out.copy(),
            "m2_in": self.m2_in.copy(),
            "m2_out": self.m2_out.copy(),
            "comoment": self.comoment.copy(),
        }

    def copy(self) -> CrossMoments:
        """An independent copy, bit for bit."""
        new = CrossMoments(self.n_inputs, self.n_outputs)
        new._set(
            self.count,
            self.mean_in.copy(),
            self.mean_out.copy(),
            self.m2_in.copy(),
            self.m2_out.copy(),
            self.comoment.copy(),
        )
        return new

    def _set(self, count, mean_in, mean_out, m2_in, m2_out, comoment) -> None:
        self.count = int(count)
        self.mean_in = mean_in
        self.mean_out = mean_out
        self.m2_in = m2_in
        self.m2_out = m2_out
        self.comoment = comoment

    # ------------------------------------------------------------------ accumulation

    def update(self, inputs, outputs) -> CrossMoments:
        """Fold in a batch of paired samples, in place.

        Parameters
        ----------
        inputs : array_like, shape (k, n_inputs)
            Time-major input samples (bool or real numbers, finite).
        outputs : array_like, shape (k, n_outputs)
            The paired output samples; ``k`` may be 0 (nothing changes).

        Returns
        -------
        self : CrossMoments
        """
        inputs = check_float_array(inputs, "inputs", None, 2)
        outputs = check_float_array(outputs, "outputs", None, 2)
        if inputs.shape[1] != self.n_inputs:
            raise ValueError(f"inputs must have shape (k, {self.n_inputs}), got shape {inputs.shape}")
        if outputs.shape[1] != self.n_outputs:
            raise ValueError(f"outputs must have shape (k, {self.n_outputs}), got shape {outputs.shape}")
        if inputs.shape[0] != outputs.shape[0]:
            raise ValueError(
                f"inputs and outputs must have the same number of samples, "
                f"got inputs shape {inputs.shape} and outputs shape {outputs.shape}"
            )
        if inputs.shape[0] == 0:
            return self
        self._set(*self._merged(self._parts(), _batch_moments(inputs, outputs)))
        return self

    def merge(self, other: CrossMoments) -> CrossMoments:
        """Return a new accumulator holding the samples of both (Chan–Golub–LeVeque).

        An empty side is an exact identity: the result is then a bit-exact copy of the
        other side. Besides the result, it allocates no ``(n_outputs, n_inputs)`` array.
        """
        self._check_compatible(other)
        result = CrossMoments(self.n_inputs, self.n_outputs)
        result._set(*self._merged(self._parts(), other._parts()))
        return result

    def __add__(self, other: CrossMoments) -> CrossMoments:
        return self.merge(other)

    def __iadd__(self, other: CrossMoments) -> CrossMoments:
        """Merge ``other`` in place: the co-moment is updated where it is (no new ``n x n`` array).

        The same bits as :meth:`merge`; arrays taken from this accumulator earlier change too.
        """
        self._check_compatible(other)
        self._set(*self._merged(self._parts(), other._parts(), in_place=True))
        return self

    def _check_compatible(self, other) -> None:
        if not isinstance(other, CrossMoments):
            raise TypeError(f"other must be a CrossMoments, got {describe(other)} ({type(other).__name__})")
        if (other.n_inputs, other.n_outputs) != (self.n_inputs, self.n_outputs):
            raise ValueError(
                "other must have the same (n_inputs, n_outputs), got "
                f"({other.n_inputs}, {other.n_outputs}) vs ({self.n_inputs}, {self.n_outputs})"
            )

    def _parts(self):
        return self.count, self.mean_in, self.mean_out, self.m2_in, self.m2_out, self.comoment

    # The parallel kernels merge blocks in place with a Numba twin of this merge
    # (_kernels.moments._chan_merge). The two group additions differently
    # ((a + b) + c here, a + (b + c) there), so making one call the other would change
    # the bits of published results: keep both.
    @staticmethod
    def _merged(a, b, *, in_place=False):
        """Chan's pairwise combination of two parts tuples.

        Returns fresh arrays, or with ``in_place`` the co-moment of ``a`` updated in place
        (the vectors are fresh either way). The outer-product term is added a block of
        rows at a time, so no ``n x n`` temporary is made; each entry is still
        ``(com_a + com_b) + (delta_out_j * delta_in_i) * factor``, as in one expression.
        """
        na, mean_in_a, mean_out_a, m2_in_a, m2_out_a, com_a = a
        nb, mean_in_b, mean_out_b, m2_in_b, m2_out_b, com_b = b
        if nb == 0:
            if in_place:
                return a
            return na, mean_in_a.copy(), mean_out_a.copy(), m2_in_a.copy(), m2_out_a.copy(), com_a.copy()
        if na == 0:
            if in_place:
                np.copyto(com_a, com_b)
                return nb, mean_in_b.copy(), mean_out_b.copy(), m2_in_b.copy(), m2_out_b.copy(), com_a
            return nb, mean_in_b.copy(), mean_out_b.copy(), m2_in_b.copy(), m2_out_b.copy(), com_b.copy()
        n = na + nb
        weight_b = float(nb) / float(n)
        factor = float(na) * float(nb) / float(n)  # floating point: no integer overflow
        delta_in = mean_in_b - mean_in_a
        delta_out = mean_out_b - mean_out_a
        mean_in = mean_in_a + delta_in * weight_b
        mean_out = mean_out_a + delta_out * weight_b
        m2_in = m2_in_a + m2_in_b + delta_in * delta_in * factor
        m2_out = m2_out_a + m2_out_b + delta_out * delta_out * factor
        comoment = np.add(com_a, com_b, out=com_a if in_place else None)
        rows = max(1, _MERGE_BLOCK_VALUES // max(1, delta_in.shape[0]))
        term = np.empty((min(rows, delta_out.shape[0]), delta_in.shape[0]))
        for start in range(0, delta_out.shape[0], rows):
            block = term[: min(rows, delta_out.shape[0] - start)]
            np.multiply(delta_out[start:start + rows, None], delta_in[None, :], out=block)  # = np.outer's products
            block *= factor
            comoment[start:start + rows] += block
        return n, mean_in, mean_out, m2_in, m2_out, comoment

    # ------------------------------------------------------------------ estimators

    def constant_inputs(self) -> np.ndarray:
        """Boolean ``(n_inputs,)``: True for inputs that never varied (all True below 2 samples)."""
        return (self.m2_in == 0) | (self.count < 2)

    def constant_outputs(self) -> np.ndarray:
        """Boolean ``(n_outputs,)``: True for outputs that never varied (all True below 2 samples)."""
        return (self.m2_out == 0) | (self.count < 2)

    def undefined_edges(self) -> np.ndarray:
        """Boolean ``(n_outputs, n_inputs)``, ``[target, source]``: True where :meth:`correlation` is NaN."""
        return self.constant_outputs()[:, None] | self.constant_inputs()[None, :]

    def covariance(self) -> np.ndarray:
        """Sample covariance ``cov(v_j, u_i)``, shape ``(n_outputs, n_inputs)`` ``[target, source]``.

        NaN everywhere when ``count < 2``.
        """
        if self.count < 2:
            return np.full((self.n_outputs, self.n_inputs), np.nan)
        return self.comoment / float(self.count - 1)

    def correlation(self) -> np.ndarray:
        """Pearson correlation ``corr(v_j, u_i)``, shape ``(n_outputs, n_inputs)`` ``[target, source]``.

        NaN where the input or the output never varied, or when ``count < 2``.
        Clipped to ``[-1, 1]`` against rounding. Computed in place in the one array returned.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            r = self.comoment / np.sqrt(self.m2_out)[:, None]
            r /= np.sqrt(self.m2_in)[None, :]
        np.clip(r, -1.0, 1.0, out=r)
        r[self.constant_outputs(), :] = np.nan
        r[:, self.constant_inputs()] = np.nan
        return r

    def effect(self) -> np.ndarray:
        """Slope ``cov(v_j, u_i) / var(u_i)``, shape ``(n_outputs, n_inputs)`` ``[target, source]``.

        For binary 0/1 inputs this is the difference in means
        ``E[v_j | u_i = 1] - E[v_j | u_i = 0]``. NaN where input ``i`` never varied.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = self.comoment / self.m2_in[None, :]
        slope[:, self.constant_inputs()] = np.nan
        return slope

    def stderr(self) -> np.ndarray:
        """Standard error of :meth:`effect`, shape ``(n_outputs, n_inputs)`` ``[target, source]``.

        The OLS standard error of the slope of ``v_j`` on ``u_i`` alone (with intercept):
        ``sqrt(RSS / (count - 2) / m2_in_i)``. NaN where input ``i`` never varied or
        when ``count < 3``. Computed in place in the one array returned.
        """
        if self.count < 3:
            return np.full((self.n_outputs, self.n_inputs), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            # rss = m2_out - comoment**2 / m2_in, then sqrt(max(rss, 0) / (count - 2) / m2_in), step by step
            se = self.comoment * self.comoment
            se /= self.m2_in[None, :]
            np.subtract(self.m2_out[:, None], se, out=se)
            np.maximum(se, 0.0, out=se)
            se /= float(self.count - 2)
            se /= self.m2_in[None, :]
            np.sqrt(se, out=se)
        se[:, self.constant_inputs()] = np.nan
        return se

    def __repr__(self) -> str:
        return f"CrossMoments(n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, count={self.count})"


_CAUCHY_SCHWARZ_SLACK = 1e-9  # relative: streamed sums round, so |c| may pass sqrt(m2_in m2_out) by a few ulps


def _check_cauchy_schwarz(m2_in, m2_out, comoment) -> None:
    """Refuse a co-moment no samples could give: ``comoment[j, i]**2 <= m2_out[j] * m2_in[i]``."""
    bound = np.sqrt(np.multiply.outer(m2_out, m2_in))
    bound *= 1.0 + _CAUCHY_SCHWARZ_SLACK
    bound += _CAUCHY_SCHWARZ_SLACK * np.sqrt(m2_out.max(initial=0.0) * m2_in.max(initial=0.0))
    beyond = np.abs(comoment) > bound
    if beyond.any():
        j, i = np.unravel_index(int(np.argmax(beyond)), beyond.shape)
        raise ValueError(
            f"comoment[{j}, {i}] = {comoment[j, i]:.6g} is beyond what any samples give: its square must be at most "
            f"m2_out[{j}] * m2_in[{i}] = {m2_out[j] * m2_in[i]:.6g} (Cauchy-Schwarz)"
        )
