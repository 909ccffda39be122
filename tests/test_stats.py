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
