"""``streamcausal follow``: estimate a recording live while another process writes it, and serve the estimate over HTTP."""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
import threading
import time

from .display import format_count, format_number, format_rate
from .options import PROG, Interrupted, UsageError, count, epilog, paragraph, real, seed

_STATUS_SECONDS = 10.0  # a status line this often when stderr is not a terminal


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "follow",
        help="estimate a Zarr recording live while it is being written; serve the estimate over HTTP",
        description=paragraph(
            "Follow a recording that another process is writing: a growing Zarr recording "
            "(the writer appends rows, then raises the group attribute rows_complete, and "
            "sets finished: true at the end; see streamcausal.live.GrowingRecording) or the "
            "store of `streamcausal run --save-trajectory` still running (its complete rows "
            "are its newest checkpoint's). Every complete new row is read once and folded "
            "into the estimate; the current estimates and a checkpoint go to --output "
            "atomically every few seconds, so an interrupted follow continues with --resume "
            "without counting a row twice. Stops when the writer marks the recording "
            "finished, when every source's mean standard error reaches --target-se (and says "
            "which sources were last), or on Ctrl-C. With --serve, the estimate is served "
            "on this machine: /estimate.json, /sources.json and a page that refreshes itself."
        ),
        epilog=epilog(
            """
            examples:
              streamcausal follow rec.zarr --output rec-live.zarr --serve 8000
              streamcausal follow runs/n100.zarr --output n100-live.zarr --seed 0 --target-se 2e-3
              streamcausal follow rec.zarr --output rec-live.zarr --resume      # after Ctrl-C or a crash
              streamcausal follow rec.zarr --output rec-live.zarr --activity rates --stimulation laser \\
                  --steps laser_on --lag 2 --serve 0.0.0.0:8000     # reachable from other machines

            The output store holds two slots, estimates_a and estimates_b (effect, stderr,
            pvalue, qvalue, significant: dimensions target, source; source_mean_se; the
            follower's checkpoint in state/); its root attribute 'current' names the newest
            complete one. --serve binds to 127.0.0.1 unless HOST is given.
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", metavar="RECORDING", help="the growing Zarr recording, or a run store being written")
    parser.add_argument("--output", required=True, metavar="OUT",
                        help="Zarr store for the current estimates and the follower's checkpoint")
    arrays = parser.add_argument_group("arrays (as in `streamcausal estimate`)")
    arrays.add_argument("--activity", metavar="NAME",
                        help="the (T, n) activity array (default: 'activity', or 'seed_<s>/activity' in a run store)")
    stim = arrays.add_mutually_exclusive_group()
    stim.add_argument("--stimulation", metavar="NAME",
                      help="the (T, n_in) stimulation array (default: 'stimulation', or 'seed_<s>/stimulation')")
    stim.add_argument("--observational", action="store_true",
                      help="no stimulation: use the pairs (activity[t], activity[t + lag])")
    steps = arrays.add_mutually_exclusive_group()
    steps.add_argument("--steps", metavar="NAME",
                       help="the (T,) boolean array of perturbation steps (default: 'clamped' when present)")
    steps.add_argument("--all-steps", action="store_true", help="use every step t")
    arrays.add_argument("--seed", type=seed, metavar="S",
                        help="in a run store: which seed's trajectory (default: its first seed)")
    arrays.add_argument("--lag", type=count(1), metavar="L", default=1, help="steps from input to outcome (default: 1)")
    arrays.add_argument("--real-stimulation", action="store_true",
                        help="accept stimulation values other than 0/1 (real-valued clamps)")
    arrays.add_argument("--skip-nonfinite", action="store_true",
                        help="drop pairs with NaN or inf instead of stopping with an error")
    live = parser.add_argument_group("following")
    live.add_argument("--target-se", type=real(0.0, math.inf), metavar="X",
                      help="stop once every source's mean standard error (over its edges) is at most X")
    live.add_argument("--alpha", type=real(0.0, 1.0, high_inclusive=False), default=0.05, metavar="Q",
                      help="false-discovery rate of the significant edges (default: 0.05)")
    live.add_argument("--interval", type=real(0.0, 3600.0), default=0.5, metavar="S",
                      help="seconds between looks at the recording (default: 0.5)")
    live.add_argument("--write-seconds", type=real(0.0, math.inf, low_inclusive=True), default=2.0, metavar="S",
                      help="write the output at most every S seconds while rows arrive, and at the end (default: 2)")
    live.add_argument("--serve", metavar="[HOST:]PORT",
                      help="serve the estimate over HTTP at HOST:PORT (HOST defaults to 127.0.0.1; port 0 picks one)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --output (same arrays, lag and options)")
    resume.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--no-progress", action="store_true", help="do not show status on stderr")


def _array_names(reader, args):
    """(activity, stimulation, steps): the arrays to follow, from the options and the recording."""
    from ..live import ROWS_COMPLETE

    where = reader.where
    prefix = ""
    if reader.is_run and args.activity is None:
        seeds = reader.seeds
        chosen = args.seed if args.seed is not None else (seeds[0] if seeds else 0)
        if chosen not in seeds:
            raise UsageError(f"--seed {chosen} is not a seed of the run in {where}; its seeds are {seeds}")
        if not reader.has_trajectory(chosen):
            raise UsageError(f"the run in {where} keeps no trajectory for seed {chosen} (it runs without "
                             "--save-trajectory); there is nothing to follow")
        prefix = f"seed_{chosen}/"
    elif args.seed is not None and not reader.is_run:
        raise UsageError(f"--seed applies to run stores; {where} is not one (name the arrays with --activity)")
    if not reader.is_run and ROWS_COMPLETE not in reader.attrs:
        raise UsageError(f"RECORDING {where} is not a growing recording (no {ROWS_COMPLETE!r} attribute) nor a run "
                         f"store; a writer appends rows and then raises {ROWS_COMPLETE!r} (streamcausal.live); "
                         f"estimate a finished recording with `{PROG} estimate`")
    activity = args.activity or f"{prefix}activity"
    observational = args.observational or (
        args.activity is None and args.stimulation is None
        and reader.parameters.get("design", {}).get("kind") == "observation")
    stimulation = None
    if not observational:
        stimulation = args.stimulation or f"{prefix}stimulation"
    if args.all_steps or (observational and args.steps is None and reader.is_run and args.activity is None):
        steps = None
    elif args.steps is not None:
        steps = args.steps
    else:
        steps = f"{prefix}clamped" if reader.has_array(f"{prefix}clamped") else None
    # A growing recording may still be empty of arrays; they are checked when its first rows are counted.
    if reader.is_run or reader.attrs.get(ROWS_COMPLETE):
        for option, name in (("--activity", activity), ("--stimulation", stimulation), ("--steps", steps)):
            if name is not None and not reader.has_array(name):
                advice = "; name it, or pass --observational" if option == "--stimulation" else ""
                raise UsageError(f"{option} {name!r}: no such array in {where}{advice}")
    return activity, stimulation, steps


def _check_output(args) -> str:
    """The Follower's mode for --output, after the checks that need no writing."""
    from ..io.store import StoreError, check_new_store, is_run_store, local_path

    if local_path(args.output) is not None and local_path(args.output) == local_path(args.path):
        raise UsageError(f"--output {args.output!r} is the recording itself; choose another store")
    if is_run_store(args.output):
        raise UsageError(f"--output {args.output!r} holds a run (written by `{PROG} run`); choose another store")
    try:  # a file, a foreign non-empty directory, the recording itself: refused whatever the mode
        check_new_store(args.output, replace=True, source=args.path)
    except StoreError as error:
        raise UsageError(f"--output: {error}") from None
    directory = local_path(args.output)
    exists = directory is not None and directory.exists() and any(directory.iterdir())
    if args.resume:
        if not exists:
            raise UsageError(f"--resume: no follow output at {args.output!r} to continue")
        return "r+"
    if args.overwrite:
        return "w"
    if exists:
        raise UsageError(f"--output {args.output!r} already exists; pass --resume to continue it or "
                         "--overwrite to replace it")
    return "w-"


def _resume_command(argv) -> str:
    words = [word for word in argv if word != "--overwrite"]
    if "--resume" not in words:
        words.append("--resume")
    return shlex.join([PROG, *words])


class _Status:
    """A one-line status on stderr: redrawn in place on a terminal, every few seconds in a log."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.terminal = enabled and sys.stderr.isatty()
        self.last = 0.0
        self.drawn = False

    def __call__(self, follower) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < (0.2 if self.terminal else _STATUS_SECONDS):
            return
        self.last = now
        state = follower.state
        line = (f"rows {format_count(state.rows_consumed)} of {format_count(state.rows_complete)} complete, "
                f"{format_rate(state.rows_per_second)} rows/s, samples {format_count(state.samples)}, "
                f"mean SE {format_number(state.mean_se, '.3e')}")
        if state.reached_target is not None:
            line += f", {int(state.reached_target.sum())}/{state.reached_target.size} sources at target"
        if self.terminal:
            sys.stderr.write("\r\033[K" + line)
            self.drawn = True
        else:
            sys.stderr.write("follow: " + line + "\n")
        sys.stderr.flush()

    def close(self):
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _start_server(address):
    from ..service import EstimateServer, parse_address

    try:
        host, port = parse_address(address)
    except ValueError as error:
        raise UsageError(f"--serve: {error}") from None
    try:
        return EstimateServer(host, port).start()
    except OSError as error:
        raise UsageError(f"--serve {address}: cannot listen there ({error.strerror or error})") from None


def _summary(follower, reason) -> str:
    import numpy as np

    state = follower.state
    lines = [f"{reason_text(reason)}: {state.rows_consumed:,} rows folded, {state.samples:,} samples, "
             f"mean SE {format_number(state.mean_se, '.3e')}"]
    if state.effect is not None:
        lines.append(f"significant edges at alpha {state.alpha:g} (Benjamini-Hochberg q <= alpha): "
                     f"{int(np.count_nonzero(state.significant)):,} of {state.effect.size:,}")
    if state.convergence and state.convergence[-1].get("score") is not None:
        lines.append(f"score {state.convergence[-1]['score']:.6f} (correlation estimate vs the run's connectivity)")
    if state.target_se is not None and state.source_mean_se is not None:
        if reason == "target_se":
            last = ", ".join(f"{i} (mean SE {format_number(state.source_mean_se[i], '.3e')})"
                             for i in state.last_to_reach[:10])
            if len(state.last_to_reach) > 10:
                last += f" and {len(state.last_to_reach) - 10} more"
            lines.append(f"target SE {state.target_se:g} reached by every source; the last to reach it: "
                         f"source{'s' if len(state.last_to_reach) != 1 else ''} {last}")
        else:
            behind = np.flatnonzero(~state.reached_target)
            worst = behind[np.argsort(-np.nan_to_num(state.source_mean_se[behind], nan=np.inf))][:10]
            lines.append(f"target SE {state.target_se:g} not reached by {behind.size} of {state.reached_target.size} "
                         f"sources; furthest: " + ", ".join(
                             f"{i} ({format_number(state.source_mean_se[i], '.3e')})" for i in worst))
    return "\n".join(lines)


def reason_text(reason) -> str:
    return {"finished": "the recording is finished", "target_se": "target SE reached",
            "stopped": "stopped"}.get(reason, reason)


def command(args) -> int:
    from ..io.store import StoreError, StoreReader
    from ..live import Follower

    try:
        reader = StoreReader.open(args.path)
    except StoreError as error:
        raise UsageError(f"RECORDING: {error}") from None
    activity, stimulation, steps = _array_names(reader, args)
    mode = _check_output(args)
    server = _start_server(args.serve) if args.serve is not None else None
    stop = threading.Event()
    handlers = {}
    status = _Status(not args.no_progress)
    try:
        follower = Follower(
            reader.group, args.output, activity=activity, stimulation=stimulation, steps=steps, lag=args.lag,
            binary=not args.real_stimulation, skip_nonfinite=args.skip_nonfinite, target_se=args.target_se,
            alpha=args.alpha, write_seconds=args.write_seconds, mode=mode,
            on_state=server.publish if server is not None else None,
        )
        inputs = f"stimulation {stimulation!r}" if stimulation is not None else "observational pairs"
        selected = f"steps {steps!r}" if steps is not None else "all steps"
        print(f"{PROG} follow: {reader.where}: activity {activity!r}, {inputs}, {selected}, lag {args.lag}"
              + (f"; resuming after row {follower.rows_consumed:,}" if args.resume else ""), flush=True)
        if server is not None:
            print(f"serving {server.url} (estimate.json, sources.json)", flush=True)
        # Ctrl-C (and SIGTERM) end the loop between windows, so the checkpoint written at the end is whole.
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                handlers[signum] = signal.signal(signum, lambda *_: stop.set())
        reason = follower.follow(interval=args.interval, stop=stop, on_poll=status)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        status.close()
        if server is not None:
            server.close()
    if reason == "stopped":
        raise Interrupted(f"interrupted after {follower.rows_consumed:,} rows; {args.output} is resumable: "
                          f"{_resume_command(getattr(args, '_argv', []))}")
    print()
    print(_summary(follower, reason))
    print(f"wrote effect, stderr, pvalue, qvalue, significant, source_mean_se and the checkpoint to "
          f"{args.output} (group {follower.current_slot})")
    return 0

