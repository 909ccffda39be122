"""bbprop: the diagonal Gauss-Newton pass against brute force.

For one hidden layer, bbprop's only approximation besides Gauss-Newton is the
diagonal of the loss's Hessian at the output, so it must equal
sum_b sum_k J_b[k, w]^2 H_b[k, k] computed by finite differences exactly."""
from __future__ import annotations

import numpy as np
import pytest

from netc.compiler.curvature import gauss_newton_diag
from netc.compiler.elaborate import elaborate
from netc.compiler.evaluate import evaluate
from netc.compiler.parse import parse
from netc.compiler.simplify import simplify

NETS = {
    "tanh-nll": ("h = dense(x, 4, act = tanh)\ny = dense(h, 3)\nloss = nll(softmax(y), t)", True),
    "lecun-mse": ("h = dense(x, 4, act = lecun_tanh)\ny = dense(h, 3, act = lecun_tanh)\n"
                  "loss = mse(y, plus_minus_one(t))", True),
    "sigmoid-ce": ("h = dense(x, 4, act = softsign)\ny = dense(h, 3, act = sigmoid)\n"
                   "loss = cross_entropy(y, one_hot(t))", True),
    "relu-hinge-l2": ("h = dense(x, 4, act = tanh)\ny = dense(h, 3)\n"
                      "loss = mse(y, plus_minus_one(t)) + 0.01 * l2(weights)", True),
}
HEAD = "input x : [5]\ntarget t : class(3)\n"


def compile_net(body):
    """The simplified loss and the network output it depends on: for a sigmoid
    cross-entropy the stabilizing rewrite makes the loss a function of the
    logits, which then are the output (the Gauss-Newton split point)."""
    from netc.compiler.graph import toposort
    s = elaborate(parse(HEAD + body + "\n", "c.net"), "float64")
    (loss, y) = simplify(s.graph, [s.loss, s.output])
    if y.id not in {n.id for n in toposort([loss])}:
        y = y.inputs[0]
    return s, loss, y


def values(s, rng, B=4):
    v = {"x": rng.normal(size=(B, 5)), "t": rng.integers(0, 3, B)}
    for name, p in s.params.items():
        v[name] = rng.normal(size=p.shape) * 0.7
    return v


def brute_force(s, loss, y, v, eps=1e-5):
    """sum_b sum_k (d y_bk / d w)^2 * d2L/dy_bk^2, all by finite differences."""
    yv = evaluate([y], v)[0]
    B, m = yv.shape
    # diagonal Hessian of the loss w.r.t. the output (the loss as a function of y)
    H = np.zeros((B, m))
    for b in range(B):
        for k in range(m):
            def L(delta):
                yy = yv.copy()
                yy[b, k] += delta
                return evaluate([loss], {**v, "__y": yy}, batch=B)[0]
            H[b, k] = (L(eps) - 2 * L(0.0) + L(-eps)) / eps ** 2
    out = {}
    for name, p in s.params.items():
        w = v[name]
        acc = np.zeros(w.size)
        for i in range(w.size):
            wp, wm = w.copy().reshape(-1), w.copy().reshape(-1)
            wp[i] += eps
            wm[i] -= eps
            J = (evaluate([y], {**v, name: wp.reshape(w.shape)})[0] -
                 evaluate([y], {**v, name: wm.reshape(w.shape)})[0]) / (2 * eps)
            acc[i] = np.sum(J ** 2 * H)
        out[name] = acc.reshape(w.shape)
    return out, H


def loss_of_output(s, loss, y):
    """The loss graph with the output replaced by a fed leaf `__y` (the loss part alone)."""
    G = s.graph
    leaf = G("input", name="__y", shape=y.shape, dtype=y.dtype)
    memo = {y.id: leaf}
    from netc.compiler.graph import toposort
    for n in toposort([loss]):
        if n.id not in memo:
            memo[n.id] = G.rebuild(n, [memo.get(i.id, i) for i in n.inputs])
    return memo[loss.id]


@pytest.mark.parametrize("net", list(NETS), ids=list(NETS))
def test_bbprop_equals_brute_force_gauss_newton_diagonal(net):
    body, _ = NETS[net]
    s, loss, y = compile_net(body)
    params = list(s.params.values())
    curv = gauss_newton_diag(s.graph, loss, params, y)
    v = values(s, np.random.default_rng(0))
    got = dict(zip(s.params, evaluate(curv, v)))
    want, H = brute_force(s, loss_of_output(s, loss, y), y, v)
    # the regularizer's own curvature (2 * lambda for l2) is exact and outside the network
    reg = 0.01 * 2 if "l2" in body else 0.0
    for name, p in s.params.items():
        extra = reg if p.ndim >= 2 else 0.0
        np.testing.assert_allclose(got[name], want[name] + extra, rtol=2e-4, atol=1e-7,
                                   err_msg=f"{net}: {name}")


def test_output_curvature_of_softmax_nll_is_p_one_minus_p():
    s, loss, y = compile_net(NETS["tanh-nll"][0])
    G = s.graph
    # curvature w.r.t. the output itself: treat the output as a parameter of the loss part
    leaf_loss = loss_of_output(s, loss, y)
    leaf = [n for n in __import__("netc.compiler.graph", fromlist=["toposort"]).toposort([leaf_loss])
            if n.name == "__y"][0]
    (hy,) = gauss_newton_diag(G, leaf_loss, [leaf], None)
    yv = np.random.default_rng(1).normal(size=(4, 3))
    (got,) = evaluate([hy], {"__y": yv, "t": np.array([0, 1, 2, 1])})
    p = np.exp(yv - yv.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(got, p * (1 - p) / 4, rtol=1e-12)


def test_deeper_nets_compile_and_are_nonnegative():
    s, loss, y = compile_net("h1 = dense(x, 6, act = tanh)\nh2 = dense(h1, 5, act = relu)\n"
                             "y = dense(h2, 3)\nloss = nll(softmax(y), t)")
    curv = gauss_newton_diag(s.graph, loss, list(s.params.values()), y)
    for c in evaluate(curv, values(s, np.random.default_rng(2))):
        assert np.all(c >= -1e-12)


# ---------------------------------------------------------------------------
# every op's own `curvature` rule (the entry field), against finite differences

from test_ops import B as OPS_B, DIFF_CASES, make_case  # noqa: E402

from netc.compiler.ops import OPS  # noqa: E402

CURV_CASES = [(op, r) for op, r in DIFF_CASES if OPS[op].curvature is not None]


def _fd_first_and_second(z, values, name, eps=1e-4):
    """J[k, j] = d z_k / d u_j and D2[k, j] = d2 z_k / d u_j^2 by centered differences."""
    u = values[name]
    z0 = np.array(evaluate([z], values, batch=OPS_B)[0])  # copies: a view's value aliases u
    J, D2 = np.zeros((z0.size, u.size)), np.zeros((z0.size, u.size))
    for j, idx in enumerate(np.ndindex(u.shape)):
        orig = u[idx]
        u[idx] = orig + eps
        zp = np.array(evaluate([z], values, batch=OPS_B)[0])
        u[idx] = orig - eps
        zm = np.array(evaluate([z], values, batch=OPS_B)[0])
        u[idx] = orig
        J[:, j] = ((zp - zm) / (2 * eps)).ravel()
        D2[:, j] = ((zp - 2 * z0 + zm) / eps ** 2).ravel()
    return J, D2


def test_ops_with_a_curvature_rule_have_cases():
    assert {op for op, _ in CURV_CASES} == {n for n, op in OPS.items() if op.curvature is not None}


@pytest.mark.parametrize("op,recipe", CURV_CASES, ids=[f"{op}-{r.id}" for op, r in CURV_CASES])
def test_each_curvature_rule_squares_its_jacobian(op, recipe):
    """h_u = sum_k J_ku^2 h_k (Gauss-Newton, g = None), plus sum_k g_k d2 z_k / d u^2
    when the pass is exact (g given); inputs stand in as fed leaves."""
    case = make_case(op, recipe)
    G, values = case.G, case.values
    stand = []
    for k, u in enumerate(case.node.inputs):
        (values[f"u{k}"],) = evaluate([u], values, batch=OPS_B)
        stand.append(G("input", name=f"u{k}", shape=u.shape, dtype=u.dtype))
    z = G.rebuild(case.node, stand)
    assert z.op == op
    h, g = case.feed("__h", z.shape), case.feed("__g", z.shape)
    gauss_newton, exact = OPS[op].curvature(G, z, h, None), OPS[op].curvature(G, z, h, g)
    assert len(gauss_newton) == len(exact) == len(z.inputs)
    for k, leaf in enumerate(stand):
        if leaf.dtype != "float64":
            assert gauss_newton[k] is None and exact[k] is None
            continue
        J, D2 = _fd_first_and_second(z, values, leaf.name)
        hv, gv = values["__h"].reshape(-1, 1), values["__g"].reshape(-1, 1)
        noise = 1e-7 * float(np.max(np.abs(evaluate([z], values, batch=OPS_B)[0]), initial=0.0))  # fd round-off
        shape = values[leaf.name].shape
        want_gn = np.sum(J ** 2 * hv, axis=0).reshape(shape)
        want_exact = want_gn + np.sum(D2 * gv, axis=0).reshape(shape)
        for part, want, what in ((gauss_newton[k], want_gn, "Gauss-Newton"), (exact[k], want_exact, "exact")):
            got = np.zeros(shape) if part is None else evaluate([part], values, batch=OPS_B)[0]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 + noise,
                                       err_msg=f"{what} curvature of {z!r} for input {k}")
