"""SDLM against SGD at its best constant rate [EB 9.1: "about three times faster"]:
updates to a fixed training-loss target on an MNIST subset.

    python bench/sdlm_vs_sgd.py [--examples 4000] [--epochs 20] [--target 0.6]

The network is specs/second_order.net's (784-300-10, lecun_tanh, mse on +-1
targets, standardized inputs, minibatch 32). SGD's rate: `netc lr-probe`'s (the
largest that trains one epoch without diverging), and x3 and /3 around it
(the grid goes on down by 3 while its best rate is the smallest tried); the
best counts. SDLM runs as shipped: sdlm(mu = 0.02, gamma = 0.05)
with lr = auto(eigen), no tuning. The training loss is measured on a fixed
1000-example part of the training subset every 1000 examples (~31 updates),
so the update counts have that resolution. Prints each run's updates to the
target (or "not reached") and the ratio best SGD / SDLM.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import netc
from netc.diagnostics import lr_probe

NET = """input x : [784]
target t : class(10)
h = dense(x, 300, act = lecun_tanh, init = fan_in)
y = dense(h, 10, act = lecun_tanh, init = fan_in)
loss = mse(y, plus_minus_one(t))
data {{
    train = mnist("train")[0:{n}]
    valid = mnist("train")[0:1000]
    normalize = standardize
}}
train {{
    {method}
    batch = {batch}
    epochs = {epochs}
    valid_every = 1000
    stats = false
    seed = {seed}
}}
"""


def updates_to_target(method: str, args, seed: int) -> tuple[int | None, float, int]:
    """(updates until the monitored training loss <= target or None, final loss, recoveries)."""
    spec = NET.format(n=args.examples, method=method, batch=args.batch, epochs=args.epochs, seed=seed)
    m = netc.compile(spec)
    with tempfile.TemporaryDirectory() as d:
        m.fit(out=d)
        rows = [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    seen = [(r["age"], r["valid_loss"]) for r in rows if r.get("partial") and "valid_loss" in r]
    hit = next((age for age, loss in seen if loss <= args.target), None)
    return (None if hit is None else -(-hit // args.batch)), seen[-1][1], m.summary["recoveries"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--target", type=float, default=0.6, help="training-loss target (mse, +-1 targets)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    probe_spec = NET.format(n=args.examples, method="method = sgd(lr = 0.01)", batch=args.batch, epochs=1,
                            seed=args.seed)
    m = netc.compile(probe_spec)
    from netc.diagnostics import _train_set
    ds = _train_set(m, args.examples)
    print(f"lr-probe on {len(ds)} examples:")
    r = lr_probe(lambda **kw: netc.compile(probe_spec, **kw), ds.x, ds.t, start=10.0, log=print)
    if r is None:
        raise SystemExit("lr-probe found no rate that trains")
    print(f"target: training loss <= {args.target} (measured on 1000 training examples every 1000 examples)")
    results, finals = {}, {}
    rates = [r / 3, r, r * 3]
    while rates:
        lr = rates.pop(0)
        u, final, rec = updates_to_target(f"method = sgd(lr = {lr:.6g})", args, args.seed)
        results[lr], finals[lr] = u, final
        print(f"  sgd  lr {lr:<9.4g} updates to target: {u if u is not None else 'not reached':>12}   "
              f"final loss {final:.4g}  recoveries {rec}")
        if not rates and min(results, key=lambda k: (results[k] is None, results[k] or 0, finals[k])) == min(results):
            if len(results) < 6:  # the best rate is the smallest tried: extend the grid downwards
                rates.append(min(results) / 3)
    u_sdlm, final, rec = updates_to_target("method = sdlm(lr = 0.01, mu = 0.02, gamma = 0.05)\n    lr = auto(eigen)",
                                           args, args.seed)
    print(f"  sdlm auto(eigen)  updates to target: {u_sdlm if u_sdlm is not None else 'not reached':>12}   "
          f"final loss {final:.4g}  recoveries {rec}")
    sgd = [u for u in results.values() if u is not None]
    if sgd and u_sdlm:
        print(f"best SGD / SDLM updates: {min(sgd)} / {u_sdlm} = {min(sgd) / u_sdlm:.2f}x")
    else:
        print("ratio: undefined (a method did not reach the target)")
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
