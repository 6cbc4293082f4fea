"""Mergeable sufficient statistics of stimulation trials: (which sources were targeted, each neuron's response).

:class:`TrialMoments` folds batches of trials (0/1 target indicators ``S``, responses
``Y``) into statistics that merge exactly (Chan–Golub–LeVeque), from which both trial
estimators follow without ever holding the trials x neurons response matrix:

* ``regression``: joint least squares of each responder on every source's indicator
  plus an intercept, from the centred cross-products ``S'S`` and ``S'Y``
  (two :class:`~streamcausal.moments.CrossMoments`);
* ``difference``: per (responder j, source i) the count, mean and centred sum of
  squares of ``y_j`` on the trials that target ``i`` and not ``j``, and on the trials
  that target neither, for Welch's test.

Every matrix is ``[responder, source]``.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_float_array, check_int, describe
from .cross import CrossMoments

__all__ = ["TrialMoments"]

_GROUPS = ("targeted", "neither", "self_targeted", "self_not")


class _Groups:
    """Count, mean and centred sum of squares of responses in one group of trials, per entry; Chan-merged."""

    __slots__ = ("count", "mean", "m2")

    def __init__(self, shape):
        self.count = np.zeros(shape)
        self.mean = np.zeros(shape)
        self.m2 = np.zeros(shape)

    @classmethod
    def from_sums(cls, count, s1, s2, centre):
        """Group statistics from the count, sum and sum of squares of responses shifted by ``centre``."""
        self = cls.__new__(cls)
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(count > 0, s1 / count, 0.0)
            self.m2 = np.maximum(np.where(count > 0, s2 - s1 * shift, 0.0), 0.0)
        self.mean = np.where(count > 0, centre + shift, 0.0)
        self.count = count.astype(np.float64)
        return self

    def merge(self, other):
        merged = _Groups.__new__(_Groups)
        total = self.count + other.count
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = np.where(total > 0, other.count / total, 0.0)
            factor = np.where(total > 0, self.count * other.count / total, 0.0)
        delta = other.mean - self.mean
        merged.count = total
        merged.mean = np.where(total > 0, self.mean + delta * weight, 0.0)
        merged.m2 = self.m2 + other.m2 + delta * delta * factor
        return merged

    def variance(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.count >= 2, self.m2 / (self.count - 1), np.nan)


class _BatchSums:
    """Sparse products of one batch: ``S'Y_c``, ``S'Y_c^2``, ``S'S`` and their responder-excluded parts.

    ``S`` is the batch's (k, p) 0/1 target matrix (sparse), ``Y_c`` its responses
    centred on the batch means. Every statistic of the batch follows from these.
    """

    def __init__(self, indptr, indices, Y, n_sources):
        from scipy import sparse

        k, n = Y.shape
        self.k, self.n, self.p = k, n, n_sources
        self.centre = Y.mean(axis=0)
        self.centred = Y - self.centre
        data = np.ones(indices.size)
        self.S = sparse.csr_matrix((data, indices, indptr), shape=(k, n_sources))
        self.counts = np.bincount(indices, minlength=n_sources).astype(np.float64)
        self.P1 = np.asarray(self.S.T @ self.centred)  # (p, n): sum of y_c over the trials targeting i
        self.P2 = np.asarray(self.S.T @ (self.centred * self.centred))
        self.T1 = self.centred.sum(axis=0)
        self.T2 = np.einsum("kj,kj->j", self.centred, self.centred)
        self.G = (self.S.T @ self.S).toarray()  # co-targeting counts

    def joint(self) -> CrossMoments:
        k, p = self.k, self.p
        mean_in = self.counts / k
        m2_in = self.counts - self.counts * mean_in
        comoment = np.ascontiguousarray(self.P1.T)  # sum_k (s - mean)(y - mean) = S'Y_c since sum Y_c = 0
        if k < 2:
            return CrossMoments.from_parts(k, mean_in, self.centre, np.zeros(p), np.zeros(self.n),
                                           np.zeros_like(comoment))
        return CrossMoments.from_parts(k, mean_in, self.centre, m2_in, self.T2, comoment)

    def design(self) -> CrossMoments:
        k, p = self.k, self.p
        mean_in = self.counts / k
        m2_in = self.counts - self.counts * mean_in
        if k < 2:
            return CrossMoments.from_parts(k, mean_in, mean_in, np.zeros(p), np.zeros(p), np.zeros((p, p)))
        comoment = self.G - np.outer(mean_in, self.counts)
        comoment = (comoment + comoment.T) / 2
        return CrossMoments.from_parts(k, mean_in, mean_in, m2_in, m2_in, comoment)

    def groups(self, same_neurons) -> dict:
        """The batch's difference-in-means groups, ``[responder, source]``."""
        k, centre = self.k, self.centre[:, None]
        counts = self.counts[None, :]
        if not same_neurons:
            return {
                "targeted": _Groups.from_sums(np.broadcast_to(counts, (self.n, self.p)).copy(), self.P1.T,
                                              self.P2.T, centre),
                "neither": _Groups.from_sums(np.broadcast_to(k - counts, (self.n, self.p)).copy(),
                                             self.T1[:, None] - self.P1.T, self.T2[:, None] - self.P2.T, centre),
            }
        rows = np.repeat(np.arange(k), np.diff(self.S.indptr))
        own = self.S.copy()  # entry (trial, source j) holds responder j's own value
        own.data = self.centred[rows, self.S.indices]
        Q1 = (self.S.T @ own).toarray()  # [i, j]: sum over trials targeting both i and j of y_c of j
        own.data = own.data * own.data
        Q2 = (self.S.T @ own).toarray()
        D1, D2 = np.diag(self.P1).copy(), np.diag(self.P2).copy()  # sums over the trials targeting j itself
        G, P1, P2 = self.G.T, self.P1.T, self.P2.T  # now [j, i]
        Q1, Q2 = Q1.T, Q2.T
        own_count = self.counts[:, None]
        return {
            "targeted": _Groups.from_sums(counts - G, P1 - Q1, P2 - Q2, centre),
            "neither": _Groups.from_sums(k - counts - own_count + G, self.T1[:, None] - P1 - D1[:, None] + Q1,
                                         self.T2[:, None] - P2 - D2[:, None] + Q2, centre),
            "self_targeted": _Groups.from_sums(self.counts.copy(), D1, D2, self.centre),
            "self_not": _Groups.from_sums(k - self.counts, self.T1 - D1, self.T2 - D2, self.centre),
        }


class TrialMoments:
    """Streaming, mergeable statistics of trials for the regression and difference estimators.

    Parameters
    ----------
    n_sources : int
        Number of sources (columns of the target indicators).
    n_responders : int
        Number of responding neurons (columns of the responses).
    same_neurons : bool
        Sources are the responders (source ``i`` is neuron ``i``; needs
        ``n_sources == n_responders``). The difference estimator then leaves out the
        trials that target the responder itself, and the diagonal is each neuron's
        response to its own stimulation.

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
        self.joint = CrossMoments(p, n)  # (S, Y)
        self.design = CrossMoments(p, p)  # (S, S)
        self.targeted_count = np.zeros(p, dtype=np.int64)
        self.groups = {
            "targeted": _Groups((n, p)),
            "neither": _Groups((n, p)),
            "self_targeted": _Groups((n,)),
            "self_not": _Groups((n,)),
        }

    @property
    def count(self) -> int:
        """Trials folded in."""
        return self.joint.count

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

        The work is proportional to the targets times the responders (a few sources per
        trial), never to ``n_sources x n_responders`` per trial.
        """
        Y = check_float_array(responses, "responses", None, 2)
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        k = Y.shape[0]
        if Y.shape[1] != self.n_responders or indptr.shape != (k + 1,):
            raise ValueError(f"responses must be (k, {self.n_responders}) with indptr of length k + 1, "
                             f"got {Y.shape} and {indptr.shape}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_sources):
            raise ValueError(f"indices must be in [0, {self.n_sources}), got {indices.min()}..{indices.max()}")
        if k == 0:
            return self
        batch = _BatchSums(indptr, indices, Y, self.n_sources)
        self.joint += batch.joint()
        self.design += batch.design()
        self.targeted_count += batch.counts.astype(np.int64)
        for name, groups in batch.groups(self.same_neurons).items():
            self.groups[name] = self.groups[name].merge(groups)
        return self

    def merge(self, other: TrialMoments) -> TrialMoments:
        """A new accumulator holding the trials of both."""
        if not isinstance(other, TrialMoments) or (other.n_sources, other.n_responders, other.same_neurons) != (
            self.n_sources, self.n_responders, self.same_neurons
        ):
            raise ValueError(f"other must be a TrialMoments of the same shape, got {describe(other)}")
        merged = TrialMoments(self.n_sources, self.n_responders, same_neurons=self.same_neurons)
        merged.joint = self.joint.merge(other.joint)
        merged.design = self.design.merge(other.design)
        merged.targeted_count = self.targeted_count + other.targeted_count
        merged.groups = {name: self.groups[name].merge(other.groups[name]) for name in _GROUPS}
        return merged

    def __add__(self, other):
        return self.merge(other)

    def __iadd__(self, other):
        merged = self.merge(other)
        self.__dict__.update(merged.__dict__)
        return self

    def to_arrays(self) -> dict:
        """Plain arrays of the whole state (for checkpoints)."""
        arrays = {f"joint/{k}": v for k, v in self.joint.to_arrays().items()}
        arrays.update({f"design/{k}": v for k, v in self.design.to_arrays().items()})
        arrays["targeted_count"] = self.targeted_count.copy()
        for name in _GROUPS:
            for part in ("count", "mean", "m2"):
                arrays[f"{name}/{part}"] = getattr(self.groups[name], part).copy()
        return arrays

    @classmethod
    def from_arrays(cls, arrays, *, same_neurons) -> TrialMoments:
        """Inverse of :meth:`to_arrays`."""
        joint = CrossMoments.from_arrays({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("joint/")})
        self = cls(joint.n_inputs, joint.n_outputs, same_neurons=same_neurons)
        self.joint = joint
        self.design = CrossMoments.from_arrays(
            {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("design/")}
        )
        self.targeted_count = np.asarray(arrays["targeted_count"], dtype=np.int64).copy()
        for name in _GROUPS:
            group = _Groups.__new__(_Groups)
            for part in ("count", "mean", "m2"):
                setattr(group, part, np.asarray(arrays[f"{name}/{part}"], dtype=np.float64).copy())
            self.groups[name] = group
        return self

    # ------------------------------------------------------------------ estimators

    def _design_basis(self):
        """Varying sources, and the eigenbasis of their centred cross-product split into range and null space."""
        varying = np.flatnonzero((self.design.m2_in > 0) & (self.count >= 2))
        if varying.size == 0:
            return varying, None, None, None
        values, vectors = np.linalg.eigh(self.design.comoment[np.ix_(varying, varying)])
        in_range = values > 1e-10 * max(values.max(), 1.0)
        return varying, values[in_range], vectors[:, in_range], vectors[:, ~in_range]

    def identifiable_sources(self) -> np.ndarray:
        """Boolean ``(n_sources,)``: sources whose regression coefficient is defined.

        A source must be targeted on some trials and not on others, and its coefficient
        must not depend on how a singular design is resolved (sources always targeted
        together, or whose indicators are otherwise collinear, are not identifiable;
        the others still are).
        """
        keep = np.zeros(self.n_sources, dtype=bool)
        varying, _, _, null = self._design_basis()
        if varying.size:
            keep[varying] = np.einsum("ij,ij->i", null, null) < 1e-8 if null.size else True
        return keep

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
        varying, values, basis, _ = self._design_basis()
        if varying.size == 0 or values.size == 0:
            return effect, stderr
        inverse = (basis / values) @ basis.T  # C^+
        cross = self.joint.comoment[:, varying]  # (n, varying) = Y_c' S_c
        beta = cross @ inverse
        identifiable = self.identifiable_sources()[varying]
        columns = varying[identifiable]
        effect[:, columns] = beta[:, identifiable]
        dof = self.count - values.size - 1
        if dof > 0:
            rss = np.maximum(self.joint.m2_out - np.einsum("ji,ji->j", beta, cross), 0.0)
            stderr[:, columns] = np.sqrt(rss[:, None] / dof * np.diag(inverse)[identifiable][None, :])
        return effect, stderr

    def difference(self):
        """``(effect, stderr)`` of the difference in means with Welch's standard error, ``[responder, source]``.

        Off the diagonal (or everywhere when sources are not the responders): mean of
        ``y_j`` on trials that target ``i`` and not ``j`` minus the mean on trials that
        target neither. On the diagonal: targeting ``j`` vs not. NaN where a group has
        fewer than two trials.
        """
        a, b = self.groups["targeted"], self.groups["neither"]
        effect, stderr = self._welch(a, b)
        if self.same_neurons:
            diag_effect, diag_stderr = self._welch(self.groups["self_targeted"], self.groups["self_not"])
            np.fill_diagonal(effect, diag_effect)
            np.fill_diagonal(stderr, diag_stderr)
        return effect, stderr

    @staticmethod
    def _welch(a, b):
        defined = (a.count >= 2) & (b.count >= 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            effect = np.where(defined, a.mean - b.mean, np.nan)
            stderr = np.where(defined, np.sqrt(a.variance() / a.count + b.variance() / b.count), np.nan)
        return effect, stderr

    def __repr__(self) -> str:
        return (f"TrialMoments(n_sources={self.n_sources}, n_responders={self.n_responders}, "
                f"same_neurons={self.same_neurons}, count={self.count})")
