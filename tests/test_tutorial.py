"""streamcausal.tutorial: the course's numbers, its estimators against each other, its validation."""

from __future__ import annotations

import numpy as np
import pytest
from reference import bad_connectivity_cases, reference_correlation, reference_effect

from streamcausal import tutorial

DIFFERENCE_IN_MEANS = 0.9907195190159408
ALL_NEURON_SCORE = 0.987593404378358
PINNED = 1e-12


@pytest.fixture(scope="module")
def course_run():
    """The course's n=6 run: create_connectivity(6), then simulate_neurons_perturb(A, 5000)."""
    A = tutorial.create_connectivity(6)
    X = tutorial.simulate_neurons_perturb(A, 5000)  # continues the stream seeded with 42
    return A, X


# --------------------------------------------------------------------------- the pinned numbers


def test_two_neuron_difference_in_means_is_the_course_number():
    assert abs(tutorial.two_neuron_difference_in_means() - DIFFERENCE_IN_MEANS) <= PINNED
    assert abs(tutorial.two_neuron_difference_in_means(5000, 12) - DIFFERENCE_IN_MEANS) <= PINNED
    assert isinstance(tutorial.two_neuron_difference_in_means(), float)


def test_two_neuron_trial_by_hand_is_the_course_number():
    np.random.seed(12)
    B_1 = tutorial.neuron_B(np.ones(5000))  # B for A=1 is drawn first
    B_0 = tutorial.neuron_B(np.zeros(5000))
    assert abs(np.mean(B_1) - np.mean(B_0) - DIFFERENCE_IN_MEANS) <= PINNED


def test_two_neuron_trial_order_and_seed_matter():
    np.random.seed(12)
    B_0 = tutorial.neuron_B(np.zeros(5000))
    B_1 = tutorial.neuron_B(np.ones(5000))
    assert abs(np.mean(B_1) - np.mean(B_0) - DIFFERENCE_IN_MEANS) > 1e-6
    assert abs(tutorial.two_neuron_difference_in_means(random_state=13) - DIFFERENCE_IN_MEANS) > 1e-6
    # Any seed's trial estimates the true effect 1 (sd sqrt(2/5000) = 0.02).
    assert abs(tutorial.two_neuron_difference_in_means(random_state=13) - 1.0) < 0.1


def test_neuron_b_adds_standard_normal_noise_from_the_global_stream():
    np.random.seed(3)
    got = tutorial.neuron_B(np.arange(4.0))
    np.random.seed(3)
    assert np.array_equal(got, np.arange(4.0) + np.random.randn(4))


def test_all_neuron_estimate_is_the_course_number(course_run):
    A, X = course_run
    R = tutorial.get_perturbed_connectivity_all_neurons(X)
    assert abs(np.corrcoef(A.T.flatten(), R.flatten())[0, 1] - ALL_NEURON_SCORE) <= PINNED
    assert abs(tutorial.score(A, R) - ALL_NEURON_SCORE) <= PINNED


def test_all_neuron_estimate_by_hand_is_the_course_number():
    np.random.seed(42)  # as create_connectivity does, then the same draws by hand
    A_0 = np.random.choice([0, 1], size=(6, 6), p=[0.9, 0.1])
    A = A_0 / (1.01 * np.linalg.svd(A_0)[1][0])
    assert np.array_equal(A, tutorial.create_connectivity(6))
    np.random.seed(42)
    np.random.choice([0, 1], size=(6, 6), p=[0.9, 0.1])
    X = np.zeros((6, 5000))
    for t in range(4999):
        if t % 2 == 0:
            X[:, t] = np.random.choice([0, 1], size=6)
        epsilon = np.random.multivariate_normal(np.zeros(6), np.eye(6))
        X[:, t + 1] = 1 / (1 + np.exp(-(A.dot(X[:, t]) + epsilon)))
    R = np.corrcoef(np.concatenate([X[:, 0:5000:2], X[:, 1:5000:2]]))[:6, 6:]
    assert abs(np.corrcoef(A.T.flatten(), R.flatten())[0, 1] - ALL_NEURON_SCORE) <= PINNED


# --------------------------------------------------------------------------- estimators


def test_all_neuron_estimate_is_corrcoef_of_pairs_in_course_orientation(course_run):
    _, X = course_run
    R = tutorial.get_perturbed_connectivity_all_neurons(X)
    assert R.shape == (6, 6)
    P, O = X[:, 0::2].T, X[:, 1::2].T  # (samples, n): perturbation and outcome
    # reference_correlation is [target, source]; the course's R is [source, target].
    np.testing.assert_allclose(R, reference_correlation(P, O).T, rtol=0, atol=1e-12)


def test_single_neuron_estimate_is_difference_in_means(course_run):
    _, X = course_run
    P, O = X[:, 0::2].T, X[:, 1::2].T
    want = reference_effect(P, O)  # [target, source]
    for i in range(6):
        got = tutorial.get_perturbed_connectivity_from_single_neuron(X, i)
        assert got.shape == (6,)
        np.testing.assert_allclose(got, want[:, i], rtol=0, atol=1e-12)


@pytest.mark.parametrize("ddof", [0, 1])
def test_single_neuron_estimate_is_correlation_times_std_ratio(course_run, ddof):
    # For a 0/1 perturbation P_i, the difference in means is cov(P_i, O_j) / var(P_i), and the
    # correlation is cov(P_i, O_j) / (std(P_i) std(O_j)); so with the same ddof throughout,
    # difference = R[i, j] * std(O_j) / std(P_i). ddof cancels, so both give the same answer.
    _, X = course_run
    R = tutorial.get_perturbed_connectivity_all_neurons(X)
    P, O = X[:, 0:5000:2], X[:, 1:5000:2]  # the course's (n, samples) blocks
    std_P = P.std(axis=1, ddof=ddof)
    std_O = O.std(axis=1, ddof=ddof)
    for i in range(6):
        difference = tutorial.get_perturbed_connectivity_from_single_neuron(X, i)
        np.testing.assert_allclose(difference, R[i, :] * std_O / std_P[i], rtol=0, atol=1e-10)


@pytest.mark.parametrize("n, T, seed", [(4, 2001, 4), (10, 1000, 5)])
def test_single_and_all_neuron_relation_on_other_runs(n, T, seed):
    A = tutorial.create_connectivity(n, seed)
    if np.isnan(A).any():
        pytest.skip("all-zero draw")
    X = tutorial.simulate_neurons_perturb(A, T)
    R = tutorial.get_perturbed_connectivity_all_neurons(X)
    P, O = X[:, 0 : 2 * (T // 2) : 2], X[:, 1 : 2 * (T // 2) : 2]
    assert P.shape[1] == T // 2  # an odd final step has no outcome and is dropped
    for i in range(n):
        difference = tutorial.get_perturbed_connectivity_from_single_neuron(X, i)
        np.testing.assert_allclose(difference, R[i] * O.std(axis=1) / P[i].std(), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- simulations


def test_simulate_neurons_reseeds_and_uses_multivariate_normal():
    A = tutorial.create_connectivity(5, 4)
    X = tutorial.simulate_neurons(A, 50, random_state=3)
    assert X.shape == (5, 50)
    assert np.array_equal(X[:, 0], np.zeros(5))
    assert np.array_equal(X, tutorial.simulate_neurons(A, 50, random_state=3))
    np.random.seed(3)
    want = np.zeros((5, 50))
    for t in range(49):
        want[:, t + 1] = tutorial.sigmoid(A.dot(want[:, t]) + np.random.standard_normal(5))
    np.testing.assert_allclose(X, want, rtol=0, atol=1e-15)
    assert np.array_equal(tutorial.simulate_neurons(A, 50), tutorial.simulate_neurons(A, 50, 42))


def test_simulate_neurons_perturb_continues_the_global_stream():
    A = tutorial.create_connectivity(6)
    np.random.seed(0)
    first = tutorial.simulate_neurons_perturb(A, 101)
    second = tutorial.simulate_neurons_perturb(A, 101)
    assert not np.array_equal(first, second)
    np.random.seed(0)
    assert np.array_equal(tutorial.simulate_neurons_perturb(A, 101), first)
    assert first.shape == (6, 101)
    assert set(np.unique(first[:, 0:100:2])) <= {0.0, 1.0}  # clamped steps
    assert np.all((first[:, 1::2] > 0) & (first[:, 1::2] < 1))  # sigmoid outcomes
    assert np.all((first[:, 100] > 0) & (first[:, 100] < 1))  # the last even step is not clamped


def test_sigmoid():
    np.testing.assert_allclose(tutorial.sigmoid(np.array([0.0, 1.0, -1.0])), [0.5, 1 / (1 + np.e**-1), 1 / (1 + np.e)])


# --------------------------------------------------------------------------- validation

A6 = tutorial.create_connectivity(6)

BAD_TIMESTEPS = [
    (1, ValueError, r"timesteps must be >= 2, got 1"),
    (0, ValueError, r"timesteps must be >= 2, got 0"),
    (-5, ValueError, r"timesteps must be >= 2, got -5"),
    (True, TypeError, r"timesteps must be an integer, got True"),
    (2.5, TypeError, r"timesteps must be an integer, got 2\.5"),
    ("10", TypeError, r"timesteps must be an integer, got '10'"),
    (None, TypeError, r"timesteps must be an integer, got None"),
]

BAD_SEEDS = [
    (-1, ValueError, r"random_state must be >= 0, got -1"),
    (2**32, ValueError, r"random_state must be <= 4294967295, got 4294967296"),
    (1.5, TypeError, r"random_state must be an integer, got 1\.5"),
    ("0", TypeError, r"random_state must be an integer, got '0'"),
    (True, TypeError, r"random_state must be an integer, got True"),
]


@pytest.mark.parametrize("value, error, match", bad_connectivity_cases("A"))
def test_simulations_refuse_bad_matrices(value, error, match):
    with pytest.raises(error, match=match):
        tutorial.simulate_neurons(value, 10)
    with pytest.raises(error, match=match):
        tutorial.simulate_neurons_perturb(value, 10)
    with pytest.raises(error, match=match):
        tutorial.score(value, np.zeros((2, 2)))


@pytest.mark.parametrize("timesteps, error, match", BAD_TIMESTEPS)
def test_simulations_refuse_bad_timesteps(timesteps, error, match):
    with pytest.raises(error, match=match):
        tutorial.simulate_neurons(A6, timesteps)
    with pytest.raises(error, match=match):
        tutorial.simulate_neurons_perturb(A6, timesteps)


@pytest.mark.parametrize("seed, error, match", BAD_SEEDS)
def test_seeded_functions_refuse_bad_random_state(seed, error, match):
    with pytest.raises(error, match=match):
        tutorial.simulate_neurons(A6, 10, random_state=seed)
    with pytest.raises(error, match=match):
        tutorial.create_connectivity(6, random_state=seed)
    with pytest.raises(error, match=match):
        tutorial.two_neuron_difference_in_means(random_state=seed)


@pytest.mark.parametrize(
    "n_neurons, error, match",
    [
        (0, ValueError, r"n_neurons must be >= 1, got 0"),
        (-1, ValueError, r"n_neurons must be >= 1, got -1"),
        (True, TypeError, r"n_neurons must be an integer, got True"),
        (6.5, TypeError, r"n_neurons must be an integer, got 6\.5"),
        ("6", TypeError, r"n_neurons must be an integer, got '6'"),
    ],
)
def test_create_connectivity_refuses_bad_n_neurons(n_neurons, error, match):
    with pytest.raises(error, match=match):
        tutorial.create_connectivity(n_neurons)


@pytest.mark.parametrize(
    "n_trials, error, match",
    [
        (0, ValueError, r"n_trials must be >= 1, got 0"),
        (True, TypeError, r"n_trials must be an integer, got True"),
        (10.5, TypeError, r"n_trials must be an integer, got 10\.5"),
        ("5000", TypeError, r"n_trials must be an integer, got '5000'"),
    ],
)
def test_two_neuron_trial_refuses_bad_n_trials(n_trials, error, match):
    with pytest.raises(error, match=match):
        tutorial.two_neuron_difference_in_means(n_trials)


def test_neuron_b_refuses_non_vector():
    with pytest.raises(ValueError, match=r"activity_of_A must be 1-D.*\(2, 2\)"):
        tutorial.neuron_B(np.ones((2, 2)))


@pytest.fixture(scope="module")
def small_run():
    np.random.seed(1)
    return tutorial.simulate_neurons_perturb(A6, 40)


@pytest.mark.parametrize(
    "selected, error, match",
    [
        (6, ValueError, r"selected_neuron must be in \[0, 6\), got 6"),
        (100, ValueError, r"selected_neuron must be in \[0, 6\), got 100"),
        (-1, ValueError, r"selected_neuron must be in \[0, 6\), got -1"),
        (True, TypeError, r"selected_neuron must be an integer, got True"),
        (np.bool_(False), TypeError, r"selected_neuron must be an integer, got .*False"),
        (1.5, TypeError, r"selected_neuron must be an integer, got 1\.5"),
        ("1", TypeError, r"selected_neuron must be an integer, got '1'"),
        (None, TypeError, r"selected_neuron must be an integer, got None"),
    ],
)
def test_single_neuron_estimate_refuses_bad_selected_neuron(small_run, selected, error, match):
    with pytest.raises(error, match=match):
        tutorial.get_perturbed_connectivity_from_single_neuron(small_run, selected)


def test_single_neuron_estimate_accepts_integer_likes(small_run):
    want = tutorial.get_perturbed_connectivity_from_single_neuron(small_run, 2)
    assert np.array_equal(tutorial.get_perturbed_connectivity_from_single_neuron(small_run, np.int64(2)), want)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.ones(10), r"perturbed_X must be \(n_neurons, timesteps\).*\(10,\)"),
        (np.ones((6, 1)), r"perturbed_X must be \(n_neurons, timesteps\).*\(6, 1\)"),
        (np.ones((0, 10)), r"perturbed_X must be \(n_neurons, timesteps\).*\(0, 10\)"),
        (np.full((2, 4), np.nan), r"perturbed_X must be finite"),
    ],
)
def test_estimators_refuse_bad_trajectories(X, match):
    with pytest.raises(ValueError, match=match):
        tutorial.get_perturbed_connectivity_all_neurons(X)
    with pytest.raises(ValueError, match=match):
        tutorial.get_perturbed_connectivity_from_single_neuron(X, 0)


def test_score_refuses_mismatched_estimate():
    with pytest.raises(ValueError, match=r"R must have A's shape \(6, 6\), got \(5, 5\)"):
        tutorial.score(A6, np.zeros((5, 5)))
