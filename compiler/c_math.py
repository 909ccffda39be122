"""C text of the float32 vector math the native backend's loops call.

A C loop calling libm's scalar `tanhf`/`expf` is what makes a naive C backend
slower than NumPy (NumPy's float32 ufuncs are SIMD); gcc vectorizes libm calls
only under -ffast-math, which we do not use. So these are our own branch-free
float32 functions (static, always inlined): range reduction and
Cephes-style polynomials, with special values (nan, +-inf, +-0, overflow,
underflow to denormals and zero) chosen by selects rather than branches, so
gcc vectorizes a loop over them under `#pragma omp simd`. Every arm of a
select is computed before it where possible; runtime/native_build.py's
-fno-trapping-math lets gcc if-convert the rest (with traps assumed, a float
compare in a duplicated path keeps logf's loop scalar).

Measured error against NumPy float64 (tests/test_c_math.py: dense grids, 2^22
random bit patterns over the whole float range, and edge cases): at most
2 ulp for exp, expm1, log, log1p, tanh, sigmoid and softplus (relative error
<= 1.2e-7), bit-exact special values; an ulp is float32's spacing at the true value
(2^-149 in the denormal range).

`C_MATH` also defines C11 `_Generic` macros over the names the op table's C
templates use (exp, log, log1p, expm1, tanh, fmax, fmin, sqrt, fabs, pow), so
those templates compile unchanged and a float argument gets the vector
function; any other type gets libm's double function. fmax/fmin become
NumPy's maximum/minimum (nan in, nan out; C's fmax would drop the nan), since
the NumPy step is the reference the native one must match. `C_MATH_FUNCTIONS` is the
same without the macros.
"""
from __future__ import annotations

C_MATH_FUNCTIONS = r"""
/* ---- netc float32 vector math (compiler/c_math.py) ---- */
#include <math.h>
#include <stdint.h>
#ifndef NETC_INF
#define NETC_INF INFINITY
#endif
#ifndef NETC_NAN
#define NETC_NAN NAN
#endif
#define NETC_MATH static inline __attribute__((always_inline, unused))

NETC_MATH float netc_as_float(int32_t i) { union { int32_t i; float f; } v; v.i = i; return v.f; }
NETC_MATH int32_t netc_as_int(float f) { union { float f; int32_t i; } v; v.f = f; return v.i; }

/* (e^r - 1 - r) / r^2 on |r| <= ln2/2 (Cephes expf) */
NETC_MATH float netc_exp_poly(float r) {
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p;
}

/* n = round(x / ln2) as a float, and r = x - n ln2 in two steps (ln2 = C1 + C2, C1 exact in 9 bits) */
NETC_MATH float netc_exp_reduce(float x, float* n) {
    const float k = x * 1.44269504088896341f + 12582912.0f; /* 0x1.8p23: rounds to an integer */
    const float m = k - 12582912.0f;
    *n = m;
    return (x - m * 0.693359375f) - m * -2.12194440e-4f;
}

/* p * 2^n for n in [-150, 128]: two normal factors, so no intermediate overflows
   and a denormal result is rounded once */
NETC_MATH float netc_ldexp2(float p, int32_t n) {
    const int32_t n1 = n >> 1, n2 = n - n1;
    return (p * netc_as_float((n1 + 127) << 23)) * netc_as_float((n2 + 127) << 23);
}

NETC_MATH float netc_expf(float x) {
    float c = x < 89.0f ? x : 89.0f; /* nan -> 89: no nan reaches the int conversion */
    c = c > -104.0f ? c : -104.0f;
    float n;
    const float r = netc_exp_reduce(c, &n);
    const float p = netc_exp_poly(r) * (r * r) + r + 1.0f;
    float y = netc_ldexp2(p, (int32_t)n);
    y = x < -104.0f ? 0.0f : y;
    return x != x ? x : y;
}

/* e^x - 1 = 2^n (e^r - 1) + (2^n - 1): exact cancellation-free for n = 0 */
NETC_MATH float netc_expm1f(float x) {
    float c = x < 89.0f ? x : 89.0f;
    c = c > -30.0f ? c : -30.0f; /* expm1(x) rounds to -1 below -17.4 */
    float n;
    const float r = netc_exp_reduce(c, &n);
    const float em = netc_exp_poly(r) * (r * r) + r;
    const int32_t ni = (int32_t)n;
    const float s = netc_as_float(((ni < 24 ? ni : 24) + 127) << 23);
    const float small = s * em + (s - 1.0f);
    const float big = netc_ldexp2(em + 1.0f, ni);
    float y = ni > 24 ? big : small;
    y = x == 0.0f ? x : y; /* keeps -0 */
    return x != x ? x : y;
}

/* log x = e ln2 + log(1 + f), 1 + f in [sqrt(1/2), sqrt(2)) (Cephes logf) */
NETC_MATH float netc_logf(float x) {
    const int sub = x < 1.17549435e-38f; /* denormal (and zero/negative: fixed below) */
    const float xs = x * (sub ? 33554432.0f : 1.0f); /* 2^25: a select of constants, then one multiply */
    const int32_t u = netc_as_int(xs);
    int32_t e = ((u >> 23) & 0xff) - 126 - (sub ? 25 : 0);
    const float m = netc_as_float((u & 0x007fffff) | 0x3f000000); /* [0.5, 1) */
    const int lt = m < 0.707106781186547524f;
    e -= lt;
    const float f = m * (lt ? 2.0f : 1.0f) - 1.0f; /* exact */
    const float fe = (float)e;
    const float z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = p * f * z;
    y = y + fe * -2.12194440e-4f;
    y = y - 0.5f * z;
    y = (f + y) + fe * 0.693359375f;
    y = x < 0.0f ? NETC_NAN : y;
    y = x == 0.0f ? -NETC_INF : y;
    y = x == NETC_INF ? x : y;
    return x != x ? x : y;
}

/* log(1 + x) = log(u) * x / (u - 1), u = 1 + x rounded (Goldberg): exact for tiny x */
NETC_MATH float netc_log1pf(float x) {
    const float u = 1.0f + x;
    const float d = u - 1.0f;
    const float q = netc_logf(u) * (x / d);
    float y = d == 0.0f ? x : q;
    y = x == NETC_INF ? x : y;
    return y;
}

/* tanh: an odd polynomial below 0.625, else 1 - 2 / (e^{2|x|} + 1) (Cephes tanhf) */
NETC_MATH float netc_tanhf(float x) {
    const float ax = fabsf(x);
    const float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const float small = (p * z) * x + x;
    /* |x| >= 9: tanh rounds to 1; below, e^{2|x|} <= e^18 needs no overflow or denormal care */
    const float a = ax < 9.0f ? ax : 9.0f; /* nan -> 9, fixed below */
    float n;
    const float r = netc_exp_reduce(a + a, &n);
    const float e = (netc_exp_poly(r) * (r * r) + r + 1.0f) * netc_as_float(((int32_t)n + 127) << 23);
    const float big = 1.0f - 2.0f / (e + 1.0f);
    const float y = ax < 0.625f ? small : (x < 0.0f ? -big : big);
    return (x != x || x == 0.0f) ? x : y; /* nan; -0 stays -0 */
}

/* 1 / (1 + e^-x) with e^-|x| only: no overflow, denormal results where x << 0 */
NETC_MATH float netc_sigmoidf(float x) {
    const float e = netc_expf(-fabsf(x));
    const float num = x >= 0.0f ? 1.0f : e;
    const float y = num / (1.0f + e);
    return x != x ? x : y;
}

/* maximum/minimum as NumPy's: a nan in either argument is the result (C's fmax drops it) */
NETC_MATH float netc_fmaxf(float a, float b) { return (a > b || a != a) ? a : b; }
NETC_MATH float netc_fminf(float a, float b) { return (a < b || a != a) ? a : b; }
NETC_MATH double netc_fmax(double a, double b) { return (a > b || a != a) ? a : b; }
NETC_MATH double netc_fmin(double a, double b) { return (a < b || a != a) ? a : b; }

/* log(1 + e^x) = log1p(e^-|x|) + max(x, 0) */
NETC_MATH float netc_softplusf(float x) {
    const float pos = x > 0.0f ? x : 0.0f;
    const float y = netc_log1pf(netc_expf(-fabsf(x))) + pos;
    return x != x ? x : y;
}
/* ---- end netc float32 vector math ---- */
"""

C_MATH_MACROS = r"""
/* the op table's C templates use the generic names: float -> vector function, else libm */
#define exp(x) _Generic((x), float: netc_expf, default: exp)(x)
#define expm1(x) _Generic((x), float: netc_expm1f, default: expm1)(x)
#define log(x) _Generic((x), float: netc_logf, default: log)(x)
#define log1p(x) _Generic((x), float: netc_log1pf, default: log1p)(x)
#define tanh(x) _Generic((x), float: netc_tanhf, default: tanh)(x)
#define sqrt(x) _Generic((x), float: sqrtf, default: sqrt)(x)
#define fabs(x) _Generic((x), float: fabsf, default: fabs)(x)
#define fmax(x, y) _Generic((x) + (y), float: netc_fmaxf, default: netc_fmax)(x, y)
#define fmin(x, y) _Generic((x) + (y), float: netc_fminf, default: netc_fmin)(x, y)
#define pow(x, y) _Generic((x) + (y), float: powf, default: pow)(x, y)
"""

C_MATH = C_MATH_FUNCTIONS + C_MATH_MACROS

# the NumPy function each vector function stands for (what tests/test_c_math.py checks)
VECTOR_FUNCTIONS = {
    "exp": "netc_expf", "expm1": "netc_expm1f", "log": "netc_logf", "log1p": "netc_log1pf",
    "tanh": "netc_tanhf", "sigmoid": "netc_sigmoidf", "softplus": "netc_softplusf",
}
