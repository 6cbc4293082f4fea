"""Connectivity matrices: generation and validation.

Orientation: ``A[j, i]`` is the weight from source neuron ``i`` onto target neuron ``j``,
as in ``x_{t+1} = sigmoid(A x_t + eps)``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ._validation import check_connectivity, check_int, check_open_closed, check_seed

__all__ = ["create_connectivity", "check_connectivity", "connectivity_digest"]


def create_connectivity(n_neurons, density=0.1, random_state=42):
    """Random sparse connectivity scaled to spectral norm ``1 / 1.01``.

    Each entry is 1 with probability ``density`` before scaling. With ``density=0.1``
    this is exactly the tutorial's matrix for the same ``random_state``, but it
    draws from its own ``RandomState`` and leaves the global NumPy RNG untouched.

    Parameters
    ----------
    n_neurons : int
        Number of neurons, ``>= 1``.
    density : float
        Probability of each directed connection, in ``(0, 1]``.
    random_state : int
        Seed for ``np.random.RandomState``.

    Returns
    -------
    A : ndarray, shape (n_neurons, n_neurons)
        ``A[j, i]`` is the weight from source ``i`` onto target ``j``. An all-zero
        draw (possible for tiny networks) is returned as zeros, unscaled.

    Examples
    --------
    >>> A = create_connectivity(6)
    >>> A.shape, round(float(np.linalg.norm(A, 2)), 6)
    ((6, 6), 0.990099)
    """
    n_neurons = check_int(n_neurons, "n_neurons", minimum=1)
    density = check_open_closed(density, "density", 0.0, 1.0, high_inclusive=True)
    random_state = check_seed(random_state, "random_state")
    rng = np.random.RandomState(random_state)
    A_0 = rng.choice([0, 1], size=(n_neurons, n_neurons), p=[1 - density, density])
    largest_singular_value = np.linalg.svd(A_0)[1][0]  # the tutorial's LAPACK path, bit for bit
    if largest_singular_value == 0:
        return A_0.astype(np.float64)
    return A_0 / (1.01 * largest_singular_value)


def connectivity_digest(A) -> str:
    """sha256 of ``A`` as C-contiguous float64 bytes: how a store recognises its connectivity."""
    return hashlib.sha256(np.ascontiguousarray(A, dtype=np.float64).tobytes()).hexdigest()
