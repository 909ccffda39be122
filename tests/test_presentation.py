"""Presentation order [EB 4.2]: class interleaving and the emphasizing scheme."""
from __future__ import annotations

import numpy as np

import netc
from netc.runtime.presentation import emphasized, interleaved

NET = "input x : [4]\ntarget t : class(3)\nh = dense(x, 8, act = tanh)\ny = dense(h, 3)\nloss = nll(softmax(y), t)\n"


def test_interleaved_order_alternates_classes():
    labels = np.repeat([0, 1, 2], 50)
    order = interleaved(labels, np.random.default_rng(0))
    assert sorted(order) == list(range(150))
    windows = labels[order].reshape(-1, 3)
    assert all(len(set(w)) == 3 for w in windows)  # every run of 3 has all classes


def test_interleaved_with_unequal_classes_covers_everything():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 5)
    order = interleaved(labels, np.random.default_rng(1))
    assert sorted(order) == list(range(18))
    first = labels[order[:9]]
    assert sorted(first) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_emphasized_draws_missed_examples_ratio_times_as_often():
    missed = np.zeros(1000, bool)
    missed[:100] = True
    rng = np.random.default_rng(0)
    counts = np.zeros(1000)
    for _ in range(200):
        np.add.at(counts, emphasized(missed, 4.0, rng), 1)
    ratio = counts[:100].mean() / counts[100:].mean()
    assert 3.6 < ratio < 4.4, ratio


def test_emphasize_in_training_follows_the_errors(monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    t = np.argmax(x[:, :3], axis=1)
    m = netc.compile(NET + "train {\n    method = sgd(lr = 0.1)\n    batch = 10\n    emphasize = errors(ratio = 5)\n}\n")
    from netc.runtime import presentation
    seen = []
    real = presentation.emphasized

    def spy(missed, ratio, r):
        seen.append(missed.copy())
        return real(missed, ratio, r)
    monkeypatch.setattr(presentation, "emphasized", spy)
    m.fit(x, t, epochs=4)
    assert seen[0].all()  # nothing seen yet: every example counts as missed
    # after training, the recorded misses agree with the model's own errors on those examples
    last = seen[-1]
    assert 0 < last.sum() < len(last)
    assert m.program.step is not None and len(m.program.step.outputs) == 2


def test_interleave_key_trains():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    t = np.argmax(x[:, :3], axis=1)
    m = netc.compile(NET + "train {\n    interleave = true\n    method = sgd(lr = 0.1)\n}\n")
    s = m.fit(x, t, epochs=5).summary_
    assert 1 - m.score(x, t) < 0.4 and np.isfinite(s["train_loss"])
