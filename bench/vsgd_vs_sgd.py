"""vSGD, no tuning, against SGD at its best constant rate (Schaul, Zhang & LeCun
2013: vSGD matches or beats SGD at its best tuned rate): final errors on an MNIST
subset.

    python bench/vsgd_vs_sgd.py [--examples 5000] [--epochs 5] [--act relu]

The network: 784-100-10 (relu or tanh), softmax with NLL, standardized inputs,
minibatch 32. SGD's rate: `netc lr-probe`'s (the largest that trains one epoch
without diverging), x3 and /3 around it (going on down by 3 while the best is the smallest
tried); the one with the lowest validation
error counts (chosen on 5000 held-out training examples, reported on 5000 test
examples). vSGD runs with its defaults: vsgd() (n0 = 10, C = 2, curvature =
unit), and the paper's per-weight diagonal, vsgd(curvature = diagonal), as a
second row. Prints final training loss, validation and test error, recoveries.
"""
from __future__ import annotations

import argparse
import time

import netc
from netc.diagnostics import _train_set, lr_probe

NET = """input x : [784]
target t : class(10)
h = dense(x, 100, act = {act})
y = dense(h, 10)
loss = nll(softmax(y), t)
data {{
    train = mnist("train")[0:{n}]
    valid = mnist("train")[50000:55000]
    test = mnist("t10k")[0:5000]
    normalize = standardize
}}
train {{
    {method}
    batch = 32
    epochs = {epochs}
    stats = false
    seed = {seed}
}}
"""


def run(method: str, args) -> dict:
    m = netc.compile(NET.format(act=args.act, n=args.examples, method=method, epochs=args.epochs, seed=args.seed))
    m.fit()
    return m.summary


def line(name: str, s: dict) -> str:
    return (f"  {name:<28} train loss {s['train_loss']:.4f}  valid error {s['valid_error'] * 100:5.2f}%  "
            f"test error {s['test_error'] * 100:5.2f}%  recoveries {s['recoveries']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--act", default="relu", choices=["relu", "tanh"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    probe = NET.format(act=args.act, n=args.examples, method="method = sgd(lr = 0.01)", epochs=1, seed=args.seed)
    ds = _train_set(netc.compile(probe), args.examples)
    print(f"lr-probe on {len(ds)} examples:")
    r = lr_probe(lambda **kw: netc.compile(probe, **kw), ds.x, ds.t, start=10.0, log=print)
    if r is None:
        raise SystemExit("lr-probe found no rate that trains")
    print(f"{args.act} net, {args.examples} training examples, {args.epochs} epochs:")
    sgd = {}
    rates = [r / 3, r, r * 3]
    while rates:
        lr = rates.pop(0)
        sgd[lr] = run(f"method = sgd(lr = {lr:.6g})", args)
        print(line(f"sgd(lr = {lr:.4g})", sgd[lr]))
        best = min(sgd, key=lambda k: sgd[k]["valid_error"])
        if not rates and best == min(sgd) and len(sgd) < 6:  # best at the low edge: extend the grid down
            rates.append(best / 3)
    vs = run("method = vsgd()", args)
    print(line("vsgd() (no tuning)", vs))
    diag = run("method = vsgd(curvature = diagonal)", args)
    print(line("vsgd(curvature = diagonal)", diag))
    print(f"test error: vSGD {vs['test_error'] * 100:.2f}% against SGD at its best rate ({best:.4g}) "
          f"{sgd[best]['test_error'] * 100:.2f}%")
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
