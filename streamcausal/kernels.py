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
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

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


@njit(cache=True, parallel=True)
def _independent_samples(p, col_ptr, row_idx, weights, key, n_samples, block_size, inputs, outputs):
    """Samples of the clamp-all design, which are i.i.d.: blocks of samples run in parallel.

    Block b draws, for each of its samples, the coins then the outcome's normals from
    sub-stream b of ``key``; the result does not depend on the thread count.
    """
    n = inputs.shape[1]
    n_blocks = (n_samples + block_size - 1) // block_size
    for block in prange(n_blocks):
        counter = _stream_start(key, block)
        pre = np.empty(n)
        noise = np.empty(n)
        for m in range(block * block_size, min((block + 1) * block_size, n_samples)):
            counter = _fill_coins(counter, p, inputs[m])
            counter = _fill_normals(counter, noise)
            _drive(inputs[m], col_ptr, row_idx, weights, pre)
            for j in range(n):
                outputs[m, j] = 1.0 / (1.0 + math.exp(-(pre[j] + noise[j])))


CLAMP_NONE = 0
CLAMP_ALL = 1
CLAMP_STIMULATED = 2


@njit(cache=True)
def _sequential_chunk(
    start, stop, n_steps, every, clamp_mode, p,
    col_ptr, row_idx, weights, state,
    legacy, key_samples, key_other, block_size, mt, mt_pos, gauss,
    inputs, outputs, write_trajectory, trajectory, stimulation, clamped,
):
    """Advance steps [start, stop) one at a time; returns the number of samples written.

    ``state`` holds x_start (before any clamp) and is left holding x_stop. A step t
    is processed only if t + 1 < n_steps, as in the tutorial's ``range(timesteps - 1)``.
    With the default streams, clamp-all samples draw from the same block sub-streams
    as :func:`_independent_samples` (so both give identical samples) and the other
    steps from the chunk's ``key_other`` stream; the other designs draw everything from
    ``key_other`` in step order. Legacy draws follow the tutorial's order exactly.
    """
    n = state.shape[0]
    pre = np.empty(n)
    coins = np.empty(n)
    noise = np.empty(n)
    sample_stream = np.uint64(0)
    other_stream = key_other
    m = 0
    for t in range(start, stop):
        row = t - start
        active = t + 1 < n_steps
        is_clamp = active and clamp_mode != CLAMP_NONE and t % every == 0
        if write_trajectory:
            stimulation[row, :] = 0.0
            clamped[row] = is_clamp
        if is_clamp:
            if legacy:
                _mt_fill_coins(mt, mt_pos, p, coins)
            elif clamp_mode == CLAMP_ALL:
                if m % block_size == 0:
                    sample_stream = _stream_start(key_samples, m // block_size)
                sample_stream = _fill_coins(sample_stream, p, coins)
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
        elif overwritten:
            continue
        elif is_clamp and clamp_mode == CLAMP_ALL:
            sample_stream = _fill_normals(sample_stream, noise)
        else:
            other_stream = _fill_normals(other_stream, noise)
        if overwritten:
            continue
        _drive(state, col_ptr, row_idx, weights, pre)
        for j in range(n):
            state[j] = 1.0 / (1.0 + math.exp(-(pre[j] + noise[j])))
        if is_clamp or clamp_mode == CLAMP_NONE:
            outputs[m, :] = state
            m += 1
    return m


# --- Moments of a chunk of samples ------------------------------------------------------------
@njit(cache=True)
def _two_pass_moments(U, V, lo, hi, mean_u, mean_v, m2_u, m2_v, comoment):
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
    """Moments of samples [0, n_samples): two-pass per block in parallel, merged in block order."""
    nu = U.shape[1]
    nv = V.shape[1]
    n_blocks = (n_samples + block_size - 1) // block_size
    block_mean_u = np.empty((n_blocks, nu))
    block_mean_v = np.empty((n_blocks, nv))
    block_m2_u = np.empty((n_blocks, nu))
    block_m2_v = np.empty((n_blocks, nv))
    block_comoment = np.empty((n_blocks, nv, nu))
    for b in prange(n_blocks):
        _two_pass_moments(
            U, V, b * block_size, min((b + 1) * block_size, n_samples),
            block_mean_u[b], block_mean_v[b], block_m2_u[b], block_m2_v[b], block_comoment[b],
        )
    count = 0
    for b in range(n_blocks):
        count_b = min((b + 1) * block_size, n_samples) - b * block_size
        count = _chan_merge(
            count, mean_u, mean_v, m2_u, m2_v, comoment,
            count_b, block_mean_u[b], block_mean_v[b], block_m2_u[b], block_m2_v[b], block_comoment[b],
        )
    return count
