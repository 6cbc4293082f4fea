"""``streamcausal estimate``: estimate connectivity out of core from a Zarr recording, or from NWB stimulation trials."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from .._version import __version__
from .display import ProgressBar, finite_mean, format_number, format_rate
from .options import PROG, Interrupted, UsageError, count, epilog, paragraph, real, seed

METHODS = ("regression", "difference")  # io.responses.METHODS, without importing it at parse time
# Options of one way only: (dest, option, value that means "not given").
_ZARR_ONLY = (("stimulation", "--stimulation", None), ("observational", "--observational", False),
              ("steps", "--steps", None), ("all_steps", "--all-steps", False), ("seed", "--seed", None),
              ("lag", "--lag", None), ("real_stimulation", "--real-stimulation", False),
              ("skip_nonfinite", "--skip-nonfinite", False), ("output", "--output", None))
_TRIALS_ONLY = (("targets", "--targets", None), ("bin_size", "--bin-size", None), ("window", "--window", None),
                ("baseline", "--baseline", None), ("method", "--method", None), ("alpha", "--alpha", None),
                ("out", "--out", None))


def interval(text: str) -> tuple:
    """An argparse ``type`` for ``A,B``: two finite seconds with A < B (``-0.5,0`` accepted)."""
    problem = argparse.ArgumentTypeError(f"must be two numbers A,B (seconds from the onset) with A < B, got {text!r}")
    parts = text.split(",")
    if len(parts) != 2:
        raise problem
    try:
        start, stop = (float(part.strip().replace("_", "")) for part in parts)
    except ValueError:
        raise problem from None
    if not (math.isfinite(start) and math.isfinite(stop) and start < stop):
        raise problem
    return start, stop


interval.__name__ = "interval A,B"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "estimate",
        help="estimate connectivity out of core from a Zarr recording or NWB stimulation trials",
        description=paragraph(
            "Read a recording chunk by chunk (memory does not depend on its length) and "
            "estimate the connectivity. From an NWB file "
            "(PATH ending in .nwb, or with --trials): each stimulated source's influence on "
            "every neuron from the trials' responses (--window minus --baseline), with "
            "p-values and Benjamini-Hochberg q-values; prints a summary and writes the "
            "estimates (DIR/estimates.zarr) and report figures into --out DIR. "
            "From a Zarr store PATH: the connectivity from the pairs (stimulation[t], activity[t + lag]) over the "
            "perturbation steps t (or (activity[t], activity[t + lag]) with "
            "--observational). PATH may "
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

              streamcausal estimate rec.nwb --activity dff --trials photostim --window 0,1 \\
                  --baseline -0.5,0 --out rec-trials
              streamcausal estimate rec.nwb --activity units --bin-size 0.01 --trials trials \\
                  --targets stim_units --method difference --alpha 0.01 --out rec-units

            From an NWB file: the estimates go to DIR/estimates.zarr (effect, stderr, pvalue,
            qvalue, significant, undefined: dimensions responder, source; trials_per_source,
            source_ids, responder_ids) and the figures to DIR: influence_matrix.png,
            volcano.png, peristimulus.png (the strongest edges), self_response.png. DIR
            defaults to <file>-estimates beside the file; an existing DIR/estimates.zarr is
            refused unless --overwrite.

            From a Zarr store, where the estimates go: with --output PATH, a new Zarr store at PATH (arrays at
            its root, plus the true 'connectivity' when the source has one); without it,
            into PATH itself, in a group beside the activity array named estimates_lag<L>
            (estimates_observational_lag<L> with --observational), e.g.
            seed_0/estimates_lag1 in a run store. Read them back with
            `streamcausal report PATH --estimates seed_0/estimates_lag1`.
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Negative intervals such as `--baseline -0.5,0` are values, not options (Python >= 3.13's own rule).
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = re.compile(r"^-\.?\d")
    parser.add_argument("path", metavar="PATH", help="the NWB file (.nwb) or Zarr store holding the recording")
    parser.add_argument("--activity", metavar="NAME",
                        help="NWB: the activity series (a RoiResponseSeries or any TimeSeries, by name or "
                             "path), or 'units' for the Units table's spike trains binned at --bin-size "
                             "(required). Zarr: the (T, n) activity array (default: 'activity', or "
                             "'seed_<s>/activity' in a run store)")
    trials = parser.add_argument_group("stimulation trials (NWB)")
    trials.add_argument("--trials", metavar="NAME",
                        help="the TimeIntervals table of stimulation trials (e.g. trials, photostim); "
                             "required for an NWB file, and makes PATH an NWB file")
    trials.add_argument("--targets", metavar="COL",
                        help="the trials table's column of targeted ROIs or units (default: targets)")
    trials.add_argument("--bin-size", type=real(0.0, math.inf), metavar="S",
                        help="with --activity units: bin width in seconds")
    trials.add_argument("--window", type=interval, metavar="A,B",
                        help="response window in seconds from each onset (default: 0,1)")
    trials.add_argument("--baseline", type=interval, metavar="A,B",
                        help="baseline interval whose mean is subtracted, e.g. -0.5,0 (default: none)")
    trials.add_argument("--method", choices=METHODS,
                        help="joint least squares on every source's indicator (regression, default) or "
                             "the difference in means against trials targeting neither (difference)")
    trials.add_argument("--alpha", type=real(0.0, 1.0, high_inclusive=False), metavar="Q",
                        help="false-discovery rate of the significant edges (default: 0.05)")
    trials.add_argument("--out", type=Path, metavar="DIR",
                        help="directory for estimates.zarr and the figures (default: <file>-estimates "
                             "beside the NWB file)")
    recording = parser.add_argument_group("Zarr recordings")
    stim = recording.add_mutually_exclusive_group()
    stim.add_argument("--stimulation", metavar="NAME",
                      help="the (T, n_in) stimulation array (default: 'stimulation', or "
                           "'seed_<s>/stimulation' in a run store)")
    stim.add_argument("--observational", action="store_true",
                      help="no stimulation: use the pairs (activity[t], activity[t + lag])")
    steps = recording.add_mutually_exclusive_group()
    steps.add_argument("--steps", metavar="NAME",
                       help="the (T,) boolean array of perturbation steps (default: 'clamped' "
                            "when present, e.g. 'seed_<s>/clamped' in a run store; else all steps)")
    steps.add_argument("--all-steps", action="store_true", help="use every step t")
    recording.add_argument("--seed", type=seed, metavar="S",
                           help="in a run store: which seed's trajectory (default: its first seed)")
    recording.add_argument("--lag", type=count(1), metavar="L",
                           help="steps from input to outcome (default: 1)")
    parser.add_argument("--chunk-steps", type=count(1), metavar="C",
                        help="rows read per window (default: about 2**22 values, aligned to the "
                             "store's chunks)")
    recording.add_argument("--real-stimulation", action="store_true",
                           help="accept stimulation values other than 0/1 (real-valued clamps)")
    recording.add_argument("--skip-nonfinite", action="store_true",
                           help="drop pairs with NaN or inf instead of stopping with an error")
    recording.add_argument("--output", metavar="PATH",
                           help="write the estimates to a new Zarr store at PATH instead of into the "
                                "recording's store")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output store (or DIR/estimates.zarr of --out)")
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
    for option, name in (("--activity", args.activity), ("--stimulation", args.stimulation), ("--steps", args.steps)):
        if name is not None and not reader.has_array(name):
            raise UsageError(f"{option} {name!r}: no such array in {where}")
    if seed is not None:
        _check_finished(reader, seed)
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


def _check_finished(reader, seed) -> None:
    """Refuse a run whose seed has not finished (its trajectory's last rows are not written yet)."""
    checkpoint = reader.checkpoint(seed)
    n_steps = reader.parameters.get("n_steps")
    done = checkpoint.get("steps_done") if checkpoint else 0
    stopped = checkpoint is not None and checkpoint.get("stopped_at") is not None
    if n_steps is None or stopped or (done is not None and done >= n_steps):
        return
    raise UsageError(
        f"the run in {reader.where} is unfinished: seed {seed} has {done or 0:,} of {n_steps:,} steps; "
        f"finish it with `{PROG} run --store {reader.where} --resume`"
    )


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


def _given(args, options):
    return [option for dest, option, unset in options if getattr(args, dest, unset) != unset]


def is_trial_estimate(args) -> bool:
    """Whether ``args`` ask for trial estimates from an NWB file rather than a Zarr recording."""
    return str(args.path).lower().endswith(".nwb") or args.trials is not None


def command(args) -> int:
    if is_trial_estimate(args):
        wrong = _given(args, _ZARR_ONLY)
        if wrong:
            raise UsageError(f"{wrong[0]} applies to a Zarr recording, not to stimulation trials from an NWB file "
                             f"({args.path!s})")
        return _trials_command(args)
    wrong = _given(args, _TRIALS_ONLY)
    if wrong:
        raise UsageError(f"{wrong[0]} applies to stimulation trials (an .nwb PATH, or --trials); "
                         f"{str(args.path)!r} is read as a Zarr store")
    if args.lag is None:
        args.lag = 1
    return _zarr_command(args)


def _zarr_command(args) -> int:
    from .._errors import raised_on_purpose
    from .._validation import check_connectivity
    from ..io.recording import estimate_store
    from ..io.store import StoreError, StoreReader, check_new_store, is_run_store, is_sparse, write_estimates

    where = str(args.path)
    try:
        reader = StoreReader.open(args.path)
    except StoreError as error:
        raise UsageError(f"PATH: {error}") from None
    activity, stimulation, steps, seed = _array_names(reader, args)
    if seed is not None:
        reader.check_trajectory(seed)  # a lost chunk would read as NaN activity or unclamped steps
    if args.output is not None:
        if args.overwrite and is_run_store(args.output):
            raise UsageError(f"--output {str(args.output)!r} holds a run (written by `{PROG} run`); "
                             "--overwrite replaces only estimate stores, so choose another --output")
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
    except Exception as error:
        # A chunk that cannot be decoded (Blosc/Zstd raise RuntimeError) is one line naming it.
        damage = None if raised_on_purpose(error) else reader.find_damage([activity, stimulation, steps])
        if damage is None:
            raise
        raise damage from None
    finally:
        display.close()

    stored_A = reader.connectivity()  # checked against its checksums: StoreCorruptError when damaged
    if stored_A is not None and stored_A.shape != result.effect.shape:
        stored_A = None
    A = check_connectivity(stored_A, dense=True) if is_sparse(stored_A) else stored_A  # scored as its dense equal
    _print_summary(result, A, reader, seed, args.lag)

    attrs = {
        "streamcausal": {"kind": "estimate", "package_version": __version__},
        "source": where,
        "arrays": {"activity": activity, "stimulation": stimulation, "steps": steps},
        "lag": args.lag,
        "samples": result.n_samples,
    }
    if args.output is not None:
        write_estimates(args.output, result.moments, attrs=attrs, connectivity=stored_A, new=True)
        target = str(args.output)
    else:
        parent = activity.rsplit("/", 1)[0] if "/" in activity else ""
        name = f"estimates_{'observational_' if stimulation is None else ''}lag{args.lag}"
        path = f"{parent}/{name}" if parent else name
        write_estimates(args.path, result.moments, path=path, attrs=attrs)
        target = f"{where} (group {path})"
    print(f"wrote correlation, effect, stderr, undefined, count to {target}")
    return 0


# ----------------------------------------------------------------------------- stimulation trials (NWB)

_N_TRACED = 8  # edges whose peri-stimulus traces are drawn


def _nwb_error(error, args) -> str:
    """read_nwb's one-line error, led by the option it is about."""
    text = " ".join(str(error).split())
    targets = args.targets or "targets"
    if text.startswith("activity "):
        return "--" + text
    if text.startswith("trials table") and f"column {targets!r}" in text:
        return f"--targets {targets!r}: {text}"
    if text.startswith("trials "):
        return "--" + text
    if text.startswith("path "):
        return "PATH " + text[len("path "):]
    if text.startswith("bin_size"):
        return "--bin-size: " + text
    return f"PATH {str(args.path)!r}: {text}"


def _check_trial_options(args):
    """The checks that need no file, and where the output goes (nothing is written): ``(path, out, store)``."""
    from ..io.store import StoreError, check_new_store

    path = Path(args.path)
    if args.activity is None:
        raise UsageError("--activity NAME is required with an NWB file: its activity series (e.g. dff), or "
                         "'units' for spike trains with --bin-size S")
    if args.trials is None:
        raise UsageError("--trials NAME is required with an NWB file: its table of stimulation trials")
    if args.activity == "units" and args.bin_size is None:
        raise UsageError("--activity 'units' (spike trains) needs --bin-size S, the bin width in seconds")
    if args.bin_size is not None and args.activity != "units":
        raise UsageError(f"--bin-size applies to --activity units (spike trains), got --activity {args.activity!r}")
    if not path.exists():
        raise UsageError(f"PATH: no such NWB file {str(path)!r}")
    if not path.is_file():
        raise UsageError(f"PATH {str(path)!r} is not a file (an NWB file is one HDF5 file)")
    out = args.out if args.out is not None else path.with_name(path.stem + "-estimates")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out must be a directory, got existing file {str(out)!r}")
    store = out / "estimates.zarr"
    try:
        check_new_store(store, replace=args.overwrite)
    except StoreError as error:
        advice = "; pass --overwrite to replace it" if error.parameter == "mode" else ""
        raise UsageError(f"--out {str(out)!r}: {error}{advice}") from None
    return path, out, store


def _read_recording(path, args):
    from ..io.nwb import read_nwb

    try:
        return read_nwb(path, activity=args.activity, trials=args.trials, targets=args.targets or "targets",
                        bin_size=args.bin_size)
    except ImportError:
        raise UsageError("reading NWB files needs pynwb: pip install 'streamcausal[nwb]'") from None
    except FileNotFoundError as error:
        raise UsageError(f"PATH: {error}") from None
    except (ValueError, TypeError) as error:
        raise UsageError(_nwb_error(error, args)) from None


def _plural(count, word):
    return f"{count:,} {word}{'' if count == 1 else 's'}"


_DROP_REASONS = {"off_recording": "window or baseline off the recording", "empty_window": "no frame in the window",
                 "empty_baseline": "no frame in the baseline"}


def _drop_reasons(result) -> str:
    return ", ".join(f"{count:,} {_DROP_REASONS.get(reason, reason)}" for reason, count in result.dropped.items()
                     if count)


def trial_summary(result, alpha) -> str:
    """What `estimate` prints about a TrialResult: trials used and dropped, sources, significant edges, self-response."""
    import numpy as np

    lines = []
    given = result.parameters.get("n_trials_given", result.n_trials + result.n_dropped)
    line = f"trials: {result.n_trials:,} used of {given:,}"
    if result.n_dropped:
        line += f"; {result.n_dropped:,} dropped ({_drop_reasons(result)})"
    else:
        line += "; none dropped"
    lines.append(line)
    per_source = np.asarray(result.trials_per_source)
    targeted = per_source[per_source > 0]
    line = f"sources targeted: {targeted.size:,} of {_plural(per_source.size, 'neuron')}"
    if targeted.size:
        line += (f" ({int(targeted.min()):,} to {int(targeted.max()):,} trials each, "
                 f"median {format_number(np.median(targeted), '.4g')})")
    lines.append(line)
    effect = np.asarray(result.effect)
    edges = np.ones(effect.shape, dtype=bool)
    if effect.shape[0] == effect.shape[1]:
        np.fill_diagonal(edges, False)
    significant = result.significant(alpha) & edges
    positive = int(np.count_nonzero(significant & (effect > 0)))
    negative = int(np.count_nonzero(significant)) - positive
    undefined = int(np.count_nonzero(result.undefined_edges & edges))
    line = (f"significant edges at alpha {alpha:g} (Benjamini-Hochberg q <= alpha): "
            f"{int(np.count_nonzero(significant)):,} of {int(edges.sum()):,} ({positive:,} positive, {negative:,} negative)")
    if undefined:
        line += f"; {_plural(undefined, 'undefined edge')} (a source never targeted, or not separable)"
    lines.append(line)
    if effect.shape[0] == effect.shape[1] == per_source.size:  # sources are the responders
        own = np.diag(effect)[per_source > 0]
        own_p = np.diag(np.asarray(result.pvalue))[per_source > 0]
        defined = np.isfinite(own)
        line = f"median self-response: {format_number(np.median(own[defined]) if defined.any() else None, '.4g')}"
        if defined.any():
            clear = int(np.count_nonzero(defined & (own_p < 0.05)))
            line += (f" (each target's response to its own stimulation; {clear:,} of "
                     f"{_plural(int(defined.sum()), 'target')} with p < 0.05)")
        lines.append(line)
    return "\n".join(lines)


def _trials_command(args) -> int:
    from ..io.peristimulus import peristimulus
    from ..io.responses import estimate_trials
    from ..io.store import write_trial_estimates
    from ..report import report_trials, strongest_edges, trace_span

    path, out, store = _check_trial_options(args)
    window = args.window if args.window is not None else (0.0, 1.0)
    baseline = args.baseline
    method = args.method or "regression"
    alpha = args.alpha if args.alpha is not None else 0.05
    recording = _read_recording(path, args)
    try:
        timing = f"baseline {baseline[0]:g} to {baseline[1]:g} s" if baseline is not None else "no baseline"
        print(f"{PROG} estimate: {recording.description}", flush=True)
        print(f"window {window[0]:g} to {window[1]:g} s from each onset, {timing}, method {method}", flush=True)
        display = ProgressBar(enabled=not args.no_progress, unit="frames")
        try:
            result = estimate_trials(recording, window=window, baseline=baseline, method=method,
                                     chunk_steps=args.chunk_steps, progress=display)
        except KeyboardInterrupt:
            raise Interrupted("interrupted; nothing was written") from None
        finally:
            display.close()
        if result.n_trials == 0:
            raise UsageError(
                f"no trial could be used: all {result.n_dropped:,} were dropped ({_drop_reasons(result)}); "
                f"--window {window[0]:g},{window[1]:g}"
                + (f" and --baseline {baseline[0]:g},{baseline[1]:g}" if baseline is not None else "")
                + " must fit the recording around the onsets; nothing was written")
        print()
        print(trial_summary(result, alpha), flush=True)
        pairs = strongest_edges(result, alpha, _N_TRACED)
        traces = None
        if pairs.size:
            print(f"peri-stimulus traces of the {_plural(pairs.shape[0], 'strongest edge')}: one more pass",
                  flush=True)
            display = ProgressBar(enabled=not args.no_progress, unit="frames")
            try:
                traces = peristimulus(recording, None, pairs, span=trace_span(window, baseline),
                                      chunk_steps=args.chunk_steps, progress=display)
            except KeyboardInterrupt:
                raise Interrupted("interrupted; nothing was written") from None
            finally:
                display.close()
    finally:
        io = getattr(recording, "io", None)
        if io is not None:
            io.close()

    attrs = {"source": str(path), "arrays": {"activity": args.activity, "trials": args.trials,
                                             "targets": args.targets or "targets", "bin_size": args.bin_size},
             "command": "estimate"}
    write_trial_estimates(store, result, alpha=alpha, attrs=attrs, new=True)
    print(f"wrote effect, stderr, pvalue, qvalue, significant, undefined, trials_per_source, ids to {store}")
    for written in report_trials(result, out, peristimulus_traces=traces, alpha=alpha):
        print(f"wrote {written}")
    return 0
