"""Every Numba kernel of streamcausal (private), by role: random streams, network stepping, moments.

* :mod:`.rng`: the random streams (SplitMix64 counters with a ziggurat; MT19937 legacy);
* :mod:`.network`: the sigmoid and network stepping, one step at a time or in
  parallel blocks of the clamp-all design's i.i.d. samples;
* :mod:`.moments`: the moments of a chunk of samples, by blocks merged in a fixed order.

They import in that order (``network`` uses both others). Kernels take arrays, tuples
of arrays and scalars only; public functions elsewhere validate their arguments before
calling in here. Compile options: :mod:`streamcausal._jit`.
"""
