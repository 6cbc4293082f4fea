"""Moment kernels: a chunk of time-major samples to its moments, in blocks merged in a fixed order.

Moments of inputs U and outputs V are passed as one tuple, ``moments = (mean_u,
mean_v, m2_u, m2_v, comoment)``: the means, the sums of squared deviations and the
co-moment ``comoment[j, i]`` of output j with input i, as in
:class:`~streamcausal.moments.CrossMoments`. Blocks are fixed by the shape and merged
in block order, so the bits never depend on a thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import kernel, parallel_kernel


@kernel
def _two_pass_moments(U, V, lo, hi, moments):
    """Two-pass (centred) moments of the time-major samples U[lo:hi], V[lo:hi], into ``moments``."""
    mean_u, mean_v, m2_u, m2_v, comoment = moments
    nu = U.shape[1]
    nv = V.shape[1]
    count = hi - lo
    mean_u[:] = 0.0
    mean_v[:] = 0.0
    for t in range(lo, hi):
        for i in range(nu):
            mean_u[i] += U[t, i]
        for j in range(nv):
            mean_v[j] += V[t, j]
    mean_u /= count
    mean_v /= count
    m2_u[:] = 0.0
    m2_v[:] = 0.0
    comoment[:, :] = 0.0
    du = np.empty(nu)
    for t in range(lo, hi):
        for i in range(nu):
            du[i] = U[t, i] - mean_u[i]
            m2_u[i] += du[i] * du[i]
        for j in range(nv):
            dv = V[t, j] - mean_v[j]
            m2_v[j] += dv * dv
            for i in range(nu):
                comoment[j, i] += dv * du[i]


_PATTERN_BITS = 8  # 0/1 inputs up to this many: one group of all their patterns; more: groups of 4


def _pattern_groups(n_inputs):
    """(bits per group, number of groups) of :func:`_pattern_moments` for ``n_inputs`` 0/1 inputs."""
    bits = n_inputs if n_inputs <= _PATTERN_BITS else 4
    return bits, -(-n_inputs // bits)


_pattern_groups_jit = kernel(_pattern_groups)


@kernel
def _one_group_moments(U, V, lo, hi, moments, table, patterns):
    """:func:`_pattern_moments` for at most ``_PATTERN_BITS`` inputs: one group, counts per pattern."""
    mean_u, mean_v, m2_u, m2_v, comoment = moments
    nu = U.shape[1]
    nv = V.shape[1]
    count = hi - lo
    n_patterns = 1 << nu
    ones = np.zeros(n_patterns, dtype=np.int64)
    mean_v[:] = 0.0
    for t in range(lo, hi):
        pattern = 0
        for i in range(nu):
            pattern |= np.int64(U[t, i] != 0.0) << i
        patterns[t - lo] = pattern
        ones[pattern] += 1
        for j in range(nv):
            mean_v[j] += V[t, j]
    mean_v /= count
    for i in range(nu):
        c_i = 0
        for q in range(n_patterns):
            c_i += ones[q] * ((q >> i) & 1)
        mean_u[i] = c_i / count
        m2_u[i] = c_i * (1.0 - mean_u[i]) ** 2 + (count - c_i) * mean_u[i] ** 2
    table[:n_patterns, :] = 0.0
    residual = np.zeros(nv)
    m2_v[:] = 0.0
    for t in range(lo, hi):
        row = table[patterns[t - lo]]
        for j in range(nv):
            d = V[t, j] - mean_v[j]
            m2_v[j] += d * d
            residual[j] += d
            row[j] += d
    for i in range(nu):
        for j in range(nv):
            comoment[j, i] = -mean_u[i] * residual[j]
        for q in range(n_patterns):
            if (q >> i) & 1 and ones[q] > 0:
                for j in range(nv):
                    comoment[j, i] += table[q, j]


@kernel
def _pattern_moments(U, V, lo, hi, moments, tables, patterns):
    """Two-pass moments of U[lo:hi], V[lo:hi] for 0/1 inputs, regrouped by input pattern.

    The inputs are cut into groups of ``bits`` (:func:`_pattern_groups`). The second
    pass adds each centred output row dv_t to ``tables[g, p]``, p being the pattern of
    group g's inputs at t: one row addition per group instead of one multiply-add per
    input. Then comoment[j, i] = sum over patterns p of i's group with i's bit set of
    tables[g, p, j], minus mean_u[i] times sum_t dv_tj (zero up to rounding), and
    m2_u[i] = c_i (1 - mean_u[i])**2 + (count - c_i) mean_u[i]**2 with c_i the number
    of ones: the two-pass sums, added in another order.
    ``tables`` (>= groups, 2**bits, n_out) and ``patterns`` (>= count, groups) are scratch.
    """
    nu = U.shape[1]
    nv = V.shape[1]
    count = hi - lo
    bits, groups = _pattern_groups_jit(nu)
    if groups == 1:
        _one_group_moments(U, V, lo, hi, moments, tables[0], patterns[:, 0])
        return
    mean_u, mean_v, m2_u, m2_v, comoment = moments
    n_patterns = 1 << bits
    ones = np.zeros(nu)
    mean_v[:] = 0.0
    for t in range(lo, hi):
        Ut = U[t]
        Vt = V[t]
        pt = patterns[t - lo]
        for g in range(groups):
            pattern = 0
            for b in range(min(bits, nu - g * bits)):
                pattern |= np.int64(Ut[g * bits + b] != 0.0) << b
            pt[g] = pattern
        for i in range(nu):
            ones[i] += Ut[i]
        for j in range(nv):
            mean_v[j] += Vt[j]
    mean_v /= count
    for i in range(nu):
        mean_u[i] = ones[i] / count
        m2_u[i] = ones[i] * (1.0 - mean_u[i]) ** 2 + (count - ones[i]) * mean_u[i] ** 2
    for g in range(groups):
        for q in range(n_patterns):
            for j in range(nv):
                tables[g, q, j] = 0.0
    residual = np.zeros(nv)
    dv = np.empty(nv)
    m2_v[:] = 0.0
    for t in range(lo, hi):
        Vt = V[t]
        for j in range(nv):
            d = Vt[j] - mean_v[j]
            dv[j] = d
            m2_v[j] += d * d
            residual[j] += d
        pt = patterns[t - lo]
        for g in range(groups):
            row = tables[g, pt[g]]
            for j in range(nv):
                row[j] += dv[j]
    for g in range(groups):
        for b in range(min(bits, nu - g * bits)):
            i = g * bits + b
            for j in range(nv):
                comoment[j, i] = -mean_u[i] * residual[j]
            for q in range(n_patterns):
                if (q >> b) & 1:
                    row = tables[g, q]
                    for j in range(nv):
                        comoment[j, i] += row[j]


@kernel
def _is_binary(U, lo, hi):
    """Whether every U[lo:hi] is 0 or 1 (branch-free: random 0/1 would defeat the predictor)."""
    other = 0
    for t in range(lo, hi):
        Ut = U[t]
        for i in range(U.shape[1]):
            u = Ut[i]
            other += np.int64((u != 0.0) & (u != 1.0))
    return other == 0


@kernel
def _block_moments(U, V, lo, hi, moments, tables, patterns):
    """Moments of one block: by input pattern if the inputs are all 0/1, else two-pass.

    The choice depends on the block's values only, so the fused clamp-all kernel and
    :func:`_blocked_moments` on the same samples give the same bits. ``tables`` and
    ``patterns``: scratch for :func:`_pattern_moments`.
    """
    if _is_binary(U, lo, hi):
        _pattern_moments(U, V, lo, hi, moments, tables, patterns)
    else:
        _two_pass_moments(U, V, lo, hi, moments)


def _pattern_scratch(threads, n_inputs, n_outputs, block_size):
    """(tables, patterns) scratch of :func:`_pattern_moments` for each of ``threads`` slots."""
    bits, groups = _pattern_groups(n_inputs)
    return (np.empty((threads, groups, 1 << bits, n_outputs)),
            np.empty((threads, block_size, groups), dtype=np.int64))


_CENTRE_ROWS = 256  # time rows per partial sum of _centre_columns


@parallel_kernel
def _column_means(X, rows, mean):
    """mean[i] = the mean of X[:rows, i], X time-major.

    Sums run over fixed parts of ``_CENTRE_ROWS`` rows in parallel and are then added
    in part order, so the bits never depend on the thread count.
    """
    n = X.shape[1]
    n_parts = (rows + _CENTRE_ROWS - 1) // _CENTRE_ROWS
    partial = np.zeros((n_parts, n))
    for part in prange(n_parts):
        sums = partial[part]
        for t in range(part * _CENTRE_ROWS, min(rows, (part + 1) * _CENTRE_ROWS)):
            row = X[t]
            for i in range(n):
                sums[i] += row[i]
    for i in range(n):
        mean[i] = 0.0
    for part in range(n_parts):
        for i in range(n):
            mean[i] += partial[part, i]
    for i in range(n):
        mean[i] /= rows


@parallel_kernel
def _centre_columns(X, mean, m2):
    """Centre the time-major X (k, n) in place: mean[i] (:func:`_column_means`), then m2[i] = sum of squares of column i.

    The squares are summed like the means: fixed parts in parallel, then in part order.
    """
    k, n = X.shape
    _column_means(X, k, mean)
    n_parts = (k + _CENTRE_ROWS - 1) // _CENTRE_ROWS
    partial = np.zeros((n_parts, n))
    for part in prange(n_parts):
        squares = partial[part]
        for i in range(n):
            squares[i] = 0.0
        for t in range(part * _CENTRE_ROWS, min(k, (part + 1) * _CENTRE_ROWS)):
            row = X[t]
            for i in range(n):
                d = row[i] - mean[i]
                row[i] = d
                squares[i] += d * d
    for i in range(n):
        m2[i] = 0.0
    for part in range(n_parts):
        for i in range(n):
            m2[i] += partial[part, i]


def _block_moment_arrays(n_blocks, n_inputs, n_outputs):
    """Moments of ``n_blocks`` blocks: the five arrays of ``moments``, each with a leading block axis."""
    return (np.empty((n_blocks, n_inputs)), np.empty((n_blocks, n_outputs)), np.empty((n_blocks, n_inputs)),
            np.empty((n_blocks, n_outputs)), np.empty((n_blocks, n_outputs, n_inputs)))


_block_moment_arrays_jit = kernel(_block_moment_arrays)


@kernel
def _block_part(blocks, b):
    """The ``moments`` of block ``b`` of :func:`_block_moment_arrays`: views of its rows."""
    return blocks[0][b], blocks[1][b], blocks[2][b], blocks[3][b], blocks[4][b]


@kernel
def _merge_blocks(n_samples, block_size, blocks, moments):
    """Merge the moments of blocks 0, 1, ... in that order into ``moments``; returns the count."""
    count = 0
    for b in range(blocks[0].shape[0]):
        count_b = min((b + 1) * block_size, n_samples) - b * block_size
        count = _chan_merge(count, moments, count_b, _block_part(blocks, b))
    return count


@kernel
def _chan_merge(count_a, moments, count_b, moments_b):
    """Merge ``moments_b`` into ``moments`` in place (Chan, Golub & LeVeque); returns the new count.

    ``CrossMoments`` merges with NumPy by the same formulas; this copy exists because it
    runs inside the parallel nopython kernels, merging blocks in place. The two add
    their terms in different orders (``(a + b) + c`` there, ``a + (b + c)`` here), so
    making one call the other would change the bits of published results.
    """
    mean_u, mean_v, m2_u, m2_v, comoment = moments
    mean_u_b, mean_v_b, m2_u_b, m2_v_b, comoment_b = moments_b
    if count_b == 0:
        return count_a
    # Explicit loops, not array expressions: the same operations in the same order, without
    # the shape checks (and their error messages) that array expressions make Numba compile.
    nu = mean_u.shape[0]
    nv = mean_v.shape[0]
    if count_a == 0:
        for i in range(nu):
            mean_u[i] = mean_u_b[i]
            m2_u[i] = m2_u_b[i]
        for j in range(nv):
            mean_v[j] = mean_v_b[j]
            m2_v[j] = m2_v_b[j]
            for i in range(nu):
                comoment[j, i] = comoment_b[j, i]
        return count_b
    count = count_a + count_b
    weight = np.float64(count_a) * np.float64(count_b) / np.float64(count)
    fraction_b = np.float64(count_b) / np.float64(count)
    delta_u = np.empty(nu)
    delta_v = np.empty(nv)
    for i in range(nu):
        delta_u[i] = mean_u_b[i] - mean_u[i]
    for j in range(nv):
        delta_v[j] = mean_v_b[j] - mean_v[j]
    for j in range(nv):
        for i in range(nu):
            comoment[j, i] += comoment_b[j, i] + delta_v[j] * delta_u[i] * weight
    for i in range(nu):
        m2_u[i] += m2_u_b[i] + delta_u[i] * delta_u[i] * weight
        mean_u[i] += delta_u[i] * fraction_b
    for j in range(nv):
        m2_v[j] += m2_v_b[j] + delta_v[j] * delta_v[j] * weight
        mean_v[j] += delta_v[j] * fraction_b
    return count


@parallel_kernel
def _blocked_moments(U, V, n_samples, block_size, moments):
    """Moments of samples [0, n_samples): :func:`_block_moments` per block in parallel, merged in block order."""
    nu = U.shape[1]
    nv = V.shape[1]
    n_blocks = (n_samples + block_size - 1) // block_size
    blocks = _block_moment_arrays_jit(n_blocks, nu, nv)
    bits, groups = _pattern_groups_jit(nu)
    for b in prange(n_blocks):
        lo = b * block_size
        hi = min((b + 1) * block_size, n_samples)
        tables = np.empty((groups, 1 << bits, nv))
        patterns = np.empty((hi - lo, groups), dtype=np.int64)
        _block_moments(U, V, lo, hi, _block_part(blocks, b), tables, patterns)
    return _merge_blocks(n_samples, block_size, blocks, moments)


_TILE_OUTPUTS = 32  # outputs per tile of _stimulated_moments: a tile's centred copy stays near the core


@parallel_kernel
def _stimulated_moments(stimulated, outputs, count, moments):
    """Moments of ``count`` samples whose inputs are 0/1 and mostly 0, at O(ones x n_out) for the co-moment.

    ``stimulated`` (n_in, >= count) uint8 holds input i's 0/1 values along the samples;
    ``outputs`` (>= count, n_out) is time-major and left unchanged. With dv the centred
    outputs, the two-pass co-moment of 0/1 inputs is
    ``sum_t dv[t, j] (u[t, i] - mean_u[i]) = sum_{t: u[t, i] = 1} dv[t, j] - mean_u[i] sum_t dv[t, j]``,
    whose last sum is zero up to rounding (kept, so this is the two-pass sum in another
    order). The output means are sums over fixed parts of ``_CENTRE_ROWS`` rows, added
    in part order; then outputs are cut into tiles of ``_TILE_OUTPUTS`` that run in
    parallel: each tile is centred once into a compact copy (its sums of squares and
    residual sums in sample order), then each input adds the rows of its ones, in
    sample order. m2_u[i] = c_i (1 - mean_u[i])**2 + (count - c_i) mean_u[i]**2 with c_i
    the ones. The bits never depend on the thread count.
    """
    mean_u, mean_v, m2_u, m2_v, comoment = moments
    n_in = stimulated.shape[0]
    n_out = outputs.shape[1]
    ones = np.empty(n_in, dtype=np.int64)
    for i in prange(n_in):
        flags = stimulated[i]
        c = 0
        for t in range(count):
            c += np.int64(flags[t] != 0)
        ones[i] = c
    first = np.zeros(n_in + 1, dtype=np.int64)  # input i's ones are samples[first[i]:first[i + 1]]
    for i in range(n_in):
        first[i + 1] = first[i] + ones[i]
    samples = np.empty(first[n_in], dtype=np.int32)
    for i in prange(n_in):
        flags = stimulated[i]
        k = first[i]
        for t in range(count):
            if flags[t] != 0:
                samples[k] = t
                k += 1
        mean_u[i] = ones[i] / count
        m2_u[i] = ones[i] * (1.0 - mean_u[i]) ** 2 + (count - ones[i]) * mean_u[i] ** 2
    _column_means(outputs, count, mean_v)  # row by row (contiguous), in fixed parts
    n_tiles = (n_out + _TILE_OUTPUTS - 1) // _TILE_OUTPUTS
    for tile in prange(n_tiles):
        j0 = tile * _TILE_OUTPUTS
        width = min(_TILE_OUTPUTS, n_out - j0)
        mean = mean_v[j0:j0 + width]
        centred = np.empty((count, width))
        squares = np.zeros(width)
        residual = np.zeros(width)
        for t in range(count):
            row = outputs[t, j0:j0 + width]
            d = centred[t]
            for c in range(width):
                d[c] = row[c] - mean[c]
                squares[c] += d[c] * d[c]
                residual[c] += d[c]
        for c in range(width):
            m2_v[j0 + c] = squares[c]
        acc = np.empty(width)
        for i in range(n_in):
            acc[:] = 0.0
            for k in range(first[i], first[i + 1]):
                d = centred[samples[k]]
                for c in range(width):
                    acc[c] += d[c]
            for c in range(width):
                comoment[j0 + c, i] = acc[c] - mean_u[i] * residual[c]
