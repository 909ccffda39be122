"""Initializations [EB 4.6, PR 3.2] and shuffling [EB 4.2]: their effect."""
from __future__ import annotations

import numpy as np
import pytest

import netc

HEAD = "input x : [400]\ntarget t : class(3)\n"


@pytest.mark.parametrize("init, check", [
    ("fan_in", lambda W: abs(W.std() - 400 ** -0.5) < 0.03 * 400 ** -0.5 and abs(W.mean()) < 3e-3),
    ("glorot", lambda W: np.abs(W).max() <= (6 / 600) ** 0.5 and np.abs(W).max() > 0.97 * (6 / 600) ** 0.5),
    ("glorot_sigmoid", lambda W: np.abs(W).max() <= 4 * (6 / 600) ** 0.5
     and np.abs(W).max() > 0.97 * 4 * (6 / 600) ** 0.5),
])
def test_initialization_scales(init, check):
    m = netc.compile(HEAD + f"h = dense(x, 200, init = {init})\ny = dense(h, 3)\nloss = nll(softmax(y), t)\n")
    W = m.params["h.W"].astype(np.float64)
    assert check(W), (init, W.std(), np.abs(W).max())
    assert not m.params["h.b"].any()  # biases start at 0


def test_the_same_seed_gives_the_same_start_and_each_parameter_its_own_stream():
    a = netc.compile(HEAD + "h = dense(x, 20)\ny = dense(h, 3)\nloss = nll(softmax(y), t)\n")
    b = netc.compile(HEAD + "g = dense(x, 20)\nh = dense(x, 20)\ny = dense(h, 3)\nloss = nll(softmax(y), t)\n")
    np.testing.assert_array_equal(a.params["h.W"], b.params["h.W"])  # adding a layer changes no other
    assert not np.array_equal(b.params["g.W"], b.params["h.W"])


@pytest.mark.parametrize("shuffle", [True, False])
def test_shuffling_changes_the_order_every_epoch(monkeypatch, shuffle):
    from netc.runtime import presentation, trainer
    orders = []
    real = presentation.epoch_order

    def spy(*a, **k):
        batches = list(real(*a, **k))
        orders.append(np.concatenate(batches))
        return iter(batches)
    monkeypatch.setattr(trainer, "epoch_order", spy)
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(50, 4)).astype(np.float32), rng.integers(0, 3, 50)
    m = netc.compile("input x : [4]\ntarget t : class(3)\ny = dense(x, 3)\nloss = nll(softmax(y), t)\n"
                     f"train {{\n    shuffle = {str(shuffle).lower()}\n    batch = 10\n}}\n")
    m.fit(x, t, epochs=3)
    assert len(orders) == 3 and all(sorted(o) == list(range(50)) for o in orders)
    if shuffle:
        assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    else:
        assert all(np.array_equal(o, np.arange(50)) for o in orders)
