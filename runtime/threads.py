"""One thread decision for the native step's GEMMs and its elementwise loops.

The step runs its GEMMs and its OpenMP loops one after another, never nested, so
both get the same count, and that count is the cores this process may use
(affinity and cgroup quota), not the machine's. With MKL on its GNU threading
layer (runtime/blas.py) the two share libgomp's one pool; OpenBLAS keeps its
own pthreads pool, sized the same, so the two never ask for more threads than
cores, less those other processes are running on when the plan is made (an
oversubscribed parallel loop waits at every barrier for a descheduled thread).
Small problems run single-threaded: a step whose arithmetic is a few
MFLOP is decided by the microseconds of waking a pool, and loops shorter than
`par_min` elements stay on the calling thread (the generated
`if(N >= netc_par_min)` clause).

Precedence: an explicit count (the train key `threads`) > NETC_THREADS > auto.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from ..compiler.errors import NetcError

# elements: a shorter loop stays on one thread. An estimate (~10 us of elementwise work
# against a pool wake-up of a few us); bench/c_math.py's fused loop measures it, and on this
# loaded 2-core machine one thread won at every size up to 409,600 (NETC_PAR_MIN overrides)
PAR_MIN = 32768
# A step under this many GEMM flops runs single-threaded in auto. Measured (quiet 2-core
# machine, native step with MKL, us per step at 1 / 2 threads): 8.9 MFLOP 157 / 342,
# 52 MFLOP 413 / 564, 205 MFLOP 1277 / 1072, 488 MFLOP 2623 / 2105: the break-even
# lies between 52 and 205.
SMALL_STEP_FLOPS = 1e8


@dataclass(frozen=True)
class ThreadPlan:
    threads: int  # OpenMP loops
    blas_threads: int  # the BLAS's own count
    par_min: int  # shortest loop worth a parallel region
    why: str  # one line: where the count came from


def available_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(float(quota) / float(period) + 0.5)))
    except (OSError, ValueError):
        pass
    return max(1, n)


MAX_THREADS = 4096  # more is a typo (or a count the C int it is passed as cannot hold), as the train key says
MAX_PAR_MIN = 1 << 62  # elements: what the C long long holds


def _count(value, what: str, unit: str = "threads", limit: int = MAX_THREADS) -> int | None:
    """A positive count of `unit` up to `limit`, None for auto (None, "auto", 0); anything
    else is refused naming `what`."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    try:
        n = int(str(value).strip()) if not isinstance(value, bool) else -1
    except ValueError:
        n = -1
    if n < 0 or n > limit or (isinstance(value, float) and value != int(value)):
        raise NetcError(f"{what} must be a whole number of {unit} from 1 to {limit} or auto, got {value!r}")
    return n or None


def decide(requested=None, step_flops: float | None = None, env=None, busy: int | None = None) -> ThreadPlan:
    """The thread plan: `requested` is the train key `threads` (int, "auto" or None);
    `step_flops` (the step's arithmetic, when the caller knows it) lets auto keep
    tiny steps on one thread; auto leaves out cores other processes are busy on
    (`busy`, default: measured now)."""
    env = os.environ if env is None else env
    par_min = PAR_MIN
    if env.get("NETC_PAR_MIN"):
        par_min = _count(env["NETC_PAR_MIN"], "NETC_PAR_MIN", "elements (a loop length)", MAX_PAR_MIN) or PAR_MIN
    n = _count(requested, "train key `threads`")
    if n is not None:
        return ThreadPlan(n, n, par_min, f"threads = {n} (train key)")
    n = _count(env.get("NETC_THREADS"), "NETC_THREADS")
    if n is not None:
        return ThreadPlan(n, n, par_min, f"NETC_THREADS={n}")
    cores = available_cores()
    if step_flops is not None and step_flops < SMALL_STEP_FLOPS:
        return ThreadPlan(1, 1, par_min, f"1 thread: a {step_flops / 1e6:.2g} MFLOP step is overhead-bound")
    busy = busy_cores() if busy is None else busy
    n = max(1, min(cores, cores - busy))
    if n < cores:
        return ThreadPlan(n, n, par_min, f"{n} of {cores} threads: {busy} tasks of other processes are runnable on these cores "
                                         f"(set threads or NETC_THREADS to override)")
    return ThreadPlan(cores, cores, par_min, f"{cores} threads (the cores this process may use)")


def busy_cores(samples: int = 5) -> int:
    """Of the cores this process may use, how many other processes are running on now:
    /proc/stat's procs_running less this process's own runnable threads (the median
    of a few samples 1 ms apart), scaled by our share of the host's CPUs (a container
    with 2 of 64 cores counts 1/32 of the host's other work). Threads beyond the free
    cores stall every barrier of a parallel loop: at load 10 on 2 cores,
    bench/blas_gemm.py's C step took 15.5 ms on one thread, 235 ms on two (OpenBLAS)."""
    import time
    counts = []
    host_cpus = 1
    for _ in range(samples):
        try:
            text = open("/proc/stat").read()
            mine = sum(1 for t in os.listdir("/proc/self/task")
                       if open(f"/proc/self/task/{t}/stat").read().rsplit(")", 1)[1].split()[0] == "R")
        except (OSError, IndexError):
            return 0
        lines = text.splitlines()
        host_cpus = max(1, sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit()))
        running = next((int(line.split()[1]) for line in lines if line.startswith("procs_running")), 1)
        counts.append(max(0, running - mine))
        time.sleep(0.001)
    others = sorted(counts)[len(counts) // 2]
    return int(others * min(1.0, available_cores() / host_cpus) + 0.5)


def setup(lib: ctypes.CDLL, plan: ThreadPlan | None = None, blas=None) -> ThreadPlan:
    """Give a loaded native object its BLAS and threads (`netc_runtime_init`, from
    compiler/c_runtime.py); set the BLAS's own thread count to match."""
    plan = plan or decide()
    if blas is None:
        from .blas import find_blas
        blas = find_blas()
    if blas is None:
        raise NetcError("the native backend found no BLAS (NumPy's OpenBLAS, MKL or a system cblas)",
                        hint="reinstall numpy, pip install netc[mkl], or use --backend numpy")
    blas.set_threads(plan.blas_threads)
    init = lib.netc_runtime_init
    init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_longlong]
    init.restype = ctypes.c_int
    init(blas.sgemm, blas.dgemm, int(blas.ilp64), plan.threads, plan.par_min)
    _APPLIED[0] = None  # a Pinned function records itself after its own setup
    return plan


# The BLAS's thread count and OpenMP's default are settings of the whole process,
# while each bound function has its own plan (a tiny step one thread, the
# evaluation of 1,000 examples two): the plan applied last, so that a call
# re-applies its own only when another function's changed it.
_APPLIED: list = [None]


class Pinned:
    """A bound native function that runs under its own thread plan: one identity
    check per call; `setup` again (microseconds) only after another plan ran."""

    def __init__(self, fn, lib: ctypes.CDLL, plan: ThreadPlan):
        self._fn, self._key = fn, (lib, plan)
        _APPLIED[0] = self._key  # bound right after setup(lib, plan)

    def __call__(self, *args, **kwargs):
        if _APPLIED[0] is not self._key:
            setup(*self._key)
            _APPLIED[0] = self._key
        return self._fn(*args, **kwargs)

    def __getattr__(self, name):  # the bound function's own attributes (buffers, ...)
        return getattr(self._fn, name)
