"""Issue 11 items 4 and 5: the contractive penalty as Rifai et al. define it
(per-example mean, at the noise-free input, closed form), and the smaller
fixes (Polyak averaging inside epoch 1, `params(...)` selectors in `train`
keys, saturation relative to the unit's asymptote)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netc
from netc.compiler.elaborate import elaborate
from netc.compiler.evaluate import evaluate
from netc.compiler.graph import toposort
from netc.compiler.parse import parse

# ---- contractive(h, x) ------------------------------------------------------

CAE_HEAD = """input x : [6]
W = param([6, 4])
b = param([4])
h = sigmoid(mask(x, drop = 0.5) @ W + b)
p = contractive(h, x)
gW = grad(p, W)
gb = grad(p, b)
"""


def cae_values(rng, B):
    return {"x": rng.uniform(size=(B, 6)), "W": rng.normal(size=(6, 4)), "b": rng.normal(size=4)}


def closed_form(x, W, b):
    """Rifai et al. (2011): mean over examples of sum_j (h_j (1 - h_j))^2 sum_i W_ij^2, h at the clean x."""
    h = 1 / (1 + np.exp(-(x @ W + b)))
    return np.mean(np.sum((h * (1 - h)) ** 2 * np.sum(W ** 2, axis=0), axis=1))


@pytest.fixture(scope="module")
def cae():
    return elaborate(parse(CAE_HEAD, "cae.net"), "float64")


def test_contractive_equals_the_closed_form_at_the_noise_free_input(cae):
    v = cae_values(np.random.default_rng(0), 32)
    (p,) = evaluate([cae.named["p"]], v)
    np.testing.assert_allclose(p, closed_form(v["x"], v["W"], v["b"]), rtol=1e-12)


def test_contractive_is_a_mean_over_examples_independent_of_the_batch_size(cae):
    rng = np.random.default_rng(1)
    v = cae_values(rng, 128)
    per_example = np.array([evaluate([cae.named["p"]], {**v, "x": v["x"][i:i + 1]})[0] for i in range(128)])
    for B in (1, 32, 128):
        (p,) = evaluate([cae.named["p"]], {**v, "x": v["x"][:B]})
        np.testing.assert_allclose(p, per_example[:B].mean(), rtol=1e-12)


def test_contractive_gradient_matches_finite_differences(cae):
    v = cae_values(np.random.default_rng(2), 8)
    gW, gb = evaluate([cae.named["gW"], cae.named["gb"]], v)
    eps = 1e-6
    for name, g in (("W", gW), ("b", gb)):
        num = np.zeros_like(v[name])
        for idx in np.ndindex(*v[name].shape):
            up, dn = v[name].copy(), v[name].copy()
            up[idx] += eps
            dn[idx] -= eps
            num[idx] = (closed_form(v["x"], **{**{"W": v["W"], "b": v["b"]}, name: up})
                        - closed_form(v["x"], **{**{"W": v["W"], "b": v["b"]}, name: dn})) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9)


def test_the_compiled_cae_step_has_no_rank_3_node():
    src = (Path(__file__).parent.parent / "specs" / "denoising_cae.net").open().read()
    assert "contractive(h, x)" in src
    m = netc.compile(src.split("data {")[0] + "train {\n    method = sgd(lr = 0.01)\n    batch = 32\n}\n")
    prog = m.program
    nodes = toposort([prog.loss] + [u for _, u in prog.updates])
    assert not [n for n in nodes if n.ndim >= 3], "a rank-3 node is in the compiled step"
    assert "contract_sum" in prog.rules_fired


# ---- Polyak averaging: validations inside the burn-in epoch -----------------

MLP = """input  x : [20]
target t : class(3)
h = dense(x, 16, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.05)
    batch = 10
    epochs = 1
    valid_every = 100
    average = polyak
}
"""


def test_polyak_validations_inside_epoch_1_see_the_live_parameters(tmp_path):
    import json
    from problems import make_problem
    x, t = make_problem(n=400, spread=0.7, seed=1)
    netc.compile(MLP).fit(x[:300], t[:300], valid=(x[300:], t[300:]), out=tmp_path)
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    partial = [r for r in rows if r.get("partial")]
    end = [r for r in rows if not r.get("partial") and "valid_loss" in r][0]
    assert [r["age"] for r in partial] == [100, 200, 300]
    # the last validation inside epoch 1 ran after its last update: the parameters the epoch's end evaluates
    assert partial[-1]["valid_loss"] == pytest.approx(end["valid_loss"], rel=1e-6)
    assert partial[0]["valid_loss"] != pytest.approx(partial[1]["valid_loss"], rel=1e-6)


# ---- params(...) selectors in train keys -------------------------------------

NET2 = """input  x : [20]
target t : class(3)
h1 = dense(x, 8, act = tanh)
h2 = dense(h1, 8, act = tanh)
y = dense(h2, 3)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.1)
    batch = 10
    epochs = 1
    KEY
}
"""


@pytest.mark.parametrize("key, frozen", [
    ("freeze params(h2) = true", {"h2.W", "h2.b"}),
    ('freeze params("h1.*") = true', {"h1.W", "h1.b"}),
    ('freeze params("h*.W") = true', {"h1.W", "h2.W"}),
    ("freeze h2 = true", {"h2.W", "h2.b"}),
])
def test_freeze_with_a_params_selector_keeps_exactly_those_parameters(key, frozen):
    from problems import make_problem
    x, t = make_problem(n=100)
    m = netc.compile(NET2.replace("KEY", key))
    before = {k: np.array(v) for k, v in m.params.items()}
    m.fit(x, t)
    same = {k for k, v in m.params.items() if np.array_equal(np.asarray(v), before[k])}
    assert same == frozen


@pytest.mark.parametrize("key", ["decay params(h2) = 0.1", 'decay params("h2.*") = 0.1', "decay h2 = 0.1"])
def test_decay_with_a_params_selector_applies_to_that_layer(key):
    from netc.runtime.optimizers import weight_decay
    m = netc.compile(NET2.replace("KEY", key))
    l2, _ = weight_decay(m.program.spec, m.train_cfg)
    assert l2["h2.W"] == 0.1 and l2.get("h1.W", 0.0) == 0.0
