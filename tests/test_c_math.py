"""The native backend's float32 vector math (compiler/c_math.py), compiled by gcc
with the backend's own flags and checked against NumPy float64.

Bound: MAX_ULP = 3 ulp for every function over 2^21 random bit patterns (the
whole float range: denormals, huge values, nan payloads), dense grids over the
interesting ranges and hand-picked edges; an ulp is float32's spacing at the
true value (2^-149 in the denormal range). nan/inf/signed-zero results must be
exactly NumPy's. Also: the generic macros send float to these functions and
double to libm, maximum/minimum propagate nan like NumPy, and every loop over
them vectorizes (gcc's own report).
"""
from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest

from netc.compiler.c_math import C_MATH, C_MATH_FUNCTIONS, VECTOR_FUNCTIONS
from netc.runtime import native_build

pytestmark = pytest.mark.skipif(not native_build.compiler_available(), reason="no C compiler")

MAX_ULP = 3.0


def _loops(functions: dict[str, str]) -> str:
    return "".join(f"""
void v_{k}(const float* restrict x, float* restrict y, long long n) {{
#pragma omp simd
    for (long long i = 0; i < n; i++) y[i] = {f}(x[i]);
}}
""" for k, f in functions.items())


MACRO_CHECKS = r"""
void m_float(const float* restrict x, float* restrict y, long long n) {
    for (long long i = 0; i < n; i++) {
        const float v = x[i];
        y[7 * i + 0] = exp(v); y[7 * i + 1] = log(v); y[7 * i + 2] = tanh(v);
        y[7 * i + 3] = log1p(v); y[7 * i + 4] = expm1(v);
        y[7 * i + 5] = fmax(v, (float)0); y[7 * i + 6] = fmin(v, (float)0);
    }
}
void m_double(const double* restrict x, double* restrict y, long long n) {
    for (long long i = 0; i < n; i++) {
        const double v = x[i];
        y[5 * i + 0] = exp(v); y[5 * i + 1] = log(v); y[5 * i + 2] = tanh(v);
        y[5 * i + 3] = fmax(v, 0.0); y[5 * i + 4] = fmin(v, 0.0);
    }
}
void fmaxmin(const float* restrict a, const float* restrict b, float* restrict y, long long n) {
#pragma omp simd
    for (long long i = 0; i < n; i++) { y[2 * i] = netc_fmaxf(a[i], b[i]); y[2 * i + 1] = netc_fminf(a[i], b[i]); }
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NETC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    try:
        yield native_build.load(C_MATH + _loops(VECTOR_FUNCTIONS) + MACRO_CHECKS, "test_c_math")
    finally:
        mp.undo()


def _ptr(a):
    return ctypes.c_void_p(a.ctypes.data)


def _call(lib, name, x):
    y = np.empty_like(x)
    getattr(lib, name)(_ptr(x), _ptr(y), ctypes.c_longlong(x.size))
    return y


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


REFERENCE = {"exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
             "sigmoid": _sigmoid, "softplus": _softplus}
EDGES = np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1e-40, -1e-40,
                    1.1754944e-38, -1.1754944e-38, 3.4028235e38, -3.4028235e38, 1e-30, -1e-30,
                    88.72283, 88.72284, 89.0, -87.33655, -103.97207, -103.97209, -104.0, -17.33,
                    1.0, -1.0, -0.99999994, 0.625, -0.625, 0.6249999, 0.34657359, -0.34657359,
                    0.70710677, 0.70710683, 2.0 ** -12, -2.0 ** -12, 9.01, -9.01, 44.0, -44.0])


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(20261125)
    bits = rng.integers(0, 2 ** 32, 1 << 21, dtype=np.uint64).astype(np.uint32).view(np.float32)
    grids = [np.linspace(-110, 110, 1 << 20, dtype=np.float32),
             np.linspace(-2, 2, 1 << 19, dtype=np.float32),
             np.linspace(0, 4, 1 << 18, dtype=np.float32),
             (2.0 ** rng.uniform(-149, 128, 1 << 18)).astype(np.float32)]
    return np.concatenate([bits, *grids, -grids[-1], EDGES])


X = _inputs()


def ulp_errors(got: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|got - truth| in float32 ulps at the truth (finite truths whose float32 is finite)."""
    with np.errstate(over="ignore"):  # the spacing at FLT_MAX is inf: no ulp bound there, only inf checks
        spacing = np.spacing(np.abs(truth.astype(np.float32))).astype(np.float64)
    return np.abs(got.astype(np.float64) - truth) / np.maximum(spacing, 2.0 ** -149)


@pytest.mark.parametrize("name", sorted(VECTOR_FUNCTIONS))
def test_within_bound_and_exact_special_values(lib, name):
    got = _call(lib, f"v_{name}", X)
    with np.errstate(all="ignore"):
        truth = REFERENCE[name](X.astype(np.float64))
        t32 = truth.astype(np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(truth)), "nan where NumPy has none, or the reverse"
    inf = np.isinf(t32)
    assert np.array_equal(got[inf], t32[inf]), "overflow/inf results differ"
    fin = np.isfinite(t32)
    err = ulp_errors(got[fin], truth[fin])
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP, (name, X[fin][worst], got[fin][worst], truth[fin][worst], err[worst])
    zero = t32 == 0
    assert np.array_equal(np.signbit(got[zero]), np.signbit(t32[zero])), "sign of a zero result"


def test_bound_is_tight_enough_to_catch_a_cruder_approximation(lib):
    # the test must be able to fail: tanh's large branch alone (no small-x polynomial)
    # loses relative accuracy near 0 by orders of magnitude
    x = np.linspace(-0.01, 0.01, 4097).astype(np.float32)
    crude = (1 - 2 / (np.exp(2 * x.astype(np.float32)) + 1)).astype(np.float32)
    assert ulp_errors(crude, np.tanh(x.astype(np.float64))).max() > 100 * MAX_ULP
    assert ulp_errors(_call(lib, "v_tanh", x), np.tanh(x.astype(np.float64))).max() <= MAX_ULP


def test_macros_send_float_to_vector_functions_and_double_to_libm(lib):
    x = np.concatenate([np.linspace(-5, 5, 1001), [np.nan, 0.0, -0.0, 3.0]]).astype(np.float32)
    y = np.empty(7 * x.size, np.float32)
    lib.m_float(_ptr(x), _ptr(y), ctypes.c_longlong(x.size))
    y = y.reshape(-1, 7)
    for col, name in enumerate(["exp", "log", "tanh", "log1p", "expm1"]):
        np.testing.assert_array_equal(y[:, col], _call(lib, f"v_{name}", x))
    xd = x.astype(np.float64)
    np.testing.assert_array_equal(y[:, 5], np.maximum(x, np.float32(0)))
    np.testing.assert_array_equal(y[:, 6], np.minimum(x, np.float32(0)))
    yd = np.empty(5 * xd.size)
    lib.m_double(_ptr(xd), _ptr(yd), ctypes.c_longlong(xd.size))
    yd = yd.reshape(-1, 5)
    with np.errstate(all="ignore"):
        for col, fn in enumerate([np.exp, np.log, np.tanh]):
            # libm's double, not our float32 (which would be ~1e-7 off)
            np.testing.assert_allclose(yd[:, col], fn(xd), rtol=5e-16, atol=0)
    np.testing.assert_array_equal(yd[:, 3], np.maximum(xd, 0.0))
    np.testing.assert_array_equal(yd[:, 4], np.minimum(xd, 0.0))


def test_maximum_and_minimum_propagate_nan_like_numpy(lib):
    v = np.float32([np.nan, 1.0, -1.0, np.inf, -np.inf, 0.0])
    a, b = (g.ravel() for g in np.meshgrid(v, v))
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    y = np.empty(2 * a.size, np.float32)
    lib.fmaxmin(_ptr(a), _ptr(b), _ptr(y), ctypes.c_longlong(a.size))
    np.testing.assert_array_equal(y[0::2], np.maximum(a, b))
    np.testing.assert_array_equal(y[1::2], np.minimum(a, b))


def test_every_loop_vectorizes_under_the_backends_flags(tmp_path):
    src = tmp_path / "v.c"
    src.write_text(C_MATH_FUNCTIONS + _loops(VECTOR_FUNCTIONS))
    flags = [f for f in native_build.FLAGS if f != "-shared"]
    r = subprocess.run([*native_build.compiler_command(), *flags, "-c", "-o", str(tmp_path / "v.o"),
                        str(src), "-fopt-info-vec-optimized"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = src.read_text().splitlines()
    loop_line = {k: next(i for i, t in enumerate(lines, 1) if t.startswith(f"void v_{k}(")) + 2
                 for k in VECTOR_FUNCTIONS}
    report = r.stderr
    for k, line in loop_line.items():
        assert f"v.c:{line}:" in report and "loop vectorized" in report, (k, report[-2000:])
    vectorized = {int(t.split(":")[1]) for t in report.splitlines() if "loop vectorized" in t}
    assert set(loop_line.values()) <= vectorized, (
        [k for k, ln in loop_line.items() if ln not in vectorized], report[-2000:])
