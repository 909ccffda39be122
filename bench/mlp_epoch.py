"""One epoch of the MNIST 784-800-800-10 tanh network (minibatch 128, SGD with
momentum 0.9, float32) three ways in one process, measured side by side:

  netc      the compiled step generated from the spec below (the shipped
            specs/mnist_mlp.net uses rectifiers; the issue fixes tanh here)
  numpy     a hand-written NumPy implementation of the same step
  gemm      the eight matrix products of a step alone (a floor for both)

    python bench/mlp_epoch.py [--repeats 3] [--examples 50000]

Prints seconds per epoch (median of the repeats, runs interleaved so machine
noise hits all three alike) and the ratios netc/numpy and netc/gemm, and the
time to compile the spec (parse to lowered step).
"""
from __future__ import annotations

import argparse
import statistics
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
    t0 = time.perf_counter()
    for lo in range(0, len(x), B):
        idx = order[lo:lo + B]
        n = len(idx)
        if n not in xb:
            xb[n] = (np.empty((n, x.shape[1]), np.float32), np.empty(n, np.int64))
        np.take(x, idx, axis=0, out=xb[n][0])
        np.take(t, idx, axis=0, out=xb[n][1])
        step(*xb[n])
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--examples", type=int, default=50000)
    args = ap.parse_args()
    x, t = make_data(args.examples)

    compile_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        model = netc.compile(SPEC)
        compile_times.append(time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    params = init_params(rng)
    names = {"h1.W": "W0", "h1.b": "b0", "h2.W": "W1", "h2.b": "b1", "y.W": "W2", "y.b": "b2"}
    for ours, theirs in names.items():
        np.copyto(model.state[ours], params[theirs])
    prog = model.program
    state = model.state

    def netc_step(xb, tb):
        return prog.step(state, xb, tb, LR, MU)

    hand = HandNumpy(params)
    gemm = GemmOnly(params)
    # same first-step loss: the two implementations compute the same thing
    x0, t0_ = x[:B].copy(), t[:B].copy()
    l_ref = float(HandNumpy(params).step(x0, t0_))
    l_netc = float(prog.step({k: v.copy() for k, v in state.items()}, x0, t0_, LR, MU)[0])
    print(f"first-step loss: netc {l_netc:.6f}  numpy {l_ref:.6f}")

    runs = {"netc": netc_step, "numpy": hand.step, "gemm": gemm.step}
    times = {k: [] for k in runs}
    for r in range(args.repeats):
        for k, f in runs.items():
            times[k].append(epoch(f, x, t, np.random.default_rng(r)))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"examples per epoch: {len(x)}, batch {B}, repeats {args.repeats} (median seconds per epoch)")
    for k in runs:
        print(f"  {k:<6} {med[k]:8.3f} s   runs: {', '.join(f'{v:.3f}' for v in times[k])}")
    print(f"ratio netc/numpy: {med['netc'] / med['numpy']:.3f}   (target <= 1.15)")
    print(f"ratio netc/gemm:  {med['netc'] / med['gemm']:.3f}")
    print(f"compile the spec (parse to lowered step): median {statistics.median(compile_times):.3f} s "
          f"(target < 1 s)")
    shipped = Path(__file__).resolve().parent.parent / "specs" / "mnist_mlp.net"
    t0 = time.perf_counter()
    netc.compile(shipped)
    print(f"compile specs/mnist_mlp.net: {time.perf_counter() - t0:.3f} s (first compile in this process: "
          f"grammar already loaded)")


if __name__ == "__main__":
    main()
