"""Transformed nonlinearities [RV]: the refresh makes every unit's output zero
on average with zero average slope, and leaves the network's function unchanged
where the spec has the shortcuts that absorb the change."""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.runtime.transforms import Refresher, find_layers

SPEC = """input x : [6]
target t : class(3)
h = transformed(x, 8)
y = dense(h, 3) + shortcut(x, 3)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.1, momentum = 0.5)
    batch = 10
    dtype = float64
}
"""


def data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) + 0.5
    return x, np.argmax(x[:, :3], axis=1)


def test_layers_and_their_compensating_shortcuts_are_found():
    m = netc.compile(SPEC)
    (layer,) = find_layers(m.program)
    assert layer.name == "h" and [(c.A, c.bias, c.shortcut) for c in layer.consumers] == [("y.W", "y.b", "y.C")]


def test_refresh_keeps_the_function_and_centres_the_units():
    m = netc.compile(SPEC)
    x, t = data()
    m.fit(x, t, epochs=1)  # move away from the initial point (transforms off)
    before = m.predict_raw(x)
    r = Refresher(m.program, log=lambda s: None)
    r.refresh(m.state, x)
    np.testing.assert_allclose(m.predict_raw(x), before, rtol=1e-9, atol=1e-9)
    a = x @ m.params["h.W"] + m.params["h.b"]
    th = np.tanh(a)
    alpha, beta, gamma = (m.state[f"h.{k}"] for k in ("alpha", "beta", "gamma"))
    np.testing.assert_allclose(np.mean(1 - th ** 2 + alpha, axis=0), 0, atol=1e-12)  # zero mean slope
    out = gamma * (th + alpha * a + beta)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)  # zero mean output
    np.testing.assert_allclose(out.std(axis=0), 1, rtol=1e-9)


def test_without_a_shortcut_the_log_says_what_is_not_compensated():
    spec = SPEC.replace("y = dense(h, 3) + shortcut(x, 3)", "y = dense(h, 3)")
    m = netc.compile(spec)
    x, t = data()
    lines = []
    Refresher(m.program, log=lines.append).refresh(m.state, x)
    assert any("not compensated" in line for line in lines)


def test_training_with_transforms_every_n_updates():
    x, t = data(400)
    m = netc.compile(SPEC.replace("batch = 10", "batch = 10\n    transforms = every(5)"))
    start = float(m.function("loss")(x, t)[0])
    m.fit(x, t, epochs=5)
    assert float(m.function("loss")(x, t)[0]) < 0.5 * start
    assert 1 - m.score(x, t) < 0.15
    assert np.any(m.state["h.alpha"] != 0)  # refreshed during training
