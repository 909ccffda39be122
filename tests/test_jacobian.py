"""jacobian(y, x) in the language: per-example Jacobians as graphs, checked
against finite differences, and the squared-norm closed form the simplifier
finds for the contractive auto-encoder (no batch x hidden x input node)."""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.elaborate import elaborate
from netc.compiler.errors import SpecError
from netc.compiler.evaluate import evaluate
from netc.compiler.graph import toposort
from netc.compiler.parse import parse
from netc.compiler.simplify import simplify

HEAD = "input x : [5]\nW = param([5, 4])\nb = param([4])\n"


def build(body: str):
    return elaborate(parse(HEAD + body, "j.net"), "float64")


def values(rng):
    return {"x": rng.normal(size=(3, 5)), "W": rng.normal(size=(5, 4)), "b": rng.normal(size=4),
            "m": (rng.uniform(size=(3, 5)) > 0.3).astype(float)}


def numeric_jacobian(f, x, eps=1e-6):
    B, n = x.shape
    m = f(x).shape[1]
    J = np.zeros((B, m, n))
    for i in range(n):
        xp, xm = x.copy(), x.copy()
        xp[:, i] += eps
        xm[:, i] -= eps
        J[:, :, i] = (f(xp) - f(xm)) / (2 * eps)
    return J


@pytest.mark.parametrize("body", [
    "h = tanh(x @ W + b)",
    "h = lecun_tanh(x @ W + b) * 2 + 1",
    "h = sigmoid(x @ W)",
    "h = softsign(x @ W - b)",
])
def test_jacobian_matches_finite_differences(body):
    s = build(body + "\nJ = jacobian(h, x)\n")
    v = values(np.random.default_rng(0))
    (J,) = evaluate([s.named["J"]], v)
    assert J.shape == (3, 4, 5)
    num = numeric_jacobian(lambda xx: evaluate([s.named["h"]], {**v, "x": xx})[0], v["x"])
    np.testing.assert_allclose(J, num, rtol=1e-6, atol=1e-8)


def test_jacobian_through_an_input_mask():
    s = elaborate(parse(HEAD + "input m : [5]\nh = sigmoid((x * m) @ W + b)\nJ = jacobian(h, x)\n", "j.net"),
                  "float64")
    v = values(np.random.default_rng(1))
    (J,) = evaluate([s.named["J"]], v)
    num = numeric_jacobian(lambda xx: evaluate([s.named["h"]], {**v, "x": xx})[0], v["x"])
    np.testing.assert_allclose(J, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("body", [
    "h = sigmoid(x @ W + b)",
    "input m : [5]\nh = sigmoid((x * m) @ W + b)",
    "h = tanh(x @ W)",
])
def test_squared_norm_is_contracted_and_exact(body):
    s = build(body + "\np = sum(jacobian(h, x) ^ 2)\n")
    p = s.named["p"]
    assert any(n.ndim == 3 for n in toposort([p])), "the unsimplified penalty forms the Jacobian"
    fired = {}
    (q,) = simplify(s.graph, [p], fired=fired)
    assert fired.get("contract_sum") == 1
    assert all(n.ndim < 3 for n in toposort([q])), "a rank-3 node survived simplification"
    v = values(np.random.default_rng(2))
    want, got = evaluate([p], v)[0], evaluate([q], v)[0]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # the CAE formula for sigmoid units: sum_j (h_j (1 - h_j))^2 sum_i W_ij^2
    if body == "h = sigmoid(x @ W + b)":
        h = 1 / (1 + np.exp(-(v["x"] @ v["W"] + v["b"])))
        np.testing.assert_allclose(got, np.sum((h * (1 - h)) ** 2 * np.sum(v["W"] ** 2, axis=0)), rtol=1e-12)


CAE = """
input x : [784]
W = param([784, 500], init = glorot_sigmoid)
h = sigmoid(x @ W + param([500]))
r = sigmoid(h @ W' + param([784]))
loss = cross_entropy(r, x) + 0.1 * sum(jacobian(h, x) ^ 2)
train {
    method = sgd(lr = 0.01)
    batch = 20
}
"""


def test_contractive_autoencoder_step_never_forms_batch_hidden_input():
    m = netc.compile(CAE)
    prog = m.program
    nodes = toposort([prog.loss] + [u for _, u in prog.updates])
    assert not [n for n in nodes if n.ndim >= 3], "a [B, 500, 784] node is in the compiled step"
    assert "contract_sum" in prog.rules_fired
    assert "(B, 500, 784" not in prog.step.source and "(B, 784, 500" not in prog.step.source
    x = np.random.default_rng(0).uniform(size=(40, 784)).astype(np.float32)
    s = m.fit(x, epochs=2).summary_
    assert np.isfinite(s["train_loss"])


def test_jacobian_errors_name_the_place():
    with pytest.raises(SpecError) as e:
        build("h = tanh(x @ W)\nJ = jacobian(sum(h), x)\n")
    assert e.value.loc.line == 5 and "[B, m]" in e.value.message
    with pytest.raises(SpecError) as e:
        build("V = param([4, 3])\nh = tanh(tanh(x @ W) @ V)\nJ = jacobian(h, x)\n")
    assert "two matrix products" in e.value.message


@pytest.mark.parametrize("body", ["h = sigmoid(x @ W + b)", "h = tanh(x @ W)", "input m : [5]\nh = sigmoid((x * m) @ W + b)"])
def test_per_example_squared_norm_is_contracted_and_exact(body):
    s = build(body + "\np = sum(jacobian(h, x) ^ 2, axis = [1, 2])\n")
    p = s.named["p"]
    fired = {}
    (q,) = simplify(s.graph, [p], fired=fired)
    assert fired.get("contract_sum") == 1 and q.shape == (None,)
    assert all(n.ndim < 3 for n in toposort([q])), "a rank-3 node survived simplification"
    v = values(np.random.default_rng(4))
    want, got = evaluate([p], v)[0], evaluate([q], v)[0]
    assert want.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-12)
