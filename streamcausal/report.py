"""Report figures of a run or of an estimate, written as PNG files.

:func:`report` renders them from a run store (finished or not), a store of estimates
written by ``streamcausal estimate``, or a :class:`~streamcausal.result.Result` in
memory, and returns the paths written. :func:`report_data` gathers what the figures
show and :func:`write_report` draws it, for callers that want the two steps apart.
:func:`report_trials` does the same for a :class:`~streamcausal.io.responses.TrialResult`
(influence matrix, volcano plot, peri-stimulus traces of the strongest edges, each
target's self-response). matplotlib is imported only when figures are drawn. Every
matrix is ``[target, source]``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validation import check_connectivity, is_sparse
from .result import Result, convergence_point

__all__ = ["ReportData", "ReportNote", "TRIAL_FIGURES", "report", "report_data", "report_trials", "strongest_edges",
           "trace_span", "write_report"]

MERGED_LABEL = "merged"  # plots.MERGED_LABEL, without importing matplotlib here


class ReportNote(UserWarning):
    """Something a report's reader should know (an unfinished run, a connectivity not compared)."""


@dataclass
class ReportData:
    """What a report shows.

    Attributes
    ----------
    A : ndarray or None
        The true connectivity, when known and of the estimates' shape.
    correlation, effect : ndarray
        ``[target, source]`` estimates.
    stderr : ndarray or None
        Standard errors of ``effect``.
    convergence : dict
        ``{label: [{"samples", "score", "mean_se"}, ...]}`` per seed (``"seed 3"``) and
        ``"merged"``; empty when nothing was recorded.
    title : str
        What was run, for figure titles.
    notes : list of str
        Caveats (an unfinished run, a connectivity of another shape).
    """

    A: np.ndarray | None
    correlation: np.ndarray
    effect: np.ndarray
    stderr: np.ndarray | None
    convergence: dict
    title: str
    notes: list = field(default_factory=list)


def report(source, out_dir, *, A=None, estimates=None) -> list:
    """Write the report's PNG figures of ``source`` into ``out_dir``; return the paths written.

    Parameters
    ----------
    source : str, os.PathLike, zarr store, zarr.Group or Result
        A run store (an unfinished run is reported from its seeds' last checkpoints), a
        Zarr store holding estimates (e.g. written by ``streamcausal estimate``), or the
        Result of :func:`streamcausal.run` or :func:`streamcausal.estimate`.
    out_dir : str or os.PathLike
        Directory for the figures, created when missing.
    A : (n, n) array_like, optional
        True connectivity. Defaults to a store's ``connectivity`` array; a Result carries
        none, so without ``A`` its report shows the estimates alone.
    estimates : str, optional
        In a store: the group holding ``correlation``, ``effect`` and ``stderr`` (default:
        ``estimates``, else the root when it holds them).

    Returns
    -------
    list of pathlib.Path
        ``true_vs_estimated.png`` and ``true_vs_estimated_effect.png`` (or
        ``estimate_correlation.png`` and ``estimate_effect.png`` when ``A`` is unknown),
        ``connectivity_graph.png``, ``convergence.png`` (when convergence was recorded)
        and ``edge_distributions.png`` (with ``A``). Caveats come as :class:`ReportNote`
        warnings.

    Examples
    --------
    >>> import streamcausal as sc                                   # doctest: +SKIP
    >>> sc.report("runs/n100.zarr", "runs/n100-report")             # doctest: +SKIP
    >>> sc.report(result, "figures", A=A)                           # doctest: +SKIP
    """
    data = report_data(source, A=A, estimates=estimates)
    for note in data.notes:
        warnings.warn(note, ReportNote, stacklevel=2)
    return write_report(data, out_dir)


def report_data(source, *, A=None, estimates=None) -> ReportData:
    """What :func:`report` draws for ``source`` (same arguments), read without drawing."""
    if A is not None:
        A = check_connectivity(A, dense=True)
    if isinstance(source, Result):
        if estimates is not None:
            raise TypeError("estimates names a group in a store; source is a Result")
        data = _from_result(source, A)
        if A is not None and A.shape != np.shape(data.effect):
            raise ValueError(f"A must have the estimates' shape {np.shape(data.effect)}, got {A.shape}")
        return data
    return _from_store(source, A, estimates)


def _with_final_point(points, moments, A):
    """``points`` ending at ``moments``' sample count: its convergence point is added when missing."""
    points = list(points or [])
    if moments is None or moments.count < 1 or (points and points[-1]["samples"] >= moments.count):
        return points
    if A is not None and A.shape != moments.comoment.shape:
        A = None
    return points + [convergence_point(moments, A)]


def _title(parameters) -> str:
    seeds = parameters.get("seeds") or []
    design = parameters.get("design") or {}
    text = f"{parameters.get('n_neurons', '?')} neurons"
    if design.get("kind") == "perturbation":
        text += f", perturbation every {design.get('every')} (p={design.get('p')}, clamp {design.get('clamp')})"
    elif design.get("kind") == "observation":
        text += ", observation"
    if seeds:
        text += f", {len(seeds)} seed{'s' if len(seeds) != 1 else ''} x {parameters.get('n_steps', 0):,} steps"
    if parameters.get("unfinished"):
        text += " (unfinished)"
    return text


def _from_result(result, A) -> ReportData:
    convergence = {
        f"seed {seed}": _with_final_point(r.convergence, r.moments, A) for seed, r in result.per_seed.items()
    }
    if len(result.per_seed) > 1:
        convergence[MERGED_LABEL] = _with_final_point(result.convergence, result.moments, A)
    return ReportData(A=A, correlation=result.correlation, effect=result.effect, stderr=result.stderr,
                      convergence=convergence, title=_title(result.parameters))


def _merge(checkpoints, seeds):
    """The seeds' checkpointed moments merged in the seeds' order (None when there are none)."""
    from .moments import CrossMoments

    merged = None
    for seed in seeds:
        if seed in checkpoints:
            part = CrossMoments.from_arrays(checkpoints[seed]["arrays"])
            merged = part if merged is None else merged.merge(part)
    return merged


def _from_store(source, A, estimates) -> ReportData:
    from .io.store import StoreReader
    from .moments import CrossMoments

    reader = StoreReader.open(source)
    where = reader.where
    parameters = reader.parameters
    given = A is not None
    if not given:
        A = reader.connectivity()  # checked against its checksums: StoreCorruptError when damaged
        if A is not None and (A.ndim != 2 or A.shape[0] != A.shape[1]):
            A = None  # not a connectivity matrix; nothing to compare with
        elif is_sparse(A):
            A = check_connectivity(A, dense=True)  # the figures and scores take a dense A
    seeds = reader.seeds
    checkpoints = {seed: c for seed in seeds if (c := reader.checkpoint(seed)) is not None}
    convergence = {}
    for seed, checkpoint in checkpoints.items():
        # A finished seed's curve ends at its final moments (its last checkpoint); an
        # unfinished one's at its last checkpoint.
        points = _with_final_point(checkpoint.get("convergence"),
                                   CrossMoments.from_arrays(checkpoint["arrays"]), A)
        if points:
            convergence[f"seed {seed}"] = points
    found = reader.estimates(estimates)
    notes = []
    merged_curve = reader.attrs.get("convergence")
    if len(seeds) > 1 and merged_curve and reader.has_group("estimates"):
        convergence[MERGED_LABEL] = _with_final_point(merged_curve, _merge(checkpoints, seeds), A)
    if found is not None:
        correlation, effect, stderr = found.correlation, found.effect, found.stderr
    elif checkpoints:
        moments = _merge(checkpoints, seeds)
        correlation, effect, stderr = moments.correlation(), moments.effect(), moments.stderr()
        notes.append("the run is unfinished: estimates merged from the seeds' last checkpoints")
        parameters = dict(parameters, unfinished=True)
    elif reader.is_run:
        raise ValueError(f"the run in {where} has no estimates and no checkpoint yet: nothing to report "
                         "(continue it first)")
    else:
        raise ValueError(f"{where} holds no estimates (no 'estimates' group, no checkpoints); estimate "
                         "them first (`streamcausal estimate`, estimate_store), or name their group")
    if correlation is None:
        correlation = effect
        notes.append("no 'correlation' array: the effect estimate is shown in its place")
    if A is not None and A.shape != np.shape(effect):
        if given:
            raise ValueError(f"A must have the estimates' shape {np.shape(effect)}, got {A.shape}")
        notes.append(f"'connectivity' has shape {A.shape}, estimates {np.shape(effect)}: not compared")
        A = None
    title = _title(parameters) if reader.is_run else where
    return ReportData(A=A, correlation=correlation, effect=effect, stderr=stderr,
                      convergence=convergence, title=title, notes=notes)


def save_figures(figures: dict, out_dir, *, dpi=100) -> list:
    """Draw each ``{file name: function returning a Figure}`` into ``out_dir`` (created) as PNG; return the paths."""
    out = Path(os.fspath(out_dir))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in figures.items():
        path = out / name
        make().savefig(path, dpi=dpi)
        written.append(path)
    return written


def write_report(data: ReportData, out_dir) -> list:
    """Draw ``data``'s figures into ``out_dir`` (created when missing); return the paths written."""
    from . import plots

    out = Path(os.fspath(out_dir))
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a directory, got existing file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    square = np.ndim(data.effect) == 2 and np.shape(data.effect)[0] == np.shape(data.effect)[1]
    if data.A is not None:
        figures["true_vs_estimated.png"] = lambda: _titled(
            plots.plot_true_vs_estimated(data.correlation, data.A), "Correlation estimate vs true A")
        figures["true_vs_estimated_effect.png"] = lambda: _titled(
            plots.plot_true_vs_estimated(data.effect, data.A), "Effect estimate vs true A")
    else:
        figures["estimate_correlation.png"] = lambda: plots.plot_connectivity_matrix(
            data.correlation, title="Correlation estimate", label="Estimated correlation")
        figures["estimate_effect.png"] = lambda: plots.plot_connectivity_matrix(
            data.effect, title="Effect estimate", label="Estimated effect")
    if square:
        figures["connectivity_graph.png"] = lambda: plots.plot_estimated_graph(
            data.effect, data.stderr, data.A,
            title="Connectivity graph: true vs estimated (effect)" if data.A is not None else None)
    if data.convergence:
        figures["convergence.png"] = lambda: plots.plot_convergence(
            data.convergence, title=f"Convergence: {data.title}")
    if data.A is not None:
        figures["edge_distributions.png"] = lambda: plots.plot_edge_distributions(
            {"correlation": data.correlation, "effect": data.effect}, data.A)
    return save_figures(figures, out, dpi=100)


def _titled(fig, title):
    fig.suptitle(title, fontsize=14)
    return fig


# ----------------------------------------------------------------------------- trial results

TRIAL_FIGURES = ("influence_matrix.png", "volcano.png", "peristimulus.png", "self_response.png")


def strongest_edges(result, alpha=0.05, n=8) -> np.ndarray:
    """``(k, 2)`` int array of ``(responder, source)``: the ``n`` strongest edges of a TrialResult.

    The significant off-diagonal edges at false-discovery rate ``alpha``, largest
    ``|effect|`` first; when none is significant, the ``n`` edges of smallest p-value
    (ties by ``|effect|``). Undefined edges are never chosen.
    """
    from ._validation import check_int

    n = check_int(n, "n", minimum=1)
    effect, pvalue = np.asarray(result.effect), np.asarray(result.pvalue)
    edge = np.isfinite(effect) & np.isfinite(pvalue)
    if effect.shape[0] == effect.shape[1]:
        np.fill_diagonal(edge, False)
    chosen = edge & result.significant(alpha)
    rows, columns = np.nonzero(chosen if chosen.any() else edge)
    if chosen.any():
        order = np.lexsort((pvalue[rows, columns], -np.abs(effect[rows, columns])))
    else:
        order = np.lexsort((-np.abs(effect[rows, columns]), pvalue[rows, columns]))
    order = order[:n]
    return np.stack([rows[order], columns[order]], axis=1).astype(np.int64)


def trace_span(window, baseline=None) -> tuple:
    """Seconds around the onset worth tracing: the baseline (or as long before the onset as the window) to
    half a window past the window."""
    start, stop = float(window[0]), float(window[1])
    length = stop - start
    before = min(0.0, start, float(baseline[0]) if baseline is not None else -length)
    return (before, stop + 0.5 * length)


def report_trials(result, out_dir, *, recording=None, peristimulus_traces=None, alpha=0.05, n_edges=8,
                  progress=None) -> list:
    """Write the figures of a trial estimate into ``out_dir``; return the paths written.

    Parameters
    ----------
    result : TrialResult
        From :func:`~streamcausal.io.responses.estimate_trials`.
    out_dir : str or os.PathLike
        Directory for the figures, created when missing.
    recording : Recording, optional
        The recording ``result`` was estimated from: the peri-stimulus traces of the
        strongest edges are read from it (one more pass) unless ``peristimulus_traces``
        are given.
    peristimulus_traces : PeriStimulus, optional
        Traces already computed (e.g. by :func:`~streamcausal.io.peristimulus.peristimulus`
        over the pairs of :func:`strongest_edges` and the span of :func:`trace_span`).
    alpha : float
        False-discovery rate of the significant edges (Benjamini–Hochberg q-values).
    n_edges : int
        Edges traced when reading from ``recording``.
    progress : callable, optional
        Progress callback of that pass.

    Returns
    -------
    list of pathlib.Path
        ``influence_matrix.png`` (significant edges outlined), ``volcano.png`` (effect
        against -log10 p), ``peristimulus.png`` (with a recording or traces) and
        ``self_response.png`` (when sources are the responders).
    """
    from ._validation import check_open_closed
    from .io.responses import TrialResult

    if not isinstance(result, TrialResult):
        raise TypeError(f"result must be a TrialResult, got {type(result).__name__}")
    alpha = check_open_closed(alpha, "alpha", 0.0, 1.0, high_inclusive=False)
    out = Path(os.fspath(out_dir))
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a directory, got existing file {str(out)!r}")
    parameters = result.parameters
    window = tuple(parameters["window"])
    baseline = tuple(parameters["baseline"]) if parameters.get("baseline") is not None else None
    if peristimulus_traces is None and recording is not None:
        from .io.peristimulus import peristimulus

        pairs = strongest_edges(result, alpha, n_edges)
        if pairs.size:
            peristimulus_traces = peristimulus(recording, None, pairs, span=trace_span(window, baseline),
                                               progress=progress)
    figures = _trial_figures(result, alpha, window, baseline, peristimulus_traces)
    return save_figures(figures, out, dpi=110)


def _trial_figures(result, alpha, window, baseline, traces) -> dict:
    from . import plots

    effect, stderr, pvalue = result.effect, result.stderr, result.pvalue
    significant = result.significant(alpha)
    source_ids, responder_ids = np.asarray(result.source_ids), np.asarray(result.responder_ids)
    square = effect.shape[0] == effect.shape[1]
    what = (f"{result.method}, {result.n_trials:,} trials, window {window[0]:g} to {window[1]:g} s"
            + (f", baseline {baseline[0]:g} to {baseline[1]:g} s" if baseline is not None else ""))
    marked = f"significant at FDR {alpha:g}"
    figures = {
        "influence_matrix.png": lambda: plots.plot_influence_matrix(
            effect, significant, source_ids=source_ids, responder_ids=responder_ids,
            title=f"Influence of each stimulated source on each responder\n{what}",
            label=f"Effect ({result.method})", significant_label=marked),
        "volcano.png": lambda: plots.plot_volcano(
            effect, pvalue, significant, title=f"Edges: effect vs significance\n{what}", significant_label=marked),
    }
    if traces is not None:
        chosen = significant[traces.pairs[:, 0], traces.pairs[:, 1]]

        def labels():
            for j, i in traces.pairs:
                star = " *" if significant[j, i] and not chosen.all() else ""
                yield (f"source {source_ids[i]} → responder {responder_ids[j]}{star}\n"
                       f"effect {effect[j, i]:.3g} ± {stderr[j, i]:.2g}, q {result.qvalue[j, i]:.2g}")

        headline = ("Strongest significant edges" if chosen.all() else
                    "Edges of smallest p-value (* significant)" if chosen.any() else
                    f"Edges of smallest p-value (none significant at FDR {alpha:g})")
        figures["peristimulus.png"] = lambda: plots.plot_peristimulus(
            traces.offsets, traces.mean, stderr=traces.stderr, control_mean=traces.control_mean,
            control_stderr=traces.control_stderr, labels=list(labels()), window=window, baseline=baseline,
            title=f"{headline}: mean responder activity around the source's stimulation (±1 SE)")
    if square:
        response = np.diag(effect).copy()
        spread = np.diag(stderr).copy()
        never = result.trials_per_source == 0
        response[never], spread[never] = np.nan, np.nan
        if np.isfinite(response).any():
            figures["self_response.png"] = lambda: plots.plot_self_response(
                response, spread, ids=source_ids,
                title=f"Each target's response to its own stimulation\n{what}",
                label=f"Self-response ({result.method})")
    return figures
