"""Run the generated CUDA kernels on the CPU: the proof of the GPU path where
there is no GPU.

The kernel text (`KernelSource.body`, exactly what `cupy.RawKernel` gets after
the GPU prelude) is compiled by gcc as C under `CPU_PRELUDE`, which maps
`threadIdx`/`blockIdx`/`blockDim`/`gridDim` to thread-local variables,
`__shared__` to static storage and `__syncthreads()` to a pthread barrier. A
launch runs the grid's blocks one after another; a block is one thread (the
default: the grid-stride loops then cover everything serially) or, with
`block=T`, T real threads meeting at the barrier, so the shared-memory tree
reductions run as they would on a device.

`CpuRuntime` stands in for CuPy under the generated `make(rt, S, B)`, so the
whole step (buffer reuse, in-place updates, hoisted GEMM scales) runs as
generated. `check_kernels` runs each kernel alone on reference inputs from
`compiler/evaluate.py` and compares each value it writes.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from netc.compiler.cuda_c import GPU_PRELUDE, KernelSource
from netc.compiler.evaluate import evaluate
from netc.compiler.lower_cuda import CudaFunction

CPU_PRELUDE = r"""
#include <math.h>
#include <pthread.h>
#define NETC_KERNEL
#define __global__
#define __shared__ static
#define __restrict__ restrict
#define NETC_BLOCK 256
#define NETC_INF INFINITY
#define NETC_NAN NAN
struct netc_dim3 { unsigned x, y, z; };
static __thread struct netc_dim3 threadIdx, blockIdx;
static struct netc_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static pthread_barrier_t netc_barrier;
static void __syncthreads(void) { if (blockDim.x > 1) pthread_barrier_wait(&netc_barrier); }
struct netc_tc { unsigned t, b; void* args; };
"""


def gcc() -> str | None:
    return shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")


def _field(p) -> str:
    return p.ctype.replace("__restrict__", "").strip()


def _launcher(ks: KernelSource) -> str:
    k = ks.name
    fields = "".join(f" {_field(p)} {p.name};" for p in ks.params)
    params = ", ".join(f"{_field(p)} {p.name}" for p in ks.params)
    names = ", ".join(p.name for p in ks.params)
    anames = ", ".join(f"a->{p.name}" for p in ks.params)
    return f"""
struct netc_a_{k} {{{fields} }};
static void* netc_t_{k}(void* p) {{
    struct netc_tc* c = (struct netc_tc*)p;
    struct netc_a_{k}* a = (struct netc_a_{k}*)c->args;
    threadIdx.x = c->t; blockIdx.x = c->b;
    {k}({anames});
    return 0;
}}
void netc_launch_{k}(unsigned grid, unsigned block, {params}) {{
    struct netc_a_{k} a = {{ {names} }};
    blockDim.x = block; gridDim.x = grid;
    if (block == 1) {{
        for (unsigned b = 0; b < grid; b++) {{ threadIdx.x = 0; blockIdx.x = b; {k}({names}); }}
        return;
    }}
    pthread_barrier_init(&netc_barrier, 0, block);
    for (unsigned b = 0; b < grid; b++) {{
        pthread_t th[NETC_BLOCK]; struct netc_tc c[NETC_BLOCK];
        for (unsigned t = 0; t < block; t++) {{ c[t].t = t; c[t].b = b; c[t].args = &a; pthread_create(&th[t], 0, netc_t_{k}, &c[t]); }}
        for (unsigned t = 0; t < block; t++) pthread_join(th[t], 0);
    }}
    pthread_barrier_destroy(&netc_barrier);
}}
"""


def _unique(kernels: list[KernelSource]) -> list[KernelSource]:
    """One of each kernel: a name ends in a hash of the code, so equal names are equal kernels."""
    return list({ks.name: ks for ks in kernels}.values())


def c_source(kernels: list[KernelSource]) -> str:
    return CPU_PRELUDE + "".join(ks.body + _launcher(ks) for ks in _unique(kernels))


_LAUNCH: dict[str, object] = {}  # kernel name -> its ctypes launcher, for every kernel built so far


def build(kernels: list[KernelSource]) -> dict:
    """Compile the kernels not built yet as C with gcc (shared libraries cached on
    disk by source, in as many parallel pieces as there are cores); returns each
    kernel's launcher, `launch(grid, block, *args)`, by name."""
    missing = [ks for ks in _unique(kernels) if ks.name not in _LAUNCH]
    if missing:
        cc = gcc()
        if cc is None:
            raise RuntimeError("no C compiler (gcc) found")
        parts = max(1, min(os.cpu_count() or 1, len(missing) // 8 or 1))
        chunks = [missing[i::parts] for i in range(parts)]
        with ThreadPoolExecutor(parts) as ex:
            for chunk, so in zip(chunks, ex.map(lambda c: _compile(cc, c), chunks)):
                lib = ctypes.CDLL(str(so))
                for ks in chunk:
                    f = getattr(lib, f"netc_launch_{ks.name}")
                    f.argtypes = [ctypes.c_uint, ctypes.c_uint] + [_ctype(p) for p in ks.params]
                    f.restype = None
                    _LAUNCH[ks.name] = f
    return {ks.name: _LAUNCH[ks.name] for ks in kernels}


def _compile(cc: str, kernels: list[KernelSource]) -> Path:
    src = c_source(kernels)
    key = hashlib.sha256(src.encode()).hexdigest()[:24]
    d = Path(tempfile.gettempdir()) / f"netc-harness-{os.getuid()}"
    d.mkdir(exist_ok=True)
    so = d / f"k{key}.so"
    if not so.exists():
        c = d / f"k{key}.c"
        c.write_text(src)
        tmp = d / f"k{key}.{os.getpid()}.{threading.get_ident()}.so"
        r = subprocess.run([cc, "-std=gnu11", "-O1", "-shared", "-fPIC", "-pthread", "-Wall", "-Wno-unused",
                            "-o", str(tmp), str(c), "-lm"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"gcc failed on {c}:\n{r.stderr[-4000:]}")
        os.replace(tmp, so)
    return so


def _ctype(p):
    if p.role in ("B", "scalar"):
        return {"long long": ctypes.c_longlong, "float": ctypes.c_float, "double": ctypes.c_double,
                "int": ctypes.c_int}[p.ctype]
    return ctypes.c_void_p


class CpuRuntime:
    """The runtime the generated step calls, on the CPU: NumPy arrays for device
    arrays, np.matmul for cuBLAS, gcc-compiled kernels for CUDA ones.

    `grid`/`block` cap each launch (block a power of two); the defaults run
    every launch as one single-thread block. New buffers are filled with NaN
    (-1 for integers), so a read of anything never written shows up."""
    xp = np

    def __init__(self, kernels: list[KernelSource], grid: int | None = 1, block: int | None = 1):
        self.fns = build(kernels)
        self.params = {ks.name: ks.params for ks in kernels}
        self.grid, self.block = grid, block
        self.launches = 0

    def empty(self, shape, dtype):
        dt = np.dtype(dtype)
        return np.full(shape, np.nan if dt.kind == "f" else -1, dtype=dt)

    def kernel(self, source: str, name: str, dtypes: tuple = ()):
        return name

    def launch(self, name, grid: int, block: int, args: tuple) -> None:
        g = grid if self.grid is None else min(grid, self.grid)
        b = block if self.block is None else min(block, self.block)
        conv = []
        for p, a in zip(self.params[name], args):
            if p.role in ("B", "scalar"):
                conv.append(int(a) if p.ctype in ("long long", "int") else float(a))
            else:
                assert isinstance(a, np.ndarray) and a.flags.c_contiguous, (name, p.name)
                conv.append(a.ctypes.data)
        self.launches += 1
        self.fns[name](g, b, *conv)

    def matmul(self, a, b, out) -> None:
        np.matmul(a, b, out=out)

    def upload(self, x, buf):
        np.copyto(buf, np.asarray(x, dtype=buf.dtype))
        return buf

    def copyto(self, dst, src) -> None:
        np.copyto(dst, src)

    def fill(self, buf, value) -> None:
        buf.fill(value)


def run(fn: CudaFunction, state: dict, *feeds, grid: int | None = 1, block: int | None = 1):
    """One call of a lowered function on the CPU; `state` (NumPy) is updated in place."""
    rt = CpuRuntime(fn.kernels, grid, block)
    batch = next((np.shape(f)[0] for f in feeds if np.ndim(f) > 0), 1)
    return fn.make_step(rt, state, batch)(*feeds)


def _tol(dtype) -> float:
    return 2e-4 if np.dtype(dtype) == np.float32 else 1e-9


def check_kernels(fn: CudaFunction, values: dict[str, np.ndarray]) -> list[dict]:
    """Run every fused kernel of `fn` alone on reference inputs and compare what
    it writes with compiler/evaluate.py. `values`: feeds, hypers and state by name.

    Returns one row per written value: kernel, node, max error relative to the
    value's scale, and whether it is within tolerance."""
    P = fn.plan
    batch = next((np.shape(v)[0] for k, v in values.items() if k in fn.feeds and np.ndim(v) > 0), 1)
    nodes = list(P.order)
    ref = dict(zip((n.id for n in nodes), evaluate(nodes, values, batch)))
    lib = CpuRuntime(fn.kernels)
    rows = []
    for ks in fn.kernels:
        k = ks.kernel
        args = []
        bufs = {}
        for p in ks.params:
            if p.role == "B":
                args.append(np.int64(batch))
            elif p.role == "scalar":
                args.append(np.dtype(p.node.dtype).type(ref[p.node.id]))
            else:
                n = p.node
                if p.role == "out":
                    a = lib.empty(_shape(n.shape, batch), n.dtype)
                elif n.id in P.alpha:  # the product is stored unscaled
                    a_, b_ = (ref[x.id] for x in P.kernel(n).operands)
                    a = np.ascontiguousarray(np.matmul(a_, b_), dtype=n.dtype)
                else:
                    a = np.array(ref[n.id], dtype=n.dtype, order="C", copy=True)
                bufs[n.id] = a
                args.append(a)
        lib.launch(ks.name, 1, 1, tuple(args))
        for m in k.writes:
            target = k.in_place.get(m.id, m)
            got, want = bufs[target.id], ref[m.id]
            scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
            err = float(np.max(np.abs(got.astype(np.float64) - want))) / scale if want.size else 0.0
            if not np.isfinite(err):
                err = float("inf") if not np.array_equal(np.isnan(got), np.isnan(want)) else 0.0
            rows.append({"kernel": ks.name, "node": f"%{m.id} {m.op}", "error": err,
                         "ok": err <= _tol(m.dtype) * (10 if m.op in ("sum", "mean", "sum_to") else 1),
                         "lines": k.lines()})
    return rows


def _shape(shape, batch):
    return tuple(batch if d is None else d for d in shape)


def nvcc() -> str | None:
    return shutil.which("nvcc") or (shutil.which("/usr/local/cuda/bin/nvcc"))


def nvcc_ptx(kernels: list[KernelSource], arch: str, workdir: Path | None = None) -> str:
    """Compile every kernel (one .cu: the GPU prelude and the bodies, as CuPy
    gets them) to PTX for `arch` (e.g. "sm_90"); returns the PTX. Raises
    RuntimeError with nvcc's diagnostics."""
    exe = nvcc()
    if exe is None:
        raise RuntimeError("nvcc not found")
    d = Path(workdir or tempfile.mkdtemp(prefix="netc-nvcc-"))
    src = GPU_PRELUDE + "\n".join(ks.body for ks in _unique(kernels))
    key = hashlib.sha256(src.encode()).hexdigest()[:16]
    cu, ptx = d / f"k{key}.cu", d / f"k{key}.{arch}.ptx"
    cu.write_text(src)
    r = subprocess.run([exe, "-ptx", f"-arch={arch}", "-o", str(ptx), str(cu)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nvcc -arch={arch} failed on {cu}:\n{r.stderr[-4000:]}")
    return ptx.read_text()
