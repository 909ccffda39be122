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
    print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
