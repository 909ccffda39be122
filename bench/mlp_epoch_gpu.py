"""One epoch of the MNIST 784-800-800-10 tanh network (minibatch 128, SGD with
momentum 0.9, float32) on the GPU, two ways, measured side by side:

  netc      the fused CUDA step generated from the spec below (device="gpu":
            RawKernels + cuBLAS through CuPy, parameters on the device)
  torch     PyTorch CUDA eager: the same network and update, written by hand

    python bench/mlp_epoch_gpu.py [--repeats 3] [--examples 50000] [--data host|device]

Both read minibatches from host memory (what `netc train --device gpu` does)
or, with --data device, from a copy of the training set already on the GPU.
Neither synchronizes inside the epoch; the loss is read once at its end.
Prints seconds per epoch (median of interleaved repeats), the ratio, and the
fused program's kernels, bytes and FLOPs per step. Without CuPy, a device or
PyTorch it says what is missing and measures what it can (nothing at all
without a GPU), exiting 0.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import netc
from netc.compiler.cupy_runtime import require_gpu
from netc.compiler.errors import NetcError
from netc.compiler.fuse_stats import format_stats
from netc.runtime.data import mnist

# the network, its parameters and rates: the CPU benchmark's, so the two compare
from mlp_epoch import B, LR, MU, SPEC, init_params  # noqa: E402  (bench/ is on sys.path when run)

NAMES = {"h1.W": "W0", "h1.b": "b0", "h2.W": "W1", "h2.b": "b1", "y.W": "W2", "y.b": "b2"}


def torch_or_reason():
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return None, "PyTorch has no CUDA device"
    return torch, None


class TorchStep:
    def __init__(self, torch, params):
        self.torch = torch
        dev = "cuda"
        self.p = {k: torch.tensor(v, device=dev, requires_grad=True) for k, v in params.items()}
        self.v = {k: torch.zeros_like(t) for k, t in self.p.items()}

    def __call__(self, x, t):
        torch = self.torch
        p = self.p
        if not torch.is_tensor(x):
            x, t = torch.from_numpy(x).cuda(non_blocking=True), torch.from_numpy(t).cuda(non_blocking=True)
        h1 = torch.tanh(x @ p["W0"] + p["b0"])
        h2 = torch.tanh(h1 @ p["W1"] + p["b1"])
        y = h2 @ p["W2"] + p["b2"]
        loss = torch.nn.functional.cross_entropy(y, t)
        grads = torch.autograd.grad(loss, list(p.values()))
        with torch.no_grad():
            for (k, w), g in zip(p.items(), grads):
                v = self.v[k]
                v.mul_(MU).sub_(g, alpha=LR)
                w.add_(v)
        return loss


def epoch(step, x, t, order, sync, take):
    last = None
    t0 = time.perf_counter()
    for lo in range(0, len(order), B):
        xb, tb = take(order[lo:lo + B])
        last = step(xb, tb)
    loss = float(last)  # the one host sync of the epoch
    sync()
    return time.perf_counter() - t0, loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--examples", type=int, default=50000)
    ap.add_argument("--data", choices=["host", "device"], default="host")
    args = ap.parse_args()

    m_cpu = netc.compile(SPEC)
    plan = m_cpu.program.named("train_step", "cuda").plan
    print(format_stats(plan.stats(B), "the fused step (netc compile --stats)").split("\n\n")[0])

    try:
        cp = require_gpu()
    except NetcError as e:
        print(f"skip: {e.message}")
        print("skip: nothing measured (the GPU path is checked without a GPU by tests/test_cuda.py)")
        return 0
    torch, why = torch_or_reason()
    if torch is None:
        print(f"skip torch: {why}; measuring netc alone")

    ds = mnist("train")
    x = np.ascontiguousarray(ds.x[:args.examples] - 0.13, dtype=np.float32)
    t = ds.t[:args.examples].astype(np.int64)
    rng = np.random.default_rng(0)
    params = init_params(rng)

    model = netc.compile(SPEC, device="gpu")
    for ours, theirs in NAMES.items():
        model.state[ours][...] = cp.asarray(params[theirs])
    prog, state = model.program, model.state

    def netc_step(xb, tb):
        return prog.step(state, xb, tb, LR, MU)[0]

    runs = {"netc": (netc_step, cp.cuda.Device().synchronize)}
    if torch is not None:
        tstep = TorchStep(torch, params)
        runs["torch"] = (tstep, torch.cuda.synchronize)
        # the same first-step loss: both compute the same thing
        x0, t0 = x[:B].copy(), t[:B].copy()
        s0 = {k: v.copy() for k, v in state.items()}
        l_netc = float(prog.step(s0, x0, t0, LR, MU)[0])
        l_torch = float(TorchStep(torch, params)(x0, t0))
        print(f"first-step loss: netc {l_netc:.6f}  torch {l_torch:.6f}")

    if args.data == "device":
        xd, td = cp.asarray(x), cp.asarray(t)

        def take_netc(idx):
            i = cp.asarray(idx)
            return cp.take(xd, i, axis=0), cp.take(td, i, axis=0)

        def take_torch(idx):
            xb, tb = take_netc(idx)
            return torch.as_tensor(xb, device="cuda"), torch.as_tensor(tb, device="cuda")
        takes = {"netc": take_netc, "torch": take_torch}
    else:
        host = {}

        def take_host(idx):
            n = len(idx)
            if n not in host:
                host[n] = (np.empty((n, 784), np.float32), np.empty(n, np.int64))
            np.take(x, idx, axis=0, out=host[n][0])
            np.take(t, idx, axis=0, out=host[n][1])
            return host[n]
        takes = {k: take_host for k in runs}

    # warm up: kernel compilation (NVRTC, cached in-process) and cuBLAS handles
    for k, (step, sync) in runs.items():
        epoch(step, x[:4 * B], t[:4 * B], np.arange(4 * B), sync, takes[k])
    times = {k: [] for k in runs}
    losses = {}
    for r in range(args.repeats):
        order = np.random.default_rng(r).permutation(len(x))
        for k, (step, sync) in runs.items():
            sec, loss = epoch(step, x, t, order, sync, takes[k])
            times[k].append(sec)
            losses[k] = loss
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"examples per epoch: {len(x)}, batch {B}, data on the {args.data}, repeats {args.repeats} "
          f"(median seconds per epoch); device: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    for k in runs:
        print(f"  {k:<6} {med[k]:8.3f} s   runs: {', '.join(f'{v:.3f}' for v in times[k])}   "
              f"last loss {losses[k]:.4f}")
    if "torch" in med:
        print(f"ratio netc/torch: {med['netc'] / med['torch']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
