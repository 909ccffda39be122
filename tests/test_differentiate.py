"""Reverse-mode differentiation on a whole model: a 2-layer tanh MLP with a
softmax negative log-likelihood, built directly from ops, checked against
finite differences (gradient and Hessian-vector product) in float64."""
from __future__ import annotations

import numpy as np
import pytest

from netc.compiler.differentiate import grad
from netc.compiler.errors import SpecError
from netc.compiler.evaluate import evaluate
from netc.compiler.graph import Graph, toposort
from netc.compiler.lower_numpy import lower
from netc.compiler.simplify import simplify

B, D, H, K = 5, 4, 6, 3
EPS = 1e-6


class MLP:
    """x:[B,D] -> tanh(x W1 + b1) W2 + b2 -> -mean(sum(one_hot(t) * log_softmax))."""

    def __init__(self, G: Graph, naive_log_softmax=False):
        self.G = G
        self.x = G("input", name="x", shape=(None, D))
        self.t = G("input", name="t", shape=(None,), dtype="int64")
        self.W1 = G("param", name="W1", shape=(D, H))
        self.b1 = G("param", name="b1", shape=(H,))
        self.W2 = G("param", name="W2", shape=(H, K))
        self.b2 = G("param", name="b2", shape=(K,))
        self.unused = G("param", name="U", shape=(2, 3))
        h = G("tanh", G("add", G("matmul", self.x, self.W1), self.b1))
        logits = G("add", G("matmul", h, self.W2), self.b2)
        logp = (G("log", G("softmax", logits)) if naive_log_softmax
                else G("log_softmax", logits, axis=-1))
        self.logits = logits
        self.loss = G("neg", G("mean", G("sum", G("mul", G("one_hot", self.t, n=K), logp), axis=1)))
        self.params = [self.W1, self.b1, self.W2, self.b2]

    def values(self, seed=0):
        rng = np.random.default_rng(seed)
        return {"x": rng.normal(size=(B, D)), "t": rng.integers(0, K, B),
                "W1": rng.normal(scale=0.7, size=(D, H)), "b1": rng.normal(scale=0.3, size=H),
                "W2": rng.normal(scale=0.7, size=(H, K)), "b2": rng.normal(scale=0.3, size=K),
                "U": rng.normal(size=(2, 3))}


def ev(nodes, values):
    return evaluate(list(nodes), values, batch=B)


def run_lowered(nodes, values):
    order = toposort(nodes)
    feeds = [n for n in order if n.op in ("input", "hyper")]
    fn = lower(list(nodes), feeds=feeds, debug=True)
    state = {n.name: np.array(values[n.name]) for n in order if n.op in ("param", "state")}
    return [np.array(r) for r in fn.bind(state, B)(*[values[f.name] for f in feeds])]


def finite_diff(f, values, name, eps=EPS):
    x = values[name]
    out = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        orig = x[idx]
        x[idx] = orig + eps
        fp = f(values)
        x[idx] = orig - eps
        fm = f(values)
        x[idx] = orig
        out[idx] = (fp - fm) / (2 * eps)
    return out


def assert_matches_fd(analytic, numeric, what, rtol=1e-6, atol=1e-8):
    assert analytic.shape == numeric.shape, what
    err = np.abs(analytic - numeric)
    tol = rtol * np.maximum(np.abs(analytic), np.abs(numeric)) + atol
    assert np.all(err <= tol), f"{what}: max error {err.max()}\n{analytic}\n{numeric}"


def test_mlp_gradient_matches_finite_differences():
    G = Graph("float64")
    m = MLP(G)
    values = m.values()
    grads = grad(G, m.loss, m.params)
    analytic = ev(grads, values)
    loss = lambda v: float(ev([m.loss], v)[0])  # noqa: E731
    for p, a in zip(m.params, analytic):
        assert a.shape == values[p.name].shape
        assert_matches_fd(a, finite_diff(loss, values, p.name), f"d loss / d {p.name}")
    # the generated code agrees with the interpreter, before and after simplification
    for nodes in (grads, simplify(G, grads)):
        for got, want in zip(run_lowered(nodes, values), analytic):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_mlp_gradient_in_closed_form():
    """d loss / d logits = (softmax - one_hot) / B, pushed back through the layers by hand."""
    G = Graph("float64")
    m = MLP(G)
    v = m.values(1)
    gW1, gb1, gW2, gb2 = ev(grad(G, m.loss, m.params), v)
    h = np.tanh(v["x"] @ v["W1"] + v["b1"])
    z = h @ v["W2"] + v["b2"]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(K)[v["t"]]) / B
    dh = dz @ v["W2"].T * (1 - h ** 2)
    for got, want in [(gW2, h.T @ dz), (gb2, dz.sum(0)), (gW1, v["x"].T @ dh), (gb1, dh.sum(0))]:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_naive_log_softmax_simplified_first_gives_the_same_gradient():
    G = Graph("float64")
    naive, stable = MLP(G, naive_log_softmax=True), MLP(G)
    (simplified,) = simplify(G, [naive.loss])
    assert simplified is stable.loss
    values = stable.values(2)
    for a, b in zip(ev(grad(G, naive.loss, naive.params), values),
                    ev(grad(G, simplified, stable.params), values)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_gradient_of_a_non_scalar_is_an_error():
    G = Graph("float64")
    m = MLP(G)
    with pytest.raises(SpecError, match="scalar"):
        grad(G, m.logits, m.params)
    with pytest.raises(SpecError, match="scalar"):
        grad(G, G("sum", m.logits, axis=0), [m.W2])


def test_seeded_gradient_of_a_non_scalar_is_a_vector_jacobian_product():
    G = Graph("float64")
    m = MLP(G)
    seed = G("input", name="seed", shape=(None, K))
    values = m.values(3)
    values["seed"] = np.random.default_rng(3).normal(size=(B, K))
    vjp = ev(grad(G, m.logits, m.params, seed=seed), values)
    direct = ev(grad(G, G("sum", G("mul", m.logits, seed)), m.params), values)
    for a, b in zip(vjp, direct):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_unused_parameter_gets_a_zero_gradient_of_its_shape():
    G = Graph("float64")
    m = MLP(G)
    values = m.values()
    gU, gW1 = grad(G, m.loss, [m.unused, m.W1])
    assert gU.shape == (2, 3) and gU.dtype == "float64"
    scalar = G("param", name="s", shape=())
    (gs,) = grad(G, m.loss, [scalar])
    assert gs.shape == ()
    values["s"] = np.array(1.5)
    for vals in (ev([gU, gs], values), run_lowered([gU, gs], values)):
        assert vals[0].shape == (2, 3) and not vals[0].any()
        assert vals[1].shape == () and vals[1] == 0
    # a parameter used only through a non-differentiable path also gets zeros
    (gx,) = grad(G, G("sum", G("one_hot", G("argmax", m.logits, axis=1), n=K)), [m.W2])
    (v,) = ev([gx], values)
    assert v.shape == (H, K) and not v.any()


def test_shared_subexpressions_accumulate():
    """y = x*x + exp(x) + x: three uses of x, one node for x*x however often it is built."""
    G = Graph("float64")
    x = G("param", name="x", shape=(3,))
    sq = G("mul", x, x)
    y = G("sum", G("add", G("add", sq, G("exp", x)), G("add", G("mul", x, x), x)))
    (g,) = grad(G, y, [x])
    xv = np.array([0.3, -1.2, 2.0])
    (gv,) = ev([g], {"x": xv})
    np.testing.assert_allclose(gv, 4 * xv + np.exp(xv) + 1, rtol=1e-12)


def test_gradient_with_respect_to_an_intermediate_node():
    G = Graph("float64")
    m = MLP(G)
    values = m.values(4)
    (glogits,) = grad(G, m.loss, [m.logits])
    (gv,) = ev([glogits], values)
    (z,) = ev([m.logits], values)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(gv, (p - np.eye(K)[values["t"]]) / B, rtol=1e-12, atol=1e-15)


def test_hessian_vector_product_matches_finite_differences_of_gradients():
    G = Graph("float64")
    m = MLP(G)
    values = m.values(5)
    rng = np.random.default_rng(6)
    grads = grad(G, m.loss, m.params)
    vs = [G("input", name=f"v_{p.name}", shape=p.shape) for p in m.params]
    for p in m.params:
        values[f"v_{p.name}"] = rng.normal(size=p.shape)
    gv = None
    for g, v in zip(grads, vs):
        term = G("sum", G("mul", g, v))
        gv = term if gv is None else G("add", gv, term)
    hv_nodes = grad(G, gv, m.params)
    hv = ev(hv_nodes, values)

    def grads_at(sign):
        shifted = dict(values)
        for p in m.params:
            shifted[p.name] = values[p.name] + sign * EPS * values[f"v_{p.name}"]
        return ev(grads, shifted)

    plus, minus = grads_at(+1), grads_at(-1)
    fd = [(a - b) / (2 * EPS) for a, b in zip(plus, minus)]
    flat_hv, flat_fd = np.concatenate([h.ravel() for h in hv]), np.concatenate([f.ravel() for f in fd])
    rel = np.linalg.norm(flat_hv - flat_fd) / np.linalg.norm(flat_fd)
    assert rel <= 1e-6, rel
    for p, h, f in zip(m.params, hv, fd):
        assert h.shape == values[p.name].shape
        assert_matches_fd(h, f, f"Hv[{p.name}]", rtol=1e-5, atol=1e-7)
    # the double-reverse graph lowers and runs like the interpreter
    for got, want in zip(run_lowered(hv_nodes, values), hv):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_hessian_is_symmetric():
    """u . H v == v . H u for the MLP loss (a check that needs no finite differences)."""
    G = Graph("float64")
    m = MLP(G)
    values = m.values(7)
    rng = np.random.default_rng(8)
    grads = grad(G, m.loss, m.params)

    def hvp(tag):
        total = None
        for p, g in zip(m.params, grads):
            v = G("input", name=f"{tag}_{p.name}", shape=p.shape)
            values[v.name] = rng.normal(size=p.shape)
            term = G("sum", G("mul", g, v))
            total = term if total is None else G("add", total, term)
        return grad(G, total, m.params)

    hu, hv = ev(hvp("u"), values), ev(hvp("v"), values)
    u_hv = sum(float(np.sum(values[f"u_{p.name}"] * h)) for p, h in zip(m.params, hv))
    v_hu = sum(float(np.sum(values[f"v_{p.name}"] * h)) for p, h in zip(m.params, hu))
    assert abs(u_hv - v_hu) <= 1e-12 * max(1.0, abs(u_hv))
