"""Slow, obviously correct NumPy references that every fast path is checked against."""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------- moments
# Inputs U (T, n_in) and outputs V (T, n_out) are time-major; every matrix returned
# is (n_out, n_in) = [target, source], A's orientation.


def reference_cross_moments(U, V) -> dict:
    """Count, means, centred sums of squares and co-moment of the whole data, by brute force.

    Means and sums use ``math.fsum`` (exactly rounded) over explicit loops.
    """
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    count = U.shape[0]
    n_in, n_out = U.shape[1], V.shape[1]
    mean_in = np.array([math.fsum(U[:, i]) / count for i in range(n_in)])
    mean_out = np.array([math.fsum(V[:, j]) / count for j in range(n_out)])
    du = U - mean_in
    dv = V - mean_out
    m2_in = np.array([math.fsum(du[:, i] * du[:, i]) for i in range(n_in)])
    m2_out = np.array([math.fsum(dv[:, j] * dv[:, j]) for j in range(n_out)])
    comoment = np.empty((n_out, n_in))
    for j in range(n_out):
        for i in range(n_in):
            comoment[j, i] = math.fsum(dv[:, j] * du[:, i])
    return {
        "count": count,
        "mean_in": mean_in,
        "mean_out": mean_out,
        "m2_in": m2_in,
        "m2_out": m2_out,
        "comoment": comoment,
    }


def reference_correlation(U, V) -> np.ndarray:
    """Pearson ``corr(V[:, j], U[:, i])`` as ``[j, i]`` via ``np.corrcoef``; NaN for constant columns."""
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    n_in = U.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(np.hstack([U, V]).T)[n_in:, :n_in]
    # np.corrcoef centres with np.mean, which can miss a constant column's value by an ulp
    # and then returns noise instead of NaN; a constant column has no correlation.
    if U.shape[0] > 0:
        corr[:, np.all(U == U[0], axis=0)] = np.nan
        corr[np.all(V == V[0], axis=0), :] = np.nan
    return corr


def reference_effect(U, V) -> np.ndarray:
    """Difference in means ``E[V_j | U_i = 1] - E[V_j | U_i = 0]`` as ``[j, i]``, for 0/1 inputs ``U``.

    NaN where input ``i`` is never 1 or never 0.
    """
    U = np.asarray(U)
    V = np.asarray(V, dtype=np.float64)
    if not np.isin(U, (0, 1)).all():
        raise ValueError("reference_effect needs binary 0/1 inputs")
    effect = np.full((V.shape[1], U.shape[1]), np.nan)
    for i in range(U.shape[1]):
        on = U[:, i] == 1
        off = U[:, i] == 0
        if not on.any() or not off.any():
            continue
        for j in range(V.shape[1]):
            effect[j, i] = V[on, j].mean() - V[off, j].mean()
    return effect


def _ols_pair(x, y):
    """OLS of y on [1, x]: (slope, standard error of the slope), textbook formulas."""
    n = x.shape[0]
    X = np.column_stack([np.ones(n), x])
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    if n < 3:
        return beta[1], np.nan
    residual = y - X @ beta
    sigma2 = math.fsum(residual * residual) / (n - 2)
    covariance = sigma2 * np.linalg.inv(X.T @ X)
    return beta[1], math.sqrt(covariance[1, 1])


def reference_slope(U, V) -> np.ndarray:
    """Per-pair OLS slope (with intercept) of ``V[:, j]`` on ``U[:, i]`` as ``[j, i]``.

    NaN for constant inputs.
    """
    return _ols_matrix(U, V)[0]


def reference_stderr(U, V) -> np.ndarray:
    """Per-pair OLS standard error of that slope as ``[j, i]``.

    NaN for constant inputs or fewer than 3 samples.
    """
    return _ols_matrix(U, V)[1]


def _ols_matrix(U, V):
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    slope = np.full((V.shape[1], U.shape[1]), np.nan)
    stderr = np.full_like(slope, np.nan)
    for i in range(U.shape[1]):
        if np.all(U[:, i] == U[0, i]):
            continue
        for j in range(V.shape[1]):
            slope[j, i], stderr[j, i] = _ols_pair(U[:, i], V[:, j])
    return slope, stderr


# --------------------------------------------------------------------------- random streams
# Pure-Python (int arithmetic and the math module) versions of the default random stream of
# streamcausal._kernels.rng: SplitMix64 counters, 0/1 coins and a 256-layer Marsaglia-Tsang
# ziggurat. They follow _kernels/rng.py operation for operation, so draws agree bit for bit.

MASK64 = (1 << 64) - 1
SPLITMIX_GOLDEN = 0x9E3779B97F4A7C15
SPLITMIX_MIX1 = 0xBF58476D1CE4E5B9
SPLITMIX_MIX2 = 0x94D049BB133111EB
ZIGGURAT_LAYERS = 256
ZIGGURAT_R = 3.6541528853610088
ZIGGURAT_AREA = 0.00492867323399


def reference_mix64(z: int) -> int:
    """SplitMix64's finaliser on a 64-bit integer."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * SPLITMIX_MIX1) & MASK64
    z = ((z ^ (z >> 27)) * SPLITMIX_MIX2) & MASK64
    return z ^ (z >> 31)


def reference_stream_start(key: int, index: int) -> int:
    """Starting counter of sub-stream ``index`` of the stream keyed by ``key``."""
    return reference_mix64(key ^ reference_mix64(index + SPLITMIX_GOLDEN))


def reference_ziggurat_tables(layers=ZIGGURAT_LAYERS, r=ZIGGURAT_R, area=ZIGGURAT_AREA):
    """(edges, inner_ratio, density) as Python float lists.

    ``edges[0]`` is the base strip's width (rectangle plus tail), ``edges[1] = r``, and
    ``edges[i + 1]`` solves ``edges[i] * (f(edges[i + 1]) - f(edges[i])) = area``;
    ``edges[layers] = 0``. ``inner_ratio[i] = edges[i + 1] / edges[i]``,
    ``density[i] = f(edges[i])`` with ``f(x) = exp(-x^2 / 2)``.
    """

    def f(x):
        return math.exp(-0.5 * x * x)

    edges = [0.0] * (layers + 1)
    edges[0] = area / f(r)
    edges[1] = r
    for i in range(1, layers):
        edges[i + 1] = math.sqrt(max(-2.0 * math.log(area / edges[i] + f(edges[i])), 0.0))
    edges[layers] = 0.0
    inner_ratio = [edges[i + 1] / edges[i] for i in range(layers)]
    density = [f(x) for x in edges]
    return edges, inner_ratio, density


class ReferenceStream:
    """One default stream: a SplitMix64 counter and the draws made from it.

    ``paths`` counts how normals were produced: "fast" (inside a layer's inner
    rectangle), "wedge_accepted", "wedge_rejected", "tail" (accepted tail values) and
    "tail_retries" (rejected tail proposals).
    """

    def __init__(self, counter: int):
        self.counter = counter & MASK64
        self.edges, self.inner, self.density = reference_ziggurat_tables()
        self.paths = dict.fromkeys(("fast", "wedge_accepted", "wedge_rejected", "tail", "tail_retries"), 0)

    def next_u64(self) -> int:
        self.counter = (self.counter + SPLITMIX_GOLDEN) & MASK64
        return reference_mix64(self.counter)

    def uniform(self) -> float:
        """53 random bits as a float in [0, 1)."""
        return float(self.next_u64() >> 11) * (1.0 / 9007199254740992.0)

    def coins(self, p: float, n: int) -> list:
        """n coins (1.0 with probability p): for p = 0.5 one bit each, 64 per draw, low bit first."""
        out = []
        if p == 0.5:
            bits = 0
            for i in range(n):
                if i % 64 == 0:
                    bits = self.next_u64()
                out.append(float(bits & 1))
                bits >>= 1
        else:
            for _ in range(n):
                out.append(1.0 if self.uniform() < p else 0.0)
        return out

    def normal(self) -> float:
        edges, inner, density = self.edges, self.inner, self.density
        r = edges[1]
        while True:
            bits = self.next_u64()
            layer = bits & 0xFF
            negative = (bits >> 8) & 1
            u = float(bits >> 11) * (1.0 / 9007199254740992.0)
            x = u * edges[layer]
            if u < inner[layer]:
                self.paths["fast"] += 1
                return -x if negative else x
            if layer == 0:  # the tail beyond r (Marsaglia's exponential method)
                while True:
                    xx = -math.log(1.0 - self.uniform()) / r
                    yy = -math.log(1.0 - self.uniform())
                    if yy + yy > xx * xx:
                        break
                    self.paths["tail_retries"] += 1
                self.paths["tail"] += 1
                x = r + xx
                return -x if negative else x
            y = density[layer] + self.uniform() * (density[layer + 1] - density[layer])
            if y < math.exp(-0.5 * x * x):
                self.paths["wedge_accepted"] += 1
                return -x if negative else x
            self.paths["wedge_rejected"] += 1

    def normals(self, n: int) -> list:
        return [self.normal() for _ in range(n)]


def reference_stream_draws(start: int, p: float, n_coins: int, n_normals: int):
    """As ``_kernels.rng._stream_draws``: coins then normals from one stream.

    Returns (coins, normals, final counter, path counts).
    """
    stream = ReferenceStream(start)
    coins = stream.coins(p, n_coins)
    normals = stream.normals(n_normals)
    return coins, normals, stream.counter, stream.paths


def normal_cdf(x: float) -> float:
    """Standard normal CDF by math.erf."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# --------------------------------------------------------------------------- simulations


def reference_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_legacy_trajectory(A, n_steps, design, seed):
    """The legacy-mode trajectory of any design, in plain NumPy with ``RandomState(seed)``.

    The tutorial's draw order generalised: on a clamped step t (t % every == 0 and
    t + 1 < n_steps) draw the n coins (``randint(0, 2)`` for p = 0.5, else
    ``random_sample() < p``) and clamp; then, on every step t < n_steps - 1, draw
    ``standard_normal(n)`` and set x_{t+1} = sigmoid(A x_t + eps). ``design`` is a
    Perturbation or Observation. Returns (activity, stimulation, clamped), time-major.
    """
    A = np.asarray(A, dtype=np.float64)
    n = A.shape[0]
    rs = np.random.RandomState(seed)
    activity = np.zeros((n_steps, n))
    stimulation = np.zeros((n_steps, n))
    clamped = np.zeros(n_steps, dtype=bool)
    every = getattr(design, "every", None)
    for t in range(n_steps - 1):
        if every is not None and t % every == 0:
            if design.p == 0.5:
                coins = rs.randint(0, 2, size=n).astype(np.float64)
            else:
                coins = (rs.random_sample(n) < design.p).astype(np.float64)
            if design.clamp == "all":
                activity[t] = coins
            else:
                activity[t] = np.where(coins == 1.0, 1.0, activity[t])
            stimulation[t] = coins
            clamped[t] = True
        eps = rs.standard_normal(n)
        activity[t + 1] = reference_sigmoid(A @ activity[t] + eps)
    return activity, stimulation, clamped


def reference_design_samples(activity, stimulation, design):
    """The (inputs, outputs) sample pairs of a time-major trajectory under ``design``.

    Perturbation: (stimulation[t], activity[t + 1]) for t = 0, every, 2 every, ... with
    t + 1 < T. Observation: (activity[t], activity[t + 1]) for every t < T - 1.
    """
    activity = np.asarray(activity, dtype=np.float64)
    T = activity.shape[0]
    every = getattr(design, "every", None)
    if every is None:
        return activity[:-1], activity[1:]
    steps = np.arange(0, T - 1, every)
    return np.asarray(stimulation, dtype=np.float64)[steps], activity[steps + 1]


# --------------------------------------------------------------------------- bad inputs


def bad_connectivity_cases(name: str = "A"):
    """(value, exception type, message regex) for connectivity matrices every entry must refuse.

    Each regex requires the argument's name and a description of the bad value.
    """
    nan_matrix = np.zeros((3, 3))
    nan_matrix[0, 1] = np.nan
    inf_matrix = np.eye(2)
    inf_matrix[1, 0] = np.inf
    ninf_matrix = np.eye(2)
    ninf_matrix[1, 1] = -np.inf
    return [
        pytest_param(np.ones((2, 3)), ValueError, rf"{name} must be a square.*\(2, 3\)", "not-square"),
        pytest_param(np.ones(3), ValueError, rf"{name} must be a square.*\(3,\)", "vector"),
        pytest_param(np.ones((2, 2, 2)), ValueError, rf"{name} must be a square.*\(2, 2, 2\)", "3-d"),
        pytest_param(np.float64(1.5), ValueError, rf"{name} must be a square.*\(\)", "scalar"),
        pytest_param(nan_matrix, ValueError, rf"{name} must be finite.*nan.*{name}\[0, 1\]", "nan"),
        pytest_param(inf_matrix, ValueError, rf"{name} must be finite.*inf.*{name}\[1, 0\]", "inf"),
        pytest_param(ninf_matrix, ValueError, rf"{name} must be finite.*-inf.*{name}\[1, 1\]", "-inf"),
        pytest_param(np.eye(2) * 1j, TypeError, rf"{name} must be real.*complex", "complex"),
        pytest_param(np.zeros((0, 0)), ValueError, rf"{name} must not be empty.*\(0, 0\)", "empty-2d"),
        pytest_param([], ValueError, rf"{name} must be a square.*\(0,\)", "empty-list"),
        pytest_param([["a", "b"], ["c", "d"]], TypeError, rf"{name} must be a square numeric matrix.*<U1", "strings"),
        pytest_param(np.array([[1, None], [2, 3]], dtype=object), TypeError, rf"{name} must be a .*numeric.*object", "object"),
        pytest_param("abc", TypeError, rf"{name} must be a square numeric matrix.*'abc'", "str"),
        pytest_param(None, TypeError, rf"{name} must be a square numeric matrix.*None", "None"),
        pytest_param([[1, 2], [3]], TypeError, rf"{name} must be a square numeric matrix.*\[\[1, 2\], \[3\]\]", "ragged"),
    ]


def pytest_param(value, error, match, case_id):
    import pytest

    return pytest.param(value, error, match, id=case_id)
