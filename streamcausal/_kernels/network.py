"""Network stepping: x_{t+1} = sigmoid(A x_t + eps_t), one step at a time or as clamp-all samples in parallel blocks.

The network ``A`` is passed as compressed sparse columns, ``network = (col_ptr,
row_idx, weights)`` (source i's column lists its targets), or for the block kernels
as drive tiles ``tiles = (tile_ptr, tile_sources, tile_weights)`` (:func:`_drive_tiles`).

The sigmoid
-----------
``1 / (1 + exp(-z))`` with exp by the table method of ARM's optimized-routines, which
glibc's exp also uses (128-entry table, degree-5 polynomial, error < 0.51 ulp): it
equals libm's exp in about 999 cases of 1000 and is within one ulp otherwise.
|z| > 708 and NaN go to libm's exp. Unlike a libm call, it vectorises.

Samples of the clamp-all design
-------------------------------
Every clamp resets the whole state, so samples are i.i.d.: :func:`_clamp_all_samples`
and :func:`_clamp_all_moments` simulate a chunk's samples in parallel blocks whose
draws are laid out in advance (see :mod:`.rng`), and :func:`_sequential_chunk` draws
the very same samples one step at a time. When few sources are stimulated per sample,
:func:`_clamp_all_stimulated_samples` gives the same samples (bit for bit) at a cost
of O(stimulated x targets) per sample for the drive instead of O(n^2), and hands
the stimulation on as 0/1 bytes, one row per source, for
:func:`.moments._stimulated_moments`.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .._jit import contract_kernel, inline_kernel, kernel, parallel_kernel
from .moments import _block_moment_arrays_jit, _block_part, _merge_blocks, _pattern_moments, _pattern_scratch
from .rng import _block_draws, _block_keys, _fill_coins, _fill_normals, _mt_fill_coins, _mt_gauss, _sample_draws

# The clamp_mode of a design: Observation, Perturbation(clamp="all"), Perturbation(clamp="stimulated").
CLAMP_NONE = 0
CLAMP_ALL = 1
CLAMP_STIMULATED = 2


# --- exp and the sigmoid ----------------------------------------------------------------------
@intrinsic
def _bits_to_f64(typingctx, bits):
    sig = types.float64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _f64_to_bits(typingctx, x):
    sig = types.uint64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


def _exp_table(bits=7):
    """tab[2k] = bits of T_k, tab[2k+1] = bits of H_k - (k << 52) / N, with 2^(k/N) ~ H_k (1 + T_k)."""
    n = 1 << bits
    table = np.empty(2 * n, dtype=np.uint64)
    with localcontext() as context:
        context.prec = 60
        ln2 = Decimal(2).ln()
        for k in range(n):
            exact = (ln2 * k / n).exp()
            high = float(exact)
            table[2 * k] = np.float64(float(exact / Decimal(high) - 1)).view(np.uint64)
            table[2 * k + 1] = np.uint64((int(np.float64(high).view(np.uint64)) - (k << 52) // n) % 2**64)
    return table


_EXP_TAB = _exp_table()
_EXP_INVLN2N = float.fromhex("0x1.71547652b82fep+7")  # 128 / ln 2
_EXP_SHIFT = float.fromhex("0x1.8p52")
_EXP_NEGLN2HIN = -float.fromhex("0x1.62e42fefa0000p-8")  # ln 2 / 128, high and low parts
_EXP_NEGLN2LON = -float.fromhex("0x1.cf79abc9e3b3ap-47")
_EXP_C2, _EXP_C3, _EXP_C4, _EXP_C5 = 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120  # |r| < 0.0028: Taylor
_EXP_LIMIT = 708.0  # |x| <= this: the table path's scale stays a normal number


@inline_kernel
def _exp_core(x):
    """exp(x) for |x| <= 708 (< 0.51 ulp); branch-free, so loops over it vectorise."""
    kd = _EXP_INVLN2N * x + _EXP_SHIFT
    ki = _f64_to_bits(kd)
    kd -= _EXP_SHIFT
    r = x + kd * _EXP_NEGLN2HIN + kd * _EXP_NEGLN2LON
    idx = np.int64(ki & np.uint64(127)) * 2
    tail = _bits_to_f64(_EXP_TAB[idx])
    scale = _bits_to_f64(_EXP_TAB[idx + 1] + (ki << np.uint64(45)))
    r2 = r * r
    tmp = tail + r + r2 * (_EXP_C2 + r * _EXP_C3) + r2 * r2 * (_EXP_C4 + r * _EXP_C5)
    return scale + scale * tmp


@kernel
def _sigmoid(z):
    """1 / (1 + exp(-z)), exactly as :func:`_block_sigmoid` computes it."""
    x = -z
    if abs(x) <= _EXP_LIMIT:
        return 1.0 / (1.0 + _exp_core(x))
    return 1.0 / (1.0 + math.exp(x))


@kernel
def _block_sigmoid(count, P, N):
    """P[j, r] = _sigmoid(P[j, r] + N[j, r]) for r < count, in a loop that vectorises."""
    n = P.shape[0]
    outside = 0
    for j in range(n):
        Pj = P[j]
        Nj = N[j]
        for r in range(count):
            x = -(Pj[r] + Nj[r])
            inside = abs(x) <= _EXP_LIMIT
            e = _exp_core(x if inside else 0.0)
            Pj[r] = 1.0 / (1.0 + e) if inside else x  # |x| > 708 or NaN: marked, finished below
            outside += np.int64(not inside)
    if outside > 0:
        for j in range(n):
            Pj = P[j]
            for r in range(count):
                x = Pj[r]
                if not (x >= 0.0 and x <= 1.0):
                    Pj[r] = 1.0 / (1.0 + math.exp(x))


# --- Network stepping -------------------------------------------------------------------------
@inline_kernel
def _drive(x, network, pre):
    """pre = A @ x with A in compressed sparse columns, ``network = (col_ptr, row_idx, weights)``."""
    col_ptr, row_idx, weights = network
    pre[:] = 0.0
    for i in range(x.shape[0]):
        xi = x[i]
        if xi != 0.0:
            for k in range(col_ptr[i], col_ptr[i + 1]):
                pre[row_idx[k]] += weights[k] * xi


def _drive_tiles(network, n, block_size):
    """A (compressed sparse columns, ``network``) as rows per tile of sources, for :func:`_block_drive`.

    Sources are cut into tiles of about 16384 / block_size (so a tile's inputs, sources
    x ``block_size`` samples, stay near the core); entries are sorted by tile, then
    target, then source. Returns ``tiles = (tile_ptr, sources, weights)``: the entries of tile t
    and target j are ``[tile_ptr[t * n + j], tile_ptr[t * n + j + 1])``. The tiling never
    changes a result: each sum still runs over sources in increasing order.
    """
    col_ptr, row_idx, weights = network
    col_ptr = np.asarray(col_ptr, dtype=np.int64)
    sources = np.repeat(np.arange(n, dtype=np.int64), np.diff(col_ptr))
    targets = np.asarray(row_idx, dtype=np.int64)
    tile_sources = int(min(n, max(32, 16384 // block_size)))
    tiles = sources // tile_sources
    n_tiles = -(-n // tile_sources)
    order = np.lexsort((sources, targets, tiles))
    keys = (tiles * n + targets)[order]
    tile_ptr = np.searchsorted(keys, np.arange(n_tiles * n + 1)).astype(np.int64)
    return tile_ptr, sources[order].copy(), np.asarray(weights, dtype=np.float64)[order].copy()


@contract_kernel
def _block_drive(tiles, count, U, P):
    """P[:, r] = A @ U[:, r] for r < count, U binary; vectorised across samples.

    Each P[j, r] adds the weights of its active sources in increasing source order,
    starting from 0, exactly as :func:`_drive` does for a 0/1 state (w * 1 and w * 0
    are exact, so contracting to FMA changes nothing). Up to four sources are added
    per pass over P[j] (one load and one store of it for four multiply-adds).
    """
    tile_ptr, tile_sources, tile_weights = tiles
    n = U.shape[0]
    for j in range(n):
        Pj = P[j]
        for r in range(count):
            Pj[r] = 0.0
    n_tiles = (tile_ptr.shape[0] - 1) // n
    for t in range(n_tiles):
        for j in range(n):
            k = tile_ptr[t * n + j]
            end = tile_ptr[t * n + j + 1]
            if k == end:
                continue
            Pj = P[j]
            while k + 4 <= end:
                U0 = U[tile_sources[k]]
                U1 = U[tile_sources[k + 1]]
                U2 = U[tile_sources[k + 2]]
                U3 = U[tile_sources[k + 3]]
                w0 = tile_weights[k]
                w1 = tile_weights[k + 1]
                w2 = tile_weights[k + 2]
                w3 = tile_weights[k + 3]
                for r in range(count):
                    acc = Pj[r]
                    acc += w0 * U0[r]
                    acc += w1 * U1[r]
                    acc += w2 * U2[r]
                    acc += w3 * U3[r]
                    Pj[r] = acc
                k += 4
            if k + 2 <= end:
                U0 = U[tile_sources[k]]
                U1 = U[tile_sources[k + 1]]
                w0 = tile_weights[k]
                w1 = tile_weights[k + 1]
                for r in range(count):
                    acc = Pj[r]
                    acc += w0 * U0[r]
                    acc += w1 * U1[r]
                    Pj[r] = acc
                k += 2
            if k < end:
                U0 = U[tile_sources[k]]
                w0 = tile_weights[k]
                for r in range(count):
                    Pj[r] += w0 * U0[r]


@kernel
def _transpose_into(X, count, out, lo):
    """out[lo + r, i] = X[i, r] for r < count, in 8 x 8 tiles (both sides touch whole cache lines)."""
    n = X.shape[0]
    n8 = n - n % 8
    count8 = count - count % 8
    for i0 in range(0, n8, 8):
        for r0 in range(0, count8, 8):
            for r in range(r0, r0 + 8):
                row = out[lo + r]
                for i in range(8):
                    row[i0 + i] = X[i0 + i, r]
        for r in range(count8, count):
            for i in range(8):
                out[lo + r, i0 + i] = X[i0 + i, r]
    for i in range(n8, n):
        for r in range(count):
            out[lo + r, i] = X[i, r]


# --- Clamp-all samples in parallel blocks ------------------------------------------------------
@kernel
def _simulate_block(tiles, p, coin_words, key_samples, block, count, slot, words):
    """Samples r < count of clamp-all block ``block`` in a thread's scratch; returns them feature-major.

    ``slot`` (3 or 5, n, block_size) and ``words``: that thread's slot of :func:`_block_scratch`.
    Returns (U, V), the stimulation U[:, r] and the outcome V[:, r] of each sample.
    """
    U, N, V = slot[0], slot[1], slot[2]
    _block_draws(_block_keys(key_samples, block), count, p, coin_words, U, N, words)
    _block_drive(tiles, count, U, V)
    _block_sigmoid(count, V, N)
    return U, V


def _block_scratch(n, block_size, moments=False, sparse=False):
    """Per-thread work arrays of the clamp-all kernels, allocated once per simulation.

    ``scratch = (floats (threads, 3 or 5, n, block_size), words (threads, block_size))``,
    and with ``moments`` also the pattern tables and patterns of :func:`_pattern_scratch`,
    or with ``sparse`` the source lists of :func:`_stimulated_drive` (threads,
    block_size, n + 1): one slot per Numba thread (``numba.get_thread_id()``), so blocks
    reuse them instead of allocating (large allocations fault their pages in again on
    every block).
    """
    threads = max(1, numba.config.NUMBA_NUM_THREADS)
    arrays = (np.empty((threads, 5 if moments else 3, n, block_size)),
              np.empty((threads, block_size), dtype=np.uint64))
    if moments:
        arrays += _pattern_scratch(threads, n, n, block_size)
    elif sparse:
        arrays += (np.empty((threads, block_size, n + 1), dtype=np.int32),)
    return arrays


@parallel_kernel
def _clamp_all_samples(tiles, p, coin_words, key_samples, n_samples, block_size, scratch, samples):
    """The chunk's clamp-all samples, time-major: ``samples = (inputs, outputs)``, rows m < n_samples.

    Blocks run in parallel; what each holds depends on (key_samples, block) only.
    ``scratch``: :func:`_block_scratch` (its first two arrays).
    """
    floats, words = scratch[0], scratch[1]
    inputs, outputs = samples
    n_blocks = (n_samples + block_size - 1) // block_size
    for parallel_block in prange(n_blocks):
        block = np.int64(parallel_block)  # prange types its index uint64: one signature of the callees, not two
        lo = block * block_size
        count = min(block_size, n_samples - lo)
        thread = numba.get_thread_id()
        U, V = _simulate_block(tiles, p, coin_words, key_samples, block, count, floats[thread], words[thread])
        _transpose_into(U, count, inputs, lo)
        _transpose_into(V, count, outputs, lo)


@parallel_kernel
def _clamp_all_moments(tiles, p, coin_words, key_samples, n_samples, block_size, scratch, moments):
    """The chunk's clamp-all samples folded straight into ``moments``; returns the count.

    Each block's moments come from :func:`.moments._pattern_moments` on the block's
    samples (time-major; they are 0/1, so it is the branch :func:`.moments._block_moments`
    takes), and blocks are merged in block order, exactly as
    :func:`.moments._blocked_moments` does on the same samples. ``scratch``:
    :func:`_block_scratch` with ``moments=True``.
    """
    floats, words, tables, patterns = scratch
    n = moments[0].shape[0]
    n_blocks = (n_samples + block_size - 1) // block_size
    blocks = _block_moment_arrays_jit(n_blocks, n, n)
    for parallel_block in prange(n_blocks):
        block = np.int64(parallel_block)  # prange types its index uint64: one signature of the callees, not two
        lo = block * block_size
        count = min(block_size, n_samples - lo)
        thread = numba.get_thread_id()
        slot = floats[thread]
        U, V = _simulate_block(tiles, p, coin_words, key_samples, block, count, slot, words[thread])
        # time-major copies for the moments, in the (n, block_size) slots 3 and 4 seen as (block_size, n)
        Us = slot[3].reshape((block_size, n))
        Vs = slot[4].reshape((block_size, n))
        _transpose_into(U, count, Us, 0)
        _transpose_into(V, count, Vs, 0)
        # The inputs are coins, all 0/1: the branch _block_moments would take, without compiling the other.
        _pattern_moments(Us, Vs, 0, count, _block_part(blocks, block), tables[thread], patterns[thread])
    return _merge_blocks(n_samples, block_size, blocks, moments)


# --- Clamp-all samples when few sources are stimulated ----------------------------------------
@kernel
def _stimulated_drive(network, count, U, rows, sources, stimulated, lo):
    """rows[r] = A @ U[:, r] for r < count, from the stimulated sources' columns only; records them.

    ``U`` (n, >= count) is a block's 0/1 stimulation, feature-major; ``rows`` (>= count, n)
    is time-major. Each sample's stimulated sources are listed in increasing order
    (``sources[r, 0]`` of them in ``sources[r, 1:]``, scratch), so each rows[r, j] adds its
    weights from 0 in the order :func:`_block_drive` adds them; the terms that one adds
    besides (w * 0) are exact zeros, so the bits are the same. ``stimulated[i, lo + r]``
    gets U[i, r] as 0 or 1.
    """
    col_ptr, row_idx, weights = network
    n = U.shape[0]
    for r in range(count):
        sources[r, 0] = 0
    for i in range(n):
        Ui = U[i]
        flags = stimulated[i]
        for r in range(count):
            on = Ui[r] != 0.0
            flags[lo + r] = np.uint8(on)
            if on:
                m = sources[r, 0] + 1
                sources[r, m] = i
                sources[r, 0] = m
    for r in range(count):
        row = rows[r]  # one sample's row stays in the L1 cache while its sources are added
        row[:] = 0.0
        for m in range(1, sources[r, 0] + 1):
            i = sources[r, m]
            for k in range(col_ptr[i], col_ptr[i + 1]):
                row[row_idx[k]] += weights[k]


@parallel_kernel
def _clamp_all_stimulated_samples(network, p, coin_words, key_samples, n_samples, block_size, scratch, samples):
    """The chunk's clamp-all samples as ``samples = (stimulated, outputs)``, for few stimulated sources.

    ``stimulated`` (n, >= n_samples) uint8 gets each source's 0/1 stimulation along the
    samples; ``outputs`` (>= n_samples, n) the outcomes, time-major. Both equal, bit for
    bit, the inputs and outputs of :func:`_clamp_all_samples`: the same blocks and draws,
    the drive by :func:`_stimulated_drive`, the same sigmoid applied time-major.
    ``network``: compressed sparse columns; ``scratch``: :func:`_block_scratch` with ``sparse=True``.
    """
    floats, words, sources = scratch
    stimulated, outputs = samples
    n = outputs.shape[1]
    n_blocks = (n_samples + block_size - 1) // block_size
    for parallel_block in prange(n_blocks):
        block = np.int64(parallel_block)  # prange types its index uint64: one signature of the callees, not two
        lo = block * block_size
        count = min(block_size, n_samples - lo)
        thread = numba.get_thread_id()
        slot = floats[thread]
        U, N = slot[0], slot[1]
        noise = slot[2].reshape((block_size, n))  # the normals, time-major
        _block_draws(_block_keys(key_samples, block), count, p, coin_words, U, N, words[thread])
        _transpose_into(N, count, noise, 0)
        rows = outputs[lo:lo + count]
        _stimulated_drive(network, count, U, rows, sources[thread], stimulated, lo)
        _block_sigmoid(n, rows, noise[:count])  # elementwise, so (count, n) works as (n, count) does


# --- Any design, one step at a time ------------------------------------------------------------
@kernel
def _sequential_chunk(start, stop, n_steps, design, network, state, streams, legacy_state, samples,
                      write_trajectory, trajectory):
    """Advance steps [start, stop) one at a time; returns the number of samples written.

    ``design = (clamp_mode, every, p)``; ``streams = (legacy, key_samples, key_other,
    block_size)``: the chunk's default streams (or, if ``legacy``, ``legacy_state``,
    see :mod:`.rng`); ``samples = (inputs, outputs)``, rows m of the chunk's samples;
    with ``write_trajectory``, ``trajectory = (activity, stimulation, clamped)`` gets
    rows t - start.

    ``state`` holds x_start (before any clamp) and is left holding x_stop. A step t
    is processed only if t + 1 < n_steps, as in the tutorial's ``range(timesteps - 1)``.
    With the default streams, the clamp-all design's sample m takes its coins and
    normals from sample m % block_size of block m // block_size (see :mod:`.rng`), so
    its samples are exactly those of :func:`_clamp_all_samples`; its other steps draw
    from the chunk's ``key_other`` stream, and the other designs draw everything from
    ``key_other`` in step order. Legacy draws follow the tutorial's order exactly.
    """
    clamp_mode, every, p = design
    legacy, key_samples, key_other, block_size = streams
    inputs, outputs = samples
    activity, stimulation, clamped = trajectory
    n = state.shape[0]
    pre = np.empty(n)
    coins = np.empty(n)
    noise = np.empty(n)
    coin_words = (n + 63) // 64 if p == 0.5 else n
    keys = (np.uint64(0), np.uint64(0))
    other_stream = key_other
    m = 0
    for t in range(start, stop):
        row = t - start
        active = t + 1 < n_steps
        is_clamp = active and clamp_mode != CLAMP_NONE and t % every == 0
        sample_draws = is_clamp and clamp_mode == CLAMP_ALL and not legacy
        if write_trajectory:
            stimulation[row, :] = 0.0
            clamped[row] = is_clamp
        if is_clamp:
            if legacy:
                _mt_fill_coins(legacy_state, p, coins)
            elif sample_draws:
                if m % block_size == 0:
                    keys = _block_keys(key_samples, m // block_size)
                _sample_draws(keys, m % block_size, p, coin_words, coins, noise)
            else:
                other_stream = _fill_coins(other_stream, p, coins)
            for i in range(n):
                if clamp_mode == CLAMP_ALL:
                    state[i] = coins[i]
                elif coins[i] != 0.0:
                    state[i] = 1.0
                inputs[m, i] = coins[i]
                if write_trajectory:
                    stimulation[row, i] = coins[i]
        elif active and clamp_mode == CLAMP_NONE:
            for i in range(n):  # loops, not slices: no shape-check code to compile
                inputs[m, i] = state[i]
        if write_trajectory:
            for i in range(n):
                activity[row, i] = state[i]
        if not active:
            continue
        overwritten = clamp_mode == CLAMP_ALL and (t + 1) % every == 0 and t + 2 < n_steps
        if legacy:
            for j in range(n):
                noise[j] = _mt_gauss(legacy_state)
        elif overwritten or sample_draws:
            pass  # nothing to draw, or drawn with the coins
        else:
            other_stream = _fill_normals(other_stream, noise)
        if overwritten:
            continue
        _drive(state, network, pre)
        for j in range(n):
            state[j] = _sigmoid(pre[j] + noise[j])
        if is_clamp or clamp_mode == CLAMP_NONE:
            for j in range(n):
                outputs[m, j] = state[j]
            m += 1
    return m
