"""streamcausal: causal connectivity of neural networks by perturbation, streamed out of core.

Orientation everywhere except :mod:`streamcausal.tutorial`: ``A[j, i]`` is the weight
from source neuron ``i`` onto target neuron ``j``, and every estimate has ``A``'s
orientation (``[target, source]``).
"""

from . import tutorial
from .network import create_connectivity

__version__ = "0.1.0"

__all__ = ["__version__", "create_connectivity", "tutorial"]
