"""The ``streamcausal`` command line: subcommands, and the only module that prints.

Subcommands: ``run`` (simulate and estimate, seeds across Dask workers, progress, summary
table, report), ``estimate`` (out-of-core estimate of a recording in a Zarr store),
``report`` (PNG figures of a store) and ``tutorial`` (the course, reproduced).

Add a subcommand by writing ``_add_<name>(subparsers)`` and ``_cmd_<name>(args) -> int``
and registering both in ``_SUBCOMMANDS``. User errors (bad arguments, and the
``ValueError``/``TypeError`` raised by the library's argument checks, including
:class:`~streamcausal.store.StoreError`) become one line ``streamcausal: error: ...`` on
stderr and exit status 2. Ctrl-C stops a run with one line saying how to resume it and
exit status 130. Progress goes to stderr; results go to stdout.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
import textwrap
import time
from pathlib import Path

from . import __version__

PROG = "streamcausal"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """A command-line mistake; reported as one line and exit status 2."""


class _Interrupted(Exception):
    """Ctrl-C: reported as one line (how to resume) and exit status 130."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors raise instead of printing usage and exiting."""

    def error(self, message):  # noqa: D102 (argparse API)
        raise _UsageError(message)


def _count(minimum: int):
    """An argparse ``type`` for counts: ``5000``, ``5_000`` and ``5e3`` all mean 5000."""

    def parse(text: str) -> int:
        cleaned = text.strip()
        try:
            value = int(cleaned, 10)
        except ValueError:
            try:
                number = float(cleaned)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"must be an integer >= {minimum}, got {text!r}"
                ) from None
            if not number.is_integer():
                raise argparse.ArgumentTypeError(
                    f"must be an integer >= {minimum}, got {text!r}"
                ) from None
            value = int(number)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in some messages
    return parse


def _non_negative_int(text: str) -> int:
    return _count(0)(text)


def _seed_type(text: str) -> int:
    """A seed: an integer in [0, 2**32)."""
    value = _count(0)(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), got {text!r}")
    return value


def _real(low: float, high: float, *, low_inclusive: bool = False, high_inclusive: bool = True):
    """An argparse ``type`` for a finite real number in an interval (``1e-3`` and ``0.5`` accepted)."""
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    interval = f"{left}{low:g}, {'inf' if math.isinf(high) else format(high, 'g')}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text.strip().replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}") from None
        above = value > low or (low_inclusive and value == low)
        below = value < high or (high_inclusive and value == high)
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}")
        return value

    parse.__name__ = f"number in {interval}"
    return parse


def _epilog(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def _paragraph(text: str) -> str:
    """A description wrapped for RawDescriptionHelpFormatter (which keeps line breaks)."""
    return textwrap.fill(" ".join(text.split()), width=88)


# ----------------------------------------------------------------------------- tutorial


def _add_tutorial(subparsers) -> None:
    parser = subparsers.add_parser(
        "tutorial",
        help="reproduce the Neuromatch interventions tutorial: numbers and figures",
        description=(
            "Reproduce the course end to end with streamcausal.tutorial: print the "
            "two-neuron difference in means, the single-neuron and all-neuron estimates "
            "and their correlations with the true connectivity, and write the course's "
            "figures as PNG files into --out."
        ),
        epilog=_epilog(
            """
            examples:
              streamcausal tutorial --out figures
              streamcausal tutorial --out figures --neurons 10 --steps 2e4
              python -m streamcausal tutorial --out /tmp/tutorial --steps 5_000

            With the defaults (6 neurons, 5000 steps) the printed numbers are the
            course's: 0.9907195190159408 and 0.987593404378358.
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for the PNG figures (created if missing)")
    parser.add_argument("--neurons", type=_count(2), default=6, metavar="N",
                        help="number of neurons (default: 6)")
    parser.add_argument("--steps", type=_count(2), default=5000, metavar="T",
                        help="time steps per simulation (default: 5000)")
    parser.add_argument("--selected-neuron", type=_non_negative_int, default=1, metavar="K",
                        help="source neuron for the single-neuron estimate (default: 1)")


def _format_vector(values) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def _cmd_tutorial(args) -> int:
    import numpy as np

    from . import plots, tutorial
    from ._validation import check_index

    n, steps = args.neurons, args.steps
    selected = check_index(args.selected_neuron, "--selected-neuron", n)
    out = args.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a directory, got existing file {str(out)!r}")

    difference = tutorial.two_neuron_difference_in_means()
    print(f"two-neuron difference in means (seed 12, 5000 trials per arm): {difference!r}")

    A = tutorial.create_connectivity(n)
    if not np.all(np.isfinite(A)) or not np.any(A):
        raise ValueError(
            f"--neurons {n}: the course's create_connectivity({n}) (seed 42) draws no "
            "connection at all; choose another number of neurons"
        )
    standard = tutorial.simulate_neurons(A, steps)  # reseeds the global RNG itself
    # The course's numbers need create_connectivity immediately before the perturbed
    # simulation, which continues the global stream: draw nothing in between.
    A = tutorial.create_connectivity(n)
    perturbed = tutorial.simulate_neurons_perturb(A, steps)

    single = tutorial.get_perturbed_connectivity_from_single_neuron(perturbed, selected)
    R = tutorial.get_perturbed_connectivity_all_neurons(perturbed)
    with np.errstate(invalid="ignore", divide="ignore"):
        single_score = float(np.corrcoef(A[:, selected], single)[1, 0])
        all_score = tutorial.score(A, R)
    print(f"connectivity A ({n} neurons, seed 42): {np.count_nonzero(A)} nonzero weights")
    print(f"single-neuron estimate, effect of neuron {selected} onto each neuron: "
          f"{_format_vector(single)}")
    print(f"correlation of single-neuron estimate with A[:, {selected}]: {single_score!r}")
    print(f"correlation of all-neuron estimate R with A "
          f"(corrcoef(A.T.flatten(), R.flatten())[1, 0]): {all_score!r} "
          f"(15 significant digits: {all_score:.15g})")

    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "connectivity.png": lambda: plots.plot_connectivity_graph_matrix(A),
        "activity.png": lambda: plots.plot_activity(standard.T),
        "standard_vs_perturbed.png": lambda: plots.plot_standard_vs_perturbed(
            standard.T, perturbed.T),
        f"true_vs_estimated_neuron{selected}.png": lambda: plots.plot_true_vs_estimated(
            single, A, selected_neuron=selected),
        "true_vs_estimated_all.png": lambda: plots.plot_true_vs_estimated(R.T, A),
        "summary.png": lambda: plots.plot_tutorial_summary(A, R.T),
    }
    for name, make in figures.items():
        path = out / name
        make().savefig(path, dpi=100)
        print(f"wrote {path}")
    return EXIT_OK



# ----------------------------------------------------------------------------- output helpers


def _format_number(value, spec: str = ".4g", missing: str = "n/a") -> str:
    """``value`` formatted with ``spec``, or ``missing`` for None/NaN."""
    if value is None:
        return missing
    value = float(value)
    return format(value, spec) if math.isfinite(value) else missing


def _format_rate(value) -> str:
    """Steps per second as ``950``, ``12.3k``, ``4.56M``."""
    if value is None or not math.isfinite(value) or value <= 0:
        return "n/a"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _format_count(value) -> str:
    """A count as ``950``, ``9,999``, ``12.3k``, ``4.56M``, ``1G`` (exact below 10,000)."""
    value = int(value)
    if value < 10_000:
        return f"{value:,}"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}"
    return str(value)


def _format_duration(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def _table(headers, rows) -> str:
    """Rows of strings as a plain aligned table (first column left, the others right)."""
    widths = [max(len(str(row[k])) for row in [headers, *rows]) for k in range(len(headers))]

    def line(row):
        cells = [str(row[0]).ljust(widths[0])]
        cells += [str(cell).rjust(width) for cell, width in zip(row[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


class _ProgressDisplay:
    """``progress(done, total[, info])`` callback drawing on stderr.

    On a terminal: one line redrawn with ``\r`` (bar, percent, steps/s, ETA, score, mean
    SE), at most ten times a second. Otherwise (a log file, a pipe): a plain line at every
    further 10 % and at least every 30 s, so that logs stay readable.
    """

    _WIDTH = 20

    def __init__(self, stream=None, *, enabled=True, resuming=False, unit="steps"):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.unit = unit
        self.began = time.monotonic()
        # Rates count only the steps done in this process. A resumed seed's first report
        # includes the steps it had done before: those jumps are left out of the rate.
        self.resuming = resuming
        self.offset = 0
        self.previous = 0
        self.seen = set()
        self.info = {}
        self.last_draw = -math.inf
        self.last_log = self.began
        self.next_fraction = 0.1
        self.drawn = False
        self.state = None
        self.logged_state = None

    def __call__(self, done, total, info=None):
        now = time.monotonic()
        seed = info.get("seed") if info else None
        if self.resuming and seed not in self.seen:
            self.seen.add(seed)
            self.offset += max(0, done - self.previous)
        self.previous = done
        if info:
            self.info = info
        self.state = (done, total, now)
        if not self.enabled:
            return
        finished = total > 0 and done >= total
        if self.tty:
            if finished or now - self.last_draw >= 0.1:
                width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
                line = self._line(done, total, now, bar=True)[:width]
                self.stream.write("\r" + line.ljust(width))
                self.stream.flush()
                self.drawn = True
                self.last_draw = now
            return
        fraction = done / total if total else 1.0
        if (finished and self.logged_state is None) or (
            not finished and (fraction >= self.next_fraction or now - self.last_log >= 30)
        ) or (finished and self.logged_state[0] < total):
            self._log(done, total, now)
            while self.next_fraction <= fraction:
                self.next_fraction += 0.1

    def _log(self, done, total, now):
        self.stream.write(self._line(done, total, now, bar=False) + "\n")
        self.stream.flush()
        self.last_log = now
        self.logged_state = (done, total)

    def _rate(self, done, now):
        elapsed = now - self.began
        fresh = done - self.offset
        return fresh / elapsed if elapsed > 0 and fresh > 0 else None

    def _line(self, done, total, now, *, bar):
        fraction = min(1.0, done / total) if total else 1.0
        rate = self._rate(done, now)
        eta = (total - done) / rate if rate else None
        parts = []
        if bar:
            filled = int(round(fraction * self._WIDTH))
            parts.append("[" + "#" * filled + "-" * (self._WIDTH - filled) + "]")
        else:
            parts.append("progress:")
        parts.append(f"{100 * fraction:5.1f}%")
        parts.append(f"{_format_count(done)}/{_format_count(total)} {self.unit}")
        parts.append(f"{_format_rate(rate)}/s")
        parts.append(f"ETA {_format_duration(0.0 if done >= total else eta)}")
        if self.info.get("score") is not None:
            parts.append(f"score {self.info['score']:.4f}")
        if self.info.get("mean_se") is not None:
            parts.append(f"SE {self.info['mean_se']:.2e}")
        return "  ".join(parts)

    def close(self):
        """End the bar's line (on a terminal) or log the last state (when not yet logged)."""
        if not self.enabled:
            return
        if self.tty:
            if self.drawn:
                self.stream.write("\n")
                self.stream.flush()
                self.drawn = False
        elif self.state is not None and self.logged_state != self.state[:2]:
            self._log(*self.state)


def _quiet_dask() -> None:
    """Keep Dask's own logging and warnings off the terminal (here and in worker processes)."""
    import logging
    import warnings

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
    import distributed  # noqa: F401  (configures its loggers on import; then quiet them)

    for name in ("distributed", "distributed.nanny", "distributed.worker", "distributed.scheduler",
                 "distributed.core", "distributed.comm", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


# ----------------------------------------------------------------------------- stores


def _local_path(text) -> Path | None:
    text = os.fspath(text)
    if "://" in text and not text.startswith("file://"):
        return None
    return Path(text.removeprefix("file://")).expanduser()


def _open_group(path, what: str):
    """Open an existing Zarr group read-only, or raise a one-line ValueError."""
    import zarr

    local = _local_path(path)
    if local is not None and not local.exists():
        raise ValueError(f"{what}: no such store {str(path)!r}")
    if local is not None and not local.is_dir():
        raise ValueError(f"{what}: {str(path)!r} is a file, not a Zarr store directory")
    try:
        return zarr.open_group(os.fspath(path), mode="r")
    except Exception as error:  # GroupNotFoundError, a foreign directory, a bad URL
        raise ValueError(f"{what}: {str(path)!r} is not a Zarr store ({type(error).__name__}: {error})") from None


def _run_header(group):
    """The ``streamcausal`` header of a run store, or None for any other group."""
    header = dict(group.attrs).get("streamcausal")
    if isinstance(header, dict) and header.get("kind") == "run":
        return header
    return None


def _read_run_store(path):
    """(parameters, connectivity) of the run store at ``path``, for --resume."""
    from .store import SCHEMA_VERSION, StoreError

    group = _open_group(path, "--resume")
    header = _run_header(group)
    if header is None:
        raise StoreError(f"--resume: {str(path)!r} is not a streamcausal run store (no 'streamcausal' run attributes)")
    if header.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            f"--resume: store {str(path)!r} has schema version {header.get('schema_version')!r}; "
            f"this streamcausal reads schema {SCHEMA_VERSION}"
        )
    parameters = dict(group.attrs).get("parameters", {})
    if "connectivity" not in group:
        raise StoreError(f"--resume: store {str(path)!r} has no 'connectivity' array")
    return parameters, group["connectivity"][...]


def _check_new_store_path(path, overwrite) -> None:
    """Refuse, before anything runs, a path that a new run must not (or cannot) write to."""
    local = _local_path(path)
    if local is None or not local.exists():
        return
    if not local.is_dir():
        raise ValueError(f"--store {str(path)!r} is a file, not a Zarr store directory")
    if not any(local.iterdir()):
        return
    if not (local / "zarr.json").exists():
        # zarr would empty the directory to create the store: never do that to foreign files.
        raise ValueError(
            f"--store {str(path)!r} is a non-empty directory that is not a Zarr store; "
            "refusing to write a run into it"
        )
    group = _open_group(path, "--store")
    if _run_header(group) is None:
        if len(list(group.keys())) or dict(group.attrs):
            raise ValueError(f"--store {str(path)!r} is a Zarr store but not a streamcausal run "
                             "store; refusing to replace it")
    elif not overwrite:
        raise ValueError(f"store {str(path)!r} already holds a run; pass --resume to continue it "
                         "or --overwrite to replace it")


def _is_resumable(path) -> bool:
    try:
        return _run_header(_open_group(path, "--store")) is not None
    except ValueError:
        return False


# Library parameter names (as in resume mismatch messages) -> the options that set them.
_OPTION_OF = {
    "n_neurons": "--neurons",
    "A (connectivity)": "--neurons/--density/--connectivity-seed",
    "design": "--every/--p/--clamp/--observe",
    "seeds": "--seed/--seeds",
    "rng": "--rng",
    "chunk_steps": "--chunk-steps",
    "n_steps": "--steps",
    "dtype": "--dtype",
    "save_trajectory": "--save-trajectory",
}


def _cli_store_message(message: str) -> str:
    """Reword a StoreError for the command line (option names instead of keyword arguments)."""
    message = message.replace("pass resume=True to continue it or overwrite=True to replace it",
                              "pass --resume to continue it or --overwrite to replace it")
    if message.startswith("cannot resume"):
        for name, option in _OPTION_OF.items():
            if f": {name} differs" in message:
                message += f"; it is set by {option} (leave it out to use the stored value)"
                break
    return message


# ----------------------------------------------------------------------------- run

RUN_DEFAULTS = {
    "neurons": 6,
    "density": 0.1,
    "connectivity_seed": 42,
    "steps": 2_000_000,
    "every": 2,
    "p": 0.5,
    "clamp": "all",
    "seed": 0,
    "rng": "default",
    "dtype": "float32",
}


def _default_seeds() -> int:
    return os.cpu_count() or 1


def cli_chunk_steps(n_neurons: int, n_steps: int) -> int:
    """The command line's default ``--chunk-steps``: the library default, smaller for short runs.

    At most ``default_chunk_steps(n)``, and at most ``n_steps / 64`` (but at least 4096)
    so that a run of a few million steps still has dozens of chunks: a smooth progress
    bar and several convergence points (they are recorded at chunk ends).
    """
    from .engine import default_chunk_steps

    return int(min(default_chunk_steps(n_neurons), max(4096, -(-n_steps // 64))))


def _add_run(subparsers) -> None:
    cores = _default_seeds()
    parser = subparsers.add_parser(
        "run",
        help="simulate a network under a design and stream its connectivity estimate",
        description=_paragraph(
            "Simulate x[t+1] = sigmoid(A x[t] + noise) under a perturbation design (or "
            "observation), fold every (stimulation, outcome) pair into streaming moments, "
            "and estimate A. Independent seeds run as Dask tasks on a LocalCluster (or an "
            "existing cluster) and are merged in a fixed order. Shows progress on stderr, "
            "prints a summary table (per seed and merged: score, mean SE, samples, steps, "
            "throughput) and writes a report of PNG figures. With no options: the "
            f"tutorial's network of 6 neurons and design, {RUN_DEFAULTS['steps']:,} steps "
            f"per seed, one seed per core ({cores} here)."
        ),
        epilog=_epilog(
            """
            examples:
              streamcausal run
              streamcausal run --neurons 100 --density 0.05 --steps 1e8 --seeds 8
              streamcausal run --observe --steps 5_000_000 --seeds 1
              streamcausal run --every 4 --p 0.2 --clamp stimulated --target-se 1e-3 --steps 1e9
              streamcausal run --store runs/n100.zarr --save-trajectory --dtype float64
              streamcausal run --store runs/n100.zarr --resume      # continue after Ctrl-C or a crash
              streamcausal run --scheduler tcp://10.0.0.5:8786 --seeds 64 --steps 1e9

            Counts accept 1e8, 100_000_000 and 100000000. The score is the correlation
            of the correlation estimate with the true A over all edges; mean SE is the
            mean per-edge standard error of the effect estimate from the moments; the
            merged row's seed-to-seed SE is the same quantity from the spread between
            seeds (an independent check). With --resume, options left out are taken
            from the store; options given must match it.
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    network = parser.add_argument_group("network")
    network.add_argument("--neurons", type=_count(2), metavar="N",
                         help=f"number of neurons (default: {RUN_DEFAULTS['neurons']})")
    network.add_argument("--density", type=_real(0.0, 1.0), metavar="D",
                         help="probability of each connection, in (0, 1] "
                              f"(default: {RUN_DEFAULTS['density']}, the tutorial's)")
    network.add_argument("--connectivity-seed", type=_seed_type, metavar="S",
                         help="random_state of create_connectivity (default: "
                              f"{RUN_DEFAULTS['connectivity_seed']}, the tutorial's)")
    design = parser.add_argument_group(
        "design", "the tutorial's design by default: clamp every 2nd step, p=0.5, clamp all")
    design.add_argument("--every", type=_count(2), metavar="K",
                        help="clamp on every K-th step (default: 2)")
    design.add_argument("--p", type=_real(0.0, 1.0, high_inclusive=False), metavar="P",
                        help="probability that a neuron is stimulated on a clamped step, in (0, 1) "
                             "(default: 0.5)")
    design.add_argument("--clamp", choices=("all", "stimulated"),
                        help="clamp all neurons to their 0/1 stimulation, or only the stimulated "
                             "ones to 1 (default: all)")
    design.add_argument("--observe", action="store_true",
                        help="observational run: clamp nothing and use (x[t], x[t+1]) pairs "
                             "(not with --every/--p/--clamp)")
    work = parser.add_argument_group("work")
    work.add_argument("--steps", type=_count(2), metavar="T",
                      help=f"time steps per seed (default: {RUN_DEFAULTS['steps']:,})")
    work.add_argument("--seeds", type=_count(1), metavar="K",
                      help=f"number of independent seeds (default: one per core, {cores} here); "
                           "1 runs in this process without Dask")
    work.add_argument("--seed", type=_seed_type, metavar="S",
                      help="first seed; the seeds are S, S+1, ... (default: 0)")
    work.add_argument("--chunk-steps", type=_count(1), metavar="C",
                      help="steps per chunk (default: the library's default_chunk_steps(N), at "
                           "most T/64 and at least 4096); the result depends on it")
    work.add_argument("--rng", choices=("default", "legacy"),
                      help="random streams: per-chunk streams (default) or the tutorial's "
                           "global MT19937 order")
    work.add_argument("--target-se", type=_real(0.0, math.inf), metavar="X",
                      help="stop once the merged mean per-edge standard error is about X "
                           "(each seed stops at X*sqrt(K)), or at --steps")
    dask = parser.add_argument_group("parallel (several seeds)")
    dask.add_argument("--scheduler", metavar="ADDRESS",
                      help="run the seeds on an existing Dask cluster, e.g. tcp://host:8786 "
                           "(default: start a LocalCluster)")
    dask.add_argument("--workers", type=_count(1), metavar="W",
                      help="worker processes of the LocalCluster (default: one per core, at "
                           "most one per seed)")
    storage = parser.add_argument_group("store")
    storage.add_argument("--store", metavar="PATH",
                         help="Zarr store for checkpoints, estimates and the trajectory; a run "
                              "with a store can be resumed")
    storage.add_argument("--resume", action="store_true",
                         help="continue the run in --store where each seed stopped")
    storage.add_argument("--overwrite", action="store_true",
                         help="replace a run already in --store")
    storage.add_argument("--save-trajectory", action="store_true",
                         help="write the (T, N) activity, stimulation and clamped arrays to --store")
    storage.add_argument("--dtype", choices=("float32", "float64"),
                         help="storage type of the saved activity (default: float32)")
    storage.add_argument("--checkpoint-seconds", type=_real(0.0, math.inf, low_inclusive=True),
                         metavar="S", help="checkpoint after a chunk once S seconds have passed "
                                           "since the last checkpoint; 0: after every chunk "
                                           "(default: 5)")
    output = parser.add_argument_group("output")
    output.add_argument("--report", type=Path, metavar="DIR",
                        help="directory for the report's PNG figures (default: <store>-report "
                             "beside --store, without its .zarr suffix; streamcausal-report "
                             "without a store)")
    output.add_argument("--no-report", action="store_true", help="do not write a report")
    output.add_argument("--no-progress", action="store_true", help="do not show progress on stderr")


def _resolve_run(args, stored):
    """The run's A, design and work, from the options, the store (on --resume) and the defaults."""
    import numpy as np

    from .designs import Observation, Perturbation, design_from_dict
    from .network import create_connectivity

    stored_parameters, stored_A = stored if stored is not None else ({}, None)

    def pick(name, stored_name=None):
        value = getattr(args, name)
        if value is not None:
            return value
        if stored is not None and (stored_name or name) in stored_parameters:
            return stored_parameters[stored_name or name]
        return RUN_DEFAULTS[name]

    network_given = any(getattr(args, name) is not None
                        for name in ("neurons", "density", "connectivity_seed"))
    if stored is not None and not network_given:
        A = np.asarray(stored_A, dtype=np.float64)
        network = f"{A.shape[0]} neurons (connectivity from the store)"
    else:
        neurons = args.neurons if args.neurons is not None else RUN_DEFAULTS["neurons"]
        density = args.density if args.density is not None else RUN_DEFAULTS["density"]
        cseed = (args.connectivity_seed if args.connectivity_seed is not None
                 else RUN_DEFAULTS["connectivity_seed"])
        A = create_connectivity(neurons, density, random_state=cseed)
        network = f"{neurons} neurons (density {density:g}, connectivity seed {cseed})"
    edges = int(np.count_nonzero(A))
    network += f", {edges} connection{'s' if edges != 1 else ''}"

    design_given = args.observe or any(getattr(args, name) is not None for name in ("every", "p", "clamp"))
    if stored is not None and not design_given and "design" in stored_parameters:
        design = design_from_dict(stored_parameters["design"])
    elif args.observe:
        design = Observation()
    else:
        base = {"every": RUN_DEFAULTS["every"], "p": RUN_DEFAULTS["p"], "clamp": RUN_DEFAULTS["clamp"]}
        if stored is not None and stored_parameters.get("design", {}).get("kind") == "perturbation":
            base.update({k: stored_parameters["design"][k] for k in base if k in stored_parameters["design"]})
        for name in base:
            if getattr(args, name) is not None:
                base[name] = getattr(args, name)
        design = Perturbation(**base)

    if args.seeds is not None or args.seed is not None or stored is None or "seeds" not in stored_parameters:
        stored_seeds = stored_parameters.get("seeds") or []
        first = args.seed if args.seed is not None else (stored_seeds[0] if stored_seeds else RUN_DEFAULTS["seed"])
        count = args.seeds if args.seeds is not None else (len(stored_seeds) or _default_seeds())
        if first + count - 1 > 2**32 - 1:
            raise ValueError(f"--seed {first} with --seeds {count} runs past the largest seed 2**32 - 1")
        seeds = list(range(first, first + count))
    else:
        seeds = [int(s) for s in stored_parameters["seeds"]]

    n_steps = pick("steps", "n_steps")
    if args.chunk_steps is not None:
        chunk_steps = args.chunk_steps
    elif stored is not None and "chunk_steps" in stored_parameters:
        chunk_steps = stored_parameters["chunk_steps"]
    else:
        chunk_steps = cli_chunk_steps(A.shape[0], n_steps)
    save_trajectory = bool(args.save_trajectory or (stored is not None and stored_parameters.get("save_trajectory")))
    target_se = args.target_se if args.target_se is not None else (
        stored_parameters.get("target_se") if stored is not None else None)
    return {
        "A": A, "network": network, "design": design, "seeds": seeds, "n_steps": int(n_steps),
        "chunk_steps": int(chunk_steps), "rng": pick("rng"), "dtype": pick("dtype"),
        "save_trajectory": save_trajectory, "target_se": target_se,
    }


def _describe_design(design) -> str:
    if getattr(design, "kind", None) == "observation":
        return "observation (no clamping; pairs x[t], x[t+1])"
    return f"perturbation every {design.every} steps, p={design.p:g}, clamp {design.clamp}"


def _report_dir(args_report, store) -> Path:
    if args_report is not None:
        return args_report
    if store is not None and _local_path(store) is not None:
        path = _local_path(store)
        name = path.name[:-5] if path.name.endswith(".zarr") and len(path.name) > 5 else path.name
        return path.with_name(name + "-report")
    return Path("streamcausal-report")


def _resume_command(argv) -> str:
    """The command line that resumes this run: the same options, --resume, no --overwrite."""
    words = [word for word in argv if word != "--overwrite"]
    if "--resume" not in words:
        words.append("--resume")
    return f"{PROG} " + shlex.join(words)


def _cmd_run(args) -> int:
    from .engine import run

    if args.resume and args.store is None:
        raise ValueError("--resume needs --store PATH: the store of the run to continue")
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other; choose one")
    if args.save_trajectory and args.store is None:
        raise ValueError("--save-trajectory needs --store PATH to write the trajectory to")
    if args.observe and any(getattr(args, name) is not None for name in ("every", "p", "clamp")):
        given = [f"--{name}" for name in ("every", "p", "clamp") if getattr(args, name) is not None]
        raise ValueError(f"--observe cannot be combined with {'/'.join(given)}: an observational "
                         "run clamps nothing")
    if args.scheduler is not None and args.workers is not None:
        raise ValueError("--workers sizes the LocalCluster that streamcausal starts; with "
                         "--scheduler the cluster's own workers are used")
    if args.report is not None and args.report.exists() and not args.report.is_dir():
        raise ValueError(f"--report must be a directory, got existing file {str(args.report)!r}")

    stored = None
    if args.resume:
        stored = _read_run_store(args.store)
    elif args.store is not None:
        _check_new_store_path(args.store, args.overwrite)
    spec = _resolve_run(args, stored)
    seeds = spec["seeds"]
    several = len(seeds) > 1 or args.scheduler is not None
    if not several and args.workers is not None:
        raise ValueError(f"--workers {args.workers} applies when seeds run on Dask; "
                         "with --seeds 1 the run stays in this process")

    store = args.store
    if store is not None and _local_path(store) is not None:
        store = str(_local_path(store).resolve())  # Dask workers may run in another directory
    kwargs = dict(
        design=spec["design"], chunk_steps=spec["chunk_steps"], rng=spec["rng"],
        store=store, save_trajectory=spec["save_trajectory"], dtype=spec["dtype"],
        resume=bool(args.resume), overwrite=bool(args.overwrite), target_se=spec["target_se"],
    )
    if args.checkpoint_seconds is not None:
        if args.store is None:
            raise ValueError("--checkpoint-seconds needs --store PATH to write checkpoints to")
        kwargs["checkpoint_seconds"] = args.checkpoint_seconds
    if several:
        workers = None
        where = f"the Dask cluster at {args.scheduler}"
        if args.scheduler is None:
            workers = args.workers or min(_default_seeds(), len(seeds))
            where = f"a LocalCluster of {workers} worker{'s' if workers != 1 else ''}"
        kwargs.update(seeds=seeds, client=args.scheduler, workers=workers)
        _quiet_dask()
    else:
        kwargs.update(seed=seeds[0])
        where = "this process"

    seed_text = (f"seed {seeds[0]}" if len(seeds) == 1
                 else f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]})")
    print(f"{PROG} run: {spec['network']}; {_describe_design(spec['design'])}")
    print(f"  {seed_text} x {spec['n_steps']:,} steps, chunks of {spec['chunk_steps']:,} steps, "
          f"rng {spec['rng']}, on {where}"
          + (f"; store {args.store}" + (" (resuming)" if args.resume else "") if args.store else "")
          + (f"; target mean SE {spec['target_se']:g}" if spec["target_se"] is not None else ""),
          flush=True)

    display = _ProgressDisplay(enabled=not args.no_progress, resuming=bool(args.resume))
    try:
        result = run(spec["A"], spec["n_steps"], progress=display, **kwargs)
    except KeyboardInterrupt:
        display.close()
        if args.store is not None and _is_resumable(args.store):
            raise _Interrupted(f"interrupted; the store {args.store} is resumable: "
                               f"{_resume_command(args._argv)}") from None
        if args.store is not None:
            raise _Interrupted("interrupted before the run store was created; nothing to resume") from None
        raise _Interrupted("interrupted; nothing was saved (run with --store PATH to be able to resume)") from None
    except ValueError as error:
        display.close()
        from .store import StoreError

        if isinstance(error, StoreError):
            raise ValueError(_cli_store_message(str(error))) from None
        if str(error).startswith("client: "):
            raise ValueError("--scheduler: " + str(error).removeprefix("client: ")) from None
        raise
    display.close()

    print()
    print(_run_summary(result, spec))
    if args.store is not None:
        print(f"store: {args.store}")
    if not args.no_report:
        out = _report_dir(args.report, args.store)
        if args.store is not None:
            data = _report_data_from_store(args.store)
        else:
            data = _report_data_from_result(result, spec["A"])
        _print_written(_write_report(data, out), out)
    return EXIT_OK


def _steps_this_session(result, chunk_steps, n_steps):
    """Steps simulated in this process (a resumed seed started part way)."""
    resumed = int(result.parameters.get("resumed_from_chunk", 0) or 0)
    return max(0, result.n_steps - min(n_steps, resumed * chunk_steps))


def _mean(values):
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _run_summary(result, spec) -> str:
    A, chunk_steps, n_steps = spec["A"], spec["chunk_steps"], spec["n_steps"]
    several = len(result.per_seed) > 1
    headers = ["seed", "score", "mean SE", "seed-to-seed SE", "samples", "steps", "seconds", "steps/s"]
    rows = []
    fresh_total = 0
    for seed, seed_result in result.per_seed.items():
        fresh = _steps_this_session(seed_result, chunk_steps, n_steps)
        fresh_total += fresh
        rows.append([
            str(seed), _format_number(seed_result.score(A), ".6f"),
            _format_number(_mean(seed_result.stderr), ".3e"), "",
            f"{seed_result.n_samples:,}", f"{seed_result.n_steps:,}",
            f"{seed_result.seconds:.2f}", _format_rate(fresh / seed_result.seconds if seed_result.seconds > 0 else None),
        ])
    if several:
        rows.append([
            "merged", _format_number(result.score(A), ".6f"),
            _format_number(_mean(result.stderr), ".3e"),
            _format_number(_mean(result.stderr_between_seeds), ".3e"),
            f"{result.n_samples:,}", f"{result.n_steps:,}", f"{result.seconds:.2f}",
            _format_rate(fresh_total / result.seconds if result.seconds > 0 else None),
        ])
    else:
        headers.remove("seed-to-seed SE")
        for row in rows:
            del row[3]
    lines = [_table(headers, rows)]
    lines.append(textwrap.fill(
        "score: correlation of the correlation estimate with the true A over all edges; "
        "mean SE: mean per-edge standard error of the effect estimate, from the moments"
        + ("; seed-to-seed SE: the same, from the spread between seeds" if several else "")
        + "; steps/s: steps simulated by this command (a resumed run counts only the new ones) "
        "per second of wall time", width=88))
    if fresh_total < result.n_steps:
        lines.append(f"resumed: {fresh_total:,} of the {result.n_steps:,} steps were simulated now; "
                     "steps/s counts only those")
    target = spec["target_se"]
    if target is not None:
        stopped = {seed: r.n_steps for seed, r in result.per_seed.items()}
        reached = _mean(result.stderr) <= target
        lines.append(
            f"stopping rule: target mean SE {target:g} ({'reached' if reached else 'not reached'}: "
            f"{_format_number(_mean(result.stderr), '.3e')}); steps per seed: "
            + ", ".join(f"{seed}: {steps:,}" for seed, steps in stopped.items())
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- report


class _ReportData:
    """What a report shows, from a store or from a Result."""

    def __init__(self, *, A, correlation, effect, stderr, convergence, title, notes=()):
        self.A = A
        self.correlation = correlation
        self.effect = effect
        self.stderr = stderr
        self.convergence = convergence  # {label: [points]}; may be empty
        self.title = title
        self.notes = list(notes)


def _with_final_point(points, count, correlation, stderr, A):
    """``points`` ending at ``count`` samples: the final estimate is added when it is missing.

    (The convergence lists are recorded at doubling sample counts; the last mark can lie
    before the end of the run.)
    """
    import numpy as np

    from .result import score

    points = list(points or [])
    count = int(count)
    if count < 1 or (points and points[-1]["samples"] >= count):
        return points
    value = None
    if A is not None and np.shape(correlation) == np.shape(A):
        value = score(correlation, A)
    mean_se = _mean(stderr) if stderr is not None else float("nan")
    points.append({"samples": count,
                   "score": value if value is not None and math.isfinite(value) else None,
                   "mean_se": mean_se if math.isfinite(mean_se) else None})
    return points


def _report_data_from_result(result, A) -> _ReportData:
    convergence = {
        f"seed {seed}": _with_final_point(r.convergence, r.n_samples, r.correlation, r.stderr, A)
        for seed, r in result.per_seed.items()
    }
    if len(result.per_seed) > 1:
        from .plots import MERGED_LABEL

        convergence[MERGED_LABEL] = _with_final_point(
            result.convergence, result.n_samples, result.correlation, result.stderr, A)
    return _ReportData(A=A, correlation=result.correlation, effect=result.effect,
                       stderr=result.stderr, convergence=convergence,
                       title=_report_title(result.parameters))


def _report_title(parameters) -> str:
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


def _estimates_group(group, name, where):
    import zarr

    if name is not None:
        node = group.get(name) if name not in ("", ".", "/") else group
        if not isinstance(node, zarr.Group) or "effect" not in node:
            raise ValueError(f"--estimates: no estimates group {name!r} (with an 'effect' array) in {where}")
        return node
    if "estimates" in group and isinstance(group["estimates"], zarr.Group):
        return group["estimates"]
    if "effect" in group and "correlation" in group:
        return group  # written by `streamcausal estimate --output`
    return None


def _report_data_from_store(path, estimates=None) -> _ReportData:
    import numpy as np

    from .moments import CrossMoments
    from .plots import MERGED_LABEL
    from .store import SeedStore

    group = _open_group(path, "STORE")
    where = str(path)
    attrs = dict(group.attrs)
    header = _run_header(group)
    parameters = attrs.get("parameters", {}) if header is not None else {}
    A = group["connectivity"][...] if "connectivity" in group else None
    notes = []
    convergence = {}
    seeds = [int(s) for s in parameters.get("seeds", [])]
    checkpoints = {}
    for seed in seeds:
        if f"seed_{seed}" not in group:
            continue
        seed_group = group[f"seed_{seed}"]
        checkpoint = SeedStore(seed_group).read_checkpoint()
        if checkpoint is None:
            continue
        checkpoints[seed] = checkpoint
        points = checkpoint.get("convergence") or []
        if "estimates" in seed_group:  # the seed finished: its curve ends at its estimate
            estimates_group = seed_group["estimates"]
            points = _with_final_point(points, estimates_group["count"][...],
                                       estimates_group["correlation"][...],
                                       estimates_group["stderr"][...], A)
        else:  # unfinished: the curve ends at the last checkpoint
            moments = CrossMoments.from_arrays(checkpoint["arrays"])
            points = _with_final_point(points, moments.count, moments.correlation(),
                                       moments.stderr(), A)
        if points:
            convergence[f"seed {seed}"] = points

    node = _estimates_group(group, estimates, where)
    if len(seeds) > 1 and attrs.get("convergence") and "estimates" in group:
        merged = group["estimates"]
        convergence[MERGED_LABEL] = _with_final_point(
            attrs["convergence"], merged["count"][...], merged["correlation"][...],
            merged["stderr"][...], A)
    if node is not None:
        correlation, effect = node["correlation"][...], node["effect"][...]
        stderr = node["stderr"][...] if "stderr" in node else None
    elif checkpoints:
        # An unfinished run: merge the seeds' newest checkpoints, in the seeds' order.
        moments = None
        for seed in seeds:
            if seed in checkpoints:
                part = CrossMoments.from_arrays(checkpoints[seed]["arrays"])
                moments = part if moments is None else moments.merge(part)
        correlation, effect, stderr = moments.correlation(), moments.effect(), moments.stderr()
        notes.append("the run is unfinished: estimates merged from the seeds' last checkpoints")
        parameters = dict(parameters, unfinished=True)
    elif header is not None:
        raise ValueError(
            f"the run in {where} has no estimates and no checkpoint yet; continue it with "
            f"`streamcausal run --store {where} --resume`"
        )
    else:
        raise ValueError(
            f"STORE {where} holds no estimates (no 'estimates' group, no checkpoints); run "
            "`streamcausal estimate` on it first, or name the group with --estimates"
        )
    title = _report_title(parameters) if header is not None else where
    if A is not None and (A.ndim != 2 or A.shape != np.shape(effect)):
        notes.append(f"'connectivity' has shape {A.shape}, estimates {np.shape(effect)}: not compared")
        A = None
    return _ReportData(A=A, correlation=correlation, effect=effect, stderr=stderr,
                       convergence=convergence, title=title, notes=notes)


def _write_report(data: _ReportData, out: Path) -> list:
    """Render the report's figures into ``out``; return the paths written."""
    import numpy as np

    from . import plots

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"report directory {str(out)!r} is an existing file")
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
    for note in data.notes:
        print(f"note: {note}")
    return written


def _titled(fig, title):
    fig.suptitle(title, fontsize=14)
    return fig


def _print_written(paths, out) -> None:
    print(f"report: {len(paths)} figure{'s' if len(paths) != 1 else ''} in {out}")
    for path in paths:
        print(f"wrote {path}")


def _add_report(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write PNG figures of a run store (or of estimates written by `estimate`)",
        description=_paragraph(
            "Write the report's PNG figures for STORE: true vs estimated heatmaps (when "
            "the store holds the true 'connectivity'), the connectivity graph (true and "
            "estimated, edges beyond 3 standard errors), the convergence of score and mean "
            "SE against samples per seed and merged (log axes), and the distribution of "
            "the estimates on truly-zero vs truly-nonzero edges. An unfinished run is "
            "reported from its seeds' last checkpoints."
        ),
        epilog=_epilog(
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


def _cmd_report(args) -> int:
    data = _report_data_from_store(args.store, args.estimates)
    out = args.out if args.out is not None else _report_dir(None, args.store)
    _print_written(_write_report(data, out), out)
    return EXIT_OK


# ----------------------------------------------------------------------------- estimate


def _add_estimate(subparsers) -> None:
    parser = subparsers.add_parser(
        "estimate",
        help="estimate connectivity out of core from a recording in a Zarr store",
        description=_paragraph(
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
        epilog=_epilog(
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
    parser.add_argument("--seed", type=_seed_type, metavar="S",
                        help="in a run store: which seed's trajectory (default: its first seed)")
    parser.add_argument("--lag", type=_count(1), default=1, metavar="L",
                        help="steps from input to outcome (default: 1)")
    parser.add_argument("--chunk-steps", type=_count(1), metavar="C",
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


def _write_estimate_arrays(group, result, attrs) -> None:
    values = {"correlation": result.correlation, "effect": result.effect, "stderr": result.stderr}
    for name, value in values.items():
        array = group.create_array(name, shape=value.shape, dtype="float64",
                                   dimension_names=["target", "source"], overwrite=True)
        array[...] = value
    undefined = result.undefined_edges
    array = group.create_array("undefined", shape=undefined.shape, dtype="bool",
                               dimension_names=["target", "source"], overwrite=True)
    array[...] = undefined
    count = group.create_array("count", shape=(), dtype="int64", overwrite=True)
    count[...] = result.n_samples
    group.attrs.update(attrs)


def _estimate_defaults(group, args, where):
    """(activity, stimulation, steps, seed, run parameters) names for the store."""
    import zarr

    header = _run_header(group)
    parameters = dict(group.attrs).get("parameters", {}) if header is not None else {}
    seed, prefix = None, ""
    if header is not None and args.activity is None:
        seeds = [int(s) for s in parameters.get("seeds", [])]
        seed = args.seed if args.seed is not None else (seeds[0] if seeds else 0)
        if seed not in seeds:
            raise ValueError(f"--seed {seed} is not a seed of the run in {where}; its seeds are {seeds}")
        prefix = f"seed_{seed}/"
        if f"{prefix}activity" not in group:
            raise ValueError(
                f"the run in {where} kept no trajectory for seed {seed} (it ran without "
                "--save-trajectory); there is nothing to estimate from"
            )
    elif args.seed is not None and header is None:
        raise ValueError(f"--seed applies to run stores; {where} is not one (name the arrays with --activity)")
    activity = args.activity or f"{prefix}activity"
    observational = args.observational or (
        args.stimulation is None and args.activity is None
        and parameters.get("design", {}).get("kind") == "observation")
    if observational:
        stimulation = None
    else:
        stimulation = args.stimulation or f"{prefix}stimulation"
        if args.stimulation is None and not isinstance(group.get(stimulation), zarr.Array):
            raise ValueError(
                f"no stimulation array {stimulation!r} in {where}; name it with --stimulation "
                "NAME, or pass --observational to use (activity[t], activity[t + lag]) pairs"
            )
    if args.all_steps or (observational and args.steps is None and header is not None and args.activity is None):
        steps = None
    elif args.steps is not None:
        steps = args.steps
    else:
        candidate = f"{prefix}clamped"
        steps = candidate if isinstance(group.get(candidate), zarr.Array) else None
    return activity, stimulation, steps, seed, parameters


def _cmd_estimate(args) -> int:
    import numpy as np
    import zarr

    from . import recording

    where = str(args.path)
    group = _open_group(args.path, "PATH")
    activity, stimulation, steps, seed, parameters = _estimate_defaults(group, args, where)
    if args.output is not None:
        local = _local_path(args.output)
        if local is not None and local.exists() and not args.overwrite:
            raise ValueError(f"--output {args.output!r} already exists; pass --overwrite to replace it")
        if local is not None and local.exists() and local.resolve() == _local_path(args.path).resolve():
            raise ValueError("--output must differ from PATH (leave --output out to write into PATH)")
        if local is not None and local.exists() and not local.is_dir():
            raise ValueError(f"--output {args.output!r} is a file")
        if local is not None and local.is_dir() and any(local.iterdir()) and not (local / "zarr.json").exists():
            raise ValueError(f"--output {args.output!r} is a non-empty directory that is not a Zarr store")

    inputs = f"stimulation {stimulation!r}" if stimulation is not None else "observational pairs"
    selected = f"steps {steps!r}" if steps is not None else "all steps"
    print(f"{PROG} estimate: {where}: activity {activity!r}, {inputs}, {selected}, lag {args.lag}",
          flush=True)
    display = _ProgressDisplay(enabled=not args.no_progress)
    try:
        result = recording.estimate_store(
            group, activity, stimulation, steps, lag=args.lag, chunk_steps=args.chunk_steps,
            progress=display, skip_nonfinite=args.skip_nonfinite, binary=not args.real_stimulation,
        )
    except KeyboardInterrupt:
        display.close()
        raise _Interrupted("interrupted; nothing was written") from None
    finally:
        display.close()

    A = group["connectivity"][...] if "connectivity" in group else None
    if A is not None and A.shape != result.effect.shape:
        A = None
    rate = result.n_steps / result.seconds if result.seconds > 0 else None
    print()
    print(f"samples {result.n_samples:,} from {result.n_steps:,} steps in {result.seconds:.2f} s "
          f"({_format_rate(rate)} steps/s)")
    line = f"mean SE {_format_number(_mean(result.stderr), '.3e')}"
    if A is not None:
        line += (f"; score {_format_number(result.score(A), '.6f')} (correlation estimate vs the "
                 f"store's connectivity), {_format_number(result.score(A, 'effect'), '.6f')} (effect)")
    undefined = int(np.count_nonzero(result.undefined_edges))
    if undefined:
        line += f"; {undefined} undefined edge{'s' if undefined != 1 else ''} (a neuron never varied)"
    print(line)
    skipped = result.parameters.get("skipped_pairs")
    if skipped:
        print(f"skipped {skipped:,} pairs with NaN or inf")
    own = f"seed_{seed}/estimates" if seed is not None else None
    if (own is not None and args.lag == 1 and isinstance(group.get(own), zarr.Group)
            and "effect" in group[own]):
        stored = group[own]["effect"][...]
        both = np.isfinite(stored) & np.isfinite(result.effect)
        difference = float(np.max(np.abs(stored[both] - result.effect[both]))) if both.any() else float("nan")
        print(f"the run's own streamed estimate ({own}): max |difference in effect| "
              f"{_format_number(difference, '.3g')}")

    attrs = {
        "streamcausal": {"kind": "estimate", "package_version": __version__},
        "source": where,
        "arrays": {"activity": activity, "stimulation": stimulation, "steps": steps},
        "lag": args.lag,
        "samples": result.n_samples,
        "orientation": "[target, source]: entry [j, i] is the estimate for source i onto target j",
    }
    if args.output is not None:
        out_group = zarr.open_group(args.output, mode="w")
        _write_estimate_arrays(out_group, result, attrs)
        if A is not None:
            array = out_group.create_array("connectivity", shape=A.shape, dtype="float64",
                                           dimension_names=["target", "source"])
            array[...] = A
        target = str(args.output)
    else:
        parent = activity.rsplit("/", 1)[0] if "/" in activity else ""
        name = f"estimates_{'observational_' if stimulation is None else ''}lag{args.lag}"
        path = f"{parent}/{name}" if parent else name
        writable = zarr.open_group(os.fspath(args.path), mode="r+")
        _write_estimate_arrays(writable.require_group(path), result, attrs)
        target = f"{where} (group {path})"
    print(f"wrote correlation, effect, stderr, undefined, count to {target}")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser

# name -> (add the subparser, run it), in the order --help lists them.
_SUBCOMMANDS = {
    "run": (_add_run, _cmd_run),
    "estimate": (_add_estimate, _cmd_estimate),
    "report": (_add_report, _cmd_report),
    "tutorial": (_add_tutorial, _cmd_tutorial),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Causal connectivity of neural networks by perturbation, streamed out of core.",
        epilog=_epilog(
            f"""
            examples:
              {PROG} run                          # the tutorial's network, all cores, seconds
              {PROG} run --neurons 100 --steps 1e8 --store n100.zarr
              {PROG} estimate n100.zarr --lag 2
              {PROG} report n100.zarr --out n100-report
              {PROG} tutorial --out figures
              {PROG} run --help
              {PROG} --version
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    subparsers.required = True
    for add, _ in _SUBCOMMANDS.values():
        add(subparsers)
    return parser


def _fail(message: str, status: int, prefix: str = f"{PROG}: error: ") -> int:
    text = " ".join(str(message).split())  # always one line
    print(f"{prefix}{text}", file=sys.stderr, flush=True)
    return status


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        return _fail(str(error), EXIT_USAGE)
    except SystemExit as stop:  # --help and --version
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    args._argv = list(sys.argv[1:] if argv is None else argv)
    _, command = _SUBCOMMANDS[args.command]
    try:
        return command(args)
    except _Interrupted as stop:
        return _fail(str(stop), EXIT_INTERRUPTED, prefix=f"{PROG}: ")
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED, prefix=f"{PROG}: ")
    except (_UsageError, ValueError, TypeError) as error:
        return _fail(str(error), EXIT_USAGE)
    except OSError as error:
        return _fail(str(error), EXIT_FAILURE)
