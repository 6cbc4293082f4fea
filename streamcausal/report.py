"""Report figures of a run or of an estimate, written as PNG files.

:func:`report` renders them from a run store (finished or not), a store of estimates
written by ``streamcausal estimate``, or a :class:`~streamcausal.result.Result` in
memory, and returns the paths written. :func:`report_data` gathers what the figures
show and :func:`write_report` draws it, for callers that want the two steps apart.
matplotlib is imported only when figures are drawn. Every matrix is ``[target, source]``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validation import check_connectivity
from .result import Result, convergence_point

__all__ = ["ReportData", "ReportNote", "report", "report_data", "write_report"]

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
        A = check_connectivity(A)
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
        A = reader.connectivity()
        if A is not None and (A.ndim != 2 or A.shape[0] != A.shape[1]):
            A = None  # not a connectivity matrix; nothing to compare with
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
    written = []
    for name, make in figures.items():
        path = out / name
        make().savefig(path, dpi=100)
        written.append(path)
    return written


def _titled(fig, title):
    fig.suptitle(title, fontsize=14)
    return fig
