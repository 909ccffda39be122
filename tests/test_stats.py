"""Per-layer statistics in metrics.jsonl [PR 4.2]."""
from __future__ import annotations

import json

import numpy as np

import netc

SPEC = """input x : [6]
target t : class(3)
h1 = dense(x, 16, act = tanh)
h2 = dense(h1, 16, act = relu)
y = dense(h2, 3)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.05)
    batch = 10
}
"""


def test_metrics_have_layer_and_parameter_statistics(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    t = np.argmax(x[:, :3], axis=1)
    m = netc.compile(SPEC)
    m.fit(x, t, epochs=2, out=tmp_path)
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(row["layers"]) == {"h1", "h2", "y"}
    h1 = row["layers"]["h1"]
    xn = x[:120]
    acts = np.tanh(xn @ m.params["h1.W"] + m.params["h1.b"])
    assert h1["mean"] == __import__("pytest").approx(float(acts.mean()), rel=1e-4, abs=1e-6)
    assert 0 <= h1["saturated"] <= 1 and 0 <= row["layers"]["h2"]["dead"] <= 1
    p = row["params"]["h1.W"]
    assert p["norm"] == __import__("pytest").approx(float(np.linalg.norm(m.params["h1.W"])), rel=1e-5)
    assert p["grad_norm"] > 0
    # one step of plain SGD moves w by lr * |g| (on that step's batch): a small positive ratio
    assert 0 < p["update_ratio"] < 0.1


def test_dead_units_are_counted():
    spec = SPEC.replace("dense(h1, 16, act = relu)", "dense(h1, 16, act = relu, bias = zeros)")
    m = netc.compile(spec)
    np.copyto(m.state["h2.b"], -100.0)  # every rectifier is off
    from netc.runtime.stats import layer_stats
    x = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)
    s = layer_stats(m.program, m.state, x, np.zeros(50, np.int64))
    assert s["layers"]["h2"]["dead"] == 1.0
    assert s["layers"]["h2"]["std"] == 0.0


# ---- saturation against the unit's asymptotes; pre-activations; activation gradients

SAT = """input x : [6]
target t : class(3)
h1 = dense(x, 16, act = tanh)
h2 = dense(h1, 16, act = sigmoid)
h3 = dense(h2, 16, act = lecun_tanh)
h4 = dense(h3, 16, act = relu)
h5 = dense(h4, 16, act = hard_tanh)
y = dense(h5, 3)
loss = nll(softmax(y), t)
"""


def _stats(scale: float, bias: float):
    from netc.runtime.stats import layer_stats
    m = netc.compile(SAT)
    for k in m.state:
        if k.endswith(".W"):
            m.state[k] *= scale
        elif k.endswith(".b"):
            m.state[k][...] = bias
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    t = rng.integers(0, 3, 40)
    return m, x, t, layer_stats(m.program, m.state, x, t)


def test_saturation_is_relative_to_the_units_asymptotes_not_the_batch():
    _, _, _, s = _stats(scale=0.01, bias=0.0)  # every unit near its linear middle
    for k in ("h1", "h3", "h5"):
        assert s["layers"][k]["saturated"] == 0.0, k
    assert s["layers"]["h2"]["saturated"] == 0.0  # sigmoid near 0.5
    assert s["layers"]["h4"]["saturated"] is None  # a rectifier has no asymptote (see `dead`)
    assert s["layers"]["y"]["saturated"] is None
    _, _, _, s = _stats(scale=0.01, bias=20.0)  # every bounded unit at its upper asymptote
    for k in ("h1", "h2", "h3", "h5"):
        assert s["layers"][k]["saturated"] == 1.0, k


def test_pre_activations_and_activation_gradients():
    import pytest
    m, x, t, s = _stats(scale=1.0, bias=0.1)
    p = m.state
    pre = x.astype(np.float64) @ p["h1.W"] + p["h1.b"]
    assert s["layers"]["h1"]["pre_mean"] == pytest.approx(pre.mean(), rel=1e-4, abs=1e-6)
    assert s["layers"]["h1"]["pre_std"] == pytest.approx(pre.std(), rel=1e-4)
    assert "pre_mean" not in s["layers"]["y"]  # an affine layer is its own pre-activation
    # d loss / d y for nll(softmax(y)) averaged over the batch: (softmax(y) - onehot(t)) / B
    h = x.astype(np.float64)
    for k, f in (("h1", np.tanh), ("h2", lambda a: 1 / (1 + np.exp(-a))),
                 ("h3", lambda a: 1.7159 * np.tanh(2 / 3 * a)), ("h4", lambda a: np.maximum(a, 0)),
                 ("h5", lambda a: np.clip(a, -1, 1))):
        h = f(h @ p[k + ".W"] + p[k + ".b"])
    y = h @ p["y.W"] + p["y.b"]
    sm = np.exp(y - y.max(axis=1, keepdims=True))
    sm /= sm.sum(axis=1, keepdims=True)
    g = (sm - np.eye(3)[t]) / len(t)
    assert s["layers"]["y"]["grad_rms"] == pytest.approx(np.sqrt(np.mean(g ** 2)), rel=1e-4)
    assert all(s["layers"][k]["grad_rms"] >= 0 for k in ("h1", "h2", "h3", "h4", "h5"))
