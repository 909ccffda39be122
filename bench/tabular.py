"""A small tabular problem, netc against scikit-learn's MLPClassifier, side by side.

scikit-learn's digits (8x8 images as 64 features, scaled to [0, 1]), its usual
75/25 split (train_test_split, random_state 0: 1,347 training and 450 test
examples), a 64-100-10 network trained 200 epochs, in two settings:

  sgd    SGD, momentum 0.9 (classical, not Nesterov), constant rate 0.01, minibatch 32
  adam   Adam (lr 0.001, betas 0.9/0.999, eps 1e-8), minibatch 200: MLPClassifier's
         own defaults, but for the penalty and the stopping rule below

Both sides use, as close as the two allow:

  hidden layer   100 rectifiers, softmax output, log-loss (nll of softmax)
  epochs         200, all of them (scikit-learn: tol = 0, n_iter_no_change
                 larger than max_iter, no early stopping), reshuffled each epoch
  penalty        none (scikit-learn: alpha = 0)
  initialization Glorot uniform (scikit-learn's for relu); netc's biases start
                 at zero (scikit-learn draws them from the same range)
  float32        netc's default; scikit-learn keeps float32 input in float32

    python bench/tabular.py [--repeats 3] [--epochs 200] [--backend native|numpy]
                            [--settings sgd,adam] [--default-sklearn]

Prints each side's fit time (median of the repeats, interleaved) and test
accuracy, the ratio netc/scikit-learn per setting, and netc's compile time
apart (the fit time is `Model.fit` alone). `--default-sklearn` also times
MLPClassifier with all of its defaults (alpha 1e-4, stopping when the loss
stalls) for reference. scikit-learn is a dev/test dependency of netc only.
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
    method = {method}
    batch  = {batch}
    epochs = {epochs}
}}
"""
SETTINGS = {  # name: (netc's method, batch, MLPClassifier's keywords)
    "sgd": ("sgd(lr = 0.01, momentum = 0.9)", 32,
            dict(solver="sgd", learning_rate="constant", learning_rate_init=0.01, momentum=0.9,
                 nesterovs_momentum=False, batch_size=32)),
    "adam": ("adam(lr = 0.001)", 200,
             dict(solver="adam", learning_rate_init=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, batch_size=200)),
}


def load():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, t = load_digits(return_X_y=True)
    xtr, xte, ttr, tte = train_test_split(x, t, test_size=0.25, random_state=0)
    return ((xtr / 16).astype(np.float32), ttr.astype(np.int64),
            (xte / 16).astype(np.float32), tte.astype(np.int64))


def fit_netc(data, setting: str, epochs: int, backend: str | None):
    xtr, ttr, xte, tte = data
    method, batch, _ = SETTINGS[setting]
    kw = {} if backend is None else {"backend": backend}
    t0 = time.perf_counter()
    m = netc.compile(SPEC.format(method=method, batch=batch, epochs=epochs), **kw)
    compiled = time.perf_counter() - t0
    t0 = time.perf_counter()
    m.fit(xtr, ttr)
    seconds = time.perf_counter() - t0
    return seconds, float(m.score(xte, tte)), compiled


def fit_sklearn(data, setting: str | None, epochs: int):
    """`setting` None: MLPClassifier's own defaults throughout."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    xtr, ttr, xte, tte = data
    if setting is None:
        clf = MLPClassifier(hidden_layer_sizes=(100,), max_iter=epochs, random_state=0)
    else:
        clf = MLPClassifier(hidden_layer_sizes=(100,), activation="relu", alpha=0.0, max_iter=epochs, tol=0.0,
                            n_iter_no_change=10 ** 9, early_stopping=False, shuffle=True, random_state=0,
                            **SETTINGS[setting][2])
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
    ap.add_argument("--settings", default="sgd,adam", help="comma-separated: " + ", ".join(SETTINGS))
    ap.add_argument("--default-sklearn", action="store_true", help="also MLPClassifier with all its defaults")
    args = ap.parse_args()
    settings = [k.strip() for k in args.settings.split(",") if k.strip()]
    bad = [k for k in settings if k not in SETTINGS]
    if bad:
        ap.error(f"unknown setting {bad[0]!r}; choose from {', '.join(SETTINGS)}")
    data = load()
    load0 = os.getloadavg()[0]
    runs = {}
    for k in settings:
        runs[(k, "netc")] = lambda k=k: fit_netc(data, k, args.epochs, args.backend)
        runs[(k, "scikit-learn")] = lambda k=k: fit_sklearn(data, k, args.epochs)
    if args.default_sklearn:
        runs[("defaults", "scikit-learn")] = lambda: fit_sklearn(data, None, args.epochs)
    got = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, f in runs.items():
            got[k].append(f())
    print(f"digits: {len(data[0])} training, {len(data[2])} test examples, 64-100-10 relu, {args.epochs} epochs; "
          f"load {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"  {'setting':<10} {'system':<14} {'fit s':>8} {'test acc':>9}   runs")
    med = {}
    for (setting, system), rs in got.items():
        med[setting, system] = statistics.median(r[0] for r in rs)
        acc = statistics.median(r[1] for r in rs)
        print(f"  {setting:<10} {system:<14} {med[setting, system]:8.3f} {acc * 100:8.2f}%   "
              f"{', '.join(f'{r[0]:.3f}' for r in rs)}")
    compiles = [r[2] for (_, system), rs in got.items() if system == "netc" for r in rs]
    print(f"  netc compile (apart, median): {statistics.median(compiles):.3f} s")
    for k in settings:
        print(f"netc/scikit-learn fit time, {k}: {med[k, 'netc'] / med[k, 'scikit-learn']:.3f}   (target < 1)")


if __name__ == "__main__":
    main()
