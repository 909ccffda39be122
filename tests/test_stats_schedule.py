"""The trainer's per-layer statistics at measured cost (runtime/stats.py): on a
sample, at the first and last epoch and every k-th between, from one compiled
function; they never change what training computes. And the `threads` key."""
from __future__ import annotations

import json

import numpy as np
import pytest

import netc
from netc.compiler.errors import NetcError
from netc.runtime import stats

SPEC = """input x : [6]
target t : class(3)
h1 = dense(x, 16, act = tanh)
h2 = dense(h1, 16, act = relu)
y = dense(h2, 3)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.05, momentum = 0.9)
    batch = 10
    epochs = 12
}
"""


def _problem(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, np.argmax(x[:, :3], axis=1)


def test_the_stride_keeps_the_sample_near_a_tenth_of_the_examples_trained():
    assert stats.every(50000, 500) == 1 and stats.every(5000, 500) == 1  # large sets: every epoch
    assert stats.every(1347, 500) == 4  # the digits problem: ceil(500 / 134.7)
    assert stats.every(120, 120) == 10  # a tiny set is its own sample: every 10th epoch
    assert [e for e in range(1, 13) if stats.due(e, 12, 10)] == [1, 10, 12]  # first, every 10th, last


def test_statistics_rows_fall_on_the_schedule(tmp_path):
    x, t = _problem()
    m = netc.compile(SPEC)
    m.fit(x, t, out=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "layers" in r] == [1, 10, 12]
    assert all("layers" not in r and "params" not in r for r in rows if r["epoch"] not in (1, 10, 12))
    last = rows[-1]
    assert set(last["layers"]) == {"h1", "h2", "y"} and 0 < last["params"]["h1.W"]["update_ratio"] < 0.1


def test_statistics_do_not_change_training():
    """Parameters and every loss/error row are bit-identical with statistics on and off."""
    x, t = _problem(seed=1)
    on, off = netc.compile(SPEC), netc.compile(SPEC.replace("epochs = 12", "epochs = 12\n    stats = false"))
    on.fit(x, t, valid=(x[:30], t[:30]))
    off.fit(x, t, valid=(x[:30], t[:30]))
    for k in on.state:
        assert np.array_equal(on.state[k], off.state[k]), k
    strip = [{k: v for k, v in r.items() if k not in ("layers", "params", "seconds")} for r in on.history_]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in off.history_]


def test_one_probe_equals_the_separate_functions():
    """The fused function gives what separate activation and gradient functions give."""
    x, t = _problem(n=50, seed=2)
    m = netc.compile(SPEC)
    p = m.program
    s = stats.Probe.of(p)(m.state, x, t)
    spec = p.spec
    acts = p.function([spec.named[k] for k in ("h1", "h2", "y")], list(spec.inputs.values()))(m.state, x)
    grads = p.function([p.grads[k] for k in spec.params], spec.feeds)(m.state, x, t)
    for name, a in zip(("h1", "h2", "y"), acts):
        assert s["layers"][name]["mean"] == pytest.approx(float(np.mean(a, dtype=np.float64)), rel=1e-6, abs=1e-9)
    for name, g in zip(spec.params, grads):
        assert s["params"][name]["grad_norm"] == pytest.approx(float(np.linalg.norm(g)), rel=1e-6)
    no_t = stats.Probe.of(p)(m.state, x, None)  # without targets: activations only
    assert set(no_t["layers"]) == {"h1", "h2", "y"} and no_t["params"] == {}
    assert "grad_rms" not in no_t["layers"]["h1"] and no_t["layers"]["h1"]["mean"] == s["layers"]["h1"]["mean"]


def test_native_probe_agrees_with_numpys():
    from netc.compiler import native_function
    if native_function.unavailable():
        pytest.skip(native_function.unavailable())
    x, t = _problem(n=50, seed=3)
    m = netc.compile(SPEC, backend="native")
    a = stats.Probe.of(m.program)(m.state, x, t)
    b = stats.Probe.of(m.program, "native")(m.state, x, t)
    for group in ("layers", "params"):
        for name, row in a[group].items():
            for k, v in row.items():
                assert (v is None and b[group][name][k] is None) or \
                    b[group][name][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (group, name, k)


@pytest.mark.parametrize("value, expect", [("2", 2), ("auto", "auto")])
def test_threads_key(value, expect):
    m = netc.compile(SPEC.replace("epochs = 12", f"epochs = 12\n    threads = {value}"), allocate=False)
    assert m.train_cfg.threads == expect
    assert netc.compile(SPEC, allocate=False).train_cfg.threads is None  # unset: auto at run time


@pytest.mark.parametrize("value", ["0", "many", "1.5", "4097", "1000000000000"])
def test_threads_key_refused_where_written(value):
    with pytest.raises(NetcError, match=r"<spec>:11:5: threads"):
        netc.compile(SPEC.replace("epochs = 12", f"epochs = 12\n    threads = {value}"), allocate=False)


@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (0.0, 1.0), (-1.7159, 1.7159), (-0.3, 0.7)])
def test_saturation_of_float32_counts_as_in_float64(bounds):
    """Statistics read float32 activations without a float64 copy: the thresholds
    are the float32 values that compare exactly as the float64 bounds do."""
    lo, hi = bounds
    margin = stats.SATURATED * (hi - lo)
    edge = []
    for e in (lo + margin, hi - margin):
        f = np.float32(e)
        edge += [f, np.nextafter(f, np.float32(-np.inf)), np.nextafter(f, np.float32(np.inf))]
    for v in edge:
        one = np.array([v], np.float32)
        assert stats.saturated(one, bounds) == stats.saturated(one.astype(np.float64), bounds), v
    many = np.random.default_rng(4).uniform(lo, hi, 5000).astype(np.float32)
    assert stats.saturated(many, bounds) == stats.saturated(many.astype(np.float64), bounds)
