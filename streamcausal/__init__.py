"""streamcausal: causal connectivity of neural networks by perturbation, streamed out of core.

Orientation everywhere except :mod:`streamcausal.tutorial`: ``A[j, i]`` is the weight
from source neuron ``i`` onto target neuron ``j``, and every estimate has ``A``'s
orientation (``[target, source]``). Arrays are time-major ``(T, n)``.

This module only re-exports the public API; zarr, Dask and matplotlib are imported
where they are used.
"""

from . import tutorial
from ._version import __version__
from .api import Seeds, Store, run
from .designs import Observation, Perturbation
from .engine import Trajectory, simulate
from .experiment import Recording, Trials
from .io.nwb import read_nwb
from .io.peristimulus import PeriStimulus, peristimulus
from .io.recording import estimate, estimate_store
from .io.responses import TrialResult, estimate_trials
from .io.spikes import BinnedSpikes, bin_spikes
from .moments import CrossMoments
from .network import create_connectivity
from .online import OnlineEstimator, OnlineTrialEstimator
from .progress import Progress
from .report import report, report_trials
from .result import Result, score

__all__ = [
    "__version__",
    "BinnedSpikes",
    "CrossMoments",
    "Observation",
    "OnlineEstimator",
    "OnlineTrialEstimator",
    "PeriStimulus",
    "Perturbation",
    "Progress",
    "Recording",
    "Result",
    "Seeds",
    "Store",
    "Trajectory",
    "TrialResult",
    "Trials",
    "bin_spikes",
    "create_connectivity",
    "estimate",
    "estimate_store",
    "estimate_trials",
    "peristimulus",
    "read_nwb",
    "report",
    "report_trials",
    "run",
    "score",
    "simulate",
    "tutorial",
]
