"""The contractive penalty's cost: one training step of the denoising
contractive auto-encoder (specs/denoising_cae.net's network) against the same
denoising auto-encoder without the penalty, side by side in one process.

    python bench/cae_step.py [--repeats 5] [--steps 50]

The compiler reduces contractive(h, x) (the batch mean of |J_h(x)|_F^2 at the
noise-free input) to sum_j (h_j(1-h_j))^2 sum_i W_ij^2 per example,
so the ratio should stay near 1 (target <= 1.5); a materialized Jacobian would
be batch x 500 x 784.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import netc
from netc.compiler.graph import toposort
from netc.runtime.data import mnist

NET = """input x : [784]
W = param([784, 500], init = glorot_sigmoid)
h = sigmoid(mask(x, drop = 0.25) @ W + param([500]))
r = sigmoid(h @ W' + param([784]))
"""
TRAIN = "train {\n    method = sgd(lr = 0.01, momentum = 0.9)\n    batch = 32\n}\n"
CAE = NET + "loss = cross_entropy(r, x) + 0.1 * contractive(h, x)\n" + TRAIN
DAE = NET + "loss = cross_entropy(r, x)\n" + TRAIN


def step_time(model, x, steps: int) -> float:
    prog, state = model.program, model.state
    t0 = time.perf_counter()
    for k in range(steps):
        xb = x[(k * 32) % (len(x) - 32):][:32]
        prog.step(state, xb, 0.01, 0.9, k)
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    x = np.ascontiguousarray(mnist("train").x[:5000])
    cae, dae = netc.compile(CAE), netc.compile(DAE)
    biggest = max(int(np.prod([32 if d is None else d for d in n.shape]))
                  for n in toposort([u for _, u in cae.program.updates] + [cae.program.loss]))
    print(f"largest node in the compiled CAE step: {biggest:,} elements "
          f"(a materialized Jacobian would be {32 * 500 * 784:,})")
    for m in (cae, dae):  # bind and warm up
        step_time(m, x, 3)
    times = {"cae": [], "dae": []}
    for _ in range(args.repeats):
        times["cae"].append(step_time(cae, x, args.steps))
        times["dae"].append(step_time(dae, x, args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in ("dae", "cae"):
        print(f"  {k}: {med[k] * 1e3:7.2f} ms/step (median of {args.repeats}; runs "
              f"{', '.join(f'{v * 1e3:.2f}' for v in times[k])})")
    print(f"ratio cae/dae: {med['cae'] / med['dae']:.3f}   (target <= 1.5)")


if __name__ == "__main__":
    main()
