"""Connectivity matrices: generation (the tutorial's draw; a sparse draw for large n), their layout and digest.

Orientation: ``A[j, i]`` is the weight from source neuron ``i`` onto target neuron ``j``,
as in ``x_{t+1} = sigmoid(A x_t + eps)``. A connectivity is a dense ndarray or a SciPy
sparse matrix/array (see :func:`~streamcausal._validation.check_connectivity`).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from ._validation import (
    canonical_csc,
    check_connectivity,
    check_int,
    check_open_closed,
    check_seed,
    describe,
    is_sparse,
)

__all__ = [
    "TUTORIAL_MAX_NEURONS",
    "check_connectivity",
    "compressed_columns",
    "connectivity_digest",
    "create_connectivity",
    "dense_row_blocks",
    "largest_singular_value",
]

# Up to this many neurons create_connectivity is the tutorial's draw, bit for bit: n^2
# coins and a full LAPACK SVD (about 2 s at n = 1000 on 2 cores, 45 s at n = 3000).
TUTORIAL_MAX_NEURONS = 1000

SCALE = 1.01  # the tutorial's: A is scaled to spectral norm 1 / 1.01
_RESIDUAL_RTOL = 1e-12  # power iteration stops once ||A^T A x - lambda x|| <= this * lambda
_POWER_ITERATIONS = 100  # then ARPACK takes over (a small spectral gap)
_ROW_BLOCK_BYTES = 2**24  # dense row blocks streamed from a sparse A: 16 MiB each


def create_connectivity(n_neurons, density=0.1, random_state=42, *, sparse=None):
    """Random connectivity scaled to spectral norm ``1 / 1.01``; each entry is 1 with probability ``density``.

    Up to ``TUTORIAL_MAX_NEURONS`` (1000) neurons this is the tutorial's matrix: ``n^2``
    coins from ``np.random.RandomState(random_state).choice`` and the largest singular
    value from a full SVD; with ``density=0.1`` it is exactly the tutorial's matrix for
    the same ``random_state`` (but it leaves the global NumPy RNG untouched).

    Above that size the connections are drawn sparsely, from
    ``np.random.default_rng(random_state)`` (PCG64): the positions of the successes of
    ``n^2`` Bernoulli(``density``) trials in column-major order, drawn as geometric gaps
    between successes (the same distribution as ``n^2`` coins, in O(number of
    connections) time and memory), and the scale comes from
    :func:`largest_singular_value` (power iteration, ARPACK when the spectral gap is
    small; relative error below 1e-10). These matrices are not the tutorial's bits.

    Parameters
    ----------
    n_neurons : int
        Number of neurons, ``>= 1``.
    density : float
        Probability of each directed connection, in ``(0, 1]``.
    random_state : int
        Seed in ``[0, 2**32)``.
    sparse : None, True or False
        The type returned: ``None`` (default) an ndarray up to ``TUTORIAL_MAX_NEURONS``
        neurons and a ``scipy.sparse.csc_array`` above; ``True`` always a ``csc_array``;
        ``False`` always an ndarray (``n^2 * 8`` bytes). The draw does not depend on it.

    Returns
    -------
    A : ndarray or scipy.sparse.csc_array, shape (n_neurons, n_neurons)
        ``A[j, i]`` is the weight from source ``i`` onto target ``j``; every connection
        has the same weight. An all-zero draw (possible for tiny networks or densities)
        is returned as zeros, unscaled.

    Examples
    --------
    >>> A = create_connectivity(6)
    >>> A.shape, round(float(np.linalg.norm(A, 2)), 6)
    ((6, 6), 0.990099)
    >>> B = create_connectivity(2000, density=0.01, random_state=1)
    >>> type(B).__name__, B.shape
    ('csc_array', (2000, 2000))
    """
    n_neurons = check_int(n_neurons, "n_neurons", minimum=1)
    density = check_open_closed(density, "density", 0.0, 1.0, high_inclusive=True)
    random_state = check_seed(random_state, "random_state")
    if sparse is not None and not isinstance(sparse, (bool, np.bool_)):
        raise TypeError(f"sparse must be None, True or False, got {describe(sparse)}")
    if n_neurons <= TUTORIAL_MAX_NEURONS:
        A = _tutorial_connectivity(n_neurons, density, random_state)
        if sparse:
            import scipy.sparse

            return scipy.sparse.csc_array(A)
        return A
    A = _sparse_connectivity(n_neurons, density, random_state)
    return A.toarray() if sparse is not None and not sparse else A


def _tutorial_connectivity(n_neurons, density, random_state):
    """The tutorial's draw and scale, bit for bit (n^2 coins, full SVD)."""
    rng = np.random.RandomState(random_state)
    A_0 = rng.choice([0, 1], size=(n_neurons, n_neurons), p=[1 - density, density])
    largest = np.linalg.svd(A_0)[1][0]  # the tutorial's LAPACK path, bit for bit
    if largest == 0:
        return A_0.astype(np.float64)
    return A_0 / (SCALE * largest)


def _sparse_connectivity(n_neurons, density, random_state):
    """A ``csc_array`` of Bernoulli(density) connections drawn sparsely, scaled to spectral norm 1 / 1.01."""
    import scipy.sparse

    positions = _bernoulli_positions(np.random.default_rng(random_state), n_neurons * n_neurons, density)
    # Column-major positions: column (source) = position // n, row (target) = position % n,
    # already sorted by column then row, as a canonical CSC matrix is.
    sources = positions // n_neurons
    positions -= sources * n_neurons  # now the targets
    index_dtype = np.int32 if positions.size < 2**31 and n_neurons < 2**31 else np.int64
    col_ptr = np.zeros(n_neurons + 1, dtype=index_dtype)
    np.cumsum(np.bincount(sources, minlength=n_neurons), out=col_ptr[1:])
    del sources
    A = scipy.sparse.csc_array((np.ones(positions.size), positions.astype(index_dtype), col_ptr),
                               shape=(n_neurons, n_neurons))
    largest = largest_singular_value(A)
    if largest > 0:
        A.data[:] = 1.0 / (SCALE * largest)  # = A_0 / (1.01 * largest) entry by entry, as the tutorial scales
    return A


def _bernoulli_positions(rng, n_trials, p):
    """Sorted indices of the successes among ``n_trials`` Bernoulli(p) trials, as int64.

    The gaps between successive successes are independent Geometric(p) (support 1, 2, ...),
    so drawing the gaps is drawing every trial, in time proportional to the successes.
    """
    expected = n_trials * p
    batch = int(expected + 6.0 * math.sqrt(expected * (1.0 - p)) + 64)  # almost always one batch
    pieces, last = [], -1  # last: the position of the last success drawn so far
    while last < n_trials:
        gaps = rng.geometric(p, size=batch)
        np.minimum(gaps, n_trials + 1, out=gaps)  # a longer gap ends past the last trial anyway; no overflow
        positions = np.cumsum(gaps, out=gaps)
        positions += last
        pieces.append(positions)
        last = int(positions[-1])
        batch = 64 + int(6.0 * math.sqrt(batch))
    positions = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return positions[: np.searchsorted(positions, n_trials)]


def largest_singular_value(A, *, rtol=_RESIDUAL_RTOL, max_iterations=_POWER_ITERATIONS) -> float:
    """The largest singular value of a (sparse or dense) matrix ``A``, by power iteration on ``A^T A``.

    Starts from the all-ones vector (for a non-negative ``A``, one with a positive share of
    the Perron vector) and stops once the residual of the Rayleigh quotient
    ``lambda = ||A x||^2`` is at most ``rtol * lambda``; since ``A^T A`` is symmetric,
    an eigenvalue lies within that residual of ``lambda``, so the result's relative error
    is at most ``rtol / 2`` (plus rounding). The products are SciPy's sequential sparse
    ones and the sums NumPy's pairwise ones, so the bits do not depend on thread counts.
    After ``max_iterations`` (a small spectral gap) ARPACK (``scipy.sparse.linalg.svds``)
    continues from the last vector, and its vector's residual is checked the same way
    against ``1e-10``.

    ``A`` is a connectivity (square, finite; dense or sparse). Returns 0.0 for a matrix
    with no non-zero entry.
    """
    operator = check_connectivity(A)
    rtol = check_open_closed(rtol, "rtol", 0.0, 1.0, high_inclusive=False)
    max_iterations = check_int(max_iterations, "max_iterations", minimum=0)
    n = operator.shape[1]
    x = np.full(n, 1.0 / math.sqrt(n))
    for _ in range(max_iterations):
        value, residual, image = _rayleigh(operator, x)
        if value == 0.0 or residual <= rtol * value:
            return math.sqrt(value)
        x = image / math.sqrt(np.sum(image * image))
    from scipy.sparse.linalg import svds

    _, _, vectors = svds(operator, k=1, tol=0, v0=x, return_singular_vectors="vh", solver="arpack")
    value, residual, _ = _rayleigh(operator, vectors[0])
    if residual > 1e-10 * value:  # not expected: ARPACK converges to machine precision
        raise RuntimeError(f"the largest singular value did not converge: residual {residual:.3g} of {value:.6g}")
    return math.sqrt(value)


def _rayleigh(operator, x):
    """For a unit ``x``: ``lambda = ||A x||^2``, the residual ``||A^T A x - lambda x||`` and ``A^T A x``."""
    y = operator @ x
    value = float(np.sum(y * y))
    image = operator.T @ y
    residual = image - value * x
    return value, math.sqrt(np.sum(residual * residual)), image


def compressed_columns(A):
    """``A`` as compressed sparse columns: column ``i`` lists source ``i``'s targets and weights.

    Returns ``(col_ptr, row_idx, weights)``: int64 ``(n + 1,)``, int64 ``(nnz,)`` and
    float64 ``(nnz,)``, entries sorted by source then target, zeros left out. A dense
    ``A`` gives exactly what the engine built before sparse input existed; a sparse one
    the same arrays from its structure (duplicates summed, explicit zeros dropped),
    without densifying.
    """
    if is_sparse(A):
        canonical = A
        if not (A.format == "csc" and A.dtype == np.float64 and A.has_canonical_format
                and np.all(A.data != 0)):
            canonical = canonical_csc(A)
        return (canonical.indptr.astype(np.int64), canonical.indices.astype(np.int64),
                canonical.data.astype(np.float64, copy=True))
    targets, sources = np.nonzero(A)
    order = np.lexsort((targets, sources))  # by source, then target
    sources, targets = sources[order], targets[order]
    col_ptr = np.zeros(A.shape[1] + 1, dtype=np.int64)
    np.add.at(col_ptr, sources + 1, 1)
    return np.cumsum(col_ptr), targets.astype(np.int64), A[targets, sources].copy()


def dense_row_blocks(A, max_bytes=_ROW_BLOCK_BYTES):
    """Yield ``(start, block)``: ``A[start:start + len(block)]`` as C-contiguous float64 rows, top to bottom.

    For a sparse ``A`` only one block of about ``max_bytes`` (at least one row) is dense
    at a time, and it is the same buffer every time: use it before asking for the next.
    For a dense ``A`` the blocks are views of ``np.ascontiguousarray(A, dtype=float64)``.
    """
    n_rows, n_columns = A.shape
    rows = max(1, int(max_bytes) // (8 * max(n_columns, 1)))
    if not is_sparse(A):
        dense = np.ascontiguousarray(A, dtype=np.float64)
        for start in range(0, n_rows, rows):
            yield start, dense[start:start + rows]
        return
    by_rows = A.tocsr()
    if not by_rows.has_canonical_format:  # duplicates summed, as toarray() sums them
        by_rows = by_rows.copy()
        by_rows.sum_duplicates()
    buffer = np.zeros((min(rows, n_rows), n_columns))
    for start in range(0, n_rows, rows):
        stop = min(start + rows, n_rows)
        first, last = by_rows.indptr[start], by_rows.indptr[stop]
        local_rows = np.repeat(np.arange(stop - start), np.diff(by_rows.indptr[start:stop + 1]))
        columns = by_rows.indices[first:last]
        block = buffer[: stop - start]
        block[local_rows, columns] = by_rows.data[first:last]
        yield start, block
        block[local_rows, columns] = 0.0  # back to all zeros for the next block


def connectivity_digest(A) -> str:
    """sha256 of ``A`` as C-contiguous float64 bytes, row after row: how a store recognises its connectivity.

    A sparse ``A`` has the digest of its dense equal (``A.toarray()``), computed from
    dense row blocks streamed from it, so a run made with one form resumes with the
    other. It costs hashing ``n^2 * 8`` bytes (about 0.6 s at n = 10^4, a minute at 10^5).
    """
    if not is_sparse(A):
        return hashlib.sha256(np.ascontiguousarray(A, dtype=np.float64)).hexdigest()  # no tobytes() copy
    digest = hashlib.sha256()
    for _, block in dense_row_blocks(A):
        digest.update(block)
    return digest.hexdigest()
