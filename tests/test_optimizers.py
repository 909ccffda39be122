"""Optimizers and weight decay: each shows its effect, not merely that it runs."""
from __future__ import annotations

import numpy as np
import pytest

import netc

REG = "input x : [3]\ntarget t : [1]\ny = dense(x, 1, init = zeros)\nloss = mse(y, t)\n"


def ill_conditioned(n=200, seed=0):
    """Linear regression whose inputs differ in scale by 30x: curvature ratio ~1000."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * np.array([0.1, 1.0, 3.0])
    w = np.array([[2.0], [-1.0], [0.5]])
    t = x @ w + 0.3
    return x.astype(np.float64), t.astype(np.float64)


def updates_to_reach(train_block: str, target: float, max_epochs=60) -> int | None:
    """Updates (minibatch steps) until the training loss is below target, or None."""
    x, t = ill_conditioned()
    m = netc.compile(REG + "train {\n" + train_block + "\n    batch = 10\n    shuffle = false\n    dtype = float64\n}\n")
    loss = m.function("loss")
    for epoch in range(1, max_epochs + 1):
        m.fit(x, t, epochs=1)
        if float(loss(x, t)[0]) < target:
            return epoch * 20
    return None


def test_sdlm_beats_sgd_at_its_best_fixed_rate_on_an_ill_conditioned_problem():
    target = 1e-3
    sgd = [updates_to_reach(f"    method = sgd(lr = {lr})", target) for lr in (0.003, 0.01, 0.03, 0.06, 0.1)]
    best_sgd = min(u for u in sgd if u is not None) if any(u is not None for u in sgd) else 10 ** 9
    sdlm = updates_to_reach("    method = sdlm(lr = 0.3, mu = 0.02, gamma = 0.5, samples = 200)", target)
    assert sdlm is not None and sdlm < best_sgd, (sdlm, sgd)


def test_sdlm_curvature_state_is_the_gauss_newton_diagonal():
    x, t = ill_conditioned(n=100)  # one estimation batch of all 100 examples
    m = netc.compile(REG + "train {\n    method = sdlm(lr = 0.1, gamma = 1.0, samples = 100)\n"
                           "    batch = 100\n    dtype = float64\n}\n")
    m.fit(x, t, epochs=1)
    # for y = x w + b and mean squared error the Gauss-Newton diagonal is 2 mean(x_k^2)
    h = m.state["y.W.curvature"][:, 0]
    np.testing.assert_allclose(h, 2 * np.mean(x ** 2, axis=0), rtol=1e-10)
    assert m.state["y.b.curvature"][0] == pytest.approx(2.0)


def test_adagrad_first_step_moves_every_weight_by_the_rate():
    x, t = ill_conditioned()
    m = netc.compile(REG.replace("init = zeros", "init = glorot") +
                     "train {\n    method = adagrad(lr = 0.05, eps = 1e-12)\n    batch = 200\n    dtype = float64\n}\n")
    before = {k: v.copy() for k, v in m.params.items()}
    m.fit(x, t, epochs=1)
    for k in before:
        np.testing.assert_allclose(np.abs(m.params[k] - before[k]), 0.05, rtol=1e-9)
    # the accumulated squares are exactly the squared first gradient
    assert np.all(m.state["y.W.sum_sq"] > 0)


def test_vsgd_trains_without_a_hand_set_rate():
    x, t = ill_conditioned()
    m = netc.compile(REG + "train {\n    method = vsgd()\n    batch = 10\n    dtype = float64\n}\n")
    loss = m.function("loss")
    start = float(loss(x, t)[0])
    m.fit(x, t, epochs=20)
    assert float(loss(x, t)[0]) < 0.05 * start


def test_adaptive_rate_grows_from_a_rate_too_small():
    x, t = ill_conditioned()
    m = netc.compile(REG + "train {\n    method = adaptive(lr = 1e-4, alpha = 0.05, beta = 1.0)\n"
                           "    batch = 10\n    dtype = float64\n}\n")
    m.fit(x, t, epochs=2)
    assert float(m.state["adaptive.eta"]) > 3e-4  # it rose while the gradient was large


def _one_step(decay_line: str, batch: int):
    x, t = ill_conditioned(n=40)
    m = netc.compile(REG.replace("init = zeros", "init = glorot") +
                     "train {\n    method = sgd(lr = 0.1)\n    shuffle = false\n    dtype = float64\n"
                     f"    batch = {batch}\n{decay_line}\n}}\n")
    before = {k: v.copy() for k, v in m.params.items()}
    m.fit(x[:batch], t[:batch], epochs=1)
    return before, m.params


def test_weight_decay_is_lambda_over_T_per_minibatch_and_spares_biases():
    lam, B = 0.5, 8
    w0, plain = _one_step("", B)
    _, decayed = _one_step(f"    decay = {lam}", B)
    T = B  # the training set given to fit
    np.testing.assert_allclose(decayed["y.W"] - plain["y.W"], -0.1 * 2 * lam / T * w0["y.W"], rtol=1e-10)
    np.testing.assert_array_equal(decayed["y.b"], plain["y.b"])  # biases are not decayed


def test_l1_and_per_group_decay():
    lam = 0.3
    w0, plain = _one_step("", 8)
    _, l1 = _one_step(f"    l1 = {lam}", 8)
    np.testing.assert_allclose(l1["y.W"] - plain["y.W"], -0.1 * lam / 8 * np.sign(w0["y.W"]), rtol=1e-10)
    _, bias_too = _one_step(f"    decay biases = {lam}", 8)
    np.testing.assert_array_equal(bias_too["y.W"], plain["y.W"])  # the group replaces the default
    np.testing.assert_allclose(bias_too["y.b"] - plain["y.b"], -0.1 * 2 * lam / 8 * w0["y.b"], rtol=1e-10)


def test_every_method_is_one_object_from_schema_to_update():
    """Each train-block method has one object (runtime/optimizers.py): its schema is the
    config's, its stochastic update is a compiler rule, a batch method has a driver."""
    from netc.compiler.update import RULES
    from netc.runtime import config
    from netc.runtime.optimizers import METHODS
    assert set(METHODS) == set(config.METHODS)
    for kind, method in METHODS.items():
        assert method.schema is config.METHODS[kind]
        opt = method.update(method.schema(), 0.01, {}, {})
        assert opt.kind in RULES
        assert method.is_batch == (kind in config.BATCH_METHODS)
        assert method.is_batch or opt.kind == kind


def test_batch_methods_minimize_the_graphs_regularized_objective():
    """L-BFGS reads the loss and the weight decay from one compiled objective (the
    step's own decay terms): the reported loss is mean loss + (lambda / T) |W|^2."""
    x, t = ill_conditioned(n=40)
    lam = 2.0
    m = netc.compile(REG + f"train {{\n    method = lbfgs(iterations = 30)\n    decay = {lam}\n    dtype = float64\n}}\n")
    m.fit(x, t, epochs=1)
    s = m.summary
    mean_loss = float(m.function("loss")(x, t)[0])
    assert s["train_loss"] == pytest.approx(mean_loss + lam / len(x) * float(np.sum(m.params["y.W"] ** 2)), rel=1e-9)
