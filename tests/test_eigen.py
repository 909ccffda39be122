"""The power method on Hessian-vector products against numpy.linalg.eigvalsh of
the exact Hessian, and lr = auto(eigen)."""
from __future__ import annotations

import numpy as np

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
    for j in range(N):
        e = np.zeros(N)
        e[j] = 1.0
        parts, k = [], 0
        for n, s in zip(names, sizes):
            parts.append(e[k:k + s].reshape(m.state[n].shape))
            k += s
        H[:, j] = np.concatenate([a.reshape(-1) for a in hv(m.state, x, t, *parts)])
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
