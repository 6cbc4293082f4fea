"""CrossMoments against the brute-force references: update, merge, persistence, edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference import (
    reference_correlation,
    reference_cross_moments,
    reference_effect,
    reference_slope,
    reference_stderr,
)

from streamcausal.moments import CrossMoments

RTOL = 1e-12
KEYS = ("mean_in", "mean_out", "m2_in", "m2_out", "comoment")


def make_data(seed, T=400, n_in=4, n_out=3, binary=False, offset=0.5):
    """Inputs U (T, n_in) and outputs V (T, n_out) that depend on U through W[j, i]."""
    rng = np.random.default_rng(seed)
    if binary:
        U = (rng.random((T, n_in)) < 0.3).astype(np.float64)
    else:
        U = offset + rng.standard_normal((T, n_in))
    W = rng.normal(size=(n_out, n_in))
    V = offset + U @ W.T + 0.5 * rng.standard_normal((T, n_out))
    return U, V


def whole(U, V):
    return CrossMoments(U.shape[1], V.shape[1]).update(U, V)


def assert_moments_close(got, want, rtol=RTOL):
    """Relative comparison; each array's error is measured against its natural scale."""
    if isinstance(want, CrossMoments):
        want = want.to_arrays()
    assert got.count == int(want["count"])
    scale_in = np.sqrt(want["m2_in"] / max(int(want["count"]), 1))
    scale_out = np.sqrt(want["m2_out"] / max(int(want["count"]), 1))
    np.testing.assert_allclose(got.mean_in, want["mean_in"], rtol=rtol, atol=rtol * scale_in.max())
    np.testing.assert_allclose(got.mean_out, want["mean_out"], rtol=rtol, atol=rtol * scale_out.max())
    np.testing.assert_allclose(got.m2_in, want["m2_in"], rtol=rtol, atol=0)
    np.testing.assert_allclose(got.m2_out, want["m2_out"], rtol=rtol, atol=0)
    com_scale = np.sqrt(np.outer(want["m2_out"], want["m2_in"]))
    assert np.all(np.abs(got.comoment - want["comoment"]) <= rtol * com_scale)


def assert_bit_equal(a, b):
    assert a.count == b.count
    assert (a.n_inputs, a.n_outputs) == (b.n_inputs, b.n_outputs)
    for key in KEYS:
        assert np.array_equal(getattr(a, key), getattr(b, key)), key


# --------------------------------------------------------------------------- whole data


def test_update_whole_matches_references():
    U, V = make_data(0)
    cm = whole(U, V)
    ref = reference_cross_moments(U, V)
    assert_moments_close(cm, ref)
    assert cm.comoment.shape == (3, 4)  # [target, source]
    np.testing.assert_allclose(cm.correlation(), reference_correlation(U, V), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cm.effect(), reference_slope(U, V), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cm.stderr(), reference_stderr(U, V), rtol=1e-10, atol=0)
    np.testing.assert_allclose(cm.covariance(), np.cov(np.hstack([U, V]).T)[4:, :4], rtol=1e-12, atol=1e-12)
    assert not cm.undefined_edges().any()


def test_binary_inputs_effect_is_difference_in_means():
    U, V = make_data(1, T=600, n_in=5, n_out=4, binary=True)
    cm = whole(U.astype(bool), V)  # bool masks are accepted as 0/1
    np.testing.assert_allclose(cm.effect(), reference_effect(U, V), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cm.stderr(), reference_stderr(U, V), rtol=1e-10, atol=0)
    np.testing.assert_allclose(cm.correlation(), reference_correlation(U, V), rtol=0, atol=1e-12)


def test_orientation_is_target_source():
    rng = np.random.default_rng(2)
    U = rng.standard_normal((300, 2))
    V = np.column_stack([np.zeros(300) + rng.normal(0, 1e-3, 300), 3.0 * U[:, 0], U[:, 1]])
    eff = whole(U, V).effect()
    assert eff.shape == (3, 2)
    assert eff[1, 0] == pytest.approx(3.0, rel=1e-12)  # source 0 -> target 1
    assert eff[2, 1] == pytest.approx(1.0, rel=1e-12)  # source 1 -> target 2


# --------------------------------------------------------------------------- merging


def random_pieces(rng, T, n_pieces):
    """Split [0, T) at random points: repeated cuts give empty pieces; cuts at k, k+1 give single samples."""
    cuts = np.sort(rng.integers(0, T + 1, size=n_pieces - 1))
    cuts = np.concatenate([cuts, [5, 6, 6]])  # force one single-sample and one empty piece
    cuts = np.sort(cuts)
    edges = np.concatenate([[0], cuts, [T]])
    return list(zip(edges[:-1], edges[1:]))


def merge_tree(parts, rng):
    """Merge by repeatedly joining two random neighbours (an arbitrary merge tree)."""
    parts = list(parts)
    while len(parts) > 1:
        k = int(rng.integers(0, len(parts) - 1))
        parts[k : k + 2] = [parts[k] + parts[k + 1]]
    return parts[0]


def balanced(parts):
    while len(parts) > 1:
        parts = [parts[k] + parts[k + 1] if k + 1 < len(parts) else parts[k] for k in range(0, len(parts), 2)]
    return parts[0]


@pytest.mark.parametrize("seed", range(4))
def test_merge_any_split_any_order_equals_whole(seed):
    U, V = make_data(10 + seed, T=300)
    want = whole(U, V)
    rng = np.random.default_rng(seed)
    pieces = random_pieces(rng, 300, n_pieces=12)
    lengths = [b - a for a, b in pieces]
    assert 0 in lengths and 1 in lengths
    parts = [whole(U[a:b], V[a:b]) for a, b in pieces]

    sequential = CrossMoments(4, 3)
    for part in parts:
        sequential += part
    shuffled = [parts[k] for k in rng.permutation(len(parts))]
    results = {
        "sequential": sequential,
        "reversed": balanced(parts[::-1]),
        "shuffled_sequential": sum(shuffled[1:], shuffled[0]),
        "shuffled_balanced": balanced(shuffled),
        "random_tree": merge_tree(shuffled, rng),
    }
    for name, got in results.items():
        assert got.count == 300, name
        assert_moments_close(got, want)
        np.testing.assert_allclose(got.correlation(), want.correlation(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.effect(), want.effect(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.stderr(), want.stderr(), rtol=1e-10, atol=0)


def test_streamed_update_equals_folding_piece_accumulators_bit_exact():
    U, V = make_data(3, T=200)
    pieces = random_pieces(np.random.default_rng(3), 200, n_pieces=9)
    streamed = CrossMoments(4, 3)
    folded = CrossMoments(4, 3)
    for a, b in pieces:
        assert streamed.update(U[a:b], V[a:b]) is streamed
        folded += whole(U[a:b], V[a:b])
    assert_bit_equal(streamed, folded)


def test_merge_returns_new_object_and_leaves_operands_alone():
    U, V = make_data(4, T=100)
    a, b = whole(U[:40], V[:40]), whole(U[40:], V[40:])
    a0, b0 = a.copy(), b.copy()
    c = a + b
    assert c is not a and c is not b
    assert_bit_equal(a, a0)
    assert_bit_equal(b, b0)
    c.comoment[0, 0] = 123.0
    assert a.comoment[0, 0] != 123.0 and b.comoment[0, 0] != 123.0


def test_empty_is_exact_identity_on_both_sides():
    U, V = make_data(5, T=50)
    a = whole(U, V)
    empty = CrossMoments(4, 3)
    for got in (a + empty, empty + a, a.merge(CrossMoments(4, 3)), a.copy().update(U[:0], V[:0])):
        assert_bit_equal(got, a)
        assert got.comoment is not a.comoment
    in_place = CrossMoments(4, 3)
    in_place += a
    assert_bit_equal(in_place, a)
    assert_bit_equal(empty + CrossMoments(4, 3), CrossMoments(4, 3))


def test_huge_counts_do_not_overflow():
    count = 3 * 10**18  # count * count overflows int64
    part = CrossMoments.from_parts(count, [0.0], [1.0], [float(count)], [float(count)], [[0.5 * count]])
    other = CrossMoments.from_parts(count, [1.0], [2.0], [float(count)], [float(count)], [[0.5 * count]])
    merged = part + other
    assert merged.count == 2 * count
    np.testing.assert_allclose(merged.m2_in, [2 * count + 0.25 * 2 * count], rtol=1e-15)
    np.testing.assert_allclose(merged.comoment, [[count + 0.5 * count]], rtol=1e-15)


# --------------------------------------------------------------------------- numerical stress


def test_large_offset_small_noise_many_pieces():
    """Offset 1e6, noise 1e-3 (condition number kappa = 1e9), 1e5 samples in ~5000 pieces.

    Centred Chan merging keeps the error at about kappa * eps (sequential streaming keeps a
    rounded running mean; its ulp at 1e6 is ~1e-7 of the noise), a balanced merge tree does
    better still, while the raw-sum formula sum(uv) - n*mean(u)*mean(v) loses everything
    (its error is of order kappa**2 * eps).
    """
    rng = np.random.default_rng(7)
    T, offset, noise = 100_000, 1e6, 1e-3
    z = rng.standard_normal((T, 3))
    U = offset + noise * z[:, :2]
    V = offset + noise * np.column_stack([0.6 * z[:, 0] + 0.8 * z[:, 2], -0.3 * z[:, 1] + z[:, 2]])
    # careful reference: subtract the mean in float64 first, then correlate
    want = reference_correlation(U - U.mean(axis=0), V - V.mean(axis=0))

    edges = np.cumsum(np.concatenate([[0], rng.integers(1, 40, size=T)]))
    edges = np.append(edges[edges < T], T)
    parts = [whole(U[a:b], V[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    assert len(parts) > 4000
    streamed = CrossMoments(2, 2)
    for part in parts:  # bit-identical to streamed.update(piece) per piece
        streamed += part
    tree = balanced(parts)

    kappa_eps = offset / noise * np.finfo(np.float64).eps  # ~1.1e-7
    assert np.abs(streamed.correlation() - want).max() < kappa_eps
    assert np.abs(tree.correlation() - want).max() < 0.1 * kappa_eps
    big = np.abs(want) > 0.1
    assert (np.abs(streamed.correlation() - want)[big] / np.abs(want[big])).max() < 0.5 * kappa_eps

    # the naive one-pass raw-sum formula, for contrast
    n = float(T)
    with np.errstate(all="ignore"):
        s_uv = V.T @ U - n * np.outer(V.mean(axis=0), U.mean(axis=0))
        s_uu = (U * U).sum(axis=0) - n * U.mean(axis=0) ** 2
        s_vv = (V * V).sum(axis=0) - n * V.mean(axis=0) ** 2
        naive = s_uv / np.sqrt(np.outer(s_vv, s_uu))
    naive_error = np.abs(naive - want)
    assert not np.all(naive_error < 0.1)  # wrong in the first digit, or NaN (negative "variance")


# --------------------------------------------------------------------------- persistence


def test_to_arrays_from_arrays_round_trip_bit_exact():
    U, V = make_data(8, T=123)
    cm = whole(U[:60], V[:60]) + whole(U[60:], V[60:])
    arrays = cm.to_arrays()
    assert set(arrays) == {"count", "mean_in", "mean_out", "m2_in", "m2_out", "comoment"}
    assert arrays["count"].shape == () and arrays["count"].dtype == np.int64
    assert all(arrays[k].dtype == np.float64 for k in KEYS)
    back = CrossMoments.from_arrays(arrays)
    assert_bit_equal(back, cm)
    assert isinstance(back.count, int)
    arrays["comoment"][0, 0] = 99.0  # no aliasing either way
    assert back.comoment[0, 0] != 99.0 and cm.comoment[0, 0] != 99.0
    assert_bit_equal(CrossMoments.from_arrays(CrossMoments(2, 5).to_arrays()), CrossMoments(2, 5))
    parts = {k: v for k, v in cm.to_arrays().items()}
    assert_bit_equal(CrossMoments.from_parts(**parts), cm)


def test_from_arrays_missing_key():
    arrays = CrossMoments(2, 3).to_arrays()
    del arrays["comoment"]
    with pytest.raises(ValueError, match="comoment"):
        CrossMoments.from_arrays(arrays)
    with pytest.raises(TypeError, match="arrays"):
        CrossMoments.from_arrays([1, 2, 3])


@pytest.mark.parametrize(
    "change, error, words",
    [
        ({"count": -1}, ValueError, ["count", "-1"]),
        ({"count": 2.5}, TypeError, ["count", "2.5"]),
        ({"count": np.array([3, 4])}, ValueError, ["count", "(2,)"]),
        ({"m2_in": np.zeros(3)}, ValueError, ["m2_in", "(3,)"]),
        ({"comoment": np.zeros((2, 3))}, ValueError, ["comoment", "(2, 3)"]),
        ({"m2_out": np.array([1.0, -2.0, 0.0])}, ValueError, ["m2_out", "-2.0"]),
        ({"mean_in": np.array([0.0, np.nan])}, ValueError, ["mean_in", "nan"]),
        ({"count": 0}, ValueError, ["count is 0"]),
        ({"mean_out": np.zeros((3, 1))}, ValueError, ["mean_out", "(3, 1)"]),
    ],
)
def test_from_arrays_rejects_bad_parts(change, error, words):
    U, V = make_data(9, T=20, n_in=2, n_out=3)
    arrays = whole(U, V).to_arrays()
    arrays.update(change)
    with pytest.raises(error) as info:
        CrossMoments.from_arrays(arrays)
    for word in words:
        assert word in str(info.value)


# --------------------------------------------------------------------------- degenerate input


def test_constant_neurons_give_nan_exactly_on_their_edges_without_warnings():
    U, V = make_data(11, T=240, n_in=4, n_out=3)
    U[:, 1] = 0.1  # np.mean of repeated 0.1 is not exactly 0.1
    V[:, 2] = 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cm = CrossMoments(4, 3)
        for a in range(0, 240, 7):  # many pieces: the merges must keep them exact too
            cm.update(U[a : a + 7], V[a : a + 7])
        corr, eff, se = cm.correlation(), cm.effect(), cm.stderr()
        ref_corr = reference_correlation(U, V)
    assert cm.m2_in[1] == 0.0 and cm.m2_out[2] == 0.0
    assert cm.mean_in[1] == 0.1 and cm.mean_out[2] == 0.7
    expected = np.zeros((3, 4), dtype=bool)
    expected[:, 1] = True
    expected[2, :] = True
    assert np.array_equal(np.isnan(corr), expected)
    assert np.array_equal(np.isnan(ref_corr), expected)
    assert np.array_equal(cm.undefined_edges(), expected)
    np.testing.assert_allclose(corr[~expected], ref_corr[~expected], rtol=0, atol=1e-12)
    assert np.array_equal(cm.constant_inputs(), [False, True, False, False])
    assert np.array_equal(cm.constant_outputs(), [False, False, True])
    # effect and its error are undefined only for the constant input; a constant output has slope 0
    assert np.array_equal(np.isnan(eff), np.broadcast_to(expected[0], (3, 4)))
    assert np.array_equal(np.isnan(se), np.isnan(eff))
    assert np.all(eff[2, [0, 2, 3]] == 0.0)
    np.testing.assert_allclose(eff, reference_slope(U, V), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", [0, 1, 2])
def test_few_samples_give_nan_without_warnings(T):
    U, V = make_data(12, T=T, n_in=2, n_out=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cm = whole(U, V)
        results = {
            "correlation": cm.correlation(),
            "effect": cm.effect(),
            "stderr": cm.stderr(),
            "covariance": cm.covariance(),
        }
    for name, value in results.items():
        assert value.shape == (3, 2), name
    assert np.isnan(results["stderr"]).all()
    if T < 2:
        assert all(np.isnan(value).all() for value in results.values())
        assert cm.undefined_edges().all()
        assert cm.constant_inputs().all() and cm.constant_outputs().all()
    else:  # two distinct points: a perfect line
        assert not np.isnan(results["correlation"]).any()
        np.testing.assert_allclose(np.abs(results["correlation"]), 1.0, rtol=1e-12)
        np.testing.assert_allclose(results["effect"], reference_slope(U, V), rtol=1e-12)


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "args, error, words",
    [
        ((0, 3), ValueError, ["n_inputs", "0"]),
        ((2, -1), ValueError, ["n_outputs", "-1"]),
        ((2.5, 3), TypeError, ["n_inputs", "2.5"]),
        ((2, "3"), TypeError, ["n_outputs", "'3'"]),
        ((True, 3), TypeError, ["n_inputs", "True"]),
    ],
)
def test_constructor_rejects_bad_sizes(args, error, words):
    with pytest.raises(error) as info:
        CrossMoments(*args)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    "inputs, outputs, error, words",
    [
        (np.zeros((5, 3)), np.zeros((5, 3)), ValueError, ["inputs", "(5, 3)"]),
        (np.zeros((5, 2)), np.zeros((5, 4)), ValueError, ["outputs", "(5, 4)"]),
        (np.zeros(2), np.zeros(3), ValueError, ["inputs", "(2,)"]),
        (np.zeros((5, 2)), np.zeros((4, 3)), ValueError, ["inputs", "outputs", "(5, 2)", "(4, 3)"]),
        (np.array([[0.0, np.nan]]), np.zeros((1, 3)), ValueError, ["inputs", "nan", "[0, 1]"]),
        (np.zeros((1, 2)), np.array([[0.0, 1.0, np.inf]]), ValueError, ["outputs", "inf"]),
        (np.zeros((1, 2), dtype=complex), np.zeros((1, 3)), TypeError, ["inputs", "complex"]),
        (np.array([["a", "b"]]), np.zeros((1, 3)), TypeError, ["inputs", "<U1"]),
        (None, np.zeros((1, 3)), TypeError, ["inputs", "None"]),
    ],
)
def test_update_rejects_bad_arrays(inputs, outputs, error, words):
    cm = CrossMoments(2, 3)
    with pytest.raises(error) as info:
        cm.update(inputs, outputs)
    for word in words:
        assert word in str(info.value)
    assert cm.count == 0  # nothing folded in


def test_merge_rejects_mismatched_or_foreign():
    a = CrossMoments(2, 3)
    with pytest.raises(ValueError) as info:
        a.merge(CrossMoments(3, 2))
    assert "other" in str(info.value) and "(3, 2)" in str(info.value) and "(2, 3)" in str(info.value)
    with pytest.raises(TypeError, match=r"other.*CrossMoments.*\{'count': 1\}"):
        a.merge({"count": 1})
    with pytest.raises(TypeError, match="other"):
        a += 1.0
    with pytest.raises(ValueError, match="other"):
        a + CrossMoments(2, 4)


def test_repr():
    assert repr(CrossMoments(2, 3)) == "CrossMoments(n_inputs=2, n_outputs=3, count=0)"


# --------------------------------------------------------------------------- no n x n temporaries, same bits


def old_merged_comoment(a, b):
    """The merge's co-moment as one expression, as it was written before it was done in blocks."""
    n = a.count + b.count
    factor = float(a.count) * float(b.count) / float(n)
    return a.comoment + b.comoment + np.outer(b.mean_out - a.mean_out, b.mean_in - a.mean_in) * factor


@pytest.mark.parametrize("n_in, n_out", [(3, 4), (700, 900), (1, 2000)])
def test_merge_and_in_place_merge_are_the_one_expression_bit_for_bit(n_in, n_out):
    rng = np.random.default_rng(n_in)
    a = whole(rng.random((50, n_in)), rng.random((50, n_out)) + 3.0)
    b = whole(rng.random((70, n_in)) - 1.0, rng.random((70, n_out)))
    before = {key: value.copy() for key, value in b.to_arrays().items()}
    want = old_merged_comoment(a, b)
    merged = a.merge(b)
    assert np.array_equal(merged.comoment, want)
    comoment = a.comoment
    a += b
    assert a.comoment is comoment  # updated where it is
    for key, value in merged.to_arrays().items():
        assert np.array_equal(a.to_arrays()[key], value), key
    for key, value in b.to_arrays().items():
        assert np.array_equal(value, before[key]), key  # the other side is untouched


def test_in_place_merge_with_an_empty_side_is_an_exact_copy():
    U, V = make_data(3)
    full = whole(U, V)
    empty = CrossMoments(4, 3)
    empty += full
    assert np.array_equal(empty.comoment, full.comoment) and empty.comoment is not full.comoment
    saved = full.to_arrays()
    full += CrossMoments(4, 3)
    for key, value in saved.items():
        assert np.array_equal(full.to_arrays()[key], value), key


def test_estimators_are_the_one_expressions_bit_for_bit():
    U, V = make_data(5, T=300, n_in=6, n_out=5, binary=True)
    U[:, 2] = 1.0  # a constant input: NaN column
    V[:, 1] = 0.25  # a constant output: NaN row of the correlation
    m = whole(U, V)
    undefined = m.constant_outputs()[:, None] | m.constant_inputs()[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.clip(m.comoment / np.sqrt(m.m2_out)[:, None] / np.sqrt(m.m2_in)[None, :], -1.0, 1.0)
        slope = m.comoment / m.m2_in[None, :]
        rss = np.maximum(m.m2_out[:, None] - m.comoment * m.comoment / m.m2_in[None, :], 0.0)
        se = np.sqrt(rss / float(m.count - 2) / m.m2_in[None, :])
    r[undefined] = np.nan
    slope[:, m.constant_inputs()] = np.nan
    se[:, m.constant_inputs()] = np.nan
    for got, want in ((m.correlation(), r), (m.effect(), slope), (m.stderr(), se)):
        assert np.array_equal(got, want, equal_nan=True)


def test_product_by_row_blocks_is_the_whole_product_bit_for_bit():
    from streamcausal.moments.reduce import product_tn

    rng = np.random.default_rng(0)
    for k, m, n, block_values in [(2048, 320, 320, 5000), (1500, 257, 144, 999), (1300, 700, 336, 10),
                                  (1100, 1000, 160, 64 * 160 * 2), (1030, 100, 1600, 2**15)]:
        D = rng.random((k, m))
        E = (rng.random((k, n)) < 0.5).astype(np.float64)
        whole_product, blocks = np.empty((m, n)), np.empty((m, n))
        product_tn(D, E, whole_product, block_values=10**12)
        product_tn(D, E, blocks, block_values=block_values)
        assert np.array_equal(blocks, whole_product), (k, m, n)
        np.testing.assert_allclose(whole_product, D.T @ E, rtol=1e-12)
