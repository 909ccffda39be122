"""A function compiled to native code (compiler/lower_c.py): the same interface
as the NumPy one, `fn(state, *feeds) -> outputs`, state NumPy-owned.

The C is compiled in the background as soon as it is rendered (the step, the
evaluation and the prediction of a spec compile side by side: a compiler run
is a subprocess) and loaded at the first call, through runtime/native_build.py
(cached on disk by source, compiler, flags and CPU) and given its BLAS and
thread count (runtime/blas.py, runtime/threads.py). Binding a state dict for a
batch size allocates the buffers as NumPy arrays and a table of their
addresses once; a call then sets the feeds' addresses and hyper-parameters and
makes one C call per segment.
"""
from __future__ import annotations

import ctypes
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .errors import NetcError
from .lower_numpy import Function

_POOL: list = []  # [(pid, executor)]: the background executor (created on first use)
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The executor compiles run on (a new one in a forked child: the parent's threads
    are not there)."""
    import os
    with _POOL_LOCK:
        if not _POOL or _POOL[0][0] != os.getpid():
            _POOL[:] = [(os.getpid(), ThreadPoolExecutor(4, thread_name_prefix="netc-cc"))]
        return _POOL[0][1]


def unavailable() -> str | None:
    """Why the native backend cannot run here (no C compiler, no BLAS), or None."""
    from ..runtime import blas, native_build
    try:
        why = native_build.why_unavailable()  # no compiler, $CC not a command, the cache refused, ...
    except (ValueError, OSError) as e:
        return f"the C compiler could not be used (check $CC: {e})"
    if why is not None:
        return why
    try:
        if blas.find_blas() is None:
            return "no BLAS was found (NumPy's OpenBLAS, MKL or a system cblas)"
    except NetcError as e:  # NETC_BLAS names no BLAS: said by name
        return e.message
    return None


_SAID: set = set()


def notice(line: str) -> None:
    """One line on stderr, once per process."""
    if line not in _SAID:
        _SAID.add(line)
        import sys
        print(line, file=sys.stderr)


class NativeRuntime:
    """What the generated glue (`make(rt, S, B)`) calls: NumPy arrays for buffers,
    addresses for the C side, the loaded segment functions."""
    xp = np

    def __init__(self, fns: list, debug: bool = False):
        self.fns, self.debug = fns, debug

    def empty(self, shape, dtype):
        """A buffer; with `debug` filled with NaN (-1 for integers), so a read of a value
        never written shows up."""
        if not self.debug:
            return np.empty(shape, dtype=dtype)
        dt = np.dtype(dtype)
        return np.full(shape, np.nan if dt.kind == "f" else -1, dtype=dt)

    @staticmethod
    def state(S: dict, name: str, shape: tuple, dtype: str):
        """S[name] as the C side reads it: of its shape (else a NetcError naming it: the C
        would read or write past the array), C-contiguous, writable and of its dtype (else
        a converted copy, put back in S, so the step updates what the model holds)."""
        a = S.get(name)
        if not isinstance(a, np.ndarray) or a.shape != tuple(shape):
            got = f"an array of shape {list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
            raise NetcError(f"state {name!r} is {got}, the spec's {name!r} has shape {list(shape)}: set its values "
                            f"in place (np.copyto(model.state[{name!r}], values)) rather than assigning another array")
        if a.dtype != np.dtype(dtype) or not a.flags.c_contiguous or not a.flags.writeable:
            a = S[name] = np.array(a, dtype=dtype, order="C")
        return a

    @staticmethod
    def table(n: int):
        return (ctypes.c_void_p * max(n, 1))()

    @staticmethod
    def hypers(n: int):
        return (ctypes.c_double * n)()

    @staticmethod
    def address(a) -> int:
        return a.__array_interface__["data"][0]

    @staticmethod
    def upload(x, buf):
        """Copy `x` into `buf` (a library call's host result)."""
        np.copyto(buf, x, casting="unsafe")
        return buf

    @staticmethod
    def feed(x, buf):
        """`x` itself where the C side can read it in place, else `buf` holding it."""
        if type(x) is np.ndarray and x.dtype == buf.dtype and x.shape == buf.shape and x.flags.c_contiguous:
            return x
        np.copyto(buf, x, casting="unsafe")
        return buf

    @staticmethod
    def copyto(dst, src) -> None:
        np.copyto(dst, src)

    @staticmethod
    def fill(buf, value) -> None:
        buf.fill(value)


def _load(c_text: str, name: str, folder):
    from ..runtime import native_build
    return native_build.load(c_text, name=f"netc_{name}", folder=folder)


def start_shared(fns: list, c_text: str, name: str) -> None:
    """Compile one translation unit holding every function of `fns`, in the background,
    into the cache folder as it is now (NETC_CACHE_DIR may change before it runs)."""
    from ..runtime import native_build
    try:
        folder = native_build.cache_dir()
    except native_build.NativeBuildError:
        folder = None  # the compile itself raises it, where it is waited for
    future = _pool().submit(_load, c_text, name, folder)
    for f in fns:
        f._future = future


@dataclass
class NativeFunction(Function):
    """A function lowered to C: `fn(state, *feeds)` on NumPy state. `c_source` is
    the translation unit (what `netc compile --emit c` prints with the glue)."""
    c_source: str = field(default="", repr=False)
    segments: list = field(default_factory=list, repr=False)
    fused_gemms: list = field(default_factory=list, repr=False)  # GEMMs that write their velocity
    plan: object = field(default=None, repr=False)
    debug: bool = False
    threads: object = None  # the train key `threads` (int, "auto" or None: NETC_THREADS, else auto)
    _future: Future | None = field(default=None, repr=False)
    _loaded: tuple | None = field(default=None, repr=False)

    def ready(self) -> "NativeFunction":
        """Wait for the compiled object (raises the compiler's NetcError)."""
        if self._loaded is None:
            if self._future is None:
                start_shared([self], self.c_source, self.name)
            try:
                lib = self._future.result()
            except NetcError:
                raise
            except OSError as e:
                raise NetcError(f"the native {self.name} could not be loaded ({e}); use --backend numpy") from None
            fns = []
            for s in self.segments:
                f = getattr(lib, s)
                f.argtypes = [ctypes.c_longlong, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_double)]
                f.restype = None
                fns.append(f)
            self._loaded = (lib, fns)
        return self

    def new_step(self, state: dict, batch: int):
        """Bind `state` for this batch size; the thread count is decided here, from the
        step's arithmetic at this batch size (a tiny step stays on one thread)."""
        from ..runtime import threads
        from .fuse_stats import plan_stats
        self.ready()
        lib = self._loaded[0]
        plan = threads.setup(lib, threads.decide(self.threads, step_flops=plan_stats(self.plan, batch)["gemm_flops"]))
        rt = NativeRuntime(self._loaded[1], self.debug)
        return threads.Pinned(self._make(rt, state, batch), lib, plan)

    def emit(self) -> str:
        glue = "\n".join("// " + line for line in self.source.rstrip("\n").split("\n"))
        fused = "".join(f"// fused: GEMM {f} writes its velocity (beta = momentum, alpha = -rate)\n"
                        for f in self.fused_gemms)
        return self.c_source + fused + "\n// ---- host glue (Python): make(rt, S, B) -> step(*feeds) ----\n" + glue + "\n"
