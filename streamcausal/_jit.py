"""Numba's compile options, declared once: every kernel of :mod:`streamcausal._kernels` uses these decorators.

All of them cache compiled code on disk (``cache=True``) and use NumPy's error model:
a float division by zero gives inf or NaN instead of raising, which drops the zero
checks from loops and lets them vectorise; no kernel relies on that exception, so
this changes no result. The variants:

* :func:`kernel`: the default;
* :func:`inline_kernel`: inlined into its callers by Numba, before LLVM sees them. Only
  where it was measured to matter: ``_drive`` and ``_exp_core`` (each about 5% of the
  sequential kernel at n = 6); small integer helpers such as ``_mix64`` are inlined
  by LLVM anyway. An inlined function takes its caller's options, so none is
  called from the :func:`contract_kernel`;
* :func:`parallel_kernel`: ``prange`` loops run on Numba's threads;
* :func:`contract_kernel`: may contract ``a * b + c`` to a fused multiply-add; only
  for code whose products are exact, so that contracting changes no bit.
"""

from __future__ import annotations

from numba import njit

__all__ = ["contract_kernel", "inline_kernel", "kernel", "parallel_kernel"]

_OPTIONS = {"cache": True, "error_model": "numpy"}

kernel = njit(**_OPTIONS)
inline_kernel = njit(**_OPTIONS, inline="always")
parallel_kernel = njit(**_OPTIONS, parallel=True)
contract_kernel = njit(**_OPTIONS, fastmath={"contract"})
