"""The progress event: what every long computation reports after each chunk (and once before, while compiling)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PHASES", "Progress"]

PHASES = ("running", "compiling")


@dataclass(frozen=True)
class Progress:
    """One progress report, handed to a ``progress`` callback.

    Attributes
    ----------
    steps_done, steps_total : int
        Steps (or rows) done and to do, summed over every seed of the run.
    seed : int or None
        The seed that reported (None for an estimate from a recording).
    samples : int
        Samples folded in so far by that seed (or by the recording's estimate).
    score : float or None
        That seed's correlation with the true ``A`` so far (None when ``A`` is unknown or undefined).
    mean_se : float or None
        That seed's mean per-edge standard error of the effect (None while undefined).
    phase : {"running", "compiling"}
        "running" for a chunk's report; "compiling" once, before the first chunk, when
        Numba compiles the kernels because its cache does not hold them yet (the first
        run after an install or upgrade; later runs load them from the cache).
    """

    steps_done: int
    steps_total: int
    seed: int | None = None
    samples: int = 0
    score: float | None = None
    mean_se: float | None = None
    phase: str = "running"

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")

    @property
    def fraction(self) -> float:
        """Share of the work done, in [0, 1]."""
        return self.steps_done / self.steps_total if self.steps_total else 1.0
