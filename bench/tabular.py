"""A small tabular problem, netc against scikit-learn's MLPClassifier, side by side.

scikit-learn's digits (8x8 images as 64 features, scaled to [0, 1]), its usual
75/25 split (train_test_split, random_state 0: 1,347 training and 450 test
examples), a 64-100-10 network trained 200 epochs. Both sides use the same
settings, as close as the two allow:

  hidden layer   100 rectifiers, softmax output, log-loss (nll of softmax)
  optimizer      SGD, momentum 0.9 (classical, not Nesterov), constant rate 0.01
  minibatch      32, reshuffled each epoch
  epochs         200, all of them (scikit-learn: tol = 0, n_iter_no_change
                 larger than max_iter, no early stopping)
  penalty        none (scikit-learn: alpha = 0)
  initialization Glorot uniform on both (scikit-learn's for relu), zero biases
                 on netc's side (scikit-learn draws its biases from the same range)
  float32        netc's default; scikit-learn keeps float32 input in float32

    python bench/tabular.py [--repeats 3] [--epochs 200] [--backend native|numpy]

Prints each side's fit time (median of the repeats, interleaved) and test
accuracy, the ratio netc/scikit-learn, and netc's compile time apart (the fit
time is `Model.fit` alone; compile is printed on its own line). `--default-sklearn`
also times MLPClassifier with its own defaults (adam, batch 200) for reference.
scikit-learn is a dev/test dependency of netc, not a requirement.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np

import netc

SPEC = """
input  x : [64]
target t : class(10)
h = dense(x, 100, act = relu, init = glorot)
y = dense(h, 10, act = identity)
loss = nll(softmax(y), t)
train {{
    method = sgd(lr = 0.01, momentum = 0.9)
    batch  = 32
    epochs = {epochs}
}}
"""


def load():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, t = load_digits(return_X_y=True)
    xtr, xte, ttr, tte = train_test_split(x, t, test_size=0.25, random_state=0)
    return ((xtr / 16).astype(np.float32), ttr.astype(np.int64),
            (xte / 16).astype(np.float32), tte.astype(np.int64))


def fit_netc(data, epochs: int, backend: str | None):
    xtr, ttr, xte, tte = data
    kw = {} if backend is None else {"backend": backend}
    t0 = time.perf_counter()
    m = netc.compile(SPEC.format(epochs=epochs), **kw)
    compiled = time.perf_counter() - t0
    t0 = time.perf_counter()
    m.fit(xtr, ttr)
    seconds = time.perf_counter() - t0
    return seconds, float(m.score(xte, tte)), compiled


def fit_sklearn(data, epochs: int, default: bool = False):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    xtr, ttr, xte, tte = data
    if default:
        clf = MLPClassifier(hidden_layer_sizes=(100,), max_iter=epochs, random_state=0)
    else:
        clf = MLPClassifier(hidden_layer_sizes=(100,), activation="relu", solver="sgd", learning_rate="constant",
                            learning_rate_init=0.01, momentum=0.9, nesterovs_momentum=False, batch_size=32,
                            alpha=0.0, max_iter=epochs, tol=0.0, n_iter_no_change=10 ** 9, early_stopping=False,
                            shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(xtr, ttr)
        seconds = time.perf_counter() - t0
    return seconds, float(clf.score(xte, tte)), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--backend", default=None, help="netc's backend (default: netc's own default)")
    ap.add_argument("--default-sklearn", action="store_true", help="also MLPClassifier with its defaults")
    args = ap.parse_args()
    data = load()
    runs = {"netc": lambda: fit_netc(data, args.epochs, args.backend),
            "scikit-learn": lambda: fit_sklearn(data, args.epochs)}
    if args.default_sklearn:
        runs["scikit-learn (defaults: adam, batch 200)"] = lambda: fit_sklearn(data, args.epochs, True)
    got = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, f in runs.items():
            got[k].append(f())
    print(f"digits: {len(data[0])} training, {len(data[2])} test examples, 64-100-10 relu, "
          f"{args.epochs} epochs, batch 32, sgd(0.01, momentum 0.9); load {os.getloadavg()[0]:.2f}")
    print(f"  {'system':<42} {'fit s':>8} {'test acc':>9}   runs")
    med = {}
    for k, rs in got.items():
        med[k] = statistics.median(r[0] for r in rs)
        acc = statistics.median(r[1] for r in rs)
        print(f"  {k:<42} {med[k]:8.3f} {acc * 100:8.2f}%   {', '.join(f'{r[0]:.3f}' for r in rs)}")
    print(f"  netc compile (apart): {statistics.median(r[2] for r in got['netc']):.3f} s")
    print(f"netc/scikit-learn fit time: {med['netc'] / med['scikit-learn']:.3f}   (target < 1)")


if __name__ == "__main__":
    main()
