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

__all__ = ["Result", "score"]

ESTIMATES = ("correlation", "effect")


def score(estimate, A) -> float:
    """Pearson correlation, over all entries, of ``estimate`` with the true ``A``.

    Both are ``[target, source]``. Undefined (NaN) estimate entries are left out;
    NaN is returned when fewer than two entries remain or either side is constant.
    This is the tutorial's score, ``corrcoef(A.T.flatten(), R.flatten())``, in A's orientation.
    """
    A = check_connectivity(A)
    estimate = np.asarray(estimate, dtype=np.float64)
    if estimate.shape != A.shape:
        raise ValueError(f"estimate must have A's shape {A.shape}, got {estimate.shape}")
    keep = np.isfinite(estimate)
    x, y = A[keep], estimate[keep]
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


@dataclass
class Result:
    """Moments of a run (or of a recording) and the estimates derived from them.

    Attributes
    ----------
    moments : CrossMoments
        Inputs are the stimulation (or ``x_t`` when observing), outputs ``x_{t+lag}``.
    n_steps : int
        Steps simulated or read.
    seconds : float
        Wall time spent producing the moments.
    correlation, effect, stderr : ndarray, shape (n_outputs, n_inputs)
        ``[target, source]`` estimates, NaN where undefined (see ``undefined_edges``).
    parameters : dict
        What produced it (design, seed, rng, chunk_steps, ...), for the record.
    """

    moments: CrossMoments
    n_steps: int
    seconds: float
    parameters: dict = field(default_factory=dict)

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

    @property
    def undefined_edges(self) -> np.ndarray:
        """Boolean ``[target, source]``: True where the estimates are NaN (a neuron never varied)."""
        return self.moments.undefined_edges()

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
