"""Synthetic stimulation experiments with planted connectivity, for the trial estimator's tests.

A small rate network of linear-nonlinear units is driven by noise; at each trial onset the
targeted units get a brief pulse. What is "recorded" is an indicator-like trace: the rates
filtered by an exponential kernel (a slow calcium-like decay) plus measurement noise.
Orientation as everywhere: ``W[j, i]`` is the weight from source ``i`` onto responder ``j``.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from streamcausal.experiment import Trials

__all__ = ["planted_experiment", "planted_weights"]


def planted_weights(n: int, rng, density: float = 0.12, scale: float = 0.8) -> np.ndarray:
    """Sparse ``(n, n)`` weights ``W[j, i]``, zero diagonal, signs mixed (2/3 excitatory)."""
    present = rng.random((n, n)) < density
    np.fill_diagonal(present, False)
    sign = np.where(rng.random((n, n)) < 2 / 3, 1.0, -1.0)
    magnitude = rng.uniform(0.5, 1.0, size=(n, n))
    return np.where(present, sign * magnitude * scale, 0.0)


def planted_experiment(
    n: int = 20,
    n_trials: int = 600,
    *,
    max_targets: int = 4,
    sham: float = 0.1,
    ensembles: int | None = None,
    rate: float = 30.0,
    isi: float = 1.5,
    weights=None,
    scale: float = 0.5,
    timestamps: bool = False,
    pulse: float = 3.0,
    pulse_s: float = 0.2,
    tau_rate: float = 0.05,
    tau_indicator: float = 0.4,
    noise: float = 0.3,
    measurement_noise: float = 0.2,
    seed: int = 0,
):
    """Simulate a stimulation experiment on a planted network.

    Parameters
    ----------
    n : number of neurons (all are potential sources).
    n_trials : number of trials; each targets 1..max_targets distinct units at random,
        except a fraction ``sham`` that targets none.
    ensembles : if given, the units are split into this many contiguous groups and each
        trial draws its targets from one group picked at random, so that units of a group
        are often targeted together (co-targeting, as with spatially clustered holographic
        targets).
    rate : frame rate (Hz); trial onsets are about ``isi`` seconds apart, jittered and not
        aligned to frames.
    weights : None (a random sparse network, :func:`planted_weights`), ``"null"`` (no
        connections) or an ``(n, n)`` array ``W[j, i]``.
    scale : largest weight magnitude of the random network.
    timestamps : if True, frame times are irregular (jittered around ``f / rate``) and
        returned as an array; otherwise the rate is returned.

    Dynamics per frame (``dt = 1 / rate``): ``r <- r + dt / tau_rate * (-r + tanh(W r + u)) +
    noise * sqrt(dt) * eps``, where ``u`` is the pulse (``pulse`` for ``pulse_s`` seconds after the
    onset) on the targeted units. Recorded: ``r`` filtered by ``exp(-t / tau_indicator)``
    (unit gain) plus ``measurement_noise`` white noise.

    Returns
    -------
    activity : float32 (T, n)
    timing : float rate, or float64 (T,) times when ``timestamps``
    trials : Trials with ``n_sources = n``
    W : float64 (n, n)
    """
    rng = np.random.default_rng(seed)
    if weights is None:
        W = planted_weights(n, rng, scale=scale)
    elif isinstance(weights, str) and weights == "null":
        W = np.zeros((n, n))
    else:
        W = np.asarray(weights, dtype=np.float64)
    dt = 1.0 / rate
    lead = 1.0
    onsets = lead + isi * np.arange(n_trials) + rng.uniform(-0.2, 0.2, size=n_trials) * isi
    n_frames = int(np.ceil((onsets[-1] + isi + lead) * rate))
    if timestamps:
        jitter = rng.uniform(-0.3, 0.3, size=n_frames) * dt
        times = np.arange(n_frames) * dt + jitter
    else:
        times = np.arange(n_frames) * dt

    counts = rng.integers(1, max_targets + 1, size=n_trials)
    counts[rng.random(n_trials) < sham] = 0
    if ensembles is None:
        targets = [np.sort(rng.choice(n, size=c, replace=False)) for c in counts]
    else:
        groups = np.array_split(np.arange(n), ensembles)
        picks = rng.integers(0, ensembles, size=n_trials)
        targets = [np.sort(rng.choice(groups[g], size=min(c, groups[g].size), replace=False))
                   for g, c in zip(picks, counts)]

    # input u (T, n): the pulse on the targeted units over the frames in [onset, onset + pulse_s)
    u = np.zeros((n_frames, n))
    first = np.searchsorted(times, onsets, side="left")
    last = np.searchsorted(times, onsets + pulse_s, side="left")
    for k in range(n_trials):
        u[first[k] : last[k], targets[k]] += pulse

    eps = rng.standard_normal((n_frames, n)) * (noise * np.sqrt(dt))
    leak = dt / tau_rate
    r = np.zeros(n)
    rates = np.empty((n_frames, n))
    for f in range(n_frames):
        r = r + leak * (np.tanh(W @ r + u[f]) - r) + eps[f]
        rates[f] = r

    decay = np.exp(-dt / tau_indicator)
    trace = lfilter([1.0 - decay], [1.0, -decay], rates, axis=0)
    activity = trace + measurement_noise * rng.standard_normal(trace.shape)
    trials = Trials(onsets, targets, n_sources=n)
    return activity.astype(np.float32), (times if timestamps else float(rate)), trials, W
