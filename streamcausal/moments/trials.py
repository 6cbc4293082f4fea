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
    def of_batch(cls, membership, responder_mask, centred, centre):
        """Group statistics of one batch: ``membership`` (k, p) 0/1 per source (None: one group per responder)."""
        weights = responder_mask
        if membership is None:  # per responder only: its own targeted / not-targeted trials
            count = weights.sum(axis=0)
            s1 = (weights * centred).sum(axis=0)
            s2 = (weights * centred * centred).sum(axis=0)
        else:
            count = weights.T @ membership
            s1 = (weights * centred).T @ membership
            s2 = (weights * centred * centred).T @ membership
            centre = centre[:, None]
        self = cls.__new__(cls)
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(count > 0, s1 / count, 0.0)
            self.m2 = np.maximum(np.where(count > 0, s2 - s1 * shift, 0.0), 0.0)
        self.mean = np.where(count > 0, centre + shift, 0.0)
        self.count = count
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
        Y = check_float_array(responses, "responses", None, 2)
        if S.shape[1] != self.n_sources or Y.shape[1] != self.n_responders or S.shape[0] != Y.shape[0]:
            raise ValueError(
                f"indicators and responses must be (k, {self.n_sources}) and (k, {self.n_responders}), "
                f"got {S.shape} and {Y.shape}"
            )
        if np.any((S != 0) & (S != 1)):
            raise ValueError("indicators must hold only 0 and 1")
        if S.shape[0] == 0:
            return self
        self.joint += CrossMoments(self.n_sources, self.n_responders).update(S, Y)
        self.design += CrossMoments(self.n_sources, self.n_sources).update(S, S)
        self.targeted_count += S.sum(axis=0).astype(np.int64)
        for name, batch in self._batch_groups(S, Y).items():
            self.groups[name] = self.groups[name].merge(batch)
        return self

    def _batch_groups(self, S, Y):
        centre = Y.mean(axis=0)
        centred = Y - centre
        not_targeted = 1.0 - S
        responder_free = not_targeted if self.same_neurons else np.ones_like(Y)
        groups = {
            "targeted": _Groups.of_batch(S, responder_free, centred, centre),
            "neither": _Groups.of_batch(not_targeted, responder_free, centred, centre),
        }
        if self.same_neurons:
            groups["self_targeted"] = _Groups.of_batch(None, S, centred, centre)
            groups["self_not"] = _Groups.of_batch(None, not_targeted, centred, centre)
        return groups

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

    def identifiable_sources(self) -> np.ndarray:
        """Boolean ``(n_sources,)``: sources whose regression coefficient is defined.

        A source must be targeted on some trials and not on others, and must not lie in
        a singular part of the design (a set of sources always targeted together, or
        whose indicators are collinear with others').
        """
        keep = (self.design.m2_in > 0) & (self.count >= 2)
        while keep.any():
            index = np.flatnonzero(keep)
            cross = self.design.comoment[np.ix_(index, index)]
            values, vectors = np.linalg.eigh(cross)
            null = values <= 1e-10 * max(values.max(), 1.0)
            if not null.any():
                break
            involved = np.any(np.abs(vectors[:, null]) > 1e-8, axis=1)
            keep[index[involved]] = False
        return keep

    def regression(self):
        """``(effect, stderr)`` of the joint least squares, ``[responder, source]``, NaN where undefined.

        Coefficients ``beta = (S_c' S_c)^-1 S_c' Y_c`` on the identifiable sources (the
        intercept is the centring); standard errors ``sqrt(RSS_j / (N - p - 1) * [(S_c'
        S_c)^-1]_ii)`` with ``p`` the identifiable sources.
        """
        n, p = self.n_responders, self.n_sources
        effect = np.full((n, p), np.nan)
        stderr = np.full((n, p), np.nan)
        keep = self.identifiable_sources()
        if not keep.any():
            return effect, stderr
        index = np.flatnonzero(keep)
        inverse = np.linalg.inv(self.design.comoment[np.ix_(index, index)])
        inverse = (inverse + inverse.T) / 2
        cross = self.joint.comoment[:, index]  # (n, p') = Y_c' S_c
        beta = cross @ inverse
        effect[:, index] = beta
        dof = self.count - index.size - 1
        if dof > 0:
            rss = np.maximum(self.joint.m2_out - np.einsum("ji,ji->j", beta, cross), 0.0)
            stderr[:, index] = np.sqrt(rss[:, None] / dof * np.diag(inverse)[None, :])
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
