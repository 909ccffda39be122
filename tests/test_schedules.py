"""Learning-rate schedules and the global initialization scale: their effect
on the rate actually used, read back from metrics.jsonl."""
from __future__ import annotations

import json

import numpy as np
import pytest

import netc

NET = "input x : [4]\ntarget t : class(3)\nh = dense(x, 8, act = tanh)\ny = dense(h, 3)\nloss = nll(softmax(y), t)\n"


def problem(n=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, np.argmax(x[:, :3], axis=1)


def rates(tmp_path, schedule: str, epochs=6, batch=10):
    x, t = problem()
    m = netc.compile(NET + f"train {{\n    method = sgd(lr = 0.1)\n    schedule = {schedule}\n    batch = {batch}\n}}\n")
    out = tmp_path / schedule.split("(")[0]
    m.fit(x, t, epochs=epochs, out=out)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["age"], r["lr"]) for r in rows]


@pytest.mark.parametrize("schedule, rule", [
    ("step(every = 200, factor = 0.5)", lambda age: 0.1 * 0.5 ** (age // 200)),
    ("exponential(decay = 0.9, every = 100)", lambda age: 0.1 * 0.9 ** (age / 100)),
    ("inverse_time(tau = 15)", lambda age: 0.1 * 15 / max(age / 10, 15)),  # tau in updates of 10
    ("constant", lambda age: 0.1),
])
def test_scheduled_rate_follows_its_formula(tmp_path, schedule, rule):
    for age, lr in rates(tmp_path, schedule):
        assert lr == pytest.approx(rule(age), rel=1e-12)


def test_plateau_cuts_the_rate_only_when_training_stalls(tmp_path):
    x, t = problem()
    lines = []
    # a rate so small that the loss barely moves: every epoch is a plateau
    m = netc.compile(NET + "train {\n    method = sgd(lr = 1e-7)\n    schedule = plateau(threshold = 0.01, factor = 0.5)\n}\n")
    m.fit(x, t, epochs=4, out=tmp_path / "slow", log=lines.append)
    slow = [json.loads(l)["lr"] for l in (tmp_path / "slow" / "metrics.jsonl").read_text().splitlines()]
    assert slow == pytest.approx([1e-7, 5e-8, 2.5e-8, 1.25e-8])
    assert sum("did not improve" in l for l in lines) == 3
    # a good rate keeps improving by more than 1% per epoch early on: no cut in the first epochs
    m = netc.compile(NET + "train {\n    method = sgd(lr = 0.1)\n    schedule = plateau(threshold = 0.01)\n}\n")
    m.fit(x, t, epochs=3, out=tmp_path / "fast")
    fast = [json.loads(l)["lr"] for l in (tmp_path / "fast" / "metrics.jsonl").read_text().splitlines()]
    assert fast == [0.1, 0.1, 0.1]


def test_init_scale_multiplies_every_initialization():
    a = netc.compile(NET)
    b = netc.compile(NET + "train {\n    init_scale = 0.25\n}\n")
    for k in a.params:
        np.testing.assert_allclose(b.params[k], 0.25 * a.params[k], rtol=1e-6)


def test_recover_off_stops_at_the_first_divergence():
    from netc.runtime.trainer import Diverged
    x, t = problem()
    m = netc.compile(NET + "train {\n    method = sgd(lr = 1e6)\n    recover = false\n}\n")
    with pytest.raises(Diverged, match="diverged"):
        m.fit(x * 100, t, epochs=2)


def test_the_probe_rate_is_set_before_compiling_and_overrides_auto(tmp_path):
    """lr-probe compiles each trial with its rate (Model(train={"lr": ...})): the rate
    policy then uses it, even where the spec says lr = auto(eigen)."""
    from netc.diagnostics import lr_probe
    x, t = problem()
    text = NET + "train {\n    method = sgd(lr = 0.1)\n    lr = auto(eigen)\n    batch = 10\n}\n"
    lines = []
    found = lr_probe(lambda **kw: netc.compile(text, **kw), x, t, start=1e4, log=lines.append)
    assert "diverges" in lines[0] and found is not None and found < 1e4
    m = netc.compile(text, train={"lr": 0.05})
    s = m.fit(x, t, epochs=1, out=tmp_path).summary_
    assert s["lr"] == 0.05 and [json.loads(l)["lr"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0.05]
    with pytest.raises(netc.NetcError, match="train settings"):
        netc.compile(text, train={"lr": "fast"})


def test_the_rate_policy_owns_every_change_of_the_rate():
    """Base rate, schedule, plateau cut and divergence cut all go through LearningRate."""
    from netc.runtime.config import TrainConfig
    from netc.runtime.learning_rate import LearningRate, RateState
    logged = []
    cfg = TrainConfig.model_validate({"method": {"kind": "sgd", "lr": 0.2},
                                      "schedule": {"kind": "plateau", "threshold": 0.1, "factor": 0.5}})
    policy, rs = LearningRate(cfg, logged.append), RateState()
    policy.start(rs, lambda examples: pytest.fail("no eigenvalue for a numeric rate"))
    assert policy.at(rs, 1000, 10) == 0.2
    policy.end_epoch(rs, 1, 1.0, float("inf"))  # no healthy epoch yet: nothing to compare with
    policy.end_epoch(rs, 2, 0.95, 1.0)  # improved by less than 10%: cut
    assert rs.base == 0.1 and "did not improve" in logged[-1]
    LearningRate.divide(rs, 3)
    assert policy.at(rs, 0, 0) == pytest.approx(0.1 / 3)
    auto = TrainConfig.model_validate({"lr": {"kind": "auto", "examples": 7}})
    rs = RateState()
    LearningRate(auto, logged.append).start(rs, lambda examples: 1.0 / examples)
    assert rs.base == pytest.approx(1 / 7)
