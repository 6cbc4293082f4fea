"""streamcausal.run / simulate and the designs, against the tutorial and the references."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from reference import (
    bad_connectivity_cases,
    reference_correlation,
    reference_cross_moments,
    reference_design_samples,
    reference_effect,
    reference_legacy_trajectory,
    reference_slope,
    reference_stderr,
)

import streamcausal
from streamcausal import Observation, Perturbation, create_connectivity, run, simulate, tutorial
from streamcausal.designs import design_from_dict

DESIGNS = {
    "tutorial": Perturbation(),
    "every3-p03": Perturbation(every=3, p=0.3),
    "stimulated": Perturbation(clamp="stimulated"),
    "observation": Observation(),
}
DESIGN_IDS = list(DESIGNS)

A5 = create_connectivity(5, density=0.4, random_state=1)
A6 = create_connectivity(6)


def samples_of(trajectory, design):
    """The (inputs, outputs) pairs of a simulated trajectory, after checking its clamp flags."""
    T = trajectory.activity.shape[0]
    every = getattr(design, "every", None)
    t = np.arange(T)
    want_clamped = np.zeros(T, bool) if every is None else (t % every == 0) & (t + 1 < T)
    assert np.array_equal(trajectory.clamped, want_clamped)
    assert np.all(trajectory.stimulation[~want_clamped] == 0)
    return reference_design_samples(trajectory.activity, trajectory.stimulation, design)


def batch_slope(U, V):
    """cov(u_i, v_j) / var(u_i) as [j, i] from np.cov (a vectorised stand-in for reference_slope)."""
    n_in = U.shape[1]
    c = np.cov(np.hstack([U, V]).T)
    return c[n_in:, :n_in] / np.diag(c)[:n_in][None, :]


def assert_estimates_match_batch(result, U, V, binary, stderr=True):
    """Streaming estimates vs batch references on the same samples."""
    assert result.n_samples == U.shape[0]
    np.testing.assert_allclose(result.correlation, reference_correlation(U, V), rtol=0, atol=1e-10)
    if binary:
        want_effect = reference_effect(U, V)
    else:
        want_effect = reference_slope(U, V) if stderr else batch_slope(U, V)
    np.testing.assert_allclose(result.effect, want_effect, rtol=0, atol=1e-10)
    if stderr:
        np.testing.assert_allclose(result.stderr, reference_stderr(U, V), rtol=1e-10, atol=1e-14)
    ref = reference_cross_moments(U, V)
    m = result.moments
    assert m.count == ref["count"]
    np.testing.assert_allclose(m.mean_in, ref["mean_in"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.mean_out, ref["mean_out"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.m2_in, ref["m2_in"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.m2_out, ref["m2_out"], rtol=1e-10, atol=1e-12)
    scale = np.sqrt(np.outer(ref["m2_out"], ref["m2_in"]))
    assert np.all(np.abs(m.comoment - ref["comoment"]) <= 1e-10 * scale + 1e-14)


def assert_moments_bit_equal(a, b):
    a, b = a.to_arrays(), b.to_arrays()
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def assert_moments_close(a, b, rtol=1e-12):
    a, b = a.to_arrays(), b.to_arrays()
    assert int(a["count"]) == int(b["count"])
    for key in ("mean_in", "mean_out", "m2_in", "m2_out"):
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=rtol)
    scale = np.sqrt(np.outer(b["m2_out"], b["m2_in"]))
    assert np.all(np.abs(a["comoment"] - b["comoment"]) <= rtol * scale + rtol)


# =========================================================================== designs


def test_default_design_is_the_tutorial_design():
    d = Perturbation()
    assert (d.every, d.p, d.clamp) == (2, 0.5, "all")
    assert d == Perturbation(2, 0.5, "all")
    assert hash(d) == hash(Perturbation(2, 0.5, "all"))
    assert d.samples_are_independent
    assert not Perturbation(clamp="stimulated").samples_are_independent
    assert not Observation().samples_are_independent
    assert Observation() == Observation()


def test_design_arguments_are_normalised():
    d = Perturbation(every=np.int64(3), p=np.float64(0.25))
    assert type(d.every) is int and type(d.p) is float
    assert Perturbation(every=4.0).every == 4


@pytest.mark.parametrize("every", [2, 3, 7, 1000])
@pytest.mark.parametrize("p", [1e-6, 0.3, 0.5, 0.999])
@pytest.mark.parametrize("clamp", ["all", "stimulated"])
def test_valid_perturbations(every, p, clamp):
    d = Perturbation(every=every, p=p, clamp=clamp)
    assert (d.every, d.p, d.clamp) == (every, p, clamp)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"every": 1}, ValueError, r"every must be >= 2, got 1"),
        ({"every": 0}, ValueError, r"every must be >= 2, got 0"),
        ({"every": -2}, ValueError, r"every must be >= 2, got -2"),
        ({"every": 2.5}, TypeError, r"every must be an integer, got 2\.5"),
        ({"every": True}, TypeError, r"every must be an integer, got True"),
        ({"every": "2"}, TypeError, r"every must be an integer, got '2'"),
        ({"every": None}, TypeError, r"every must be an integer, got None"),
        ({"p": 0}, ValueError, r"p must be in \(0, 1\), got 0\.0"),
        ({"p": 0.0}, ValueError, r"p must be in \(0, 1\), got 0\.0"),
        ({"p": 1}, ValueError, r"p must be in \(0, 1\), got 1\.0"),
        ({"p": 1.0}, ValueError, r"p must be in \(0, 1\), got 1\.0"),
        ({"p": -0.1}, ValueError, r"p must be in \(0, 1\), got -0\.1"),
        ({"p": 1.5}, ValueError, r"p must be in \(0, 1\), got 1\.5"),
        ({"p": float("nan")}, ValueError, r"p must be finite, got nan"),
        ({"p": "0.5"}, TypeError, r"p must be a real number, got '0\.5'"),
        ({"p": True}, TypeError, r"p must be a real number, got True"),
        ({"p": None}, TypeError, r"p must be a real number, got None"),
        ({"clamp": "none"}, ValueError, r"clamp must be one of \('all', 'stimulated'\), got 'none'"),
        ({"clamp": "ALL"}, ValueError, r"clamp must be one of .*got 'ALL'"),
        ({"clamp": 1}, ValueError, r"clamp must be one of .*got 1"),
        ({"clamp": None}, ValueError, r"clamp must be one of .*got None"),
    ],
)
def test_bad_perturbation_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Perturbation(**kwargs)


def test_designs_are_frozen():
    d = Perturbation()
    for name, value in (("every", 3), ("p", 0.3), ("clamp", "stimulated")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(d, name, value)
    assert d == Perturbation()
    with pytest.raises(dataclasses.FrozenInstanceError):
        Observation().every = 2


@pytest.mark.parametrize(
    "design",
    [Perturbation(), Perturbation(every=5, p=0.125, clamp="stimulated"), Perturbation(3, 0.3), Observation()],
    ids=repr,
)
def test_design_dict_round_trip(design):
    data = design.to_dict()
    assert data["kind"] in ("perturbation", "observation")
    assert all(isinstance(v, (str, int, float)) for v in data.values())  # JSON-friendly
    again = design_from_dict(data)
    assert again == design and type(again) is type(design)
    assert design_from_dict(dict(data)) == design


def test_design_dicts():
    assert Perturbation(every=3, p=0.3).to_dict() == {"kind": "perturbation", "every": 3, "p": 0.3, "clamp": "all"}
    assert Observation().to_dict() == {"kind": "observation"}


@pytest.mark.parametrize(
    "data, error, match",
    [
        ({"kind": "intervention"}, ValueError, r"design kind must be .*got 'intervention'"),
        ({"every": 2}, ValueError, r"design kind must be .*got None"),
        ({"kind": "perturbation", "every": 1}, ValueError, r"every must be >= 2, got 1"),
        ({"kind": "perturbation", "p": 2.0}, ValueError, r"p must be in \(0, 1\), got 2\.0"),
        ({"kind": "perturbation", "colour": 2}, TypeError, r"colour"),
    ],
)
def test_design_from_bad_dict(data, error, match):
    with pytest.raises(error, match=match):
        design_from_dict(data)


# =========================================================================== n_samples


def brute_force_samples(design, n_steps):
    every = getattr(design, "every", 1)
    return sum(1 for t in range(n_steps - 1) if t % every == 0)


@pytest.mark.parametrize("design", list(DESIGNS.values()) + [Perturbation(every=7)], ids=DESIGN_IDS + ["every7"])
def test_n_samples_formula(design):
    for n_steps in range(0, 60):
        assert design.n_samples(n_steps) == brute_force_samples(design, n_steps), n_steps


@pytest.mark.parametrize("design", list(DESIGNS.values()) + [Perturbation(every=7)], ids=DESIGN_IDS + ["every7"])
@pytest.mark.parametrize("n_steps", [2, 3, 4, 5, 8, 9, 100, 101])
@pytest.mark.parametrize("rng", ["default", "legacy"])
def test_run_n_samples(design, n_steps, rng):
    for chunk_steps in (1, 3, None):
        result = run(A5, n_steps, design=design, chunk_steps=chunk_steps, rng=rng, seed=4)
        assert result.n_samples == design.n_samples(n_steps)
        assert result.n_steps == n_steps


@pytest.mark.parametrize("design", list(DESIGNS.values()), ids=DESIGN_IDS)
def test_single_sample_is_undefined_not_a_crash(design):
    result = run(A5, 2, design=design)
    assert result.n_samples == 1
    for estimate in (result.correlation, result.effect, result.stderr):
        assert estimate.shape == (5, 5) and np.all(np.isnan(estimate))
    assert result.undefined_edges.all()
    assert math.isnan(result.score(A5))


# =========================================================================== legacy mode vs the tutorial

LEGACY_CASES = [(6, 1000, 0), (6, 999, 42), (1, 101, 3), (2, 2, 5), (2, 3, 5), (3, 4, 9), (30, 301, 7)]


def smallest_chunk(T):
    # One step per chunk, except on long runs: every chunk is a kernel call (and a parallel
    # region), which on a loaded 2-core machine costs milliseconds.
    return 1 if T <= 301 else 3


def legacy_matrix(n, seed):
    if n == 1:
        return np.array([[0.7]])
    return create_connectivity(n, density=0.3, random_state=seed + 100)


@pytest.mark.parametrize("n, T, seed", LEGACY_CASES)
def test_legacy_trajectory_is_the_tutorials(n, T, seed):
    A = legacy_matrix(n, seed)
    np.random.seed(seed)
    X = tutorial.simulate_neurons_perturb(A, T)
    for chunk_steps in (smallest_chunk(T), 7, None):
        trajectory = simulate(A, T, seed=seed, rng="legacy", chunk_steps=chunk_steps)
        assert trajectory.activity.shape == (T, n)
        np.testing.assert_allclose(trajectory.activity, X.T, rtol=0, atol=1e-12)
        clamped = trajectory.clamped
        assert np.array_equal(trajectory.stimulation[clamped], X.T[clamped])


@pytest.mark.parametrize("n, T, seed", LEGACY_CASES)
def test_legacy_observation_trajectory_is_simulate_neurons(n, T, seed):
    A = legacy_matrix(n, seed)
    X = tutorial.simulate_neurons(A, T, random_state=seed)
    for chunk_steps in (smallest_chunk(T), 7, None):
        trajectory = simulate(A, T, design=Observation(), seed=seed, rng="legacy", chunk_steps=chunk_steps)
        np.testing.assert_allclose(trajectory.activity, X.T, rtol=0, atol=1e-12)
        assert not trajectory.clamped.any()


@pytest.mark.parametrize("n, T, seed", [case for case in LEGACY_CASES if case[1] >= 100])
def test_legacy_estimate_is_the_tutorials(n, T, seed):
    A = legacy_matrix(n, seed)
    np.random.seed(seed)
    X = tutorial.simulate_neurons_perturb(A, T)
    R = tutorial.get_perturbed_connectivity_all_neurons(X)  # [source, target]
    for chunk_steps in (smallest_chunk(T), 7, 64, None):
        result = run(A, T, seed=seed, rng="legacy", chunk_steps=chunk_steps)
        np.testing.assert_allclose(result.correlation, R.T, rtol=0, atol=1e-10)
        for i in range(n):
            single = tutorial.get_perturbed_connectivity_from_single_neuron(X, i)
            np.testing.assert_allclose(result.effect[:, i], single, rtol=0, atol=1e-10)
        if n > 1:  # a 1 x 1 matrix has no score
            assert abs(result.score(A) - tutorial.score(A, R)) <= 1e-10


def test_legacy_reproduces_the_course_run_from_its_seed():
    # The course seeds 42 in create_connectivity and continues the stream; legacy mode seeds
    # its own stream, so it equals np.random.seed(42) then simulate_neurons_perturb.
    A = tutorial.create_connectivity(6)
    np.random.seed(42)
    X = tutorial.simulate_neurons_perturb(A, 5000)
    result = run(A, 5000, seed=42, rng="legacy")
    np.testing.assert_allclose(result.correlation, tutorial.get_perturbed_connectivity_all_neurons(X).T, atol=1e-10)


@pytest.mark.parametrize("n, T, seed", [(6, 500, 0), (30, 301, 7)])
def test_legacy_observation_estimate_is_the_lagged_correlation(n, T, seed):
    A = legacy_matrix(n, seed)
    X = tutorial.simulate_neurons(A, T, random_state=seed)
    lagged = np.corrcoef(X[:, :-1], X[:, 1:])[n:, :n]  # [j, i] = corr(x_j at t+1, x_i at t)
    result = run(A, T, design=Observation(), seed=seed, rng="legacy", chunk_steps=13)
    np.testing.assert_allclose(result.correlation, lagged, rtol=0, atol=1e-10)


@pytest.mark.parametrize("design", list(DESIGNS.values()) + [Perturbation(every=4, clamp="stimulated")],
                         ids=DESIGN_IDS + ["every4-stimulated"])
@pytest.mark.parametrize("n, T, seed", [(5, 203, 1), (1, 50, 2), (12, 120, 3)])
def test_legacy_trajectory_of_every_design_is_the_reference(design, n, T, seed):
    A = legacy_matrix(n, seed)
    activity, stimulation, clamped = reference_legacy_trajectory(A, T, design, seed)
    for chunk_steps in (1, 7, 10, None):
        trajectory = simulate(A, T, design=design, seed=seed, rng="legacy", chunk_steps=chunk_steps)
        np.testing.assert_allclose(trajectory.activity, activity, rtol=0, atol=1e-12)
        assert np.array_equal(trajectory.stimulation, stimulation)
        assert np.array_equal(trajectory.clamped, clamped)


@pytest.mark.parametrize("design", list(DESIGNS.values()), ids=DESIGN_IDS)
def test_legacy_results_do_not_depend_on_chunk_steps(design):
    T = 301  # = 7 * 43: 7 divides it, 13, 64 and 1000 do not
    results = [run(A5, T, design=design, seed=8, rng="legacy", chunk_steps=c) for c in (None, 1, 7, 13, 64, 1000)]
    first = results[0]
    for other in results[1:]:
        assert_moments_close(other.moments, first.moments, rtol=1e-12)
        for name in ("correlation", "effect", "stderr"):
            np.testing.assert_allclose(getattr(other, name), getattr(first, name), rtol=1e-12, atol=1e-12)
    trajectories = [simulate(A5, T, design=design, seed=8, rng="legacy", chunk_steps=c) for c in (None, 1, 13)]
    for other in trajectories[1:]:
        np.testing.assert_allclose(other.activity, trajectories[0].activity, rtol=0, atol=1e-12)


# =========================================================================== streaming vs batch

T_STREAM = 301  # odd; 301 = 7 * 43, so 64 and 50 do not divide it
CHUNKS = [1, 3, 7, 50, 64, 1000]


@pytest.mark.parametrize("rng", ["default", "legacy"])
@pytest.mark.parametrize("design_id", DESIGN_IDS)
@pytest.mark.parametrize("chunk_steps", CHUNKS)
def test_streaming_estimate_equals_batch(rng, design_id, chunk_steps):
    design = DESIGNS[design_id]
    kwargs = dict(design=design, seed=11, chunk_steps=chunk_steps, rng=rng)
    trajectory = simulate(A5, T_STREAM, **kwargs)
    U, V = samples_of(trajectory, design)
    assert U.shape[0] == design.n_samples(T_STREAM)
    result = run(A5, T_STREAM, **kwargs)
    assert_estimates_match_batch(result, U, V, binary=not isinstance(design, Observation))


@pytest.mark.parametrize("design_id", ["tutorial", "observation"])
@pytest.mark.parametrize("rng", ["default", "legacy"])
def test_streaming_estimate_equals_batch_large_n(design_id, rng):
    # n = 70: the chunk's moments come from the BLAS product rather than the Numba blocks.
    design = DESIGNS[design_id]
    A = create_connectivity(70, random_state=3)
    for chunk_steps in (37, None):
        kwargs = dict(design=design, seed=2, chunk_steps=chunk_steps, rng=rng)
        U, V = samples_of(simulate(A, 400, **kwargs), design)
        result = run(A, 400, **kwargs)
        assert_estimates_match_batch(result, U, V, binary=design_id == "tutorial", stderr=False)


@pytest.mark.parametrize("design_id", DESIGN_IDS)
def test_streaming_estimate_equals_batch_many_blocks(design_id):
    # Enough samples for several parallel blocks per chunk, and several chunks.
    design = DESIGNS[design_id]
    kwargs = dict(design=design, seed=5, chunk_steps=12_001)
    U, V = samples_of(simulate(A6, 30_000, **kwargs), design)
    result = run(A6, 30_000, **kwargs)
    binary = not isinstance(design, Observation)
    np.testing.assert_allclose(result.correlation, reference_correlation(U, V), rtol=0, atol=1e-10)
    want = reference_effect(U, V) if binary else reference_slope(U, V)
    np.testing.assert_allclose(result.effect, want, rtol=0, atol=1e-10)


OTHER_MATRICES = {
    "n1": np.array([[0.5]]),
    "dense-negative": 0.2 * np.eye(8) - 3 * create_connectivity(8, density=1.0),
    "zeros": np.zeros((3, 3)),
    "bool": np.eye(4, dtype=bool),
}


@pytest.mark.parametrize("matrix_id", OTHER_MATRICES)
@pytest.mark.parametrize("rng", ["default", "legacy"])
def test_streaming_estimate_equals_batch_other_matrices(matrix_id, rng):
    A = OTHER_MATRICES[matrix_id]
    for design in DESIGNS.values():
        for chunk_steps in (5, None):
            kwargs = dict(design=design, seed=3, chunk_steps=chunk_steps, rng=rng)
            U, V = samples_of(simulate(A, 201, **kwargs), design)
            result = run(A, 201, **kwargs)
            assert_estimates_match_batch(result, U, V, binary=not isinstance(design, Observation), stderr=False)


@pytest.mark.parametrize("rng", ["default", "legacy"])
def test_never_stimulated_inputs_give_nan_not_a_crash(rng):
    # With p tiny no neuron is ever stimulated: every input is constant 0.
    result = run(A5, 60, design=Perturbation(p=1e-9), seed=1, rng=rng)
    assert result.n_samples == 30
    assert np.all(result.moments.m2_in == 0)
    for estimate in (result.correlation, result.effect, result.stderr):
        assert np.all(np.isnan(estimate))
    assert result.undefined_edges.all()


def test_run_with_default_chunks_equals_simulate_with_default_chunks():
    for design in DESIGNS.values():
        U, V = samples_of(simulate(A6, 5000, design=design, seed=3), design)
        result = run(A6, 5000, design=design, seed=3)
        np.testing.assert_allclose(result.correlation, reference_correlation(U, V), rtol=0, atol=1e-10)


# =========================================================================== default-mode trajectories


def test_default_trajectory_follows_the_model():
    # Invert the sigmoid on every computed step: the implied noise must be N(0, 1).
    for design in DESIGNS.values():
        trajectory = simulate(A5, 20_000, design=design, seed=21, chunk_steps=999)
        x = trajectory.activity
        clamped = trajectory.clamped
        # x[0] = 0 before any clamp: row 0 is step 0's clamp (0 where not stimulated), or 0 unclamped
        assert clamped[0] == hasattr(design, "p")
        assert np.array_equal(x[0], trajectory.stimulation[0])
        assert set(np.unique(x[0])) <= {0.0, 1.0}
        computed = ~clamped[1:]  # x_{t+1} computed from x_t unless step t+1 was clamped
        if getattr(design, "clamp", "all") == "stimulated":
            computed = np.ones_like(computed)
        nxt = x[1:][computed]
        with np.errstate(divide="ignore"):  # forced 1s of "stimulated" are dropped below
            implied = np.log(nxt / (1 - nxt)) - x[:-1][computed] @ A5.T
        if getattr(design, "clamp", "all") == "stimulated":
            # stimulated neurons on a clamped step t+1 were forced to 1: leave them out
            forced = (trajectory.stimulation[1:][computed] == 1)
            implied = implied[~forced]
        implied = implied.ravel()
        n = implied.size
        assert n > 40_000
        assert abs(implied.mean()) < 5 / math.sqrt(n)
        assert abs(implied.var() - 1) < 5 * math.sqrt(2 / n) + 1e-6
        if hasattr(design, "p"):
            stim = trajectory.stimulation[clamped]
            assert set(np.unique(stim)) == {0.0, 1.0}
            assert abs(stim.mean() - design.p) < 5 * math.sqrt(design.p * (1 - design.p) / stim.size)
            if design.clamp == "all":
                assert np.array_equal(x[clamped], stim)
            else:
                assert np.all(x[clamped][stim == 1] == 1.0)


def test_orientation_is_target_source():
    A = np.zeros((3, 3))
    A[2, 0] = 0.9  # neuron 0 drives neuron 2 only
    result = run(A, 40_000, seed=1)
    assert result.effect.shape == (3, 3)
    assert result.effect[2, 0] > 0.1
    off = np.ones((3, 3), bool)
    off[2, 0] = False
    assert np.all(np.abs(result.effect[off]) < 6 * result.stderr[off])
    assert result.score(A) > 0.99


# =========================================================================== determinism


# A child process with NUMBA_NUM_THREADS fixed before Numba starts: it runs every case (twice
# without a store: the same bits on a second call) and prints the sha256 of each case's moments and, with a
# store, of its saved trajectory. The n = 150 cases take the BLAS branch of the clamp-all
# kernels (n * n > 16384) and the two-way split of the BLAS product (>= 1024 samples).
THREADS_CHILD = """
import hashlib, json, sys
import numba, numpy as np, zarr
import streamcausal as sc
from streamcausal import Observation, Perturbation

CASES = {
    "tutorial": (6, 50_000, Perturbation(), None, False),
    "every3": (6, 30_000, Perturbation(every=3, p=0.3), None, False),
    "stimulated": (6, 30_000, Perturbation(clamp="stimulated"), None, False),
    "observation": (6, 30_000, Observation(), None, False),
    "n80": (80, 6_000, Perturbation(), None, False),
    "n150": (150, 10_001, Perturbation(), 5_000, False),
    "n150-trajectory": (150, 6_001, Perturbation(), 4_097, True),
    "n150-observation-trajectory": (150, 2_051, Observation(), 1_025, True),
}
digests = {}
for name, (n, n_steps, design, chunk_steps, save) in CASES.items():
    A = sc.create_connectivity(n, random_state=1)
    for call in range(1 if save else 2):
        store = sc.Store(f"{sys.argv[1]}/{name}-{call}.zarr", save_trajectory=True) if save else None
        result = sc.run(A, n_steps, design=design, seed=3, chunk_steps=chunk_steps, store=store)
        digest = hashlib.sha256()
        for key, value in sorted(result.moments.to_arrays().items()):
            digest.update(key.encode() + np.ascontiguousarray(value).tobytes())
        if save:
            group = zarr.open_group(f"{sys.argv[1]}/{name}-{call}.zarr", mode="r")["seed_3"]
            for key in ("activity", "stimulation", "clamped"):
                digest.update(key.encode() + group[key][...].tobytes())
        digests.setdefault(name, []).append(digest.hexdigest())
print(json.dumps({"threads": numba.get_num_threads(), "digests": digests}))
"""


@pytest.mark.subprocess
def test_default_mode_is_bit_identical_across_threads_and_calls(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "threads.py"
    script.write_text(THREADS_CHILD)
    repo = str(Path(__file__).resolve().parents[1])
    children = {}
    for threads in (1, 2):  # two threads even on a one-core machine: the test cannot skip
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
        where = tmp_path / f"threads{threads}"
        where.mkdir()
        children[threads] = subprocess.Popen([sys.executable, str(script), str(where)], stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True, env=env)
    outcomes = {}
    for threads, child in children.items():
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        outcomes[threads] = json.loads(out.strip().splitlines()[-1])
        assert outcomes[threads]["threads"] == threads
    assert len(outcomes[1]["digests"]) == 8
    for name, calls in outcomes[1]["digests"].items():
        assert calls == calls[:1] * len(calls), f"{name}: a second call in the same process differs"
        assert outcomes[2]["digests"][name] == calls, f"{name}: 2 threads differ from 1"


def test_seeds_give_different_results():
    a = run(A6, 10_000, seed=0).moments.to_arrays()
    b = run(A6, 10_000, seed=1).moments.to_arrays()
    assert not np.array_equal(a["comoment"], b["comoment"])
    assert not np.array_equal(a["mean_out"], b["mean_out"])
    a = run(A6, 10_000, seed=0, rng="legacy").moments.to_arrays()
    b = run(A6, 10_000, seed=1, rng="legacy").moments.to_arrays()
    assert not np.array_equal(a["comoment"], b["comoment"])


def test_default_and_legacy_streams_differ():
    a = run(A6, 10_000, seed=0).moments.to_arrays()
    b = run(A6, 10_000, seed=0, rng="legacy").moments.to_arrays()
    assert not np.array_equal(a["comoment"], b["comoment"])


def assert_statistically_equivalent(a, b, sigmas=5.0):
    # Effects of two runs agree within their combined standard error, edge by edge.
    combined = np.sqrt(a.stderr**2 + b.stderr**2)
    z = np.abs(a.effect - b.effect) / combined
    assert np.all(z < sigmas), z.max()


@pytest.mark.parametrize("design_id", DESIGN_IDS)
def test_chunk_steps_changes_the_draws_but_not_the_statistics(design_id):
    design = DESIGNS[design_id]
    a = run(A6, 100_000, design=design, seed=7, chunk_steps=1000)
    b = run(A6, 100_000, design=design, seed=7, chunk_steps=4099)
    assert a.n_samples == b.n_samples
    assert not np.array_equal(a.moments.comoment, b.moments.comoment)
    assert_statistically_equivalent(a, b)


@pytest.mark.parametrize("design_id", DESIGN_IDS)
def test_default_and_legacy_modes_are_statistically_equivalent(design_id):
    design = DESIGNS[design_id]
    a = run(A6, 100_000, design=design, seed=9)
    b = run(A6, 100_000, design=design, seed=9, rng="legacy")
    assert_statistically_equivalent(a, b)
    np.testing.assert_allclose(a.moments.mean_in, b.moments.mean_in, atol=0.02)


# =========================================================================== statistical sanity


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tutorial_design_reaches_the_course_score_at_n6(seed):
    result = run(A6, 100_000, seed=seed)
    assert result.score(A6) >= 0.99
    assert result.score(A6, estimate="effect") >= 0.99


def test_score_rises_with_steps_at_n100():
    A = create_connectivity(100, random_state=42)
    scores = [run(A, n_steps, seed=1).score(A) for n_steps in (10_000, 100_000, 500_000)]
    assert scores[0] < scores[1] < scores[2], scores
    assert scores[2] > 0.95, scores


def test_stderr_shrinks_like_one_over_root_samples():
    small = run(A6, 25_000, seed=4)
    large = run(A6, 100_000, seed=5)
    assert large.n_samples == 4 * small.n_samples
    ratio = large.stderr.mean() / small.stderr.mean()
    assert abs(ratio - 0.5) <= 0.05, ratio
    ratios = large.stderr / small.stderr
    assert np.all(np.abs(ratios - 0.5) < 0.1), ratios


def test_stderr_is_calibrated_across_seeds():
    # The spread of the effect over independent seeds matches the reported standard error.
    runs = [run(A6, 4_000, seed=s) for s in range(30)]
    effects = np.stack([r.effect for r in runs])
    stderr = np.mean([r.stderr for r in runs], axis=0)
    spread = effects.std(axis=0, ddof=1)
    ratio = np.sqrt(np.mean(spread**2) / np.mean(stderr**2))  # pooled over 36 edges
    assert 0.85 < ratio < 1.15, ratio


def test_result_attributes():
    result = run(A6, 1001, seed=2, chunk_steps=100)
    assert result.n_steps == 1001 and result.n_samples == 500
    assert result.seconds > 0 and result.steps_per_second > 0
    assert result.moments.n_inputs == result.moments.n_outputs == 6
    for name in ("correlation", "effect", "stderr"):
        assert getattr(result, name).shape == (6, 6)
    assert result.score(A6) == streamcausal.score(result.correlation, A6)
    assert result.score(A6, "effect") == streamcausal.score(result.effect, A6)
    assert design_from_dict(result.parameters["design"]) == Perturbation()
    with pytest.raises(ValueError, match=r"estimate must be one of .*got 'slope'"):
        result.score(A6, estimate="slope")


# =========================================================================== progress


@pytest.mark.parametrize("n_steps, chunk_steps", [(1000, 100), (1001, 100), (10, 3), (10, 1), (10, 50)])
def test_progress_is_called_once_per_chunk(n_steps, chunk_steps):
    calls = []
    run(A5, n_steps, chunk_steps=chunk_steps, progress=lambda event: calls.append((event.steps_done, event.steps_total)))
    n_chunks = -(-n_steps // chunk_steps)
    assert len(calls) == n_chunks
    assert [done for done, _ in calls] == [min((k + 1) * chunk_steps, n_steps) for k in range(n_chunks)]
    assert all(total == n_steps for _, total in calls)
    assert calls[-1] == (n_steps, n_steps)


def test_progress_with_default_chunks_and_legacy():
    calls = []
    run(A5, 5000, rng="legacy", design=Observation(), progress=calls.append)
    done = [event.steps_done for event in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    last = calls[-1]
    assert (last.steps_done, last.steps_total, last.seed, last.samples, last.fraction) == (5000, 5000, 0, 4999, 1.0)
    assert last.score is not None and last.mean_se > 0


# =========================================================================== bad arguments

BAD_N_STEPS = [
    (1, ValueError, r"n_steps must be >= 2, got 1"),
    (0, ValueError, r"n_steps must be >= 2, got 0"),
    (-10, ValueError, r"n_steps must be >= 2, got -10"),
    (2.5, TypeError, r"n_steps must be an integer, got 2\.5"),
    ("10", TypeError, r"n_steps must be an integer, got '10'"),
    (True, TypeError, r"n_steps must be an integer, got True"),
    (None, TypeError, r"n_steps must be an integer, got None"),
]
BAD_CHUNK_STEPS = [
    (0, ValueError, r"chunk_steps must be >= 1, got 0"),
    (-1, ValueError, r"chunk_steps must be >= 1, got -1"),
    (1.5, TypeError, r"chunk_steps must be an integer, got 1\.5"),
    (True, TypeError, r"chunk_steps must be an integer, got True"),
    ("7", TypeError, r"chunk_steps must be an integer, got '7'"),
]
BAD_SEEDS = [
    (-1, ValueError, r"seed must be >= 0, got -1"),
    (2**32, ValueError, r"seed must be <= 4294967295, got 4294967296"),
    (1.5, TypeError, r"seed must be an integer, got 1\.5"),
    ("0", TypeError, r"seed must be an integer, got '0'"),
    (True, TypeError, r"seed must be an integer, got True"),
    (None, TypeError, r"seed must be an integer, got None"),
]
BAD_RNG = [
    ("fast", ValueError, r"rng must be one of \('default', 'legacy'\), got 'fast'"),
    ("Legacy", ValueError, r"rng must be one of .*got 'Legacy'"),
    (None, ValueError, r"rng must be one of .*got None"),
    (0, ValueError, r"rng must be one of .*got 0"),
]
BAD_DESIGNS = [
    ({"kind": "perturbation", "every": 2}, TypeError, r"design must be Perturbation\(\.\.\.\) or Observation\(\), got \{'kind'"),
    ("perturbation", TypeError, r"design must be .*got 'perturbation'"),
    (Perturbation, TypeError, r"design must be .*got <class"),
    (None, TypeError, r"design must be .*got None"),
]

ENTRIES = {"run": run, "simulate": simulate}


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value, error, match", bad_connectivity_cases("A"))
def test_bad_matrix(entry, value, error, match):
    with pytest.raises(error, match=match):
        ENTRIES[entry](value, 100)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value, error, match", BAD_N_STEPS)
def test_bad_n_steps(entry, value, error, match):
    with pytest.raises(error, match=match):
        ENTRIES[entry](A5, value)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value, error, match", BAD_CHUNK_STEPS)
def test_bad_chunk_steps(entry, value, error, match):
    with pytest.raises(error, match=match):
        ENTRIES[entry](A5, 100, chunk_steps=value)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value, error, match", BAD_SEEDS)
def test_bad_seed(entry, value, error, match):
    with pytest.raises(error, match=match):
        ENTRIES[entry](A5, 100, seed=value)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value, error, match", BAD_RNG)
def test_bad_rng(entry, value, error, match):
    with pytest.raises(error, match=match):
        ENTRIES[entry](A5, 100, rng=value)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value, error, match", BAD_DESIGNS)
def test_bad_design(entry, value, error, match):
    with pytest.raises(error, match=match):
        ENTRIES[entry](A5, 100, design=value)


@pytest.mark.parametrize("value", [5, "print", [], object()])
def test_bad_progress(value):
    with pytest.raises(TypeError, match=r"progress must be callable or None, got"):
        run(A5, 100, progress=value)


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        run(A5, 100, Perturbation())
    with pytest.raises(TypeError):
        simulate(A5, 100, Perturbation())


def test_integer_likes_are_accepted():
    want = run(A5, 100, seed=3, chunk_steps=7).moments
    got = run(A5, np.int64(100), seed=np.uint32(3), chunk_steps=np.int32(7)).moments
    assert_moments_bit_equal(got, want)
    got = run(A5.tolist(), 100.0, seed=3.0, chunk_steps=7.0).moments
    assert_moments_bit_equal(got, want)
