"""Adam and RMSprop: the compiled step against a hand-written float64 NumPy
reference (per-group rates, weight decay and a schedule included), Adam's bias
correction, resume bit-identical, a real problem trained, located refusals, and
the update still one fused kernel per parameter on the CUDA path."""
from __future__ import annotations

import numpy as np
import pytest

import cuda_harness
import netc
from netc.compiler import plan
from netc.compiler.errors import DataError, SpecError

NET = """input x : [4]
target t : class(3)
h = dense(x, 6, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t)
train {{
    method = {method}
    batch = 10
    shuffle = false
    dtype = float64
{extra}
}}
"""

LR, DECAY = 0.01, 0.3
EXTRA = f"""    schedule = step(every = 20, factor = 0.5)
    lr_scale params(h) = 2.5
    decay = {DECAY}
    decay params("y.b") = 0.1"""


def data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return x, np.argmax(x[:, :3] + 0.3 * rng.normal(size=(n, 3)), axis=1)


def _reference(method: str, update, steps_per_epoch: int, epochs: int):
    """The parameters after `epochs` epochs of minibatches in order, each step computed
    here: the gradient from the compiled loss (only the step is under test), the
    decay (lambda / T per minibatch, 2 lambda w / T), the rate (step schedule,
    lr_scale 2.5 on h) and the method's `update(g, state, t) -> delta` in float64."""
    x, t = data()
    m = netc.compile(NET.format(method=method, extra=EXTRA))
    w = {k: v.copy() for k, v in m.params.items()}
    f = m.function("loss", wrt=list(w))
    lam = {"h.W": DECAY, "y.W": DECAY, "y.b": 0.1}
    scale = {"h.W": 2.5, "h.b": 2.5, "y.W": 1.0, "y.b": 1.0}
    state: dict = {k: {} for k in w}
    step = 0
    for _ in range(epochs):
        for b in range(steps_per_epoch):
            sl = slice(10 * b, 10 * b + 10)
            for k in w:
                m.state[k][...] = w[k]
            grads = f(x[sl], t[sl])[1:]
            rate = LR * 0.5 ** ((10 * step) // 20)
            step += 1
            for (k, p), g in zip(w.items(), grads):
                g = g + 2 * lam.get(k, 0.0) / len(x) * p
                w[k] = p - rate * scale[k] * update(g, state[k], step)
    return x, t, w


def _adam(g, s, t, b1=0.9, b2=0.999, eps=1e-8):
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    return (s["m"] / (1 - b1 ** t)) / (np.sqrt(s["v"] / (1 - b2 ** t)) + eps)


def _rmsprop(g, s, t, rho=0.9, eps=1e-8):
    s["ms"] = rho * s.get("ms", 0) + (1 - rho) * g * g
    return g / (np.sqrt(s["ms"]) + eps)


@pytest.mark.parametrize("method,update", [
    (f"adam(lr = {LR})", _adam),
    (f"adam(lr = {LR}, beta1 = 0.5, beta2 = 0.9, eps = 1e-3)", lambda g, s, t: _adam(g, s, t, 0.5, 0.9, 1e-3)),
    (f"rmsprop(lr = {LR})", _rmsprop),
    (f"rmsprop(lr = {LR}, rho = 0.5, eps = 1e-2)", lambda g, s, t: _rmsprop(g, s, t, 0.5, 1e-2)),
], ids=["adam", "adam-args", "rmsprop", "rmsprop-args"])
def test_steps_match_a_numpy_reference_with_groups_decay_and_schedule(method, update):
    x, t, want = _reference(method, update, steps_per_epoch=5, epochs=2)
    m = netc.compile(NET.format(method=method, extra=EXTRA))
    m.fit(x, t, epochs=2)
    for k in want:
        np.testing.assert_allclose(m.params[k], want[k], rtol=1e-11, atol=1e-13, err_msg=k)
    if method.startswith("adam"):  # t = 10 updates, kept as beta^t
        b1 = 0.5 if "beta1" in method else 0.9
        assert float(m.state["adam.beta1_power"]) == pytest.approx(b1 ** 10, rel=1e-12)


def _first_step(method: str, gain: float) -> dict:
    """|change| of every weight after one full-batch step, with the loss scaled by `gain`
    (every gradient `gain` times larger)."""
    x, t = data()
    spec = NET.format(method=method, extra="").replace("loss = nll(softmax(y), t)",
                                                       f"loss = {gain} * nll(softmax(y), t)")
    m = netc.compile(spec.replace("batch = 10", "batch = 50"))
    before = {k: v.copy() for k, v in m.params.items()}
    m.fit(x, t, epochs=1)
    return {k: np.abs(m.params[k] - before[k]) for k in before}


def test_adam_first_step_moves_every_weight_by_lr_whatever_the_gradient_scale():
    """Bias correction: m_hat = g and v_hat = g^2 after one step, so |dw| = lr |g| / (|g| + eps);
    without it the step would be lr (1 - b1) / sqrt(1 - b2) = 3.16 lr. (eps small here so
    that even the 1e-4 gain's gradients are far above it.)"""
    for gain in (1e-4, 1.0, 1e4):
        for k, d in _first_step("adam(lr = 0.01, eps = 1e-14)", gain).items():
            np.testing.assert_allclose(d, 0.01, rtol=1e-4, err_msg=f"{k} at gain {gain}")


def test_rmsprop_first_step_is_lr_over_sqrt_one_minus_rho():
    """RMSprop's average starts at zero (no correction, as Tieleman & Hinton): the first
    step is lr / sqrt(1 - rho), also independent of the gradient's scale."""
    for gain in (1e-4, 1e4):
        for k, d in _first_step("rmsprop(lr = 0.01, rho = 0.9, eps = 1e-14)", gain).items():
            np.testing.assert_allclose(d, 0.01 / np.sqrt(0.1), rtol=1e-4, err_msg=k)


def test_decay_and_schedule_act():
    """Each key changes the trajectory as it says: decay shrinks the weights, a
    schedule that cuts the rate to ~0 after the first update stops the parameters."""
    x, t = data()
    base = NET.format(method="adam(lr = 0.05)", extra="    epochs = 20")
    plain = netc.compile(base).fit(x, t)
    decayed = netc.compile(base.replace("epochs = 20", "epochs = 20\n    decay = 200")).fit(x, t)
    norm = lambda m: float(sum(np.sum(m.params[k] ** 2) for k in ("h.W", "y.W")))  # noqa: E731
    assert norm(decayed) < 0.5 * norm(plain)
    one = netc.compile(base.replace("epochs = 20", "epochs = 1")).fit(x[:10], t[:10])
    cut = netc.compile(base.replace("epochs = 20", "epochs = 3\n    schedule = step(every = 10, factor = 1e-9)"))
    cut.fit(x[:10], t[:10])
    for k in one.params:
        np.testing.assert_allclose(cut.params[k], one.params[k], atol=1e-9)


def test_resume_mid_run_is_bit_identical(tmp_path):
    x, t = data(n=60)
    spec = NET.format(method="adam(lr = 0.02)", extra=EXTRA)
    whole = netc.compile(spec).fit(x, t, epochs=6, out=tmp_path / "whole")
    netc.compile(spec).fit(x, t, epochs=3, out=tmp_path / "half")
    with np.load(tmp_path / "half" / "params.npz", allow_pickle=False) as z:
        saved = set(z.files)
    for k in ("h.W.moment1", "h.W.moment2", "adam.beta1_power", "adam.beta2_power"):
        assert f"a/state/{k}" in saved
    resumed = netc.resume(tmp_path / "half", x, t, epochs=6)
    assert set(resumed.state) == set(whole.state)
    for k in whole.state:
        np.testing.assert_array_equal(resumed.state[k], whole.state[k], err_msg=k)


# a value just outside each declared range (compiler/update.py: REAL, NONNEGATIVE, UNIT)
_OUTSIDE = {(-np.inf, np.inf): [np.nan, np.inf], (0.0, np.inf): [-1e-3, np.inf], (0.0, 1.0): [-0.5, 1.5, np.nan]}


@pytest.mark.parametrize("method", ["adam()", "rmsprop()", "adagrad()", "sgd(momentum = 0.9)", "sdlm()", "vsgd()",
                                    "adaptive()"])
def test_optimizer_state_no_run_can_reach_is_refused_by_field(tmp_path, method):
    """Every optimizer state declares the range its values keep in any run; a checkpoint
    whose copy leaves it (tampered, or not a run's) is refused naming the field, by
    netc.load and netc.resume; the range's ends (a beta power of 1, fresh; 0, underflowed)
    are accepted."""
    from netc.compiler.update import state_ranges
    x, t = data(n=20)
    spec = NET.format(method=method, extra="")
    m = netc.compile(spec).fit(x, t, epochs=1, out=tmp_path / "run")
    ranges = state_ranges(m.program.state_leaves)
    assert set(ranges) == set(m.state) - set(m.params) and ranges, ranges  # every optimizer state declared
    with np.load(tmp_path / "run" / "params.npz", allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}

    def tampered(name, value):
        arrays = dict(saved)
        a = arrays[f"a/state/{name}"].copy()
        a.flat[a.size // 2] = value
        arrays[f"a/state/{name}"] = a
        dest = tmp_path / f"{name}-{value}"
        dest.mkdir()
        np.savez(dest / "params.npz", **arrays)
        return dest

    for name, valid in ranges.items():
        for value in _OUTSIDE[valid]:
            dest = tampered(name, value)
            for attempt in (lambda: netc.load(dest), lambda: netc.resume(dest, x, t, epochs=2)):
                with pytest.raises(DataError) as e:
                    attempt()
                assert f"{dest}" in str(e.value) and f"'state/{name}'" in str(e.value), str(e.value)
        if valid == (0.0, 1.0):
            for value in valid:
                assert np.isfinite(netc.resume(tampered(name, value), x, t, epochs=2).state[name])


@pytest.mark.parametrize("method", ["adam(lr = 0.01)", "rmsprop(lr = 0.003)"])
def test_trains_two_spirals(method):
    """A problem a linear model cannot solve (chance 50%, linear ~ 35-50% error)."""
    rng = np.random.default_rng(1)
    n = 300
    r = np.linspace(0.3, 3.0, n)
    a = np.concatenate([r, r + np.pi]) * 1.2
    x = np.stack([np.concatenate([r, r]) * np.cos(a), np.concatenate([r, r]) * np.sin(a)], axis=1)
    x += 0.05 * rng.normal(size=x.shape)
    t = np.repeat([0, 1], n)
    spec = ("input x : [2]\ntarget t : class(2)\nh = dense(x, 32, act = tanh)\nh2 = dense(h, 32, act = tanh)\n"
            f"y = dense(h2, 2)\nloss = nll(softmax(y), t)\ntrain {{\n    method = {method}\n    batch = 20\n"
            "    epochs = 150\n    seed = 2\n}\n")
    m = netc.compile(spec).fit(x, t)
    assert m.score(x, t) > 0.95, m.summary_


@pytest.mark.parametrize("method,where", [
    ("adam(beta1 = 1)", "beta1"), ("adam(beta2 = 1.5)", "beta2"), ("adam(eps = 0)", "eps"),
    ("adam(lr = -1)", "lr"), ("rmsprop(rho = 1)", "rho"), ("rmsprop(momentum = 0.9)", "momentum"),
])
def test_bad_arguments_are_located(method, where):
    spec = NET.format(method=method, extra="")
    with pytest.raises(SpecError) as e:
        netc.compile(spec)
    text = str(e.value)
    assert where in text and ":7:14:" in text, text  # the method call


@pytest.mark.parametrize("method", ["adam()", "rmsprop()", "adagrad()"])
def test_auto_eigen_is_refused_where_the_step_is_divided_by_a_gradient_scale(method):
    spec = NET.format(method=method, extra="    lr = auto(eigen)")
    with pytest.raises(SpecError) as e:
        netc.compile(spec)
    assert "auto(eigen)" in str(e.value) and "gradient scale" in str(e.value) and ":11:5:" in str(e.value)


def test_doc_lists_the_methods_and_their_arguments(capsys):
    from netc.cli import main
    assert main(["doc", "train"]) == 0
    out = capsys.readouterr().out
    assert "adam(lr, beta1, beta2, eps)" in out and "rmsprop(lr, rho, eps)" in out
    assert main(["doc", "methods"]) == 0
    out = capsys.readouterr().out
    adam = out[out.index("\n  adam\n"):out.index("\n  rmsprop\n")]
    for line in ("lr         default 0.001", "beta1      default 0.9", "beta2      default 0.999",
                 "eps        default 1e-08"):
        assert line in adam, adam
    assert "rho        default 0.9" in out[out.index("\n  rmsprop\n"):]


# ---------------------------------------------------------------------------- the CUDA path


@pytest.mark.parametrize("method", ["adam(lr = 0.01)", "rmsprop(lr = 0.01)"])
def test_update_is_one_kernel_per_parameter(method):
    m = netc.compile(NET.format(method=method, extra="    lr_scale h = 2\n    decay = 0.1"))
    P = plan.fused([m.program.loss], m.program.updates).fused
    params = m.program.spec.params
    update = [k for k in P.kernels if k.phase == "update"]
    writers: dict = {}
    for k in P.kernels:
        for leaf in k.in_place.values():
            writers.setdefault(leaf.name, []).append(k.id)
    for name in params:  # the parameter and its moments, in place, by one kernel
        assert len(writers[name]) == 1, writers
        for s in ("moment1", "moment2", "mean_sq"):
            if f"{name}.{s}" in m.state:
                assert writers[f"{name}.{s}"] == writers[name]
    assert sum(1 for k in update if any(leaf.op == "param" for leaf in k.in_place.values())) == len(params)


@pytest.mark.skipif(cuda_harness.gcc() is None, reason="no gcc: the CPU harness for CUDA kernels needs it")
@pytest.mark.parametrize("method", ["adam(lr = 0.01)", "rmsprop(lr = 0.01)"])
def test_generated_cuda_step_matches_numpy_float64(method):
    """The fused CUDA kernels, compiled as C by the harness, take the same steps."""
    m = netc.compile(NET.format(method=method, extra="    lr_scale h = 2\n    decay = 0.1"))
    fn = m.program.named("train_step", "cuda")
    rng = np.random.default_rng(3)
    np_state = {k: np.array(v, copy=True) for k, v in m.state.items()}
    cu_state = {k: v.copy() for k, v in np_state.items()}
    x, t = data(n=8)
    feeds = {"x": x, "t": t, "lr": 0.01, "inv_examples": 0.02}
    for _ in range(3):
        args = [feeds[f] if f in feeds else rng.integers(0, 2 ** 31) for f in fn.feeds]
        m.program.step(np_state, *args)
        cuda_harness.run(fn, cu_state, *args)
    for k in np_state:
        np.testing.assert_allclose(cu_state[k], np_state[k], rtol=1e-10, atol=1e-12, err_msg=k)
