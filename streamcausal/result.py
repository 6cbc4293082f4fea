"""The result of a run or of an out-of-core estimate: moments plus the estimates derived from them.

Every matrix here is ``[target, source]``, the orientation of ``A``
(``A[j, i]`` is the weight from source ``i`` onto target ``j``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ._validation import check_connectivity
from .moments import CrossMoments

__all__ = ["Result", "convergence_point", "score"]

ESTIMATES = ("correlation", "effect")


_SCORE_IN_ONE_PASS = 2**22  # entries; above this the score streams over row blocks of A


def score(estimate, A) -> float:
    """Pearson correlation, over all entries, of ``estimate`` with the true ``A``.

    Both are ``[target, source]``; ``A`` may be a SciPy sparse matrix. Undefined (NaN)
    estimate entries are left out; NaN is returned when fewer than two entries remain or
    either side is constant. This is the tutorial's score,
    ``corrcoef(A.T.flatten(), R.flatten())``, in A's orientation. Above 2**22 entries it
    is computed over row blocks in two passes, so no copy of either matrix is made.
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    if estimate.size > _SCORE_IN_ONE_PASS:
        A = check_connectivity(A)
        if estimate.shape != A.shape:
            raise ValueError(f"estimate must have A's shape {A.shape}, got {estimate.shape}")
        return _streamed_score(estimate, A)
    A = check_connectivity(A, dense=True)
    if estimate.shape != A.shape:
        raise ValueError(f"estimate must have A's shape {A.shape}, got {estimate.shape}")
    keep = np.isfinite(estimate)
    x, y = A[keep], estimate[keep]
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _streamed_score(estimate, A) -> float:
    """:func:`score` over row blocks of ``A`` (dense or sparse): means first, then centred sums."""
    from .network import dense_row_blocks

    count, sum_x, sum_y = 0, 0.0, 0.0
    low_x = low_y = np.inf
    high_x = high_y = -np.inf
    for start, block in dense_row_blocks(A):
        y = estimate[start:start + len(block)]
        keep = np.isfinite(y)
        if keep.any():
            x_kept, y_kept = block[keep], y[keep]
            count += x_kept.size
            sum_x, sum_y = sum_x + x_kept.sum(), sum_y + y_kept.sum()
            low_x, high_x = min(low_x, x_kept.min()), max(high_x, x_kept.max())
            low_y, high_y = min(low_y, y_kept.min()), max(high_y, y_kept.max())
    if count < 2 or low_x == high_x or low_y == high_y:
        return float("nan")
    mean_x, mean_y = sum_x / count, sum_y / count
    xy = xx = yy = 0.0
    for start, block in dense_row_blocks(A):
        y = estimate[start:start + len(block)]
        keep = np.isfinite(y)
        dx, dy = block[keep] - mean_x, y[keep] - mean_y
        xy, xx, yy = xy + dx @ dy, xx + dx @ dx, yy + dy @ dy
    return float(np.clip(xy / np.sqrt(xx * yy), -1.0, 1.0))


def convergence_point(moments, A=None) -> dict:
    """Samples, score against ``A`` (None when unknown or undefined) and mean standard error of ``moments``."""
    stderr = moments.stderr()  # a fresh array, so NaN may be zeroed in place (no n x n copy)
    undefined = np.isnan(stderr)
    defined = stderr.size - int(np.count_nonzero(undefined))
    stderr[undefined] = 0.0
    mean_se = float(np.sum(stderr) / defined) if defined else float("nan")
    del stderr, undefined  # before the score makes its own n x n correlation
    return {
        "samples": int(moments.count),
        "score": None if A is None else _finite_or_none(score(moments.correlation(), A)),
        "mean_se": _finite_or_none(mean_se),
    }


def _finite_or_none(value):
    return float(value) if np.isfinite(value) else None


@dataclass
class Result:
    """Moments of a run (or of a recording) and the estimates derived from them.

    Attributes
    ----------
    moments : CrossMoments
        Inputs are the stimulation (or ``x_t`` when observing), outputs ``x_{t+lag}``.
    n_steps : int
        Steps simulated or read (summed over seeds).
    seconds : float
        Wall time spent producing the moments.
    correlation, effect, stderr : ndarray, shape (n_outputs, n_inputs)
        ``[target, source]`` estimates, NaN where undefined (see ``undefined_edges``).
    parameters : dict
        What produced it (design, seed, rng, chunk_steps, ...), for the record.
    convergence : list of dict
        ``{"samples", "score", "mean_se"}`` at doubling sample counts (score None when A
        is unknown); merged over seeds at the marks every seed reached.
    per_seed : dict
        ``{seed: Result}`` for a run (one entry for a single seed).
    """

    moments: CrossMoments
    n_steps: int
    seconds: float
    parameters: dict = field(default_factory=dict)
    convergence: list = field(default_factory=list)
    per_seed: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.moments.count)

    @property
    def steps_per_second(self) -> float:
        return self.n_steps / self.seconds if self.seconds > 0 else float("inf")

    @cached_property
    def correlation(self) -> np.ndarray:
        return self.moments.correlation()

    @cached_property
    def effect(self) -> np.ndarray:
        return self.moments.effect()

    @cached_property
    def stderr(self) -> np.ndarray:
        return self.moments.stderr()

    @cached_property
    def stderr_between_seeds(self) -> np.ndarray:
        """Standard error of the merged ``effect`` from the seed-to-seed spread.

        ``std(effect over seeds, ddof=1) / sqrt(K)``: a second estimate, independent of
        the moment-based ``stderr``; NaN with fewer than two seeds.
        """
        effects = [r.effect for r in self.per_seed.values()]
        if len(effects) < 2:
            return np.full(self.moments.comoment.shape, np.nan)
        with np.errstate(invalid="ignore"):
            return np.std(np.stack(effects), axis=0, ddof=1) / np.sqrt(len(effects))

    @property
    def undefined_edges(self) -> np.ndarray:
        """Boolean ``[target, source]``: True where the estimates are NaN (a neuron never varied)."""
        return self.moments.undefined_edges()

    @cached_property
    def pvalue(self) -> np.ndarray:
        """Two-sided normal p-value of ``effect / stderr``, ``[target, source]`` (NaN where undefined)."""
        from .estimators import pvalues

        return pvalues(self.effect, self.stderr)

    @cached_property
    def qvalue(self) -> np.ndarray:
        """Benjamini–Hochberg q-values of :attr:`pvalue`.

        Over the off-diagonal edges when the inputs are the outputs' own neurons (as
        many inputs as outputs, as in every run), otherwise over all edges.
        """
        from .estimators import bh_qvalues, edge_mask

        same_neurons = self.moments.n_inputs == self.moments.n_outputs
        return bh_qvalues(self.pvalue, edge_mask(self.pvalue.shape, same_neurons))

    def significant(self, alpha=0.05) -> np.ndarray:
        """Boolean ``[target, source]``: ``qvalue <= alpha`` (false-discovery rate ``alpha``)."""
        from .estimators import significant_edges

        return significant_edges(self.qvalue, alpha)

    def score(self, A, estimate: str = "correlation") -> float:
        """Pearson correlation of ``estimate`` ("correlation" or "effect") with the true ``A``."""
        if estimate not in ESTIMATES:
            raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
        return score(getattr(self, estimate), A)

    def __repr__(self) -> str:
        return (
            f"Result(n_steps={self.n_steps}, n_samples={self.n_samples}, "
            f"seconds={self.seconds:.3g}, steps_per_second={self.steps_per_second:.3g})"
        )
