"""GFLOP/s of the MNIST MLP step's GEMMs (784-800-800-10, B = 128, float32) through
each BLAS the native backend can use, called by ctypes as the generated code calls
them (runtime/blas.py): MKL (if the `mkl` extra is installed) and NumPy's bundled
OpenBLAS, plus NumPy's own `@` (the same OpenBLAS, with NumPy's overhead).

Interleaved repeats (every BLAS and shape inside each repeat), medians; the load
is printed before and after. Usage: python bench/blas_gemm.py [--repeats 7] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from netc.runtime import blas as blas_mod  # noqa: E402
from netc.runtime.threads import available_cores  # noqa: E402

B = 128
# (what, m, n, k, transa, transb): C[m,n] = op(A) op(B); A, B stored as the step stores them
SHAPES = [
    ("fwd   X W1      128x784 @ 784x800", B, 800, 784, False, False),
    ("fwd   H1 W2     128x800 @ 800x800", B, 800, 800, False, False),
    ("fwd   H2 W3     128x800 @ 800x10 ", B, 10, 800, False, False),
    ("bwd   dH1=dZ2 W2^T  128x800 @ (800x800)^T", B, 800, 800, False, True),
    ("bwd   dH2=dZ3 W3^T  128x10 @ (800x10)^T ", B, 800, 10, False, True),
    ("grad  dW1=X^T dZ1   (128x784)^T @ 128x800", 784, 800, B, True, False),
    ("grad  dW2=H1^T dZ2  (128x800)^T @ 128x800", 800, 800, B, True, False),
    ("grad  dW3=H2^T dZ3  (128x800)^T @ 128x10 ", 800, 10, B, True, False),
]


def operands(m, n, k, ta, tb, rng):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    return a, b, np.zeros((m, n), np.float32)


def time_calls(fn, min_s=0.05) -> float:
    fn()
    n, t = 0, 0.0
    t0 = time.perf_counter()
    while t < min_s:
        fn()
        n += 1
        t = time.perf_counter() - t0
    return t / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=available_cores())
    ap.add_argument("--no-step", action="store_true", help="only the GEMM table")
    args = ap.parse_args()
    print(f"load before: {os.getloadavg()}")
    libs = {}
    for choice in ("mkl", "openblas"):
        b = blas_mod.find_blas(choice)
        if b is not None:
            b.set_threads(args.threads)
            assert blas_mod.smoke_test(b) < 1e-5
            libs[choice] = b
            print(f"{choice}: {b.describe()}, {b.get_threads()} threads")
    rng = np.random.default_rng(0)
    data = [operands(m, n, k, ta, tb, rng) for _, m, n, k, ta, tb in SHAPES]
    runners = {}
    for name, b in libs.items():
        for i, (_, m, n, k, ta, tb) in enumerate(SHAPES):
            a_, b_, c_ = data[i]
            runners[(name, i)] = (lambda b=b, a_=a_, b_=b_, c_=c_, ta=ta, tb=tb:
                                  blas_mod.gemm(b, a_, b_, ta, tb, out=c_))
    for i, (_, m, n, k, ta, tb) in enumerate(SHAPES):
        a_, b_, c_ = data[i]
        runners[("numpy @", i)] = (lambda a_=a_, b_=b_, c_=c_, ta=ta, tb=tb:
                                   np.matmul(a_.T if ta else a_, b_.T if tb else b_, out=c_))
    times = {key: [] for key in runners}
    for _ in range(args.repeats):
        for key, fn in runners.items():
            times[key].append(time_calls(fn))
    names = list(libs) + ["numpy @"]
    print(f"\nGFLOP/s (median of {args.repeats}), float32, {args.threads} threads")
    print(f"{'GEMM':44s}" + "".join(f"{n:>10s}" for n in names))
    totals = {n: 0.0 for n in names}
    for i, (what, m, n, k, ta, tb) in enumerate(SHAPES):
        flops = 2.0 * m * n * k
        row = f"{what:44s}"
        for nm in names:
            t = statistics.median(times[(nm, i)])
            totals[nm] += t
            row += f"{flops / t / 1e9:10.1f}"
        print(row)
    step_flops = sum(2.0 * m * n * k for _, m, n, k, _, _ in SHAPES)
    print(f"{'whole step (all 8 GEMMs)':44s}" + "".join(f"{step_flops / totals[n] / 1e9:10.1f}" for n in names))
    print(f"{'  ms per step':44s}" + "".join(f"{totals[n] * 1e3:10.3f}" for n in names))
    print(f"{'  s per epoch (469 steps)':44s}" + "".join(f"{totals[n] * 469:10.3f}" for n in names))
    if not args.no_step:
        step_section(libs, args.repeats)
    print(f"\nload after: {os.getloadavg()}")


STEP_C = r"""
/* a step's shape without its bookkeeping: forward GEMM + bias + tanh per layer, the weight
   gradients' GEMMs, one momentum pass over all parameters (what runs between the GEMMs) */
void step(long long B, float* const* W, float* const* V, float* const* H, const float* X,
          const long long* dims, int layers, float lr, float mu) {
    const float* in = X;
    for (int l = 0; l < layers; l++) {
        const long long k = dims[l], n = dims[l + 1];
        float* h = H[l];
        netc_sgemm(0, 0, B, n, k, 1.0f, in, k, W[l], n, 0.0f, h, n);
#pragma omp parallel for if(B * n >= netc_par_min) num_threads(netc_threads)
        for (long long r = 0; r < B; r++) {
#pragma omp simd
            for (long long c = 0; c < n; c++) h[r * n + c] = tanh(h[r * n + c]);
        }
        in = h;
    }
    for (int l = layers - 1; l >= 0; l--) {
        const long long k = dims[l], n = dims[l + 1];
        const float* a = l ? H[l - 1] : X;
        netc_sgemm(1, 0, k, n, B, -lr, a, k, H[l], n, mu, V[l], n); /* v = mu v - lr a^T g */
        const long long size = k * n;
        float* w = W[l];
        const float* v = V[l];
#pragma omp parallel for simd if(size >= netc_par_min) num_threads(netc_threads)
        for (long long i = 0; i < size; i++) w[i] += v[i];
    }
}
"""


def step_section(libs, repeats: int) -> None:
    """The step above with each BLAS and (BLAS threads, loop threads): whether the two
    pools get in each other's way (OpenBLAS has its own; MKL here shares libgomp's)."""
    import ctypes

    from netc.compiler.c_math import C_MATH
    from netc.compiler.c_runtime import C_RUNTIME
    from netc.runtime import native_build
    from netc.runtime.threads import ThreadPlan, setup
    lib = native_build.load(C_MATH + C_RUNTIME + STEP_C, "bench_step")
    dims = [784, 800, 800, 10]
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((a, b)).astype(np.float32) * 0.01 for a, b in zip(dims, dims[1:])]
    V = [np.zeros_like(w) for w in W]
    H = [np.zeros((B, b), np.float32) for b in dims[1:]]
    X = rng.standard_normal((B, 784)).astype(np.float32)
    P = ctypes.c_void_p

    def arr(xs):
        return (P * len(xs))(*[P(x.ctypes.data) for x in xs])
    w_, v_, h_ = arr(W), arr(V), arr(H)
    d_ = (ctypes.c_longlong * 4)(*dims)
    lib.step.argtypes = [ctypes.c_longlong, P, P, P, P, P, ctypes.c_int, ctypes.c_float, ctypes.c_float]
    cores = available_cores()
    configs = [(name, bt, lt) for name in libs for bt, lt in
               dict.fromkeys([(1, 1), (cores, cores), (cores, 1)])]
    times = {c: [] for c in configs}
    for _ in range(repeats):
        for name, bt, lt in configs:
            setup(lib, ThreadPlan(lt, bt, 32768, "bench"), libs[name])

            def run():
                lib.step(B, w_, v_, h_, X.ctypes.data, d_, 3, 1e-4, 0.9)
            times[(name, bt, lt)].append(time_calls(run, 0.2))
    print("\none step's GEMMs + tanh loops + momentum pass (C, one call), ms per step (median):")
    print(f"{'BLAS':10s}{'BLAS threads':>14s}{'loop threads':>14s}{'ms/step':>10s}{'s/epoch':>10s}")
    for (name, bt, lt), ts in times.items():
        t = statistics.median(ts)
        print(f"{name:10s}{bt:14d}{lt:14d}{t * 1e3:10.3f}{t * 469:10.3f}")


if __name__ == "__main__":
    main()
