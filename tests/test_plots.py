"""Figures: they render headless, carry the right labels, scales and arrow directions."""

import matplotlib.colors
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from streamcausal import plots


@pytest.fixture(autouse=True)
def no_pyplot_leak():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a plot function left a pyplot figure open"


def _save(fig, tmp_path, name="fig.png"):
    assert isinstance(fig, Figure)
    path = tmp_path / name
    fig.savefig(path, dpi=50)
    assert path.stat().st_size > 0
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 10 and image.shape[1] > 10
    return image


def _arrows(ax):
    return [p for p in ax.patches if isinstance(p, FancyArrowPatch)]


def _heatmap(ax):
    (image,) = ax.get_images()
    return image


def _node_xy(n, k):
    theta = 2 * np.pi * k / n
    return np.array([np.cos(theta), np.sin(theta)])


A3 = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # source 0 -> target 2


def test_graph_arrow_points_from_source_to_target(tmp_path):
    fig = plots.plot_connectivity_graph(A3, title="one edge")
    ax = fig.axes[0]
    assert ax.get_title() == "one edge"
    (arrow,) = _arrows(ax)
    assert arrow.get_gid() == "edge 0->2"
    source, target = _node_xy(3, 0), _node_xy(3, 2)
    fig.canvas.draw()
    path = arrow.get_path()  # data coordinates
    vertices = path.vertices[path.codes != path.CLOSEPOLY]
    to_target = np.linalg.norm(vertices - target, axis=1)
    to_source = np.linalg.norm(vertices - source, axis=1)
    # The head (tip and both barbs) sits at the target; only the tail is near the source.
    assert (to_target < 0.3).sum() >= 3
    assert (to_source < 0.3).sum() == 1
    tip = vertices[np.argmin(to_target)]
    assert np.linalg.norm(tip - target) < 0.2 < np.linalg.norm(tip - source)
    _save(fig, tmp_path)


def test_graph_weights_colours_and_self_loops(tmp_path):
    A = np.array([[0.5, 0.0, -1.0], [0.25, 0.0, 0.0], [0.0, 0.0, 0.0]])
    fig = plots.plot_connectivity_graph(A)
    arrows = {a.get_gid(): a for a in _arrows(fig.axes[0])}
    assert set(arrows) == {"edge 0->0", "edge 2->0", "edge 0->1"}
    assert arrows["edge 2->0"].get_alpha() == pytest.approx(1.0)
    assert arrows["edge 0->1"].get_alpha() == pytest.approx(0.25)
    assert arrows["edge 2->0"].get_linewidth() > arrows["edge 0->1"].get_linewidth()
    negative = arrows["edge 2->0"].get_edgecolor()[:3]
    positive = arrows["edge 0->1"].get_edgecolor()[:3]
    assert not np.allclose(negative, positive)
    assert fig.axes[0].get_legend() is not None  # explains the two colours
    _save(fig, tmp_path)


def test_graph_all_zero_and_nan(tmp_path):
    with np.errstate(all="raise"):
        fig = plots.plot_connectivity_graph(np.zeros((4, 4)))
    assert _arrows(fig.axes[0]) == []
    _save(fig, tmp_path, "zero.png")
    with_nan = A3.copy()
    with_nan[0, 1] = np.nan
    fig = plots.plot_connectivity_graph(with_nan)
    assert [a.get_gid() for a in _arrows(fig.axes[0])] == ["edge 0->2"]


def test_graph_threshold():
    A = np.array([[0.0, 0.05], [1.0, 0.0]])
    fig = plots.plot_connectivity_graph(A, threshold=0.1)
    assert [a.get_gid() for a in _arrows(fig.axes[0])] == ["edge 0->1"]


def test_graph_draws_on_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert plots.plot_connectivity_graph(A3, ax=ax) is fig
    assert len(_arrows(ax)) == 1


def test_matrix_labels_and_symmetric_scale(tmp_path):
    A = np.array([[0.0, -0.3], [0.7, 0.1]])
    fig = plots.plot_connectivity_matrix(A, title="A", label="weight")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Connectivity from"
    assert ax.get_ylabel() == "Connectivity to"
    assert ax.get_title() == "A"
    image = _heatmap(ax)
    vmin, vmax = image.get_clim()
    assert vmin == -vmax == pytest.approx(-0.7)
    assert image.get_cmap().name.startswith("coolwarm")
    # row = target, column = source: the shown array is A itself, not its transpose
    np.testing.assert_array_equal(np.asarray(image.get_array()), A)
    assert list(ax.get_xticks()) == [0, 1] and list(ax.get_yticks()) == [0, 1]
    assert any(other.get_ylabel() == "weight" for other in fig.axes[1:])  # colourbar
    _save(fig, tmp_path)


def test_matrix_all_zero_and_nan(tmp_path):
    fig = plots.plot_connectivity_matrix(np.zeros((3, 3)))
    vmin, vmax = _heatmap(fig.axes[0]).get_clim()
    assert vmax > 0 and vmin == -vmax
    _save(fig, tmp_path, "zero.png")

    estimate = np.array([[np.nan, 0.2], [-0.4, 0.0]])
    fig = plots.plot_connectivity_matrix(estimate)
    image = _heatmap(fig.axes[0])
    assert image.get_clim() == pytest.approx((-0.4, 0.4))
    bad = image.get_cmap().get_bad()
    assert not np.allclose(bad[:3], image.get_cmap()(0.5)[:3])  # NaN differs from 0
    assert np.ma.getmaskarray(image.get_array())[0, 0]
    _save(fig, tmp_path, "nan.png")

    fig = plots.plot_connectivity_matrix(np.full((2, 2), np.nan))
    _save(fig, tmp_path, "allnan.png")


def test_activity(tmp_path):
    activity = np.random.default_rng(0).random((50, 4))  # (T, n)
    fig = plots.plot_activity(activity, n_steps=7)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Timestep" and ax.get_ylabel() == "Neuron"
    assert ax.get_title() == "Simulated neural activity"
    shown = np.asarray(_heatmap(ax).get_array())
    np.testing.assert_array_equal(shown, activity[:7].T)  # rows = neurons
    assert len(fig.axes) == 2  # colourbar
    _save(fig, tmp_path)
    # fewer steps than asked: all of them
    fig = plots.plot_activity(activity[:3], n_steps=10, title=None)
    assert np.asarray(_heatmap(fig.axes[0]).get_array()).shape == (4, 3)


def test_standard_vs_perturbed(tmp_path):
    rng = np.random.default_rng(1)
    fig = plots.plot_standard_vs_perturbed(rng.random((20, 3)), rng.random((20, 3)), n_steps=5)
    titles = [ax.get_title() for ax in fig.axes]
    assert "Standard dynamics" in titles and "Perturbed dynamics" in titles
    panels = [ax for ax in fig.axes if ax.get_title().endswith("dynamics")]
    assert all(ax.get_xlabel() == "Timestep" for ax in panels)
    assert panels[0].get_ylabel() == "Neuron"
    assert _heatmap(panels[0]).get_clim() == _heatmap(panels[1]).get_clim()
    _save(fig, tmp_path)


def test_true_vs_estimated_all(tmp_path):
    A = np.array([[0.0, 1.0], [0.0, 0.0]])
    estimated = np.array([[0.01, 0.3], [np.nan, -0.02]])
    fig = plots.plot_true_vs_estimated(estimated, A)
    est_ax, true_ax = (ax for ax in fig.axes if ax.get_images())
    assert est_ax.get_title() == "Estimated connectivity"
    assert true_ax.get_title() == "True connectivity"
    # each panel its own symmetric scale
    assert _heatmap(est_ax).get_clim() == pytest.approx((-0.3, 0.3))
    assert _heatmap(true_ax).get_clim() == pytest.approx((-1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(_heatmap(true_ax).get_array()), A)
    _save(fig, tmp_path)


def test_true_vs_estimated_single_neuron(tmp_path):
    A = np.array([[0.0, 0.7, 0.0], [0.0, 0.0, 0.0], [0.0, 0.2, 0.0]])
    fig = plots.plot_true_vs_estimated(np.array([0.1, 0.0, 0.03]), A, selected_neuron=1)
    est_ax, true_ax = (ax for ax in fig.axes if ax.get_images())
    np.testing.assert_array_equal(np.asarray(_heatmap(true_ax).get_array()), A[:, [1]])
    for ax in (est_ax, true_ax):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1"]
        vmin, vmax = _heatmap(ax).get_clim()
        assert vmin == -vmax
    _save(fig, tmp_path)


def test_tutorial_summary(tmp_path):
    A = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    R = A + 0.01
    fig = plots.plot_tutorial_summary(A, R)
    assert fig.get_suptitle() == "True vs estimated connectivity"
    titles = [ax.get_title() for ax in fig.axes]
    assert "True connectivity matrix A" in titles
    graph = next(ax for ax in fig.axes if ax.get_title() == "Estimated connectivity graph")
    assert len(_arrows(graph)) == 9
    _save(fig, tmp_path)


def test_graph_matrix(tmp_path):
    fig = plots.plot_connectivity_graph_matrix(A3)
    assert fig.get_suptitle() == "Neuron connectivity"
    _save(fig, tmp_path)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: plots.plot_connectivity_graph(np.zeros((2, 3))), ValueError, "A"),
        (lambda: plots.plot_connectivity_graph("abc"), TypeError, "A"),
        (lambda: plots.plot_connectivity_graph(A3, threshold=-1), ValueError, "threshold"),
        (lambda: plots.plot_connectivity_matrix(np.zeros(3)), ValueError, "A"),
        (lambda: plots.plot_connectivity_matrix([[1, np.inf]]), ValueError, "A"),
        (lambda: plots.plot_connectivity_matrix([[1 + 1j]]), TypeError, "A"),
        (lambda: plots.plot_connectivity_matrix(A3, ax="left"), TypeError, "ax"),
        (lambda: plots.plot_activity(np.zeros(5)), ValueError, "activity"),
        (lambda: plots.plot_activity(np.zeros((5, 2)), n_steps=0), ValueError, "n_steps"),
        (lambda: plots.plot_activity(np.zeros((5, 2)), n_steps=2.5), TypeError, "n_steps"),
        (lambda: plots.plot_standard_vs_perturbed(np.zeros((5, 2)), np.zeros((5, 3))),
         ValueError, "perturbed"),
        (lambda: plots.plot_true_vs_estimated(np.zeros((3, 3)), A3, selected_neuron=1),
         ValueError, "estimated"),
        (lambda: plots.plot_true_vs_estimated(np.zeros(3), A3, selected_neuron=3),
         ValueError, "selected_neuron"),
        (lambda: plots.plot_true_vs_estimated(np.zeros((2, 2)), A3), ValueError, "estimated"),
        (lambda: plots.plot_true_vs_estimated(np.zeros((3, 3)), np.full((3, 3), np.nan)),
         ValueError, "A"),
        (lambda: plots.plot_tutorial_summary(A3, np.zeros((2, 2))),
         ValueError, "R_in_A_orientation"),
    ],
)
def test_bad_inputs_name_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


# ----------------------------------------------------------------------------- run reports

CONVERGENCE = {
    "seed 0": [{"samples": 100, "score": 0.9, "mean_se": 0.1},
               {"samples": 200, "score": 0.95, "mean_se": 0.07},
               {"samples": 400, "score": 0.99, "mean_se": 0.05}],
    "seed 1": [{"samples": 100, "score": 0.8, "mean_se": 0.11},
               {"samples": 200, "score": None, "mean_se": 0.075}],
    "merged": [{"samples": 200, "score": 0.93, "mean_se": 0.072},
               {"samples": 400, "score": 0.97, "mean_se": 0.05}],
}


def test_convergence_log_axes_labels_and_merged_on_top(tmp_path):
    fig = plots.plot_convergence(CONVERGENCE, title="Conv")
    assert fig.get_suptitle() == "Conv"
    score_ax, se_ax = fig.axes
    for ax in (score_ax, se_ax):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert ax.get_xlabel().startswith("Samples")
    assert "1 − score" in score_ax.get_ylabel()
    assert "standard error" in se_ax.get_ylabel()
    lines = {line.get_label(): line for line in score_ax.get_lines()}
    np.testing.assert_allclose(lines["seed 0"].get_xdata(), [100, 200, 400])
    np.testing.assert_allclose(lines["seed 0"].get_ydata(), [0.1, 0.05, 0.01])
    np.testing.assert_allclose(lines["seed 1"].get_xdata(), [100])  # the None score is left out
    merged = lines["merged"]
    assert merged.get_color() == "k"
    assert merged.get_linewidth() > lines["seed 0"].get_linewidth()
    assert merged.get_zorder() > lines["seed 0"].get_zorder()
    assert lines["seed 0"].get_color() != lines["seed 1"].get_color()
    se_labels = [line.get_label() for line in se_ax.get_lines()]
    assert se_labels[-1].startswith("$\\propto")  # slope -1/2 reference
    reference = se_ax.get_lines()[-1]
    x, y = reference.get_xdata(), reference.get_ydata()
    assert np.log(y[1] / y[0]) / np.log(x[1] / x[0]) == pytest.approx(-0.5)
    for ax in (score_ax, se_ax):
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"seed 0", "seed 1", "merged"} <= set(legend)
    _save(fig, tmp_path)


def test_convergence_without_scores_has_one_panel(tmp_path):
    fig = plots.plot_convergence({"seed 0": [{"samples": 10, "score": None, "mean_se": 0.2},
                                             {"samples": 40, "score": None, "mean_se": 0.1}]})
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and "standard error" in ax.get_ylabel()
    _save(fig, tmp_path)
    # a single point, NaN values: still a figure
    fig = plots.plot_convergence({"seed 0": [{"samples": 10, "score": float("nan"), "mean_se": 0.2}]})
    _save(fig, tmp_path, "one.png")


def test_edge_distributions_groups_and_counts(tmp_path):
    A = np.array([[0.0, 0.5, -0.4], [0.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    estimate = A * 0.5 + 0.01
    estimate[1, 1] = np.nan
    fig = plots.plot_edge_distributions({"correlation": estimate, "effect": 2 * estimate}, A,
                                        title="Edges")
    assert fig.get_suptitle() == "Edges"
    assert [ax.get_title() for ax in fig.axes] == ["correlation", "effect"]
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["A < 0\n1 edge", "A = 0\n6 edges\n(1 undefined)", "A > 0\n2 edges"]
    assert ax.get_ylabel() == "Estimated correlation"
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    ys = np.concatenate([c.get_offsets()[:, 1] for c in scatters])
    assert ys.size == 8  # every defined edge is a point; the NaN one is not
    np.testing.assert_allclose(np.sort(ys), np.sort(estimate[np.isfinite(estimate)]))
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the A = 0 violin
    _save(fig, tmp_path)


def test_edge_distributions_single_matrix_and_many_edges(tmp_path):
    rng = np.random.default_rng(0)
    A = (rng.random((120, 120)) < 0.1).astype(float)
    fig = plots.plot_edge_distributions(A + 0.1 * rng.normal(size=A.shape), A)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Estimate"
    drawn = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    assert drawn == 5000 + int(np.count_nonzero(A))  # the 13,000-odd zero edges: a 5000 subset
    _save(fig, tmp_path)


def test_estimated_graph_hides_edges_within_n_se(tmp_path):
    A = np.array([[0.0, 1.0], [0.0, 0.0]])
    estimate = np.array([[0.02, 0.5], [-0.3, np.nan]])
    stderr = np.full((2, 2), 0.05)
    fig = plots.plot_estimated_graph(estimate, stderr, A, n_se=3, title="G")
    true_ax, est_ax = fig.axes
    assert [a.get_gid() for a in _arrows(true_ax)] == ["edge 1->0"]
    assert sorted(a.get_gid() for a in _arrows(est_ax)) == ["edge 0->1", "edge 1->0"]
    assert "2 edges with |estimate| > 3 SE" in est_ax.get_title()
    _save(fig, tmp_path)
    fig = plots.plot_estimated_graph(estimate)  # no SE, no A: one panel, every finite edge
    (ax,) = fig.axes
    assert len(_arrows(ax)) == 3


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: plots.plot_convergence([]), TypeError, "convergence_by_seed"),
        (lambda: plots.plot_convergence({}), ValueError, "convergence_by_seed"),
        (lambda: plots.plot_convergence({"s": "abc"}), TypeError, r"convergence_by_seed\['s'\]"),
        (lambda: plots.plot_convergence({"s": [{"score": 1}]}), TypeError, "samples"),
        (lambda: plots.plot_convergence({"s": [{"samples": 0}]}), ValueError, "samples"),
        (lambda: plots.plot_convergence({"s": [{"samples": 2, "score": "x"}]}), TypeError, "score"),
        (lambda: plots.plot_edge_distributions(np.zeros((2, 2)), np.zeros((3, 3))),
         ValueError, "estimate"),
        (lambda: plots.plot_edge_distributions({}, np.zeros((3, 3))), ValueError, "estimate"),
        (lambda: plots.plot_edge_distributions({"e": np.full((2, 2), np.inf)}, np.zeros((2, 2))),
         ValueError, r"estimate\['e'\]"),
        (lambda: plots.plot_edge_distributions(np.zeros((2, 2)), "A"), TypeError, "A"),
        (lambda: plots.plot_estimated_graph(np.zeros((2, 3))), ValueError, "estimate"),
        (lambda: plots.plot_estimated_graph(np.zeros((2, 2)), np.zeros((3, 3))), ValueError, "stderr"),
        (lambda: plots.plot_estimated_graph(np.zeros((2, 2)), A=np.zeros((3, 3))), ValueError, "A's shape"),
        (lambda: plots.plot_estimated_graph(np.zeros((2, 2)), n_se=-1), ValueError, "n_se"),
    ],
)
def test_report_figures_bad_inputs_name_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


# ----------------------------------------------------------------------------- trial reports


def _influence():
    rng = np.random.default_rng(3)
    effect = rng.normal(scale=0.05, size=(6, 6))
    np.fill_diagonal(effect, 5.0)  # self-responses far larger than any edge
    effect[2, 4] = np.nan
    significant = np.zeros((6, 6), dtype=bool)
    significant[[0, 3, 5], [1, 2, 0]] = True
    significant[1, 1] = True  # the diagonal is never marked
    return effect, significant


def _collection(ax, gid):
    (found,) = [c for c in ax.collections if c.get_gid() == gid]
    return found


def test_influence_matrix_marks_significant_edges_and_sets_the_diagonal_apart(tmp_path):
    effect, significant = _influence()
    ids = [f"roi{k}" for k in range(6)]
    fig = plots.plot_influence_matrix(effect, significant, source_ids=ids, responder_ids=ids, title="Influence",
                                      significant_label="q <= 0.05")
    ax = fig.axes[0]
    assert ax.get_title() == "Influence"
    assert ax.get_xlabel() == "Source (stimulated)" and ax.get_ylabel() == "Responder"
    boxes = _collection(ax, "significant").get_paths()
    assert len(boxes) == 3
    centres = sorted(tuple(np.round(p.vertices[:4].mean(axis=0)).astype(int)) for p in boxes)
    assert centres == [(0, 5), (1, 0), (2, 3)]  # (x = source, y = responder)
    assert len(_collection(ax, "diagonal").get_paths()) == 6
    # The colour scale ignores the diagonal: its limit is the largest off-diagonal |effect|.
    colourbar = fig.axes[1]
    off = np.where(np.eye(6, dtype=bool), np.nan, effect)
    assert colourbar.get_ylim()[1] == pytest.approx(np.nanmax(np.abs(off)))
    # Cells that are not significant are faded toward white; NaN is dark grey.
    rgba = _heatmap(ax).get_array()
    assert rgba[0, 1, :3].min() < rgba[0, 2, :3].min()  # strong colour vs faded
    np.testing.assert_allclose(rgba[2, 4, :3], matplotlib.colors.to_rgb(plots.NAN_COLOUR))
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()][:3] == ["roi0", "roi1", "roi2"]
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "q <= 0.05 (3)" in legend and "own stimulation" in legend and "undefined" in legend
    _save(fig, tmp_path)


def test_influence_matrix_large_and_without_significance(tmp_path):
    rng = np.random.default_rng(0)
    effect = rng.normal(size=(60, 60))
    fig = plots.plot_influence_matrix(effect, effect > 2)
    ax = fig.axes[0]
    assert not [c for c in ax.collections if c.get_gid() == "significant"]  # too many cells: only faded
    _save(fig, tmp_path)
    plain = plots.plot_influence_matrix(effect[:5, :3], exclude_diagonal=True)  # not square: no diagonal
    assert not [c for c in plain.axes[0].collections if c.get_gid() == "diagonal"]
    _save(plain, tmp_path, "plain.png")


def test_volcano_points_colours_threshold_and_underflow(tmp_path):
    effect, significant = _influence()
    pvalue = np.full(effect.shape, 0.5)
    pvalue[significant] = 1e-4
    pvalue[5, 0] = 0.0  # underflowed
    pvalue[0, 3] = np.nan
    fig = plots.plot_volcano(effect, pvalue, significant, title="Volcano")
    ax = fig.axes[0]
    assert ax.get_title() == "Volcano" and "log" in ax.get_ylabel()
    points = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    assert points == 30 - 2  # off-diagonal edges, less the NaN effect and the NaN p-value
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "not significant (25)" in labels
    coloured = [text for text in labels if text.startswith("significant")]
    assert sum(int(text.rsplit("(", 1)[1].rstrip(")")) for text in coloured) == 3  # the one at p = 0 included
    assert "p below float precision (1)" in labels
    (cut,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert cut.get_ydata()[0] == pytest.approx(4.0)
    assert "undefined" in ax.get_xlabel()
    _save(fig, tmp_path)
    vector = plots.plot_volcano([0.1, -0.2, 0.0], [0.01, 0.2, 1.0])
    _save(vector, tmp_path, "vector.png")


def test_peristimulus_panels_shading_and_labels(tmp_path):
    offsets = np.linspace(-0.5, 1.5, 41)
    mean = np.stack([np.exp(-((offsets - 0.3) / 0.2) ** 2) * k for k in (1.0, 0.5, -0.4)])
    fig = plots.plot_peristimulus(offsets, mean, stderr=0.05 + 0 * mean, control_mean=0 * mean,
                                  control_stderr=0.05 + 0 * mean, labels=["a", "b", "c"], window=(0, 1),
                                  baseline=(-0.5, 0), ncols=2, title="Traces")
    assert fig.get_suptitle() == "Traces"
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title() for ax in shown] == ["a", "b", "c"]
    assert len(fig.axes) == 4  # 2 x 2, the last one off
    first = shown[0]
    spans = [p for p in first.patches]
    assert len(spans) == 2  # window and baseline
    traces = [line for line in first.get_lines() if len(line.get_xdata()) == offsets.size]
    assert len(traces) == 2  # targeted and control
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["source targeted", "control: neither targeted", "response window", "baseline"]
    _save(fig, tmp_path)
    bare = plots.plot_peristimulus(offsets, mean[:1])
    assert len(bare.axes) == 1
    _save(bare, tmp_path, "bare.png")


def test_self_response_order_intervals_and_median(tmp_path):
    response = np.array([0.5, np.nan, 0.05, 1.0, -0.3])
    stderr = np.array([0.1, np.nan, 0.1, 0.1, 0.1])
    fig = plots.plot_self_response(response, stderr, ids=[10, 11, 12, 13, 14], title="Self")
    ax = fig.axes[0]
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["13", "10", "12", "14"]  # by value, NaN left out
    assert "1 never targeted" in ax.get_xlabel()
    filled, hollow = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(filled.get_offsets()) == 3 and len(hollow.get_offsets()) == 1  # 0.05 ± 0.196 includes 0
    (median,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert median.get_ydata()[0] == pytest.approx(np.nanmedian(response))
    _save(fig, tmp_path)
    many = plots.plot_self_response(np.linspace(-1, 1, 50))
    assert many.axes[0].get_xlabel().startswith("Target rank")  # too many for an id per tick
    _save(many, tmp_path, "many.png")
    by_index = plots.plot_self_response(np.linspace(-1, 1, 5), order="index")
    assert by_index.axes[0].get_xlabel() == "Target"
    _save(by_index, tmp_path, "many.png")


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: plots.plot_influence_matrix(np.zeros(3)), ValueError, "effect"),
        (lambda: plots.plot_influence_matrix(np.zeros((2, 2)), np.zeros((2, 2))), TypeError, "significant"),
        (lambda: plots.plot_influence_matrix(np.zeros((2, 2)), np.zeros((3, 3), bool)), ValueError, "significant"),
        (lambda: plots.plot_influence_matrix(np.zeros((2, 3)), source_ids=[1, 2]), ValueError, "source_ids"),
        (lambda: plots.plot_influence_matrix(np.zeros((2, 3)), responder_ids="ab"), TypeError, "responder_ids"),
        (lambda: plots.plot_influence_matrix(np.zeros((2, 2)), ax="x"), TypeError, "ax"),
        (lambda: plots.plot_volcano(np.zeros((2, 2)), np.zeros((3, 3))), ValueError, "pvalue"),
        (lambda: plots.plot_volcano(np.zeros((2, 2)), np.full((2, 2), 1.5)), ValueError, "pvalue"),
        (lambda: plots.plot_volcano(np.zeros((2, 2)), "p"), TypeError, "pvalue"),
        (lambda: plots.plot_volcano(np.zeros((2, 2)), np.zeros((2, 2)), np.ones((2, 2))), TypeError, "significant"),
        (lambda: plots.plot_volcano([], []), ValueError, "effect"),
        (lambda: plots.plot_peristimulus([0, 1, 2], np.zeros((2, 2))), ValueError, "mean"),
        (lambda: plots.plot_peristimulus([0, 2, 1], np.zeros((2, 3))), ValueError, "offsets"),
        (lambda: plots.plot_peristimulus([0, 1], np.zeros((1, 2)), stderr=np.zeros((2, 2))), ValueError, "stderr"),
        (lambda: plots.plot_peristimulus([0, 1], np.zeros((1, 2)), labels=["a", "b"]), ValueError, "labels"),
        (lambda: plots.plot_peristimulus([0, 1], np.zeros((1, 2)), window=(1, 0)), ValueError, "window"),
        (lambda: plots.plot_peristimulus([0, 1], np.zeros((1, 2)), baseline=0.5), ValueError, "baseline"),
        (lambda: plots.plot_peristimulus([0, 1], np.zeros((1, 2)), ncols=0), ValueError, "ncols"),
        (lambda: plots.plot_self_response(np.zeros((2, 2))), ValueError, "response"),
        (lambda: plots.plot_self_response(np.zeros(2), np.zeros(3)), ValueError, "stderr"),
        (lambda: plots.plot_self_response(np.zeros(2), ids=[1]), ValueError, "ids"),
        (lambda: plots.plot_self_response(np.zeros(2), order="size"), ValueError, "order"),
        (lambda: plots.plot_self_response(np.zeros(2), z=0), ValueError, "z"),
    ],
)
def test_trial_figures_bad_inputs_name_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()
