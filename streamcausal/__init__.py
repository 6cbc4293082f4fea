"""streamcausal: causal connectivity of neural networks by perturbation, streamed out of core.

Orientation everywhere except :mod:`streamcausal.tutorial`: ``A[j, i]`` is the weight
from source neuron ``i`` onto target neuron ``j``, and every estimate has ``A``'s
orientation (``[target, source]``). Arrays are time-major ``(T, n)``.
"""

from . import tutorial
from .designs import Observation, Perturbation
from .engine import Trajectory, run, simulate
from .moments import CrossMoments
from .network import create_connectivity
from .recording import estimate, estimate_store
from .result import Result, score

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "CrossMoments",
    "Observation",
    "Perturbation",
    "Result",
    "Trajectory",
    "create_connectivity",
    "estimate",
    "estimate_store",
    "run",
    "score",
    "simulate",
    "tutorial",
]
