"""``streamcausal report``: the report's PNG figures of a run store or of stored estimates."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import UsageError, epilog, paragraph


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write PNG figures of a run store (or of estimates written by `estimate`)",
        description=paragraph(
            "Write the report's PNG figures for STORE: true vs estimated heatmaps (when "
            "the store holds the true 'connectivity'), the connectivity graph (true and "
            "estimated, edges beyond 3 standard errors), the convergence of score and mean "
            "SE against samples per seed and merged (log axes), and the distribution of "
            "the estimates on truly-zero vs truly-nonzero edges. An unfinished run is "
            "reported from its seeds' last checkpoints. In Python: streamcausal.report(STORE, DIR)."
        ),
        epilog=epilog(
            """
            examples:
              streamcausal report runs/n100.zarr --out runs/n100-report
              streamcausal report runs/n100.zarr                  # into runs/n100-report
              streamcausal report runs/n100.zarr --estimates seed_0/estimates_lag1
              streamcausal report estimates.zarr --out figures    # from `estimate --output`

            Files: true_vs_estimated.png, true_vs_estimated_effect.png (or
            estimate_correlation.png and estimate_effect.png when A is unknown),
            connectivity_graph.png, convergence.png, edge_distributions.png.
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", metavar="STORE", help="a run store, or a Zarr store with estimates")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="directory for the figures (default: <store>-report beside STORE, "
                             "without its .zarr suffix)")
    parser.add_argument("--estimates", metavar="GROUP",
                        help="group holding correlation/effect/stderr (default: 'estimates', or "
                             "the root of a store written by `estimate --output`)")


def default_out_dir(store) -> Path:
    """``<store>-report`` beside a local store (without its ``.zarr``); ``streamcausal-report`` otherwise."""
    from ..io.store import local_path

    path = local_path(store, resolve=False) if store is not None else None
    if path is None:
        return Path("streamcausal-report")
    name = path.name[:-5] if path.name.endswith(".zarr") and len(path.name) > 5 else path.name
    return path.with_name(name + "-report")


def write(source, out, *, A=None, estimates=None, option="STORE") -> None:
    """Write the report of ``source`` into ``out`` and print its notes and the files written.

    A store that cannot be read becomes a one-line error naming ``option`` (or ``--estimates``).
    """
    from ..io.store import StoreError
    from ..report import report_data, write_report

    try:
        data = report_data(source, A=A, estimates=estimates)
    except StoreError as error:
        raise UsageError(f"{'--estimates' if error.argument == 'estimates' else option}: {error}") from None
    paths = write_report(data, out)
    for note in data.notes:
        print(f"note: {note}")
    print(f"report: {len(paths)} figure{'s' if len(paths) != 1 else ''} in {out}")
    for path in paths:
        print(f"wrote {path}")


def command(args) -> int:
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out must be a directory, got existing file {str(args.out)!r}")
    write(args.store, args.out if args.out is not None else default_out_dir(args.store),
          estimates=args.estimates)
    return 0
