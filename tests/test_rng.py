"""The random streams of streamcausal._kernels.rng, bit for bit and statistically.

* default: SplitMix64 counters and a 256-layer ziggurat, checked against the pure-Python
  reference in ``reference.py`` draw for draw, including the tail and wedge paths;
* legacy: the MT19937 kernel against ``np.random.RandomState`` draw for draw;
* distributions of the default normals and coins (thresholds about 5 sigma).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from reference import (
    ReferenceStream,
    normal_cdf,
    reference_mix64,
    reference_stream_draws,
    reference_stream_start,
    reference_ziggurat_tables,
)

from streamcausal import Observation, Perturbation
from streamcausal._kernels import rng as kernels

N_STAT = 10**6


def kernel_draws(start, p, n_coins, n_normals):
    coins = np.empty(n_coins)
    normals = np.empty(n_normals)
    counter = kernels._stream_draws(np.uint64(start), p, n_coins, n_normals, coins, normals)
    return coins, normals, int(counter)


# --------------------------------------------------------------------------- default stream, exact


def test_ziggurat_tables_match_reference_exactly():
    edges, inner, density = reference_ziggurat_tables()
    assert np.array_equal(kernels._ZIG_EDGES, np.array(edges))
    assert np.array_equal(kernels._ZIG_INNER, np.array(inner))
    assert np.array_equal(kernels._ZIG_DENSITY, np.array(density))
    assert kernels._ZIG_R == edges[1] == 3.6541528853610088
    # Each layer has the same area: the base strip (rectangle plus tail) and every upper one.
    tail = math.sqrt(math.pi / 2) * math.erfc(edges[1] / math.sqrt(2))
    assert edges[1] * density[1] + tail == pytest.approx(0.00492867323399, rel=1e-6)
    for i in range(1, 255):
        assert edges[i] * (density[i + 1] - density[i]) == pytest.approx(0.00492867323399, rel=1e-9)
    assert edges[255] * (1.0 - density[255]) == pytest.approx(0.00492867323399, rel=1e-6)


@pytest.mark.parametrize("z", [0, 1, 0x9E3779B97F4A7C15, 2**63, 2**64 - 1, 123456789123456789])
def test_mix64_matches_reference(z):
    assert int(kernels._mix64(np.uint64(z))) == reference_mix64(z)


def test_splitmix64_known_values():
    # SplitMix64 seeded with 0: the published first outputs of Vigna's splitmix64.c.
    stream = ReferenceStream(0)
    assert [stream.next_u64() for _ in range(3)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]
    counter = np.uint64(0)
    for want in (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F):
        # Numba hands uint64 back as a Python int; keep the counter a uint64 between calls.
        counter, bits = kernels._next_u64(np.uint64(counter))
        assert int(bits) == want


@pytest.mark.parametrize("key", [0, 1, 12345, 2**64 - 1])
def test_stream_start_matches_reference(key):
    for index in (0, 1, 2, 63, 4095, 10**9):
        assert int(kernels._stream_start(np.uint64(key), index)) == reference_stream_start(key, index)


def test_uniform_matches_reference():
    start = reference_stream_start(5, 1)
    stream = ReferenceStream(start)
    counter = np.uint64(start)
    for _ in range(1000):
        counter, u = kernels._uniform(np.uint64(counter))
        assert u == stream.uniform()
        assert 0.0 <= u < 1.0
    assert int(counter) == stream.counter


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_stream_draws_bit_for_bit_with_tail_and_wedge(p):
    # Stream (7, 0) draws a rejected tail proposal within its first 30000 normals.
    start = reference_stream_start(7, 0)
    n_coins, n_normals = 1000, 30000
    coins, normals, counter = kernel_draws(start, p, n_coins, n_normals)
    ref_coins, ref_normals, ref_counter, paths = reference_stream_draws(start, p, n_coins, n_normals)
    assert np.array_equal(coins, np.array(ref_coins))
    assert np.array_equal(normals, np.array(ref_normals))  # bit for bit
    assert counter == ref_counter
    # Every path of the ziggurat was exercised.
    assert paths["fast"] > 0.98 * n_normals
    assert paths["wedge_accepted"] > 0
    assert paths["wedge_rejected"] > 0
    assert paths["tail"] > 0
    assert paths["tail_retries"] > 0
    assert np.abs(normals).max() > kernels._ZIG_R  # tail values really came out


def test_coins_p_half_use_one_bit_each_across_word_boundaries():
    start = reference_stream_start(3, 2)
    for n in (1, 63, 64, 65, 130):
        coins, _, counter = kernel_draws(start, 0.5, n, 0)
        ref = ReferenceStream(start)
        assert np.array_equal(coins, np.array(ref.coins(0.5, n)))
        assert counter == ref.counter
        assert (counter - start) % 2**64 == (-(-n // 64) * 0x9E3779B97F4A7C15) % 2**64


def test_normals_continue_the_stream_after_coins():
    start = reference_stream_start(11, 0)
    _, normals, _ = kernel_draws(start, 0.5, 100, 500)
    ref = ReferenceStream(start)
    ref.coins(0.5, 100)
    assert np.array_equal(normals, np.array(ref.normals(500)))


# --------------------------------------------------------------------------- legacy stream, exact


@pytest.mark.parametrize("seed", [0, 12, 42, 2**32 - 1])
def test_mt_kernel_matches_randomstate_draw_for_draw(seed):
    state = np.random.RandomState(seed).get_state()
    mt = np.array(state[1], dtype=np.uint32)
    mt_pos = np.array([state[2], state[3]], dtype=np.int64)
    gauss = np.array([state[4]], dtype=np.float64)
    # A mixed sequence long enough to reload the 624-word state several times.
    kinds = np.random.default_rng(seed).integers(0, 3, 4000).astype(np.int64)
    kinds[:50] = 2  # consecutive normals use the cached second value
    out = np.empty(kinds.shape[0])
    kernels._mt_draws((mt, mt_pos, gauss), kinds, out)
    rs = np.random.RandomState(seed)
    want = np.empty_like(out)
    for k, kind in enumerate(kinds):
        if kind == 0:
            want[k] = rs.randint(0, 2)
        elif kind == 1:
            want[k] = rs.random_sample()
        else:
            want[k] = rs.standard_normal()
    assert np.array_equal(out, want)
    # The kernel's explicit state is RandomState's state afterwards.
    after = rs.get_state()
    assert np.array_equal(mt, after[1])
    assert (mt_pos[0], mt_pos[1]) == (after[2], after[3])
    assert gauss[0] == after[4]


def test_mt_coins_equal_choice_and_randint_vectors():
    seed, n = 7, 1000
    state = np.random.RandomState(seed).get_state()
    mt = np.array(state[1], dtype=np.uint32)
    mt_pos = np.array([state[2], state[3]], dtype=np.int64)
    out = np.empty(n)
    kernels._mt_fill_coins((mt, mt_pos, np.zeros(1)), 0.5, out)
    assert np.array_equal(out, np.random.RandomState(seed).randint(0, 2, size=n))
    assert np.array_equal(out, np.random.RandomState(seed).choice([0, 1], size=n))
    state = np.random.RandomState(seed).get_state()
    mt = np.array(state[1], dtype=np.uint32)
    mt_pos = np.array([state[2], state[3]], dtype=np.int64)
    kernels._mt_fill_coins((mt, mt_pos, np.zeros(1)), 0.3, out)
    assert np.array_equal(out, np.random.RandomState(seed).random_sample(n) < 0.3)


@pytest.mark.parametrize("n", [1, 2, 6, 30])
def test_legacy_multivariate_normal_identity_is_standard_normal(n):
    for seed in (0, 12, 42):
        np.random.seed(seed)
        first = np.random.multivariate_normal(np.zeros(n), np.eye(n))
        second = np.random.multivariate_normal(np.zeros(n), np.eye(n))
        np.random.seed(seed)
        assert np.array_equal(first, np.random.standard_normal(n))
        assert np.array_equal(second, np.random.standard_normal(n))
        # ... and the MT kernel's normals are those same values.
        state = np.random.RandomState(seed).get_state()
        mt = np.array(state[1], dtype=np.uint32)
        mt_pos = np.array([state[2], state[3]], dtype=np.int64)
        gauss = np.array([state[4]])
        out = np.empty(2 * n)
        kernels._mt_draws((mt, mt_pos, gauss), np.full(2 * n, 2, dtype=np.int64), out)
        assert np.array_equal(out, np.concatenate([first, second]))


# --------------------------------------------------------------------------- statistics


@pytest.fixture(scope="module")
def many_normals():
    _, normals, _ = kernel_draws(reference_stream_start(2024, 0), 0.5, 0, N_STAT)
    return normals


def test_ziggurat_normal_moments(many_normals):
    x = many_normals
    n = x.shape[0]
    mean = x.mean()
    var = x.var()
    kurtosis = np.mean((x - mean) ** 4) / var**2 - 3.0
    skew = np.mean((x - mean) ** 3) / var**1.5
    assert abs(mean) < 5 * math.sqrt(1 / n)
    assert abs(var - 1) < 5 * math.sqrt(2 / n)
    assert abs(skew) < 5 * math.sqrt(6 / n)
    assert abs(kurtosis) < 5 * math.sqrt(24 / n)


def test_ziggurat_normal_ks_distance(many_normals):
    x = np.sort(many_normals)
    n = x.shape[0]
    cdf = np.array([normal_cdf(v) for v in x.tolist()])
    upper = np.arange(1, n + 1) / n - cdf
    lower = cdf - np.arange(0, n) / n
    distance = max(upper.max(), lower.max())
    # P(sqrt(n) D > 2.75) ~ 2 exp(-2 * 2.75^2) ~ 5e-7, about a 5-sigma event.
    assert distance * math.sqrt(n) < 2.75, distance


def test_ziggurat_tail_frequencies(many_normals):
    x = np.abs(many_normals)
    n = x.shape[0]
    for threshold in (1.0, 2.0, 3.0, kernels._ZIG_R, 4.0, 4.5):
        p = 2 * (1 - normal_cdf(threshold))
        expected = n * p
        observed = int(np.count_nonzero(x > threshold))
        assert abs(observed - expected) < 5 * math.sqrt(expected * (1 - p)) + 3, threshold


def test_ziggurat_normals_of_sub_streams_are_uncorrelated():
    n = 200_000
    a = kernel_draws(kernels._stream_start(np.uint64(9), 0), 0.5, 0, n)[1]
    b = kernel_draws(kernels._stream_start(np.uint64(9), 1), 0.5, 0, n)[1]
    c = kernel_draws(kernels._stream_start(np.uint64(10), 0), 0.5, 0, n)[1]
    for u, v in ((a, b), (a, c), (b, c)):
        assert abs(np.corrcoef(u, v)[0, 1]) < 5 / math.sqrt(n)
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 5 / math.sqrt(n)


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_coins_frequency_and_independence(p):
    coins = kernel_draws(reference_stream_start(77, 5), p, N_STAT, 0)[0]
    n = coins.shape[0]
    assert set(np.unique(coins)) == {0.0, 1.0}
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(coins.mean() - p) < 5 * sd
    # Neighbours, and bits 64 apart (the same bit of consecutive words), are uncorrelated.
    for lag in (1, 2, 63, 64):
        r = np.corrcoef(coins[:-lag], coins[lag:])[0, 1]
        assert abs(r) < 5 / math.sqrt(n - lag), lag
    # Each of the 64 bit positions is fair on its own.
    if p == 0.5:
        by_position = coins[: (n // 64) * 64].reshape(-1, 64).mean(axis=0)
        assert np.all(np.abs(by_position - p) < 5 * math.sqrt(p * (1 - p) / (n // 64)))


def test_clamp_all_kernel_noise_is_standard_normal():
    """With A = 0 the outcome is sigmoid(eps): the parallel kernel's noise must be N(0, 1)."""
    import math

    import streamcausal as sc

    trajectory = sc.simulate(np.zeros((8, 8)), 100_001, seed=11, chunk_steps=20_000)
    outcomes = trajectory.activity[1::2].ravel()
    noise = np.log(outcomes) - np.log1p(-outcomes)
    assert noise.size == 400_000
    assert abs(noise.mean()) < 5 / math.sqrt(noise.size)
    assert abs(noise.var() - 1) < 5 * math.sqrt(2 / noise.size)
    ordered = np.sort(noise)
    cdf = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in ordered[::40]]))
    ks = np.abs(cdf - (np.arange(ordered.size)[::40] + 1) / ordered.size).max()
    assert ks < 5 / math.sqrt(noise.size) + 1e-4
    assert set(np.unique(trajectory.stimulation[::2])) == {0.0, 1.0}
    assert abs(trajectory.stimulation[::2].mean() - 0.5) < 5 * 0.5 / math.sqrt(400_000)


# --------------------------------------------------------------------------- the default stream keying, pinned
# Stores written today must resume bit for bit next year, so the way the default streams are
# keyed and laid out is pinned here: chunk k of seed s draws from the two 64-bit words of
# np.random.SeedSequence(s, spawn_key=(k,)).generate_state(2, np.uint64) = (key_samples,
# key_other); the clamp-all design's sample m of a chunk takes its coins and normals from
# block m // block_size(n), sample m % block_size(n) (streamcausal._kernels.rng's layout);
# every other draw comes from the key_other stream in step order. The reference below builds
# the trajectory from those rules with reference.py's pure-Python streams; only the sigmoid is
# the kernel's own (its arithmetic is pinned against libm in test_kernels.py, and it is what
# the trajectory holds).


_RETRIES = {"tail": 0, "wedge_accepted": 0, "wedge_rejected": 0}


def _clamp_all_draws(key_samples, m, p, n, block):
    """Coins and normals of clamp-all sample m of a chunk, from its block's counter-based stream."""
    b, r = divmod(m, block)
    block_key = reference_stream_start(key_samples, b)
    retry_key = reference_stream_start(key_samples, b | (1 << 63))
    coin_words = (n + 63) // 64 if p == 0.5 else n
    base = r * (coin_words + n)

    def word(q):  # word q of the stream whose counter starts at block_key
        return reference_mix64((block_key + (q + 1) * 0x9E3779B97F4A7C15) & ((1 << 64) - 1))

    if p == 0.5:
        coins = [float((word(base + (i >> 6)) >> (i & 63)) & 1) for i in range(n)]
    else:
        coins = [1.0 if float(word(base + i) >> 11) * 2.0**-53 < p else 0.0 for i in range(n)]
    edges, inner, density = reference_ziggurat_tables()
    normals = []
    for j in range(n):
        q = base + coin_words + j
        bits = word(q)
        layer, negative = bits & 0xFF, (bits >> 8) & 1
        u = float(bits >> 11) * 2.0**-53
        x = u * edges[layer]
        if u >= inner[layer]:  # rejected at the first try: finished on sub-stream q of the retry key
            retry = ReferenceStream(reference_stream_start(retry_key, q))
            if layer == 0:
                while True:
                    xx = -math.log(1.0 - retry.uniform()) / edges[1]
                    yy = -math.log(1.0 - retry.uniform())
                    if yy + yy > xx * xx:
                        break
                x = edges[1] + xx
                _RETRIES["tail"] += 1
            else:
                y = density[layer] + retry.uniform() * (density[layer + 1] - density[layer])
                accepted = y < math.exp(-0.5 * x * x)
                _RETRIES["wedge_accepted" if accepted else "wedge_rejected"] += 1
                if not accepted:
                    x, negative = retry.normal(), 0
        normals.append(-x if negative else x)
    return np.array(coins), np.array(normals)


def reference_default_trajectory(A, n_steps, design, seed, chunk_steps, block):
    """(activity, stimulation, clamped) of ``simulate(..., rng="default")`` from the keying rules above."""
    from streamcausal._kernels.network import _sigmoid

    n = A.shape[0]
    every = getattr(design, "every", None)
    clamp_all = every is not None and design.clamp == "all"
    activity, stimulation = np.zeros((n_steps, n)), np.zeros((n_steps, n))
    clamped = np.zeros(n_steps, dtype=bool)
    state = np.zeros(n)
    for chunk in range(-(-n_steps // chunk_steps)):
        words = np.random.SeedSequence(seed, spawn_key=(chunk,)).generate_state(2, np.uint64)
        key_samples, other = int(words[0]), ReferenceStream(int(words[1]))
        m = 0
        for t in range(chunk * chunk_steps, min((chunk + 1) * chunk_steps, n_steps)):
            active = t + 1 < n_steps
            is_clamp = active and every is not None and t % every == 0
            if is_clamp:
                if clamp_all:
                    coins, noise = _clamp_all_draws(key_samples, m, design.p, n, block)
                    state = coins.copy()
                else:
                    coins = np.array(other.coins(design.p, n))
                    state = np.where(coins == 1.0, 1.0, state)
                stimulation[t], clamped[t] = coins, True
            activity[t] = state
            if not active or (clamp_all and (t + 1) % every == 0 and t + 2 < n_steps):
                continue  # the last step, or an outcome the next clamp overwrites: nothing drawn
            if not (is_clamp and clamp_all):
                noise = np.array(other.normals(n))
            drive = np.zeros(n)
            for i in range(n):  # sources in increasing order, as the kernels add them
                if state[i] != 0.0:
                    drive = drive + A[:, i] * state[i]
            state = np.array([_sigmoid(drive[j] + noise[j]) for j in range(n)])
            m += is_clamp or every is None
    return activity, stimulation, clamped


def _trajectory_digest(activity, stimulation, clamped):
    return hashlib.sha256(activity.tobytes() + stimulation.tobytes() + clamped.tobytes()).hexdigest()


# (n, n_steps, design, seed, chunk_steps) -> sha256 of the float64 activity, stimulation and bool
# clamped bytes of reference_default_trajectory, computed once from the reference (2025, numpy
# 2.4 SeedSequence). The n = 64 case has two sample blocks in a chunk (block_size(64) = 1024),
# an odd chunk length (chunk 1 starts on an outcome, from the carried state) and an odd n_steps
# (the last step is unclamped, drawn from key_other).
PINNED_TRAJECTORIES = {
    "tutorial-n64": ((64, 4203, "tutorial", 7, 2101),
        "b2368af1aeb33a8de71b2ae000722bf8d9babda9198009118eaea3565b87a8ad"),
    "every3-p03": ((4, 300, "every3", 7, 101),
        "19ded82e8f8ee298f1478bfa0eb9c13c5e7f27685189ad68b91f5bee8b6b62b9"),
    "stimulated": ((4, 300, "stimulated", 7, 101),
        "fe4780946f4805cdfafb4495800e4e35731820389a6121fe7ec01f5b8256d1e6"),
    "observation": ((4, 300, "observation", 7, 101),
        "72369d9c826292c0c06c2a564534d9b455070d9aed4b3fd40154b9ab1ae65314"),
}
PIN_DESIGNS = {"tutorial": Perturbation(), "every3": Perturbation(every=3, p=0.3),
               "stimulated": Perturbation(clamp="stimulated"), "observation": Observation()}


@pytest.mark.parametrize("case", PINNED_TRAJECTORIES)
def test_default_stream_keying_is_pinned_bit_for_bit(case):
    import streamcausal as sc
    from streamcausal.moments import block_size

    (n, n_steps, design_name, seed, chunk_steps), pinned = PINNED_TRAJECTORIES[case]
    design = PIN_DESIGNS[design_name]
    assert block_size(64) == 1024 and block_size(4) == 4096  # part of the layout: pinned too
    A = sc.create_connectivity(n, density=0.5, random_state=3)
    before = dict(_RETRIES)
    want = reference_default_trajectory(A, n_steps, design, seed, chunk_steps, block_size(n))
    if case == "tutorial-n64":  # every path of a normal's retry sub-stream was taken
        assert all(_RETRIES[path] > before[path] for path in _RETRIES), _RETRIES
    got = sc.simulate(A, n_steps, design=design, seed=seed, chunk_steps=chunk_steps)
    assert np.array_equal(got.stimulation, want[1])
    assert np.array_equal(got.clamped, want[2])
    assert np.array_equal(got.activity, want[0])  # bit for bit
    assert _trajectory_digest(*want) == pinned
