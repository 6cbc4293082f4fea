"""Perturbation and observation designs: small frozen, validated descriptions of an experiment."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ._validation import check_int, check_open_closed

__all__ = ["Perturbation", "Observation", "design_from_dict"]

CLAMP_MODES = ("all", "stimulated")


@dataclass(frozen=True)
class Perturbation:
    """Clamp neurons on every ``every``-th step (t = 0, every, 2*every, ...).

    On a clamped step each neuron is stimulated independently with probability ``p``.
    With ``clamp="all"`` (the tutorial's design) every neuron is set to its 0/1
    stimulation; with ``clamp="stimulated"`` only stimulated neurons are set to 1 and
    the others keep their own dynamics. A sample is the pair
    (stimulation pattern at the clamped step, state one step later).
    ``Perturbation()`` is the tutorial's design: ``every=2, p=0.5, clamp="all"``.

    Examples
    --------
    >>> Perturbation().n_samples(10_001), Perturbation(every=3, p=0.2).n_samples(10)
    (5000, 3)
    """

    every: int = 2
    p: float = 0.5
    clamp: str = "all"

    def __post_init__(self):
        object.__setattr__(self, "every", check_int(self.every, "every", minimum=2))
        object.__setattr__(self, "p", check_open_closed(self.p, "p", 0.0, 1.0, high_inclusive=False))
        if not isinstance(self.clamp, str) or self.clamp not in CLAMP_MODES:
            raise ValueError(f"clamp must be one of {CLAMP_MODES}, got {self.clamp!r}")

    kind = "perturbation"

    @property
    def samples_are_independent(self) -> bool:
        """True when every clamp resets the whole state, so samples are i.i.d."""
        return self.clamp == "all"

    def n_samples(self, n_steps: int) -> int:
        """Samples in a run of ``n_steps`` steps: clamped steps t with t + 1 < n_steps."""
        return (n_steps - 2) // self.every + 1 if n_steps >= 2 else 0

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Observation:
    """Clamp nothing; every consecutive pair (x_t, x_{t+1}) is a sample (the observational baseline)."""

    kind = "observation"

    @property
    def samples_are_independent(self) -> bool:
        return False

    def n_samples(self, n_steps: int) -> int:
        return max(n_steps - 1, 0)

    def to_dict(self) -> dict:
        return {"kind": self.kind}


def check_design(design):
    """Return ``design`` if it is a Perturbation or Observation, else raise TypeError."""
    if not isinstance(design, (Perturbation, Observation)):
        raise TypeError(f"design must be Perturbation(...) or Observation(), got {design!r}")
    return design


def design_from_dict(data: dict):
    """Rebuild a design from :meth:`to_dict` output (as stored in a Zarr store's attributes)."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind == "perturbation":
        return Perturbation(**data)
    if kind == "observation":
        return Observation()
    raise ValueError(f"design kind must be 'perturbation' or 'observation', got {kind!r}")
