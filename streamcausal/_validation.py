"""Argument checks shared by every public entry point; each error names the argument and value."""

from __future__ import annotations

import numbers
import sys

import numpy as np

# Floats hold every integer up to 2**53 exactly; above it they skip some.
EXACT_FLOAT_INTEGERS = 2**53


def describe(value) -> str:
    """A short repr for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as a Python int, refusing bools, floats with fractions and out-of-range values.

    A whole float is taken only up to ``EXACT_FLOAT_INTEGERS`` (2**53) in magnitude: above
    it a float no longer says which integer was meant (``int(1e30) != 10**30``).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            if abs(float(value)) > EXACT_FLOAT_INTEGERS:
                raise ValueError(f"{name} must be an exact integer, got the float {describe(value)}, above 2**53 "
                                 "where floats skip integers; pass an int")
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {describe(value)} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_real(value, name: str) -> float:
    """Return ``value`` as a finite Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {describe(value)} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_open_closed(value, name: str, low: float, high: float, *, high_inclusive: bool) -> float:
    """Return ``value`` as a float in (low, high] or (low, high)."""
    value = check_real(value, name)
    inside = low < value <= high if high_inclusive else low < value < high
    if not inside:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in ({low:g}, {high:g}{bracket}, got {value!r}")
    return value


def check_seed(value, name: str = "seed") -> int:
    """Return a non-negative integer seed (as ``np.random.seed`` accepts, below 2**32)."""
    return check_int(value, name, minimum=0, maximum=2**32 - 1)


def check_numeric_dtype(dtype, name: str, what: str = "numeric array") -> np.dtype:
    """Return ``dtype`` if it is a real number or bool dtype; refuse object, string and complex dtypes."""
    try:
        dtype = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{name} must be a {what}, got dtype {dtype!r}") from error
    if dtype.kind == "O" or not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise TypeError(f"{name} must be a {what}, got dtype {dtype}")
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got complex dtype {dtype}")
    return dtype


def as_numeric_array(value, name: str, what: str = "numeric array") -> np.ndarray:
    """``np.asarray(value)`` for a real numeric array; a clear TypeError for anything else."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a {what}, got {describe(value)}")
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged lists and other non-arrays
        raise TypeError(f"{name} must be a {what}, got {describe(value)}") from error
    check_numeric_dtype(array.dtype, name, what)
    return array


def check_float_array(value, name: str, shape: tuple[int, ...] | None, ndim: int) -> np.ndarray:
    """Return ``value`` as a C-contiguous float64 array of ``ndim`` (and ``shape``) with finite entries."""
    array = as_numeric_array(value, name)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        bad = tuple(int(k) for k in np.argwhere(~finite)[0])
        raise ValueError(f"{name} must be finite, got {array[bad]} at {name}[{', '.join(map(str, bad))}]")
    return array


def is_sparse(value) -> bool:
    """True for a SciPy sparse matrix or array (scipy.sparse is never imported here to find out)."""
    sparse = sys.modules.get("scipy.sparse")  # no sparse matrix can exist before scipy.sparse is imported
    return sparse is not None and sparse.issparse(value)


def check_connectivity(A, name: str = "A", *, dense: bool = False):
    """Return ``A`` as a float64 square matrix with finite real entries.

    A dense ``A`` (anything ``np.asarray`` takes) comes back as a C-contiguous ndarray.
    A SciPy sparse ``A`` (any format, matrix or array) is checked without densifying and
    comes back as a canonical ``scipy.sparse.csc_array``: float64, duplicates summed,
    explicit zeros dropped, row indices sorted; with ``dense=True`` as an ndarray instead
    (for callers that need one).
    """
    if is_sparse(A):
        canonical = _check_sparse_connectivity(A, name)
        return canonical.toarray() if dense else canonical
    array = as_numeric_array(A, name, "square numeric matrix")
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    return check_float_array(array, name, None, 2)


def canonical_csc(A):
    """``A`` (SciPy sparse) as a new float64 ``csc_array``: duplicates summed, explicit zeros dropped, indices sorted."""
    import scipy.sparse

    canonical = scipy.sparse.csc_array(A, dtype=np.float64, copy=True)  # a copy: the steps below work in place
    canonical.sum_duplicates()  # also sorts the indices
    canonical.eliminate_zeros()
    canonical.sort_indices()
    return canonical


def _check_sparse_connectivity(A, name: str):
    """The checks of :func:`check_connectivity` on a sparse ``A``, on its stored entries only."""
    shape = tuple(A.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} must not be empty, got shape {shape}")
    check_numeric_dtype(A.dtype, name, "square numeric matrix")
    canonical = canonical_csc(A)
    finite = np.isfinite(canonical.data)
    if not finite.all():
        # Name the first bad entry in row-major order, as the dense check does.
        bad = np.flatnonzero(~finite)
        columns = np.searchsorted(canonical.indptr, bad, side="right") - 1
        rows = canonical.indices[bad]
        first = np.lexsort((columns, rows))[0]
        row, column = int(rows[first]), int(columns[first])
        raise ValueError(f"{name} must be finite, got {canonical.data[bad[first]]} at {name}[{row}, {column}]")
    return canonical


def check_flag(value, name: str) -> bool:
    """Return ``value`` as a bool, refusing anything but True and False."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def check_callable(value, name: str):
    """Return ``value`` if it is callable or None."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {describe(value)}")
    return value


def check_index(value, name: str, size: int) -> int:
    """Return ``value`` as an index in [0, size)."""
    value = check_int(value, name)
    if not 0 <= value < size:
        raise ValueError(f"{name} must be in [0, {size}), got {value}")
    return value


def check_interval(value, name: str, *, optional: bool = False):
    """Return ``value`` as ``(start, stop)`` seconds with ``start < stop`` (None passes when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        what = "a pair (start, stop) of seconds" + (" or None" if optional else " relative to the onset")
        raise ValueError(f"{name} must be {what}, got {describe(value)}")
    start, stop = (check_real(v, name) for v in value)
    if not start < stop:
        raise ValueError(f"{name} must have start < stop, got {describe(value)}")
    return start, stop
