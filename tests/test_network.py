"""streamcausal.create_connectivity and connectivity validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference import bad_connectivity_cases

import streamcausal
from streamcausal import tutorial
from streamcausal.network import check_connectivity, create_connectivity

SPECTRAL_NORM = 1 / 1.01


def global_state_equal(a, b):
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


# --------------------------------------------------------------------------- the tutorial's matrix


def test_public_api_exports_create_connectivity():
    assert streamcausal.create_connectivity is create_connectivity


@pytest.mark.parametrize("n, seed", [(1, 4), (2, 5), (3, 0), (4, 7), (5, 1), (6, 42), (6, 0), (6, 12), (8, 2**32 - 1)])
def test_density_one_tenth_is_the_tutorial_matrix_exactly(n, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these draws are not all zero: no 0/0 in the tutorial
        want = tutorial.create_connectivity(n, seed)
    got = create_connectivity(n, density=0.1, random_state=seed)
    assert got.dtype == np.float64 and got.shape == (n, n)
    assert np.array_equal(got, want)


def test_defaults_are_the_tutorial_defaults():
    assert np.array_equal(create_connectivity(6), tutorial.create_connectivity(6))
    assert np.array_equal(create_connectivity(6), create_connectivity(6, 0.1, 42))


LARGER = [(10, 0), (10, 42), (30, 1), (50, 0), (64, 1), (100, 42)]


@pytest.mark.parametrize("n, seed", LARGER)
def test_density_one_tenth_matches_tutorial_to_rounding(n, seed):
    got = create_connectivity(n, density=0.1, random_state=seed)
    want = tutorial.create_connectivity(n, seed)
    assert np.array_equal(got != 0, want != 0)
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)  # a few ulps


def test_density_one_tenth_is_the_tutorial_matrix_exactly_for_larger_n():
    mismatched = [
        (n, seed)
        for n, seed in LARGER
        if not np.array_equal(create_connectivity(n, 0.1, seed), tutorial.create_connectivity(n, seed))
    ]
    assert mismatched == []


def test_does_not_touch_the_global_rng():
    np.random.seed(2024)
    before = np.random.get_state()
    create_connectivity(20, density=0.3, random_state=5)
    create_connectivity(6)
    assert global_state_equal(np.random.get_state(), before)
    np.random.seed(2024)
    expected = np.random.random_sample(5)
    np.random.seed(2024)
    create_connectivity(20, density=0.3, random_state=5)
    assert np.array_equal(np.random.random_sample(5), expected)


def test_deterministic_for_a_seed_and_different_across_seeds():
    assert np.array_equal(create_connectivity(30, 0.2, 9), create_connectivity(30, 0.2, 9))
    assert not np.array_equal(create_connectivity(30, 0.2, 9), create_connectivity(30, 0.2, 10))


# --------------------------------------------------------------------------- densities


@pytest.mark.parametrize("density", [0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 0.999, 1.0, 1])
def test_any_density_in_half_open_unit_interval(density):
    n = 60
    A = create_connectivity(n, density=density, random_state=3)
    assert A.shape == (n, n) and A.dtype == np.float64
    assert np.all(np.isfinite(A)) and np.all(A >= 0)
    values = np.unique(A[A != 0])
    assert values.size == 1  # every connection has the same weight before and after scaling
    np.testing.assert_allclose(np.linalg.norm(A, 2), SPECTRAL_NORM, rtol=1e-12)
    fraction = np.count_nonzero(A) / n**2
    sd = np.sqrt(density * (1 - density) / n**2)
    assert abs(fraction - density) <= 5 * sd + 1e-12


def test_density_one_is_all_connected():
    n = 7
    A = create_connectivity(n, density=1.0, random_state=0)
    np.testing.assert_allclose(A, np.full((n, n), 1 / (1.01 * n)), rtol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(A, 2), SPECTRAL_NORM, rtol=1e-12)


@pytest.mark.parametrize("n, density, seed", [(1, 0.1, 0), (1, 0.1, 1), (2, 0.1, 2), (3, 0.1, 1), (6, 0.1, 2), (5, 1e-9, 0)])
def test_all_zero_draw_returns_zeros(n, density, seed):
    A = create_connectivity(n, density=density, random_state=seed)
    assert A.dtype == np.float64 and A.shape == (n, n)
    assert np.array_equal(A, np.zeros((n, n)))
    assert not np.any(np.isnan(A))


def test_single_neuron_with_a_self_connection():
    # n=1 and density=1: the only entry is the self-weight 1/1.01.
    np.testing.assert_allclose(create_connectivity(1, density=1.0), [[SPECTRAL_NORM]], rtol=1e-15)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "n_neurons, error, match",
    [
        (0, ValueError, r"n_neurons must be >= 1, got 0"),
        (-3, ValueError, r"n_neurons must be >= 1, got -3"),
        (True, TypeError, r"n_neurons must be an integer, got True"),
        (np.bool_(True), TypeError, r"n_neurons must be an integer, got .*True"),
        (2.5, TypeError, r"n_neurons must be an integer, got 2\.5"),
        ("6", TypeError, r"n_neurons must be an integer, got '6'"),
        (None, TypeError, r"n_neurons must be an integer, got None"),
    ],
)
def test_bad_n_neurons(n_neurons, error, match):
    with pytest.raises(error, match=match):
        create_connectivity(n_neurons)


@pytest.mark.parametrize(
    "density, error, match",
    [
        (0, ValueError, r"density must be in \(0, 1\], got 0\.0"),
        (0.0, ValueError, r"density must be in \(0, 1\], got 0\.0"),
        (-0.1, ValueError, r"density must be in \(0, 1\], got -0\.1"),
        (1.5, ValueError, r"density must be in \(0, 1\], got 1\.5"),
        (1.0000001, ValueError, r"density .*got 1\.0000001"),
        (float("nan"), ValueError, r"density must be finite, got nan"),
        (float("inf"), ValueError, r"density must be finite, got inf"),
        ("0.1", TypeError, r"density must be a real number, got '0\.1'"),
        (True, TypeError, r"density must be a real number, got True"),
        (None, TypeError, r"density must be a real number, got None"),
        (0.1j, TypeError, r"density must be a real number, got 0\.1j"),
    ],
)
def test_bad_density(density, error, match):
    with pytest.raises(error, match=match):
        create_connectivity(6, density=density)


@pytest.mark.parametrize(
    "seed, error, match",
    [
        (-1, ValueError, r"random_state must be >= 0, got -1"),
        (2**32, ValueError, r"random_state must be <= 4294967295, got 4294967296"),
        (1.5, TypeError, r"random_state must be an integer, got 1\.5"),
        ("0", TypeError, r"random_state must be an integer, got '0'"),
        (False, TypeError, r"random_state must be an integer, got False"),
        (None, TypeError, r"random_state must be an integer, got None"),
    ],
)
def test_bad_random_state(seed, error, match):
    with pytest.raises(error, match=match):
        create_connectivity(6, random_state=seed)


def test_integer_like_arguments_are_accepted():
    want = create_connectivity(6, 0.1, 42)
    assert np.array_equal(create_connectivity(np.int64(6), np.float64(0.1), np.uint32(42)), want)
    assert np.array_equal(create_connectivity(6.0, 0.1, 42.0), want)  # integral floats are integers


@pytest.mark.parametrize("value, error, match", bad_connectivity_cases("A"))
def test_check_connectivity_refuses(value, error, match):
    with pytest.raises(error, match=match):
        check_connectivity(value)


def test_check_connectivity_names_its_argument():
    with pytest.raises(ValueError, match=r"W must be a square.*\(2, 3\)"):
        check_connectivity(np.ones((2, 3)), "W")


def test_check_connectivity_accepts_and_converts():
    out = check_connectivity([[1, 0], [0, 1]])
    assert out.dtype == np.float64 and out.flags.c_contiguous
    assert np.array_equal(out, np.eye(2))
    assert np.array_equal(check_connectivity(np.eye(3, dtype=bool)), np.eye(3))
    fortran = np.asfortranarray(np.arange(9.0).reshape(3, 3))
    converted = check_connectivity(fortran)
    assert converted.flags.c_contiguous and np.array_equal(converted, fortran)
    assert np.array_equal(check_connectivity(np.float32([[0.5]])), [[0.5]])


# --------------------------------------------------------------------------- large networks: the threshold and `sparse`


def test_up_to_the_threshold_is_the_tutorials_path_as_an_ndarray():
    from streamcausal.network import TUTORIAL_MAX_NEURONS

    assert TUTORIAL_MAX_NEURONS == 1000
    A = create_connectivity(150, random_state=3)
    assert type(A) is np.ndarray
    np.testing.assert_allclose(A, tutorial.create_connectivity(150, 3), rtol=1e-14, atol=0)  # a few ulps at most


def test_sparse_true_below_the_threshold_is_the_same_matrix():
    import scipy.sparse as sp

    dense = create_connectivity(50, 0.2, 1)
    as_sparse = create_connectivity(50, 0.2, 1, sparse=True)
    assert isinstance(as_sparse, sp.csc_array) and as_sparse.has_canonical_format
    assert np.array_equal(as_sparse.toarray(), dense)
    assert type(create_connectivity(50, 0.2, 1, sparse=False)) is np.ndarray


def test_above_the_threshold_is_sparse_unless_asked_otherwise():
    import scipy.sparse as sp

    A = create_connectivity(1001, 0.01, 2)
    assert isinstance(A, sp.csc_array) and A.shape == (1001, 1001)
    dense = create_connectivity(1001, 0.01, 2, sparse=False)
    assert type(dense) is np.ndarray and np.array_equal(dense, A.toarray())
    assert np.array_equal(create_connectivity(1001, 0.01, 2, sparse=True).toarray(), dense)


@pytest.mark.parametrize("value", ["yes", 1, 0, "csc"])
def test_bad_sparse_argument(value):
    with pytest.raises(TypeError, match=r"sparse must be None, True or False, got"):
        create_connectivity(6, sparse=value)
