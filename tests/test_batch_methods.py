"""L-BFGS and conjugate gradient on the compiled loss-and-gradient [EB 6]."""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.runtime.batch_methods import conjugate_gradient, lbfgs

REG = "input x : [5]\ntarget t : [1]\ny = dense(x, 1, init = zeros)\nloss = mse(y, t)\n"


def regression(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)) * np.array([0.1, 0.5, 1.0, 2.0, 5.0])
    t = x @ rng.normal(size=(5, 1)) + 0.7 + 0.01 * rng.normal(size=(n, 1))
    return x, t


def optimum(x, t):
    A = np.hstack([x, np.ones((len(x), 1))])
    coef, *_ = np.linalg.lstsq(A, t, rcond=None)
    return float(np.mean(np.sum((A @ coef - t) ** 2, axis=1)))


@pytest.mark.parametrize("method", ["lbfgs(iterations = 40)", "cg(iterations = 60)"])
def test_batch_method_reaches_the_least_squares_optimum(method):
    x, t = regression()
    m = netc.compile(REG + f"train {{\n    method = {method}\n    dtype = float64\n}}\n")
    s = m.fit(x, t, epochs=1).summary_
    assert s["train_loss"] == pytest.approx(optimum(x, t), rel=1e-6)


def test_lbfgs_beats_sgd_for_the_same_number_of_gradient_evaluations():
    x, t = regression()
    m = netc.compile(REG + "train {\n    method = lbfgs(iterations = 15)\n    dtype = float64\n}\n")
    s = m.fit(x, t, epochs=1).summary_
    sgd = netc.compile(REG + "train {\n    method = sgd(lr = 0.01)\n    batch = 200\n    dtype = float64\n}\n")
    s2 = sgd.fit(x, t, epochs=s["steps"]).summary_  # one full-batch gradient per epoch
    assert s["train_loss"] < 0.1 * s2["train_loss"]


def test_optimizers_on_the_rosenbrock_function():
    def fg(w):
        a, b = w
        f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
        return f, np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])
    w, f, _ = lbfgs(fg, np.array([-1.2, 1.0]), 200)
    np.testing.assert_allclose(w, [1, 1], atol=1e-4)
    w, f, _ = conjugate_gradient(fg, np.array([-1.2, 1.0]), 5000)
    np.testing.assert_allclose(w, [1, 1], atol=2e-2)  # CG with a backtracking search is slow in this valley
    assert f < 1e-3


def test_batch_method_with_weight_decay_matches_ridge_regression():
    x, t = regression(n=50)
    lam = 5.0
    m = netc.compile(REG + f"train {{\n    method = lbfgs(iterations = 60)\n    decay = {lam}\n    dtype = float64\n}}\n")
    m.fit(x, t, epochs=1)
    # minimize mean (xw + b - t)^2 + (lam / T) |w|^2 in closed form
    T = len(x)
    A = np.hstack([x, np.ones((T, 1))])
    reg = np.diag([lam / T] * 5 + [0.0])
    coef = np.linalg.solve(A.T @ A / T + reg, A.T @ t / T)
    np.testing.assert_allclose(m.params["y.W"], coef[:5], rtol=1e-5, atol=1e-7)
