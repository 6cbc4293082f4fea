"""Chunk reduction: a chunk of time-major samples to its CrossMoments (Numba blocks or one BLAS product).

The bits depend on the samples and the block size only, never on a thread count:
blocks are fixed by the shape, merged in block order, and the BLAS product is cut
along the samples into a fixed number of single-threaded calls.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from .._kernels import moments as kernels
from .._validation import check_int
from .cross import CrossMoments

__all__ = ["BLAS_PAIRS", "block_size", "chunk_moments", "one_blas_thread", "product_tn", "stimulated_moments"]

# Above this many input x output pairs a chunk's co-moment is one BLAS product; so it
# is above a quarter of it when the inputs are not all 0/1 (see chunk_moments).
BLAS_PAIRS = 128 * 128
_SPLIT_SAMPLES = 1024  # below this many samples, one BLAS call
# Above this many output entries (64 MiB) the halves' products are made a block of rows
# at a time, so that the second half never needs an output-sized buffer.
_BLOCK_VALUES = 2**23

_lock = threading.Lock()
_state: dict = {}


def block_size(n_neurons: int) -> int:
    """Samples per parallel block; a function of n only, so results never depend on threads.

    A multiple of 16, so that the kernels' loops across a block's samples have no remainder.
    """
    return int(max(16, min(4096, 2**16 // n_neurons)) // 16 * 16)


def chunk_moments(inputs, outputs, block_size, *, overwrite=False) -> CrossMoments:
    """Moments of one chunk of time-major samples, inputs (k, n_in) and outputs (k, n_out).

    Up to ``BLAS_PAIRS`` input x output pairs (a quarter of it unless the inputs are
    all 0/1), blocks of ``block_size`` samples get two-pass moments in parallel
    (``_kernels.moments._block_moments``), merged in block order. Above, the columns
    are centred (``_kernels.moments._centre_columns``; in place if ``overwrite``, else
    on copies) and the co-moment is one BLAS product (:func:`product_tn`).
    Either way the bits depend on the data and ``block_size`` only.
    """
    block_size = check_int(block_size, "block_size", minimum=1)
    (count, n_in), n_out = inputs.shape, outputs.shape[1]
    if count == 0:
        return CrossMoments(n_in, n_out)
    pairs = n_in * n_out
    mean_in, mean_out = np.empty(n_in), np.empty(n_out)
    m2_in, m2_out = np.empty(n_in), np.empty(n_out)
    if pairs > BLAS_PAIRS or (4 * pairs > BLAS_PAIRS and not kernels._is_binary(inputs, 0, count)):
        if not overwrite:
            inputs = np.array(inputs, dtype=np.float64, order="C")
            outputs = np.array(outputs, dtype=np.float64, order="C")
        kernels._centre_columns(inputs, mean_in, m2_in)  # in place: the columns are now centred
        kernels._centre_columns(outputs, mean_out, m2_out)
        comoment = product_tn(outputs, inputs, np.empty((n_out, n_in)))
        if count < 2:
            return CrossMoments.from_parts(count, mean_in, mean_out, m2_in, m2_out, comoment)
        # The parts are valid by construction: skip from_parts' checks.
        return CrossMoments.from_parts(count, mean_in, mean_out, m2_in, m2_out, comoment, validate=False)
    moments = (mean_in, mean_out, m2_in, m2_out, np.empty((n_out, n_in)))
    kernels._blocked_moments(inputs, outputs, count, block_size, moments)
    return CrossMoments.from_parts(count, *moments)


def stimulated_moments(stimulated, outputs, count) -> CrossMoments:
    """Moments of the first ``count`` samples of 0/1 inputs that are mostly 0, by stimulated input.

    ``stimulated`` (n_in, >= count) uint8, C-contiguous: input i's values along the
    samples, one row per input; ``outputs`` (>= count, n_out) float64, C-contiguous,
    time-major, left unchanged. The two-pass moments in another order
    (``_kernels.moments._stimulated_moments``), at O(ones x n_out) for the co-moment;
    the bits never depend on the thread count.
    """
    count = check_int(count, "count", minimum=0)
    if not (isinstance(stimulated, np.ndarray) and stimulated.dtype == np.uint8 and stimulated.ndim == 2
            and stimulated.flags.c_contiguous):
        raise TypeError(f"stimulated must be a C-contiguous 2-D uint8 array, got {_describe(stimulated)}")
    if not (isinstance(outputs, np.ndarray) and outputs.dtype == np.float64 and outputs.ndim == 2
            and outputs.flags.c_contiguous):
        raise TypeError(f"outputs must be a C-contiguous 2-D float64 array, got {_describe(outputs)}")
    if count > stimulated.shape[1] or count > outputs.shape[0]:
        raise ValueError(f"count must be at most the samples held, stimulated.shape[1] = {stimulated.shape[1]} "
                         f"and outputs.shape[0] = {outputs.shape[0]}, got {count}")
    n_in, n_out = stimulated.shape[0], outputs.shape[1]
    if count == 0:
        return CrossMoments(n_in, n_out)
    moments = (np.empty(n_in), np.empty(n_out), np.empty(n_in), np.empty(n_out), np.empty((n_out, n_in)))
    kernels._stimulated_moments(stimulated, outputs, count, moments)
    # Valid by construction from two samples on: skip from_parts' checks.
    return CrossMoments.from_parts(count, *moments, validate=count < 2)


def _describe(value):
    if isinstance(value, np.ndarray):
        layout = "C-contiguous" if value.flags.c_contiguous else "not C-contiguous"
        return f"a {value.ndim}-D {value.dtype} array, {layout}"
    return repr(value)


@contextmanager
def one_blas_thread():
    """Within the block, the BLAS (OpenBLAS, MKL, BLIS) runs on one thread, process-wide.

    For small products on few cores, where a pool of BLAS threads costs more than it
    gives. ``threadpoolctl``'s controller is made once per process.
    """
    controller, _ = _setup()
    with controller.limit(limits=1, user_api="blas"):
        yield


def _setup():
    """The BLAS thread controller and a pool of two threads, made once per process."""
    with _lock:
        if _state.get("pid") != os.getpid():  # first use, or a forked child (the pool's threads did not follow)
            from threadpoolctl import ThreadpoolController

            _state["controller"] = ThreadpoolController()
            _state["pool"] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="streamcausal-blas")
            _state["pid"] = os.getpid()
        return _state["controller"], _state["pool"]


def _half(D, E, out):
    np.matmul(D.T, E, out=out)


def _row_blocks(D, E, out, half, blocks, scratch):
    """``out[r] = D[:half, r].T @ E[:half] + D[half:, r].T @ E[half:]`` for each row slice ``r`` in ``blocks``."""
    for rows in blocks:
        np.matmul(D[:half, rows].T, E[:half], out=out[rows])
        second = scratch[: rows.stop - rows.start]
        np.matmul(D[half:, rows].T, E[half:], out=second)
        out[rows] += second


def product_tn(D, E, out, *, block_values=_BLOCK_VALUES):
    """``out[:] = D.T @ E`` for time-major float64 ``D`` (k, m), ``E`` (k, n); ``out`` (m, n) C-contiguous.

    Numba's worker threads and the BLAS's own thread pool both spin for a while when
    they run out of work. A chunk alternates between them (the sample kernel, then
    this product), and on a machine with few cores each pool's spinning slows the
    other down (measured on 2 cores at n=1000: a chunk took 1.3-1.6x the sum of its
    parts). So the product is cut along the samples into two halves whose partial
    products are added (a split fixed by the shape alone, so the bits never depend on
    a thread count), and each half is one BLAS call made while the BLAS is held to
    one thread (``threadpoolctl``: OpenBLAS, MKL, BLIS, on any OS), from a pool of two
    Python threads (NumPy releases the GIL in the product). The BLAS thread count is
    process-wide: while a product holds it to one thread, other threads' NumPy
    products run single-threaded too.

    When ``out`` has more than ``block_values`` entries, each thread instead makes the
    two halves' products for alternate blocks of rows (a multiple of 64 rows, about
    ``block_values / 2`` entries each) and adds them there: the same sums, entry by entry, with two
    block-sized buffers instead of a second ``(m, n)`` one (800 MB at n = 10^4). The
    bits are those of the whole-matrix products as long as the BLAS computes an entry
    the same way in a product of fewer rows (``tests/test_moments.py`` checks it). On
    OpenBLAS (SkylakeX kernels) that holds when ``n`` is a multiple of 16; otherwise its
    edge kernels for the last ``n % 16`` columns sum some entries in another order, so
    such shapes keep the whole-matrix products.
    """
    controller, pool = _setup()
    k, m = D.shape
    with _lock, controller.limit(limits=1, user_api="blas"):
        if k < _SPLIT_SAMPLES:
            np.matmul(D.T, E, out=out)
        elif out.size <= block_values or out.shape[1] % 16:
            half = k // 2
            second = np.empty_like(out)
            futures = [pool.submit(_half, D[:half], E[:half], out), pool.submit(_half, D[half:], E[half:], second)]
            for future in futures:
                future.result()
            out += second
        else:
            half = k // 2
            # Whole multiples of 64 rows: the BLAS's register tiles (16 rows here) fall where they
            # fall in the whole-matrix product, so every entry is made by the same kernel.
            rows = max(64, block_values // (2 * out.shape[1]) // 64 * 64)
            starts = list(range(0, m, rows))
            if len(starts) > 1 and m - starts[-1] < rows:
                starts.pop()  # the last block takes the remainder: no short product (NumPy makes 1 row a gemv)
            blocks = [slice(start, stop) for start, stop in zip(starts, starts[1:] + [m])]
            longest = max(block.stop - block.start for block in blocks)
            futures = [pool.submit(_row_blocks, D, E, out, half, blocks[t::2], np.empty((longest, out.shape[1])))
                       for t in range(2)]
            for future in futures:
                future.result()
    return out
