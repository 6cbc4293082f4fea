"""Numba's compile options, declared once: every kernel of :mod:`streamcausal._kernels` uses these decorators.

All of them cache compiled code on disk (``cache=True``) and use NumPy's error model:
a float division by zero gives inf or NaN instead of raising, which drops the zero
checks from loops and lets them vectorise; no kernel relies on that exception, so
this changes no result. All release the GIL while they run (``nogil``; no kernel
touches a Python object), so a thread that reads and decodes the next window of a
recording (:mod:`streamcausal.io.recording`'s read-ahead) runs alongside them. The variants:

* :func:`kernel`: the default;
* :func:`inline_kernel`: inlined into its callers by Numba, before LLVM sees them. Only
  where it was measured to matter: ``_drive`` and ``_exp_core`` (each about 5% of the
  sequential kernel at n = 6); small integer helpers such as ``_mix64`` are inlined
  by LLVM anyway. An inlined function takes its caller's options, so none is
  called from the :func:`contract_kernel`;
* :func:`parallel_kernel`: ``prange`` loops run on Numba's threads;
* :func:`contract_kernel`: may contract ``a * b + c`` to a fused multiply-add; only
  for code whose products are exact, so that contracting changes no bit.

One signature per argument types
--------------------------------
A kernel called from another kernel is compiled for the argument types at the call.
Numba types a constant argument (``f(x, 0)``) or a variable's first assignment
(``count = 0`` before a loop) as a *literal* (``Literal[int](0)``) and compiles a
separate specialisation for it, often only to discard it when the variable's type
widens to ``int64``: ``_chan_merge``, ``_block_moments`` and ``_transpose_into`` were
each compiled twice, the whole callee tree included. No kernel uses a literal value
(none indexes a heterogeneous tuple with an argument or calls ``numba.literally``), so
:class:`_KernelDispatcher` types every call from another kernel with plain types
(:func:`numba.core.types.unliteral`): one signature per kernel and argument types.

Cold cache
----------
:func:`notify_compiling` tells a caller when a run starts compiling (an empty or
stale cache), from Numba's ``numba:compile`` event, which Numba announces only when
its cache does not hold the kernel for the argument types.
"""

from __future__ import annotations

from contextlib import contextmanager

from numba.core import config, event, types
from numba.core.registry import CPUDispatcher

__all__ = ["contract_kernel", "inline_kernel", "kernel", "notify_compiling", "parallel_kernel"]

class _KernelDispatcher(CPUDispatcher):
    """Numba's CPU dispatcher, but calls from other kernels are typed without literal values."""

    def get_call_template(self, args, kws):
        args = tuple(types.unliteral(arg) for arg in args)
        kws = {name: types.unliteral(arg) for name, arg in kws.items()}
        return super().get_call_template(args, kws)


def _decorator(**options):
    """``numba.njit(cache=True, nogil=True, error_model="numpy", **options)``, with :class:`_KernelDispatcher`."""
    targetoptions = {"nopython": True, "nogil": True, "boundscheck": None, "error_model": "numpy", **options}

    def decorate(function):
        if config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1, as njit honours it
            return function
        dispatcher = _KernelDispatcher(py_func=function, locals={}, targetoptions=dict(targetoptions))
        dispatcher.enable_caching()
        return dispatcher

    return decorate


kernel = _decorator()
inline_kernel = _decorator(inline="always")
parallel_kernel = _decorator(parallel=True)
contract_kernel = _decorator(fastmath={"contract"})


class _FirstCompile(event.Listener):
    """Calls ``callback()`` at the first compilation of a kernel made by this module's decorators."""

    def __init__(self, callback):
        self.callback = callback
        self.fired = False

    def on_start(self, ev):
        if not self.fired and isinstance(ev.data["dispatcher"], _KernelDispatcher):
            self.fired = True
            self.callback()

    def on_end(self, ev):
        pass


@contextmanager
def notify_compiling(callback):
    """Within the block, call ``callback()`` once, when Numba starts compiling a kernel of this package.

    Loading a kernel from Numba's on-disk cache announces nothing, so on a warm cache
    the callback is never called; on a cold one it is called before the first
    compilation, in the thread that compiles.
    """
    listener = _FirstCompile(callback)
    with event.install_listener("numba:compile", listener):
        yield listener
