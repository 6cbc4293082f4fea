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


# --------------------------------------------------------------------------- trial experiments
# Activity is time-major (T, n); trial responses are (K, n); indicators (K, n_sources) are
# 0/1 "source i was targeted in trial k"; effects and standard errors are [responder, source].


def reference_responses(activity, times, end, onsets, window, baseline=None):
    """Each trial's mean activity over its window (minus its baseline mean), by explicit masks.

    Trial ``k`` averages the frames with ``onsets[k] + window[0] <= times[f] < onsets[k] + window[1]``
    (likewise for ``baseline``, subtracted). It is dropped when an interval ``[a, b)`` holds no
    frame or is not inside the recording (``a >= times[0]`` and ``b <= end``).
    Returns ``(responses (K_kept, n), kept bool (K,))``.
    """
    activity = np.asarray(activity, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    onsets = np.asarray(onsets, dtype=np.float64)
    intervals = [window] if baseline is None else [window, baseline]
    rows = []
    kept = np.zeros(onsets.shape[0], dtype=bool)
    for k, onset in enumerate(onsets):
        means = []
        for low, high in intervals:
            a = onset + low
            b = onset + high
            mask = (times >= a) & (times < b)
            if a < times[0] or b > end or not mask.any():
                break
            means.append(np.array([math.fsum(activity[mask, j]) / mask.sum() for j in range(activity.shape[1])]))
        else:
            kept[k] = True
            rows.append(means[0] - means[1] if baseline is not None else means[0])
    responses = np.array(rows) if rows else np.empty((0, activity.shape[1]))
    return responses, kept


def reference_identifiable(indicators) -> np.ndarray:
    """Bool (n_sources,): source ``i``'s coefficient in the regression on ``[1, S]`` is estimable.

    That is: removing column ``i`` lowers the rank of ``[1, S]`` (the column is not a
    combination of the intercept and the other columns). A never-targeted source (zero
    column), an always-targeted one (the intercept) and sources always targeted together
    are not identifiable.
    """
    S = np.asarray(indicators, dtype=np.float64)
    X = np.column_stack([np.ones(S.shape[0]), S])
    rank = np.linalg.matrix_rank(X)
    return np.array([np.linalg.matrix_rank(np.delete(X, 1 + i, axis=1)) < rank for i in range(S.shape[1])])


def reference_regression(indicators, responses):
    """Joint OLS of each responder's response on ``[1, S]``: (effect, stderr) as ``[responder, source]``.

    ``effect[j, i]`` is source ``i``'s coefficient for responder ``j`` from ``np.linalg.lstsq``;
    the standard error is the textbook ``sqrt(RSS_j / (N - rank[1, S]) * (X^T X)^+_ii)``, which
    for a full-rank design is ``RSS_j / (N - p - 1)`` times the inverse of the centred design
    cross-product. Non-identifiable sources (:func:`reference_identifiable`) are NaN; the
    standard errors are NaN when no residual degree of freedom is left.
    """
    S = np.asarray(indicators, dtype=np.float64)
    R = np.asarray(responses, dtype=np.float64)
    n_trials, n_sources = S.shape
    X = np.column_stack([np.ones(n_trials), S])
    identifiable = reference_identifiable(S)
    effect = np.full((R.shape[1], n_sources), np.nan)
    stderr = np.full_like(effect, np.nan)
    rank = np.linalg.matrix_rank(X)
    inverse = np.linalg.pinv(X.T @ X)
    for j in range(R.shape[1]):
        beta = np.linalg.lstsq(X, R[:, j], rcond=None)[0]
        residual = R[:, j] - X @ beta
        df = n_trials - rank
        sigma2 = math.fsum(residual * residual) / df if df > 0 else np.nan
        for i in range(n_sources):
            if identifiable[i]:
                effect[j, i] = beta[1 + i]
                stderr[j, i] = math.sqrt(sigma2 * inverse[1 + i, 1 + i]) if df > 0 else np.nan
    return effect, stderr


def reference_difference(indicators, responses, exclude_responder=True):
    """Difference of mean responses with Welch standard errors, by explicit loops over (j, i).

    With ``exclude_responder`` (the estimator's definition), for ``i != j`` group a is the
    trials that target ``i`` and not ``j``, group b those that target neither; without it
    (and always for ``i == j``) a targets ``i`` and b does not. ``effect = mean_a - mean_b``
    and ``stderr = sqrt(var_a/n_a + var_b/n_b)`` with ddof=1; both NaN when a group has
    fewer than 2 trials.
    """
    S = np.asarray(indicators)
    R = np.asarray(responses, dtype=np.float64)
    n_sources = S.shape[1]
    effect = np.full((R.shape[1], n_sources), np.nan)
    stderr = np.full_like(effect, np.nan)
    for j in range(R.shape[1]):
        for i in range(n_sources):
            on = S[:, i] == 1
            off = S[:, i] == 0
            if exclude_responder and i != j and j < n_sources:
                on = on & (S[:, j] == 0)
                off = off & (S[:, j] == 0)
            a, b = R[on, j], R[off, j]
            if a.size < 2 or b.size < 2:
                continue
            effect[j, i] = a.mean() - b.mean()
            stderr[j, i] = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return effect, stderr


def reference_pvalues(effect, stderr):
    """Two-sided normal p-values ``2 P(Z > |effect / stderr|)``; NaN where either is NaN or stderr <= 0."""
    from scipy.stats import norm

    effect = np.asarray(effect, dtype=np.float64)
    stderr = np.asarray(stderr, dtype=np.float64)
    p = np.full(effect.shape, np.nan)
    for index in np.ndindex(effect.shape):
        if np.isfinite(effect[index]) and np.isfinite(stderr[index]) and stderr[index] > 0:
            p[index] = 2.0 * norm.sf(abs(effect[index] / stderr[index]))
    return p


def reference_bh(pvalues, mask):
    """Benjamini-Hochberg q-values over the entries in ``mask`` with a finite p-value; NaN elsewhere.

    Textbook step-up: sort the m p-values ascending, ``q_(k) = min over l >= k of
    min(1, m p_(l) / l)``, put back in place.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    use = np.asarray(mask, dtype=bool) & np.isfinite(p)
    where = np.argwhere(use)
    values = [p[tuple(index)] for index in where]
    m = len(values)
    order = sorted(range(m), key=lambda k: values[k])
    q_sorted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        running = min(running, m * values[order[rank - 1]] / rank)
        q_sorted[rank - 1] = running
    q = np.full(p.shape, np.nan)
    for rank, k in enumerate(order):
        q[tuple(where[k])] = q_sorted[rank]
    return q
