"""The CUDA path, proven without a GPU (and run for real where there is one).

1. nvcc compiles every generated kernel of every shipped spec to PTX for
   sm_80 and sm_90 (skipped, with the reason, where nvcc is absent);
2. gcc compiles the same kernel text as C (tests/cuda_harness.py), and each
   kernel's outputs match compiler/evaluate.py; whole generated steps match
   the NumPy lowering; every elementwise op's C expression matches its impl;
3. `gpu`-marked tests run CuPy end to end where CuPy and a device exist.
"""
from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
import pytest

import cuda_harness
import netc
from netc.compiler import cuda_c, cupy_runtime, fuse, lower_cuda
from netc.compiler.errors import NetcError
from netc.compiler.graph import Graph
from netc.compiler.ops import OPS

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.net"))
FUNCTIONS = ("train_step", "evaluate", "predict")
ARCHS = ("sm_80", "sm_90")

needs_gcc = pytest.mark.skipif(cuda_harness.gcc() is None, reason="no gcc: the CPU harness for CUDA kernels "
                               "needs a C compiler")
needs_nvcc = pytest.mark.skipif(cuda_harness.nvcc() is None, reason="nvcc not found: generated CUDA sources "
                                "are not compile-checked here (install the CUDA toolkit to check them)")

_MODELS: dict = {}


def model(path, dtype="float32"):
    key = (str(path), dtype)
    if key not in _MODELS:
        _MODELS[key] = netc.compile(path, dtype=dtype)
    return _MODELS[key]


def functions(m):
    out = {}
    for which in FUNCTIONS:
        fn = m.program.named(which, "cuda")
        if fn is not None:
            out[which] = fn
    return out


def feed_values(fn, batch: int, rng) -> dict:
    """Random feeds by name: inputs, class labels, hyperparameters."""
    leaves = {n.name: n for n in fn.plan.order if n.op in ("input", "hyper")}
    vals = {}
    for name in fn.feeds:
        n = leaves[name]
        if n.op == "hyper":
            vals[name] = 0.9 if name == "momentum" else 0.05
        elif n.dtype == "int64":
            vals[name] = rng.integers(0, n.attr("classes") or 2, batch)
        else:
            vals[name] = rng.normal(size=(batch,) + tuple(n.shape[1:])).astype(n.dtype)
    return vals


def random_state(m, rng) -> dict:
    """The model's initial state, with nonzero optimizer state (so every update term
    matters). Non-negative: curvature and variance estimates are, and near -mu a
    rate eps / (h + mu) would turn float32 rounding into large differences."""
    out = {}
    for k, v in m.state.items():
        v = np.array(v, copy=True)
        if k not in m.program.spec.params and v.dtype.kind == "f":
            v += np.abs(0.01 * rng.normal(size=v.shape)).astype(v.dtype)
        out[k] = v
    return out


# ---------------------------------------------------------------------------
# 1. nvcc


def _spec_kernels(path, dtypes=("float32",)):
    out = []
    for dtype in dtypes:
        for fn in functions(model(path, dtype)).values():
            out += fn.kernels
    return out


def _op_kernels():
    return [k for dtype in ("float32", "float64") for op in _elementwise_ops() for k in _op_function(op, dtype)[0].kernels]


@pytest.fixture(scope="module")
def ptx(tmp_path_factory):
    """Every kernel of every shipped spec (train_step, evaluate, predict; float64 too
    for mnist_mlp) and of every elementwise op, as CuPy gets them: one .cu file per
    architecture, the two compiled at once."""
    if cuda_harness.nvcc() is None:
        pytest.skip("nvcc not found: generated CUDA sources are not compile-checked here "
                    "(install the CUDA toolkit to check them)")
    kernels = [k for p in SPECS for k in _spec_kernels(p, ("float32", "float64") if p.name == "mnist_mlp.net"
                                                      else ("float32",))]
    kernels += _op_kernels()
    d = tmp_path_factory.mktemp("nvcc")
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        return dict(zip(ARCHS, ex.map(lambda a: cuda_harness.nvcc_ptx(kernels, a, d), ARCHS)))


@needs_nvcc
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_kernel_compiles_with_nvcc(path, ptx):
    names = {k.name for k in _spec_kernels(path)}
    assert names
    for arch, text in ptx.items():
        assert f".target {arch}" in text
        for name in names:
            assert f".entry {name}(" in text, (arch, name)


@needs_nvcc
def test_every_elementwise_op_compiles_with_nvcc(ptx):
    for text in ptx.values():
        for k in _op_kernels():
            assert f".entry {k.name}(" in text


# ---------------------------------------------------------------------------
# 2. the same kernels as C on the CPU


@pytest.fixture(scope="module", autouse=True)
def prebuilt():
    """Every kernel the harness tests run, compiled by gcc in one parallel pass."""
    if cuda_harness.gcc() is not None:
        cuda_harness.build([k for p in SPECS for k in _spec_kernels(p, ("float32", "float64"))] + _op_kernels())


def _check(fn, values):
    rows = cuda_harness.check_kernels(fn, values)
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad
    return rows


@needs_gcc
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_each_kernel_matches_the_reference(path):
    m = model(path)
    rng = np.random.default_rng(0)
    state = random_state(m, rng)
    checked = 0
    for which, fn in functions(m).items():
        values = {**feed_values(fn, 12, rng), **state}
        checked += len(_check(fn, values))
    assert checked >= 8


@needs_gcc
@pytest.mark.parametrize("name", ["mnist_mlp.net", "mnist_lecun98.net"])
def test_each_kernel_matches_the_reference_float64(name):
    m = model(next(p for p in SPECS if p.name == name), "float64")
    rng = np.random.default_rng(1)
    state = random_state(m, rng)
    fn = functions(m)["train_step"]
    rows = _check(fn, {**feed_values(fn, 10, rng), **state})
    assert max(r["error"] for r in rows) < 1e-12


def _steps_agree(m, fn, steps, batch, rng, rtol, resync=False, **launch):
    """Run the generated GPU step on the CPU and the NumPy step side by side.
    With `resync`, every step starts from the same state (float32: on random data
    some methods amplify rounding from step to step, NumPy's own float32 included)."""
    np_state = random_state(m, rng)
    cu_state = {k: v.copy() for k, v in np_state.items()}
    for _ in range(steps):
        vals = feed_values(fn, batch, rng)
        args = [vals[f] for f in fn.feeds]
        (l_np,) = m.program.step(np_state, *args)
        (l_cu,) = cuda_harness.run(fn, cu_state, *args, **launch)
        assert float(l_cu) == pytest.approx(float(l_np), rel=rtol, abs=rtol)
        for k in np_state:
            np.testing.assert_allclose(cu_state[k], np_state[k], rtol=rtol, atol=rtol, err_msg=k)
            if resync:
                np.copyto(cu_state[k], np_state[k])
    return float(l_cu)


@needs_gcc
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_generated_step_matches_numpy(path):
    m = model(path)
    fn = functions(m)["train_step"]
    _steps_agree(m, fn, 3, 16, np.random.default_rng(2), 2e-5, resync=True)


@needs_gcc
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_generated_step_matches_numpy_float64(path):
    # float64: the same arithmetic, so any real difference shows
    m = model(path, "float64")
    _steps_agree(m, functions(m)["train_step"], 2, 8, np.random.default_rng(3), 1e-10)


@needs_gcc
def test_thread_blocks_and_grid_stride():
    """Blocks of 4 real threads meeting at a barrier (the shared-memory tree
    reductions as on a device) and a grid smaller than the work."""
    m = model(next(p for p in SPECS if p.name == "mnist_mlp.net"))
    fn = functions(m)["train_step"]
    _steps_agree(m, fn, 1, 9, np.random.default_rng(4), 2e-5, grid=3, block=4)
    ev = functions(m)["evaluate"]
    rng = np.random.default_rng(5)
    state = random_state(m, rng)
    vals = feed_values(ev, 7, rng)
    args = [vals[f] for f in ev.feeds]
    want = m.program.evaluate(state, *args)
    got = cuda_harness.run(ev, state, *args, grid=2, block=8)
    for g, w in zip(got, want):
        assert float(g) == pytest.approx(float(w), rel=1e-5)


@needs_gcc
def test_evaluate_and_predict_match_numpy():
    m = model(next(p for p in SPECS if p.name == "bengio_defaults.net"))
    rng = np.random.default_rng(6)
    state = random_state(m, rng)
    for which in ("evaluate", "predict"):
        fn = functions(m)[which]
        vals = feed_values(fn, 11, rng)
        args = [vals[f] for f in fn.feeds]
        want = getattr(m.program, which)(state, *args)
        got = cuda_harness.run(fn, state, *args)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _elementwise_ops():
    return sorted(n for n, op in OPS.items() if op.kind == "elementwise" and op.lang is not None)


OP_ATTRS = {"clip": {"lo": -0.5, "hi": 0.7}}  # ops whose defaults make them the identity


def _op_function(op: str, dtype: str):
    G = Graph(dtype)
    xs = [G("input", name=f"x{i}", shape=(None, 7), dtype=dtype) for i in range(3)]
    params, defaults = OPS[op].lang
    arity = sum(1 for p in params if p not in defaults)  # tensor operands; the rest are attributes
    node = G(op, *xs[:arity], **OP_ATTRS.get(op, {}))
    feeds = xs[:arity]
    fn = lower_cuda.lower([node], (), f"op_{op}", feeds=feeds)
    return fn, node, feeds


def _op_inputs(op: str, dtype, rng):
    positive = {"log", "sqrt", "log1p", "pow", "div"}
    if op in positive:
        return [rng.uniform(0.3, 2.5, size=(6, 7)).astype(dtype) for _ in range(3)]
    if op in ("gt", "ge", "lt", "le", "eq", "ne", "maximum", "minimum", "sign", "abs", "where", "clip"):
        # values on a coarse grid so that ties and zeros happen
        return [(rng.integers(-3, 4, size=(6, 7)) * 0.5).astype(dtype) for _ in range(3)]
    return [(rng.normal(size=(6, 7)) * 3).astype(dtype) for _ in range(3)]


@needs_gcc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_elementwise_op_expression(dtype):
    rng = np.random.default_rng(7)
    tol = 2e-6 if dtype == "float32" else 1e-14
    for op in _elementwise_ops():
        fn, node, feeds = _op_function(op, dtype)
        assert fn.plan.kernels[0].kind == "elementwise", f"{op} has no CUDA C expression"
        ins = _op_inputs(op, dtype, rng)[:len(feeds)]
        (got,) = cuda_harness.run(fn, {}, *ins)
        want = np.asarray(OPS[op].impl(ins, node.a, 6), dtype=dtype)
        assert np.array_equal(np.isnan(got), np.isnan(want)), op
        scale = np.maximum(1.0, np.abs(want))
        err = np.nanmax(np.abs(got - want) / scale)
        assert err <= tol, (op, fuse.cuda_template(op), err)


@needs_gcc
def test_op_without_a_cuda_expression_runs_as_a_library_call(monkeypatch):
    """An elementwise op with no C expression (a new op) still lowers: through its
    NumPy emitter, with the array module of the runtime."""
    real = fuse.cuda_template
    monkeypatch.setattr(fuse, "cuda_template", lambda op: None if op == "maximum" else real(op))
    m = netc.compile(next(p for p in SPECS if p.name == "mnist_mlp.net"))
    fn = m.program.named("train_step", "cuda")
    assert sum(1 for k in fn.plan.kernels if k.kind == "library") == 2
    _steps_agree(m, fn, 2, 8, np.random.default_rng(8), 2e-5, resync=True)


def _gpu_text(path) -> str:
    """The spec as the GPU path runs it: lr = auto(eigen) (host-only) replaced by its method's rate."""
    import re
    return re.sub(r"^\s*lr\s*=\s*auto\(.*$", "", path.read_text(), flags=re.M)


def _harnessed(text, **kw):
    """A model whose every compiled function is the generated CUDA one, run by the CPU harness."""
    m = netc.compile(text, **kw)
    m.program.use_backend("cuda")
    for f in ("step", "evaluate", "predict", "curvature"):
        fn = getattr(m.program, f, None)
        if fn is not None:
            assert isinstance(fn, lower_cuda.CudaFunction)
            fn.runtime = cuda_harness.CpuRuntime(fn.kernels)
    return m


@needs_gcc
@pytest.mark.parametrize("name", ["mnist_mlp.net", "second_order.net", "denoising_cae.net"])
def test_trainer_runs_the_generated_functions(name):
    """The real training loop (minibatches of two sizes, schedules, validation, SDLM's
    curvature pass, noise streams) driving the generated functions gives the same run."""
    text = _gpu_text(next(p for p in SPECS if p.name == name))
    cpu = netc.compile(text)
    gen = _harnessed(text)
    a = cpu.fit(epochs=1, limit=200).summary_
    b = gen.fit(epochs=1, limit=200).summary_
    assert b["steps"] == a["steps"] and b["age"] == a["age"]
    for key in ("train_loss", "valid_loss", "valid_error", "test_error"):
        if a.get(key) is not None:
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), key
    x = np.asarray(load_some(cpu))
    np.testing.assert_allclose(gen.predict_raw(x), cpu.predict_raw(x), rtol=1e-3, atol=1e-4)


def load_some(m):
    from netc.runtime.splits import load_splits
    return load_splits(m.data_cfg, m.base_dir).train.x[:20]


def test_host_only_settings_are_refused_on_the_gpu():
    from netc.model import _check_gpu_settings
    from netc.runtime.config import TrainConfig
    m = model(next(p for p in SPECS if p.name == "second_order.net"))  # lr = auto(eigen)
    with pytest.raises(NetcError, match="auto\\(eigen\\)"):
        _check_gpu_settings(m.train_cfg)
    _check_gpu_settings(TrainConfig())  # plain sgd is fine


# ---------------------------------------------------------------------------
# the generated host code


class CountingRuntime(cuda_harness.CpuRuntime):
    def __init__(self, kernels):
        super().__init__(kernels)
        self.calls = {"empty": 0, "upload": 0}

    def empty(self, shape, dtype):
        self.calls["empty"] += 1
        return super().empty(shape, dtype)

    def upload(self, x, buf):
        self.calls["upload"] += 1
        return super().upload(x, buf)


@needs_gcc
def test_step_allocates_nothing_and_uploads_the_minibatch_once():
    m = model(next(p for p in SPECS if p.name == "mnist_mlp.net"))
    fn = functions(m)["train_step"]
    rng = np.random.default_rng(9)
    state = random_state(m, rng)
    rt = CountingRuntime(fn.kernels)
    step = fn.make_step(rt, state, 8)
    allocated = rt.calls["empty"]
    vals = feed_values(fn, 8, rng)
    for _ in range(3):
        step(*[vals[f] for f in fn.feeds])
    assert rt.calls["empty"] == allocated
    assert rt.calls["upload"] == 3 * 2  # x and t, once a step
    # no host round trip inside the step: nothing reads a device array back
    assert ".get(" not in fn.source and "float(" not in fn.source and "asnumpy" not in fn.source


def test_kernels_are_compiled_once_per_process():
    """CupyRuntime's cache, with a stand-in for CuPy (no GPU needed)."""
    built = []

    class FakeCupy:
        class RawKernel:
            def __init__(self, source, name):
                built.append(name)

    m = model(next(p for p in SPECS if p.name == "mnist_lecun98.net"))
    fn = functions(m)["train_step"]
    cupy_runtime._KERNEL_CACHE.clear()
    for _ in range(2):
        rt = cupy_runtime.CupyRuntime(FakeCupy)
        for ks in fn.kernels:
            rt.kernel(ks.source, ks.name, ks.dtypes)
    assert sorted(built) == sorted(ks.name for ks in fn.kernels)
    cupy_runtime._KERNEL_CACHE.clear()
    for ks in fn.kernels:  # what CuPy compiles: the GPU prelude, then the kernel
        assert ks.source.startswith(cuda_c.GPU_PRELUDE) and "// covers: " in ks.source


def test_emit_cuda_and_stats_on_the_command_line(capsys):
    from netc.cli import main
    path = str(next(p for p in SPECS if p.name == "mnist_mlp.net"))
    assert main(["compile", path, "--emit", "cuda"]) == 0
    out = capsys.readouterr().out
    m = model(path)
    fn = functions(m)["train_step"]
    for ks in fn.kernels:
        assert f"NETC_KERNEL void {ks.name}(" in out
    assert out.count("// ---- k") == len(fn.plan.kernels)
    h1_line = next(i for i, line in enumerate(open(path).read().splitlines(), 1) if line.startswith("h1 = dense"))
    assert f"covers {path}:{h1_line}" in out  # kernels name the user's layer line, not the prelude's
    assert "<prelude>" not in out and "cupy.matmul(" in out and "def make(rt, S, B):" in out
    assert main(["compile", path, "--stats"]) == 0
    out = capsys.readouterr().out
    assert "kernels per step:      20" in out and "at batch 128" in out and "818.8 MFLOP" in out


def _has_gpu() -> str | None:
    """None if CuPy and a device are there, else why not."""
    try:
        cupy_runtime.require_gpu()
    except NetcError as e:
        return e.message
    return None


@pytest.mark.skipif(_has_gpu() is None, reason="CuPy and a device are present: the missing-GPU error cannot show")
def test_gpu_device_without_cupy_or_device_is_a_clear_user_error(capsys):
    from netc.cli import main
    path = str(next(p for p in SPECS if p.name == "mnist_lecun98.net"))
    with pytest.raises(NetcError) as e:
        netc.compile(path, device="gpu")
    assert "pip install 'netc[gpu]'" in e.value.message or "no CUDA device" in e.value.message
    assert main(["train", path, "--device", "gpu", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "device 'gpu'" in err and ("CuPy" in err)
    with pytest.raises(NetcError):
        netc.compile(path, device="tpu")


# ---------------------------------------------------------------------------
# 3. the real thing


def _cupy_or_skip():
    cp = pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'netc[gpu]')")
    why = _has_gpu()
    if why is not None:
        pytest.skip(why)
    return cp


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mnist_mlp.net", "mnist_lecun98.net", "bengio_defaults.net"])
def test_gpu_steps_match_numpy(name):
    cp = _cupy_or_skip()
    path = next(p for p in SPECS if p.name == name)
    cpu = netc.compile(path)
    gpu = netc.compile(path, device="gpu")
    rng = np.random.default_rng(10)
    state = random_state(cpu, rng)
    dev = {k: cp.asarray(v) for k, v in state.items()}
    fn = gpu.program.step
    assert isinstance(fn, lower_cuda.CudaFunction)
    for _ in range(5):
        vals = feed_values(fn, 64, rng)
        args = [vals[f] for f in fn.feeds]
        (l_np,) = cpu.program.step(state, *args)
        (l_cu,) = fn(dev, *args)
        assert float(l_cu) == pytest.approx(float(l_np), rel=1e-4, abs=1e-5)
    for k in state:
        np.testing.assert_allclose(cp.asnumpy(dev[k]), state[k], rtol=1e-3, atol=1e-5, err_msg=k)


@pytest.mark.gpu
def test_gpu_fit_predict_save(tmp_path):
    _cupy_or_skip()
    path = next(p for p in SPECS if p.name == "mnist_mlp.net")
    m = netc.compile(path, device="gpu")
    s = m.fit(epochs=1, limit=512, out=tmp_path / "run").summary_
    assert np.isfinite(s["train_loss"])
    p = m.predict_raw(np.zeros((5, 784), np.float32))
    assert isinstance(p, np.ndarray) and p.shape == (5, 10)
    m.save(tmp_path / "saved")
    assert netc.load(tmp_path / "saved").params.keys() == m.params.keys()
