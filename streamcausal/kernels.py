"""Every Numba kernel of streamcausal, private: random streams, network stepping, block moments.

Kernels take arrays and scalars only. Public functions elsewhere validate their
arguments before calling in here.

Random streams
--------------
* default: SplitMix64 counter streams (one 64-bit counter per stream), keyed from
  ``np.random.SeedSequence(seed, spawn_key=(chunk,))``; normals by a 256-layer
  Marsaglia-Tsang ziggurat. Every (seed, chunk, block) stream is independent of
  how, where and on which thread it is drawn.
* legacy: MT19937 with NumPy's legacy ``RandomState`` algorithms (``randint(0, 2)``,
  ``random_sample``, polar Box-Muller ``standard_normal`` with its cached second
  value), with the state held in explicit arrays so that it can be checkpointed.

Samples of the clamp-all design
-------------------------------
They are i.i.d., so a chunk's samples are cut into blocks of ``block_size`` (a
function of n only) that run in parallel and are merged in block order. Block b of
a chunk reads sub-stream ``_stream_start(key_samples, b)`` as a counter-based
stream: sample r of the block owns words ``[r W, (r + 1) W)`` with
``W = coin_words + n`` (``coin_words`` is ceil(n / 64) for p = 0.5, one bit per coin,
low bit first; otherwise n, one uniform per coin): its coins first, then one word
per normal. A normal is the ziggurat's first try on its word; the ~1.5% of words
rejected there continue the ziggurat on their own sub-stream
``_stream_start(retry_key, q)``, q being the word's index and
``retry_key = _stream_start(key_samples, b | 2**63)``. Every draw's position is thus
known in advance: a block is drawn in loops across its samples that vectorise, and
:func:`_sequential_chunk` draws the very same samples one at a time.

The sigmoid
-----------
``1 / (1 + exp(-z))`` with exp by the table method of ARM's optimized-routines, which
glibc's exp also uses (128-entry table, degree-5 polynomial, error < 0.51 ulp): it
equals libm's exp in about 999 cases of 1000 and is within one ulp otherwise.
|z| > 708 and NaN go to libm's exp. Unlike a libm call, it vectorises.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

# --- SplitMix64 -----------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _next_u64(counter):
    """Advance a SplitMix64 counter; returns (counter, 64 random bits)."""
    counter = counter + _GOLDEN
    return counter, _mix64(counter)


@njit(cache=True)
def _uniform(counter):
    counter, bits = _next_u64(counter)
    return counter, np.float64(bits >> np.uint64(11)) * _TO_UNIT


@njit(cache=True)
def _stream_start(key, index):
    """Starting counter of sub-stream ``index`` of the stream keyed by ``key``."""
    return _mix64(key ^ _mix64(np.uint64(index) + _GOLDEN))


# --- Ziggurat normal (256 layers) -----------------------------------------------------------
def _ziggurat_tables(layers=256, r=3.6541528853610088, area=0.00492867323399):
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731
    edges = np.empty(layers + 1)
    edges[0] = area / f(r)  # width of the base strip (rectangle plus tail)
    edges[1] = r
    for i in range(1, layers):
        edges[i + 1] = math.sqrt(max(-2.0 * math.log(area / edges[i] + f(edges[i])), 0.0))
    edges[layers] = 0.0
    inner_ratio = edges[1:] / edges[:-1]
    density = np.array([f(x) for x in edges])
    return edges, inner_ratio, density


_ZIG_EDGES, _ZIG_INNER, _ZIG_DENSITY = _ziggurat_tables()
_ZIG_R = float(_ZIG_EDGES[1])


@njit(cache=True)
def _normal_slow_path(counter, layer, negative, x):
    """Tail and wedge of the ziggurat (about 1% of draws); returns (counter, accepted, value)."""
    if layer == 0:
        while True:
            counter, u1 = _uniform(counter)
            counter, u2 = _uniform(counter)
            xx = -math.log(1.0 - u1) / _ZIG_R
            yy = -math.log(1.0 - u2)
            if yy + yy > xx * xx:
                break
        x = _ZIG_R + xx
        return counter, True, -x if negative else x
    counter, u = _uniform(counter)
    y = _ZIG_DENSITY[layer] + u * (_ZIG_DENSITY[layer + 1] - _ZIG_DENSITY[layer])
    return counter, y < math.exp(-0.5 * x * x), -x if negative else x


@njit(cache=True)
def _normal(counter):
    """One standard normal by the ziggurat; returns (counter, value)."""
    while True:
        counter, bits = _next_u64(counter)
        layer = np.int64(bits & np.uint64(0xFF))
        negative = (bits >> np.uint64(8)) & np.uint64(1)
        u = np.float64(bits >> np.uint64(11)) * _TO_UNIT
        x = u * _ZIG_EDGES[layer]
        if u < _ZIG_INNER[layer]:
            return counter, -x if negative else x
        counter, accepted, value = _normal_slow_path(counter, layer, negative, x)
        if accepted:
            return counter, value


@njit(cache=True)
def _fill_coins(counter, p, out):
    """out[i] = 1.0 with probability p, else 0.0; returns the counter."""
    n = out.shape[0]
    if p == 0.5:
        bits = np.uint64(0)
        for i in range(n):
            if i % 64 == 0:
                counter, bits = _next_u64(counter)
            out[i] = np.float64(bits & np.uint64(1))
            bits >>= np.uint64(1)
    else:
        for i in range(n):
            counter, u = _uniform(counter)
            out[i] = 1.0 if u < p else 0.0
    return counter


@njit(cache=True)
def _fill_normals(counter, out):
    for j in range(out.shape[0]):
        counter, out[j] = _normal(counter)
    return counter


# --- MT19937 with NumPy's legacy algorithms ---------------------------------------------------
_MT_N = 624
_MT_M = 397
_U32 = np.uint64(0xFFFFFFFF)


@njit(cache=True)
def _mt_reload(mt):
    upper = np.uint64(0x80000000)
    lower = np.uint64(0x7FFFFFFF)
    matrix_a = np.uint64(0x9908B0DF)
    for k in range(_MT_N):
        y = (np.uint64(mt[k]) & upper) | (np.uint64(mt[(k + 1) % _MT_N]) & lower)
        value = np.uint64(mt[(k + _MT_M) % _MT_N]) ^ (y >> np.uint64(1))
        if y & np.uint64(1):
            value ^= matrix_a
        mt[k] = np.uint32(value & _U32)


@njit(cache=True)
def _mt_next32(mt, mt_pos):
    if mt_pos[0] >= _MT_N:
        _mt_reload(mt)
        mt_pos[0] = 0
    y = np.uint64(mt[mt_pos[0]])
    mt_pos[0] += 1
    y ^= y >> np.uint64(11)
    y ^= (y << np.uint64(7)) & np.uint64(0x9D2C5680)
    y ^= (y << np.uint64(15)) & np.uint64(0xEFC60000)
    y ^= y >> np.uint64(18)
    return y & _U32


@njit(cache=True)
def _mt_random_sample(mt, mt_pos):
    a = np.float64(_mt_next32(mt, mt_pos) >> np.uint64(5))
    b = np.float64(_mt_next32(mt, mt_pos) >> np.uint64(6))
    return (a * 67108864.0 + b) / 9007199254740992.0


@njit(cache=True)
def _mt_gauss(mt, mt_pos, gauss):
    # mt_pos[1] is has_gauss, gauss[0] the cached value, exactly as RandomState keeps them.
    if mt_pos[1] != 0:
        mt_pos[1] = 0
        value = gauss[0]
        gauss[0] = 0.0
        return value
    while True:
        x1 = 2.0 * _mt_random_sample(mt, mt_pos) - 1.0
        x2 = 2.0 * _mt_random_sample(mt, mt_pos) - 1.0
        r2 = x1 * x1 + x2 * x2
        if r2 < 1.0 and r2 != 0.0:
            break
    f = math.sqrt(-2.0 * math.log(r2) / r2)
    gauss[0] = f * x1
    mt_pos[1] = 1
    return f * x2


@njit(cache=True)
def _mt_fill_coins(mt, mt_pos, p, out):
    if p == 0.5:  # RandomState.choice([0, 1]) == randint(0, 2): low bit of one 32-bit draw
        for i in range(out.shape[0]):
            out[i] = np.float64(_mt_next32(mt, mt_pos) & np.uint64(1))
    else:
        for i in range(out.shape[0]):
            out[i] = 1.0 if _mt_random_sample(mt, mt_pos) < p else 0.0


@njit(cache=True)
def _mt_draws(mt, mt_pos, gauss, kinds, out):
    """Draw ``out[k]`` of kind ``kinds[k]`` (0 coin, 1 uniform, 2 normal); for testing the stream."""
    for k in range(kinds.shape[0]):
        if kinds[k] == 0:
            out[k] = np.float64(_mt_next32(mt, mt_pos) & np.uint64(1))
        elif kinds[k] == 1:
            out[k] = _mt_random_sample(mt, mt_pos)
        else:
            out[k] = _mt_gauss(mt, mt_pos, gauss)


@njit(cache=True)
def _stream_draws(start, p, n_coins, n_normals, coins, normals):
    """Draw coins then normals from one default stream; for testing the stream."""
    counter = _fill_coins(start, p, coins[:n_coins])
    return _fill_normals(counter, normals[:n_normals])


# --- Counter-based access to a stream, for the clamp-all samples -------------------------------
_RETRY_FLAG = np.uint64(1 << 63)


@njit(cache=True, inline="always")
def _word(start, q):
    """Word ``q`` (0-based) of the SplitMix64 stream whose counter starts at ``start``."""
    return _mix64(np.uint64(start) + (np.uint64(q) + np.uint64(1)) * _GOLDEN)


@njit(cache=True)
def _block_keys(key_samples, block):
    """(block stream start, retry key) of sample block ``block`` of a chunk."""
    key = np.uint64(key_samples)
    b = np.uint64(block)
    return _stream_start(key, b), _stream_start(key, b | _RETRY_FLAG)


@njit(cache=True, inline="always")
def _zig_first(bits):
    """The ziggurat's first try on 64 random bits, as in :func:`_normal`: (accepted, value)."""
    layer = np.int64(bits & np.uint64(0xFF))
    u = np.float64(bits >> np.uint64(11)) * _TO_UNIT
    x = u * _ZIG_EDGES[layer]
    value = -x if (bits >> np.uint64(8)) & np.uint64(1) else x
    return u < _ZIG_INNER[layer], value


@njit(cache=True)
def _normal_retry(retry_key, q, bits):
    """Finish a normal whose first try ``bits`` (word q) was rejected, on its own sub-stream."""
    counter = _stream_start(np.uint64(retry_key), np.uint64(q))
    bits = np.uint64(bits)
    layer = np.int64(bits & np.uint64(0xFF))
    negative = (bits >> np.uint64(8)) & np.uint64(1)
    u = np.float64(bits >> np.uint64(11)) * _TO_UNIT
    x = u * _ZIG_EDGES[layer]
    counter, accepted, value = _normal_slow_path(counter, layer, negative, x)
    if accepted:
        return value
    counter, value = _normal(counter)
    return value


@njit(cache=True, error_model="numpy")
def _sample_draws(block_key, retry_key, r, p, coin_words, coins, noise):
    """Coins and normals of sample ``r`` of a block, one at a time (see the module docstring)."""
    n = coins.shape[0]
    base = np.uint64(r) * np.uint64(coin_words + n)
    if p == 0.5:
        for i in range(n):
            word = _word(block_key, base + np.uint64(i >> 6))
            coins[i] = np.float64((word >> np.uint64(i & 63)) & np.uint64(1))
    else:
        for i in range(n):
            u = np.float64(_word(block_key, base + np.uint64(i)) >> np.uint64(11)) * _TO_UNIT
            coins[i] = 1.0 if u < p else 0.0
    for j in range(n):
        q = base + np.uint64(coin_words + j)
        bits = _word(block_key, q)
        accepted, value = _zig_first(bits)
        noise[j] = value if accepted else _normal_retry(retry_key, q, bits)


@njit(cache=True, error_model="numpy")
def _block_draws(block_key, retry_key, count, p, coin_words, U, N, words):
    """Coins U[i, r] and normals N[j, r] of samples r < count of a block, in loops over samples.

    Draws exactly what :func:`_sample_draws` draws for each r; ``words`` is scratch.
    """
    n = U.shape[0]
    stride = np.uint64(coin_words + n)
    if p == 0.5:
        for w in range(coin_words):
            for r in range(count):
                words[r] = _word(block_key, np.uint64(r) * stride + np.uint64(w))
            for i in range(w * 64, min(n, w * 64 + 64)):
                shift = np.uint64(i - w * 64)
                Ui = U[i]
                for r in range(count):
                    Ui[r] = np.float64((words[r] >> shift) & np.uint64(1))
    else:
        for i in range(n):
            Ui = U[i]
            for r in range(count):
                bits = _word(block_key, np.uint64(r) * stride + np.uint64(i))
                Ui[r] = 1.0 if np.float64(bits >> np.uint64(11)) * _TO_UNIT < p else 0.0
    rejected = 0
    for j in range(n):
        Nj = N[j]
        offset = np.uint64(coin_words + j)
        for r in range(count):
            accepted, value = _zig_first(_word(block_key, np.uint64(r) * stride + offset))
            Nj[r] = value if accepted else np.nan
            rejected += np.int64(not accepted)
    if rejected > 0:  # about 1.5% of the normals: finish them in a scalar pass
        for j in range(n):
            Nj = N[j]
            offset = np.uint64(coin_words + j)
            for r in range(count):
                if np.isnan(Nj[r]):
                    q = np.uint64(r) * stride + offset
                    Nj[r] = _normal_retry(retry_key, q, _word(block_key, q))


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


@njit(cache=True, inline="always")
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


@njit(cache=True, error_model="numpy")
def _sigmoid(z):
    """1 / (1 + exp(-z)), exactly as :func:`_block_sigmoid` computes it."""
    x = -z
    if abs(x) <= _EXP_LIMIT:
        return 1.0 / (1.0 + _exp_core(x))
    return 1.0 / (1.0 + math.exp(x))


@njit(cache=True, error_model="numpy")
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
@njit(cache=True, inline="always")
def _drive(x, col_ptr, row_idx, weights, pre):
    """pre = A @ x with A in compressed sparse columns (source i's column lists its targets)."""
    pre[:] = 0.0
    for i in range(x.shape[0]):
        xi = x[i]
        if xi != 0.0:
            for k in range(col_ptr[i], col_ptr[i + 1]):
                pre[row_idx[k]] += weights[k] * xi


def _drive_tiles(col_ptr, row_idx, weights, n, block_size):
    """A (compressed sparse columns) as rows per tile of sources, for :func:`_block_drive`.

    Sources are cut into tiles of about 16384 / block_size (so a tile's inputs, sources
    x ``block_size`` samples, stay near the core); entries are sorted by tile, then
    target, then source. Returns (tile_ptr, sources, weights): the entries of tile t
    and target j are ``[tile_ptr[t * n + j], tile_ptr[t * n + j + 1])``. The tiling never
    changes a result: each sum still runs over sources in increasing order.
    """
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


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _block_drive(tile_ptr, tile_sources, tile_weights, count, U, P):
    """P[:, r] = A @ U[:, r] for r < count, U binary; vectorised across samples.

    Each P[j, r] adds the weights of its active sources in increasing source order,
    starting from 0, exactly as :func:`_drive` does for a 0/1 state (w * 1 and w * 0
    are exact, so contracting to FMA changes nothing). Up to four sources are added
    per pass over P[j] (one load and one store of it for four multiply-adds).
    """
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


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
def _simulate_block(p, coin_words, tile_ptr, tile_sources, tile_weights, key_samples, block, count, U, N, V, words):
    """Samples r < count of clamp-all block ``block``: stimulation U[:, r], outcome V[:, r]."""
    block_key, retry_key = _block_keys(key_samples, block)
    _block_draws(block_key, retry_key, count, p, coin_words, U, N, words)
    _block_drive(tile_ptr, tile_sources, tile_weights, count, U, V)
    _block_sigmoid(count, V, N)


@njit(cache=True, error_model="numpy")
def _simulate_block_in(slot, words, p, coin_words, tile_ptr, tile_sources, tile_weights, key_samples, block, count):
    """Simulate a block's samples in this thread's scratch ``slot``; returns its (inputs, outputs), feature-major."""
    U, N, V = slot[0], slot[1], slot[2]
    _simulate_block(p, coin_words, tile_ptr, tile_sources, tile_weights, key_samples, block, count, U, N, V, words)
    return U, V


def _block_scratch(n, block_size, moments=False):
    """Per-thread work arrays of the clamp-all kernels, allocated once per simulation.

    (float scratch (threads, 3 or 5, n, block_size), words (threads, block_size)), and
    with ``moments`` the pattern tables and patterns of :func:`_pattern_scratch`: one
    slot per Numba thread (``numba.get_thread_id()``), so blocks reuse them instead of
    allocating (large allocations fault their pages in again on every block).
    """
    threads = max(1, numba.config.NUMBA_NUM_THREADS)
    arrays = (np.empty((threads, 5 if moments else 3, n, block_size)),
              np.empty((threads, block_size), dtype=np.uint64))
    if moments:
        arrays += _pattern_scratch(threads, n, n, block_size)
    return arrays


@njit(cache=True, parallel=True, error_model="numpy")
def _clamp_all_samples(p, coin_words, tile_ptr, tile_sources, tile_weights, key_samples, n_samples, block_size,
                       scratch, words, inputs, outputs):
    """The chunk's clamp-all samples, time-major: inputs[m], outputs[m] for m < n_samples.

    Blocks run in parallel; what each holds depends on (key_samples, block) only.
    ``scratch``, ``words``: from :func:`_block_scratch`.
    """
    n = inputs.shape[1]
    n_blocks = (n_samples + block_size - 1) // block_size
    for block in prange(n_blocks):
        lo = block * block_size
        count = min(block_size, n_samples - lo)
        slot = scratch[numba.get_thread_id()]
        U, V = _simulate_block_in(slot, words[numba.get_thread_id()], p, coin_words, tile_ptr, tile_sources,
                                  tile_weights, key_samples, block, count)
        _transpose_into(U, count, inputs, lo)
        _transpose_into(V, count, outputs, lo)


@njit(cache=True, parallel=True, error_model="numpy")
def _clamp_all_moments(p, coin_words, tile_ptr, tile_sources, tile_weights, key_samples, n_samples, block_size,
                       scratch, words, tables, patterns, mean_u, mean_v, m2_u, m2_v, comoment):
    """The chunk's clamp-all samples folded straight into moments; returns the count.

    Each block's moments come from :func:`_block_moments` on the block's samples
    (time-major), and blocks are merged in block order, exactly as
    :func:`_blocked_moments` does on the same samples. ``scratch`` ... ``patterns``:
    :func:`_block_scratch` with ``moments=True``.
    """
    n = mean_u.shape[0]
    n_blocks = (n_samples + block_size - 1) // block_size
    block_mean_u = np.empty((n_blocks, n))
    block_mean_v = np.empty((n_blocks, n))
    block_m2_u = np.empty((n_blocks, n))
    block_m2_v = np.empty((n_blocks, n))
    block_comoment = np.empty((n_blocks, n, n))
    for block in prange(n_blocks):
        lo = block * block_size
        count = min(block_size, n_samples - lo)
        slot = scratch[numba.get_thread_id()]
        U, V = _simulate_block_in(slot, words[numba.get_thread_id()], p, coin_words, tile_ptr, tile_sources,
                                  tile_weights, key_samples, block, count)
        # time-major copies for the moments, in the (n, block_size) slots 3 and 4 seen as (block_size, n)
        Us = slot[3].reshape((block_size, n))
        Vs = slot[4].reshape((block_size, n))
        _transpose_into(U, count, Us, 0)
        _transpose_into(V, count, Vs, 0)
        _block_moments(Us, Vs, 0, count, block_mean_u[block], block_mean_v[block],
                       block_m2_u[block], block_m2_v[block], block_comoment[block],
                       tables[numba.get_thread_id()], patterns[numba.get_thread_id()])
    return _merge_blocks(n_samples, block_size, block_mean_u, block_mean_v, block_m2_u, block_m2_v,
                         block_comoment, mean_u, mean_v, m2_u, m2_v, comoment)


CLAMP_NONE = 0
CLAMP_ALL = 1
CLAMP_STIMULATED = 2


@njit(cache=True, error_model="numpy")
def _sequential_chunk(
    start, stop, n_steps, every, clamp_mode, p,
    col_ptr, row_idx, weights, state,
    legacy, key_samples, key_other, block_size, mt, mt_pos, gauss,
    inputs, outputs, write_trajectory, trajectory, stimulation, clamped,
):
    """Advance steps [start, stop) one at a time; returns the number of samples written.

    ``state`` holds x_start (before any clamp) and is left holding x_stop. A step t
    is processed only if t + 1 < n_steps, as in the tutorial's ``range(timesteps - 1)``.
    With the default streams, the clamp-all design's sample m takes its coins and
    normals from sample m % block_size of block m // block_size (see the module
    docstring), so its samples are exactly those of :func:`_clamp_all_samples`; its
    other steps draw from the chunk's ``key_other`` stream, and the other designs
    draw everything from ``key_other`` in step order. Legacy draws follow the
    tutorial's order exactly.
    """
    n = state.shape[0]
    pre = np.empty(n)
    coins = np.empty(n)
    noise = np.empty(n)
    coin_words = (n + 63) // 64 if p == 0.5 else n
    block_key = np.uint64(0)
    retry_key = np.uint64(0)
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
                _mt_fill_coins(mt, mt_pos, p, coins)
            elif sample_draws:
                if m % block_size == 0:
                    block_key, retry_key = _block_keys(key_samples, m // block_size)
                _sample_draws(block_key, retry_key, m % block_size, p, coin_words, coins, noise)
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
            inputs[m, :] = state
        if write_trajectory:
            trajectory[row, :] = state
        if not active:
            continue
        overwritten = clamp_mode == CLAMP_ALL and (t + 1) % every == 0 and t + 2 < n_steps
        if legacy:
            for j in range(n):
                noise[j] = _mt_gauss(mt, mt_pos, gauss)
        elif overwritten or sample_draws:
            pass  # nothing to draw, or drawn with the coins
        else:
            other_stream = _fill_normals(other_stream, noise)
        if overwritten:
            continue
        _drive(state, col_ptr, row_idx, weights, pre)
        for j in range(n):
            state[j] = _sigmoid(pre[j] + noise[j])
        if is_clamp or clamp_mode == CLAMP_NONE:
            outputs[m, :] = state
            m += 1
    return m


# --- Moments of a chunk of samples ------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _two_pass_moments(U, V, lo, hi, mean_u, mean_v, m2_u, m2_v, comoment):
    """Two-pass (centred) moments of the time-major samples U[lo:hi], V[lo:hi]."""
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


_pattern_groups_jit = njit(cache=True)(_pattern_groups)


@njit(cache=True, error_model="numpy")
def _one_group_moments(U, V, lo, hi, mean_u, mean_v, m2_u, m2_v, comoment, table, patterns):
    """:func:`_pattern_moments` for at most ``_PATTERN_BITS`` inputs: one group, counts per pattern."""
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


@njit(cache=True, error_model="numpy")
def _pattern_moments(U, V, lo, hi, mean_u, mean_v, m2_u, m2_v, comoment, tables, patterns):
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
        _one_group_moments(U, V, lo, hi, mean_u, mean_v, m2_u, m2_v, comoment, tables[0], patterns[:, 0])
        return
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


@njit(cache=True, error_model="numpy")
def _is_binary(U, lo, hi):
    """Whether every U[lo:hi] is 0 or 1 (branch-free: random 0/1 would defeat the predictor)."""
    other = 0
    for t in range(lo, hi):
        Ut = U[t]
        for i in range(U.shape[1]):
            u = Ut[i]
            other += np.int64((u != 0.0) & (u != 1.0))
    return other == 0


@njit(cache=True, error_model="numpy")
def _block_moments(U, V, lo, hi, mean_u, mean_v, m2_u, m2_v, comoment, tables, patterns):
    """Moments of one block: by input pattern if the inputs are all 0/1, else two-pass.

    The choice depends on the block's values only, so the fused clamp-all kernel and
    :func:`_blocked_moments` on the same samples give the same bits. ``tables`` and
    ``patterns``: scratch for :func:`_pattern_moments`.
    """
    if _is_binary(U, lo, hi):
        _pattern_moments(U, V, lo, hi, mean_u, mean_v, m2_u, m2_v, comoment, tables, patterns)
    else:
        _two_pass_moments(U, V, lo, hi, mean_u, mean_v, m2_u, m2_v, comoment)


def _pattern_scratch(threads, n_inputs, n_outputs, block_size):
    """(tables, patterns) scratch of :func:`_pattern_moments` for each of ``threads`` slots."""
    bits, groups = _pattern_groups(n_inputs)
    return (np.empty((threads, groups, 1 << bits, n_outputs)),
            np.empty((threads, block_size, groups), dtype=np.int64))


_CENTRE_ROWS = 256  # time rows per partial sum of _centre_columns


@njit(cache=True, parallel=True, error_model="numpy")
def _centre_columns(X, mean, m2):
    """Centre the time-major X (k, n) in place: mean[i], then m2[i] = sum of squares of column i.

    Sums run over fixed blocks of ``_CENTRE_ROWS`` rows in parallel and are then added
    in block order, so the bits never depend on the thread count.
    """
    k, n = X.shape
    n_parts = (k + _CENTRE_ROWS - 1) // _CENTRE_ROWS
    partial = np.zeros((n_parts, n))
    for part in prange(n_parts):
        sums = partial[part]
        for t in range(part * _CENTRE_ROWS, min(k, (part + 1) * _CENTRE_ROWS)):
            row = X[t]
            for i in range(n):
                sums[i] += row[i]
    for i in range(n):
        mean[i] = 0.0
    for part in range(n_parts):
        for i in range(n):
            mean[i] += partial[part, i]
    for i in range(n):
        mean[i] /= k
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


@njit(cache=True)
def _merge_blocks(n_samples, block_size, block_mean_u, block_mean_v, block_m2_u, block_m2_v, block_comoment,
                  mean_u, mean_v, m2_u, m2_v, comoment):
    """Merge the moments of blocks 0, 1, ... in that order into the outputs; returns the count."""
    count = 0
    for b in range(block_mean_u.shape[0]):
        count_b = min((b + 1) * block_size, n_samples) - b * block_size
        count = _chan_merge(
            count, mean_u, mean_v, m2_u, m2_v, comoment,
            count_b, block_mean_u[b], block_mean_v[b], block_m2_u[b], block_m2_v[b], block_comoment[b],
        )
    return count


@njit(cache=True)
def _chan_merge(count_a, mean_u, mean_v, m2_u, m2_v, comoment,
                count_b, mean_u_b, mean_v_b, m2_u_b, m2_v_b, comoment_b):
    """Merge moments b into a in place (Chan, Golub & LeVeque); returns the new count."""
    if count_b == 0:
        return count_a
    if count_a == 0:
        mean_u[:] = mean_u_b
        mean_v[:] = mean_v_b
        m2_u[:] = m2_u_b
        m2_v[:] = m2_v_b
        comoment[:, :] = comoment_b
        return count_b
    count = count_a + count_b
    weight = np.float64(count_a) * np.float64(count_b) / np.float64(count)
    fraction_b = np.float64(count_b) / np.float64(count)
    delta_u = mean_u_b - mean_u
    delta_v = mean_v_b - mean_v
    for j in range(comoment.shape[0]):
        for i in range(comoment.shape[1]):
            comoment[j, i] += comoment_b[j, i] + delta_v[j] * delta_u[i] * weight
    m2_u += m2_u_b + delta_u * delta_u * weight
    m2_v += m2_v_b + delta_v * delta_v * weight
    mean_u += delta_u * fraction_b
    mean_v += delta_v * fraction_b
    return count


@njit(cache=True, parallel=True)
def _blocked_moments(U, V, n_samples, block_size, mean_u, mean_v, m2_u, m2_v, comoment):
    """Moments of samples [0, n_samples): :func:`_block_moments` per block in parallel, merged in block order."""
    nu = U.shape[1]
    nv = V.shape[1]
    n_blocks = (n_samples + block_size - 1) // block_size
    block_mean_u = np.empty((n_blocks, nu))
    block_mean_v = np.empty((n_blocks, nv))
    block_m2_u = np.empty((n_blocks, nu))
    block_m2_v = np.empty((n_blocks, nv))
    block_comoment = np.empty((n_blocks, nv, nu))
    bits, groups = _pattern_groups_jit(nu)
    for b in prange(n_blocks):
        lo = b * block_size
        hi = min((b + 1) * block_size, n_samples)
        tables = np.empty((groups, 1 << bits, nv))
        patterns = np.empty((hi - lo, groups), dtype=np.int64)
        _block_moments(
            U, V, lo, hi,
            block_mean_u[b], block_mean_v[b], block_m2_u[b], block_m2_v[b], block_comoment[b], tables, patterns,
        )
    return _merge_blocks(n_samples, block_size, block_mean_u, block_mean_v, block_m2_u, block_m2_v,
                         block_comoment, mean_u, mean_v, m2_u, m2_v, comoment)
