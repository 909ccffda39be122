"""Transformations [RV] against the same network without them: updates of plain
SGD to a fixed training-error target (Raiko et al. 2012, Vatanen et al. 2013
report that the transformations speed up plain SGD).

    python bench/transforms.py [--examples 5000] [--hidden 200] [--seeds 0 1 2]
                               [--rates 0.1 0.3 1 3] [--target 0.02] [--epochs 10]

One network, three ways: MNIST 784-H-H-10 with tanh units and shortcut
connections from every earlier layer (the input included) into each later one
(`stack_transformed`, specs/transformed.net's topology), trained by plain SGD
(no momentum, minibatch 32) from the same initialization and batch order for
each seed, each variant at each rate of a grid (its best rate counts):

    none   transforms off: the units stay tanh(a) (alpha = beta = 0, gamma = 1)
    two    transforms = every(N, gamma = false): alpha, beta [Raiko et al. 2012]
    three  transforms = every(N, gamma = true): alpha, beta, gamma [Vatanen et al. 2013]

The data is a subset of MNIST's training set (the first --examples, inputs in
[0, 1]); the training error is measured on its first 1000 examples every 1000
examples (~31 updates): the update counts have that resolution. Refreshes run
before the first update and every --every updates, on a fresh sample of
--sample training examples. Prints each run's updates to the target (or "not
reached"), the median over seeds per variant and rate (a run that misses the
target counts as infinitely slow), each variant's best rate, and the ratio of
`none`'s best median to each variant's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import netc

NET = """input x : [784]
target t : class(10)
s1 = stack_transformed(x, {hidden})
s2 = stack_transformed(s1, {hidden})
y = dense(s2, 10)
loss = nll(softmax(y), t)
data {{
    train = mnist("train")[0:{n}]
    valid = mnist("train")[0:1000]
}}
train {{
    method = sgd(lr = {lr})
    batch = 32
    epochs = {epochs}
    valid_every = 1000
    stats = false
    seed = {seed}
    {transforms}
}}
"""

VARIANTS = {"none": "", "two": "transforms = every({every}, sample = {sample})",
            "three": "transforms = every({every}, gamma = true, sample = {sample})"}


def run(variant: str, lr: float, args, seed: int) -> dict:
    transforms = VARIANTS[variant].format(every=args.every, sample=args.sample)
    spec = NET.format(hidden=args.hidden, n=args.examples, lr=lr, epochs=args.epochs, seed=seed,
                      transforms=transforms)
    m = netc.compile(spec)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        m.fit(out=d, progress=False)
        rows = [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    seen = [(r["age"], r["valid_error"]) for r in rows if r.get("partial") and r.get("valid_error") is not None]
    hit = next((age for age, err in seen if err <= args.target), None)
    drift = max((r.get("transform_drift") or 0.0 for r in rows if not r.get("partial")), default=0.0)
    return {"updates": None if hit is None else -(-hit // 32), "final": seen[-1][1], "drift": drift,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=5000)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0])
    ap.add_argument("--target", type=float, default=0.02, help="training-error target (fraction)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--every", type=int, default=200, help="updates between refreshes")
    ap.add_argument("--sample", type=int, default=1000, help="training examples per refresh")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    print(f"MNIST train[0:{args.examples}], 784-{args.hidden}-{args.hidden}-10 tanh with full shortcuts, "
          f"plain SGD, batch 32, {args.epochs} epochs; target: training error <= {args.target:.1%} "
          f"(on train[0:1000], every 1000 examples); load {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[tuple[str, float], list] = {}
    for seed in args.seeds:
        for v in args.variants:
            for lr in args.rates:
                r = run(v, lr, args, seed)
                results.setdefault((v, lr), []).append(r)
                reached = "not reached" if r["updates"] is None else f"{r['updates']:5d} updates"
                print(f"  seed {seed} {v:5s} lr {lr:<5g}: {reached}; final error {r['final']:.2%}; max drift "
                      f"{r['drift']:.1e}; {r['seconds']:.0f}s", flush=True)
    print("median updates to the target over seeds (x: not reached by the median run)")
    print("  variant " + "".join(f"{'lr ' + format(lr, 'g'):>10}" for lr in args.rates) + "      best")
    best = {}
    for v in args.variants:
        meds = {lr: _median(results[(v, lr)]) for lr in args.rates}
        reached = {lr: m for lr, m in meds.items() if m is not None}
        best[v] = min(reached.items(), key=lambda kv: kv[1]) if reached else None
        cells = "".join(f"{'x' if m is None else format(m, 'g'):>10}" for m in meds.values())
        shown = "none reached" if best[v] is None else f"{best[v][1]:g} (lr {best[v][0]:g})"
        print(f"  {v:7s} {cells}   {shown}")
    if best.get("none") is not None:
        for v in args.variants:
            if v != "none" and best[v] is not None:
                print(f"  {v}: {best['none'][1] / best[v][1]:.2f}x fewer updates than none (best rate each)")
    print(f"load at the end {os.getloadavg()[0]:.2f}")


def _median(rs: list) -> float | None:
    """The median over seeds, a run that did not reach the target counting as infinitely slow."""
    vals = sorted(float("inf") if r["updates"] is None else r["updates"] for r in rs)
    if not vals:
        return None
    m = statistics.median(vals)
    return None if m == float("inf") else m


if __name__ == "__main__":
    main()
