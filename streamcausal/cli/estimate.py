"""``streamcausal estimate``: estimate connectivity out of core from a recording in a Zarr store."""

from __future__ import annotations

import argparse

from .._version import __version__
from .display import ProgressBar, finite_mean, format_number, format_rate
from .options import PROG, Interrupted, UsageError, count, epilog, paragraph, seed


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "estimate",
        help="estimate connectivity out of core from a recording in a Zarr store",
        description=paragraph(
            "Read a recording chunk by chunk from the Zarr store PATH and estimate the "
            "connectivity from the pairs (stimulation[t], activity[t + lag]) over the "
            "perturbation steps t (or (activity[t], activity[t + lag]) with "
            "--observational). Memory does not depend on the recording's length. PATH may "
            "be a store written by `streamcausal run --save-trajectory` (then the arrays of "
            "one seed are used by default) or any Zarr v3 group holding time-major (T, n) "
            "arrays. Prints a summary (with the score when the store holds the true "
            "'connectivity') and writes the estimates (correlation, effect, stderr, "
            "undefined, count; dimensions target, source) as Zarr arrays."
        ),
        epilog=epilog(
            """
            examples:
              streamcausal estimate runs/n100.zarr                    # seed_<first>/activity ...
              streamcausal estimate runs/n100.zarr --seed 3 --lag 2
              streamcausal estimate recording.zarr --activity spikes/rates --stimulation laser \\
                  --steps laser_on --output recording-estimates.zarr
              streamcausal estimate recording.zarr --activity rates --observational --all-steps

            Where the estimates go: with --output PATH, a new Zarr store at PATH (arrays at
            its root, plus the true 'connectivity' when the source has one); without it,
            into PATH itself, in a group beside the activity array named estimates_lag<L>
            (estimates_observational_lag<L> with --observational), e.g.
            seed_0/estimates_lag1 in a run store. Read them back with
            `streamcausal report PATH --estimates seed_0/estimates_lag1`.
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", metavar="PATH", help="the Zarr store holding the recording")
    parser.add_argument("--activity", metavar="NAME",
                        help="the (T, n) activity array (default: 'activity', or "
                             "'seed_<s>/activity' in a run store)")
    stim = parser.add_mutually_exclusive_group()
    stim.add_argument("--stimulation", metavar="NAME",
                      help="the (T, n_in) stimulation array (default: 'stimulation', or "
                           "'seed_<s>/stimulation' in a run store)")
    stim.add_argument("--observational", action="store_true",
                      help="no stimulation: use the pairs (activity[t], activity[t + lag])")
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument("--steps", metavar="NAME",
                       help="the (T,) boolean array of perturbation steps (default: 'clamped' "
                            "when present, e.g. 'seed_<s>/clamped' in a run store; else all steps)")
    steps.add_argument("--all-steps", action="store_true", help="use every step t")
    parser.add_argument("--seed", type=seed, metavar="S",
                        help="in a run store: which seed's trajectory (default: its first seed)")
    parser.add_argument("--lag", type=count(1), default=1, metavar="L",
                        help="steps from input to outcome (default: 1)")
    parser.add_argument("--chunk-steps", type=count(1), metavar="C",
                        help="rows read per window (default: about 2**22 values, aligned to the "
                             "store's chunks)")
    parser.add_argument("--real-stimulation", action="store_true",
                        help="accept stimulation values other than 0/1 (real-valued clamps)")
    parser.add_argument("--skip-nonfinite", action="store_true",
                        help="drop pairs with NaN or inf instead of stopping with an error")
    parser.add_argument("--output", metavar="PATH",
                        help="write the estimates to a new Zarr store at PATH instead of into the "
                             "recording's store")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output store")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress on stderr")


def _array_names(reader, args):
    """(activity, stimulation, steps, seed): the arrays to read, from the options and the store."""
    where = reader.where
    seed, prefix = None, ""
    if reader.is_run and args.activity is None:
        seeds = reader.seeds
        seed = args.seed if args.seed is not None else (seeds[0] if seeds else 0)
        if seed not in seeds:
            raise UsageError(f"--seed {seed} is not a seed of the run in {where}; its seeds are {seeds}")
        prefix = f"seed_{seed}/"
        if not reader.has_trajectory(seed):
            raise UsageError(f"the run in {where} kept no trajectory for seed {seed} (it ran without "
                             "--save-trajectory); there is nothing to estimate from")
    elif args.seed is not None and not reader.is_run:
        raise UsageError(f"--seed applies to run stores; {where} is not one (name the arrays with --activity)")
    activity = args.activity or f"{prefix}activity"
    defaults = args.stimulation is None and args.activity is None
    observational = args.observational or (
        defaults and reader.parameters.get("design", {}).get("kind") == "observation")
    stimulation = None
    if not observational:
        stimulation = args.stimulation or f"{prefix}stimulation"
        if args.stimulation is None and not reader.has_array(stimulation):
            raise UsageError(
                f"no stimulation array {stimulation!r} in {where}; name it with --stimulation "
                "NAME, or pass --observational to use (activity[t], activity[t + lag]) pairs"
            )
    if args.all_steps or (observational and args.steps is None and reader.is_run and args.activity is None):
        steps = None
    elif args.steps is not None:
        steps = args.steps
    else:
        steps = f"{prefix}clamped" if reader.has_array(f"{prefix}clamped") else None
    return activity, stimulation, steps, seed


def _print_summary(result, A, reader, seed, lag) -> None:
    import numpy as np

    rate = result.n_steps / result.seconds if result.seconds > 0 else None
    print()
    print(f"samples {result.n_samples:,} from {result.n_steps:,} steps in {result.seconds:.2f} s "
          f"({format_rate(rate)} steps/s)")
    line = f"mean SE {format_number(finite_mean(result.stderr), '.3e')}"
    if A is not None:
        line += (f"; score {format_number(result.score(A), '.6f')} (correlation estimate vs the "
                 f"store's connectivity), {format_number(result.score(A, 'effect'), '.6f')} (effect)")
    undefined = int(np.count_nonzero(result.undefined_edges))
    if undefined:
        line += f"; {undefined} undefined edge{'s' if undefined != 1 else ''} (a neuron never varied)"
    print(line)
    skipped = result.parameters.get("skipped_pairs")
    if skipped:
        print(f"skipped {skipped:,} pairs with NaN or inf")
    own = f"seed_{seed}/estimates"
    if seed is not None and lag == 1 and reader.has_array(f"{own}/effect"):
        stored = reader.estimates(own).effect
        both = np.isfinite(stored) & np.isfinite(result.effect)
        difference = float(np.max(np.abs(stored[both] - result.effect[both]))) if both.any() else float("nan")
        print(f"the run's own streamed estimate ({own}): max |difference in effect| "
              f"{format_number(difference, '.3g')}")


def command(args) -> int:
    from ..io.recording import estimate_store
    from ..io.store import StoreError, StoreReader, check_new_store, write_estimates

    where = str(args.path)
    try:
        reader = StoreReader.open(args.path)
    except StoreError as error:
        raise UsageError(f"PATH: {error}") from None
    activity, stimulation, steps, seed = _array_names(reader, args)
    if args.output is not None:
        try:
            check_new_store(args.output, replace=args.overwrite, source=args.path)
        except StoreError as error:
            advice = "; pass --overwrite to replace it" if error.parameter == "mode" else ""
            raise UsageError(f"--output: {error}{advice}") from None

    inputs = f"stimulation {stimulation!r}" if stimulation is not None else "observational pairs"
    selected = f"steps {steps!r}" if steps is not None else "all steps"
    print(f"{PROG} estimate: {where}: activity {activity!r}, {inputs}, {selected}, lag {args.lag}", flush=True)
    display = ProgressBar(enabled=not args.no_progress)
    try:
        result = estimate_store(
            reader.group, activity, stimulation, steps, lag=args.lag, chunk_steps=args.chunk_steps,
            progress=display, skip_nonfinite=args.skip_nonfinite, binary=not args.real_stimulation,
        )
    except KeyboardInterrupt:
        raise Interrupted("interrupted; nothing was written") from None
    finally:
        display.close()

    A = reader.connectivity()
    if A is not None and A.shape != result.effect.shape:
        A = None
    _print_summary(result, A, reader, seed, args.lag)

    attrs = {
        "streamcausal": {"kind": "estimate", "package_version": __version__},
        "source": where,
        "arrays": {"activity": activity, "stimulation": stimulation, "steps": steps},
        "lag": args.lag,
        "samples": result.n_samples,
    }
    if args.output is not None:
        write_estimates(args.output, result.moments, attrs=attrs, connectivity=A, new=True)
        target = str(args.output)
    else:
        parent = activity.rsplit("/", 1)[0] if "/" in activity else ""
        name = f"estimates_{'observational_' if stimulation is None else ''}lag{args.lag}"
        path = f"{parent}/{name}" if parent else name
        write_estimates(args.path, result.moments, path=path, attrs=attrs)
        target = f"{where} (group {path})"
    print(f"wrote correlation, effect, stderr, undefined, count to {target}")
    return 0
