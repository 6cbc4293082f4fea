"""Random streams: SplitMix64 counters with a ziggurat for normals (default), and MT19937 (legacy).

* default: SplitMix64 counter streams (one 64-bit counter per stream), keyed from
  ``np.random.SeedSequence(seed, spawn_key=(chunk,))``; normals by a 256-layer
  Marsaglia-Tsang ziggurat. Every (seed, chunk, block) stream is independent of
  how, where and on which thread it is drawn.
* legacy: MT19937 with NumPy's legacy ``RandomState`` algorithms (``randint(0, 2)``,
  ``random_sample``, polar Box-Muller ``standard_normal`` with its cached second
  value), with the state held in explicit arrays so that it can be checkpointed:
  ``legacy_state = (mt, mt_pos, gauss)``, the 624 key words, (position, has_gauss)
  and the cached normal, exactly as ``RandomState.get_state()`` gives them.

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
``retry_key = _stream_start(key_samples, b | 2**63)``; ``keys = (block start,
retry_key)`` is what :func:`_block_keys` returns. Every draw's position is thus
known in advance: a block is drawn in loops across its samples that vectorise
(:func:`_block_draws`), and the sequential kernel draws the very same samples one
at a time (:func:`_sample_draws`).
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel

# --- SplitMix64 -----------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@kernel
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@kernel
def _next_u64(counter):
    """Advance a SplitMix64 counter; returns (counter, 64 random bits)."""
    counter = counter + _GOLDEN
    return counter, _mix64(counter)


@kernel
def _uniform(counter):
    counter, bits = _next_u64(counter)
    return counter, np.float64(bits >> np.uint64(11)) * _TO_UNIT


@kernel
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


@kernel
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


@kernel
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


@kernel
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


@kernel
def _fill_normals(counter, out):
    for j in range(out.shape[0]):
        counter, out[j] = _normal(counter)
    return counter


# --- MT19937 with NumPy's legacy algorithms ---------------------------------------------------
_MT_N = 624
_MT_M = 397
_U32 = np.uint64(0xFFFFFFFF)


@kernel
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


@kernel
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


@kernel
def _mt_random_sample(mt, mt_pos):
    a = np.float64(_mt_next32(mt, mt_pos) >> np.uint64(5))
    b = np.float64(_mt_next32(mt, mt_pos) >> np.uint64(6))
    return (a * 67108864.0 + b) / 9007199254740992.0


@kernel
def _mt_gauss(legacy_state):
    """One standard normal, as ``RandomState.standard_normal()``."""
    mt, mt_pos, gauss = legacy_state
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


@kernel
def _mt_fill_coins(legacy_state, p, out):
    """out[i] = 1.0 with probability p, else 0.0, as the tutorial draws its stimulation."""
    mt, mt_pos, _ = legacy_state
    if p == 0.5:  # RandomState.choice([0, 1]) == randint(0, 2): low bit of one 32-bit draw
        for i in range(out.shape[0]):
            out[i] = np.float64(_mt_next32(mt, mt_pos) & np.uint64(1))
    else:
        for i in range(out.shape[0]):
            out[i] = 1.0 if _mt_random_sample(mt, mt_pos) < p else 0.0


@kernel
def _mt_draws(legacy_state, kinds, out):
    """Draw ``out[k]`` of kind ``kinds[k]`` (0 coin, 1 uniform, 2 normal); for testing the stream."""
    mt, mt_pos, _ = legacy_state
    for k in range(kinds.shape[0]):
        if kinds[k] == 0:
            out[k] = np.float64(_mt_next32(mt, mt_pos) & np.uint64(1))
        elif kinds[k] == 1:
            out[k] = _mt_random_sample(mt, mt_pos)
        else:
            out[k] = _mt_gauss(legacy_state)


@kernel
def _stream_draws(start, p, n_coins, n_normals, coins, normals):
    """Draw coins then normals from one default stream; for testing the stream."""
    counter = _fill_coins(start, p, coins[:n_coins])
    return _fill_normals(counter, normals[:n_normals])


# --- Counter-based access to a stream, for the clamp-all samples -------------------------------
_RETRY_FLAG = np.uint64(1 << 63)


@kernel
def _word(start, q):
    """Word ``q`` (0-based) of the SplitMix64 stream whose counter starts at ``start``."""
    return _mix64(np.uint64(start) + (np.uint64(q) + np.uint64(1)) * _GOLDEN)


@kernel
def _block_keys(key_samples, block):
    """``keys`` of sample block ``block`` of a chunk: (block stream start, retry key)."""
    key = np.uint64(key_samples)
    b = np.uint64(block)
    return _stream_start(key, b), _stream_start(key, b | _RETRY_FLAG)


@kernel
def _zig_first(bits):
    """The ziggurat's first try on 64 random bits, as in :func:`_normal`: (accepted, value)."""
    layer = np.int64(bits & np.uint64(0xFF))
    u = np.float64(bits >> np.uint64(11)) * _TO_UNIT
    x = u * _ZIG_EDGES[layer]
    value = -x if (bits >> np.uint64(8)) & np.uint64(1) else x
    return u < _ZIG_INNER[layer], value


@kernel
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


@kernel
def _sample_draws(keys, r, p, coin_words, coins, noise):
    """Coins and normals of sample ``r`` of a block, one at a time (see the module docstring)."""
    block_key, retry_key = keys
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


@kernel
def _block_draws(keys, count, p, coin_words, U, N, words):
    """Coins U[i, r] and normals N[j, r] of samples r < count of a block, in loops over samples.

    Draws exactly what :func:`_sample_draws` draws for each r; ``words`` is scratch.
    """
    block_key, retry_key = keys
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
