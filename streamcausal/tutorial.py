"""The Neuromatch "Interventions" tutorial, reproduced with the course's behaviour.

Every function keeps the course's name, signature, orientation and global legacy
``np.random`` stream, so anyone following the course gets the course's numbers.
Arrays are the course's ``(n_neurons, timesteps)``, and the estimate ``R`` returned by
:func:`get_perturbed_connectivity_all_neurons` is the course's ``R[i, j] = corr(P_i, O_j)``
(source first), i.e. the *transpose* of ``A``'s orientation used everywhere else in
streamcausal. This module is the slow reference the fast engine is checked against.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_connectivity, check_index, check_int, check_seed

__all__ = [
    "sigmoid",
    "create_connectivity",
    "simulate_neurons",
    "simulate_neurons_perturb",
    "get_perturbed_connectivity_from_single_neuron",
    "get_perturbed_connectivity_all_neurons",
    "neuron_B",
    "two_neuron_difference_in_means",
    "score",
]


def sigmoid(x):
    """Element-wise logistic function ``1 / (1 + exp(-x))``, as in the course."""
    return 1 / (1 + np.exp(-x))


def create_connectivity(n_neurons, random_state=42):
    """The course's ``n x n`` connectivity: 10% of entries set, scaled to spectral norm 1/1.01.

    Seeds the global legacy RNG with ``random_state``, as the course does, so a
    following simulation continues the same stream. ``A[j, i]`` is the weight from
    source ``i`` onto target ``j``.
    """
    n_neurons = check_int(n_neurons, "n_neurons", minimum=1)
    random_state = check_seed(random_state, "random_state")
    np.random.seed(random_state)
    A_0 = np.random.choice([0, 1], size=(n_neurons, n_neurons), p=[0.9, 0.1])
    _, s_vals, _ = np.linalg.svd(A_0)
    return A_0 / (1.01 * s_vals[0])


def _check_timesteps(timesteps):
    return check_int(timesteps, "timesteps", minimum=2)


def simulate_neurons(A, timesteps, random_state=42):
    """Simulate ``x_{t+1} = sigmoid(A x_t + eps_t)`` from ``x_0 = 0``; returns ``(n, timesteps)``.

    Seeds the global legacy RNG with ``random_state`` and draws the noise with
    ``np.random.multivariate_normal`` exactly as the course does.
    """
    A = check_connectivity(A, dense=True)
    timesteps = _check_timesteps(timesteps)
    random_state = check_seed(random_state, "random_state")
    np.random.seed(random_state)
    n_neurons = len(A)
    X = np.zeros((n_neurons, timesteps))
    for t in range(timesteps - 1):
        epsilon = np.random.multivariate_normal(np.zeros(n_neurons), np.eye(n_neurons))
        X[:, t + 1] = sigmoid(A.dot(X[:, t]) + epsilon)
    return X


def simulate_neurons_perturb(A, timesteps):
    """As :func:`simulate_neurons`, but every even step is clamped to a random 0/1 pattern.

    Continues the global legacy RNG stream (the course does not reseed here).
    Returns ``(n, timesteps)``.
    """
    A = check_connectivity(A, dense=True)
    timesteps = _check_timesteps(timesteps)
    n_neurons = len(A)
    X = np.zeros((n_neurons, timesteps))
    for t in range(timesteps - 1):
        if t % 2 == 0:
            X[:, t] = np.random.choice([0, 1], size=n_neurons)
        epsilon = np.random.multivariate_normal(np.zeros(n_neurons), np.eye(n_neurons))
        X[:, t + 1] = sigmoid(A.dot(X[:, t]) + epsilon)
    return X


def _check_trajectory(perturbed_X, name="perturbed_X"):
    X = np.asarray(perturbed_X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 2:
        raise ValueError(f"{name} must be (n_neurons, timesteps) with timesteps >= 2, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} must be finite")
    return X


def _perturbations_and_outcomes(X):
    # Pair each clamped step with the step after it; an odd final step has no outcome.
    n_pairs = X.shape[1] // 2
    return X[:, : 2 * n_pairs : 2], X[:, 1 : 2 * n_pairs : 2]


def get_perturbed_connectivity_from_single_neuron(perturbed_X, selected_neuron):
    """Difference in means ``E[x_j | P_sel = 1] - E[x_j | P_sel = 0]`` for every ``j``.

    Returns shape ``(n_neurons,)``: the effect *of* ``selected_neuron`` *onto* each
    neuron, i.e. column ``selected_neuron`` of ``A``'s orientation.
    """
    X = _check_trajectory(perturbed_X)
    n_neurons = X.shape[0]
    selected_neuron = check_index(selected_neuron, "selected_neuron", n_neurons)
    neuron_perturbations, all_neuron_output = _perturbations_and_outcomes(X)
    neuron_perturbations = neuron_perturbations[selected_neuron]
    estimated_connectivity = np.zeros(n_neurons)
    one_idx = np.argwhere(neuron_perturbations == 1)
    zero_idx = np.argwhere(neuron_perturbations == 0)
    for neuron_idx in range(n_neurons):
        this_neuron_output = all_neuron_output[neuron_idx, :]
        estimated_connectivity[neuron_idx] = np.mean(this_neuron_output[one_idx]) - np.mean(
            this_neuron_output[zero_idx]
        )
    return estimated_connectivity


def get_perturbed_connectivity_all_neurons(perturbed_X):
    """The course's ``R = corr(P, O)`` block: ``R[i, j]`` is source ``i`` onto target ``j``.

    Note the course's orientation: ``R`` is comparable to ``A.T``.
    """
    X = _check_trajectory(perturbed_X)
    n_neurons = X.shape[0]
    P, Outs = _perturbations_and_outcomes(X)
    S = np.concatenate([P, Outs], axis=0)
    return np.corrcoef(S)[:n_neurons, n_neurons:]


def neuron_B(activity_of_A):
    """The two-neuron model: ``B = A + eps`` with ``eps ~ N(0, 1)`` from the global RNG."""
    activity_of_A = np.asarray(activity_of_A, dtype=np.float64)
    if activity_of_A.ndim != 1:
        raise ValueError(f"activity_of_A must be 1-D (T,), got shape {activity_of_A.shape}")
    noise = np.random.randn(activity_of_A.shape[0])
    return activity_of_A + noise


def two_neuron_difference_in_means(n_trials=5000, random_state=12):
    """The course's randomized trial: seed, draw B for A=1 then for A=0, return the mean difference.

    With the defaults this is the course's ``0.9907195190159408``.
    """
    n_trials = check_int(n_trials, "n_trials", minimum=1)
    random_state = check_seed(random_state, "random_state")
    np.random.seed(random_state)
    A_0 = np.zeros(n_trials)
    A_1 = np.ones(n_trials)
    B_1 = neuron_B(A_1)
    B_0 = neuron_B(A_0)
    return float(np.mean(B_1) - np.mean(B_0))


def score(A, R):
    """The course's score ``corrcoef(A.T.flatten(), R.flatten())[1, 0]`` for its ``R``."""
    A = check_connectivity(A, dense=True)
    R = np.asarray(R, dtype=np.float64)
    if R.shape != A.shape:
        raise ValueError(f"R must have A's shape {A.shape}, got {R.shape}")
    return float(np.corrcoef(A.transpose().flatten(), R.flatten())[1, 0])
