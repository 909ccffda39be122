"""Forward mode (jvp) and Hessian-vector products (forward-over-reverse).

For every op recipe in test_ops.py:
- forward and reverse mode are adjoint: <J v, u> == <v, J' u> (float64, tight);
- J v agrees with centered finite differences along v, and so does the
  forward-over-forward second directional derivative;
- forward-over-reverse H v equals double-reverse H v, which exercises the jvp
  rule of every op that appears in a gradient graph.
Then a 2-layer tanh network with a softmax NLL: H v against finite differences
of the gradient (relative error <= 1e-6) and against double reverse.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from netc.compiler.differentiate import grad
from netc.compiler.errors import SpecError
from netc.compiler.forward import hvp, jvp
from netc.compiler.graph import Graph, toposort
from netc.compiler.lower_numpy import lower
from netc.compiler.ops import OPS, concrete
from netc.compiler.simplify import simplify
from test_ops import (CASE_IDS, CASES, DIFF_CASES, DIFF_IDS, LEAF_OPS, NONDIFF_OPS, Case,
                      assert_matches_fd, assert_values_equal, ev, make_case, run_lowered,
                      weighted_loss)

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")

EPS = 1e-6


def directions(case: Case):
    """A fed random direction V_p for every differentiable leaf."""
    return [case.feed(f"V_{p.name}", p.shape) for p in case.params]


def along(case: Case, eps: float) -> dict:
    """The case's values with every parameter moved by eps * V_p."""
    values = dict(case.values)
    for p in case.params:
        values[p.name] = case.values[p.name] + eps * case.values[f"V_{p.name}"]
    return values


def directional_fd(case: Case, node, eps=EPS):
    (plus,) = ev([node], along(case, eps))
    (minus,) = ev([node], along(case, -eps))
    return (plus - minus) / (2 * eps)


def inner(G, a, b):
    return G("sum", G("mul", a, b))


# ---------------------------------------------------------------------------
# every op


def test_every_op_with_inputs_has_a_forward_rule():
    for name, op in OPS.items():
        if name not in LEAF_OPS and name != "count":
            assert op.jvp is not None, name


@pytest.mark.parametrize("op,recipe", DIFF_CASES, ids=DIFF_IDS)
def test_forward_is_adjoint_of_reverse(op, recipe):
    case = make_case(op, recipe)
    G, n = case.G, case.node
    vs = directions(case)
    (jv,) = jvp(G, [n], case.params, vs)
    assert jv.shape == n.shape and jv.dtype == n.dtype, (jv, n)
    u = case.feed("U", n.shape)
    forward = inner(G, jv, u)  # <J v, u>
    gs = grad(G, inner(G, n, u), case.params)
    reverse = None  # <v, J' u>
    for v, g in zip(vs, gs):
        term = inner(G, v, g)
        reverse = term if reverse is None else G("add", reverse, term)
    f, r = ev([forward, reverse], case.values)
    assert f == pytest.approx(float(r), rel=1e-11, abs=1e-12), (f, r)
    # J v along v agrees with finite differences, and the generated code agrees
    (value,) = ev([jv], case.values)
    assert_matches_fd(value, directional_fd(case, n), f"J v of {n!r}")
    (lowered,), fn = run_lowered([jv], case.values)
    assert_values_equal(lowered, value, f"lowered J v:\n{fn.source}", rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("op,recipe", DIFF_CASES, ids=DIFF_IDS)
def test_forward_over_forward(op, recipe):
    """d2/de2 f(p + e v) = jvp(jvp(f, v), v): the tangent graph is differentiable too."""
    case = make_case(op, recipe)
    G, n = case.G, case.node
    vs = directions(case)
    (jv,) = jvp(G, [n], case.params, vs)
    (jjv,) = jvp(G, [jv], case.params, vs)
    assert jjv.shape == n.shape
    (value,) = ev([jjv], case.values)
    assert_matches_fd(value, directional_fd(case, jv), f"second directional derivative of {n!r}")


@pytest.mark.parametrize("op,recipe", DIFF_CASES, ids=DIFF_IDS)
def test_hvp_forward_over_reverse_equals_double_reverse(op, recipe):
    case = make_case(op, recipe)
    G = case.G
    L = weighted_loss(case)
    vs = directions(case)
    fwd = hvp(G, L, case.params, vs)
    S = None
    for v, g in zip(vs, grad(G, L, case.params)):
        term = inner(G, g, v)
        S = term if S is None else G("add", S, term)
    rev = grad(G, S, case.params)
    for p, a, b in zip(case.params, ev(fwd, case.values), ev(rev, case.values)):
        assert a.shape == case.values[p.name].shape
        assert_values_equal(a, b, f"H v for {p.name} of {case.node!r}", rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("op,recipe", [(op, r) for op, r in CASES if r.nondiff],
                         ids=[i for i, (op, r) in zip(CASE_IDS, CASES) if r.nondiff])
def test_nondifferentiable_ops_have_zero_tangents(op, recipe):
    case = make_case(op, recipe)
    n = case.node
    if not n.inputs:
        return
    G = case.G
    ts = [G("broadcast", G.const(1.0), shape=i.shape) for i in n.inputs]
    assert OPS[op].jvp(G, n, ts) is None
    (t,) = jvp(G, [n], list(n.inputs), ts)
    assert t.shape == n.shape
    (v,) = ev([t], case.values)
    assert not np.any(v)


def test_nondiff_set_matches_the_table():
    assert NONDIFF_OPS <= set(OPS)


# ---------------------------------------------------------------------------
# the jvp API


def test_jvp_api_edges():
    G = Graph("float64")
    x = G("param", name="x", shape=(None, 3))
    w = G("param", name="w", shape=(3,))
    v = G("input", name="v", shape=(None, 3))
    y = G("tanh", G("mul", x, w))
    unrelated = G("exp", w)
    labels = G("argmax", y)
    t_y, t_u, t_l = jvp(G, [y, unrelated, labels], [x, w], [v, None])
    assert t_u.shape == (3,) and t_l.shape == (None,) and t_l.dtype == "float64"
    values = {"x": np.ones((2, 3)) * 0.3, "w": np.arange(3.0), "v": np.ones((2, 3))}
    a, b, c = ev([t_y, t_u, t_l], values)
    np.testing.assert_allclose(a, (1 - np.tanh(0.3 * np.arange(3.0)) ** 2) * np.arange(3.0) * np.ones((2, 3)))
    assert not b.any() and not c.any()
    # with respect to an intermediate node: its inputs are ignored
    h = G("mul", x, w)
    (t,) = jvp(G, [y], [h], [v])
    np.testing.assert_allclose(ev([t], values)[0], (1 - np.tanh(0.3 * np.arange(3.0)) ** 2) * np.ones((2, 3)))
    with pytest.raises(SpecError, match="tangent of shape"):
        jvp(G, [y], [w], [v])
    with pytest.raises(ValueError):
        jvp(G, [y], [x, w], [v])


def test_an_op_without_a_forward_rule_is_named(monkeypatch):
    monkeypatch.setitem(OPS, "tanh", dataclasses.replace(OPS["tanh"], jvp=None))
    G = Graph("float64")
    x = G("param", name="x", shape=(3,))
    with pytest.raises(SpecError, match="'tanh' has no forward-mode derivative"):
        jvp(G, [G("tanh", x)], [x], [x])


# ---------------------------------------------------------------------------
# a whole model: 2-layer tanh network, softmax NLL

NB, D, H, K = 5, 4, 6, 3


def mlp(G: Graph, dropout: bool = False):
    x = G("input", name="x", shape=(None, D))
    t = G("input", name="t", shape=(None,), dtype="int64")
    W1, b1 = G("param", name="W1", shape=(D, H)), G("param", name="b1", shape=(H,))
    W2, b2 = G("param", name="W2", shape=(H, K)), G("param", name="b2", shape=(K,))
    h = G("tanh", G("add", G("matmul", x, W1), b1))
    if dropout:  # a fixed mask for a given (seed, step): no derivative of its own
        h = G("div", G("mul", h, G("bernoulli_mask", h, keep=0.7, seed=11)), 0.7)
    logits = G("add", G("matmul", h, W2), b2)
    nll = G("neg", G("mean", G("sum", G("mul", G("one_hot", t, n=K),
                                           G("log_softmax", logits, axis=-1)), axis=1)))
    return nll, [W1, b1, W2, b2]


def mlp_values(params, seed=0):
    rng = np.random.default_rng(seed)
    values = {"x": rng.normal(size=(NB, D)), "t": rng.integers(0, K, NB), "step": np.int64(3)}
    for p in params:
        values[p.name] = rng.normal(scale=0.7, size=p.shape)
        values[f"V_{p.name}"] = rng.normal(size=p.shape)
    return values


def mev(nodes, values):
    return ev(nodes, values, batch=NB)


def _size(n):
    return int(np.prod(concrete(n.shape, NB), dtype=np.int64))


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
def test_mlp_hessian_vector_products(dropout):
    G = Graph("float64")
    loss, params = mlp(G, dropout)
    vs = [G("input", name=f"V_{p.name}", shape=p.shape) for p in params]
    hv = hvp(G, loss, params, vs)
    values = mlp_values(params)
    got = mev(hv, values)

    # finite differences of the gradient along v
    grads = grad(G, loss, params)
    eps = 1e-5
    shifted = []
    for sign in (1, -1):
        vals = dict(values)
        for p in params:
            vals[p.name] = values[p.name] + sign * eps * values[f"V_{p.name}"]
        shifted.append(mev(grads, vals))
    for p, a, gp, gm in zip(params, got, *shifted):
        fd = (gp - gm) / (2 * eps)
        rel = np.linalg.norm(a - fd) / np.linalg.norm(fd)
        assert rel <= 1e-6, f"H v for {p.name}: relative error {rel:.2e}"
        np.testing.assert_allclose(a, fd, rtol=1e-5, atol=1e-8 * np.abs(fd).max())

    # double reverse: d/dw <grad, v>
    S = None
    for g, v in zip(grads, vs):
        term = inner(G, g, v)
        S = term if S is None else G("add", S, term)
    for p, a, b in zip(params, got, mev(grad(G, S, params), values)):
        assert_values_equal(a, b, f"H v for {p.name} vs double reverse", rtol=1e-10, atol=1e-12)

    # simplified and lowered, the same numbers
    simple = simplify(G, hv)
    for a, b in zip(got, mev(simple, values)):
        assert_values_equal(b, a, "simplified H v", rtol=1e-10, atol=1e-12)
    order = toposort(simple)
    feeds = [n for n in order if n.op in ("input", "hyper")]
    fn = lower(simple, feeds=feeds, debug=True)
    state = {n.name: np.array(values[n.name]) for n in order if n.op == "param"}
    lowered = fn.bind(state, NB)(*[np.asarray(values[f.name], dtype=f.dtype) for f in feeds])
    for a, b in zip(got, lowered):
        assert_values_equal(b, a, f"lowered H v:\n{fn.source}", rtol=1e-10, atol=1e-12)

    # the Hessian is never formed: no node is larger than the gradient graph's largest
    biggest = max(_size(n) for n in toposort(grads + [loss]))
    assert max(_size(n) for n in toposort(hv)) <= biggest
