"""The chunk's dense co-moment product, as single-threaded BLAS calls on a fixed split.

Numba's worker threads and OpenBLAS's own thread pool both spin while they wait for
work. A chunk alternates between them (the sample kernel, then the product), and on a
machine with few cores each pool's spinning slows the other one down. So the product
``D.T @ E`` is cut into a fixed number of row blocks (a function of the shape only,
never of a thread count, so the bits never depend on one) and each block is one BLAS
call made while OpenBLAS is held to one thread, from a small pool of Python threads
(NumPy releases the GIL in the product). Where OpenBLAS's controls are not found
(another BLAS), it is NumPy's product as is.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["product_tn"]

MODE = os.environ.get("STREAMCAUSAL_BLAS_MODE", "split")
_SPLIT_ROWS = 64  # below this many output rows, one call; else two row blocks

_lock = threading.Lock()
_state: dict = {}


def _openblas_libraries():
    seen = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if "/" in line else ""
                if "openblas" in os.path.basename(path).lower() and path not in seen:
                    seen.append(path)
    except OSError:
        pass
    numpy_libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(numpy_libs, "*openblas*"))):
        if path not in seen:
            seen.append(path)
    return seen


def _thread_controls():
    """(get, set) of OpenBLAS's thread count in the library NumPy uses, or None."""
    for path in _openblas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "")):
            try:
                get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
            except AttributeError:
                continue
            get.restype = ctypes.c_int
            set_.argtypes = [ctypes.c_int]
            set_.restype = None
            return get, set_
    return None


def _setup():
    with _lock:
        if not _state:
            _state["controls"] = _thread_controls()
            _state["pool"] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="streamcausal-blas")
        return _state["controls"], _state["pool"]


def _block(D, E, out, lo, hi):
    np.matmul(D[:, lo:hi].T, E, out=out[lo:hi])


def product_tn(D, E, out):
    """``out[:] = D.T @ E`` for time-major float64 ``D`` (k, m), ``E`` (k, n) and C-contiguous ``out`` (m, n)."""
    controls, pool = _setup()
    if controls is None or MODE == "numpy":
        np.matmul(D.T, E, out=out)
        return out
    get, set_ = controls
    m = D.shape[1]
    with _lock:  # the thread count is process-wide: one product at a time holds it to 1
        previous = get()
        set_(1)
        try:
            if m < _SPLIT_ROWS or MODE == "single":
                np.matmul(D.T, E, out=out)
            else:
                half = m // 2
                futures = [pool.submit(_block, D, E, out, 0, half), pool.submit(_block, D, E, out, half, m)]
                for future in futures:
                    future.result()
        finally:
            set_(previous)
    return out
