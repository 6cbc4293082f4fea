"""The ``streamcausal`` command line: subcommands, and the only module that prints.

Add a subcommand by writing ``_add_<name>(subparsers)`` and ``_cmd_<name>(args) -> int``
and registering both in ``_SUBCOMMANDS``. User errors (bad arguments, and the
``ValueError``/``TypeError`` raised by the library's argument checks) become one line
``streamcausal: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from . import __version__

PROG = "streamcausal"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    """A command-line mistake; reported as one line and exit status 2."""


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


def _epilog(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


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


# ----------------------------------------------------------------------------- parser

# name -> (add the subparser, run it). Later: "run", "estimate", "report".
_SUBCOMMANDS = {
    "tutorial": (_add_tutorial, _cmd_tutorial),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Causal connectivity of neural networks by perturbation, streamed out of core.",
        epilog=_epilog(
            f"""
            examples:
              {PROG} tutorial --out figures
              {PROG} tutorial --help
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


def _fail(message: str, status: int) -> int:
    text = " ".join(str(message).split())  # always one line
    print(f"{PROG}: error: {text}", file=sys.stderr)
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
    _, run = _SUBCOMMANDS[args.command]
    try:
        return run(args)
    except (ValueError, TypeError) as error:
        return _fail(str(error), EXIT_USAGE)
    except OSError as error:
        return _fail(str(error), EXIT_FAILURE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
