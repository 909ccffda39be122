"""One epoch of the MNIST 784-800-800-10 tanh network (minibatch 128, SGD with
momentum 0.9, float32) several ways in one process, measured side by side:

  native    netc's step compiled to C (the native backend, its BLAS: MKL when the
            `mkl` wheel is installed, else NumPy's OpenBLAS)
  netc      the compiled step as generated NumPy (the numpy backend) from the spec
            below (the shipped specs/mnist_mlp.net uses rectifiers; the issue fixes tanh)
  numpy     a hand-written NumPy implementation of the same step
  gemm      the eight matrix products of a step alone, NumPy's BLAS (a floor for numpy)

then the small network's step (64-100-10 relu, B = 32, SGD momentum 0.9) native
and numpy, and the native compile of the spec cold (an empty cache, a fresh
process) and warm (the cache filled).

    python bench/mlp_epoch.py [--repeats 3] [--examples 50000] [--profile]

Prints seconds per epoch (median of the repeats, runs interleaved so machine
noise hits all alike) and the ratios; `--profile` splits the native step into
its GEMMs, its elementwise/reduce kernels and the call overhead.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import numpy as np
from pathlib import Path

import netc
from netc.runtime.data import mnist

SPEC = """
input  x : [784]
target t : class(10)
h1 = dense(x,  800, act = tanh, init = glorot)
h2 = dense(h1, 800, act = tanh, init = glorot)
y  = dense(h2, 10,  act = identity)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.01, momentum = 0.9)
    batch  = 128
}
"""
SIZES = (784, 800, 800, 10)
LR, MU, B = 0.01, 0.9, 128


def make_data(n: int):
    ds = mnist("train")
    x = np.ascontiguousarray(ds.x[:n] - 0.13, dtype=np.float32)
    return x, ds.t[:n].astype(np.int64)


def init_params(rng):
    ps = {}
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        r = np.sqrt(6 / (a + b))
        ps[f"W{i}"] = rng.uniform(-r, r, (a, b)).astype(np.float32)
        ps[f"b{i}"] = np.zeros(b, np.float32)
    return ps


class HandNumpy:
    """The step as a careful NumPy user would write it (in-place where easy)."""

    def __init__(self, params):
        self.p = {k: v.copy() for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, x, t):
        p, v = self.p, self.v
        h1 = np.tanh(x @ p["W0"] + p["b0"])
        h2 = np.tanh(h1 @ p["W1"] + p["b1"])
        y = h2 @ p["W2"] + p["b2"]
        y -= y.max(axis=1, keepdims=True)
        e = np.exp(y)
        s = e / e.sum(axis=1, keepdims=True)
        n = len(x)
        loss = -np.mean(np.log(s[np.arange(n), t] + 1e-30))
        d = s
        d[np.arange(n), t] -= 1
        d /= n
        g = {"W2": h2.T @ d, "b2": d.sum(0)}
        dh = (d @ p["W2"].T) * (1 - h2 * h2)
        g["W1"], g["b1"] = h1.T @ dh, dh.sum(0)
        dh = (dh @ p["W1"].T) * (1 - h1 * h1)
        g["W0"], g["b0"] = x.T @ dh, dh.sum(0)
        for k in p:
            v[k] *= MU
            v[k] -= LR * g[k]
            p[k] += v[k]
        return loss


class GemmOnly:
    def __init__(self, params):
        self.p = params
        self.bufs = {}

    def step(self, x, t):
        p = self.p
        h1 = x @ p["W0"]
        h2 = h1 @ p["W1"]
        y = h2 @ p["W2"]
        _ = h2.T @ y, y @ p["W2"].T, h1.T @ h2, h2 @ p["W1"].T, x.T @ h1
        return 0.0


def epoch(step, x, t, rng):
    order = rng.permutation(len(x))
    xb = {}
    c0 = time.process_time()
    t0 = time.perf_counter()
    for lo in range(0, len(x), B):
        idx = order[lo:lo + B]
        n = len(idx)
        if n not in xb:
            xb[n] = (np.empty((n, x.shape[1]), np.float32), np.empty(n, np.int64))
        np.take(x, idx, axis=0, out=xb[n][0])
        np.take(t, idx, axis=0, out=xb[n][1])
        step(*xb[n])
    return time.perf_counter() - t0, time.process_time() - c0


SMALL = """
input  x : [64]
target t : class(10)
h = dense(x, 100, act = relu)
y = dense(h, 10, act = identity)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.01, momentum = 0.9)
    batch  = 32
}
"""


def small_step_us(backend: str, repeats: int = 5, n: int = 2000) -> tuple[float, float]:
    """Median microseconds of one step of the small network (B = 32): wall, CPU."""
    m = netc.compile(SMALL, backend=backend)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 64)).astype(np.float32)
    t = rng.integers(0, 10, 32)
    step, state = m.program.step, m.state
    step(state, x, t, LR, MU)
    out, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            step(state, x, t, LR, MU)
        out.append((time.perf_counter() - t0) / n * 1e6)
        cpu.append((time.process_time() - c0) / n * 1e6)
    return statistics.median(out), statistics.median(cpu)


COMPILE = """
import resource, time, netc
def once():
    w, c = time.perf_counter(), time.process_time()
    m = netc.compile({spec!r}, backend="native")
    for name in ("train_step", "evaluate", "predict"):
        f = m.program.named(name)
        if f is not None:
            f.ready()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - w, time.process_time() - c, kids.ru_utime + kids.ru_stime
first = once()
again = once()
print(*first, *again)
"""


def native_compile_seconds(spec: str) -> dict:
    """netc.compile of `spec` until every native function is loaded, in a fresh process:
    `cold` with an empty cache directory, `warm` with the one it filled (both the first
    compile of their process: the grammar loads), `again` a second compile in the warm
    process. Each (wall, CPU of the process, CPU of its children: the C compiler)."""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NETC_CACHE_DIR=d)
        runs = [[float(v) for v in subprocess.run([sys.executable, "-c", COMPILE.format(spec=spec)], env=env,
                                                   check=True, capture_output=True, text=True).stdout.split()]
                for _ in range(2)]
    return {"cold": runs[0][:3], "warm": runs[1][:3], "again": runs[1][3:5] + [0.0]}


def profile(prog, state, x, t, n: int = 30) -> dict:
    """The native step's CPU time on one thread, split by a profiling build (each kernel
    between two reads of the thread's CPU clock): GEMMs, elementwise and reduce kernels,
    and the rest (the Python call, the glue). CPU time, so the machine's load hardly
    moves it."""
    import ctypes
    from netc.compiler import lower_c
    from netc.runtime import threads
    fn = lower_c.lower(prog.step_outputs, prog.updates, "train_step", feeds=None, profile=True).ready()
    feeds = {"x": x, "t": t, "lr": LR, "momentum": MU}
    args = [feeds[f] for f in fn.feeds]
    step = fn.bind(state, len(x))
    threads.setup(fn._loaded[0], threads.ThreadPlan(1, 1, 1 << 62, "profile: one thread"))
    step(*args)
    prof = (ctypes.c_longlong * len(fn.plan.kernels)).in_dll(fn._loaded[0], "netc_prof_train_step")
    for i in range(len(prof)):
        prof[i] = 0
    c0 = time.process_time()
    for _ in range(n):
        step(*args)
    whole = (time.process_time() - c0) / n
    out = {"step": whole}
    for k in fn.plan.kernels:
        out[k.kind] = out.get(k.kind, 0.0) + prof[k.id] / n / 1e9
    out["rest"] = whole - sum(prof) / n / 1e9
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--examples", type=int, default=50000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"(1/5/15 min) on {os.cpu_count()} cores")
    x, t = make_data(args.examples)

    compile_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        model = netc.compile(SPEC, backend="numpy")
        compile_times.append(time.perf_counter() - t0)
    native = netc.compile(SPEC, backend="native")
    rng = np.random.default_rng(0)
    params = init_params(rng)
    names = {"h1.W": "W0", "h1.b": "b0", "h2.W": "W1", "h2.b": "b1", "y.W": "W2", "y.b": "b2"}
    for m in (model, native):
        for ours, theirs in names.items():
            np.copyto(m.state[ours], params[theirs])
    prog, state = model.program, model.state
    nprog, nstate = native.program, native.state
    from netc.runtime.blas import find_blas
    print(f"native BLAS: {find_blas().describe()}; native step fuses {nprog.step.fused_gemms}")

    def netc_step(xb, tb):
        return prog.step(state, xb, tb, LR, MU)

    def native_step(xb, tb):
        return nprog.step(nstate, xb, tb, LR, MU)

    hand = HandNumpy(params)
    gemm = GemmOnly(params)
    # same first-step loss: the implementations compute the same thing
    x0, t0_ = x[:B].copy(), t[:B].copy()
    l_ref = float(HandNumpy(params).step(x0, t0_))
    l_netc = float(prog.step({k: v.copy() for k, v in state.items()}, x0, t0_, LR, MU)[0])
    l_nat = float(nprog.step({k: v.copy() for k, v in nstate.items()}, x0, t0_, LR, MU)[0])
    print(f"first-step loss: native {l_nat:.6f}  netc {l_netc:.6f}  numpy {l_ref:.6f}")

    runs = {"native": native_step, "netc": netc_step, "numpy": hand.step, "gemm": gemm.step}
    times = {k: [] for k in runs}
    for r in range(args.repeats):
        for k, f in runs.items():
            times[k].append(epoch(f, x, t, np.random.default_rng(r)))
    med = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    print(f"examples per epoch: {len(x)}, batch {B}, repeats {args.repeats} (median seconds per epoch; "
          f"cpu: the process's CPU seconds, all threads, spinning included)")
    for k in runs:
        print(f"  {k:<6} wall {med[k]:8.3f} s  cpu {cpu[k]:8.3f} s   runs: "
              f"{', '.join(f'{w:.3f}' for w, _ in times[k])}")
    print(f"cpu ratios: native/numpy {cpu['native'] / cpu['numpy']:.3f}  native/netc-numpy "
          f"{cpu['native'] / cpu['netc']:.3f}  native/gemm {cpu['native'] / cpu['gemm']:.3f}")
    print(f"ratio native/numpy: {med['native'] / med['numpy']:.3f}   native/netc-numpy: "
          f"{med['native'] / med['netc']:.3f}   native/gemm: {med['native'] / med['gemm']:.3f}")
    print(f"ratio netc/numpy: {med['netc'] / med['numpy']:.3f}   (target <= 1.15)")
    if args.profile:
        xb, tb = x[:B].copy(), t[:B].copy()
        pr = profile(nprog, {k: v.copy() for k, v in nstate.items()}, xb, tb)
        steps = -(-len(x) // B)
        parts = ", ".join(f"{k} {pr[k] * 1e3:.2f} ms ({pr[k] / pr['step']:.0%})"
                          for k in ("gemm", "elementwise", "reduce", "rest") if k in pr)
        print(f"native step profile, one thread, CPU time (B={B}): step {pr['step'] * 1e3:.2f} ms = {parts}; "
              f"x {steps} steps = {pr['step'] * steps:.2f} s")
    us = {b: small_step_us(b) for b in ("native", "numpy")}
    print(f"small step (64-100-10 relu, B=32), wall (cpu): native {us['native'][0]:.1f} ({us['native'][1]:.1f}) us, "
          f"numpy {us['numpy'][0]:.1f} ({us['numpy'][1]:.1f}) us")
    cs = native_compile_seconds(SPEC)
    print("native compile of the spec (until loaded), wall / CPU / C compiler CPU: "
          + "; ".join(f"{k} {w:.3f} / {c:.3f} / {cc:.2f} s" for k, (w, c, cc) in cs.items())
          + "  (cold: empty cache, fresh process, target < 1.5 s; warm: cache filled, target < 0.1 s; "
            "again: a second compile in that process)")
    print(f"compile the spec (numpy backend, parse to lowered step): median {statistics.median(compile_times):.3f} s")


if __name__ == "__main__":
    main()
