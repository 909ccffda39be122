"""The native CPU backend (compiler/lower_c.py) computes what the NumPy one does.

1. every shipped spec: train steps, evaluation, prediction (and curvature) through
   the generated C against the generated NumPy, float32 and float64;
2. every op recipe of tests/test_ops.py: the op, its first derivative and its
   second derivative (Hessian-vector form) through C against the interpreter
   (float64), all recipes in one translation unit;
3. the heavy-ball GEMM fusion gives the same numbers as the plain step;
4. the trainer runs the native functions (same run as NumPy's); backend
   selection (argument, NETC_BACKEND, the notice without a compiler); the CLI.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netc
from netc.compiler import lower_c, native_function
from netc.compiler.differentiate import grad
from netc.compiler.errors import NetcError
from netc.compiler.evaluate import evaluate
from netc.compiler.graph import Graph, toposort
from netc.compiler.pipeline import choose_backend
from test_cuda import feed_values, random_state
from test_ops import B as OPS_B, CASES, make_case, weighted_loss

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.net"))
WHY = native_function.unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"native backend unavailable: {WHY}")

_MODELS: dict = {}


def model(path, dtype="float32"):
    key = (str(path), dtype)
    if key not in _MODELS:
        _MODELS[key] = netc.compile(path, dtype=dtype, backend="numpy")
    return _MODELS[key]


def _agree(m, which, steps, batch, rng, rtol):
    """Run `which` natively and through NumPy side by side from the same state (reset
    to NumPy's after every step: float32 rounding differences must not compound)."""
    ref = m.program.named(which, "numpy")
    fn = m.program.named(which, "native")
    if ref is None:
        return 0
    assert isinstance(fn, native_function.NativeFunction) and fn.feeds == ref.feeds
    s_ref = random_state(m, rng)
    s_nat = {k: v.copy() for k, v in s_ref.items()}
    for _ in range(steps):
        vals = feed_values(m.program.named(which, "cuda"), batch, rng)
        args = [vals[f] for f in ref.feeds]
        want, got = ref(s_ref, *args), fn(s_nat, *args)
        for w, g in zip(want, got):
            np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=rtol, err_msg=which)
        for k in s_ref:
            np.testing.assert_allclose(s_nat[k], s_ref[k], rtol=rtol, atol=rtol, err_msg=f"{which}: {k}")
            np.copyto(s_nat[k], s_ref[k])
    return 1


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_spec_matches_numpy(path):
    m = model(path)
    rng = np.random.default_rng(0)
    ran = sum(_agree(m, w, 3 if w == "train_step" else 1, 16, rng, 5e-5)
              for w in ("train_step", "evaluate", "predict", "curvature"))
    assert ran >= 2


@pytest.mark.parametrize("name", ["mnist_mlp.net", "second_order.net", "denoising_cae.net"])
def test_specs_match_numpy_in_float64(name):
    m = model(ROOT / "specs" / name, "float64")
    rng = np.random.default_rng(1)
    for w in ("train_step", "evaluate", "predict"):
        _agree(m, w, 2, 7, rng, 1e-10)


# ---------------------------------------------------------------------------
# 2. every op recipe, its first and second derivatives (float64)


def _recipe_job(k, op, recipe):
    """(outputs, feeds, values, state names) for one recipe: the op, d/dparams of
    sum(op * R) and d/dparams of sum(grad * V)."""
    case = make_case(op, recipe)
    G = case.G
    outputs = [case.node]
    if not recipe.nondiff and case.params:
        L = weighted_loss(case)
        grads = grad(G, L, case.params)
        S = None
        for p, g in zip(case.params, grads):
            term = G("sum", G("mul", g, case.feed(f"V_{p.name}", p.shape)))
            S = term if S is None else G("add", S, term)
        outputs += grads + grad(G, S, case.params)
    order = toposort(outputs)
    feeds = [n for n in order if n.op in ("input", "hyper")]
    return (outputs, (), f"r{k}", feeds), case.values, [n.name for n in order if n.op in ("param", "state")]


def test_every_op_recipe_and_its_derivatives():
    jobs, values, states, names = [], [], [], []
    for k, (op, recipe) in enumerate(CASES):
        job, vals, st = _recipe_job(k, op, recipe)
        jobs.append(job)
        values.append(vals)
        states.append(st)
        names.append(f"{op}-{recipe.id}")
    fns = lower_c.lower_many(jobs)
    bad = []
    for job, fn, vals, st, name in zip(jobs, fns, values, states, names):
        outputs, _, _, feeds = job
        want = evaluate(list(outputs), vals, batch=OPS_B)
        state = {s: np.array(vals[s]) for s in st}
        got = fn.bind(state, OPS_B)(*[np.asarray(vals[f.name], dtype=f.dtype) for f in feeds])
        for i, (g, w) in enumerate(zip(got, want)):
            g, w = np.asarray(g), np.asarray(w)
            if g.shape != w.shape or not np.allclose(g, w, rtol=1e-9, atol=1e-10, equal_nan=True):
                bad.append((name, i, g, w))
    assert not bad, bad[:3]
    assert len(fns) == len(CASES) >= 100


def test_maximum_propagates_nan_as_numpy():
    """relu's maximum: a NaN input stays NaN (C's fmax would hide it)."""
    G = Graph("float32")
    x = G("input", name="x", shape=(None, 5), dtype="float32")
    y = G("maximum", x, G.const(0.0))
    z = G("minimum", x, G.const(0.0))
    fn = lower_c.lower([y, z], feeds=[x])
    a = np.array([[np.nan, -1, 2, np.inf, -np.inf]], np.float32)
    got = fn({}, a)
    np.testing.assert_array_equal(got[0], np.maximum(a, 0))
    np.testing.assert_array_equal(got[1], np.minimum(a, 0))


# ---------------------------------------------------------------------------
# 3. the heavy-ball update in the weight gradient's GEMM

MOMENTUM = """
input  x : [12]
target t : class(4)
h = dense(x, 9, act = tanh)
y = dense(h, 4, act = identity)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.1, momentum = 0.9)
    batch = 8
}
"""


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-13), ("float32", 2e-6)])
def test_velocity_gemm_gives_the_same_numbers(dtype, tol):
    m = netc.compile(MOMENTUM, dtype=dtype, backend="numpy")
    P = m.program
    fused = P.named("train_step", "native")
    plain = lower_c.lower(P.step_outputs, P.updates, f"plain_{dtype}", feeds=None, fuse_velocity=False)
    assert {f.split(" -> ")[1] for f in fused.fused_gemms} == {"h.W.velocity", "y.W.velocity"}
    assert not plain.fused_gemms
    # the fused step's C: the GEMM writes the velocity (beta = momentum), no product buffer is read
    assert "h.W.velocity" in fused.emit()
    rng = np.random.default_rng(3)
    s = {name: random_state(m, rng) for name in ("numpy", "fused", "plain")}
    s["fused"] = {k: v.copy() for k, v in s["numpy"].items()}
    s["plain"] = {k: v.copy() for k, v in s["numpy"].items()}
    for _ in range(4):
        x = rng.normal(size=(8, 12)).astype(dtype)
        t = rng.integers(0, 4, 8)
        feeds = {"x": x, "t": t, "lr": 0.1, "momentum": 0.9}
        outs = {"numpy": P.step(s["numpy"], *[feeds[f] for f in P.step.feeds]),
                "fused": fused(s["fused"], *[feeds[f] for f in fused.feeds]),
                "plain": plain(s["plain"], *[feeds[f] for f in plain.feeds])}
        assert float(outs["fused"][0]) == pytest.approx(float(outs["plain"][0]), rel=tol, abs=tol)
    for k in s["numpy"]:
        np.testing.assert_allclose(s["fused"][k], s["plain"][k], rtol=tol, atol=tol, err_msg=k)
        np.testing.assert_allclose(s["fused"][k], s["numpy"][k], rtol=50 * tol, atol=50 * tol, err_msg=k)
    assert np.abs(s["fused"]["h.W.velocity"]).max() > 0


def test_nesterov_and_weight_decay_still_agree():
    """Forms the fusion refuses or takes differently must keep their numbers."""
    for method in ("sgd(lr = 0.1, momentum = 0.9, nesterov = true)", "sgd(lr = 0.1, momentum = 0.9)\n"
                   "    weight_decay = 0.01"):
        text = MOMENTUM.replace("sgd(lr = 0.1, momentum = 0.9)", method)
        try:
            m = netc.compile(text, dtype="float64", backend="numpy")
        except NetcError:
            continue  # a key this version does not have
        _agree(m, "train_step", 3, 8, np.random.default_rng(4), 1e-10)


# ---------------------------------------------------------------------------
# 4. the trainer, backend selection, the CLI


def test_trainer_runs_the_native_functions():
    text = (ROOT / "specs" / "mnist_mlp.net").read_text()
    a = netc.compile(text, backend="numpy").fit(epochs=1, limit=300).summary_
    nat = netc.compile(text, backend="native")
    assert nat.program.backend == "native"
    b = nat.fit(epochs=1, limit=300).summary_
    assert b["steps"] == a["steps"] and b["age"] == a["age"]
    for key in ("train_loss", "valid_loss", "valid_error", "test_error"):
        assert b[key] == pytest.approx(a[key], rel=2e-3, abs=2e-3), key


def test_backend_choice(monkeypatch, capsys):
    monkeypatch.delenv("NETC_BACKEND", raising=False)
    assert choose_backend(None) == "native"
    assert choose_backend("numpy") == "numpy"
    assert choose_backend(None, "gpu") == "cuda"
    monkeypatch.setenv("NETC_BACKEND", "numpy")
    assert choose_backend(None) == "numpy"
    assert choose_backend("native") == "native"  # the argument wins
    monkeypatch.setenv("NETC_BACKEND", "fortran")
    with pytest.raises(NetcError, match="NETC_BACKEND 'fortran'"):
        choose_backend(None)
    with pytest.raises(NetcError, match="choose native or numpy"):
        netc.compile(ROOT / "specs" / "mnist_mlp.net", backend="cuda")
    monkeypatch.delenv("NETC_BACKEND")
    monkeypatch.setattr(native_function, "unavailable", lambda: "no working C compiler (test)")
    assert choose_backend(None) == "numpy"
    assert "no working C compiler (test); using the NumPy backend" in capsys.readouterr().err
    with pytest.raises(NetcError, match="not available here"):
        choose_backend("native")


def test_why_the_native_backend_is_unavailable_names_the_setting_at_fault(monkeypatch, capsys):
    """A NETC_BLAS naming no BLAS: the auto backend falls back to NumPy with a notice that
    names NETC_BLAS, an explicit native backend is refused naming it."""
    monkeypatch.delenv("NETC_BACKEND", raising=False)
    monkeypatch.setenv("NETC_BLAS", "/nonexistent/libnoblas.so")
    assert choose_backend(None) == "numpy"
    assert "NETC_BLAS='/nonexistent/libnoblas.so': not a BLAS library" in capsys.readouterr().err
    with pytest.raises(NetcError, match="not available here: NETC_BLAS="):
        choose_backend("native")


def test_compile_emit_c_shows_the_source_lines(capsys):
    from netc.cli import main
    assert main(["compile", str(ROOT / "specs" / "mnist_mlp.net"), "--emit", "c"]) == 0
    out = capsys.readouterr().out
    assert "void netc_train_step_0(const long long B, void* const* P, const double* H)" in out
    assert "mnist_mlp.net:7" in out and "netc_sgemm(" in out
    assert "fused: GEMM" in out  # the heavy-ball update in the weight GEMM


def test_source_names_cannot_splice_lines_into_the_c():
    """A file name ending in a backslash (or spelling a trigraph) stays inside its comment:
    `//` comments would otherwise swallow the next line of C."""
    m = netc.Model(MOMENTUM, "evil??/\\", backend="native")
    fn = m.program.step
    body = fn.c_source.split("/* ---- end netc runtime hooks ---- */")[-1]
    assert "evil" in body
    assert not [ln for ln in body.splitlines() if "//" in ln and ("\\" in ln or "??" in ln)]
    x = np.ones((8, 12), np.float32)
    (loss,) = fn(m.state, x, np.zeros(8, np.int64), 0.1, 0.9)
    assert np.isfinite(loss)


def test_debug_buffers_start_as_nan_and_no_step_reads_one_unwritten():
    m = netc.compile(ROOT / "specs" / "denoising_cae.net", backend="native", debug=True)
    fn = m.program.step
    rng = np.random.default_rng(5)
    vals = feed_values(m.program.named("train_step", "cuda"), 6, rng)
    out = fn(m.state, *[vals[f] for f in fn.feeds])
    assert all(np.all(np.isfinite(o)) for o in out)
    assert all(np.all(np.isfinite(v)) for v in m.state.values())
    step = fn.bind(m.state, 6)
    assert step is fn.bind(m.state, 6)  # bound once per state and batch size


def test_a_reused_batch_buffer_is_read_again_each_call():
    """The trainer refills the same arrays every step: the native step reads their new
    contents (it keeps their addresses), and a copied (non-contiguous) feed is copied again."""
    m = model(ROOT / "specs" / "mnist_mlp.net")
    ev_np, ev_c = m.program.named("evaluate", "numpy"), m.program.named("evaluate", "native")
    rng = np.random.default_rng(8)
    x = np.empty((10, 784), np.float32)
    wide = np.empty((10, 1568), np.float32)
    t = np.empty(10, np.int64)
    for _ in range(3):
        x[...] = rng.normal(size=x.shape)
        wide[:, ::2] = x
        t[...] = rng.integers(0, 10, 10)
        want = [np.array(v) for v in ev_np(m.state, x, t)]
        for feed in (x, wide[:, ::2]):
            got = ev_c(m.state, feed, t)
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_a_replaced_state_array_is_checked_at_bind():
    """The C side reads state by address: an array of another shape is refused by name
    (it would read and write past it); another dtype or layout is converted, and the
    converted array is the one the model holds and the step trains."""
    m = netc.compile(MOMENTUM, backend="native")
    x, t = np.ones((8, 12), np.float32), np.zeros(8, np.int64)
    m.state["h.W"] = np.zeros((1, 1), np.float32)
    with pytest.raises(NetcError, match="state 'h.W' is an array of shape \\[1, 1\\].*\\[12, 9\\]"):
        m.program.step(m.state, x, t, 0.1, 0.9)
    m = netc.compile(MOMENTUM, backend="native")
    w = np.asfortranarray(m.state["h.W"].astype(np.float64))
    m.state["h.W"] = w
    m.program.step(m.state, x, t, 0.1, 0.9)
    held = m.state["h.W"]
    assert held is not w and held.dtype == np.float32 and held.flags.c_contiguous
    assert not np.allclose(held, w)  # the step updated the array the model holds
