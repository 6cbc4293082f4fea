"""Figures, each a function returning a matplotlib :class:`~matplotlib.figure.Figure`.

Orientation: ``A[j, i]`` is the weight from source neuron ``i`` onto target neuron ``j``;
activity arrays are time-major ``(T, n)``. Figures are built with
:class:`matplotlib.figure.Figure` directly (no pyplot state), so they work headless and
are freed when the last reference goes; save them with ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path
from matplotlib.ticker import MaxNLocator

from ._validation import as_numeric_array, check_connectivity, check_index, check_int, check_interval, check_real, describe

__all__ = [
    "plot_connectivity_graph",
    "plot_connectivity_matrix",
    "plot_connectivity_graph_matrix",
    "plot_activity",
    "plot_standard_vs_perturbed",
    "plot_true_vs_estimated",
    "plot_tutorial_summary",
    "plot_convergence",
    "plot_edge_distributions",
    "plot_estimated_graph",
    "plot_influence_matrix",
    "plot_volcano",
    "plot_peristimulus",
    "plot_self_response",
    "plot_source_errors",
]

POSITIVE_COLOUR = "#b40426"  # the red end of "coolwarm"
NEGATIVE_COLOUR = "#3b4cc0"  # the blue end of "coolwarm"
NAN_COLOUR = "0.35"  # dark grey: distinct from the light grey of 0 in "coolwarm"
_NODE_SIZE = 420.0  # scatter marker area in points**2
_NODE_RADIUS_PT = np.sqrt(_NODE_SIZE) / 2
_MAX_TICKS = 20


# ----------------------------------------------------------------------------- checks


def _as_real_array(value, name: str, what: str) -> np.ndarray:
    return as_numeric_array(value, name, what).astype(np.float64)


def _check_no_inf(array: np.ndarray, name: str) -> np.ndarray:
    if np.isinf(array).any():
        bad = tuple(int(k) for k in np.argwhere(np.isinf(array))[0])
        where = ", ".join(map(str, bad))
        raise ValueError(f"{name} must not contain infinities, got {array[bad]} at {name}[{where}]")
    return array


def _check_matrix(value, name: str, *, square: bool = False) -> np.ndarray:
    """A non-empty 2-D real matrix; NaN allowed (drawn as missing), infinities refused."""
    array = _as_real_array(value, name, "2-D numeric matrix")
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D matrix, got shape {array.shape}")
    if square and array.shape[0] != array.shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {array.shape}")
    return _check_no_inf(array, name)


def _check_activity(value, name: str) -> np.ndarray:
    array = _as_real_array(value, name, "time-major (T, n) numeric array")
    if array.ndim != 2 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty time-major (T, n) array, got shape {array.shape}"
        )
    return _check_no_inf(array, name)


def _check_title(title, name: str = "title"):
    if title is not None and not isinstance(title, str):
        raise TypeError(f"{name} must be a string or None, got {describe(title)}")
    return title


def _check_ax(ax):
    if ax is not None and not hasattr(ax, "imshow"):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {describe(ax)}")
    return ax


# ----------------------------------------------------------------------------- helpers


def _root_figure(ax) -> Figure:
    try:
        return ax.get_figure(root=True)
    except TypeError:  # matplotlib < 3.10: SubFigure.figure is the root figure
        figure = ax.figure
        return getattr(figure, "figure", figure)


def _new_axes(ax, figsize):
    """``(figure, ax)``: the given axes and its figure, or a fresh constrained-layout figure."""
    if ax is not None:
        return _root_figure(ax), ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _symmetric_limit(values: np.ndarray) -> float:
    """``max |finite values|``, or 1.0 when there is none or it is zero (so vmin < vmax)."""
    finite = np.abs(values[np.isfinite(values)])
    lim = float(finite.max()) if finite.size else 0.0
    return lim if lim > 0 else 1.0


def _integer_ticks(axis, count: int) -> None:
    if count <= _MAX_TICKS:
        axis.set_ticks(range(count))
    else:
        axis.set_major_locator(MaxNLocator(integer=True))


class _SelfLoop:
    """Connection style drawing a loop outside a node (called in display coordinates).

    ``shrinkA`` (the node radius plus a margin, in pixels) sets the loop's size, so the
    loop looks the same whatever the axes' data scale.
    """

    def __init__(self, angle: float, spread: float = np.radians(40), reach: float = 3.2):
        self.angle, self.spread, self.reach = angle, spread, reach

    def _point(self, centre, radius, angle):
        return centre + radius * np.array([np.cos(angle), np.sin(angle)])

    def __call__(self, posA, posB, patchA=None, patchB=None, shrinkA=2.0, shrinkB=2.0):
        centre = np.asarray(posA, dtype=float)
        radius = max(float(shrinkA), 1.0)
        start = self._point(centre, radius, self.angle + self.spread)
        end = self._point(centre, radius, self.angle - self.spread)
        control_1 = self._point(centre, self.reach * radius, self.angle + 0.9 * self.spread)
        control_2 = self._point(centre, self.reach * radius, self.angle - 0.9 * self.spread)
        return Path([start, control_1, control_2, end],
                    [Path.MOVETO, Path.CURVE4, Path.CURVE4, Path.CURVE4])


def _neuron_positions(n: int):
    thetas = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.cos(thetas), np.sin(thetas), thetas


# ----------------------------------------------------------------------------- figures


def plot_connectivity_graph(A, ax=None, title=None, threshold=0.0):
    """Neurons on a circle with an arrow from source ``i`` to target ``j`` for each ``A[j, i] != 0``.

    Parameters
    ----------
    A : array_like, shape (n, n)
        ``A[j, i]`` is the weight from source ``i`` onto target ``j``; the arrowhead sits
        at the target. NaN entries are treated as missing (no arrow).
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure is made when omitted.
    title : str, optional
        Axes title.
    threshold : float
        Draw only edges with ``|A[j, i]| > threshold`` (default: every nonzero edge).

    Returns
    -------
    matplotlib.figure.Figure
        Arrow opacity and width scale with ``|weight| / max |weight|``; positive weights
        are red, negative blue; a self-connection ``A[i, i]`` is a small loop outside
        neuron ``i``. Each arrow is a :class:`~matplotlib.patches.FancyArrowPatch` whose
        gid is ``"edge i->j"``.
    """
    A = _check_matrix(A, "A", square=True)
    _check_ax(ax)
    _check_title(title)
    threshold = check_real(threshold, "threshold")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    fig, ax = _new_axes(ax, (5, 5))
    n = A.shape[0]
    x, y, thetas = _neuron_positions(n)
    weights = np.where(np.isnan(A), 0.0, A)
    largest = float(np.abs(weights).max())

    ax.set_aspect("equal")
    ax.set_xlim(-1.4, 1.4)
    ax.set_ylim(-1.4, 1.4)
    ax.axis("off")
    ax.scatter(x, y, s=_NODE_SIZE, c="k", zorder=3)
    for i in range(n):
        ax.text(x[i], y[i], str(i), color="w", ha="center", va="center",
                fontsize=10, fontweight="bold", zorder=4)

    shrink = _NODE_RADIUS_PT + 2
    has_negative = False
    if largest > 0:
        for j in range(n):  # target
            for i in range(n):  # source
                weight = weights[j, i]
                if weight == 0 or abs(weight) <= threshold:
                    continue
                relative = abs(weight) / largest
                colour = POSITIVE_COLOUR if weight > 0 else NEGATIVE_COLOUR
                has_negative |= weight < 0
                style = dict(
                    arrowstyle="-|>",
                    mutation_scale=8 + 10 * relative,
                    linewidth=0.6 + 2.4 * relative,
                    color=colour,
                    alpha=float(np.clip(relative, 0.0, 1.0)),
                    zorder=2,
                )
                if i == j:
                    # A teardrop loop leaving and re-entering the node on its outer side.
                    arrow = FancyArrowPatch(
                        (x[i], y[i]), (x[i], y[i]),
                        connectionstyle=_SelfLoop(thetas[i]),
                        shrinkA=shrink, shrinkB=shrink, **style,
                    )
                else:
                    # Slightly curved, so i->j and j->i do not overlap.
                    arrow = FancyArrowPatch(
                        (x[i], y[i]), (x[j], y[j]),
                        connectionstyle="arc3,rad=0.12",
                        shrinkA=shrink, shrinkB=shrink, **style,
                    )
                arrow.set_gid(f"edge {i}->{j}")
                ax.add_patch(arrow)
    if has_negative:
        ax.legend(
            handles=[Line2D([], [], color=POSITIVE_COLOUR, lw=2, label="positive"),
                     Line2D([], [], color=NEGATIVE_COLOUR, lw=2, label="negative")],
            loc="lower right", fontsize=8, frameon=False,
        )
    if title is not None:
        ax.set_title(title)
    return fig


def plot_connectivity_matrix(A, ax=None, title=None, label="Connectivity strength"):
    """Heatmap of a connectivity matrix in ``A``'s orientation (row = target, column = source).

    Parameters
    ----------
    A : array_like, shape (n_targets, n_sources)
        ``A[j, i]`` is the weight from source ``i`` onto target ``j``. Need not be square
        (a single column is one source's effects). NaN cells are drawn dark grey.
    ax : matplotlib Axes, optional
    title : str, optional
    label : str
        Colourbar label.

    Returns
    -------
    matplotlib.figure.Figure
        The colour scale is symmetric, ``vmin = -lim, vmax = lim`` with ``lim`` the
        largest finite ``|A|`` (1 when that is 0), colormap ``"coolwarm"``.
    """
    A = _check_matrix(A, "A")
    _check_ax(ax)
    _check_title(title)
    _check_title(label, "label")
    fig, ax = _new_axes(ax, (5.5, 4.5))
    lim = _symmetric_limit(A)
    cmap = colormaps["coolwarm"].with_extremes(bad=NAN_COLOUR)
    image = ax.imshow(np.ma.masked_invalid(A), vmin=-lim, vmax=lim, cmap=cmap)
    ax.set_xlabel("Connectivity from", fontsize=12)
    ax.set_ylabel("Connectivity to", fontsize=12)
    ax.tick_params(labelsize=10)
    _integer_ticks(ax.xaxis, A.shape[1])
    _integer_ticks(ax.yaxis, A.shape[0])
    colourbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colourbar.set_label(label or "", fontsize=11)
    if title is not None:
        ax.set_title(title)
    return fig


def plot_connectivity_graph_matrix(A, title="Neuron connectivity"):
    """Graph and heatmap of ``A`` side by side (the course's ``plot_connectivity_graph_matrix``).

    ``A[j, i]`` is the weight from source ``i`` onto target ``j``. Returns the Figure.
    """
    A = check_connectivity(A, dense=True)
    _check_title(title)
    fig = Figure(figsize=(11, 5), layout="constrained")
    axs = fig.subplots(1, 2)
    plot_connectivity_graph(A, ax=axs[0], title="Connectivity graph")
    plot_connectivity_matrix(A, ax=axs[1], title="Connectivity matrix")
    if title is not None:
        fig.suptitle(title, fontsize=14)
    return fig


def _draw_activity(ax, activity, n_steps, vmin=None, vmax=None):
    shown = activity[:n_steps].T  # rows = neurons, columns = time steps
    cmap = colormaps["viridis"].with_extremes(bad=NAN_COLOUR)
    image = ax.imshow(np.ma.masked_invalid(shown), aspect="auto", cmap=cmap,
                      vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xlabel("Timestep", fontsize=12)
    ax.set_ylabel("Neuron", fontsize=12)
    _integer_ticks(ax.xaxis, shown.shape[1])
    _integer_ticks(ax.yaxis, shown.shape[0])
    return image


def plot_activity(activity, n_steps=10, ax=None, title="Simulated neural activity"):
    """Heatmap of the first ``n_steps`` steps of time-major ``activity``.

    Parameters
    ----------
    activity : array_like, shape (T, n)
        Time-major activity (transpose the tutorial's ``(n, T)`` arrays).
    n_steps : int
        Number of leading steps shown (all ``T`` when fewer).
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        x is the time step, y the neuron, with a colourbar.
    """
    activity = _check_activity(activity, "activity")
    n_steps = check_int(n_steps, "n_steps", minimum=1)
    _check_ax(ax)
    _check_title(title)
    fig, ax = _new_axes(ax, (7, 4))
    image = _draw_activity(ax, activity, n_steps)
    fig.colorbar(image, ax=ax, label="Activity")
    if title is not None:
        ax.set_title(title)
    return fig


def plot_standard_vs_perturbed(standard, perturbed, n_steps=10):
    """Standard and perturbed activity side by side, on one colour scale.

    Parameters
    ----------
    standard, perturbed : array_like, shape (T, n)
        Time-major activity with the same number of neurons.
    n_steps : int
        Number of leading steps shown.

    Returns
    -------
    matplotlib.figure.Figure
    """
    standard = _check_activity(standard, "standard")
    perturbed = _check_activity(perturbed, "perturbed")
    if standard.shape[1] != perturbed.shape[1]:
        raise ValueError(
            f"standard and perturbed must have the same number of neurons, got "
            f"{standard.shape[1]} and {perturbed.shape[1]}"
        )
    n_steps = check_int(n_steps, "n_steps", minimum=1)
    shown = np.concatenate([standard[:n_steps].ravel(), perturbed[:n_steps].ravel()])
    shown = shown[np.isfinite(shown)]
    vmin, vmax = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    fig = Figure(figsize=(14, 4), layout="constrained")
    axs = fig.subplots(1, 2, sharey=True)
    for ax, activity, name in zip(axs, (standard, perturbed), ("Standard", "Perturbed")):
        image = _draw_activity(ax, activity, n_steps, vmin=vmin, vmax=vmax)
        ax.set_title(f"{name} dynamics", fontsize=14)
    axs[1].set_ylabel("")
    fig.colorbar(image, ax=axs, label="Activity", shrink=0.9)
    return fig


def plot_true_vs_estimated(estimated, A, selected_neuron=None):
    """Estimated and true connectivity side by side, both in ``A``'s orientation.

    Parameters
    ----------
    estimated : array_like, shape (n, n) or (n,)
        The estimate with ``estimated[j, i]`` = source ``i`` onto target ``j`` (for the
        tutorial's ``R`` pass ``R.T``). With ``selected_neuron``, a vector of length ``n``:
        the effect of that source onto each target. NaN entries are drawn grey.
    A : array_like, shape (n, n)
        True connectivity, ``A[j, i]`` = source ``i`` onto target ``j``.
    selected_neuron : int, optional
        Compare ``estimated`` with column ``A[:, selected_neuron]``.

    Returns
    -------
    matplotlib.figure.Figure
        Each panel has its own symmetric colour scale: an estimate (a difference in
        means or a correlation) is not on ``A``'s scale.
    """
    A = check_connectivity(A, dense=True)
    n = A.shape[0]
    if selected_neuron is not None:
        selected_neuron = check_index(selected_neuron, "selected_neuron", n)
        estimated = _as_real_array(estimated, "estimated", "numeric vector")
        if estimated.shape != (n,):
            raise ValueError(
                f"estimated must be a vector of length {n} (one effect per target) when "
                f"selected_neuron is given, got shape {estimated.shape}"
            )
        estimated = _check_no_inf(estimated, "estimated")[:, None]
        true = A[:, [selected_neuron]]
        figsize = (7, 5)
    else:
        estimated = _check_matrix(estimated, "estimated")
        if estimated.shape != A.shape:
            raise ValueError(
                f"estimated must have A's shape {A.shape} (or pass selected_neuron for a "
                f"vector), got {estimated.shape}"
            )
        true = A
        figsize = (11, 5)
    fig = Figure(figsize=figsize, layout="constrained")
    axs = fig.subplots(1, 2)
    plot_connectivity_matrix(estimated, ax=axs[0], title="Estimated connectivity",
                             label="Estimated strength")
    plot_connectivity_matrix(true, ax=axs[1], title="True connectivity")
    if selected_neuron is not None:
        for ax in axs:
            ax.set_xticks([0])
            ax.set_xticklabels([str(selected_neuron)])
        fig.suptitle(f"Connectivity from neuron {selected_neuron}", fontsize=13)
    return fig


def plot_tutorial_summary(A, R_in_A_orientation):
    """The course's 2x2 "True vs estimated connectivity": graph and matrix of ``A`` and the estimate.

    Parameters
    ----------
    A : array_like, shape (n, n)
        True connectivity, ``A[j, i]`` = source ``i`` onto target ``j``.
    R_in_A_orientation : array_like, shape (n, n)
        The estimate in ``A``'s orientation (the tutorial's ``R.T``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    A = check_connectivity(A, dense=True)
    R = _check_matrix(R_in_A_orientation, "R_in_A_orientation")
    if R.shape != A.shape:
        raise ValueError(f"R_in_A_orientation must have A's shape {A.shape}, got {R.shape}")
    fig = Figure(figsize=(10, 10), layout="constrained")
    axs = fig.subplots(2, 2)
    plot_connectivity_graph(A, ax=axs[0, 0], title="True connectivity graph")
    plot_connectivity_matrix(A, ax=axs[0, 1], title="True connectivity matrix A")
    plot_connectivity_graph(R, ax=axs[1, 0], title="Estimated connectivity graph")
    plot_connectivity_matrix(R, ax=axs[1, 1], title="Estimated connectivity matrix R.T",
                             label="Estimated strength")
    fig.suptitle("True vs estimated connectivity", fontsize=15)
    return fig


# ----------------------------------------------------------------------------- run reports

MERGED_LABEL = "merged"
_MERGED_COLOUR = "k"
ZERO_COLOUR = "0.45"
_MAX_VIOLIN_VALUES = 5000  # violins and point clouds of more edges use a fixed random subset


def _optional_number(value, where: str):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where} must be a number or None, got {describe(value)}")
    value = float(value)
    return value if np.isfinite(value) else None


def _check_convergence(convergence_by_seed) -> dict:
    """``{label: (samples, score, mean_se)}`` arrays, validated; None/NaN become NaN."""
    name = "convergence_by_seed"
    if not isinstance(convergence_by_seed, Mapping):
        raise TypeError(
            f"{name} must be a mapping {{label: list of {{'samples', 'score', 'mean_se'}}}}, "
            f"got {describe(convergence_by_seed)}"
        )
    if not convergence_by_seed:
        raise ValueError(f"{name} must not be empty, got {{}}")
    curves = {}
    for label, points in convergence_by_seed.items():
        where = f"{name}[{label!r}]"
        if isinstance(points, (str, bytes, Mapping)) or not hasattr(points, "__iter__"):
            raise TypeError(f"{where} must be a list of dicts, got {describe(points)}")
        samples, scores, errors = [], [], []
        for k, point in enumerate(points):
            if not isinstance(point, Mapping) or "samples" not in point:
                raise TypeError(
                    f"{where}[{k}] must be a dict with 'samples', 'score' and 'mean_se', "
                    f"got {describe(point)}"
                )
            count = point["samples"]
            if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)) or count < 1:
                raise ValueError(f"{where}[{k}]['samples'] must be an integer >= 1, got {describe(count)}")
            samples.append(int(count))
            score_value = _optional_number(point.get("score"), f"{where}[{k}]['score']")
            error = _optional_number(point.get("mean_se"), f"{where}[{k}]['mean_se']")
            scores.append(np.nan if score_value is None else score_value)
            errors.append(np.nan if error is None else error)
        order = np.argsort(samples, kind="stable")
        curves[str(label)] = tuple(np.asarray(values, dtype=np.float64)[order]
                                   for values in (samples, scores, errors))
    return curves


def _curve_style(label: str, index: int) -> dict:
    if label == MERGED_LABEL:
        return dict(color=_MERGED_COLOUR, lw=2.2, marker="o", ms=4, zorder=4)
    colour = colormaps["tab10"](index % 10)
    return dict(color=colour, lw=1.2, marker="o", ms=3, alpha=0.85, zorder=3)


def plot_convergence(convergence_by_seed, title="Convergence"):
    """How the estimate converges: ``1 - score`` and the mean standard error against samples.

    Parameters
    ----------
    convergence_by_seed : mapping
        ``{label: [{"samples": int, "score": float or None, "mean_se": float or None}, ...]}``,
        e.g. ``{"seed 0": result.per_seed[0].convergence, "merged": result.convergence}``
        (the ``convergence`` lists that :func:`streamcausal.run` records at doubling sample
        counts). The label ``"merged"`` is drawn as a thick black line over the others.
        ``None``/NaN values are left out (a score is None when A is unknown).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Both panels have logarithmic axes. Left: ``1 - score`` (the score is the
        correlation of the estimate with the true ``A``; 0 is perfect), drawn only when
        some score is known. Right: the mean per-edge standard error of the ``effect``,
        with a dashed ``1/sqrt(samples)`` reference line.
    """
    curves = _check_convergence(convergence_by_seed)
    _check_title(title)
    has_score = any(np.isfinite(score).any() for _, score, _ in curves.values())
    fig = Figure(figsize=(11 if has_score else 6, 4.5), layout="constrained")
    axs = fig.subplots(1, 2 if has_score else 1, squeeze=False)[0]
    score_ax = axs[0] if has_score else None
    se_ax = axs[-1]
    # Seeds first, merged last (on top), each label once in the legend.
    labels = sorted(curves, key=lambda label: label == MERGED_LABEL)
    for index, label in enumerate(labels):
        samples, score, mean_se = curves[label]
        style = _curve_style(label, index)
        if score_ax is not None:
            keep = np.isfinite(score) & (score < 1)
            score_ax.plot(samples[keep], 1 - score[keep], label=label, **style)
        keep = np.isfinite(mean_se) & (mean_se > 0)
        se_ax.plot(samples[keep], mean_se[keep], label=label, **style)

    # Reference slope -1/2, a little below the last point of the merged (else the longest)
    # curve so that it does not hide the curve it guides.
    reference = curves.get(MERGED_LABEL) or max(curves.values(), key=lambda c: c[0].max())
    samples, _, mean_se = reference
    keep = np.isfinite(mean_se) & (mean_se > 0)
    if keep.sum() >= 1:
        all_samples = np.concatenate([c[0] for c in curves.values()])
        xs = np.array([all_samples.min(), all_samples.max()])
        anchor_x, anchor_y = samples[keep][-1], mean_se[keep][-1]
        if xs[0] < xs[1]:
            se_ax.plot(xs, 0.7 * anchor_y * np.sqrt(anchor_x / xs), ls="--", color="0.5", lw=1,
                       label=r"$\propto 1/\sqrt{\mathrm{samples}}$", zorder=2)

    for ax in axs:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Samples (stimulation-outcome pairs)", fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
        ax.grid(True, which="minor", alpha=0.1)
    if score_ax is not None:
        score_ax.set_ylabel("1 − score  (0 = perfect)", fontsize=11)
        score_ax.set_title("Score: correlation of the estimate with A", fontsize=12)
    se_ax.set_ylabel("Mean standard error of effect", fontsize=11)
    se_ax.set_title("Mean per-edge standard error", fontsize=12)
    for ax in axs:
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=8, ncols=2 if len(handles) > 8 else 1, loc="best")
    if title is not None:
        fig.suptitle(title, fontsize=14)
    return fig


def _check_estimates(estimate, shape) -> dict:
    """``{label: (n, n) float array}`` from one matrix or a mapping of them."""
    if isinstance(estimate, Mapping):
        if not estimate:
            raise ValueError("estimate must not be an empty mapping")
        items = [(str(label), value, f"estimate[{label!r}]") for label, value in estimate.items()]
    else:
        items = [("Estimate", estimate, "estimate")]
    checked = {}
    for label, value, name in items:
        array = _check_matrix(value, name)
        if array.shape != shape:
            raise ValueError(f"{name} must have A's shape {shape}, got {array.shape}")
        checked[label] = array
    return checked


def _edge_groups(A):
    """(label, mask, colour) for the edges with A < 0, A = 0 and A > 0 (empty groups left out)."""
    groups = [("A < 0", A < 0, NEGATIVE_COLOUR), ("A = 0", A == 0, ZERO_COLOUR),
              ("A > 0", A > 0, POSITIVE_COLOUR)]
    return [(label, mask, colour) for label, mask, colour in groups if mask.any()]


def plot_edge_distributions(estimate, A, title="Estimates on absent and present edges"):
    """Distribution of the estimate over edges where ``A`` is zero vs nonzero (violins and points).

    Parameters
    ----------
    estimate : array_like, shape (n, n), or mapping of label -> array_like
        Estimate(s) in ``A``'s orientation (``[target, source]``), one panel each, e.g.
        ``{"correlation": result.correlation, "effect": result.effect}``. NaN entries
        (undefined edges) are left out and counted in the axis label.
    A : array_like, shape (n, n)
        True connectivity, ``A[j, i]`` = source ``i`` onto target ``j``.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One panel per estimate; edges are grouped into ``A < 0``, ``A = 0`` and
        ``A > 0`` (empty groups left out), each drawn as a violin (when it has at
        least two distinct values) with its edges as jittered points. A good estimate
        separates the groups. More than 5000 edges in a group are drawn as a fixed
        random subset of 5000.
    """
    A = check_connectivity(A, dense=True)
    estimates = _check_estimates(estimate, A.shape)
    _check_title(title)
    fig = Figure(figsize=(4.2 * len(estimates) + 1.0, 4.8), layout="constrained")
    axs = fig.subplots(1, len(estimates), squeeze=False)[0]
    groups = _edge_groups(A)
    rng = np.random.default_rng(0)  # fixed jitter and subsets: the figure is reproducible
    for ax, (label, values) in zip(axs, estimates.items()):
        ticks = []
        for position, (group, mask, colour) in enumerate(groups):
            shown = values[mask]
            undefined = int(np.isnan(shown).sum())
            shown = shown[np.isfinite(shown)]
            if shown.size > _MAX_VIOLIN_VALUES:
                shown = rng.choice(shown, _MAX_VIOLIN_VALUES, replace=False)
            if shown.size >= 2 and np.ptp(shown) > 0:
                parts = ax.violinplot(shown, positions=[position], widths=0.8,
                                      showextrema=False)
                for body in parts["bodies"]:
                    body.set_facecolor(colour)
                    body.set_edgecolor(colour)
                    body.set_alpha(0.25)
            jitter = rng.uniform(-0.12, 0.12, size=shown.size)
            ax.scatter(position + jitter, shown, s=14 if shown.size < 500 else 3, color=colour,
                       alpha=0.8 if shown.size < 500 else 0.3, zorder=3, linewidths=0)
            if shown.size:
                ax.hlines(np.median(shown), position - 0.3, position + 0.3, color=colour, lw=2,
                          zorder=4)
            count = int(mask.sum())
            tick = f"{group}\n{count} edge{'s' if count != 1 else ''}"
            if undefined:
                tick += f"\n({undefined} undefined)"
            ticks.append(tick)
        ax.axhline(0.0, color="0.6", lw=0.8, zorder=1)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(ticks, fontsize=10)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel(label if label == "Estimate" else f"Estimated {label}", fontsize=11)
        ax.set_title(label, fontsize=12)
        ax.grid(True, axis="y", alpha=0.3)
    if title is not None:
        fig.suptitle(title, fontsize=14)
    return fig


def plot_estimated_graph(estimate, stderr=None, A=None, n_se=3.0, title=None):
    """Graph of an estimate beside the true graph, hiding edges not distinguishable from zero.

    Parameters
    ----------
    estimate : array_like, shape (n, n)
        Estimate in ``A``'s orientation (``[target, source]``); NaN edges are not drawn.
    stderr : array_like, shape (n, n), optional
        Standard errors of ``estimate``. When given, an edge is drawn only where
        ``|estimate| > n_se * stderr``.
    A : array_like, shape (n, n), optional
        True connectivity, drawn in a first panel when given.
    n_se : float
        How many standard errors an edge must clear to be drawn (``>= 0``).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    estimate = _check_matrix(estimate, "estimate", square=True)
    if A is not None:
        A = check_connectivity(A, dense=True)
        if A.shape != estimate.shape:
            raise ValueError(f"estimate must have A's shape {A.shape}, got {estimate.shape}")
    n_se = check_real(n_se, "n_se")
    if n_se < 0:
        raise ValueError(f"n_se must be >= 0, got {n_se!r}")
    _check_title(title)
    shown = np.where(np.isfinite(estimate), estimate, 0.0)
    subtitle = "Estimated connectivity graph"
    if stderr is not None:
        stderr = _check_matrix(stderr, "stderr")
        if stderr.shape != estimate.shape:
            raise ValueError(f"stderr must have estimate's shape {estimate.shape}, got {stderr.shape}")
        significant = np.abs(shown) > n_se * np.where(np.isfinite(stderr), stderr, np.inf)
        shown = np.where(significant, shown, 0.0)
        kept = int(np.count_nonzero(shown))
        subtitle += f"\n{kept} edge{'s' if kept != 1 else ''} with |estimate| > {n_se:g} SE"
    panels = 2 if A is not None else 1
    fig = Figure(figsize=(5.2 * panels, 6.2), layout="constrained")
    axs = fig.subplots(1, panels, squeeze=False)[0]
    if A is not None:
        edges = int(np.count_nonzero(A))
        plot_connectivity_graph(A, ax=axs[0], title=f"True connectivity graph\n{edges} edges")
    plot_connectivity_graph(shown, ax=axs[-1], title=subtitle)
    if title is not None:
        fig.suptitle(title, fontsize=14)
    return fig


# ----------------------------------------------------------------------------- trial reports

SIGNIFICANT_MARK = "k"  # outline of significant cells, and the BH threshold
_DIAGONAL_COLOUR = "0.55"  # hatching of the diagonal: a target's own response, not an edge
_WINDOW_COLOUR = "#f4a259"  # response window shading (orange)
_BASELINE_COLOUR = "0.6"  # baseline shading (grey)
_TARGETED_COLOUR = "#1f5fa8"
_CONTROL_COLOUR = "0.45"
_MAX_LABELLED = 40  # more targets than this: no id per tick
_MAX_OUTLINED = 40  # larger matrices: significant cells are not outlined (only the others faded)
_FADE = 0.3  # share of its colour a cell that is not significant keeps


def _check_ids(ids, size: int, name: str):
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
        raise TypeError(f"{name} must be a sequence of {size} ids or None, got {describe(ids)}")
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != size:
        raise ValueError(f"{name} must have one id per entry ({size}), got shape {ids.shape}")
    return ids


def _check_mask(value, name: str, shape) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value)
    if array.dtype != bool:
        raise TypeError(f"{name} must be a boolean array, got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return array


def _id_ticks(axis, ids, count: int) -> None:
    """Ticks at the cells, labelled with their ids (every cell up to 20, else an integer locator)."""
    from matplotlib.ticker import FuncFormatter

    _integer_ticks(axis, count)
    if ids is not None:
        labels = [str(v) for v in ids]
        axis.set_major_formatter(FuncFormatter(
            lambda value, _pos: labels[int(round(value))] if 0 <= round(value) < count else ""))


def plot_influence_matrix(effect, significant=None, *, source_ids=None, responder_ids=None, exclude_diagonal=True,
                          ax=None, title=None, label="Effect", significant_label="significant"):
    """Heatmap of trial estimates ``effect[j, i]`` (source ``i`` onto responder ``j``), significant edges outlined.

    Parameters
    ----------
    effect : array_like, shape (n_responders, n_sources)
        ``[responder, source]`` estimates; NaN (undefined) cells are drawn dark grey.
    significant : bool array_like of effect's shape, optional
        The significant edges (e.g. ``result.significant(alpha)``): the other cells are
        faded toward white, and up to 40 x 40 cells the significant ones are outlined.
    source_ids, responder_ids : sequence, optional
        Tick labels (ROI or unit ids) for the columns and rows.
    exclude_diagonal : bool
        For a square ``effect`` whose sources are the responders: draw the diagonal (each
        target's response to its own stimulation, not a connection) light grey and leave
        it out of the colour scale, so that the edges are not washed out.
    ax : matplotlib Axes, optional
    title : str, optional
    label : str
        Colourbar label.
    significant_label : str
        Legend entry of the outlined cells.

    Returns
    -------
    matplotlib.figure.Figure
        Colour scale ``coolwarm``, symmetric about 0 to the largest shown ``|effect|``.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import Normalize, to_rgba
    from matplotlib.patches import Rectangle

    effect = _check_matrix(effect, "effect")
    significant = _check_mask(significant, "significant", effect.shape)
    source_ids = _check_ids(source_ids, effect.shape[1], "source_ids")
    responder_ids = _check_ids(responder_ids, effect.shape[0], "responder_ids")
    exclude_diagonal = bool(exclude_diagonal) and effect.shape[0] == effect.shape[1]
    _check_ax(ax)
    _check_title(title)
    _check_title(label, "label")
    _check_title(significant_label, "significant_label")
    n_rows, n_cols = effect.shape
    own_figure = ax is None
    fig, ax = _new_axes(ax, (6.4, 5.6) if max(effect.shape) <= 40 else (7.5, 6.8))
    diagonal = np.zeros(effect.shape, dtype=bool)
    if exclude_diagonal:
        np.fill_diagonal(diagonal, True)
    lim = _symmetric_limit(np.where(diagonal, np.nan, effect))
    norm = Normalize(-lim, lim)
    cmap = colormaps["coolwarm"]
    colours = cmap(norm(np.where(np.isfinite(effect), effect, 0.0)))
    faded = np.zeros(effect.shape, dtype=bool)
    if significant is not None:  # the edges not significant fade toward white: the significant ones stand out
        faded = ~significant & ~diagonal & np.isfinite(effect)
        colours[faded, :3] = 1.0 - _FADE * (1.0 - colours[faded, :3])
    colours[~np.isfinite(effect)] = to_rgba(NAN_COLOUR)
    colours[diagonal] = to_rgba("white")
    ax.imshow(colours, interpolation="nearest", aspect="equal" if max(effect.shape) <= 3 * min(effect.shape) else "auto")
    if exclude_diagonal:  # hatched: plainly not a value on the colour scale
        ax.add_collection(PatchCollection(
            [Rectangle((k - 0.5, k - 0.5), 1, 1) for k in range(n_rows)], facecolor="white",
            edgecolor=_DIAGONAL_COLOUR, hatch="////", linewidth=0, zorder=2, gid="diagonal"))
    ax.set_xlabel("Source (stimulated)", fontsize=12)
    ax.set_ylabel("Responder", fontsize=12)
    _id_ticks(ax.xaxis, source_ids, n_cols)
    _id_ticks(ax.yaxis, responder_ids, n_rows)
    if n_cols > 12:
        ax.tick_params(axis="x", labelrotation=90)
    ax.tick_params(labelsize=9 if max(effect.shape) <= 20 else 8)
    colourbar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, shrink=0.85)
    colourbar.set_label(label or "", fontsize=11)
    handles = []
    if significant is not None:
        marked = np.argwhere(significant & ~diagonal)
        swatch = dict(facecolor=cmap(0.85), edgecolor="none")
        if max(effect.shape) <= _MAX_OUTLINED:  # cells big enough to outline as well
            size = 0.86
            boxes = [Rectangle((i - size / 2, j - size / 2), size, size) for j, i in marked]
            ax.add_collection(PatchCollection(boxes, facecolor="none", edgecolor=SIGNIFICANT_MARK,
                                              linewidth=1.4 if max(effect.shape) <= 25 else 0.9, zorder=3,
                                              gid="significant"))
            swatch = dict(facecolor=cmap(0.85), edgecolor=SIGNIFICANT_MARK, linewidth=1.2)
        handles.append(Rectangle((0, 0), 1, 1, **swatch, label=f"{significant_label} ({len(marked)})"))
        faded_colour = 1.0 - _FADE * (1.0 - np.asarray(cmap(0.85)[:3]))
        handles.append(Rectangle((0, 0), 1, 1, facecolor=faded_colour, edgecolor="none",
                                 label=f"not significant, faded ({int(faded.sum())})"))
    if exclude_diagonal:
        handles.append(Rectangle((0, 0), 1, 1, facecolor="white", edgecolor=_DIAGONAL_COLOUR, hatch="////",
                                 linewidth=0, label="own stimulation (not an edge)"))
    if np.isnan(effect[~diagonal]).any():
        handles.append(Line2D([], [], marker="s", ls="", color=NAN_COLOUR, ms=9, label="undefined"))
    if handles:
        style = dict(handles=handles, ncols=2, fontsize=9, frameon=False, handletextpad=0.4, columnspacing=1.5)
        if own_figure:  # below the axes, outside (constrained layout makes room)
            fig.legend(loc="outside lower center", **style)
        else:
            ax.legend(loc="best", **style)
    if title is not None:
        ax.set_title(title)
    return fig


def plot_volcano(effect, pvalue, significant=None, *, exclude_diagonal=True, ax=None, title=None,
                 significant_label="significant"):
    """Volcano plot: each edge's effect against ``-log10`` of its p-value, significant edges coloured.

    Parameters
    ----------
    effect, pvalue : array_like of one shape
        Estimates and their p-values (e.g. ``result.effect``, ``result.pvalue``);
        entries with a NaN in either are left out (and counted in the x label).
    significant : bool array_like of effect's shape, optional
        Edges drawn in colour (red positive, blue negative); the others grey. The
        dashed line is the largest p-value among them (the Benjamini–Hochberg cut).
    exclude_diagonal : bool
        For square matrices: leave out the diagonal (each target's own response).
    ax : matplotlib Axes, optional
    title : str, optional
    significant_label : str
        Legend text of the coloured edges.

    Returns
    -------
    matplotlib.figure.Figure
        p-values that underflow to 0 are drawn as triangles at the top of the axis.
    """
    effect = _check_matrix(effect, "effect") if np.ndim(effect) == 2 else _check_no_inf(
        _as_real_array(effect, "effect", "numeric array"), "effect")
    pvalue = _as_real_array(pvalue, "pvalue", "numeric array")
    if pvalue.shape != effect.shape:
        raise ValueError(f"pvalue must have effect's shape {effect.shape}, got {pvalue.shape}")
    finite_p = pvalue[np.isfinite(pvalue)]
    if np.isinf(pvalue).any() or (finite_p.size and (finite_p.min() < 0 or finite_p.max() > 1)):
        raise ValueError("pvalue must hold p-values in [0, 1] (or NaN)")
    significant = _check_mask(significant, "significant", effect.shape)
    if effect.size == 0:
        raise ValueError(f"effect must not be empty, got shape {effect.shape}")
    _check_ax(ax)
    _check_title(title)
    _check_title(significant_label, "significant_label")
    shown = np.ones(effect.shape, dtype=bool)
    if exclude_diagonal and effect.ndim == 2 and effect.shape[0] == effect.shape[1]:
        np.fill_diagonal(shown, False)
    defined = shown & np.isfinite(effect) & np.isfinite(pvalue)
    hit = defined & (significant if significant is not None else False)
    fig, ax = _new_axes(ax, (6.4, 5.0))
    with np.errstate(divide="ignore"):
        height = -np.log10(pvalue)
    finite_height = height[defined & np.isfinite(height)]
    top = max(float(finite_height.max()) if finite_height.size else 1.0, 1.0) * 1.08
    floor = defined & ~np.isfinite(height)  # p underflowed to 0
    height = np.where(floor, top, height)
    rest = defined & ~hit
    ax.scatter(effect[rest & ~floor], height[rest & ~floor], s=10, color="0.6", alpha=0.6, linewidths=0,
               label=f"not significant ({int(rest.sum())})", zorder=2, rasterized=rest.sum() > 2000)
    for sign, colour, word in ((1, POSITIVE_COLOUR, "positive"), (-1, NEGATIVE_COLOUR, "negative")):
        group = hit & (np.sign(effect) == sign)
        if group.any():
            ax.scatter(effect[group & ~floor], height[group & ~floor], s=22, color=colour, alpha=0.9,
                       edgecolors="white", linewidths=0.4, zorder=3,
                       label=f"{significant_label}, {word} ({int(group.sum())})")
    if floor.any():
        ax.scatter(effect[floor], height[floor], marker="^", s=30,
                   color=np.where(hit[floor][:, None], "k", "0.6").ravel().tolist(), zorder=4,
                   label=f"p below float precision ({int(floor.sum())})")
    if hit.any():
        cut = -np.log10(max(float(pvalue[hit].max()), np.finfo(float).tiny))
        ax.axhline(cut, color=SIGNIFICANT_MARK, ls="--", lw=0.9, zorder=1,
                   label=f"Benjamini–Hochberg cut (p ≤ {float(pvalue[hit].max()):.2g})")
    ax.axvline(0.0, color="0.75", lw=0.8, zorder=1)
    undefined = int((shown & ~defined).sum())
    ax.set_xlabel("Effect" + (f"   ({undefined} undefined edges not shown)" if undefined else ""), fontsize=11)
    ax.set_ylabel(r"$-\log_{10}$ p-value", fontsize=11)
    ax.set_ylim(0, top * 1.04)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8, loc="upper center", frameon=True, framealpha=0.85)  # a volcano is empty there
    if title is not None:
        ax.set_title(title)
    return fig


def plot_peristimulus(offsets, mean, *, stderr=None, control_mean=None, control_stderr=None, labels=None,
                      window=None, baseline=None, ncols=4, title=None, ylabel="Activity"):
    """Mean traces around stimulation onsets, one panel per edge, the response window and baseline shaded.

    Parameters
    ----------
    offsets : array_like, shape (n_offsets,)
        Seconds from the onset, increasing.
    mean : array_like, shape (n_panels, n_offsets)
        Mean trace per panel (e.g. responder ``j`` on the trials that target source
        ``i``: :func:`streamcausal.io.peristimulus.peristimulus`). NaN offsets are gaps.
    stderr : array_like of mean's shape, optional
        Standard errors, drawn as a band of ±1 SE.
    control_mean, control_stderr : array_like of mean's shape, optional
        The control trace (trials that target neither), drawn grey and dashed.
    labels : sequence of str, optional
        Panel titles.
    window, baseline : (float, float), optional
        Shaded intervals (seconds from the onset): response window orange, baseline grey.
    ncols : int
        Panels per row (at most).
    title : str, optional
    ylabel : str

    Returns
    -------
    matplotlib.figure.Figure
        A dotted vertical line marks the onset.
    """
    offsets = _check_no_inf(_as_real_array(offsets, "offsets", "1-D numeric array"), "offsets")
    if offsets.ndim != 1 or offsets.size < 2 or np.isnan(offsets).any() or np.any(np.diff(offsets) <= 0):
        raise ValueError(f"offsets must be a 1-D increasing array of at least 2 seconds, got {describe(offsets)}")
    mean = _check_matrix(mean, "mean")
    if mean.shape[1] != offsets.size:
        raise ValueError(f"mean must have one column per offset ({offsets.size}), got shape {mean.shape}")
    optional = {}
    for name, value in (("stderr", stderr), ("control_mean", control_mean), ("control_stderr", control_stderr)):
        if value is not None:
            value = _check_matrix(value, name)
            if value.shape != mean.shape:
                raise ValueError(f"{name} must have mean's shape {mean.shape}, got {value.shape}")
        optional[name] = value
    n_panels = mean.shape[0]
    if labels is not None:
        if isinstance(labels, str) or not hasattr(labels, "__len__") or len(labels) != n_panels:
            raise ValueError(f"labels must be a sequence of {n_panels} strings (one per panel), got {describe(labels)}")
        labels = [str(label) for label in labels]
    window = check_interval(window, "window", optional=True)
    baseline = check_interval(baseline, "baseline", optional=True)
    ncols = check_int(ncols, "ncols", minimum=1)
    _check_title(title)
    _check_title(ylabel, "ylabel")
    ncols = min(ncols, n_panels)
    nrows = -(-n_panels // ncols)
    fig = Figure(figsize=(3.3 * ncols + 0.6, 2.6 * nrows + 0.9), layout="constrained")
    axs = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    handles = {}
    for k, ax in enumerate(axs.ravel()):
        if k >= n_panels:
            ax.axis("off")
            continue
        if baseline is not None:
            handles["baseline"] = ax.axvspan(*baseline, color=_BASELINE_COLOUR, alpha=0.18, lw=0, label="baseline")
        if window is not None:
            handles["window"] = ax.axvspan(*window, color=_WINDOW_COLOUR, alpha=0.25, lw=0, label="response window")
        ax.axvline(0.0, color="k", ls=":", lw=0.9)
        for prefix, colour, style, name in (("control_", _CONTROL_COLOUR, "--", "control: neither targeted"),
                                            ("", _TARGETED_COLOUR, "-", "source targeted")):
            trace = mean if prefix == "" else optional["control_mean"]
            if trace is None:
                continue
            (line,) = ax.plot(offsets, trace[k], color=colour, ls=style, lw=1.6 if prefix == "" else 1.2,
                              label=name, zorder=3)
            handles[name] = line
            band = optional[prefix + "stderr"]
            if band is not None:
                ax.fill_between(offsets, trace[k] - band[k], trace[k] + band[k], color=colour, alpha=0.2, lw=0,
                                zorder=2)
        if labels is not None:
            ax.set_title(labels[k], fontsize=9.5)
        ax.grid(True, alpha=0.25)
        ax.tick_params(labelsize=8)
        if k % ncols == 0:
            ax.set_ylabel(ylabel, fontsize=10)
        if k >= n_panels - ncols:
            ax.set_xlabel("Time from onset (s)", fontsize=10)
            ax.tick_params(labelbottom=True)
    order = [name for name in ("source targeted", "control: neither targeted", "window", "baseline") if name in handles]
    fig.legend([handles[name] for name in order], [handles[name].get_label() for name in order],
               loc="outside lower center", ncols=len(order), fontsize=9, frameon=False)
    if title is not None:
        fig.suptitle(title, fontsize=13)
    return fig


def plot_self_response(response, stderr=None, *, ids=None, order="value", ax=None, title=None, label="Self-response",
                       z=1.96):
    """Each target's response to its own stimulation, with a ``±z`` standard-error bar, and their median.

    Parameters
    ----------
    response : array_like, shape (n,)
        Per target (e.g. ``np.diag(result.effect)``); NaN entries (never targeted) are
        left out and counted in the x label.
    stderr : array_like, shape (n,), optional
        Standard errors; targets whose interval excludes 0 are filled, the others hollow.
    ids : sequence, optional
        Target ids for the ticks (shown up to 40 targets).
    order : {"value", "index"}
        Targets sorted by response (largest first) or kept in their order.
    ax : matplotlib Axes, optional
    title : str, optional
    label : str
        y-axis label.
    z : float
        Half-width of the bars in standard errors (1.96: 95 % intervals).

    Returns
    -------
    matplotlib.figure.Figure
    """
    response = _check_no_inf(_as_real_array(response, "response", "1-D numeric array"), "response")
    if response.ndim != 1 or response.size == 0:
        raise ValueError(f"response must be a non-empty 1-D array (one value per target), got shape {response.shape}")
    if stderr is not None:
        stderr = _check_no_inf(_as_real_array(stderr, "stderr", "1-D numeric array"), "stderr")
        if stderr.shape != response.shape:
            raise ValueError(f"stderr must have response's shape {response.shape}, got {stderr.shape}")
    ids = _check_ids(ids, response.size, "ids")
    if order not in ("value", "index"):
        raise ValueError(f"order must be 'value' or 'index', got {describe(order)}")
    z = check_real(z, "z")
    if z <= 0:
        raise ValueError(f"z must be > 0, got {z!r}")
    _check_ax(ax)
    _check_title(title)
    _check_title(label, "label")
    defined = np.flatnonzero(np.isfinite(response))
    if order == "value":
        defined = defined[np.argsort(-response[defined], kind="stable")]
    count = defined.size
    own_figure = ax is None
    fig, ax = _new_axes(ax, (max(6.4, min(12.0, 2.5 + 0.22 * count)), 4.8))
    x = np.arange(count)
    values = response[defined]
    errors = stderr[defined] if stderr is not None else None
    if errors is not None:
        half = z * np.where(np.isfinite(errors), errors, 0.0)
        clear = np.isfinite(errors) & ((values - half > 0) | (values + half < 0))
        ax.errorbar(x, values, yerr=half, fmt="none", ecolor="0.35", elinewidth=1.0, capsize=2 if count <= 60 else 0,
                    zorder=2)
    else:
        clear = np.ones(count, dtype=bool)
    colours = np.where(values >= 0, POSITIVE_COLOUR, NEGATIVE_COLOUR)
    size = 34 if count <= 60 else 14
    ax.scatter(x[clear], values[clear], s=size, c=colours[clear], zorder=3,
               label=f"interval excludes 0 ({int(clear.sum())})" if errors is not None else None)
    if (~clear).any():
        ax.scatter(x[~clear], values[~clear], s=size, facecolors="white", edgecolors=colours[~clear], linewidths=1.2,
                   zorder=3, label=f"interval includes 0 ({int((~clear).sum())})")
    ax.axhline(0.0, color="0.6", lw=0.8, zorder=1)
    if count:
        median = float(np.median(values))
        ax.axhline(median, color="k", ls="--", lw=1.0, zorder=1, label=f"median {median:.3g}")
    missing = response.size - count
    what = "Target" + (", by self-response" if order == "value" else "")
    if missing:
        what += f"   ({missing} never targeted, not shown)"
    ax.set_xlabel(what, fontsize=11)
    ax.set_ylabel(label + (f"  (±{z:g} SE)" if errors is not None else ""), fontsize=11)
    if count <= _MAX_LABELLED:
        ax.set_xticks(x)
        ax.set_xticklabels([str(ids[k]) if ids is not None else str(k) for k in defined],
                           rotation=90 if count > 12 else 0, fontsize=8 if count > 20 else 9)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(what.replace("Target", "Target rank"), fontsize=11)
    ax.set_xlim(-0.7, max(count - 0.3, 0.7))
    ax.grid(True, axis="y", alpha=0.25)
    handles, _ = ax.get_legend_handles_labels()
    if handles and own_figure:  # below the axes: the points span the whole width
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    elif handles:
        ax.legend(fontsize=8.5, loc="best", framealpha=0.85)
    if title is not None:
        ax.set_title(title)
    return fig


def plot_source_errors(mean_se, target_se=None, *, ids=None, ax=None, title="Which sources still need samples"):
    """Each source's mean standard error (over its edges) as a bar, against an optional target.

    Parameters
    ----------
    mean_se : array_like, shape (n_sources,)
        Per source (a column of ``stderr``, ``[target, source]``, averaged); NaN (not
        estimable yet) is drawn as a grey mark at the top.
    target_se : float, optional
        Drawn as a dashed line; sources above it (still needing samples) are red, the
        others blue.
    ids : sequence, optional
        Source ids for the ticks (shown up to 40 sources).
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    mean_se = _check_no_inf(_as_real_array(mean_se, "mean_se", "1-D numeric array"), "mean_se")
    if mean_se.ndim != 1 or mean_se.size == 0:
        raise ValueError(f"mean_se must be a non-empty 1-D array (one value per source), got shape {mean_se.shape}")
    if target_se is not None:
        target_se = check_real(target_se, "target_se")
        if target_se <= 0:
            raise ValueError(f"target_se must be > 0, got {target_se!r}")
    ids = _check_ids(ids, mean_se.size, "ids")
    _check_ax(ax)
    _check_title(title)
    count = mean_se.size
    fig, ax = _new_axes(ax, (max(6.4, min(12.0, 2.5 + 0.18 * count)), 4.2))
    x = np.arange(count)
    defined = np.isfinite(mean_se)
    values = np.where(defined, mean_se, 0.0)
    above = defined & (values > target_se) if target_se is not None else np.zeros(count, dtype=bool)
    colours = np.where(above, POSITIVE_COLOUR, NEGATIVE_COLOUR)
    ax.bar(x[defined], values[defined], color=colours[defined], width=0.8 if count <= 200 else 1.0, zorder=2)
    top = float(values[defined].max()) if defined.any() else (target_se or 1.0)
    if target_se is not None:
        top = max(top, target_se)
        ax.axhline(target_se, color="k", ls="--", lw=1.0, zorder=3,
                   label=f"target {target_se:g}: {int(above.sum())} above, {int((defined & ~above).sum())} reached")
    if (~defined).any():
        ax.scatter(x[~defined], np.full(int((~defined).sum()), top), marker="v", color=NAN_COLOUR, zorder=3,
                   label=f"not estimable yet ({int((~defined).sum())})")
    ax.set_ylim(0, top * 1.1)
    ax.set_xlabel("Source", fontsize=11)
    ax.set_ylabel("Mean SE of its edges", fontsize=11)
    if count <= _MAX_LABELLED:
        ax.set_xticks(x)
        ax.set_xticklabels([str(ids[k]) if ids is not None else str(k) for k in range(count)],
                           rotation=90 if count > 12 else 0, fontsize=8 if count > 20 else 9)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.7, count - 0.3)
    ax.grid(True, axis="y", alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8.5, loc="best", framealpha=0.85)
    if title is not None:
        ax.set_title(title)
    return fig
