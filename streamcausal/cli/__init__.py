"""The ``streamcausal`` command line: it parses options, calls the library and prints.

Subcommands, one module each: ``run`` (simulate and estimate, seeds across Dask workers,
progress, summary table, report), ``estimate`` (out-of-core estimate of a recording in
a Zarr store), ``follow`` (the estimate of a recording that is still growing, served
over HTTP), ``report`` (PNG figures of a store) and ``tutorial`` (the course,
reproduced). Each module has ``add_parser(subparsers)`` and ``command(args) -> int``;
add a subcommand by writing one and listing it in ``SUBCOMMANDS``.

User errors (bad options, the CLI's own checks, and the ``ValueError``/``TypeError`` that
the library's checks raise on purpose, StoreError included) become one line
``streamcausal: error: ...`` on stderr and exit status 2. Any other ``ValueError`` or
``TypeError`` (raised inside NumPy, Zarr or the interpreter: a bug) keeps its traceback
(see :func:`streamcausal._errors.raised_on_purpose`). Damaged data in a store (a missing
or undecodable chunk, a failed checksum: :class:`~streamcausal.io.store.StoreCorruptError`)
is a data error: one line naming the array and chunk, exit status 1. Ctrl-C stops a command with
one line saying what was kept (and how to resume a run) and exit status 130. Progress
goes to stderr; results go to stdout.
"""

from __future__ import annotations

import argparse
import sys

from .._errors import raised_on_purpose
from .._version import __version__
from . import estimate, follow, report, run, tutorial
from .options import PROG, Interrupted, UsageError, epilog

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "SUBCOMMANDS", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# name -> module with add_parser(subparsers) and command(args), in the order --help lists them.
SUBCOMMANDS = {"run": run, "estimate": estimate, "follow": follow, "report": report, "tutorial": tutorial}


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors raise instead of printing usage and exiting."""

    def error(self, message):  # noqa: D102 (argparse API)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Causal connectivity of neural networks by perturbation, streamed out of core.",
        epilog=epilog(
            f"""
            examples:
              {PROG} run                          # the tutorial's network, all cores, seconds
              {PROG} run --neurons 100 --steps 1e8 --store n100.zarr
              {PROG} estimate n100.zarr --lag 2
              {PROG} follow rec.zarr --output rec-live.zarr --serve 8000
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
    for module in SUBCOMMANDS.values():
        module.add_parser(subparsers)
    return parser


def _fail(message, status: int, prefix: str = f"{PROG}: error: ") -> int:
    text = " ".join(str(message).split())  # always one line
    print(f"{prefix}{text}", file=sys.stderr, flush=True)
    return status


def _is_data_error(error) -> bool:
    """A store's damaged data (StoreCorruptError), not a bad input; zarr is imported only if already loaded."""
    store_module = sys.modules.get("streamcausal.io.store")
    return store_module is not None and isinstance(error, store_module.StoreCorruptError)


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        return _fail(error, EXIT_USAGE)
    except SystemExit as stop:  # --help and --version
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    args._argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return SUBCOMMANDS[args.command].command(args)
    except Interrupted as stop:
        return _fail(stop, EXIT_INTERRUPTED, prefix=f"{PROG}: ")
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED, prefix=f"{PROG}: ")
    except UsageError as error:
        return _fail(error, EXIT_USAGE)
    except (ValueError, TypeError) as error:
        if _is_data_error(error):
            return _fail(error, EXIT_FAILURE)
        if not raised_on_purpose(error):
            raise  # a bug, not a bad input: its traceback must show
        return _fail(error, EXIT_USAGE)
    except OSError as error:
        return _fail(error, EXIT_FAILURE)
