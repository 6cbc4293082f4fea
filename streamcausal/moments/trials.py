"""Mergeable sufficient statistics of stimulation trials: (which sources were targeted, each neuron's response).

:class:`TrialMoments` folds batches of trials (the sources each targeted, every
neuron's response ``y``) into sums from which both trial estimators follow, without
ever holding the trials x neurons response matrix:

* ``regression``: joint least squares of each responder on every source's 0/1
  indicator plus an intercept, from the centred cross-products ``S'S`` and ``S'Y``;
* ``difference``: per (responder j, source i) the mean and variance of ``y_j`` on the
  trials that target ``i`` and not ``j``, and on the trials that target neither.

The sums are of responses shifted by a fixed per-neuron ``shift`` (the first batch's
mean), the "shifted data" form of the centred sums: as stable as Chan's updates when
the shift is near the mean, and additive, so a batch costs work proportional to its
targets times the neurons, and two accumulators merge exactly (after re-shifting one
to the other's shift). The target co-occurrence sums are sparse. Every matrix an
estimator returns is ``[responder, source]``.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_float_array, check_int, describe

__all__ = ["TrialMoments"]

_DENSE = ("shift", "counts", "total", "total_squares", "sums", "sums_squares")
_SPARSE = ("cotargeted", "own_sums", "own_squares")


def _sparse():
    from scipy import sparse

    return sparse


class TrialMoments:
    """Streaming, mergeable statistics of trials for the regression and difference estimators.

    Parameters
    ----------
    n_sources : int
        Number of sources (what the trials target).
    n_responders : int
        Number of responding neurons (columns of the responses).
    same_neurons : bool
        Sources are the responders (source ``i`` is neuron ``i``; needs
        ``n_sources == n_responders``). The difference estimator then leaves out the
        trials that target the responder itself, and the diagonal is each neuron's
        response to its own stimulation.

    Attributes
    ----------
    count : int
        Trials folded in.
    counts : ndarray, shape (n_sources,)
        Trials that targeted each source.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> S = (rng.random((400, 3)) < 0.3).astype(float)
    >>> Y = S @ np.array([[1.0, 0, 0], [0.5, 1, 0], [0, 0, 1]]).T + rng.normal(size=(400, 3))
    >>> whole = TrialMoments(3, 3, same_neurons=True).update(S, Y)
    >>> parts = TrialMoments(3, 3, same_neurons=True).update(S[:150], Y[:150])
    >>> parts += TrialMoments(3, 3, same_neurons=True).update(S[150:], Y[150:])
    >>> bool(np.allclose(whole.regression()[0], parts.regression()[0]))
    True
    """

    def __init__(self, n_sources, n_responders, *, same_neurons):
        self.n_sources = check_int(n_sources, "n_sources", minimum=1)
        self.n_responders = check_int(n_responders, "n_responders", minimum=1)
        if not isinstance(same_neurons, (bool, np.bool_)):
            raise TypeError(f"same_neurons must be True or False, got {describe(same_neurons)}")
        self.same_neurons = bool(same_neurons)
        if self.same_neurons and self.n_sources != self.n_responders:
            raise ValueError(f"same_neurons needs n_sources == n_responders, got {n_sources} and {n_responders}")
        p, n = self.n_sources, self.n_responders
        self.count = 0
        self.shift = np.zeros(n)  # responses are summed as y - shift
        self.counts = np.zeros(p)  # trials targeting source i
        self.total = np.zeros(n)  # sum over trials of y - shift
        self.total_squares = np.zeros(n)
        self.sums = np.zeros((p, n))  # [i, j]: sum over trials targeting i of y_j - shift_j
        self.sums_squares = np.zeros((p, n))
        sparse = _sparse()
        self.cotargeted = sparse.csr_matrix((p, p))  # [i, j]: trials targeting both i and j
        self.own_sums = sparse.csr_matrix((p, p))  # [i, j]: over trials targeting i and j, sum of y_j - shift_j
        self.own_squares = sparse.csr_matrix((p, p))

    @property
    def targeted_count(self) -> np.ndarray:
        return self.counts.astype(np.int64)

    # ------------------------------------------------------------------ accumulation

    def update(self, indicators, responses) -> TrialMoments:
        """Fold in a batch: ``indicators`` (k, n_sources) 0/1, ``responses`` (k, n_responders), finite."""
        S = check_float_array(indicators, "indicators", None, 2)
        if S.shape[1] != self.n_sources:
            raise ValueError(f"indicators must be (k, {self.n_sources}), got shape {S.shape}")
        if np.any((S != 0) & (S != 1)):
            raise ValueError("indicators must hold only 0 and 1")
        rows, columns = np.nonzero(S)
        indptr = np.searchsorted(rows, np.arange(S.shape[0] + 1))
        return self.update_targets(indptr, columns, responses)

    def update_targets(self, indptr, indices, responses) -> TrialMoments:
        """Fold in a batch given as targets: trial ``k`` targeted ``indices[indptr[k]:indptr[k + 1]]``.

        The work is proportional to the batch's targets times the responders, never to
        ``n_sources x n_responders`` per trial.
        """
        Y = check_float_array(responses, "responses", None, 2)
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        k = Y.shape[0]
        if Y.shape[1] != self.n_responders or indptr.shape != (k + 1,) or indptr[-1] != indices.size:
            raise ValueError(f"responses must be (k, {self.n_responders}) with indptr of length k + 1 ending at "
                             f"len(indices), got {Y.shape}, {indptr.shape} and {indices.size}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_sources):
            raise ValueError(f"indices must be in [0, {self.n_sources}), got {indices.min()}..{indices.max()}")
        if k == 0:
            return self
        if self.count == 0:
            self.shift = Y.mean(axis=0)
        shifted = Y - self.shift
        squares = shifted * shifted
        self.count += k
        self.total += shifted.sum(axis=0)
        self.total_squares += squares.sum(axis=0)
        if indices.size:
            sparse = _sparse()
            S = sparse.csr_matrix((np.ones(indices.size), indices, indptr), shape=(k, self.n_sources))
            targeted = S.T.tocsr()  # (p, k): the trials of each source
            self.counts += np.diff(targeted.indptr)
            self.sums += targeted @ shifted
            self.sums_squares += targeted @ squares
            self.cotargeted = self.cotargeted + (S.T @ S).tocsr()
            if self.same_neurons:
                rows = np.repeat(np.arange(k), np.diff(indptr))
                own = S.copy()  # entry (trial, j) holds responder j's own shifted response
                own.data = shifted[rows, indices]
                self.own_sums = self.own_sums + (S.T @ own).tocsr()
                own.data = own.data * own.data
                self.own_squares = self.own_squares + (S.T @ own).tocsr()
        return self

    def _reshifted(self, shift) -> dict:
        """This accumulator's sums with responses shifted by ``shift`` instead."""
        d = self.shift - shift  # y - shift = (y - self.shift) + d
        sums = self.sums + self.counts[:, None] * d[None, :]
        out = {
            "total": self.total + self.count * d,
            "total_squares": self.total_squares + 2 * d * self.total + self.count * d * d,
            "sums": sums,
            "sums_squares": self.sums_squares + 2 * d[None, :] * self.sums + self.counts[:, None] * (d * d)[None, :],
            "own_sums": (self.own_sums + self.cotargeted.multiply(d[None, :])).tocsr(),
            "own_squares": (self.own_squares + self.own_sums.multiply(2 * d[None, :])
                            + self.cotargeted.multiply((d * d)[None, :])).tocsr(),
        }
        return out

    def merge(self, other: TrialMoments) -> TrialMoments:
        """A new accumulator holding the trials of both."""
        if not isinstance(other, TrialMoments) or (other.n_sources, other.n_responders, other.same_neurons) != (
            self.n_sources, self.n_responders, self.same_neurons
        ):
            raise ValueError(f"other must be a TrialMoments of the same shape, got {describe(other)}")
        merged = TrialMoments(self.n_sources, self.n_responders, same_neurons=self.same_neurons)
        if self.count == 0 or other.count == 0:
            source = other if self.count == 0 else self
            merged.__dict__.update({k: (v.copy() if hasattr(v, "copy") else v) for k, v in source.__dict__.items()})
            return merged
        theirs = other._reshifted(self.shift)
        merged.count = self.count + other.count
        merged.shift = self.shift.copy()
        merged.counts = self.counts + other.counts
        merged.cotargeted = (self.cotargeted + other.cotargeted).tocsr()
        for name in ("total", "total_squares", "sums", "sums_squares", "own_sums", "own_squares"):
            setattr(merged, name, getattr(self, name) + theirs[name])
        merged.own_sums, merged.own_squares = merged.own_sums.tocsr(), merged.own_squares.tocsr()
        return merged

    def __add__(self, other):
        return self.merge(other)

    def __iadd__(self, other):
        self.__dict__.update(self.merge(other).__dict__)
        return self

    def to_arrays(self) -> dict:
        """Plain arrays of the whole state (the sparse sums as dense ``(p, p)``), for checkpoints."""
        arrays = {"count": np.array(self.count, dtype=np.int64)}
        arrays.update({name: getattr(self, name).copy() for name in _DENSE})
        arrays.update({name: getattr(self, name).toarray() for name in _SPARSE})
        return arrays

    @classmethod
    def from_arrays(cls, arrays, *, same_neurons) -> TrialMoments:
        """Inverse of :meth:`to_arrays`."""
        sums = np.asarray(arrays["sums"], dtype=np.float64)
        self = cls(sums.shape[0], sums.shape[1], same_neurons=same_neurons)
        self.count = int(np.asarray(arrays["count"]).reshape(()))
        for name in _DENSE:
            setattr(self, name, np.array(arrays[name], dtype=np.float64))
        sparse = _sparse()
        for name in _SPARSE:
            setattr(self, name, sparse.csr_matrix(np.asarray(arrays[name], dtype=np.float64)))
        return self

    def state_arrays(self) -> dict:
        """The whole state as flat arrays that keep the sparse sums sparse (CSR parts), for checkpoints.

        Unlike :meth:`to_arrays` the size is the dense sums plus the co-targeted pairs,
        never ``3 n_sources**2``.
        """
        arrays = {"count": np.array(self.count, dtype=np.int64)}
        arrays.update({name: getattr(self, name).copy() for name in _DENSE})
        for name in _SPARSE:
            matrix = getattr(self, name).tocsr()
            matrix.sort_indices()
            arrays.update({f"{name}_data": matrix.data.astype(np.float64), f"{name}_indices": matrix.indices.astype(np.int64),
                           f"{name}_indptr": matrix.indptr.astype(np.int64)})
        return arrays

    @classmethod
    def from_state_arrays(cls, arrays, *, same_neurons) -> TrialMoments:
        """Inverse of :meth:`state_arrays` (bit for bit)."""
        sums = np.asarray(arrays["sums"], dtype=np.float64)
        self = cls(sums.shape[0], sums.shape[1], same_neurons=same_neurons)
        self.count = int(np.asarray(arrays["count"]).reshape(()))
        for name in _DENSE:
            setattr(self, name, np.array(arrays[name], dtype=np.float64))
        sparse, p = _sparse(), self.n_sources
        for name in _SPARSE:
            parts = (np.asarray(arrays[f"{name}_data"], dtype=np.float64), np.asarray(arrays[f"{name}_indices"]),
                     np.asarray(arrays[f"{name}_indptr"]))
            setattr(self, name, sparse.csr_matrix(parts, shape=(p, p)))
        return self

    # ------------------------------------------------------------------ centred statistics

    def _centred(self):
        """Centred design cross-product ``C = S_c'S_c`` (p, p), ``Y_c'S_c`` (n, p) and ``Y_c'Y_c`` diagonal (n,)."""
        K, c = float(self.count), self.counts
        design = self.cotargeted.toarray() - np.outer(c, c) / K
        design = (design + design.T) / 2
        cross = (self.sums - np.outer(c, self.total) / K).T
        m2_out = np.maximum(self.total_squares - self.total * self.total / K, 0.0)
        return design, cross, m2_out

    def _design_basis(self, design):
        """Varying sources, and the eigenbasis of their centred cross-product split into range and null space."""
        varying = np.flatnonzero((self.counts > 0) & (self.counts < self.count))
        if varying.size == 0:
            return varying, None, None, None
        values, vectors = np.linalg.eigh(design[np.ix_(varying, varying)])
        in_range = values > 1e-10 * max(values.max(), 1.0)
        return varying, values[in_range], vectors[:, in_range], vectors[:, ~in_range]

    def _pseudo_inverse(self, design):
        """``(varying sources, C^+ over them, rank, which of them are identifiable)``.

        A full-rank design (the usual case) is inverted through its Cholesky factor; a
        singular one through its eigenbasis (about five times slower at large n).
        """
        from scipy.linalg import lapack

        varying = np.flatnonzero((self.counts > 0) & (self.counts < self.count))
        if varying.size == 0:
            return varying, None, 0, None
        block = design[np.ix_(varying, varying)]
        factor, info = lapack.dpotrf(block, lower=1)
        pivots = np.diag(factor) ** 2 if info == 0 else None
        if pivots is not None and pivots.min() > 1e-10 * max(pivots.max(), 1.0):
            inverse, info = lapack.dpotri(factor, lower=1)
            if info == 0:
                inverse = np.tril(inverse) + np.tril(inverse, -1).T
                return varying, inverse, varying.size, np.ones(varying.size, dtype=bool)
        _, values, basis, null = self._design_basis(design)
        identifiable = np.einsum("ij,ij->i", null, null) < 1e-8 if null.size else np.ones(varying.size, bool)
        return varying, (basis / values) @ basis.T, values.size, identifiable

    def identifiable_sources(self) -> np.ndarray:
        """Boolean ``(n_sources,)``: sources whose regression coefficient is defined.

        A source must be targeted on some trials and not on others, and its coefficient
        must not depend on how a singular design is resolved (sources always targeted
        together, or whose indicators are otherwise collinear, are not identifiable;
        the others still are).
        """
        keep = np.zeros(self.n_sources, dtype=bool)
        if self.count < 2:
            return keep
        varying, _, _, identifiable = self._pseudo_inverse(self._centred()[0])
        keep[varying] = identifiable if varying.size else False
        return keep

    # ------------------------------------------------------------------ estimators

    def regression(self):
        """``(effect, stderr)`` of the joint least squares, ``[responder, source]``, NaN where undefined.

        The least squares of each responder on every varying source's indicator plus an
        intercept (the centring), solved with the pseudo-inverse of the centred design
        cross-product ``C = S_c' S_c``: ``beta = Y_c' S_c C^+``. Identifiable sources'
        coefficients do not depend on that choice; the others are NaN. Standard errors
        ``sqrt(RSS_j / (N - rank(C) - 1) * [C^+]_ii)``.
        """
        n, p = self.n_responders, self.n_sources
        effect = np.full((n, p), np.nan)
        stderr = np.full((n, p), np.nan)
        if self.count < 2:
            return effect, stderr
        design, cross_all, m2_out = self._centred()
        varying, inverse, rank, identifiable = self._pseudo_inverse(design)
        if varying.size == 0 or rank == 0:
            return effect, stderr
        cross = cross_all[:, varying]
        beta = cross @ inverse
        columns = varying[identifiable]
        effect[:, columns] = beta[:, identifiable]
        dof = self.count - rank - 1
        if dof > 0:
            rss = np.maximum(m2_out - np.einsum("ji,ji->j", beta, cross), 0.0)
            stderr[:, columns] = np.sqrt(rss[:, None] / dof * np.diag(inverse)[identifiable][None, :])
        return effect, stderr

    def difference(self):
        """``(effect, stderr)`` of the difference in means with Welch's standard error, ``[responder, source]``.

        Off the diagonal (or everywhere when sources are not the responders): mean of
        ``y_j`` on trials that target ``i`` and not ``j`` minus the mean on trials that
        target neither. On the diagonal: targeting ``j`` vs not. NaN where a group has
        fewer than two trials.
        """
        K = float(self.count)
        counts = self.counts[None, :]  # [j, i] orientation from here on
        sums, squares = self.sums.T, self.sums_squares.T
        total, total_squares = self.total[:, None], self.total_squares[:, None]
        if not self.same_neurons:
            targeted = (np.broadcast_to(counts, sums.shape), sums, squares)
            neither = (K - targeted[0], total - sums, total_squares - squares)
            return _welch(targeted, neither)
        both = self.cotargeted.toarray().T  # [j, i]: trials targeting i and j
        own, own_squares = self.own_sums.toarray().T, self.own_squares.toarray().T
        self_sums, self_squares = np.diag(self.sums)[:, None], np.diag(self.sums_squares)[:, None]
        self_counts = self.counts[:, None]
        targeted = (counts - both, sums - own, squares - own_squares)
        neither = (K - counts - self_counts + both, total - sums - self_sums + own,
                   total_squares - squares - self_squares + own_squares)
        effect, stderr = _welch(targeted, neither)
        diag_effect, diag_stderr = _welch((self_counts, self_sums, self_squares),
                                          (K - self_counts, total - self_sums, total_squares - self_squares))
        np.fill_diagonal(effect, diag_effect[:, 0])
        np.fill_diagonal(stderr, diag_stderr[:, 0])
        return effect, stderr

    def __repr__(self) -> str:
        return (f"TrialMoments(n_sources={self.n_sources}, n_responders={self.n_responders}, "
                f"same_neurons={self.same_neurons}, count={self.count})")


def _welch(a, b):
    """Difference of group means and Welch's standard error from (count, sum, sum of squares) of shifted responses."""
    (na, sa, qa), (nb, sb, qb) = a, b
    defined = (na >= 2) & (nb >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_a = np.maximum(qa - sa * sa / na, 0.0) / (na - 1)
        var_b = np.maximum(qb - sb * sb / nb, 0.0) / (nb - 1)
        effect = np.where(defined, sa / na - sb / nb, np.nan)
        stderr = np.where(defined, np.sqrt(var_a / na + var_b / nb), np.nan)
    return effect, stderr
