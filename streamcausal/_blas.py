"""The chunk's dense co-moment product ``D.T @ E``, as single-threaded BLAS calls on a fixed split.

Numba's worker threads and OpenBLAS's own thread pool both spin for a while when they
run out of work. A chunk alternates between them (the sample kernel, then this
product), and on a machine with few cores each pool's spinning slows the other down:
measured on 2 cores at n=1000, a chunk took about 1.3-1.6x the sum of its parts. So
the product is cut along the samples into two halves whose partial products are added
(a split fixed by the shape alone, never by a thread count, so the bits never depend
on one), and each half is one BLAS call made while OpenBLAS is held to one thread,
from a pool of two Python threads (NumPy releases the GIL in the product). Cutting
along the samples rather than the rows keeps each call's output the full n x n, which
suits BLAS when n is small and the chunk long. Without OpenBLAS's thread controls
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

_SPLIT_SAMPLES = 1024  # below this many samples, one call

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
    """(get, set) of the OpenBLAS thread count in the library NumPy uses, or None."""
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
        if _state.get("pid") != os.getpid():  # first use, or a forked child (the pool's threads did not follow)
            _state["controls"] = _thread_controls()
            _state["pool"] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="streamcausal-blas")
            _state["pid"] = os.getpid()
        return _state["controls"], _state["pool"]


def _half(D, E, out):
    np.matmul(D.T, E, out=out)


def product_tn(D, E, out):
    """``out[:] = D.T @ E`` for time-major float64 ``D`` (k, m), ``E`` (k, n); ``out`` (m, n) C-contiguous.

    The thread count of OpenBLAS is process-wide: while a product holds it to one
    thread, other threads' NumPy products run single-threaded too.
    """
    controls, pool = _setup()
    if controls is None:
        np.matmul(D.T, E, out=out)
        return out
    get, set_ = controls
    k = D.shape[0]
    with _lock:
        previous = get()
        set_(1)
        try:
            if k < _SPLIT_SAMPLES:
                np.matmul(D.T, E, out=out)
            else:
                half = k // 2
                second = np.empty_like(out)
                futures = [pool.submit(_half, D[:half], E[:half], out), pool.submit(_half, D[half:], E[half:], second)]
                for future in futures:
                    future.result()
                out += second
        finally:
            set_(previous)
    return out
