"""Compile time against depth: MLP specs of depth 2, 8, 32 and 128 compiled
from text to the lowered training step (gradients and update included).

    python bench/compile_time.py [--repeats 3]

Prints seconds (median of the repeats), graph nodes, and seconds per node for
each depth, plus the growth factor per 4x depth (4.0 = linear), and the time
for specs/mnist_mlp.net. Theano took hours on a 164-layer ResNet (Theano#4494).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import netc


def mlp_spec(depth: int, width: int = 64) -> str:
    lines = ["input  x : [784]", "target t : class(10)", "h0 = x"]
    for i in range(1, depth):
        lines.append(f"h{i} = dense(h{i - 1}, {width}, act = tanh)")
    lines.append(f"y = dense(h{depth - 1}, 10)")
    lines.append("loss = nll(softmax(y), t) + 1e-5 * l2(weights)")
    lines.append("train {\n    method = sgd(lr = 0.01, momentum = 0.9)\n}")
    return "\n".join(lines) + "\n"


def timed(text: str, repeats: int) -> tuple[float, int]:
    times, nodes = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        m = netc.compile(text)
        times.append(time.perf_counter() - t0)
        nodes = m.program.step.nodes
    return statistics.median(times), nodes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    netc.compile(mlp_spec(2))  # load the grammar and prelude once
    print(f"{'depth':>6} {'seconds':>9} {'nodes':>7} {'us/node':>8}")
    prev = None
    rows = []
    for depth in (2, 8, 32, 128):
        sec, nodes = timed(mlp_spec(depth), args.repeats)
        rows.append((depth, sec, nodes))
        growth = f"  x{sec / prev:.2f} for 4x depth" if prev else ""
        print(f"{depth:>6} {sec:>9.3f} {nodes:>7} {sec / nodes * 1e6:>8.1f}{growth}")
        prev = sec
    spec = Path(__file__).resolve().parent.parent / "specs" / "mnist_mlp.net"
    sec, nodes = timed(spec.read_text(), args.repeats)
    print(f"specs/mnist_mlp.net: {sec:.3f} s, {nodes} nodes (target < 0.3 s)")
    (d0, s0, n0), (d1, s1, n1) = rows[1], rows[-1]
    print(f"seconds per node from depth {d0} to {d1}: {s0 / n0 * 1e6:.1f} -> {s1 / n1 * 1e6:.1f} us "
          f"(flat = linear growth)")


if __name__ == "__main__":
    main()
