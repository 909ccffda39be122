"""The power method on Hessian-vector products against numpy.linalg.eigvalsh of
the exact Hessian, and lr = auto(eigen)."""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.pipeline import hessian_vector_function
from netc.runtime.eigen import largest_eigenvalue

SPEC = """input x : [4]
target t : class(3)
h = dense(x, 5, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t)
train {
    dtype = float64
}
"""


def data(seed=0, n=30):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return x, np.argmax(x[:, :3], axis=1)


def exact_hessian(m, x, t):
    hv = hessian_vector_function(m.program)
    names = list(m.program.spec.params)
    sizes = [m.state[n].size for n in names]
    N = sum(sizes)
    H = np.zeros((N, N))
    data = [x, t][:len(hv.feeds) - len(names)]  # a quadratic's H reads no target
    for j in range(N):
        e = np.zeros(N)
        e[j] = 1.0
        parts, k = [], 0
        for n, s in zip(names, sizes):
            parts.append(e[k:k + s].reshape(m.state[n].shape))
            k += s
        H[:, j] = np.concatenate([a.reshape(-1) for a in hv(m.state, *data, *parts)])
    return H


def test_hessian_vector_products_are_symmetric_and_match_finite_differences():
    m = netc.compile(SPEC)
    x, t = data()
    H = exact_hessian(m, x, t)
    np.testing.assert_allclose(H, H.T, atol=1e-10)
    # one column against finite differences of the gradient
    f = m.function("loss", wrt=list(m.program.spec.params))
    names = list(m.program.spec.params)
    w = m.state[names[0]]
    eps = 1e-6
    w.reshape(-1)[0] += eps
    gp = np.concatenate([g.reshape(-1) for g in f(x, t)[1:]])
    w.reshape(-1)[0] -= 2 * eps
    gm = np.concatenate([g.reshape(-1) for g in f(x, t)[1:]])
    w.reshape(-1)[0] += eps
    np.testing.assert_allclose((gp - gm) / (2 * eps), H[:, 0], rtol=1e-5, atol=1e-8)


def test_power_method_within_5_percent_of_eigvalsh():
    m = netc.compile(SPEC)
    x, t = data()
    want = np.max(np.abs(np.linalg.eigvalsh(exact_hessian(m, x, t))))
    got = largest_eigenvalue(m.program, m.state, x, t, iterations=200)
    assert abs(got - want) <= 0.05 * want, (got, want)


def test_lr_auto_eigen_sets_one_over_lambda_max():
    lines = []
    m = netc.compile(SPEC.replace("dtype = float64", "dtype = float64\n    method = sgd(lr = auto(eigen))"))
    x, t = data(n=60)
    m.fit(x, t, epochs=3, log=lines.append)
    s = m.summary
    line = next(l for l in lines if "lambda_max" in l)
    lam = float(line.split("lambda_max ")[1].split()[0])
    assert s["lr"] == __import__("pytest").approx(1 / lam, rel=1e-3)
    assert s["train_loss"] < 0.8  # it trains (chance is log 3 = 1.10)


# ---------------------------------------------------------------------------- momentum and lr_scale

QUAD = """input x : [3]
target t : [1]
y = dense(x, 1, init = zeros)
loss = mse(y, t)
train {{
    method = sgd(lr = {lr}, momentum = 0.9, nesterov = {nesterov})
    lr_scale y.b = 4
    batch = 200
    shuffle = false
    dtype = float64
}}
"""


def quadratic(n=200, seed=0):
    """Linear least squares: the loss is exactly quadratic, H the same everywhere."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * np.array([0.3, 1.0, 2.0])
    return x, x @ np.array([[1.0], [-2.0], [0.5]]) + 1.0


def _final_loss(lr, nesterov: bool, steps: int = 200) -> float:
    """The loss after `steps` full-batch steps of the compiled update (gradient descent
    with momentum), run directly: the trainer's divergence watch would also act on
    momentum's normal 10x swings of a loss near zero."""
    x, t = quadratic()
    m = netc.compile(QUAD.format(lr=lr, nesterov=str(nesterov).lower()))
    step = m.program.step
    feeds = {"x": x, "t": t, "lr": lr, "momentum": 0.9, "step": 0, "inv_examples": 1 / len(x)}
    with np.errstate(all="ignore"):
        for _ in range(steps):
            step(m.state, *[feeds[f] for f in step.feeds])
        return float(m.function("loss")(x, t)[0])


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy-ball", "nesterov"])
def test_auto_eigen_with_momentum_and_lr_scale_is_half_the_stability_limit(nesterov):
    """lambda of P H (P = lr_scale: 4 on the bias) from the exact Hessian; the stability
    limit of heavy ball is 2(1 + mu)/lambda, of Nesterov's form 2(1 + mu)/((1 + 2 mu) lambda).
    auto(eigen) picks half of it; 0.95x the limit converges, 1.05x diverges."""
    x, t = quadratic()
    m = netc.compile(QUAD.format(lr="auto(eigen)", nesterov=str(nesterov).lower()))
    H = exact_hessian(m, x, t)
    root = np.sqrt(np.array([1.0, 1.0, 1.0, 4.0]))  # y.W (3), y.b (1)
    lam = np.max(np.linalg.eigvalsh(root[:, None] * H * root[None, :]))
    mu = 0.9
    limit = 2 * (1 + mu) / lam / ((1 + 2 * mu) if nesterov else 1.0)
    lines = []
    m.fit(x, t, epochs=1, log=lines.append)
    assert m.summary_["lr"] == pytest.approx(limit / 2, rel=1e-3), lines
    assert any("momentum 0.9" in line for line in lines)
    start = float(np.mean(t ** 2))  # the loss at zero weights
    assert _final_loss(limit / 2, nesterov) < 1e-6 * start  # stable, converged
    assert _final_loss(0.95 * limit, nesterov) < 0.1 * start  # stable just below the limit
    assert _final_loss(1.05 * limit, nesterov, steps=60) > 1e3 * start  # diverges just above it
    if not nesterov:  # the limit without momentum, 2/lambda, is far inside heavy ball's
        assert _final_loss(1.5 * 2 / lam, nesterov) < 0.1 * start
