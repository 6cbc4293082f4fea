"""Which errors are the user's: those streamcausal raised on purpose, as against bugs that must show a traceback.

Every check at the public boundary ends in a ``raise ValueError(...)`` (or ``TypeError``,
``StoreError``) written in this package, naming the argument and the value. An error
raised anywhere else while the package runs (inside NumPy, Zarr or Numba, or by the
interpreter itself: a bad call, an index out of range) is a bug, or an input the
package failed to check; the command line must show its traceback, not hide it in one
line. :func:`raised_on_purpose` tells the two apart from the traceback alone, so no
check anywhere has to use a special exception class.
"""

from __future__ import annotations

import dis
import linecache
from functools import lru_cache
from pathlib import Path

__all__ = ["raised_on_purpose"]

_PACKAGE = Path(__file__).resolve().parent


def _innermost(traceback):
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback


@lru_cache(maxsize=1024)
def _in_package(filename: str) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False


def _raise_offsets(code) -> frozenset:
    return frozenset(i.offset for i in dis.get_instructions(code) if i.opname == "RAISE_VARARGS")


# A traceback sent from another process (a Dask worker's, rebuilt by tblib) keeps only each
# frame's file, function and line: its code objects are stubs that raise this name.
_REBUILT_FRAME = "__traceback_maker"


def raised_on_purpose(error: BaseException) -> bool:
    """Whether ``error`` came from a ``raise`` statement in streamcausal's own code.

    True when the innermost frame of its traceback is in the package and stopped at a
    ``raise`` instruction on a line that starts with ``raise`` (for a traceback rebuilt
    from a Dask worker's, which keeps no instructions, the line decides). False for an error
    raised inside another library or by the interpreter, even when streamcausal's code
    called it, and for an error re-raised unchanged from one.
    """
    traceback = error.__traceback__
    if traceback is None:
        return False
    innermost = _innermost(traceback)
    code = innermost.tb_frame.f_code
    if not _in_package(code.co_filename):
        return False
    rebuilt = _REBUILT_FRAME in code.co_names
    if not rebuilt and innermost.tb_lasti not in _raise_offsets(code):
        return False
    line = linecache.getline(code.co_filename, innermost.tb_lineno)
    return line.lstrip().startswith("raise")
