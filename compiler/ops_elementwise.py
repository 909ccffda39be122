"""Elementwise ops: unary and binary arithmetic, comparisons, clip, where.

Their Jacobians are diagonal (up to broadcasting), so each carries a C
expression for the fused kernels and needs no `curvature` rule: bbprop squares
the partials of whole elementwise units (curvature.py).
"""
from __future__ import annotations

import numpy as np

from .errors import SpecError
from .node import Node
from .ops_core import (
    Emit, Op, arity, broadcast_shapes, fit_tangent, float_of, no_jvp, number_attr, py_float,
    register, self_adjoint, sum_to, tangent_sum, tangent_times)


def _ew_infer(G, ins, a, loc):
    shape = ins[0].shape
    for other in ins[1:]:
        shape = broadcast_shapes(shape, other.shape, loc)
    return shape, float_of(G, ins)


def _cmp_infer(G, ins, a, loc):
    return _ew_infer(G, ins, a, loc)[0], G.float_dtype


def _ufunc_emit(ufunc: str):
    def emit(e: Emit):
        e(f"np.{ufunc}({', '.join(e.args)}, out={e.out})")
    return emit


def unary(name, fn, grad, cuda, ufunc=None, emit=None, doc="", scratch=None):
    """A unary elementwise op; its Jacobian is diagonal, so forward mode reuses `grad`."""
    return register(Op(
        name, "elementwise", _ew_infer, impl=lambda xs, a, B: fn(xs[0]),
        emit=emit or _ufunc_emit(ufunc or name), grad=grad, jvp=self_adjoint(grad),
        lang=(("x",), {}), cuda=cuda, doc=doc, scratch=scratch))


def binary(name, fn, grad, jvp, cuda, ufunc=None, infer=_ew_infer, doc=""):
    return register(Op(
        name, "elementwise", infer, impl=lambda xs, a, B: fn(xs[0], xs[1]),
        emit=_ufunc_emit(ufunc or name), grad=grad, jvp=jvp, lang=(("x", "y"), {}), cuda=cuda,
        doc=doc))


def _sigmoid_emit(e: Emit):
    x, o = e.args[0], e.out
    e(f"np.negative({x}, out={o}); np.exp({o}, out={o}); np.add({o}, 1.0, out={o}); "
      f"np.reciprocal({o}, out={o})")


def _softplus_emit(e: Emit):
    # max(x, 0) first: `out` may be x's own storage (an in-place update)
    x, o, s = e.args[0], e.out, e.scratch[0]
    e(f"np.maximum({x}, 0.0, out={s}); np.abs({x}, out={o}); np.negative({o}, out={o}); "
      f"np.exp({o}, out={o}); np.log1p({o}, out={o}); np.add({o}, {s}, out={o})")


def _softplus_ref(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def _sigmoid_ref(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


unary("neg", np.negative, lambda G, n, g: (G("neg", g),), "(-{0})", ufunc="negative")
unary("exp", np.exp, lambda G, n, g: (G("mul", g, n),), "exp({0})")
unary("log", np.log, lambda G, n, g: (G("div", g, n.inputs[0]),), "log({0})")
unary("tanh", np.tanh, lambda G, n, g: (G("mul", g, G("sub", 1, G("mul", n, n))),), "tanh({0})")
unary("sigmoid", _sigmoid_ref, lambda G, n, g: (G("mul", g, G("mul", n, G("sub", 1, n))),),
      "(1/(1+exp(-{0})))", emit=_sigmoid_emit, doc="logistic sigmoid 1/(1+exp(-x))")
unary("abs", np.abs, lambda G, n, g: (G("mul", g, G("sign", n.inputs[0])),), "fabs({0})",
      ufunc="abs")
unary("sign", np.sign, lambda G, n, g: (None,), "(({0}>0)-({0}<0))",
      doc="-1, 0 or 1; its derivative is zero")
unary("sqrt", np.sqrt, lambda G, n, g: (G("div", G("mul", g, 0.5), n),), "sqrt({0})")
unary("square", np.square, lambda G, n, g: (G("mul", g, G("mul", n.inputs[0], 2)),),
      "({0}*{0})")
unary("log1p", np.log1p, lambda G, n, g: (G("div", g, G("add", n.inputs[0], 1)),), "log1p({0})")
unary("expm1", np.expm1, lambda G, n, g: (G("mul", g, G("add", n, 1)),), "expm1({0})")
unary("softplus", _softplus_ref, lambda G, n, g: (G("mul", g, G("sigmoid", n.inputs[0])),),
      "(log1p(exp(-fabs({0})))+fmax({0},({T})0))", emit=_softplus_emit,
      scratch=lambda n: [(n.shape, n.dtype)], doc="log(1 + exp(x)), computed stably")


def _g_add(G, n, g):
    a, b = n.inputs
    return sum_to(G, g, a.shape), sum_to(G, g, b.shape)


def _g_sub(G, n, g):
    a, b = n.inputs
    return sum_to(G, g, a.shape), sum_to(G, G("neg", g), b.shape)


def _g_mul(G, n, g):
    a, b = n.inputs
    return sum_to(G, G("mul", g, b), a.shape), sum_to(G, G("mul", g, a), b.shape)


def _g_div(G, n, g):
    a, b = n.inputs
    return (sum_to(G, G("div", g, b), a.shape),
            sum_to(G, G("neg", G("div", G("mul", g, n), b)), b.shape))


def _g_pow(G, n, g):
    a, b = n.inputs
    da = G("mul", g, G("mul", b, G("pow", a, G("sub", b, 1))))
    db = None if b.op == "const" else G("mul", g, G("mul", n, G("log", a)))
    return sum_to(G, da, a.shape), None if db is None else sum_to(G, db, b.shape)


def _j_pow(G, n, ts):
    a, b = n.inputs
    ta, tb = ts
    return tangent_sum(G, n, tangent_times(G, ta, G("mul", b, G("pow", a, G("sub", b, 1)))),
                  tangent_times(G, tb, G("mul", n, G("log", a))))


def _pow_emit(e: Emit):
    b = e.node.inputs[1]
    special = {2.0: "square", 0.5: "sqrt", -1.0: "reciprocal", 1.0: "positive"}
    if b.op == "const" and b.attr("value") in special:
        e(f"np.{special[b.attr('value')]}({e.args[0]}, out={e.out})")
    else:
        e(f"np.power({e.args[0]}, {e.args[1]}, out={e.out})")


def _g_max(G, n, g):
    a, b = n.inputs
    return (sum_to(G, G("mul", g, G("ge", a, b)), a.shape),
            sum_to(G, G("mul", g, G("lt", a, b)), b.shape))


def _g_min(G, n, g):
    a, b = n.inputs
    return (sum_to(G, G("mul", g, G("le", a, b)), a.shape),
            sum_to(G, G("mul", g, G("gt", a, b)), b.shape))


def _j_extremum(first: str, second: str):
    def jvp(G, n, ts):
        a, b = n.inputs
        return tangent_sum(G, n, tangent_times(G, ts[0], G(first, a, b)),
                           tangent_times(G, ts[1], G(second, a, b)))
    return jvp


binary("add", np.add, _g_add, lambda G, n, ts: tangent_sum(G, n, *ts), "({0}+{1})")
binary("sub", np.subtract, _g_sub,
       lambda G, n, ts: tangent_sum(G, n, ts[0], None if ts[1] is None else G("neg", ts[1])),
       "({0}-{1})", ufunc="subtract")
binary("mul", np.multiply, _g_mul,
       lambda G, n, ts: tangent_sum(G, n, tangent_times(G, ts[0], n.inputs[1]),
                                    tangent_times(G, ts[1], n.inputs[0])),
       "({0}*{1})", ufunc="multiply")
binary("div", np.divide, _g_div,
       lambda G, n, ts: tangent_sum(G, n, None if ts[0] is None else G("div", ts[0], n.inputs[1]),
                               None if ts[1] is None else
                               G("neg", G("div", G("mul", ts[1], n), n.inputs[1]))),
       "({0}/{1})", ufunc="divide")
register(Op("pow", "elementwise", _ew_infer, impl=lambda xs, a, B: np.power(xs[0], xs[1]),
            emit=_pow_emit, grad=_g_pow, jvp=_j_pow, lang=(("x", "y"), {}),
            cuda="pow({0},{1})"))
binary("maximum", np.maximum, _g_max, _j_extremum("ge", "lt"), "fmax({0},{1})",
       doc="elementwise maximum; the derivative goes to the first argument on ties")
binary("minimum", np.minimum, _g_min, _j_extremum("le", "gt"), "fmin({0},{1})")
_no_grad = lambda G, n, g: (None,) * len(n.inputs)  # noqa: E731
for _n, _uf, _c_op in [("gt", "greater", ">"), ("ge", "greater_equal", ">="), ("lt", "less", "<"),
                       ("le", "less_equal", "<="), ("eq", "equal", "=="), ("ne", "not_equal", "!=")]:
    binary(_n, getattr(np, _uf), _no_grad, no_jvp, f"(({{0}}{_c_op}{{1}})?1:0)", ufunc=_uf,
           infer=_cmp_infer, doc=f"1 where x {_c_op} y, else 0 (no derivative)")


# -- clip(x, lo, hi) --------------------------------------------------------


def _clip_attrs(ins, a, loc):
    arity("clip", ins, 1, loc, "clip(x, lo, hi) with lo and hi numbers")
    lo, hi = number_attr("clip", a, "lo", loc), number_attr("clip", a, "hi", loc)
    if lo > hi:
        raise SpecError(f"clip: lo = {lo:g} is above hi = {hi:g}", loc)
    return {**a, "lo": lo, "hi": hi}


def _clip_infer(G, ins, a, loc):
    _clip_attrs(ins, a, loc)
    return ins[0].shape, float_of(G, ins)


def _clip_mask(G, n) -> Node | None:
    """1 where x is inside [lo, hi] (the derivative passes), else 0."""
    x, lo, hi = n.inputs[0], n.attr("lo"), n.attr("hi")
    lo_ok = G("ge", x, lo) if lo > -np.inf else None
    hi_ok = G("le", x, hi) if hi < np.inf else None
    if lo_ok is None or hi_ok is None:
        return lo_ok if hi_ok is None else hi_ok
    return G("mul", lo_ok, hi_ok)


def _g_clip(G, n, g):
    m = _clip_mask(G, n)
    return (g if m is None else G("mul", g, m),)


def _j_clip(G, n, ts):
    m = _clip_mask(G, n)
    return ts[0] if m is None else G("mul", ts[0], m)


register(Op(
    "clip", "elementwise", _clip_infer,
    impl=lambda xs, a, B: np.clip(xs[0], a["lo"], a["hi"]),
    emit=lambda e: e(f"np.clip({e.args[0]}, {py_float(e.node.attr('lo'))}, {py_float(e.node.attr('hi'))}, "
                     f"out={e.out})"),
    grad=_g_clip, jvp=_j_clip, cuda="fmin(fmax({0},{lo}),{hi})",
    lang=(("x", "lo", "hi"), {"lo": -np.inf, "hi": np.inf}),
    canonical=_clip_attrs, noop=lambda ins, b: b["lo"] == -np.inf and b["hi"] == np.inf,
    doc="clip(x, lo, hi): x limited to [lo, hi] (numbers); the derivative is 1 inside, "
        "0 outside"))


# -- where(c, x, y) ---------------------------------------------------------


def _where_infer(G, ins, a, loc):
    if len(ins) != 3:
        raise SpecError("where(c, x, y) takes a condition and two tensors", loc)
    shape = _ew_infer(G, ins, a, loc)[0]
    return shape, float_of(G, ins[1:])


def _where_emit(e: Emit):
    # alias-safe: `out` may be x's or y's own storage (an in-place update)
    (c, x, y), o, (s,) = e.args, e.out, e.scratch
    e(f"np.not_equal({c}, 0, out={s}); np.copyto({o}, {x}, where={s}); "
      f"np.logical_not({s}, out={s}); np.copyto({o}, {y}, where={s})")


def _g_where(G, n, g):
    c, x, y = n.inputs
    return (None, sum_to(G, G("where", c, g, 0.0), x.shape),
            sum_to(G, G("where", c, 0.0, g), y.shape))


def _j_where(G, n, ts):
    _, tx, ty = ts
    if tx is None and ty is None:
        return None
    c = n.inputs[0]
    return fit_tangent(G, G("where", c, 0.0 if tx is None else tx, 0.0 if ty is None else ty), n.shape)


register(Op(
    "where", "elementwise", _where_infer,
    impl=lambda xs, a, B: np.where(xs[0] != 0, xs[1], xs[2]),
    emit=_where_emit, grad=_g_where, jvp=_j_where, cuda="(({0}!=0)?({1}):({2}))",
    scratch=lambda n: [(n.inputs[0].shape, "bool")], lang=(("c", "x", "y"), {}),
    doc="where(c, x, y): x where c is nonzero, else y (broadcasting); no derivative through c"))
