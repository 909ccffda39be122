"""Activation sparsity penalties from the prelude: values and effect."""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.elaborate import elaborate
from netc.compiler.evaluate import evaluate
from netc.compiler.parse import parse


def test_penalty_values():
    s = elaborate(parse("input h : [3]\na = sparsity_l1(h)\nb = student_t(h)\nc = kl_sparsity(h, rho = 0.1)\n", "s.net"),
                  "float64")
    h = np.array([[0.2, 0.5, 0.9], [0.4, 0.1, 0.3]])
    a, b, c = evaluate([s.named["a"], s.named["b"], s.named["c"]], {"h": h})
    assert a == pytest.approx(np.mean(np.abs(h).sum(1)))
    assert b == pytest.approx(np.mean(np.log1p(h ** 2).sum(1)))
    q = h.mean(0)
    assert c == pytest.approx(np.sum(0.1 * np.log(0.1 / q) + 0.9 * np.log(0.9 / (1 - q))))


@pytest.mark.parametrize("penalty", ["sparsity_l1(h)", "student_t(h)", "kl_sparsity(h, rho = 0.05)"])
def test_penalty_makes_hidden_units_sparser(penalty):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10)).astype(np.float32)
    t = np.argmax(x[:, :3], axis=1)
    base = "input x : [10]\ntarget t : class(3)\nh = dense(x, 20, act = sigmoid)\ny = dense(h, 3)\n"
    train = "train {\n    method = sgd(lr = 0.2)\n    batch = 20\n    seed = 3\n}\n"
    mean_act = []
    for extra in ("", f" + 1.0 * {penalty}"):
        m = netc.compile(base + f"loss = nll(softmax(y), t){extra}\n" + train)
        m.fit(x, t, epochs=30)
        h = 1 / (1 + np.exp(-(x @ m.params["h.W"] + m.params["h.b"])))
        mean_act.append(float(h.mean()))
    assert mean_act[1] < 0.6 * mean_act[0], mean_act
