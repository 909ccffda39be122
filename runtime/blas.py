"""The BLAS the native backend's GEMMs call: cblas_sgemm/cblas_dgemm addresses.

Generated C calls `cblas_?gemm` through function pointers (compiler/c_runtime.py)
set once after load, so nothing links against a BLAS at compile time and the
choice is made here, at run time, in this order:

1. MKL, when the optional `mkl` wheel is installed (`pip install netc[mkl]`): its
   libmkl_rt under sys.prefix/lib. MKL is the faster GEMM on the MNIST step's
   shapes (bench/blas_gemm.py). It is switched to its GNU OpenMP threading layer,
   so its threads and the generated OpenMP loops share libgomp's one pool
   instead of two runtimes each spinning on the same cores.
2. The OpenBLAS NumPy ships (NumPy 2.x: scipy-openblas64, ILP64, every symbol
   prefixed `scipy_` and suffixed `64_`), found as the library NumPy itself has
   loaded (/proc/self/maps), so it is the very copy NumPy uses.
3. A system cblas (libopenblas, libcblas, libblas) via ctypes.util.find_library.

NETC_BLAS=mkl|openblas|system|/path/to/lib.so forces one. The int width (32 for
LP64, 64 for ILP64) is read from which symbol exists, never assumed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

# (sgemm, dgemm, int width, set_threads, get_threads) symbol sets, most specific first
_OPENBLAS_SYMBOLS = [
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", 64,
     "scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("cblas_sgemm64_", "cblas_dgemm64_", 64, "openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("scipy_cblas_sgemm", "scipy_cblas_dgemm", 32, "scipy_openblas_set_num_threads",
     "scipy_openblas_get_num_threads"),
    ("cblas_sgemm", "cblas_dgemm", 32, "openblas_set_num_threads", "openblas_get_num_threads"),
]
MKL_THREADING_GNU = 3  # mkl_service.h: INTEL=0, SEQUENTIAL=1, PGI=2, GNU=3, TBB=4
MKL_CBWR_AUTO, MKL_CBWR_STRICT = 2, 0x10000  # mkl_cbwr.h: conditional numerical reproducibility


@dataclass(frozen=True)
class Blas:
    """A resolved BLAS: what the generated code's netc_runtime_init needs."""
    name: str  # mkl | openblas | system
    path: str
    int_width: int  # 32 (LP64) or 64 (ILP64): the width of m, n, k, lda, ...
    sgemm: int  # address of cblas_sgemm (or its ILP64 twin)
    dgemm: int
    set_threads: Callable[[int], None]
    get_threads: Callable[[], int]
    threading: str = ""  # how its threads run (e.g. "GNU OpenMP", "pthreads")

    @property
    def ilp64(self) -> bool:
        return self.int_width == 64

    def describe(self) -> str:
        return f"{self.name} ({os.path.basename(self.path)}, {self.int_width}-bit ints, {self.threading})"


def _addr(lib, sym: str) -> int | None:
    try:
        return ctypes.cast(getattr(lib, sym), ctypes.c_void_p).value
    except AttributeError:
        return None


def _threads_fns(lib, set_sym: str | None, get_sym: str | None):
    setter = getattr(lib, set_sym, None) if set_sym else None
    getter = getattr(lib, get_sym, None) if get_sym else None
    if setter is not None:
        setter.argtypes, setter.restype = [ctypes.c_int], None
    if getter is not None:
        getter.argtypes, getter.restype = [], ctypes.c_int

    def set_threads(n: int) -> None:
        if setter is not None:
            setter(int(n))

    def get_threads() -> int:
        return int(getter()) if getter is not None else 1
    return set_threads, get_threads


def _from_symbols(lib, path: str, name: str, threading: str) -> Blas | None:
    for s, d, width, set_sym, get_sym in _OPENBLAS_SYMBOLS:
        sa, da = _addr(lib, s), _addr(lib, d)
        if sa and da:
            st, gt = _threads_fns(lib, set_sym, get_sym)
            return Blas(name, path, width, sa, da, st, gt, threading)
    return None


def _gomp_path() -> str | None:
    """libgomp as the C compiler links it (the one the generated code will use)."""
    from .native_build import compiler_command
    cmd = compiler_command()
    if cmd is not None:
        try:
            out = subprocess.run([*cmd, "-print-file-name=libgomp.so.1"], capture_output=True,
                                 text=True, timeout=30).stdout.strip()
            if os.path.isabs(out) and os.path.exists(out):
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return ctypes.util.find_library("gomp")


def mkl_path() -> str | None:
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix)):
        hits = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if hits:
            return hits[0]
    return None


def _mkl(path: str | None = None) -> Blas | None:
    path = path or mkl_path()
    if path is None:
        return None
    threading = "Intel OpenMP"
    gnu = bool(glob.glob(os.path.join(os.path.dirname(path), "libmkl_gnu_thread.so*")))
    chosen = os.environ.get("MKL_THREADING_LAYER")  # the user's choice stands
    gomp = _gomp_path() if gnu and (chosen is None or chosen.upper() == "GNU") else None
    if gomp:
        # libmkl_gnu_thread takes GOMP_* from the global scope: load libgomp there first
        from .native_build import openmp_env_defaults
        openmp_env_defaults()
        ctypes.CDLL(gomp, mode=ctypes.RTLD_GLOBAL)
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    if gomp and chosen is None:
        lib.MKL_Set_Threading_Layer.argtypes, lib.MKL_Set_Threading_Layer.restype = [ctypes.c_int], ctypes.c_int
        lib.MKL_Set_Threading_Layer(MKL_THREADING_GNU)
        threading = "GNU OpenMP (shared pool)"
    elif chosen is not None:
        threading = f"MKL_THREADING_LAYER={chosen}"
    if "MKL_CBWR" not in os.environ:  # the user's choice stands
        # results that do not depend on the thread count (threads = auto follows the load,
        # and a resumed run must end bit-identical): MKL's default GEMM sums in an order
        # that does; before any computation, as MKL requires
        lib.MKL_CBWR_Set.argtypes, lib.MKL_CBWR_Set.restype = [ctypes.c_int], ctypes.c_int
        lib.MKL_CBWR_Set(MKL_CBWR_AUTO | MKL_CBWR_STRICT)
    st, gt = _threads_fns(lib, "MKL_Set_Num_Threads", "MKL_Get_Max_Threads")
    for s, d, width in (("cblas_sgemm_64", "cblas_dgemm_64", 64), ("cblas_sgemm", "cblas_dgemm", 32)):
        sa, da = _addr(lib, s), _addr(lib, d)
        if sa and da:
            return Blas("mkl", path, width, sa, da, st, gt, threading)
    return None


def numpy_blas_path() -> str | None:
    """The BLAS shared library NumPy has loaded (NumPy 2.x: scipy-openblas64 in numpy.libs).
    Among the OpenBLAS copies mapped into the process (SciPy brings its own), the one
    under NumPy's install wins; NumPy's directory is searched where /proc is missing."""
    import numpy as np
    site = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
    numpy_dirs = (os.path.join(site, "numpy.libs"), os.path.join(site, "numpy"))
    try:
        maps = [line.split()[-1] for line in open("/proc/self/maps") if len(line.split()) >= 6]
    except OSError:
        maps = []
    mapped = [p for p in dict.fromkeys(maps)
              if "openblas" in os.path.basename(p).lower() and ".so" in os.path.basename(p)]
    ours = [p for p in mapped if os.path.realpath(p).startswith(numpy_dirs)]
    if ours or mapped:
        return (ours or mapped)[0]
    hits = sorted(glob.glob(os.path.join(numpy_dirs[0], "*openblas*.so*")))
    return hits[0] if hits else None


def _openblas(path: str | None = None) -> Blas | None:
    path = path or numpy_blas_path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    return _from_symbols(lib, path, "openblas", "pthreads (its own pool)")


def _system() -> Blas | None:
    for name in ("openblas", "cblas", "blis", "blas"):
        path = ctypes.util.find_library(name)
        if path:
            try:
                found = _from_symbols(ctypes.CDLL(path), path, "system", "its own")
            except OSError:
                continue
            if found is not None:
                return found
    return None


def find_blas(choice: str | None = None) -> Blas | None:
    """The BLAS to use: `choice` (or NETC_BLAS) = mkl | openblas | system | a library path;
    default MKL, else NumPy's OpenBLAS, else a system one; None if none is found.
    Resolved once per choice and process (libraries stay loaded anyway). A NETC_BLAS
    that resolves to nothing is the user's setting gone wrong: a NetcError naming it."""
    env = os.environ.get("NETC_BLAS", "").strip()
    found = _find(choice or env or None)
    if found is None and choice is None and env:
        what = f"no {env} BLAS was found here" if env in ("mkl", "openblas", "system") else \
            "not a BLAS library this process can load (with cblas_sgemm and cblas_dgemm)"
        from netc.compiler.errors import NetcError
        raise NetcError(f"NETC_BLAS={env!r}: {what}",
                        hint="set it to mkl, openblas, system or a BLAS library's path, or unset it")
    return found


@functools.lru_cache(maxsize=8)
def _find(choice: str | None) -> Blas | None:
    if choice is None:
        return _mkl() or _openblas() or _system()
    if choice == "mkl":
        return _mkl()
    if choice == "openblas":
        return _openblas()
    if choice == "system":
        return _system()
    lib_name = os.path.basename(choice).lower()
    return _mkl(choice) if "mkl" in lib_name else _openblas(choice)


def gemm(blas: Blas, a, b, transa: bool = False, transb: bool = False, alpha: float = 1.0,
         beta: float = 0.0, out=None):
    """C = alpha op(A) op(B) + beta C through `blas` by ctypes (row-major, C-contiguous
    float32/float64): the smoke test and the GEMM benchmark's call."""
    import numpy as np
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"gemm needs two float32 or two float64 arrays, got {a.dtype}, {b.dtype}")
    m, k = (a.shape[1], a.shape[0]) if transa else a.shape
    k2, n = (b.shape[1], b.shape[0]) if transb else b.shape
    if k != k2:
        raise ValueError(f"gemm: inner dimensions differ ({k} vs {k2})")
    if out is None:
        out = np.zeros((m, n), a.dtype)
    fn = _gemm_fn(blas, a.dtype == np.float32)
    fn(101, 112 if transa else 111, 112 if transb else 111, m, n, k, alpha,
       a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], beta, out.ctypes.data, n)
    return out


@functools.lru_cache(maxsize=8)
def _gemm_fn(blas: Blas, single: bool):
    I = ctypes.c_longlong if blas.ilp64 else ctypes.c_int  # noqa: E741
    R = ctypes.c_float if single else ctypes.c_double
    P = ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, I, I, I, R, P, I, P, I, R, P, I)
    return proto(blas.sgemm if single else blas.dgemm)


def smoke_test(blas: Blas) -> float:
    """Max relative difference of a small sgemm/dgemm (all transposes) against NumPy."""
    import numpy as np
    rng = np.random.default_rng(0)
    worst = 0.0
    for dt in (np.float32, np.float64):
        for ta in (False, True):
            for tb in (False, True):
                a = rng.standard_normal((7, 5) if ta else (5, 7)).astype(dt)
                b = rng.standard_normal((3, 7) if tb else (7, 3)).astype(dt)
                c0 = rng.standard_normal((5, 3)).astype(dt)
                want = 0.5 * ((a.T if ta else a) @ (b.T if tb else b)) + 2.0 * c0.astype(np.float64)
                got = gemm(blas, a, b, ta, tb, alpha=0.5, beta=2.0, out=c0.copy())
                worst = max(worst, float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    return worst
