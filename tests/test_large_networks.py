"""Large networks: the sparse draw, the iterative scale, sparse connectivity through checks, layout, digest and run()."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.sparse as sp

import streamcausal as sc
from streamcausal import network
from streamcausal._validation import check_connectivity
from streamcausal.engine import simulation
from streamcausal.io.store import StoreReader
from streamcausal.network import (
    TUTORIAL_MAX_NEURONS,
    compressed_columns,
    connectivity_digest,
    create_connectivity,
    dense_row_blocks,
    largest_singular_value,
)

SPECTRAL_NORM = 1 / 1.01


def random_pattern(n, density, seed):
    """A 0/1 sparse matrix (CSC) from NumPy coins: the reference for the iterative scale."""
    return sp.csc_array((np.random.default_rng(seed).random((n, n)) < density).astype(np.float64))


def sparse_forms(dense):
    """The same matrix in every SciPy sparse format, as arrays and as matrices."""
    forms = {}
    for fmt in ("csr", "csc", "coo", "lil", "dok", "bsr", "dia"):
        forms[f"{fmt}_array"] = sp.coo_array(dense).asformat(fmt)
        forms[f"{fmt}_matrix"] = sp.coo_matrix(dense).asformat(fmt)
    return forms


def messy_sparse(dense, seed=0):
    """``dense`` as a COO array with split duplicates and explicit zeros (its value is still ``dense``)."""
    rows, cols = np.nonzero(dense)
    values = dense[rows, cols]
    rng = np.random.default_rng(seed)
    part = rng.random(values.size)
    zeros_r, zeros_c = np.nonzero(dense == 0)
    pick = rng.choice(zeros_r.size, size=min(5, zeros_r.size), replace=False)
    all_rows = np.concatenate([rows, rows, zeros_r[pick]])
    all_cols = np.concatenate([cols, cols, zeros_c[pick]])
    all_values = np.concatenate([values * part, values - values * part, np.zeros(pick.size)])
    order = rng.permutation(all_rows.size)
    return sp.coo_array((all_values[order], (all_rows[order], all_cols[order])), shape=dense.shape)


# --------------------------------------------------------------------------- the iterative scale


@pytest.mark.parametrize("n, density, seed", [(300, 0.1, 0), (400, 0.02, 1), (500, 0.005, 2), (350, 0.5, 3),
                                              (200, 1.0, 4), (450, 0.003, 5)])
def test_largest_singular_value_matches_numpy_svd(n, density, seed):
    pattern = random_pattern(n, density, seed)
    want = np.linalg.svd(pattern.toarray(), compute_uv=False)[0]
    assert abs(largest_singular_value(pattern) - want) <= 1e-10 * want
    assert abs(largest_singular_value(pattern.toarray()) - want) <= 1e-10 * want


@pytest.mark.parametrize("n, density, seed", [(300, 0.1, 0), (500, 0.004, 2)])
def test_largest_singular_value_by_arpack_matches_numpy_svd(n, density, seed):
    pattern = random_pattern(n, density, seed)
    want = np.linalg.svd(pattern.toarray(), compute_uv=False)[0]
    for iterations in (0, 1, 3):  # ARPACK continues from the power iteration's vector
        assert abs(largest_singular_value(pattern, max_iterations=iterations) - want) <= 1e-10 * want


def test_largest_singular_value_of_signed_and_special_matrices():
    rng = np.random.default_rng(7)
    signed = sp.random_array((300, 300), density=0.05, rng=rng, format="csr") - 0.5 * sp.eye_array(300)
    want = np.linalg.svd(signed.toarray(), compute_uv=False)[0]
    assert abs(largest_singular_value(signed) - want) <= 1e-10 * want
    assert largest_singular_value(sp.csc_array((50, 50))) == 0.0
    assert largest_singular_value(np.zeros((3, 3))) == 0.0
    assert largest_singular_value(np.array([[2.5]])) == 2.5


def test_largest_singular_value_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"A must be a square.*\(2, 3\)"):
        largest_singular_value(sp.csr_array(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"rtol must be in \(0, 1\), got 0\.0"):
        largest_singular_value(np.eye(2), rtol=0)
    with pytest.raises(ValueError, match=r"max_iterations must be >= 0, got -1"):
        largest_singular_value(np.eye(2), max_iterations=-1)


# --------------------------------------------------------------------------- the sparse draw


def test_bernoulli_positions_are_every_trial_with_probability_p():
    # Every position, the first and the last included, is a success with probability p, independently.
    n_trials, p, draws = 40, 0.3, 4000
    hits = np.zeros(n_trials)
    pairs = 0
    for seed in range(draws):
        positions = network._bernoulli_positions(np.random.default_rng(seed), n_trials, p)
        assert positions.dtype == np.int64 and np.all(np.diff(positions) > 0)
        assert positions.size == 0 or (positions[0] >= 0 and positions[-1] < n_trials)
        hits[positions] += 1
        pairs += np.isin([0, n_trials - 1], positions).all()
    sd = np.sqrt(p * (1 - p) / draws)
    assert np.all(np.abs(hits / draws - p) <= 5 * sd)
    assert abs(pairs / draws - p * p) <= 5 * np.sqrt(p * p * (1 - p * p) / draws)


@pytest.mark.parametrize("p", [1.0, 1e-12])
def test_bernoulli_positions_at_the_extremes(p):
    positions = network._bernoulli_positions(np.random.default_rng(0), 10**6, p)
    assert np.array_equal(positions, np.arange(10**6)) if p == 1.0 else positions.size == 0


def test_sparse_draw_density_and_distribution():
    n, density = 2000, 0.05
    A = create_connectivity(n, density, random_state=11)
    assert isinstance(A, sp.csc_array) and A.shape == (n, n) and A.dtype == np.float64
    assert A.has_canonical_format and np.all(A.data == A.data[0]) and A.data[0] > 0
    sd = np.sqrt(density * (1 - density) / n**2)
    assert abs(A.nnz / n**2 - density) <= 5 * sd
    # Each source's targets and each target's sources are Binomial(n, density).
    per_source = np.diff(A.indptr)
    per_target = np.bincount(A.indices, minlength=n)
    mean, var = n * density, n * density * (1 - density)
    for counts in (per_source, per_target):
        assert abs(counts.mean() - mean) <= 5 * np.sqrt(var / n)
        assert abs(counts.var() / var - 1) <= 0.15
    # No region of the matrix is favoured (the diagonal included).
    quadrants = (A.toarray() != 0).reshape(2, n // 2, 2, n // 2).sum(axis=(1, 3)) / (n // 2) ** 2
    assert np.all(np.abs(quadrants - density) <= 5 * np.sqrt(density / (n // 2) ** 2))
    assert abs((A.diagonal() != 0).mean() - density) <= 5 * np.sqrt(density * (1 - density) / n)


def test_sparse_draw_has_spectral_norm_one_over_1_01():
    A = create_connectivity(1100, 0.02, random_state=3)
    norm = np.linalg.svd(A.toarray(), compute_uv=False)[0]
    assert abs(norm - SPECTRAL_NORM) <= 1e-10 * SPECTRAL_NORM


def test_sparse_draw_is_deterministic_by_seed():
    first = create_connectivity(1500, 0.01, random_state=5)
    again = create_connectivity(1500, 0.01, random_state=5)
    other = create_connectivity(1500, 0.01, random_state=6)
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert first.data[0].tobytes() == again.data[0].tobytes()
    assert not np.array_equal(first.indices[:100], other.indices[:100])


def test_sparse_draw_leaves_the_global_rng_alone():
    np.random.seed(3)
    before = np.random.get_state()
    create_connectivity(1200, 0.01, random_state=1)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]


def test_tiny_density_above_the_threshold_draws_zeros():
    A = create_connectivity(TUTORIAL_MAX_NEURONS + 1, 1e-12, random_state=0)
    assert A.nnz == 0 and A.shape == (TUTORIAL_MAX_NEURONS + 1,) * 2


# --------------------------------------------------------------------------- sparse connectivity


@pytest.fixture(scope="module")
def dense_and_sparse():
    dense = create_connectivity(40, 0.2, random_state=2)
    dense[3, 5] = -0.25  # a negative weight
    return dense


def test_check_connectivity_accepts_every_sparse_format(dense_and_sparse):
    dense = dense_and_sparse
    for name, form in {**sparse_forms(dense), "messy": messy_sparse(dense)}.items():
        checked = check_connectivity(form)
        assert isinstance(checked, sp.csc_array), name
        assert checked.dtype == np.float64 and checked.has_canonical_format, name
        assert np.all(checked.data != 0), name
        np.testing.assert_allclose(checked.toarray(), dense, rtol=1e-15, atol=1e-17, err_msg=name)
        assert np.array_equal(check_connectivity(form, dense=True), checked.toarray()), name


def test_check_connectivity_does_not_change_its_input(dense_and_sparse):
    messy = messy_sparse(dense_and_sparse)
    rows, cols, data = messy.coords[0].copy(), messy.coords[1].copy(), messy.data.copy()
    check_connectivity(messy)
    csc = sp.csc_array(messy)  # unsorted, with duplicates
    indices, values = csc.indices.copy(), csc.data.copy()
    check_connectivity(csc)
    assert np.array_equal(messy.coords[0], rows) and np.array_equal(messy.coords[1], cols)
    assert np.array_equal(messy.data, data)
    assert np.array_equal(csc.indices, indices) and np.array_equal(csc.data, values)


def test_check_connectivity_converts_sparse_bool_and_int():
    assert np.array_equal(check_connectivity(sp.csr_array(np.eye(3, dtype=bool))).toarray(), np.eye(3))
    assert np.array_equal(check_connectivity(sp.coo_matrix(np.eye(3, dtype=np.int8) * 2)).toarray(), 2 * np.eye(3))


def bad_sparse_cases():
    nan = sp.lil_array((4, 4))
    nan[2, 1], nan[0, 3] = np.nan, np.inf  # the first in row-major order is [0, 3], as the dense check says
    ninf = sp.csc_array(([1.0, -np.inf], ([0, 1], [1, 1])), shape=(2, 2))
    return [
        (sp.csr_array(np.ones((2, 3))), ValueError, r"W must be a square 2-D matrix, got shape \(2, 3\)"),
        (sp.coo_array(np.ones(3)), ValueError, r"W must be a square 2-D matrix, got shape \(3,\)"),
        (sp.csr_array((0, 0)), ValueError, r"W must not be empty, got shape \(0, 0\)"),
        (nan, ValueError, r"W must be finite, got inf at W\[0, 3\]"),
        (ninf, ValueError, r"W must be finite, got -inf at W\[1, 1\]"),
        (sp.csr_array(np.eye(2) * 1j), TypeError, r"W must be real, got complex dtype complex128"),
        (sp.csr_matrix(np.eye(2, dtype=np.complex64)), TypeError, r"W must be real, got complex dtype complex64"),
    ]


@pytest.mark.parametrize("value, error, match", bad_sparse_cases())
def test_check_connectivity_refuses_bad_sparse_input(value, error, match):
    with pytest.raises(error, match=match):
        check_connectivity(value, "W")


def test_bad_sparse_input_message_is_the_dense_one():
    dense = np.zeros((4, 4))
    dense[2, 1], dense[0, 3] = np.nan, np.inf
    with pytest.raises(ValueError) as dense_error:
        check_connectivity(dense)
    with pytest.raises(ValueError) as sparse_error:
        check_connectivity(sp.csr_array(dense))
    assert str(dense_error.value) == str(sparse_error.value)


def test_run_refuses_bad_sparse_connectivity():
    with pytest.raises(ValueError, match=r"A must be a square 2-D matrix, got shape \(3, 4\)"):
        sc.run(sp.csr_array(np.ones((3, 4))), 100)
    with pytest.raises(ValueError, match=r"A must be finite, got nan at A\[1, 0\]"):
        sc.run(sp.csr_array(np.array([[0.0, 0.1], [np.nan, 0.0]])), 100)
    with pytest.raises(TypeError, match=r"A must be real, got complex"):
        sc.run(sp.csr_array(np.eye(2) * 0.5j), 100)


def _engines_compressed_columns(A):
    """The engine's own function before it imported network.compressed_columns, kept as the reference."""
    targets, sources = np.nonzero(A)
    order = np.lexsort((targets, sources))  # by source, then target
    sources, targets = sources[order], targets[order]
    col_ptr = np.zeros(A.shape[1] + 1, dtype=np.int64)
    np.add.at(col_ptr, sources + 1, 1)
    return np.cumsum(col_ptr), targets.astype(np.int64), A[targets, sources].copy()


def test_compressed_columns_dense_is_the_engines(dense_and_sparse):
    assert simulation.compressed_columns is compressed_columns
    for dense in (dense_and_sparse, np.zeros((3, 3)), np.diag([0.0, -0.0, 2.0]), create_connectivity(30, 0.3, 1)):
        got, want = compressed_columns(dense), _engines_compressed_columns(dense)
        for g, w, dtype in zip(got, want, (np.int64, np.int64, np.float64)):
            assert g.dtype == dtype and np.array_equal(g, w)


def test_compressed_columns_sparse_equals_dense(dense_and_sparse):
    dense = dense_and_sparse
    want = compressed_columns(dense)
    forms = {**sparse_forms(dense), "messy": messy_sparse(dense), "checked": check_connectivity(sp.csr_array(dense))}
    for name, form in forms.items():
        got = compressed_columns(form)
        assert got[0].dtype == np.int64 and got[1].dtype == np.int64 and got[2].dtype == np.float64, name
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), name
        np.testing.assert_allclose(got[2], want[2], rtol=1e-15, err_msg=name)  # messy: a split sum
        if name != "messy":
            assert np.array_equal(got[2], want[2]), name


def test_compressed_columns_does_not_share_memory_with_its_input():
    A = check_connectivity(sp.csr_array(np.eye(4)))
    col_ptr, row_idx, weights = compressed_columns(A)
    weights[0] = 99.0
    assert A.data[0] == 1.0 and not np.shares_memory(col_ptr, A.indptr)


def test_digest_of_dense_input_is_unchanged(dense_and_sparse):
    for dense in (dense_and_sparse, np.asfortranarray(dense_and_sparse), dense_and_sparse.astype(np.float32)):
        want = hashlib.sha256(np.ascontiguousarray(dense, dtype=np.float64).tobytes()).hexdigest()
        assert connectivity_digest(dense) == want


def test_digest_of_sparse_input_is_its_dense_equals(dense_and_sparse, monkeypatch):
    dense = dense_and_sparse
    want = connectivity_digest(dense)
    monkeypatch.setattr(network, "_ROW_BLOCK_BYTES", 8 * 40 * 3)  # blocks of 3 rows, the last one short
    for name, form in {**sparse_forms(dense), "checked": check_connectivity(sp.coo_array(dense))}.items():
        assert connectivity_digest(form) == want, name
    large = create_connectivity(1200, 0.01, random_state=4)
    assert connectivity_digest(large) == connectivity_digest(large.toarray())


def test_dense_row_blocks_cover_the_matrix(dense_and_sparse):
    dense = dense_and_sparse
    messy = messy_sparse(dense)
    for source in (dense, sp.csr_array(dense), messy):
        for max_bytes in (1, 8 * 40 * 7, 10**9):
            blocks = [(start, block.copy()) for start, block in dense_row_blocks(source, max_bytes)]
            assert [start for start, _ in blocks] == list(range(0, 40, blocks[0][1].shape[0]))
            np.testing.assert_allclose(np.vstack([block for _, block in blocks]), dense, rtol=1e-15, atol=1e-17)


# --------------------------------------------------------------------------- run() with sparse input


def moments_arrays(result):
    return result.moments.to_arrays()


def assert_same_run(got, want):
    for key, value in moments_arrays(want).items():
        assert np.array_equal(moments_arrays(got)[key], value), key


def test_run_with_sparse_connectivity_equals_dense():
    dense = create_connectivity(40, 0.2, random_state=8)
    want = sc.run(dense, 6000, seed=3, chunk_steps=2048)
    for form in (sp.csr_array(dense), sp.coo_matrix(dense), messy_sparse(dense)):
        got = sc.run(form, 6000, seed=3, chunk_steps=2048)
        assert_same_run(got, want)
        assert got.parameters["connectivity_sha256"] == want.parameters["connectivity_sha256"]
    design = sc.Perturbation(every=3, p=0.3, clamp="stimulated")
    assert_same_run(sc.run(sp.csr_array(dense), 3000, design=design, seed=1, chunk_steps=1000),
                    sc.run(dense, 3000, design=design, seed=1, chunk_steps=1000))


def test_run_with_sparse_connectivity_above_the_blas_threshold():
    A = create_connectivity(TUTORIAL_MAX_NEURONS + 24, 0.01, random_state=1)  # sparse, BLAS-product path
    got = sc.run(A, 1200, seed=0)
    want = sc.run(A.toarray(), 1200, seed=0)
    assert_same_run(got, want)


def test_run_store_with_sparse_connectivity_resumes_with_dense(tmp_path):
    dense = create_connectivity(12, 0.3, random_state=2)
    path = tmp_path / "run.zarr"
    first = sc.run(sp.csr_array(dense), 4000, seed=0, chunk_steps=1000, store=sc.Store(path, checkpoint_seconds=0))
    again = sc.run(dense, 4000, seed=0, chunk_steps=1000, store=sc.Store(path, mode="r+"))
    assert_same_run(again, first)
    stored = StoreReader.open_run(path).connectivity()  # kept sparse (connectivity_sparse), never densified
    assert sp.issparse(stored) and np.array_equal(stored.toarray(), dense)
