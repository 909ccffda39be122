"""The generated NumPy code: no allocation per step, NaN-filled buffers in debug
mode, updates in place (and correct), state arrays that keep their identity."""
from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

import netc
from problems import make_problem

NETS = {
    "tanh-nll-l2": "h = dense(x, H, act = tanh)\ny = dense(h, 3)\nloss = nll(softmax(y), t) + 1e-4 * l2(weights)",
    "relu-hinge-l1": "h = dense(x, H, act = relu)\ny = dense(h, 3)\nloss = hinge(y, t) + 1e-4 * l1(weights)",
    "lecun-mse": "h = dense(x, H, act = lecun_tanh, init = fan_in)\ny = dense(h, 3, act = lecun_tanh)\n"
                 "loss = mse(y, plus_minus_one(t))",
    "softsign-sigmoid-ce": "h = dense(x, H, act = softsign)\ny = dense(h, 3, act = sigmoid)\n"
                           "loss = cross_entropy(y, one_hot(t))",
}


def net_spec(net: str, features: int, hidden: int, train: str = "method = sgd(lr = 0.01, momentum = 0.9)") -> str:
    body = "\n".join("    " + l.strip() for l in train.strip().splitlines())
    return (f"input x : [{features}]\ntarget t : class(3)\n" + net.replace("H", str(hidden)) +
            f"\ntrain {{\n{body}\n}}\n")


def batch(n, features, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, 3, n)



def _step_memory(model, x, t, calls=20):
    hypers = (0.01, 0.9)
    model.program.step(model.state, x, t, *hypers)  # first call: binds and allocates the buffers
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(calls):
            model.program.step(model.state, x, t, *hypers)
        gc.collect()  # numpy's reductions leave small reference cycles behind; not arrays
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current - base, peak - base


@pytest.mark.parametrize("name", list(NETS))
def test_train_step_allocates_nothing_after_first_call(name):
    results = {}
    for features, hidden, n in [(20, 16, 10), (200, 512, 512)]:
        m = netc.compile(net_spec(NETS[name], features, hidden))
        x, t = batch(n, features)
        growth, peak = _step_memory(m, x, t)
        results[(hidden, n)] = (growth, peak)
        assert growth < 4096, (features, hidden, n, growth)
    # transient memory stays at the size of numpy's fixed ufunc buffers, never an activation
    small, big = results[(16, 10)], results[(512, 512)]
    activation = 512 * 512 * 4
    assert big[1] < activation / 8, results
    assert big[1] < 256 * 1024, results
    assert big[0] < 4096 and small[0] < 4096


def test_evaluate_and_predict_allocate_nothing_after_first_call():
    m = netc.compile(net_spec(NETS["tanh-nll-l2"], 200, 512))
    x, t = batch(512, 200)
    for fn, args in ((m.program.evaluate, (x, t)), (m.program.predict, (x,))):
        fn(m.state, *args)
        gc.collect()
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            for _ in range(10):
                fn(m.state, *args)
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert current - base < 4096
        assert peak - base < 512 * 512 * 4 / 8


def test_step_returns_its_own_buffer():
    m = netc.compile(net_spec(NETS["tanh-nll-l2"], 20, 16))
    x, t = batch(10, 20)
    (a,) = m.program.step(m.state, x, t, 0.0, 0.0)
    (b,) = m.program.step(m.state, x, t, 0.0, 0.0)
    assert a is b  # documented: callers copy what they keep
    assert a.shape == () and np.isfinite(a)


# ---------------------------------------------------------------------------- debug mode

def test_debug_buffers_start_as_nan():
    text = net_spec(NETS["tanh-nll-l2"], 20, 16)
    dbg, normal = netc.compile(text, debug=True), netc.compile(text)
    for fn in ("step", "evaluate", "predict"):
        src = getattr(dbg.program, fn).source
        assert "np.full(" in src and "np.nan" in src
        assert "np.empty(" not in src
        src = getattr(normal.program, fn).source
        assert "np.empty(" in src and "np.nan" not in src


def test_debug_training_matches_normal_training():
    # every buffer is written before it is read: NaN-filled buffers change nothing
    x, t = make_problem()
    for name, net in NETS.items():
        text = net_spec(net, 20, 16, "method = sgd(lr = 0.05, momentum = 0.9, nesterov = true)\nbatch = 16\n"
                                     "epochs = 1\naverage = polyak")
        dbg, normal = netc.compile(text, debug=True), netc.compile(text)
        s1 = dbg.fit(x, t, valid=(x[:50], t[:50])).summary_
        s2 = normal.fit(x, t, valid=(x[:50], t[:50])).summary_
        assert np.isfinite(s1["train_loss"]), name
        assert s1["train_loss"] == s2["train_loss"], name
        assert s1["valid_loss"] == s2["valid_loss"], name
        for k in normal.state:
            np.testing.assert_array_equal(dbg.state[k], normal.state[k], err_msg=f"{name}: {k}")
        np.testing.assert_array_equal(dbg.predict_raw(x), normal.predict_raw(x))


# ---------------------------------------------------------------------------- updates in place

def _ids(state):
    return {k: id(v) for k, v in state.items()}


@pytest.mark.parametrize("extra", ["", "average = polyak", "stop = early(patience = 50, grow = 2.0)",
                                   "average = polyak\nstop = early(patience = 100000, grow = 2.0)"],
                         ids=["plain", "polyak", "early", "polyak+early"])
def test_state_arrays_keep_identity_through_fit(extra, tmp_path):
    x, t = make_problem()
    m = netc.compile(net_spec(NETS["tanh-nll-l2"], 20, 16, "method = sgd(lr = 0.1, momentum = 0.9)\n"
                                                          "batch = 20\nepochs = 3\n" + extra))
    state = m.state
    ids = _ids(state)
    before = {k: v.copy() for k, v in state.items()}
    m.fit(x[:150], t[:150], valid=(x[150:], t[150:]), out=tmp_path / "run")
    assert m.state is state and _ids(m.state) == ids
    assert any(not np.array_equal(before[k], m.state[k]) for k in state)  # trained, in place
    # the compiled functions still see the current values: predict == a fresh model holding them
    fresh = netc.compile(m.text)
    for k in fresh.state:
        np.copyto(fresh.state[k], m.state[k])
    fresh.normalizer = m.normalizer
    np.testing.assert_array_equal(fresh.predict_raw(x), m.predict_raw(x))
    m.fit(x, t, epochs=1)  # and through a second fit
    assert _ids(m.state) == ids


def test_state_identity_through_divergence_recovery():
    x, t = make_problem()
    m = netc.compile(net_spec("y = dense(x, 3)\nloss = mse(y, plus_minus_one(t))", 20, 0,
                              "method = sgd(lr = 1.0, momentum = 0.5)\nbatch = 10\nepochs = 2"))
    ids = _ids(m.state)
    s = m.fit(x, t).summary_
    assert s["recoveries"] > 0
    assert _ids(m.state) == ids


def _one_step_reference(model, x, t, lr, mu=0.0, nesterov=False, scales=None):
    """The update rule of compiler/update.py computed with numpy from function() gradients."""
    names = list(model.params)
    grads = model.function("loss", wrt=names)(x, t)[1:]
    expected = {}
    for name, g in zip(names, grads):
        eps = lr * (scales or {}).get(name, 1.0)
        w = model.state[name]
        if mu:
            v = model.state[f"{name}.velocity"]
            v_new = mu * v - eps * g
            expected[f"{name}.velocity"] = v_new
            expected[name] = w + mu * v_new - eps * g if nesterov else w + v_new
        else:
            expected[name] = w - eps * g
    return expected


@pytest.mark.parametrize("method,mu,nesterov", [("sgd(lr = 0.3)", 0.0, False),
                                                ("sgd(lr = 0.3, momentum = 0.8)", 0.8, False),
                                                ("sgd(lr = 0.3, momentum = 0.8, nesterov = true)", 0.8, True)],
                         ids=["sgd", "momentum", "nesterov"])
def test_in_place_step_matches_reference_update(method, mu, nesterov):
    text = net_spec(NETS["tanh-nll-l2"], 6, 5, f"method = {method}\ndtype = float64")
    m = netc.compile(text, seed=3)
    x, t = batch(8, 6, seed=1)
    x = x.astype(np.float64)
    rng = np.random.default_rng(2)
    for k, v in m.state.items():  # nonzero velocities, so the momentum terms matter
        if k.endswith(".velocity"):
            v[...] = rng.normal(scale=0.1, size=v.shape)
    for _ in range(3):
        expected = _one_step_reference(m, x, t, 0.3, mu, nesterov)
        hypers = (0.3, mu) if mu else (0.3,)
        m.program.step(m.state, x, t, *hypers)
        for k, v in expected.items():
            np.testing.assert_allclose(m.state[k], v, rtol=1e-12, atol=1e-14, err_msg=k)


def test_lr_scale_per_parameter():
    text = net_spec(NETS["tanh-nll-l2"], 6, 5, "method = sgd(lr = 0.3)\ndtype = float64\n"
                                                "lr_scale = fan_in ^ -0.5\nlr_scale y.* = 0.25")
    m = netc.compile(text, seed=3)
    x, t = batch(8, 6, seed=1)
    x = x.astype(np.float64)
    scales = {"h.W": 6 ** -0.5, "h.b": 6 ** -0.5, "y.W": 0.25, "y.b": 0.25}
    expected = _one_step_reference(m, x, t, 0.3, scales=scales)
    m.program.step(m.state, x, t, 0.3)
    for k, v in expected.items():
        np.testing.assert_allclose(m.state[k], v, rtol=1e-12, atol=1e-14, err_msg=k)


def test_frozen_parameter_is_not_updated():
    text = net_spec(NETS["tanh-nll-l2"], 6, 5, "method = sgd(lr = 0.3)\nlr_scale h.* = 0")
    m = netc.compile(text)
    x, t = batch(8, 6)
    before = {k: v.copy() for k, v in m.state.items()}
    m.program.step(m.state, x, t, 0.3)
    np.testing.assert_array_equal(m.state["h.W"], before["h.W"])
    assert not np.array_equal(m.state["y.W"], before["y.W"])


def test_compiled_function_does_not_reuse_binding_of_dead_state_dict():
    m = netc.compile(net_spec(NETS["tanh-nll-l2"], 4, 3))
    x, _ = batch(5, 4)
    fn = m.program.predict
    for _ in range(50):
        old = {k: np.ones_like(v) for k, v in m.state.items()}
        fn(old, x)
        old_id = id(old)
        del old
        new = {k: np.zeros_like(v) for k, v in m.state.items()}
        if id(new) == old_id:
            break
    else:
        pytest.skip("CPython did not reuse the dict's address")
    (y,) = fn(new, x)
    np.testing.assert_array_equal(y, np.zeros_like(y))  # all-zero parameters: all-zero scores


# -- what reaches generated source (issue 10): dtypes from a closed set, names as literals

HOSTILE_DTYPE = "float32); __import__('os').system('echo pwned'); (float32"


@pytest.mark.parametrize("renderer", ["numpy", "cuda"])
@pytest.mark.parametrize("where", ["leaf", "attribute"])
def test_a_hostile_dtype_is_refused_before_any_source_is_run(renderer, where, monkeypatch):
    import builtins

    from netc.compiler import lower_cuda, lower_numpy
    from netc.compiler.errors import NetcError
    from netc.compiler.graph import Graph
    G = Graph("float32")
    if where == "leaf":  # e.g. a dtype read from a checkpoint's metadata
        x = G("input", name="x", shape=(None, 3), dtype=HOSTILE_DTYPE)
        out = G("tanh", x)
    else:
        x = G("input", name="x", shape=(None, 3), dtype="float32")
        out = G("add", x, G("normal_noise", x, seed=1, dtype=HOSTILE_DTYPE))

    def no_exec(*a, **k):
        raise AssertionError("generated source was run")
    monkeypatch.setattr(builtins, "exec", no_exec)
    lower = lower_numpy.lower if renderer == "numpy" else lower_cuda.lower
    with pytest.raises(NetcError, match="unsupported dtype"):
        lower([out], (), "f", feeds=[x])


@pytest.mark.parametrize("renderer", ["numpy", "cuda"])
def test_names_reach_generated_source_only_as_literals_or_one_line_comments(renderer):
    from netc.compiler import lower_cuda, lower_numpy
    from netc.compiler.graph import Graph
    G = Graph("float32")
    evil = "w'] \nimport os\nos.system('echo pwned')  # "
    x = G("input", name=f"x{evil}", shape=(None, 3), dtype="float32")
    w = G("param", name=evil, shape=(3,), dtype="float32")
    lower = lower_numpy.lower if renderer == "numpy" else lower_cuda.lower
    fn = lower([G("mul", x, w)], (), "f", feeds=[x])
    assert not any(line.lstrip().startswith(("import", "os.")) for line in fn.source.splitlines())
    assert fn.state == [evil]
    with pytest.raises(ValueError, match="identifier"):
        lower([G("mul", x, w)], (), "f(): pass\nimport os\ndef g", feeds=[x])
    if renderer == "numpy":
        xs, ws = np.ones((2, 3), np.float32), np.arange(3, dtype=np.float32)
        (y,) = fn({evil: ws}, xs)
        assert np.array_equal(y, xs * ws)


@pytest.mark.parametrize("renderer", ["numpy", "cuda"])
def test_updates_read_the_old_values(renderer):
    """All updates of a step read the state as it was: `prev <- w` while `w <- 2 w + x`
    gives prev the old w (no in-place write of w before prev's copy reads it)."""
    from netc.compiler import lower_cuda, lower_numpy
    from netc.compiler.graph import Graph
    G = Graph("float64")
    x = G("input", name="x", shape=(3,), dtype="float64")
    w = G("param", name="w", shape=(3,), dtype="float64")
    prev = G("state", name="prev", shape=(3,), dtype="float64")
    updates = [(w, G("add", G("mul", w, 2.0), x)), (prev, w)]
    loss = G("sum", G("mul", w, w), axes=(0,))
    state = {"w": np.array([1.0, 2.0, 3.0]), "prev": np.zeros(3)}
    xs = np.array([0.5, 0.5, 0.5])
    if renderer == "numpy":
        fn = lower_numpy.lower([loss], updates, "step", feeds=[x])
        (l,) = fn(state, xs)
    else:
        cuda_harness = pytest.importorskip("cuda_harness")
        if cuda_harness.gcc() is None:
            pytest.skip("no gcc: the CPU harness for CUDA kernels needs a C compiler")
        fn = lower_cuda.lower([loss], updates, "step", feeds=[x])
        (l,) = cuda_harness.run(fn, state, xs)
    assert float(l) == 14.0
    assert np.array_equal(state["prev"], [1.0, 2.0, 3.0])
    assert np.array_equal(state["w"], [2.5, 4.5, 6.5])
