"""Speed of the native backend's float32 vector math (compiler/c_math.py) against a
C loop calling libm's scalar functions and against NumPy's float32 ufuncs, on the
MNIST step's activation size (128 x 800) and a larger array; then the fused
`tanh(x + b)` the issue quotes (PyTensor's C loop: 1.56 ms, NumPy: 0.1 ms), and
one vs all threads for that loop over sizes (what runtime/threads.PAR_MIN rests on).

Interleaved repeats, medians, the load printed before and after.
Usage: python bench/c_math.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from netc.compiler.c_math import C_MATH_FUNCTIONS  # noqa: E402
from netc.runtime import native_build  # noqa: E402
from netc.runtime.threads import available_cores  # noqa: E402

FUNCS = {"tanh": ("netc_tanhf", "tanhf", np.tanh), "exp": ("netc_expf", "expf", np.exp),
         "log": ("netc_logf", "logf", np.log),
         "sigmoid": ("netc_sigmoidf", "1.0f / (1.0f + expf(-v))",
                     lambda x, out: np.reciprocal(np.add(np.exp(np.negative(x, out=out), out=out), 1, out=out),
                                                  out=out))}


def source() -> str:
    out = [C_MATH_FUNCTIONS]
    for k, (vec, scalar, _) in FUNCS.items():
        call = scalar if "(" in scalar else f"{scalar}(v)"
        out.append(f"""
void vec_{k}(const float* restrict x, float* restrict y, long long n) {{
#pragma omp simd
    for (long long i = 0; i < n; i++) y[i] = {vec}(x[i]);
}}
void sca_{k}(const float* restrict x, float* restrict y, long long n) {{
    for (long long i = 0; i < n; i++) {{ const float v = x[i]; y[i] = {call}; }}
}}""")
    out.append("""
void fused_tanh_bias(const float* restrict x, const float* restrict b, float* restrict y,
                     long long rows, long long cols, int threads, long long par_min) {
#pragma omp parallel for if(rows * cols >= par_min) num_threads(threads)
    for (long long r = 0; r < rows; r++) {
#pragma omp simd
        for (long long c = 0; c < cols; c++) y[r * cols + c] = netc_tanhf(x[r * cols + c] + b[c]);
    }
}
""")
    return "".join(out)


def median_time(fn, calls=5) -> float:
    """The median of a few single calls (a busy machine preempts long windows)."""
    fn()
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"load before: {os.getloadavg()}")
    t0 = time.perf_counter()
    lib = native_build.load(source(), "bench_c_math")
    print(f"build (or cache hit): {time.perf_counter() - t0:.3f} s")
    P, L = ctypes.c_void_p, ctypes.c_longlong
    rng = np.random.default_rng(0)
    for n in (128 * 800, 1 << 22):
        x = rng.uniform(-4, 4, n).astype(np.float32)
        xl = np.abs(x) + np.float32(1e-3)
        y = np.empty_like(x)
        runs = {}
        for k, (_, _, npf) in FUNCS.items():
            arg = xl if k == "log" else x
            runs[(k, "netc vector")] = lambda k=k, a=arg: getattr(lib, f"vec_{k}")(P(a.ctypes.data), P(y.ctypes.data), L(n))
            runs[(k, "libm scalar")] = lambda k=k, a=arg: getattr(lib, f"sca_{k}")(P(a.ctypes.data), P(y.ctypes.data), L(n))
            runs[(k, "numpy")] = lambda npf=npf, a=arg: npf(a, out=y)
        times = {key: [] for key in runs}
        for _ in range(args.repeats):
            for key, fn in runs.items():
                times[key].append(median_time(fn))
        print(f"\nn = {n}: ns per element, median (best) of {args.repeats}, one thread")
        print(f"{'':10s}{'netc vector':>16s}{'libm scalar':>16s}{'numpy':>16s}{'numpy/netc':>12s}")
        for k in FUNCS:
            cols = ("netc vector", "libm scalar", "numpy")
            t = {c: statistics.median(times[(k, c)]) / n * 1e9 for c in cols}
            m = {c: min(times[(k, c)]) / n * 1e9 for c in cols}
            print(f"{k:10s}" + "".join(f"{t[c]:9.3f} ({m[c]:.3f})" for c in cols)
                  + f"{t['numpy'] / t['netc vector']:12.2f}")
    cores = available_cores()
    print(f"\nfused tanh(x + b), x: B x 800, b: 800; ms per call (median), 1 vs {cores} threads")
    print(f"{'B':>8s}{'elements':>10s}{'1 thread':>12s}{f'{cores} threads':>12s}{'numpy':>10s}")
    b = rng.uniform(-1, 1, 800).astype(np.float32)
    for rows in (1, 4, 16, 32, 64, 128, 512):
        x = rng.uniform(-3, 3, (rows, 800)).astype(np.float32)
        y = np.empty_like(x)

        def call(t, x=x, y=y, rows=rows):
            lib.fused_tanh_bias(P(x.ctypes.data), P(b.ctypes.data), P(y.ctypes.data), L(rows), L(800),
                                ctypes.c_int(t), L(1))

        def numpy(x=x, y=y):
            np.add(x, b, out=y)
            np.tanh(y, out=y)
        ts = {1: [], cores: [], "np": []}
        for _ in range(args.repeats):
            ts[1].append(median_time(lambda: call(1)))
            ts[cores].append(median_time(lambda: call(cores)))
            ts["np"].append(median_time(numpy))
        print(f"{rows:8d}{rows * 800:10d}{statistics.median(ts[1]) * 1e3:12.4f}"
              f"{statistics.median(ts[cores]) * 1e3:12.4f}{statistics.median(ts['np']) * 1e3:10.4f}")
    print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
