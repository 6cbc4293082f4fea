"""Argument checks shared by every public entry point; each error names the argument and value."""

from __future__ import annotations

import numbers

import numpy as np


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as a Python int, refusing bools, floats with fractions and out-of-range values."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {_describe(value)} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_real(value, name: str) -> float:
    """Return ``value`` as a finite Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)} ({type(value).__name__})")
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


def check_connectivity(A, name: str = "A") -> np.ndarray:
    """Return ``A`` as a C-contiguous float64 square matrix with finite real entries."""
    if isinstance(A, (str, bytes)) or A is None:
        raise TypeError(f"{name} must be a square numeric matrix, got {_describe(A)}")
    try:
        array = np.asarray(A)
    except Exception as error:  # ragged lists and other non-arrays
        raise TypeError(f"{name} must be a square numeric matrix, got {_describe(A)}") from error
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise TypeError(f"{name} must be a numeric matrix, got dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise TypeError(f"{name} must be real, got complex dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{name} must be finite, got {array[tuple(bad)]} at {name}[{bad[0]}, {bad[1]}]"
        )
    return array


def check_index(value, name: str, size: int) -> int:
    """Return ``value`` as an index in [0, size)."""
    value = check_int(value, name)
    if not 0 <= value < size:
        raise ValueError(f"{name} must be in [0, {size}), got {value}")
    return value
