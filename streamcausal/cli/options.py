"""What every subcommand's options share: argparse types, help-text helpers, the CLI's own errors."""

from __future__ import annotations

import argparse
import decimal
import math
import re
import textwrap

PROG = "streamcausal"
_DIGITS = re.compile(r"[+-]?[0-9][0-9_]*(\.[0-9_]*)?([eE][+-]?[0-9]+)?")  # 5_000, 5_000.0, 5e3


class UsageError(Exception):
    """A command-line mistake; reported as one line and exit status 2."""


class Interrupted(Exception):
    """Ctrl-C: reported as one line (what was kept, how to resume) and exit status 130."""


def count(minimum: int, maximum: int | None = None):
    """An argparse ``type`` for counts: ``5000``, ``5_000`` and ``5e3`` all mean 5000.

    Parsed exactly (``1e30`` is 10**30, not the nearest float), so a count is never
    silently changed; anything above ``maximum`` is refused.
    """
    bound = f"in [{minimum}, {maximum:.4g}]" if maximum is not None else f">= {minimum}"

    def parse(text: str) -> int:
        cleaned = text.strip()
        problem = argparse.ArgumentTypeError(f"must be an integer {bound}, got {text!r}")
        try:
            number = decimal.Decimal(cleaned.replace("_", "") if _DIGITS.fullmatch(cleaned) else cleaned)
        except decimal.InvalidOperation:
            raise problem from None
        if not number.is_finite() or number != number.to_integral_value() or abs(number.adjusted()) > 100:
            raise problem
        value = int(number)
        if value < minimum or (maximum is not None and value > maximum):
            raise problem
        return value

    parse.__name__ = f"integer {bound}"  # argparse names the type in some messages
    return parse


def non_negative_int(text: str) -> int:
    return count(0)(text)


def seed(text: str) -> int:
    """A seed: an integer in [0, 2**32)."""
    value = count(0)(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), got {text!r}")
    return value


def real(low: float, high: float, *, low_inclusive: bool = False, high_inclusive: bool = True):
    """An argparse ``type`` for a finite real number in an interval (``1e-3`` and ``0.5`` accepted)."""
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    interval = f"{left}{low:g}, {'inf' if math.isinf(high) else format(high, 'g')}{right}"

    def parse(text: str) -> float:
        problem = argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}")
        try:
            value = float(text.strip().replace("_", ""))
        except ValueError:
            raise problem from None
        above = value > low or (low_inclusive and value == low)
        below = value < high or (high_inclusive and value == high)
        if not (math.isfinite(value) and above and below):
            raise problem
        return value

    parse.__name__ = f"number in {interval}"
    return parse


def epilog(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def paragraph(text: str) -> str:
    """A description wrapped for RawDescriptionHelpFormatter (which keeps line breaks)."""
    return textwrap.fill(" ".join(text.split()), width=88)
